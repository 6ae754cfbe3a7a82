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

mod publish;
mod receive;

use std::collections::VecDeque;
use std::io;

use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Interest, Token};

use crate::engine::{Engine, Pending, Plan, Workload};
use crate::schedule::Schedule;
use crate::tally::Cause;
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
    scratch: ricochet::buffer::Aligned,
    check: Vec<u8>,
    pending: Pending,
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
            scratch: ricochet::buffer::Aligned::zeroed(256 * 1024),
            check: Vec::new(),
            pending: Pending::new(n),
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
        self.pending.mark(m);
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
                    Err(err) => self.kill(e, m, Cause::of_connect(&err)),
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
            let (mut socket, wire) =
                crate::wire::connect(&e.plan.endpoint, e.plan.tls.as_deref(), i as u64)?;
            let interest = Interest::READABLE | Interest::WRITABLE;
            e.poll.registry().register(socket.source(), Token(i), interest)?;
            self.members.push(Member {
                socket,
                wire,
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
