//! One stream connection's state machine: read into the reactor's shared buffer, write straight
//! back, keep only what the socket would not take (batched sendall), stop reading at the pending
//! cap (backpressure), and on EOF flush everything before shutting down the write side.
//!
//! Invariants:
//! - Bytes leave in the order they arrived: new input is written behind pending output, in one
//!   vectored send with it.
//! - Pending output never exceeds the cap: a read asks for at most the room left under it.
//! - `write_blocked` is set only after the kernel refused bytes (so an edge-triggered writable
//!   event is sure to follow), and while it is set no send is attempted: input is queued.
//! - Every state change goes through [`Connection::set_state`].

use std::fmt;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use socket2::SockRef;

use crate::buffer::{BufferPool, OutBuf};
use crate::stats::Stats;
use crate::sys;

/// An accepted stream socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn sock(&self) -> SockRef<'_> {
        match self {
            Stream::Tcp(s) => SockRef::from(s),
            Stream::Unix(s) => SockRef::from(s),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub(crate) fn shutdown_write(&self) {
        let _ = self.sock().shutdown(Shutdown::Write);
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Reading and echoing.
    Open,
    /// Pending output reached the cap: not reading until it drains to half.
    Backpressured,
    /// The peer sent EOF: writing out what is pending, then shutting down our side.
    Flushing,
    /// Done; the reactor frees it after the current event batch.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Open => "open",
            State::Backpressured => "backpressured",
            State::Flushing => "flushing",
            State::Closed => "closed",
        })
    }
}

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The peer half-closed and got everything back.
    Eof,
    /// The peer reset, or a socket error.
    Reset,
    /// No progress for the idle timeout.
    IdleTimeout,
    /// Quiet during a graceful shutdown.
    Drained,
    /// Still busy when the drain timeout expired (or at a second signal).
    DrainAborted,
}

/// What the reactor does next with a connection it just served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing until the next readiness event.
    Idle,
    /// Hit its per-turn budget with input still waiting: serve it again after this batch.
    MoreToRead,
    /// Close it.
    Close(CloseReason),
}

/// The reactor's resources that connections use, owned by the reactor and lent to one
/// connection at a time (one pointer, so serving an event costs no setup).
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The one shared read buffer.
    pub buf: Box<[u8]>,
    /// Recycled output-buffer storage.
    pub pool: BufferPool,
    /// The counters.
    pub stats: Stats,
    /// Cap on a connection's pending output.
    pub cap: usize,
    /// Bytes a connection may read per turn.
    pub budget: usize,
    /// The current turn's time (exact when a deadline needs it; see the reactor).
    pub now: Instant,
}

/// One stream connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub stream: Stream,
    /// The stream's descriptor, for the hot path's direct syscalls.
    fd: RawFd,
    out: OutBuf,
    state: State,
    /// Unique over the server's life (slab keys are reused).
    pub id: u64,
    /// Last time a byte moved in either direction.
    pub last_active: Instant,
    /// Which arming of this connection's deadline is live (see `timer.rs`).
    pub timer_seq: u32,
    /// Already in the reactor's ready queue.
    pub queued: bool,
    write_blocked: bool,
    /// The peer's FIN or a hang-up was reported: read to EOF, never stop at a short read.
    read_closed: bool,
}

impl Connection {
    pub(crate) fn new(stream: Stream, id: u64, now: Instant) -> Self {
        Connection {
            fd: stream.raw_fd(),
            stream,
            out: OutBuf::new(),
            state: State::Open,
            id,
            last_active: now,
            timer_seq: 0,
            queued: false,
            write_blocked: false,
            read_closed: false,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn set_state(&mut self, next: State) {
        debug_assert!(
            self.state != State::Closed || next == State::Closed,
            "{} => {next}",
            self.state
        );
        self.state = next;
    }

    #[inline]
    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    pub(crate) fn note_read_closed(&mut self) {
        self.read_closed = true;
    }

    /// The common readable event, kept small: the connection is open, owes nothing, and no EOF
    /// was reported. One recv into the shared buffer, one send of all of it, done if the read was
    /// short (the socket is drained). `None` hands over to [`Connection::on_readable`]: after a
    /// full read (more may wait), at EOF (a read returns 0 again), or on EINTR; whatever this call
    /// read is fully handled either way.
    #[inline]
    pub(crate) fn fast_echo(&mut self, ctx: &mut Ctx) -> Option<Outcome> {
        if self.state != State::Open || !self.out.is_empty() || self.read_closed {
            return None;
        }
        let room = ctx.cap.min(ctx.buf.len());
        let n = match sys::recv(self.fd, &mut ctx.buf[..room]) {
            Ok(0) | Err(libc::EINTR) => return None,
            Ok(n) => n,
            Err(libc::EAGAIN) => return Some(Outcome::Idle), // a spurious event
            Err(_) => return Some(Outcome::Close(CloseReason::Reset)),
        };
        ctx.stats.bytes_in += n as u64;
        self.last_active = ctx.now;
        // `echo` would do the same with nothing owed, but calling it here costs ~40 instructions
        // per message (callgrind): its pending-output paths come along. So the send is inline.
        let sent = loop {
            let sent = sys::send(self.fd, &ctx.buf[..n]);
            if sent != Err(libc::EINTR) {
                break sent;
            }
        };
        match sent {
            Ok(written) if written == n => ctx.stats.bytes_out += n as u64,
            Ok(written) => {
                ctx.stats.bytes_out += written as u64;
                self.keep_unsent(0, written, n, ctx);
            }
            // Refused: the kernel's buffer is full, so a writable edge will follow.
            Err(libc::EAGAIN) => self.keep_unsent(0, 0, n, ctx),
            Err(_) => return Some(Outcome::Close(CloseReason::Reset)),
        }
        if n < room {
            Some(Outcome::Idle)
        } else {
            None
        }
    }

    /// Reads and echoes until the socket is drained, the budget is spent or the cap is reached.
    pub(crate) fn on_readable(&mut self, ctx: &mut Ctx) -> Outcome {
        let mut used = 0;
        while self.state == State::Open {
            let room = self.out.room(ctx.cap).min(ctx.buf.len());
            if room == 0 {
                self.set_state(State::Backpressured);
                break;
            }
            let n = match sys::recv(self.fd, &mut ctx.buf[..room]) {
                Ok(0) => return self.on_eof(ctx),
                Ok(n) => n,
                Err(libc::EAGAIN) => break,
                Err(libc::EINTR) => continue,
                Err(_) => return Outcome::Close(CloseReason::Reset),
            };
            ctx.stats.bytes_in += n as u64;
            self.last_active = ctx.now;
            if let Err(reason) = self.echo(n, ctx) {
                return Outcome::Close(reason);
            }
            used += n;
            // A short read on a stream socket means its receive queue was empty (epoll(7));
            // new data makes a new edge. Unless EOF was reported: then read on until it shows.
            if n < room && !self.read_closed {
                break;
            }
            if used >= ctx.budget {
                return Outcome::MoreToRead;
            }
        }
        Outcome::Idle
    }

    /// The socket can take bytes again: flush, then resume reading if backpressure ends, or
    /// finish a half-closed connection.
    pub(crate) fn on_writable(&mut self, ctx: &mut Ctx) -> Outcome {
        self.write_blocked = false;
        if let Err(reason) = self.flush(ctx) {
            return Outcome::Close(reason);
        }
        match self.state {
            State::Backpressured if self.out.len() <= ctx.cap / 2 => {
                self.set_state(State::Open);
                self.on_readable(ctx)
            }
            State::Flushing if self.out.is_empty() => self.finish(),
            _ => Outcome::Idle,
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx) -> Outcome {
        self.set_state(State::Flushing);
        if !self.write_blocked {
            if let Err(reason) = self.flush(ctx) {
                return Outcome::Close(reason);
            }
        }
        if self.out.is_empty() {
            self.finish()
        } else {
            Outcome::Idle
        }
    }

    /// Everything was echoed after the peer's EOF: send ours.
    fn finish(&mut self) -> Outcome {
        self.stream.shutdown_write();
        Outcome::Close(CloseReason::Eof)
    }

    /// Sends pending output followed by `ctx.buf[..n]`, in one syscall; keeps what is refused.
    #[inline]
    fn echo(&mut self, n: usize, ctx: &mut Ctx) -> Result<(), CloseReason> {
        let new = &ctx.buf[..n];
        if self.write_blocked {
            self.out.push(new, ctx.cap, &mut ctx.pool);
            return Ok(());
        }
        let pending = self.out.len();
        let sent = loop {
            let sent = if pending == 0 {
                sys::send(self.fd, new)
            } else {
                sys::send2(self.fd, self.out.pending(), new)
            };
            if sent != Err(libc::EINTR) {
                break sent;
            }
        };
        let written = match sent {
            Ok(written) => written,
            Err(libc::EAGAIN) => 0,
            Err(_) => return Err(CloseReason::Reset),
        };
        ctx.stats.bytes_out += written as u64;
        if written == pending + n {
            // The common case: everything went; with nothing pending, no buffer is touched.
            if pending > 0 {
                self.out.consume(pending, &mut ctx.pool);
            }
            return Ok(());
        }
        self.keep_unsent(pending, written, n, ctx);
        Ok(())
    }

    /// The socket took `written` of `pending + n` bytes: keep the rest, in order, and wait for a
    /// writable edge (one is sure to come: the kernel refused bytes).
    #[cold]
    fn keep_unsent(&mut self, pending: usize, written: usize, n: usize, ctx: &mut Ctx) {
        self.write_blocked = true;
        let new = &ctx.buf[..n];
        if written < pending {
            self.out.consume(written, &mut ctx.pool);
            self.out.push(new, ctx.cap, &mut ctx.pool);
        } else {
            self.out.consume(pending, &mut ctx.pool);
            self.out.push(&new[written - pending..], ctx.cap, &mut ctx.pool);
        }
    }

    /// Writes pending output until it is gone or the socket refuses more.
    fn flush(&mut self, ctx: &mut Ctx) -> Result<(), CloseReason> {
        while !self.out.is_empty() {
            match sys::send(self.fd, self.out.pending()) {
                Ok(n) => {
                    ctx.stats.bytes_out += n as u64;
                    self.last_active = ctx.now;
                    let all = n == self.out.len();
                    self.out.consume(n, &mut ctx.pool);
                    if !all {
                        self.write_blocked = true;
                        break;
                    }
                }
                Err(libc::EAGAIN) => {
                    self.write_blocked = true;
                    break;
                }
                Err(libc::EINTR) => {}
                Err(_) => return Err(CloseReason::Reset),
            }
        }
        Ok(())
    }

    /// Ends the connection on purpose (idle, drain): FIN first so the peer sees an orderly end,
    /// and the storage goes back to the pool. Input still unread at this point is lost, knowingly:
    /// quiet connections have none.
    pub(crate) fn close(&mut self, pool: &mut BufferPool) {
        if self.state != State::Closed {
            self.stream.shutdown_write();
            self.set_state(State::Closed);
        }
        self.out.release(pool);
    }
}
