//! A datagram echo connection: a connected UDP socket. Each datagram carries its sequence
//! number, so replies may come back in any order (counted as reordered when they overtake one
//! another); one not back within the timeout is lost, and a reply twice is a duplicate.
//!
//! Invariant: every datagram sent and not yet answered or lost has its slot in `datagrams`, one
//! per sequence number from `base`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use ricochet::sys;

use crate::conn::{EchoConn, Life, Status};
use crate::payload;
use crate::tally::{Cause, InFlight, Tally};
use crate::target::{Address, Endpoint};
use crate::tls::TlsClient;

/// One datagram echo connection.
#[derive(Debug)]
pub struct DatagramConn {
    life: Life,
    sock: Option<UdpSocket>,
    /// One slot per sequence number from `udp_base`: `None` once answered or lost.
    datagrams: VecDeque<Option<InFlight>>,
    outstanding: usize,
    udp_base: u64,
    /// Highest sequence number answered so far (reordering is counted against it).
    udp_highest: Option<u64>,
    next_seq: u64,
}

impl DatagramConn {
    /// Numbers `n` new datagrams (returns the first number) and counts them in flight.
    fn hand_over(&mut self, n: usize, record: bool, tally: &mut Tally) -> u64 {
        let first = self.next_seq;
        self.next_seq += n as u64;
        if record {
            tally.recorded_inflight += n as u64;
        }
        self.outstanding += n;
        first
    }

    fn trim_answered(&mut self) {
        while let Some(None) = self.datagrams.front() {
            self.datagrams.pop_front();
            self.udp_base += 1;
        }
    }
}

impl EchoConn for DatagramConn {
    fn new(id: u32) -> Self {
        DatagramConn {
            life: Life::new(id),
            sock: None,
            datagrams: VecDeque::new(),
            outstanding: 0,
            udp_base: 0,
            udp_highest: None,
            next_seq: 0,
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

    /// Binds a local socket and connects it: up at once (no handshake).
    fn connect(
        &mut self,
        endpoint: &Endpoint,
        _tls: Option<&TlsClient>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        let Address::Udp(addr) = endpoint.address else {
            return Err(io::Error::other("a datagram connection over a stream"));
        };
        self.life.connecting();
        let local: std::net::SocketAddr =
            if addr.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let mut s = UdpSocket::bind(local)?;
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(1 << 20);
        s.connect(addr)?;
        registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
        self.sock = Some(s);
        self.life.up();
        Ok(())
    }

    fn check_connected(&mut self) -> Status {
        Status::Ok // up from the connect on
    }

    fn drop_connection(&mut self, registry: &Registry, now: Instant, tally: &mut Tally) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(&mut sock);
        }
        for msg in self.datagrams.drain(..).flatten() {
            if msg.record {
                tally.recorded_inflight -= 1;
            }
        }
        self.outstanding = 0;
        self.life.down(now);
    }

    /// Sent at once, up to [`sys::MAX_DATAGRAMS`] per sendmmsg(2), built in `scratch`; one the
    /// socket refuses is simply lost (the timeout counts it). Closed-loop datagrams start now.
    fn issue(
        &mut self,
        msg: InFlight,
        n: usize,
        stamped: bool,
        size: usize,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> Status {
        let mut msg = msg;
        if !stamped {
            let now = tally.now_ns(); // they go out now
            (msg.start, msg.sent) = (now, now);
        }
        let Some(s) = &self.sock else { return Status::Ok };
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
                payload::fill_datagram(datagram, self.life.id, seq + j as u64);
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

    fn flush(&mut self, _clock: impl FnOnce() -> u64) -> Status {
        self.life.dirty = false;
        Status::Ok // sent when issued
    }

    fn on_writable(&mut self, _clock: impl FnOnce() -> u64) -> Status {
        Status::Ok
    }

    fn on_readable(
        &mut self,
        size: usize,
        scratch: &mut [u8],
        tally: &mut Tally,
        check: &mut Vec<u8>,
    ) -> (Status, usize) {
        let mut completed = 0;
        loop {
            let Some(s) = &self.sock else { return (Status::Ok, completed) };
            let n = match sys::recv(s.as_raw_fd(), scratch).map_err(io::Error::from_raw_os_error) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (Status::Ok, completed),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable for an earlier datagram: the server is not there (yet).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return (Status::Failed(Cause::of(&e)), completed),
            };
            let now = tally.now_ns();
            let Some(seq) = payload::check_datagram(&scratch[..n], self.life.id, size, check)
            else {
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

    fn note_read_closed(&mut self) {}

    /// Datagrams older than `timeout` are lost (returns how many: their slots are free again).
    fn expire(&mut self, now: u64, timeout: Duration, tally: &mut Tally) -> (Status, usize) {
        let timeout = timeout.as_nanos() as u64;
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

    fn oldest_sent(&self) -> Option<u64> {
        self.datagrams.iter().flatten().next().map(|m| m.sent)
    }

    #[inline]
    fn in_flight(&self) -> usize {
        self.outstanding
    }

    fn begin_close(&mut self) -> bool {
        false // nothing to half-close
    }

    fn drain_until_eof(&mut self, _scratch: &mut [u8]) -> bool {
        true
    }
}
