//! Chat fan-out load (`loadgen chat://HOST:PORT`, `chat+tls://HOST:PORT`): every connection is a
//! member of the room, the first `publishers` of them publish lines, and every member checks what
//! it receives. Members read and write through their [`Wire`] (in the clear or TLS, whose
//! handshake is part of connecting), with the same checks and counters either way.
//!
//! A run: connect every member → make sure all are in the room (member 0 sends `#sync` lines
//! until every other member has received one, then member 1 until member 0 has) → publish:
//! closed loop keeps `depth` lines in flight per publisher (a line is complete when every other
//! member has received it), open loop sends `rate` lines per second in total, round-robin over
//! the publishers, latency from each line's intended time → stop publishing at the end, wait for
//! what is in flight (at most `--timeout`), close politely.
//!
//! Checks, per receiving member and publisher: lines arrive exactly once, in order, byte-exact
//! (the pattern of `payload::fill_line`), and never the member's own. Anything else is a
//! mismatch. A delivery not received within `--timeout` of its line's sending is lost (and the
//! gap it leaves is then not also a mismatch).
//! Latency is recorded per delivery: from the line's send (or intended) time to its receipt.
//!
//! One thread serves the whole room: a line's completion needs every member's receipt, and the
//! members' reads are the same kind of work as the server's writes, so one thread against one
//! server reactor is an even match. A member the server disconnects is not replaced: the error
//! is counted and its deliveries are lost from then on.

use std::collections::VecDeque;
use std::io;

use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Interest, Token};

use crate::engine::{Engine, Plan, Workload};
use crate::payload;
use crate::schedule::Schedule;
use crate::tally::Cause;
use crate::target::Address;
use crate::wire::{Socket, Wire};

/// The line members 0 and 1 send until everyone is known to be in the room.
const SYNC: &[u8] = b"#sync";
/// How often a sync line is sent again while some member has not seen one.
const SYNC_EVERY: Duration = Duration::from_millis(20);
/// Open loop: a publisher with this much unsent is skipped (the line waits in the schedule).
const MAX_QUEUED: usize = 1 << 20;

/// One published line in flight.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Latency starts here (ns since the clock base): sent, or intended (open loop).
    start: u64,
    /// When it was handed over: the timeout runs from here.
    sent: u64,
    /// Members that have yet to receive it.
    remaining: u32,
    /// Published in the measured period: its deliveries count.
    record: bool,
}

#[derive(Debug)]
struct Publisher {
    member: usize,
    /// Sequence number of `lines[0]`.
    base: u64,
    lines: VecDeque<Line>,
    /// Closed loop: the newest lines, whose first byte has not been written yet; each starts
    /// when the write that takes its first byte happens (the rule echo messages follow too).
    unstamped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Up,
    Dead,
}

#[derive(Debug)]
struct Member {
    socket: Socket,
    wire: Wire,
    phase: Phase,
    /// The publisher index of this member, if it publishes.
    publisher: Option<usize>,
    out: Vec<u8>,
    written: usize,
    write_blocked: bool,
    /// A received line still without its `\n`.
    carry: Vec<u8>,
    /// Per publisher: the sequence number expected next.
    next: Vec<u64>,
    /// Has received a sync line.
    synced: bool,
    read_closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Joining,
    Running,
}

/// The chat load of the (one) thread that serves the room.
pub(crate) struct ChatLoad {
    members: Vec<Member>,
    pubs: Vec<Publisher>,
    scratch: Vec<u8>,
    check: Vec<u8>,
    dirty: Vec<usize>,
    listed: Vec<bool>,
    schedule: Option<Schedule>,
    /// Open loop: the publisher the next line goes to.
    turn: usize,
    stage: Stage,
    /// Joining: every member must be in the room by then.
    join_deadline: Instant,
    /// Joining: when the next sync line goes out.
    next_sync: Instant,
    /// Deliveries each line needs: every member but its publisher.
    receivers: u32,
}

impl ChatLoad {
    pub(crate) fn new(plan: &Plan) -> ChatLoad {
        let n = plan.conn_ids.len();
        ChatLoad {
            members: Vec::with_capacity(n),
            pubs: (0..plan.publishers.min(n))
                .map(|member| Publisher { member, base: 0, lines: VecDeque::new(), unstamped: 0 })
                .collect(),
            scratch: vec![0; 256 * 1024],
            check: Vec::new(),
            dirty: Vec::with_capacity(n),
            listed: vec![false; n],
            schedule: None,
            turn: 0,
            stage: Stage::Joining,
            join_deadline: Instant::now() + plan.timeout,
            next_sync: Instant::now(),
            receivers: n as u32 - 1,
        }
    }

    /// Joining: once every member is connected, member 0 says `#sync` until all others heard
    /// it, then member 1 until member 0 heard it. A member that heard a line from another was in
    /// the room when that line went out, so it receives everything published after.
    fn join_step(&mut self, e: &mut Engine, now: Instant) {
        if self.members.iter().any(|m| m.phase != Phase::Up) {
            return;
        }
        if !self.members[1..].iter().all(|m| m.synced) {
            self.queue(0, SYNC);
        } else if !self.members[0].synced {
            self.queue(1, SYNC);
        } else {
            self.stage = Stage::Running;
            match e.plan.rate {
                Some(rate) => self.schedule = Some(Schedule::new(now, rate)),
                None => {
                    for p in 0..self.pubs.len() {
                        self.publish(e, p, now, e.plan.depth);
                    }
                }
            }
        }
    }

    fn queue(&mut self, m: usize, line: &[u8]) {
        let member = &mut self.members[m];
        member.out.extend_from_slice(line);
        member.out.push(b'\n');
        self.mark(m);
    }

    fn mark(&mut self, m: usize) {
        if !self.listed[m] {
            self.listed[m] = true;
            self.dirty.push(m);
        }
    }

    fn on_event(&mut self, e: &mut Engine, m: usize, event: &Event) {
        let Some(member) = self.members.get_mut(m) else { return };
        match member.phase {
            Phase::Dead => {}
            Phase::Connecting => {
                // Any event: a TLS handshake goes on with readable ones too.
                let connected = match member.socket.connected() {
                    Ok(true) => member.wire.handshake(member.socket.fd()),
                    other => other,
                };
                match connected {
                    Ok(true) => member.phase = Phase::Up,
                    Ok(false) => {}
                    Err(err) if crate::wire::refused(&err) => self.kill(e, m, Cause::Refused),
                    Err(_) => self.kill(e, m, Cause::ConnectFailed),
                }
            }
            Phase::Up => {
                member.read_closed |= event.is_read_closed();
                if event.is_writable() {
                    match member.wire.on_writable(member.socket.fd()) {
                        Ok(true) if member.write_blocked => {
                            member.write_blocked = false;
                            self.flush(e, m);
                        }
                        Ok(true) => {}
                        Ok(false) => member.write_blocked = true,
                        Err(err) => return self.kill(e, m, Cause::of(&err)),
                    }
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(e, m);
                }
            }
        }
    }

    /// Reads every line waiting for member `m`.
    fn on_readable(&mut self, e: &mut Engine, m: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            if self.members[m].phase != Phase::Up {
                break;
            }
            let member = &mut self.members[m];
            let read = member.wire.read(member.socket.fd(), &mut scratch);
            // The end came with the data: read again rather than wait for an edge.
            member.read_closed |= member.wire.saw_end();
            let n = match read {
                Ok(0) => {
                    self.kill(e, m, Cause::ClosedByServer);
                    break;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.kill(e, m, Cause::of(&err));
                    break;
                }
            };
            let at = e.tally.now_ns(); // when this member read it
            let mut data = &scratch[..n];
            let mut carry = std::mem::take(&mut self.members[m].carry);
            if !carry.is_empty() {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        carry.extend_from_slice(&data[..i]);
                        self.line(e, m, &carry, at);
                        carry.clear();
                        data = &data[i + 1..];
                    }
                    None => {
                        carry.extend_from_slice(data);
                        data = &[];
                    }
                }
            }
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', data) {
                self.line(e, m, &data[start..end], at);
                start = end + 1;
            }
            data = &data[start..];
            carry.extend_from_slice(data);
            if carry.len() > e.plan.size {
                // No line of this run is that long: what came is not what was sent.
                e.tally.mismatches += 1;
                carry.clear();
            }
            self.members[m].carry = carry;
            if n < scratch.len() && !self.members[m].read_closed {
                break; // a short read: the receive queue is empty (epoll(7))
            }
        }
        self.scratch = scratch;
    }

    /// One line received by member `m` (without its `\n`) at `at` ns.
    fn line(&mut self, e: &mut Engine, m: usize, line: &[u8], at: u64) {
        if line == SYNC {
            self.members[m].synced = true;
            return;
        }
        let member = &mut self.members[m];
        let Some((p, seq)) = payload::line_header(line) else {
            e.tally.mismatches += 1; // not a line of this run
            return;
        };
        let p = p as usize;
        if p >= self.pubs.len() || member.publisher == Some(p) {
            e.tally.mismatches += 1; // a publisher that does not exist, or its own line back
            return;
        }
        let expected = member.next[p];
        if seq != expected {
            // Lines skipped that had already timed out were counted lost: not counted again.
            // Any other gap (lines missing or reordered), or a duplicate, is a mismatch.
            let skipped_expired = seq > expected && seq <= self.pubs[p].base;
            if !skipped_expired {
                e.tally.mismatches += 1;
                if seq < expected {
                    return; // a duplicate
                }
            }
            member.next[p] = seq;
            return self.line(e, m, line, at);
        }
        member.next[p] = seq + 1;
        if payload::check_line(line, e.plan.size, &mut self.check) != Some((p as u32, seq)) {
            e.tally.mismatches += 1; // the right header on corrupted bytes
            return;
        }
        let publisher = &mut self.pubs[p];
        let Some(index) = seq.checked_sub(publisher.base) else {
            return; // it had already timed out (counted lost)
        };
        let Some(sent) = publisher.lines.get_mut(index as usize) else { return };
        sent.remaining -= 1;
        if sent.record {
            e.tally.delivery(at.saturating_sub(sent.start));
        }
        if index == 0 && sent.remaining == 0 {
            self.complete(e, p, at);
        }
    }

    /// Pops the lines at the front of publisher `p` that every member has, and publishes as many
    /// new ones (closed loop).
    fn complete(&mut self, e: &mut Engine, p: usize, at: u64) {
        let publisher = &mut self.pubs[p];
        let mut freed = 0;
        while publisher.lines.front().is_some_and(|l| l.remaining == 0) {
            let line = publisher.lines.pop_front().expect("checked");
            publisher.base += 1;
            freed += 1;
            if line.record {
                e.tally.messages += 1;
                e.tally.last_completion = Some(at);
            }
        }
        if freed > 0 && self.schedule.is_none() {
            let now = e.tally.base + Duration::from_nanos(at);
            self.publish(e, p, now, freed);
        }
    }

    /// Closed loop: publishes up to `n` lines from publisher `p`.
    fn publish(&mut self, e: &mut Engine, p: usize, now: Instant, n: usize) {
        if self.members[self.pubs[p].member].phase != Phase::Up {
            return;
        }
        for _ in 0..n {
            if !e.may_issue(now) {
                return;
            }
            let (record, 1) = e.admit(now, 1) else { return };
            // The turn's time until the write stamps it (the timeout needs a time meanwhile).
            let at = e.tally.ns(now);
            if self.issue(e, p, Line { start: at, sent: at, remaining: self.receivers, record }) {
                self.pubs[p].unstamped += 1;
            }
        }
    }

    /// Open loop: hands every line that came due to the next publisher with room.
    fn issue_due(&mut self, e: &mut Engine, now: Instant) {
        while e.may_issue(now) {
            let Some(schedule) = &self.schedule else { return };
            if schedule.next_due() > now {
                return;
            }
            let Some(p) =
                (0..self.pubs.len()).map(|k| (self.turn + k) % self.pubs.len()).find(|&p| {
                    let m = &self.members[self.pubs[p].member];
                    m.phase == Phase::Up && m.out.len() - m.written < MAX_QUEUED
                })
            else {
                return; // every publisher is backed up: the line waits, its latency runs
            };
            self.turn = p + 1;
            let Some(schedule) = &mut self.schedule else { return };
            let Some((_, intended)) = schedule.take_due(now) else { return };
            let (record, 1) = e.admit(now, 1) else { return };
            let line = Line {
                start: e.tally.ns(intended),
                sent: e.tally.ns(now),
                remaining: self.receivers,
                record,
            };
            self.issue(e, p, line);
        }
    }

    /// Queues `line` on publisher `p`'s connection; false if it is not up.
    fn issue(&mut self, e: &mut Engine, p: usize, line: Line) -> bool {
        let publisher = &mut self.pubs[p];
        let m = publisher.member;
        if self.members[m].phase != Phase::Up {
            return false;
        }
        let seq = publisher.base + publisher.lines.len() as u64;
        publisher.lines.push_back(line);
        let out = &mut self.members[m].out;
        let from = out.len();
        out.resize(from + e.plan.size, 0);
        payload::fill_line(&mut out[from..], p as u32, seq);
        self.mark(m);
        true
    }

    fn flush_dirty(&mut self, e: &mut Engine) {
        for k in 0..self.dirty.len() {
            let m = self.dirty[k];
            self.listed[m] = false;
            if !self.members[m].write_blocked {
                self.flush(e, m);
            }
        }
        self.dirty.clear();
    }

    /// Writes member `m`'s queued lines, in one syscall unless the socket is full.
    fn flush(&mut self, e: &mut Engine, m: usize) {
        let member = &mut self.members[m];
        if member.phase != Phase::Up || member.written == member.out.len() {
            return;
        }
        let publisher = member.publisher.filter(|&p| self.pubs[p].unstamped > 0);
        let now = if publisher.is_some() { e.tally.now_ns() } else { 0 };
        let result = member.wire.write(member.socket.fd(), &member.out[member.written..]);
        if let (Some(p), Ok((n @ 1.., _))) = (publisher, &result) {
            // The lines whose first byte went out start now; the rest when their bytes go.
            let publisher = &mut self.pubs[p];
            let unstamped = publisher.unstamped.min(publisher.lines.len());
            let went = went_out(member.out.len(), member.written + n, unstamped, e.plan.size);
            let first = publisher.lines.len() - unstamped;
            for line in publisher.lines.range_mut(first..first + went) {
                (line.start, line.sent) = (now, now);
            }
            publisher.unstamped = unstamped - went;
        }
        match result {
            Ok((n, blocked)) => {
                member.written += n;
                member.write_blocked = blocked;
                if member.written == member.out.len() {
                    member.out.clear();
                    member.written = 0;
                }
            }
            Err(err) => self.kill(e, m, Cause::of(&err)),
        }
    }

    /// Member `m` failed: count why; it is not replaced.
    fn kill(&mut self, e: &mut Engine, m: usize, cause: Cause) {
        let member = &mut self.members[m];
        if member.phase == Phase::Dead {
            return;
        }
        member.phase = Phase::Dead;
        let _ = e.poll.registry().deregister(member.socket.source());
        e.tally.error(cause);
    }

    /// Lines older than the timeout: the deliveries still missing are lost.
    fn expire(&mut self, e: &mut Engine, now: Instant) {
        let now_ns = e.tally.ns(now);
        let timeout = e.plan.timeout.as_nanos() as u64;
        for p in 0..self.pubs.len() {
            let publisher = &mut self.pubs[p];
            let mut freed = 0;
            while let Some(line) = publisher.lines.front() {
                if now_ns.saturating_sub(line.sent) <= timeout && line.remaining > 0 {
                    break;
                }
                if line.record {
                    e.tally.lost += line.remaining as u64;
                    if line.remaining == 0 {
                        e.tally.messages += 1;
                    }
                }
                publisher.lines.pop_front();
                publisher.base += 1;
                freed += 1;
            }
            if freed > 0 && self.schedule.is_none() && self.stage == Stage::Running {
                self.publish(e, p, now, freed);
            }
        }
    }
}

impl Workload for ChatLoad {
    fn start(&mut self, e: &mut Engine, _now: Instant) -> io::Result<()> {
        let n = e.plan.conn_ids.len();
        for i in 0..n {
            let (mut socket, tls) = match &e.plan.endpoint.address {
                Address::Tcp(addr) => (Socket::tcp(*addr)?, None),
                Address::Tls(addr) => (Socket::tcp(*addr)?, e.plan.tls.as_deref()),
                Address::Unix(path) => (Socket::unix(path)?, None),
                Address::Udp(_) => {
                    return Err(io::Error::other("a chat room is not served over UDP"));
                }
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            e.poll.registry().register(socket.source(), Token(i), interest)?;
            self.members.push(Member {
                socket,
                wire: Wire::new(tls)?,
                phase: Phase::Connecting,
                publisher: (i < self.pubs.len()).then_some(i),
                out: Vec::new(),
                written: 0,
                write_blocked: false,
                carry: Vec::new(),
                next: vec![0; self.pubs.len()],
                synced: false,
                read_closed: false,
            });
        }
        Ok(())
    }

    fn serve(&mut self, e: &mut Engine, i: usize, event: &Event, _now: Instant) {
        self.on_event(e, i, event);
    }

    fn turn(&mut self, e: &mut Engine, now: Instant) -> io::Result<()> {
        match self.stage {
            Stage::Joining => {
                if now >= self.join_deadline {
                    return Err(io::Error::other(
                        "the members did not all join the room within --timeout (is the target \
                         a chat room that sends each line to the other members?)",
                    ));
                }
                if now >= self.next_sync {
                    self.next_sync = now + SYNC_EVERY;
                    self.join_step(e, now);
                }
            }
            Stage::Running => self.issue_due(e, now),
        }
        self.flush_dirty(e);
        Ok(())
    }

    fn maintain(&mut self, e: &mut Engine, now: Instant) {
        self.expire(e, now);
    }

    fn next_due(&self) -> Option<Instant> {
        self.schedule.as_ref().map(Schedule::next_due)
    }

    fn wake_by(&self) -> Option<Instant> {
        (self.stage == Stage::Joining).then_some(self.next_sync)
    }

    fn finished(&self, e: &Engine, now: Instant) -> bool {
        self.stage == Stage::Running
            && !e.may_issue(now)
            && self.pubs.iter().all(|p| p.lines.is_empty())
    }

    /// Half-closes every member (close_notify first over TLS); the engine then reads each until
    /// the server closes it, so no unread data makes the kernel reset the connection.
    fn begin_close(&mut self, _e: &mut Engine) -> Vec<bool> {
        self.members
            .iter_mut()
            .map(|m| {
                m.phase == Phase::Up && {
                    m.wire.close_notify(m.socket.fd());
                    m.socket.shutdown_write()
                }
            })
            .collect()
    }

    fn drain(&mut self, m: usize) -> bool {
        let member = &mut self.members[m];
        loop {
            match member.wire.read(member.socket.fd(), &mut self.scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Of the newest `unstamped` lines of `size` bytes at the end of `out_len` queued bytes, how many
/// have their first byte among the first `written` bytes (the oldest of them first).
fn went_out(out_len: usize, written: usize, unstamped: usize, size: usize) -> usize {
    let first = out_len.saturating_sub(unstamped * size);
    match written > first {
        true => (written - first).div_ceil(size).min(unstamped),
        false => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::went_out;

    /// A partial write starts exactly the lines whose first byte it took (chat once stamped
    /// every waiting line at any write that took a byte).
    #[test]
    fn a_partial_write_starts_only_the_lines_it_began() {
        // 100 bytes queued: 20 already stamped, then 4 unstamped lines of 20 bytes.
        assert_eq!(went_out(100, 20, 4, 20), 0, "nothing of the unstamped lines went");
        assert_eq!(went_out(100, 21, 4, 20), 1, "one byte of the first");
        assert_eq!(went_out(100, 40, 4, 20), 1, "the first whole, not a byte of the second");
        assert_eq!(went_out(100, 41, 4, 20), 2);
        assert_eq!(went_out(100, 100, 4, 20), 4, "everything");
        assert_eq!(went_out(80, 80, 4, 20), 4, "only unstamped lines queued");
        assert_eq!(went_out(80, 0, 4, 20), 0);
    }
}
