//! The echo behaviour: read into the reactor's shared buffer, write straight back, keep only
//! what the transport would not take (batched sendall), stop reading at the pending cap
//! (backpressure), and on EOF flush everything before shutting down the write side.
//!
//! Invariants:
//! - Bytes leave in the order they arrived: new input is written behind pending output, in one
//!   vectored send with it.
//! - Pending output never exceeds the cap: a read asks for at most the room left under it.
//! - `write_blocked` is set only after the transport refused bytes (so an edge-triggered writable
//!   event is sure to follow), and while it is set no send is attempted: input is queued.
//! - Every state change goes through [`Echo::set_state`].
//!
//! Generic over the [`Transport`], so each transport gets its own monomorphic copy: the plain one
//! compiles to the direct syscalls of `crate::sys`.

use std::fmt;

use libc::{EAGAIN, EINTR};

use super::{CloseReason, Ctx, Life, Outcome};
use crate::buffer::{BufferPool, OutBuf};
use crate::sys::Errno;
use crate::transport::Transport;

/// Where an echo connection is in its life.
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

/// One echo connection over transport `T`.
#[derive(Debug)]
pub(crate) struct Echo<T> {
    pub io: T,
    out: OutBuf,
    state: State,
    pub life: Life,
    write_blocked: bool,
    /// The peer's FIN or a hang-up was reported: read to EOF, never stop at a short read.
    read_closed: bool,
    /// Bytes the transport took, from the connection's start (a fault plan set later counts
    /// from there).
    sent: u64,
}

impl<T: Transport> Echo<T> {
    pub(crate) fn new(io: T, life: Life) -> Self {
        Echo {
            io,
            out: OutBuf::new(),
            state: State::Open,
            life,
            write_blocked: false,
            read_closed: false,
            sent: 0,
        }
    }

    /// The same connection over another transport made from this one's (a fault plan set or
    /// removed at run time).
    pub(crate) fn map_io<U>(self, f: impl FnOnce(T, u64) -> U) -> Echo<U> {
        Echo {
            io: f(self.io, self.sent),
            out: self.out,
            state: self.state,
            life: self.life,
            write_blocked: self.write_blocked,
            read_closed: self.read_closed,
            sent: self.sent,
        }
    }

    /// The transport took `n` bytes.
    #[inline(always)]
    fn wrote(&mut self, n: usize, ctx: &mut Ctx) {
        ctx.stats.bytes_out += n as u64;
        self.sent += n as u64;
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

    /// Half-closed and everything echoed, down to the transport's own buffers: time to close.
    /// (After a writable edge that only the transport used.)
    pub(crate) fn is_finished(&self) -> bool {
        self.state == State::Flushing && self.out.is_empty() && !self.io.has_buffered()
    }

    /// The common readable event, kept small: the connection is open, owes nothing, and no EOF
    /// was reported. One recv into the shared buffer, one send of all of it, done if the read was
    /// short (the socket is drained). `Err(used)` hands over to [`Echo::on_readable`] with `used`
    /// bytes of the turn's budget spent: after a full read (more may wait), at EOF (a read
    /// returns 0 again), or on EINTR; whatever this call read is fully handled either way.
    #[inline]
    pub(crate) fn fast_echo(&mut self, ctx: &mut Ctx) -> Result<Outcome, usize> {
        if !self.is_quiet() {
            return Err(0);
        }
        let room = self.room(ctx);
        let n = match self.io.recv(&mut ctx.buf[..room]) {
            Ok(0) | Err(EINTR) => return Err(0),
            Ok(n) => n,
            Err(EAGAIN) => return Ok(Outcome::Idle), // a spurious event
            Err(_) => return Ok(Outcome::Close(CloseReason::Reset)),
        };
        self.echo_read(n, room, ctx)
    }

    /// Open, owing nothing, no EOF reported: the state [`Echo::fast_echo`] serves.
    #[inline]
    pub(crate) fn is_quiet(&self) -> bool {
        self.state == State::Open && self.out.is_empty() && !self.read_closed
    }

    /// What one read may take with nothing pending: the cap (less what the transport may hold
    /// of its own), within the shared buffer.
    #[inline]
    pub(crate) fn room(&self, ctx: &Ctx) -> usize {
        self.io.cap(ctx.cap).saturating_sub(self.io.reserve()).min(ctx.buf.len())
    }

    /// The second half of [`Echo::fast_echo`]: `ctx.buf[..n]` was just read (`n > 0`, `room`
    /// asked for); sends it, keeps what the transport refused.
    #[inline]
    fn echo_read(&mut self, n: usize, room: usize, ctx: &mut Ctx) -> Result<Outcome, usize> {
        ctx.stats.bytes_in += n as u64;
        self.life.last_active = ctx.tick;
        // `echo` would do the same with nothing owed, but calling it here costs ~40 instructions
        // per message (callgrind): its pending-output paths come along. So the send is inline.
        let sent = loop {
            let sent = self.io.send(&ctx.buf[..n]);
            if sent != Err(EINTR) {
                break sent;
            }
        };
        match sent {
            Ok(written) if written == n => self.wrote(n, ctx),
            Ok(written) => {
                self.wrote(written, ctx);
                self.keep_unsent(0, written, n, ctx);
            }
            // Refused: the kernel's buffer is full, so a writable edge will follow.
            Err(EAGAIN) => self.keep_unsent(0, 0, n, ctx),
            Err(_) => return Ok(Outcome::Close(CloseReason::Reset)),
        }
        if n < room && self.io.short_read_drains() {
            Ok(Outcome::Idle)
        } else {
            Err(n)
        }
    }

    /// Goes on from a read the transport made itself in the quiet state, `room` asked for
    /// (see `Ws::answer_in_place`): `read` is what a `recv` would have returned, `Ok(0)`
    /// meaning "read again". As [`Echo::fast_echo`] goes on from its own read.
    pub(crate) fn after_read(
        &mut self,
        read: Result<usize, Errno>,
        room: usize,
        ctx: &mut Ctx,
    ) -> Outcome {
        let fast = match read {
            Ok(0) | Err(EINTR) => Err(0),
            Ok(n) => self.echo_read(n, room, ctx),
            Err(EAGAIN) => Ok(Outcome::Idle),
            Err(_) => Ok(Outcome::Close(CloseReason::Reset)),
        };
        fast.unwrap_or_else(|used| self.on_readable(ctx, used))
    }

    /// Reads and echoes until the socket is drained, the budget is spent (`used` of it already
    /// was, this turn) or the cap is reached.
    pub(crate) fn on_readable(&mut self, ctx: &mut Ctx, mut used: usize) -> Outcome {
        while self.state == State::Open {
            let room = self
                .out
                .room(self.io.cap(ctx.cap).saturating_sub(self.io.reserve()))
                .min(ctx.buf.len());
            if room == 0 {
                self.set_state(State::Backpressured);
                break;
            }
            let n = match self.io.recv(&mut ctx.buf[..room]) {
                Ok(0) => return self.on_eof(ctx),
                Ok(n) => n,
                Err(EAGAIN) => break,
                Err(EINTR) => continue,
                Err(_) => return Outcome::Close(CloseReason::Reset),
            };
            ctx.stats.bytes_in += n as u64;
            self.life.last_active = ctx.tick;
            if let Err(reason) = self.echo(n, ctx) {
                return Outcome::Close(reason);
            }
            used += n;
            // A short read on a stream socket means its receive queue was empty (epoll(7));
            // new data makes a new edge. Unless EOF was reported: then read on until it shows.
            if n < room && !self.read_closed && self.io.short_read_drains() {
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
            State::Backpressured if self.out.len() <= self.io.cap(ctx.cap) / 2 => {
                self.set_state(State::Open);
                self.on_readable(ctx, 0)
            }
            State::Flushing if self.out.is_empty() && !self.io.has_buffered() => self.finish(),
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
        if self.out.is_empty() && !self.io.has_buffered() {
            self.finish()
        } else {
            Outcome::Idle // finished from the write side (or the transport's wake-up)
        }
    }

    /// Everything was echoed after the peer's EOF: the reactor's close sends ours.
    fn finish(&mut self) -> Outcome {
        Outcome::Close(CloseReason::Eof)
    }

    /// Sends pending output followed by `ctx.buf[..n]`, in one syscall; keeps what is refused.
    #[inline]
    fn echo(&mut self, n: usize, ctx: &mut Ctx) -> Result<(), CloseReason> {
        let new = &ctx.buf[..n];
        if self.write_blocked {
            self.out.push(new, self.io.cap(ctx.cap), &mut ctx.pool);
            return Ok(());
        }
        let pending = self.out.len();
        let sent = loop {
            let sent = if pending == 0 {
                self.io.send(new)
            } else {
                self.io.send2(self.out.pending(), new)
            };
            if sent != Err(EINTR) {
                break sent;
            }
        };
        let written = match sent {
            Ok(written) => written,
            Err(EAGAIN) => 0,
            Err(_) => return Err(CloseReason::Reset),
        };
        self.wrote(written, ctx);
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
            self.out.push(new, self.io.cap(ctx.cap), &mut ctx.pool);
        } else {
            self.out.consume(pending, &mut ctx.pool);
            self.out.push(&new[written - pending..], self.io.cap(ctx.cap), &mut ctx.pool);
        }
    }

    /// Writes pending output until it is gone or the socket refuses more.
    fn flush(&mut self, ctx: &mut Ctx) -> Result<(), CloseReason> {
        while !self.out.is_empty() {
            match self.io.send(self.out.pending()) {
                Ok(n) => {
                    self.wrote(n, ctx);
                    self.life.last_active = ctx.tick;
                    let all = n == self.out.len();
                    self.out.consume(n, &mut ctx.pool);
                    if !all {
                        self.write_blocked = true;
                        break;
                    }
                }
                Err(EAGAIN) => {
                    self.write_blocked = true;
                    break;
                }
                Err(EINTR) => {}
                Err(_) => return Err(CloseReason::Reset),
            }
        }
        Ok(())
    }

    /// The peer's end of stream was reported by an event this connection did not see (it came
    /// while the connection waited for its PROXY header).
    pub(crate) fn note_read_closed(&mut self) {
        self.read_closed = true;
        self.io.note_read_closed();
    }

    /// Serves one readiness event: the writable side when output is owed, then the readable
    /// side, through the fast path when it applies. `None`: a stale event for a connection
    /// closed earlier in this batch. The whole event path of every echo connection, plain or
    /// faulty.
    pub(crate) fn on_event(
        &mut self,
        ctx: &mut Ctx,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> Option<Outcome> {
        if self.state == State::Closed {
            return None;
        }
        if read_closed {
            self.note_read_closed();
        }
        let mut outcome = Outcome::Idle;
        // mio reports writable with nearly every event; it matters only when output is owed (a
        // connection whose writes were refused always has output pending).
        if writable && !self.out.is_empty() {
            outcome = self.on_writable(ctx);
        }
        if readable && outcome == Outcome::Idle {
            outcome = match self.fast_echo(ctx) {
                Ok(outcome) => outcome,
                Err(used) => self.on_readable(ctx, used),
            };
        }
        Some(outcome)
    }

    /// Ends the connection, for any reason: FIN (once; after an EOF it tells the peer everything
    /// was echoed, on an idle or drain close that the end is orderly), and the storage goes back
    /// to the pool. Input still unread at this point is lost, knowingly: an EOF close has none,
    /// and quiet connections have none.
    pub(crate) fn close(&mut self, pool: &mut BufferPool) {
        if self.state != State::Closed {
            self.io.shutdown_write();
            self.set_state(State::Closed);
        }
        self.out.release(pool);
    }
}
