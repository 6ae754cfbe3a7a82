//! One load connection: a TCP or Unix stream (TCP with TLS on it for `tls://`), or a connected
//! UDP socket.
//!
//! Over TLS the ring holds plaintext: `written` counts what rustls took (at most
//! [`crate::tls::BUFFER_LIMIT`] ahead of the socket), the handshake belongs to connecting (so no message
//! is issued and timed before it completes), and the server's close_notify reads as its EOF.
//!
//! Streams keep every byte they sent in a ring until its echo arrives, and compare the echo with
//! it: the same buffer is the send queue (`written..len`) and the reference (`acked..written`).
//! Messages complete every `size` echoed bytes, however the bytes arrive (short reads are normal).
//! Datagrams carry their sequence number, so replies may come back in any order; one not back
//! within the timeout is lost.
//!
//! Invariants:
//! - Every message handed to the connection and not yet completed is in `runs` (streams, in send
//!   order, grouped into runs of messages that share their times) or in `datagrams` (one slot per
//!   sequence number from `udp_base`).
//! - Closed-loop runs have no start time until the socket takes their first byte (the last
//!   `unstamped` runs, the oldest of them at ring offset `unstamped_at`); a run whose messages
//!   went out in part is split there. Open-loop messages start at their intended time instead.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use ricochet::sys;

use crate::payload;
pub use crate::tally::InFlight;
use crate::tally::{Cause, Tally};
use crate::target::{Address, Endpoint};
use crate::tls::TlsClient;
use crate::wire::{Socket, Wire};

/// What the rest of the worker needs to know after serving a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Drop it and reconnect later, counting this cause as an error.
    Failed(Cause),
    /// The echo differed from what was sent: count a mismatch, reconnect to resynchronise.
    Mismatch,
}

/// Stream messages handed over together (a closed-loop refill, or one open-loop message): they
/// share their times and complete in order, so they are kept, and completed, as one entry.
#[derive(Debug, Clone, Copy)]
struct Run {
    msg: InFlight,
    count: usize,
}

/// The open socket of a connection.
#[derive(Debug)]
enum Sock {
    Stream(Socket),
    Udp(UdpSocket),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Stream(s) => s.source(),
            Sock::Udp(s) => s,
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// connect(2) in progress.
    Connecting,
    /// Carrying load.
    Up,
    /// Dropped; reconnect at this time.
    Down(Instant),
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One load connection.
#[derive(Debug)]
pub struct Conn {
    /// Global connection number: it keys the payload pattern.
    pub id: u32,
    sock: Option<Sock>,
    /// Where it is in its life.
    pub phase: Phase,
    backoff: Duration,
    ring: Vec<u8>,
    acked: usize,
    /// Bytes echoed of the oldest message not yet complete (`acked` modulo the message size).
    partial: usize,
    written: usize,
    runs: VecDeque<Run>,
    datagrams: VecDeque<Option<InFlight>>,
    outstanding: usize,
    unstamped: usize,
    /// Ring offset of the oldest unstamped run's first byte.
    unstamped_at: usize,
    /// Bytes per stream message.
    size: usize,
    udp_base: u64,
    /// Highest datagram sequence number answered so far (reordering is counted against it).
    udp_highest: Option<u64>,
    next_seq: u64,
    /// Bumped whenever the connection is dropped: free-slot tokens of an older life are stale.
    pub generation: u32,
    /// Has queued bytes to write this turn.
    pub dirty: bool,
    write_blocked: bool,
    read_closed: bool,
    /// The bytes over a stream socket: in the clear, or TLS on a `tls://` connection.
    wire: Wire,
    /// When the current connect began (connect latency runs to the end of the handshake).
    connect_started: Instant,
    /// Messages issued and completed in this connection's life (`--reconnect-every`).
    life_issued: u64,
    life_completed: u64,
}

impl Conn {
    /// A connection that will connect on the first [`Conn::connect`].
    pub fn new(id: u32) -> Self {
        Conn {
            id,
            sock: None,
            phase: Phase::Down(Instant::now()),
            backoff: FIRST_BACKOFF,
            ring: Vec::new(),
            acked: 0,
            partial: 0,
            written: 0,
            runs: VecDeque::new(),
            datagrams: VecDeque::new(),
            outstanding: 0,
            unstamped: 0,
            unstamped_at: 0,
            size: 1,
            udp_base: 0,
            udp_highest: None,
            next_seq: 0,
            generation: 0,
            dirty: false,
            write_blocked: false,
            read_closed: false,
            wire: Wire::plain(),
            connect_started: Instant::now(),
            life_issued: 0,
            life_completed: 0,
        }
    }

    /// Messages this connection may still take before it is recycled after `every`.
    pub fn life_left(&self, every: Option<u64>) -> usize {
        every.map_or(usize::MAX, |n| n.saturating_sub(self.life_issued) as usize)
    }

    /// Whether the connection has completed its `every` messages and owes nothing.
    pub fn life_done(&self, every: Option<u64>) -> bool {
        every.is_some_and(|n| self.life_completed >= n && self.outstanding == 0)
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.outstanding
    }

    /// Starts a non-blocking connect and registers the socket under `token`; over TLS, a session
    /// from `tls` (its handshake runs as part of connecting).
    pub fn connect(
        &mut self,
        endpoint: &Endpoint,
        tls: Option<&TlsClient>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        self.connect_started = Instant::now();
        self.life_issued = 0;
        self.life_completed = 0;
        self.wire = Wire::plain();
        let mut sock = match &endpoint.address {
            Address::Tcp(addr) => Sock::Stream(Socket::tcp(*addr)?),
            Address::Tls(addr) => {
                let tls = tls.ok_or_else(|| io::Error::other("a tls:// target without TLS"))?;
                self.wire = Wire::new(Some(tls))?;
                Sock::Stream(Socket::tcp(*addr)?)
            }
            Address::Unix(path) => Sock::Stream(Socket::unix(path)?),
            Address::Udp(addr) => {
                let local: std::net::SocketAddr = if addr.is_ipv6() {
                    "[::]:0".parse().unwrap()
                } else {
                    "0.0.0.0:0".parse().unwrap()
                };
                let s = UdpSocket::bind(local)?;
                let _ = socket2::SockRef::from(&s).set_recv_buffer_size(1 << 20);
                s.connect(*addr)?;
                Sock::Udp(s)
            }
        };
        registry.register(sock.source(), token, Interest::READABLE | Interest::WRITABLE)?;
        self.phase = if matches!(sock, Sock::Udp(_)) { Phase::Up } else { Phase::Connecting };
        self.sock = Some(sock);
        self.write_blocked = false;
        self.read_closed = false;
        Ok(())
    }

    /// An event while connecting: did the connect work (and, over TLS, the handshake finish)?
    pub fn check_connected(&mut self) -> Status {
        let result = match &self.sock {
            Some(Sock::Stream(s)) => match s.connected() {
                Ok(true) => self.wire.handshake(s.fd()),
                other => other,
            },
            _ => Ok(true),
        };
        match result {
            Ok(true) => {
                self.phase = Phase::Up;
                self.backoff = FIRST_BACKOFF;
                Status::Ok
            }
            Ok(false) => Status::Ok,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Status::Failed(Cause::Refused)
            }
            Err(_) => Status::Failed(Cause::ConnectFailed),
        }
    }

    /// Drops the socket and everything in flight; reconnect after a backoff.
    pub fn drop_connection(&mut self, registry: &Registry, now: Instant, tally: &mut Tally) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(sock.source());
        }
        self.wire = Wire::plain();
        for run in self.runs.drain(..) {
            if run.msg.record {
                tally.recorded_inflight -= run.count as u64;
            }
        }
        for msg in self.datagrams.drain(..).flatten() {
            if msg.record {
                tally.recorded_inflight -= 1;
            }
        }
        self.ring.clear();
        self.acked = 0;
        self.partial = 0;
        self.written = 0;
        self.outstanding = 0;
        self.unstamped = 0;
        self.dirty = false;
        self.phase = Phase::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.generation = self.generation.wrapping_add(1);
    }

    /// `--reconnect-every`: the connection completed its messages and owes nothing; close it
    /// politely (close_notify over TLS, then FIN) and let it reconnect at once, with no backoff
    /// and no error counted.
    pub fn recycle(&mut self, registry: &Registry, now: Instant, tally: &mut Tally) {
        self.begin_close();
        let backoff = self.backoff;
        self.drop_connection(registry, now, tally);
        self.backoff = backoff;
        self.phase = Phase::Down(now);
    }

    /// How long the connect (and handshake) that just finished took.
    pub fn connect_time(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connect_started)
    }

    /// Hands `n` messages to the connection, all like `msg`: queued for this turn's write
    /// (streams) or sent at once (datagrams). Open loop passes the intended time (`stamped`);
    /// closed-loop messages are stamped when their bytes go out (datagrams here, streams in
    /// [`Conn::flush`]). Batches (a closed-loop refill) cost one ring reservation and one queue
    /// extension.
    pub fn issue(
        &mut self,
        msg: InFlight,
        n: usize,
        stamped: bool,
        size: usize,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> Status {
        if matches!(self.sock, Some(Sock::Udp(_))) {
            let mut msg = msg;
            if !stamped {
                let now = tally.now_ns(); // they go out now
                (msg.start, msg.sent) = (now, now);
            }
            return self.send_datagrams(msg, n, size, tally, scratch);
        }
        let seq = self.hand_over(n, msg.record, tally);
        self.life_issued += n as u64;
        if !stamped {
            if self.unstamped == 0 {
                self.unstamped_at = self.ring.len();
            }
            self.unstamped += 1;
        }
        self.size = size;
        payload::append(&mut self.ring, n, size, self.id, seq);
        self.runs.push_back(Run { msg, count: n });
        self.dirty = true;
        Status::Ok
    }

    /// Numbers `n` new messages (returns the first number) and counts them in flight.
    fn hand_over(&mut self, n: usize, record: bool, tally: &mut Tally) -> u64 {
        let first = self.next_seq;
        self.next_seq += n as u64;
        if record {
            tally.recorded_inflight += n as u64;
        }
        self.outstanding += n;
        first
    }

    /// Sends `n` datagrams like `msg`, built in `scratch`, up to [`sys::MAX_DATAGRAMS`] per
    /// sendmmsg(2). One the socket refuses is simply lost: the timeout counts it.
    fn send_datagrams(
        &mut self,
        msg: InFlight,
        n: usize,
        size: usize,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> Status {
        let Some(Sock::Udp(s)) = &self.sock else { return Status::Ok };
        let fd = s.as_raw_fd();
        let per_call = (scratch.len() / size).clamp(1, sys::MAX_DATAGRAMS);
        let mut left = n;
        while left > 0 {
            let k = left.min(per_call);
            left -= k;
            let seq = self.hand_over(k, msg.record, tally);
            if self.datagrams.is_empty() {
                self.udp_base = seq;
            }
            self.datagrams.extend(std::iter::repeat_n(Some(msg), k));
            let mut batch: [&[u8]; sys::MAX_DATAGRAMS] = [&[]; sys::MAX_DATAGRAMS];
            let datagrams = scratch[..k * size].chunks_exact_mut(size);
            for (j, (slot, datagram)) in batch.iter_mut().zip(datagrams).enumerate() {
                payload::fill_datagram(datagram, self.id, seq + j as u64);
                *slot = datagram;
            }
            let mut sent = 0;
            while sent < k {
                match sys::send_datagrams(fd, &batch[sent..k]) {
                    Ok(0) | Err(libc::EAGAIN) => break, // the socket is full: the rest are lost
                    Ok(m) => sent += m,
                    // An ICMP error from an earlier datagram, reported here: this one is lost.
                    Err(libc::ECONNREFUSED) => sent += 1,
                    Err(libc::EINTR) => {}
                    Err(e) => return Status::Failed(Cause::of(&io::Error::from_raw_os_error(e))),
                }
            }
        }
        Status::Ok
    }

    /// Writes everything queued, in one syscall (unless the socket is full). Closed-loop
    /// messages start when their first byte goes to the socket (over TLS: to rustls, which holds
    /// at most [`crate::tls::BUFFER_LIMIT`] ahead of the socket): `clock` is read just before the write,
    /// and only when there are such messages.
    pub fn flush(&mut self, clock: impl FnOnce() -> u64) -> Status {
        self.dirty = false;
        if self.write_blocked || self.written == self.ring.len() {
            return Status::Ok;
        }
        let Some(fd) = self.stream_fd() else { return Status::Ok };
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

    /// The socket can take bytes again.
    pub fn on_writable(&mut self, clock: impl FnOnce() -> u64) -> Status {
        self.write_blocked = false;
        if let Some(fd) = self.stream_fd() {
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

    /// End of the run: half-closes a stream so the server can finish echoing and close cleanly.
    /// Returns whether there is anything to wait for (a stream that is up).
    pub fn begin_close(&mut self) -> bool {
        match &self.sock {
            Some(Sock::Stream(s)) if self.phase == Phase::Up => {
                self.wire.close_notify(s.fd());
                s.shutdown_write()
            }
            _ => false,
        }
    }

    /// The descriptor of a stream socket; `None` when the connection has none (down, or UDP).
    fn stream_fd(&self) -> Option<RawFd> {
        match &self.sock {
            Some(Sock::Stream(s)) => Some(s.fd()),
            _ => None,
        }
    }

    /// One read from a stream socket (the server's direct syscall: see `ricochet::sys`; over
    /// TLS, the plaintext of as many records as the socket has); `None` when the connection has
    /// none.
    fn stream_read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let fd = self.stream_fd()?;
        let result = self.wire.read(fd, buf);
        // The end came with the data: read again rather than wait for an edge.
        self.read_closed |= self.wire.saw_end();
        Some(result)
    }

    /// End of the run: reads and discards the rest of the echo; true once the server's EOF (or an
    /// error) arrived.
    pub fn drain_until_eof(&mut self, scratch: &mut [u8]) -> bool {
        loop {
            let Some(result) = self.stream_read(scratch) else { return true };
            match result {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Notes that the peer's FIN or a hang-up was reported.
    pub fn note_read_closed(&mut self) {
        self.read_closed = true;
    }

    /// Reads and checks every echo waiting; returns the status and how many messages completed
    /// (the closed loop sends that many new ones).
    pub fn on_readable(
        &mut self,
        size: usize,
        scratch: &mut [u8],
        tally: &mut Tally,
        check: &mut Vec<u8>,
    ) -> (Status, usize) {
        if matches!(self.sock, Some(Sock::Udp(_))) {
            return self.read_datagrams(size, scratch, tally, check);
        }
        let mut completed = 0;
        loop {
            let Some(result) = self.stream_read(scratch) else { return (Status::Ok, completed) };
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
            self.life_completed += done as u64;
            completed += done;
            self.compact();
            if n < scratch.len() && !self.read_closed {
                // A short read: the socket's receive queue is empty (epoll(7)).
                return (Status::Ok, completed);
            }
        }
    }

    /// Drops echoed bytes from the ring once they are a good share of it, keeping message
    /// boundaries at multiples of the message size.
    fn compact(&mut self) {
        let whole = self.acked - self.partial;
        if whole == self.ring.len() {
            self.ring.clear();
            self.acked = 0;
            self.written = 0;
        } else if whole >= 64 * 1024 && whole * 2 >= self.ring.len() {
            self.ring.drain(..whole);
            self.acked -= whole;
            self.written -= whole;
            if self.unstamped > 0 {
                self.unstamped_at -= whole; // unsent bytes lie behind every acked one
            }
        }
    }

    fn read_datagrams(
        &mut self,
        size: usize,
        scratch: &mut [u8],
        tally: &mut Tally,
        check: &mut Vec<u8>,
    ) -> (Status, usize) {
        let mut completed = 0;
        loop {
            let Some(Sock::Udp(s)) = &self.sock else { return (Status::Ok, completed) };
            let n = match sys::recv(s.as_raw_fd(), scratch).map_err(io::Error::from_raw_os_error) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (Status::Ok, completed),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable for an earlier datagram: the server is not there (yet).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return (Status::Failed(Cause::of(&e)), completed),
            };
            let now = tally.now_ns();
            let Some(seq) = payload::check_datagram(&scratch[..n], self.id, size, check) else {
                tally.mismatches += 1;
                continue;
            };
            let slot =
                seq.checked_sub(self.udp_base).and_then(|i| self.datagrams.get_mut(i as usize));
            match slot.and_then(Option::take) {
                Some(msg) => {
                    match self.udp_highest {
                        Some(highest) if seq < highest => tally.reordered += 1,
                        _ => self.udp_highest = Some(seq),
                    }
                    tally.complete(msg, now);
                    self.outstanding -= 1;
                    completed += 1;
                    self.trim_answered();
                }
                None => tally.duplicates += 1,
            }
        }
    }

    fn trim_answered(&mut self) {
        while let Some(None) = self.datagrams.front() {
            self.datagrams.pop_front();
            self.udp_base += 1;
        }
    }

    /// The oldest message still in flight has waited longer than `timeout`: for streams a
    /// `Timeout` failure; datagrams older than that are counted lost (returns how many).
    pub fn expire(&mut self, now: u64, timeout: Duration, tally: &mut Tally) -> (Status, usize) {
        let timeout = timeout.as_nanos() as u64;
        let is_udp = matches!(self.sock, Some(Sock::Udp(_)));
        if !is_udp {
            let stale = self.runs.front().is_some_and(|run| {
                self.unstamped < self.runs.len() && now.saturating_sub(run.msg.sent) > timeout
            });
            let status = if stale { Status::Failed(Cause::Timeout) } else { Status::Ok };
            return (status, 0);
        }
        let mut lost = 0;
        for slot in self.datagrams.iter_mut() {
            if let Some(m) = slot {
                if now.saturating_sub(m.sent) <= timeout {
                    break;
                }
                if m.record {
                    tally.recorded_inflight -= 1;
                    if now >= tally.record_from {
                        tally.lost += 1;
                    }
                }
                *slot = None;
                self.outstanding -= 1;
                lost += 1;
            }
        }
        self.trim_answered();
        (Status::Ok, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn stamped_at(conn: &Conn, t: u64) -> usize {
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
        let mut conn = Conn::new(0);
        conn.sock = Some(Sock::Stream(Socket::Unix(mio::net::UnixStream::from_std(a))));
        conn.phase = Phase::Up;
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
