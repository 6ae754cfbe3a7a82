//! UDP echo: every datagram goes back whole to its sender.
//!
//! A readiness event drains the socket with `recvmmsg` into the reactor's shared batch (slots of
//! 64 KiB, so no datagram is ever truncated) and answers with `sendmmsg`: a burst costs a few
//! syscalls, not two per datagram. Replies the socket refuses (`WouldBlock`) wait in a small
//! bounded queue, flushed on the next writable edge; past its bound they are dropped and counted.
//! Datagrams from source ports below 1024 are dropped unless allowed (echo/chargen reflection
//! loops, as OpenBSD's inetd does).
//!
//! A fault plan (`drop`, `dup`, `corrupt`) is applied to each received datagram in arrival
//! order, with draws from the listener's seeded generator (drop, then corrupt and dup for one not
//! dropped, then one jitter draw per reply sent), so the same seed and the same input drop the
//! same datagrams. With `latency`/`jitter` each reply is held until its own time (jitter reorders
//! them): at most [`DELAY_DATAGRAMS`] replies and [`DELAY_BYTES`] bytes, past which replies are
//! dropped and counted in `datagrams_dropped`. The reactor arms a deadline for the next release.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::UdpSocket;
use socket2::{Domain, Socket, Type};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::faults::datagram::{misbehave, Delayed, Misbehaviour};
use crate::faults::{Faults, Rng};
use crate::stats::Stats;

/// Datagrams per recvmmsg/sendmmsg call.
pub(crate) const BATCH: usize = 32;
/// Bytes per slot: larger than any UDP payload (65507 over IPv4, 65527 over IPv6).
const SLOT: usize = 64 * 1024;
/// Replies kept while the socket refuses them.
const QUEUE_DATAGRAMS: usize = 1024;
const QUEUE_BYTES: usize = 4 << 20;
/// Replies held for latency at once, at most.
pub(crate) const DELAY_DATAGRAMS: usize = 65_536;
pub(crate) const DELAY_BYTES: usize = 64 << 20;
/// Batches served per event before the socket yields to others (re-queued by the reactor).
const BATCHES_PER_TURN: usize = 16;
/// Receive errors in one serving after which the socket waits for its next event.
const MAX_ERRORS_PER_TURN: usize = 4;

/// The reactor's one receive batch, shared by every UDP socket. Allocated only when a UDP
/// listener exists; the kernel touches only the pages datagrams land in.
pub(crate) struct Batch {
    data: crate::buffer::Aligned,
    names: Box<[libc::sockaddr_storage; BATCH]>,
    lens: [usize; BATCH],
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("slots", &BATCH).finish()
    }
}

impl Batch {
    pub(crate) fn new() -> Box<Batch> {
        Box::new(Batch {
            data: crate::buffer::Aligned::zeroed(BATCH * SLOT),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
            names: Box::new(unsafe { zeroed() }),
            lens: [0; BATCH],
        })
    }

    fn slot(&self, i: usize) -> &[u8] {
        &self.data[i * SLOT..i * SLOT + self.lens[i]]
    }

    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// recvmmsg into every slot; returns how many datagrams arrived.
    fn receive(&mut self, fd: i32) -> io::Result<usize> {
        // SAFETY: all-zero mmsghdr/iovec are valid values; every pointer is set below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let base = self.data.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: i * SLOT + SLOT <= data.len(), so the slot lies inside the buffer.
            iovs[i].iov_base = unsafe { base.add(i * SLOT) }.cast();
            iovs[i].iov_len = SLOT;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: hdrs holds BATCH valid headers whose buffers and names outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, hdr) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = hdr.msg_len as usize;
        }
        Ok(n)
    }

    /// sendmmsg of slots `which` (at most [`BATCH`] of them; a slot may be named twice) back to
    /// their senders; returns how many were sent.
    fn send(&mut self, fd: i32, which: &[usize]) -> io::Result<usize> {
        let which = &which[..which.len().min(BATCH)];
        // SAFETY: all-zero mmsghdr/iovec are valid values; every pointer is set below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let base = self.data.as_mut_ptr();
        for (j, &i) in which.iter().enumerate() {
            // SAFETY: i < BATCH, so the slot lies inside the buffer.
            iovs[j].iov_base = unsafe { base.add(i * SLOT) }.cast();
            iovs[j].iov_len = self.lens[i];
            let h = &mut hdrs[j].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = name_len(&self.names[i]);
            h.msg_iov = &mut iovs[j];
            h.msg_iovlen = 1;
        }
        // SAFETY: the first which.len() headers are valid and their memory outlives the call.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                which.len() as u32,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn name_len(name: &libc::sockaddr_storage) -> libc::socklen_t {
    match name.ss_family as i32 {
        libc::AF_INET => size_of::<libc::sockaddr_in>() as libc::socklen_t,
        _ => size_of::<libc::sockaddr_in6>() as libc::socklen_t,
    }
}

/// The sender's address, from what recvmmsg filled in.
fn to_socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match name.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits inside it.
            let sin =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = u32::from_be(sin.sin_addr.s_addr).into();
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits inside it.
            let sin6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let addr = SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            );
            Some(addr.into())
        }
        _ => None,
    }
}

/// A bound, non-blocking UDP socket for `addr`, with the configured buffer sizes (`reuseport`:
/// shared with other sockets on the same port, one per reactor).
pub(crate) fn bind(addr: SocketAddr, config: &Config, reuseport: bool) -> Result<UdpSocket> {
    let fail = |cause| Error::Bind { proto: "udp", addr: addr.to_string(), cause };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    if reuseport {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    if let Some(size) = config.recv_buffer {
        socket.set_recv_buffer_size(size).map_err(fail)?;
    }
    if let Some(size) = config.send_buffer {
        socket.set_send_buffer_size(size).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    Ok(UdpSocket::from_std(socket.into()))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// One UDP echo socket.
#[derive(Debug)]
pub(crate) struct UdpEcho {
    pub socket: UdpSocket,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    queued_bytes: usize,
    allow_low_ports: bool,
    /// The fault plan (boxed: most sockets have none).
    faults: Option<Box<Misbehaviour>>,
}

impl UdpEcho {
    pub(crate) fn new(
        socket: UdpSocket,
        allow_low_ports: bool,
        faults: Option<(Faults, Rng)>,
    ) -> Self {
        let mut echo = UdpEcho {
            socket,
            queue: VecDeque::new(),
            queued_bytes: 0,
            allow_low_ports,
            faults: None,
        };
        if let Some((plan, rng)) = faults {
            echo.set_faults(Some(plan), rng, &mut Stats::default());
        }
        echo
    }

    /// Replaces the fault plan (`rng`: the generator for a plan whose seed differs from the
    /// current one's). Held replies keep their times; without a plan they go out at once.
    pub(crate) fn set_faults(&mut self, plan: Option<Faults>, rng: Rng, stats: &mut Stats) {
        match (plan, self.faults.as_deref_mut()) {
            (Some(plan), Some(current)) => {
                if plan.seed != current.plan.seed {
                    current.rng = rng;
                }
                current.plan = plan;
            }
            (Some(plan), None) => {
                self.faults = Some(Box::new(Misbehaviour {
                    plan,
                    rng,
                    delayed: BinaryHeap::new(),
                    delayed_bytes: 0,
                    next_seq: 0,
                    armed: None,
                }))
            }
            (None, Some(current)) => {
                let held = std::mem::take(&mut current.delayed).into_sorted_vec();
                self.faults = None;
                for Reverse(d) in held.into_iter().rev() {
                    self.send_one(d.addr, &d.bytes, stats);
                }
            }
            (None, None) => {}
        }
    }

    /// The time to arm a release deadline for, unless one that early is armed already.
    pub(crate) fn arm_at(&mut self) -> Option<Instant> {
        let f = self.faults.as_deref_mut()?;
        let at = f.delayed.peek()?.0.at;
        if f.armed.is_some_and(|armed| armed <= at) {
            return None;
        }
        f.armed = Some(at);
        Some(at)
    }

    /// A release deadline fired: send the replies that are due.
    pub(crate) fn release(&mut self, now: Instant, stats: &mut Stats) {
        let Some(f) = self.faults.as_deref_mut() else { return };
        f.armed = None;
        let mut due = Vec::new();
        while f.delayed.peek().is_some_and(|d| d.0.at <= now) {
            let Reverse(d) = f.delayed.pop().expect("peeked");
            f.delayed_bytes -= d.bytes.len();
            due.push(d);
        }
        for d in due {
            self.send_one(d.addr, &d.bytes, stats);
        }
    }

    /// Holds a reply until its delay has passed.
    fn hold(&mut self, addr: SocketAddr, bytes: &[u8], now: Instant, stats: &mut Stats) {
        let f = self.faults.as_deref_mut().expect("only a plan delays");
        if f.delayed.len() >= DELAY_DATAGRAMS || f.delayed_bytes + bytes.len() > DELAY_BYTES {
            stats.datagrams_dropped += 1;
            return;
        }
        let at = now + f.plan.delay(&mut f.rng);
        f.delayed_bytes += bytes.len();
        f.next_seq += 1;
        f.delayed.push(Reverse(Delayed { at, seq: f.next_seq, addr, bytes: bytes.to_vec() }));
        stats.faults_delayed += 1;
    }

    /// Sends one reply now, behind anything queued; queues it if the socket refuses.
    fn send_one(&mut self, addr: SocketAddr, bytes: &[u8], stats: &mut Stats) {
        if self.queue.is_empty() {
            loop {
                match self.socket.send_to(bytes, addr) {
                    Ok(_) => return stats.datagrams_out += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if would_block(&e) => break,
                    Err(_) => return stats.datagrams_dropped += 1,
                }
            }
        }
        self.enqueue(addr, bytes, stats);
    }

    /// Receives and echoes until the socket is drained (false) or this turn's share is used up
    /// (true: call again after the current event batch).
    pub(crate) fn on_readable(&mut self, batch: &mut Batch, stats: &mut Stats) -> bool {
        let fd = self.socket.as_raw_fd();
        let mut errors = 0;
        for _ in 0..BATCHES_PER_TURN {
            let n = match batch.receive(fd) {
                Ok(n) => n,
                Err(e) if would_block(&e) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error queued for an earlier reply, say: it concerns one peer only, and
                // reading it clears it, so datagrams behind it are read next. An error that keeps
                // coming is not that: wait for the next edge rather than spin on it every turn.
                Err(_) => {
                    errors += 1;
                    if errors >= MAX_ERRORS_PER_TURN {
                        return false;
                    }
                    continue;
                }
            };
            stats.datagrams_in += n as u64;
            // Room for every datagram twice: `dup` names a slot two times.
            let mut keep = [0usize; 2 * BATCH];
            let mut kept = 0;
            for i in 0..n {
                let low = to_socket_addr(&batch.names[i]).is_none_or(|a| a.port() < 1024);
                if low && !self.allow_low_ports {
                    stats.datagrams_low_port += 1;
                    continue;
                }
                let copies = match self.faults.as_deref_mut() {
                    None => 1,
                    Some(f) => misbehave(&f.plan, &mut f.rng, batch.slot_mut(i), stats),
                };
                for _ in 0..copies {
                    keep[kept] = i;
                    kept += 1;
                }
            }
            match self.faults.as_deref().filter(|f| f.plan.delays()) {
                None => self.echo(batch, &keep[..kept], stats),
                Some(_) => {
                    let now = Instant::now();
                    for &i in &keep[..kept] {
                        match to_socket_addr(&batch.names[i]) {
                            Some(addr) => self.hold(addr, batch.slot(i), now, stats),
                            None => stats.datagrams_dropped += 1,
                        }
                    }
                }
            }
            if n < BATCH {
                return false; // a short batch: the receive queue was empty
            }
        }
        true
    }

    /// Sends slots `which` (behind anything queued), queueing what the socket refuses.
    fn echo(&mut self, batch: &mut Batch, which: &[usize], stats: &mut Stats) {
        let fd = self.socket.as_raw_fd();
        if !self.queue.is_empty() {
            self.flush(stats);
        }
        let mut rest = which;
        while !rest.is_empty() && self.queue.is_empty() {
            match batch.send(fd, rest) {
                Ok(sent) => {
                    stats.datagrams_out += sent as u64;
                    rest = &rest[sent..];
                }
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // This datagram cannot be sent (EMSGSIZE, unreachable, ...): skip it only.
                    stats.datagrams_dropped += 1;
                    rest = &rest[1..];
                }
            }
        }
        for &i in rest {
            match to_socket_addr(&batch.names[i]) {
                Some(addr) => self.enqueue(addr, batch.slot(i), stats),
                None => stats.datagrams_dropped += 1,
            }
        }
    }

    fn enqueue(&mut self, addr: SocketAddr, bytes: &[u8], stats: &mut Stats) {
        if self.queue.len() >= QUEUE_DATAGRAMS || self.queued_bytes + bytes.len() > QUEUE_BYTES {
            stats.datagrams_dropped += 1;
            return;
        }
        self.queued_bytes += bytes.len();
        self.queue.push_back((addr, bytes.to_vec()));
    }

    /// Sends queued replies until the socket refuses again.
    pub(crate) fn flush(&mut self, stats: &mut Stats) {
        while let Some((addr, bytes)) = self.queue.front() {
            match self.socket.send_to(bytes, *addr) {
                Ok(_) => stats.datagrams_out += 1,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => stats.datagrams_dropped += 1,
            }
            self.queued_bytes -= bytes.len();
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip_keeps_port() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let sa = socket2::SockAddr::from(addr);
        // SAFETY: SockAddr's storage is a sockaddr_storage of the stated length.
        let storage: libc::sockaddr_storage = unsafe { std::ptr::read(sa.as_ptr().cast()) };
        assert_eq!(to_socket_addr(&storage), Some(addr));
        assert_eq!(name_len(&storage), size_of::<libc::sockaddr_in>() as libc::socklen_t);
    }
}
