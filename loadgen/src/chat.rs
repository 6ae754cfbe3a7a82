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
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::payload;
use crate::reactor::{self, Plan, Tick, HLOG_INTERVAL, MAINTENANCE, TICK};
use crate::schedule::Schedule;
use crate::tally::{Cause, Tally};
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
    /// Closed loop: the newest lines, not yet written; they start when the write that takes
    /// them happens (a write that takes only part of them stamps them all: a latency can only be
    /// overstated by it, never understated).
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

struct Worker {
    plan: Plan,
    poll: Poll,
    members: Vec<Member>,
    pubs: Vec<Publisher>,
    tally: Tally,
    scratch: Vec<u8>,
    check: Vec<u8>,
    dirty: Vec<usize>,
    listed: Vec<bool>,
    schedule: Option<Schedule>,
    /// Open loop: the publisher the next line goes to.
    turn: usize,
    issuing_done: bool,
    stage: Stage,
    /// Deliveries each line needs: every member but its publisher.
    receivers: u32,
}

/// Runs the room's load to the end of the run; returns what it measured.
pub fn run(plan: Plan) -> io::Result<Tally> {
    let poll = Poll::new()?;
    let n = plan.conn_ids.len();
    let publishers = plan.publishers.min(n);
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let (mut socket, tls) = match &plan.endpoint.address {
            Address::Tcp(addr) => (Socket::tcp(*addr)?, None),
            Address::Tls(addr) => (Socket::tcp(*addr)?, plan.tls.as_deref()),
            Address::Unix(path) => (Socket::unix(path)?, None),
            Address::Udp(_) => return Err(io::Error::other("a chat room is not served over UDP")),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry().register(socket.source(), Token(i), interest)?;
        members.push(Member {
            socket,
            wire: Wire::new(tls)?,
            phase: Phase::Connecting,
            publisher: (i < publishers).then_some(i),
            out: Vec::new(),
            written: 0,
            write_blocked: false,
            carry: Vec::new(),
            next: vec![0; publishers],
            synced: false,
            read_closed: false,
        });
    }
    let record_from = if plan.tickets.is_some() { plan.start } else { plan.warmup_end };
    let mut worker = Worker {
        members,
        pubs: (0..publishers)
            .map(|member| Publisher { member, base: 0, lines: VecDeque::new(), unstamped: 0 })
            .collect(),
        tally: Tally::new(plan.hlog, plan.start, record_from),
        scratch: vec![0; 256 * 1024],
        check: Vec::new(),
        dirty: Vec::with_capacity(n),
        listed: vec![false; n],
        schedule: None,
        turn: 0,
        issuing_done: false,
        stage: Stage::Joining,
        receivers: n as u32 - 1,
        poll,
        plan,
    };
    worker.run()
}

impl Worker {
    fn run(&mut self) -> io::Result<Tally> {
        let mut tick = match self.plan.rate {
            Some(_) => Some(Tick::new(&self.poll)?),
            None => None,
        };
        let mut events = Events::with_capacity(1024);
        let join_deadline = Instant::now() + self.plan.timeout;
        let mut next_sync = Instant::now();
        let mut next_maintenance = Instant::now();
        let mut next_interval = self.plan.warmup_end + HLOG_INTERVAL;
        let mut interval_index = 0;
        loop {
            let now = Instant::now();
            let mut wake = next_maintenance;
            if self.stage == Stage::Joining {
                wake = wake.min(next_sync);
            }
            if let Some(end) = self.plan.end {
                wake = wake.min(end);
            }
            if let (Some(schedule), Some(tick)) = (&self.schedule, &mut tick) {
                if !self.issuing_done {
                    let due = schedule.next_due();
                    if due > now {
                        tick.arm(due, &self.tally)?;
                    } else {
                        wake = now;
                    }
                }
            }
            match self.poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    TICK => {
                        if let Some(tick) = &mut tick {
                            tick.fired();
                        }
                    }
                    Token(i) => self.serve(i, event),
                }
            }
            match self.stage {
                Stage::Joining => {
                    if now >= join_deadline {
                        return Err(io::Error::other(
                            "the members did not all join the room within --timeout (is the \
                             target a chat room that sends each line to the other members?)",
                        ));
                    }
                    if now >= next_sync {
                        next_sync = now + SYNC_EVERY;
                        self.join_step(now);
                    }
                }
                Stage::Running => self.issue_due(now),
            }
            self.flush_dirty();
            if now >= next_maintenance {
                next_maintenance = now + MAINTENANCE;
                self.expire(now);
                self.plan.progress.store(self.tally.messages, Ordering::Relaxed);
                while now >= next_interval {
                    reactor::send_interval(&self.plan.reports, &mut self.tally, interval_index);
                    interval_index += 1;
                    next_interval += HLOG_INTERVAL;
                }
            }
            if self.finished(now) {
                break;
            }
        }
        reactor::send_interval(&self.plan.reports, &mut self.tally, interval_index);
        self.close_all(&mut events);
        self.plan.progress.store(self.tally.messages, Ordering::Relaxed);
        Ok(std::mem::replace(&mut self.tally, Tally::new(false, self.plan.start, self.plan.start)))
    }

    /// Joining: once every member is connected, member 0 says `#sync` until all others heard
    /// it, then member 1 until member 0 heard it. A member that heard a line from another was in
    /// the room when that line went out, so it receives everything published after.
    fn join_step(&mut self, now: Instant) {
        if self.members.iter().any(|m| m.phase != Phase::Up) {
            return;
        }
        if !self.members[1..].iter().all(|m| m.synced) {
            self.queue(0, SYNC);
        } else if !self.members[0].synced {
            self.queue(1, SYNC);
        } else {
            self.stage = Stage::Running;
            match self.plan.rate {
                Some(rate) => self.schedule = Some(Schedule::new(now, rate)),
                None => {
                    for p in 0..self.pubs.len() {
                        self.publish(p, now, self.plan.depth);
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

    fn serve(&mut self, m: usize, event: &mio::event::Event) {
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
                    Err(e) if crate::wire::refused(&e) => self.kill(m, Cause::Refused),
                    Err(_) => self.kill(m, Cause::ConnectFailed),
                }
            }
            Phase::Up => {
                member.read_closed |= event.is_read_closed();
                if event.is_writable() {
                    match member.wire.on_writable(member.socket.fd()) {
                        Ok(true) if member.write_blocked => {
                            member.write_blocked = false;
                            self.flush(m);
                        }
                        Ok(true) => {}
                        Ok(false) => member.write_blocked = true,
                        Err(e) => return self.kill(m, Cause::of(&e)),
                    }
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(m);
                }
            }
        }
    }

    /// Reads every line waiting for member `m`.
    fn on_readable(&mut self, m: usize) {
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
                    self.kill(m, Cause::ClosedByServer);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill(m, Cause::of(&e));
                    break;
                }
            };
            let at = self.tally.now_ns(); // when this member read it
            let mut data = &scratch[..n];
            let mut carry = std::mem::take(&mut self.members[m].carry);
            if !carry.is_empty() {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        carry.extend_from_slice(&data[..i]);
                        self.line(m, &carry, at);
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
                self.line(m, &data[start..end], at);
                start = end + 1;
            }
            data = &data[start..];
            carry.extend_from_slice(data);
            if carry.len() > self.plan.size {
                // No line of this run is that long: what came is not what was sent.
                self.tally.mismatches += 1;
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
    fn line(&mut self, m: usize, line: &[u8], at: u64) {
        if line == SYNC {
            self.members[m].synced = true;
            return;
        }
        let member = &mut self.members[m];
        let Some((p, seq)) = payload::line_header(line) else {
            self.tally.mismatches += 1; // not a line of this run
            return;
        };
        let p = p as usize;
        if p >= self.pubs.len() || member.publisher == Some(p) {
            self.tally.mismatches += 1; // a publisher that does not exist, or its own line back
            return;
        }
        let expected = member.next[p];
        if seq != expected {
            // Lines skipped that had already timed out were counted lost: not counted again.
            // Any other gap (lines missing or reordered), or a duplicate, is a mismatch.
            let skipped_expired = seq > expected && seq <= self.pubs[p].base;
            if !skipped_expired {
                self.tally.mismatches += 1;
                if seq < expected {
                    return; // a duplicate
                }
            }
            member.next[p] = seq;
            return self.line(m, line, at);
        }
        member.next[p] = seq + 1;
        if payload::check_line(line, self.plan.size, &mut self.check) != Some((p as u32, seq)) {
            self.tally.mismatches += 1; // the right header on corrupted bytes
            return;
        }
        let publisher = &mut self.pubs[p];
        let Some(index) = seq.checked_sub(publisher.base) else {
            return; // it had already timed out (counted lost)
        };
        let Some(sent) = publisher.lines.get_mut(index as usize) else { return };
        sent.remaining -= 1;
        if sent.record {
            self.tally.delivery(at.saturating_sub(sent.start));
        }
        if index == 0 && sent.remaining == 0 {
            self.complete(p, at);
        }
    }

    /// Pops the lines at the front of publisher `p` that every member has, and publishes as many
    /// new ones (closed loop).
    fn complete(&mut self, p: usize, at: u64) {
        let publisher = &mut self.pubs[p];
        let mut freed = 0;
        while publisher.lines.front().is_some_and(|l| l.remaining == 0) {
            let line = publisher.lines.pop_front().expect("checked");
            publisher.base += 1;
            freed += 1;
            if line.record {
                self.tally.messages += 1;
                self.tally.last_completion = Some(at);
            }
        }
        if freed > 0 && self.schedule.is_none() {
            let now = self.tally.base + Duration::from_nanos(at);
            self.publish(p, now, freed);
        }
    }

    /// Closed loop: publishes up to `n` lines from publisher `p`.
    fn publish(&mut self, p: usize, now: Instant, n: usize) {
        if self.members[self.pubs[p].member].phase != Phase::Up {
            return;
        }
        for _ in 0..n {
            if !self.may_issue(now) {
                return;
            }
            let Some(record) = self.flag(now) else { return };
            // The turn's time until the write stamps it (the timeout needs a time meanwhile).
            let at = self.tally.ns(now);
            if self.issue(p, Line { start: at, sent: at, remaining: self.receivers, record }) {
                self.pubs[p].unstamped += 1;
            }
        }
    }

    /// Open loop: hands every line that came due to the next publisher with room.
    fn issue_due(&mut self, now: Instant) {
        while self.may_issue(now) {
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
            let Some(record) = self.flag(intended) else { return };
            let line = Line {
                start: self.tally.ns(intended),
                sent: self.tally.ns(now),
                remaining: self.receivers,
                record,
            };
            self.issue(p, line);
        }
    }

    /// Queues `line` on publisher `p`'s connection; false if it is not up.
    fn issue(&mut self, p: usize, line: Line) -> bool {
        let publisher = &mut self.pubs[p];
        let m = publisher.member;
        if self.members[m].phase != Phase::Up {
            return false;
        }
        let seq = publisher.base + publisher.lines.len() as u64;
        publisher.lines.push_back(line);
        let out = &mut self.members[m].out;
        let from = out.len();
        out.resize(from + self.plan.size, 0);
        payload::fill_line(&mut out[from..], p as u32, seq);
        self.mark(m);
        true
    }

    fn may_issue(&self, now: Instant) -> bool {
        !self.issuing_done && self.plan.end.is_none_or(|end| now < end)
    }

    /// Whether a line published at `at` is recorded (`None`: no more may be published): in
    /// message-count mode a recorded line takes a ticket.
    fn flag(&mut self, at: Instant) -> Option<bool> {
        match &self.plan.tickets {
            None => Some(at >= self.plan.warmup_end),
            Some(_) if at < self.plan.warmup_end => Some(false),
            Some(tickets) => {
                if tickets.fetch_sub(1, Ordering::Relaxed) > 0 {
                    Some(true)
                } else {
                    self.issuing_done = true;
                    None
                }
            }
        }
    }

    fn flush_dirty(&mut self) {
        for k in 0..self.dirty.len() {
            let m = self.dirty[k];
            self.listed[m] = false;
            if !self.members[m].write_blocked {
                self.flush(m);
            }
        }
        self.dirty.clear();
    }

    /// Writes member `m`'s queued lines, in one syscall unless the socket is full.
    fn flush(&mut self, m: usize) {
        let member = &mut self.members[m];
        if member.phase != Phase::Up || member.written == member.out.len() {
            return;
        }
        let publisher = member.publisher.filter(|&p| self.pubs[p].unstamped > 0);
        let now = if publisher.is_some() { self.tally.now_ns() } else { 0 };
        let result = member.wire.write(member.socket.fd(), &member.out[member.written..]);
        if let (Some(p), Ok((1.., _))) = (publisher, &result) {
            let publisher = &mut self.pubs[p];
            let newest = publisher.lines.len() - publisher.unstamped.min(publisher.lines.len());
            for line in publisher.lines.range_mut(newest..) {
                (line.start, line.sent) = (now, now);
            }
            publisher.unstamped = 0;
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
            Err(e) => self.kill(m, Cause::of(&e)),
        }
    }

    /// Member `m` failed: count why; it is not replaced.
    fn kill(&mut self, m: usize, cause: Cause) {
        let member = &mut self.members[m];
        if member.phase == Phase::Dead {
            return;
        }
        member.phase = Phase::Dead;
        let _ = self.poll.registry().deregister(member.socket.source());
        self.tally.error(cause);
    }

    /// Lines older than the timeout: the deliveries still missing are lost.
    fn expire(&mut self, now: Instant) {
        let now_ns = self.tally.ns(now);
        let timeout = self.plan.timeout.as_nanos() as u64;
        for p in 0..self.pubs.len() {
            let publisher = &mut self.pubs[p];
            let mut freed = 0;
            while let Some(line) = publisher.lines.front() {
                if now_ns.saturating_sub(line.sent) <= timeout && line.remaining > 0 {
                    break;
                }
                if line.record {
                    self.tally.lost += line.remaining as u64;
                    if line.remaining == 0 {
                        self.tally.messages += 1;
                    }
                }
                publisher.lines.pop_front();
                publisher.base += 1;
                freed += 1;
            }
            if freed > 0 && self.schedule.is_none() && self.stage == Stage::Running {
                self.publish(p, now, freed);
            }
        }
    }

    fn finished(&self, now: Instant) -> bool {
        if self.plan.stop.load(Ordering::Relaxed) {
            return true;
        }
        self.stage == Stage::Running
            && !self.may_issue(now)
            && self.pubs.iter().all(|p| p.lines.is_empty())
    }

    /// Half-closes every member and reads until the server closes it (at most
    /// `CLOSE_GRACE`), so no unread data makes the kernel reset the connection.
    fn close_all(&mut self, events: &mut Events) {
        let mut open: Vec<bool> = self
            .members
            .iter_mut()
            .map(|m| {
                m.phase == Phase::Up && {
                    m.wire.close_notify(m.socket.fd());
                    m.socket.shutdown_write()
                }
            })
            .collect();
        let (members, scratch) = (&mut self.members, &mut self.scratch);
        reactor::await_eofs(&mut self.poll, events, &mut open, |m| {
            let member = &mut members[m];
            loop {
                match member.wire.read(member.socket.fd(), scratch) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        });
    }
}
