//! A stream echo connection: TCP or Unix, in the clear or TLS on TCP (`tls://`), through its
//! [`Wire`].
//!
//! It keeps every byte it sent in a ring until its echo arrives, and compares the echo with it:
//! the same buffer is the send queue (`written..len`) and the reference (`acked..written`).
//! Messages complete every `size` echoed bytes, however the bytes arrive (short reads are normal).
//! Over TLS the ring holds plaintext: `written` counts what rustls took (at most
//! [`crate::tls::BUFFER_LIMIT`] ahead of the socket), the handshake belongs to connecting (so no
//! message is issued and timed before it completes), and the server's close_notify reads as its
//! EOF.
//!
//! Invariants:
//! - Every message handed over and not yet completed is in `runs`, in send order, grouped into
//!   runs of messages that share their times.
//! - Closed-loop runs have no start time until the socket takes their first byte (the last
//!   `unstamped` runs, the oldest of them at ring offset `unstamped_at`); a run whose messages
//!   went out in part is split there. Open-loop messages start at their intended time instead.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::conn::{EchoConn, Life, Status};
use crate::payload;
use crate::tally::{Cause, InFlight, Tally};
use crate::target::Endpoint;
use crate::tls::TlsClient;
use crate::wire::{Socket, Wire};

/// Stream messages handed over together (a closed-loop refill, or one open-loop message): they
/// share their times and complete in order, so they are kept, and completed, as one entry.
#[derive(Debug, Clone, Copy)]
struct Run {
    msg: InFlight,
    count: usize,
}

/// One stream echo connection.
#[derive(Debug)]
pub struct StreamConn {
    life: Life,
    sock: Option<Socket>,
    /// The bytes over the socket: in the clear, or TLS on a `tls://` connection.
    wire: Wire,
    ring: Vec<u8>,
    acked: usize,
    /// Bytes echoed of the oldest message not yet complete (`acked` modulo the message size).
    partial: usize,
    written: usize,
    runs: VecDeque<Run>,
    outstanding: usize,
    unstamped: usize,
    /// Ring offset of the oldest unstamped run's first byte.
    unstamped_at: usize,
    /// Bytes per message.
    size: usize,
    next_seq: u64,
    write_blocked: bool,
    read_closed: bool,
}

impl StreamConn {
    /// The socket's descriptor, if the connection has one.
    #[inline]
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.sock.as_ref().map(Socket::fd)
    }

    /// One read (the direct syscall; over TLS the plaintext of as many records as the socket
    /// has); `None` when the connection has no socket.
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let fd = self.fd()?;
        let result = self.wire.read(fd, buf);
        // The end came with the data: read again rather than wait for an edge.
        self.read_closed |= self.wire.saw_end();
        Some(result)
    }

    /// Closed loop: the unstamped messages whose first byte the socket has now taken start at
    /// `now`; a run that went out in part is split, so the rest start when their bytes go.
    fn stamp_sent(&mut self, now: u64) {
        while self.unstamped > 0 && self.unstamped_at < self.written {
            let i = self.runs.len() - self.unstamped;
            let run = &mut self.runs[i];
            let unsent = run.msg;
            run.msg.start = now;
            run.msg.sent = now;
            let bytes = run.count * self.size;
            let out = self.written - self.unstamped_at;
            if out < bytes {
                let went = out.div_ceil(self.size);
                if went < run.count {
                    let rest = Run { msg: unsent, count: run.count - went };
                    run.count = went;
                    self.runs.insert(i + 1, rest);
                    self.unstamped_at += went * self.size;
                    return; // the rest of that run, and everything behind it, is still unsent
                }
            }
            self.unstamped_at += bytes;
            self.unstamped -= 1;
        }
    }

    /// Drops echoed bytes from the ring once they are a good share of it, keeping message
    /// boundaries at multiples of the message size. The bytes kept move to the front, so it
    /// waits until they are at most a quarter of those dropped: moving at most one byte for
    /// four echoed (at "half", bulk with a deep queue moved one for one, 3 % of loadgen's CPU).
    fn compact(&mut self) {
        let whole = self.acked - self.partial;
        if whole == self.ring.len() {
            self.ring.clear();
            self.acked = 0;
            self.written = 0;
        } else if whole >= 64 * 1024 && whole >= 4 * (self.ring.len() - whole) {
            self.ring.drain(..whole);
            self.acked -= whole;
            self.written -= whole;
            if self.unstamped > 0 {
                self.unstamped_at -= whole; // unsent bytes lie behind every acked one
            }
        }
    }
}

impl EchoConn for StreamConn {
    fn new(id: u32) -> Self {
        StreamConn {
            life: Life::new(id),
            sock: None,
            wire: Wire::plain(),
            ring: Vec::new(),
            acked: 0,
            partial: 0,
            written: 0,
            runs: VecDeque::new(),
            outstanding: 0,
            unstamped: 0,
            unstamped_at: 0,
            size: 1,
            next_seq: 0,
            write_blocked: false,
            read_closed: false,
        }
    }

    #[inline(always)]
    fn life(&self) -> &Life {
        &self.life
    }

    #[inline(always)]
    fn life_mut(&mut self) -> &mut Life {
        &mut self.life
    }

    fn connect(
        &mut self,
        endpoint: &Endpoint,
        tls: Option<&TlsClient>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        self.life.connecting();
        let (mut sock, wire) = crate::wire::connect(endpoint, tls, self.life.id as u64)?;
        self.wire = wire;
        registry.register(sock.source(), token, Interest::READABLE | Interest::WRITABLE)?;
        self.sock = Some(sock);
        self.write_blocked = false;
        self.read_closed = false;
        Ok(())
    }

    fn check_connected(&mut self) -> Status {
        let result = match &self.sock {
            Some(s) => match s.connected() {
                Ok(true) => self.wire.handshake(s.fd()),
                other => other,
            },
            None => Ok(false),
        };
        match result {
            Ok(true) => {
                self.life.up();
                Status::Ok
            }
            Ok(false) => Status::Ok,
            Err(e) => Status::Failed(Cause::of_connect(&e)),
        }
    }

    fn drop_connection(&mut self, registry: &Registry, now: Instant, tally: &mut Tally) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(sock.source());
        }
        self.wire = Wire::plain();
        for run in self.runs.drain(..) {
            if run.msg.record {
                tally.recorded_inflight -= run.count as u64;
            }
        }
        self.ring.clear();
        self.acked = 0;
        self.partial = 0;
        self.written = 0;
        self.outstanding = 0;
        self.unstamped = 0;
        self.life.down(now);
    }

    /// Queued for this turn's write; batches (a closed-loop refill) cost one ring reservation
    /// and one queue extension.
    fn issue(
        &mut self,
        msg: InFlight,
        n: usize,
        stamped: bool,
        size: usize,
        tally: &mut Tally,
        _scratch: &mut [u8],
    ) -> Status {
        let seq = self.next_seq;
        self.next_seq += n as u64;
        if msg.record {
            tally.recorded_inflight += n as u64;
        }
        self.outstanding += n;
        self.life.issued += n as u64;
        if !stamped {
            if self.unstamped == 0 {
                self.unstamped_at = self.ring.len();
            }
            self.unstamped += 1;
        }
        self.size = size;
        let from = self.ring.len();
        payload::append(&mut self.ring, n, size, self.life.id, seq);
        if self.wire.is_text() {
            payload::to_text(&mut self.ring[from..]);
        }
        self.runs.push_back(Run { msg, count: n });
        self.life.dirty = true;
        Status::Ok
    }

    /// Everything queued, in one syscall (unless the socket is full). Closed-loop messages start
    /// when their first byte goes to the socket (over TLS: to rustls): `clock` is read just
    /// before the write, and only when there are such messages.
    fn flush(&mut self, clock: impl FnOnce() -> u64) -> Status {
        self.life.dirty = false;
        if self.write_blocked || self.written == self.ring.len() {
            return Status::Ok;
        }
        let Some(fd) = self.fd() else { return Status::Ok };
        let now = if self.unstamped > 0 { clock() } else { 0 };
        match self.wire.write(fd, &self.ring[self.written..]) {
            Ok((n, blocked)) => {
                self.written += n;
                self.write_blocked = blocked;
            }
            Err(e) => return Status::Failed(Cause::of(&e)),
        }
        self.stamp_sent(now);
        Status::Ok
    }

    fn on_writable(&mut self, clock: impl FnOnce() -> u64) -> Status {
        self.write_blocked = false;
        if let Some(fd) = self.fd() {
            match self.wire.on_writable(fd) {
                Ok(true) => {}
                Ok(false) => {
                    self.write_blocked = true;
                    return Status::Ok;
                }
                Err(e) => return Status::Failed(Cause::of(&e)),
            }
        }
        self.flush(clock)
    }

    fn on_readable(
        &mut self,
        size: usize,
        scratch: &mut [u8],
        tally: &mut Tally,
        _check: &mut Vec<u8>,
    ) -> (Status, usize) {
        let mut completed = 0;
        loop {
            let Some(result) = self.read(scratch) else { return (Status::Ok, completed) };
            let n = match result {
                Ok(0) => return (Status::Failed(Cause::ClosedByServer), completed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (Status::Ok, completed),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return (Status::Failed(Cause::of(&e)), completed),
            };
            let now = tally.now_ns();
            let expected = &self.ring[self.acked..self.written];
            if n > expected.len() {
                return (Status::Failed(Cause::ExtraBytes), completed);
            }
            if scratch[..n] != expected[..n] {
                tally.mismatches += 1;
                return (Status::Mismatch, completed);
            }
            self.acked += n;
            // Messages are `size` bytes each, back to back; most reads complete none or one (no
            // division then).
            let got = self.partial + n;
            let done = match got {
                _ if got < size => 0,
                _ if got < 2 * size => 1,
                _ => got / size,
            };
            self.partial = got - done * size;
            let mut left = done;
            while left > 0 {
                let Some(run) = self.runs.front_mut() else { break };
                let k = run.count.min(left);
                tally.complete_n(run.msg, now, k as u64);
                left -= k;
                run.count -= k;
                if run.count == 0 {
                    self.runs.pop_front();
                }
            }
            self.outstanding -= done;
            self.life.completed += done as u64;
            completed += done;
            self.compact();
            if n < scratch.len() && !self.read_closed {
                // A short read: the socket's receive queue is empty (epoll(7)).
                return (Status::Ok, completed);
            }
        }
    }

    fn note_read_closed(&mut self) {
        self.read_closed = true;
    }

    /// The oldest message sent has waited longer than `timeout`: a `Timeout` failure.
    fn expire(&mut self, now: u64, timeout: Duration, _tally: &mut Tally) -> (Status, usize) {
        let timeout = timeout.as_nanos() as u64;
        let stale = self.oldest_sent().is_some_and(|sent| now.saturating_sub(sent) > timeout);
        (if stale { Status::Failed(Cause::Timeout) } else { Status::Ok }, 0)
    }

    /// The oldest run's send time, once it is stamped (a closed-loop run is stamped when its
    /// first byte goes out; the unstamped runs are the newest).
    fn oldest_sent(&self) -> Option<u64> {
        let run = self.runs.front().filter(|_| self.unstamped < self.runs.len())?;
        Some(run.msg.sent)
    }

    #[inline]
    fn in_flight(&self) -> usize {
        self.outstanding
    }

    /// Half-closes (close_notify first over TLS) so the server can finish echoing and close
    /// cleanly; something to wait for when the connection is up.
    fn begin_close(&mut self) -> bool {
        match &self.sock {
            Some(s) if self.life.phase == crate::conn::Phase::Up => {
                self.wire.close_notify(s.fd());
                s.shutdown_write()
            }
            _ => false,
        }
    }

    fn drain_until_eof(&mut self, scratch: &mut [u8]) -> bool {
        loop {
            let Some(result) = self.read(scratch) else { return true };
            match result {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn stamped_at(conn: &StreamConn, t: u64) -> usize {
        conn.runs.iter().filter(|r| r.msg.start == t).map(|r| r.count).sum()
    }

    /// A closed-loop message starts when the socket takes its first byte: a write the socket
    /// refuses stamps nothing, and a partial write stamps only the messages that began to go out.
    #[test]
    fn start_times_are_stamped_when_bytes_go_out() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&a).set_send_buffer_size(4096).unwrap();
        let mut conn = StreamConn::new(0);
        conn.sock = Some(Socket::Unix(mio::net::UnixStream::from_std(a)));
        conn.life.phase = crate::conn::Phase::Up;
        let base = Instant::now();
        let mut tally = Tally::new(false, base, base);
        let mut scratch = vec![0; 1024];
        let (size, count) = (1000, 1000);
        let msg = InFlight { start: 1, sent: 1, record: false };
        assert_eq!(conn.issue(msg, count, false, size, &mut tally, &mut scratch), Status::Ok);
        assert_eq!(conn.flush(|| 50), Status::Ok);
        let first = conn.written;
        assert!(first > 0 && first < size * count, "a partial write: {first}");
        assert_eq!(stamped_at(&conn, 50), first.div_ceil(size));
        assert_eq!(stamped_at(&conn, 1), count - first.div_ceil(size), "the rest wait");

        conn.write_blocked = false; // as if a writable edge came, but the socket is still full
        assert_eq!(conn.flush(|| 60), Status::Ok);
        assert_eq!(conn.written, first);
        assert_eq!(stamped_at(&conn, 60), 0, "a refused write stamps nothing");

        let mut sink = vec![0; 1 << 20];
        while b.read(&mut sink).is_ok() {}
        conn.write_blocked = false;
        assert_eq!(conn.flush(|| 70), Status::Ok);
        let more = conn.written.div_ceil(size) - first.div_ceil(size);
        assert!(more > 0);
        assert_eq!(stamped_at(&conn, 70), more);
        assert_eq!(stamped_at(&conn, 50) + stamped_at(&conn, 70) + stamped_at(&conn, 1), count);
    }
}
