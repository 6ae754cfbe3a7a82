//! The echo workload (streams and datagrams), driven by the engine: one [`Conn`] per connection,
//! each message checked as it comes back.
//!
//! Closed loop: each completion queues the next message at once, up to `depth` in flight per
//! connection. Open loop hands each due message to a free depth slot of any connection (a queue
//! of slots, filled as connections come up and messages complete). With no slot free, overdue
//! messages simply stay in the schedule, which knows every intended time: the backlog of an
//! overloaded run costs no memory, and each message's latency still runs from its intended
//! time.
//!
//! Which messages count is the engine's one admission rule ([`Engine::admit`]), the same for
//! chat.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use mio::event::Event;
use mio::Token;

use crate::conn::{EchoConn, Phase, Status};
use crate::engine::{Engine, Pending, Plan, Watch, Workload};
use crate::schedule::Schedule;
use crate::tally::{Cause, InFlight};

/// The echo load of one thread, over connections of kind `C` (streams or datagrams).
pub(crate) struct EchoLoad<C> {
    conns: Vec<C>,
    pending: Pending,
    scratch: ricochet::buffer::Aligned,
    check: Vec<u8>,
    schedule: Option<Schedule>,
    /// Open loop: one entry per free depth slot, `(connection, its generation)`.
    slots: VecDeque<(usize, u32)>,
    /// Open loop: a message is due but no slot is free; wait for completions, not for time.
    starved: bool,
    /// When each connection next needs maintenance: its oldest message's timeout while up, its
    /// reconnect while down.
    watch: Watch,
    /// Connections due to reconnect that `--connect-rate` holds back, in order.
    waiting: VecDeque<usize>,
}

/// The read buffer's least size. Over TLS, records are read straight into it and decrypted
/// there while a whole one still fits; the last record or so of each read goes through the
/// session's own buffer (one more copy), a quarter of the bytes at 64 KiB and a sixteenth at
/// 256 KiB.
fn scratch_len(plan: &Plan) -> usize {
    if plan.tls.is_some() {
        256 * 1024
    } else {
        64 * 1024
    }
}

impl<C: EchoConn> EchoLoad<C> {
    pub(crate) fn new(plan: &Plan) -> EchoLoad<C> {
        let n = plan.conn_ids.len();
        EchoLoad {
            conns: plan.conn_ids.iter().map(|&id| C::new(id)).collect(),
            pending: Pending::new(n),
            scratch: ricochet::buffer::Aligned::zeroed(plan.size.max(scratch_len(plan))),
            check: Vec::new(),
            schedule: plan.rate.map(|rate| match &plan.profile {
                Some(profile) => {
                    Schedule::shaped(plan.start, plan.warmup_end - plan.start, profile)
                }
                None => Schedule::new(plan.start, rate),
            }),
            slots: VecDeque::new(),
            starved: false,
            watch: Watch::new(n),
            waiting: VecDeque::new(),
        }
    }

    /// `freed` depth slots of connection `i` became free: closed loop fills them at once; open
    /// loop offers them to the schedule.
    #[inline(always)]
    fn refill(&mut self, e: &mut Engine, i: usize, now: Instant, freed: usize) {
        if self.conns[i].life().phase != Phase::Up {
            return;
        }
        if self.schedule.is_some() {
            let generation = self.conns[i].life().generation;
            self.slots.extend(std::iter::repeat_n((i, generation), freed));
            self.starved = false;
            return;
        }
        let (size, depth) = (e.plan.size, e.plan.depth);
        let left = self.conns[i].life().left(e.plan.reconnect_every);
        let want = depth.saturating_sub(self.conns[i].in_flight()).min(left);
        let mut status = Status::Ok;
        if want > 0 && e.may_issue(now) {
            let (record, n) = e.admit(now, want);
            if n > 0 {
                // Times come when the first byte goes out (Conn::flush).
                let msg = InFlight { start: 0, sent: 0, record };
                status = self.conns[i].issue(msg, n, false, size, &mut e.tally, &mut self.scratch);
            }
        }
        self.mark(i);
        self.handle(e, i, status, now);
    }

    /// Open loop: hands every message that came due to a free slot, oldest first.
    fn issue_due(&mut self, e: &mut Engine, now: Instant) {
        while e.may_issue(now) {
            let Some(schedule) = &self.schedule else { return };
            if schedule.next_due() > now {
                return;
            }
            let Some((i, generation)) = self.slots.pop_front() else {
                self.starved = true;
                return;
            };
            let conn = &self.conns[i];
            if conn.life().generation != generation || conn.life().phase != Phase::Up {
                continue; // a slot of a connection that has since dropped
            }
            if conn.life().left(e.plan.reconnect_every) == 0 {
                continue; // it is done for this life: its slots come back when it reconnects
            }
            let Some(schedule) = &mut self.schedule else { return };
            let Some((_, intended)) = schedule.take_due(now) else { return };
            let (record, 1) = e.admit(now, 1) else { return };
            let msg = InFlight { start: e.tally.ns(intended), sent: e.tally.ns(now), record };
            let size = e.plan.size;
            let status = self.conns[i].issue(msg, 1, true, size, &mut e.tally, &mut self.scratch);
            self.mark(i);
            self.handle(e, i, status, now);
        }
    }

    fn mark(&mut self, i: usize) {
        if self.conns[i].life().dirty {
            self.pending.mark(i);
        }
    }

    /// What a connection's status asks for: nothing, or (out of line: it is the rare case, and
    /// inlined it cost the closed loop's path 100 instructions per message) its end.
    #[inline(always)]
    fn handle(&mut self, e: &mut Engine, i: usize, status: Status, now: Instant) {
        if status != Status::Ok {
            self.fail(e, i, status, now);
        }
    }

    /// Counts the failure, drops connection `i` and watches for its reconnect.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, e: &mut Engine, i: usize, status: Status, now: Instant) {
        match status {
            Status::Ok => return,
            Status::Failed(cause) => e.tally.error(cause),
            Status::Mismatch => {} // counted where it was found
        }
        self.conns[i].drop_connection(e.poll.registry(), now, &mut e.tally);
        if let Phase::Down(at) = self.conns[i].life().phase {
            self.watch.arm(i, e.tally.ns(at));
        }
    }

    /// Connection `i` is up: its timeouts are watched from now, and its depth filled.
    fn came_up(&mut self, e: &mut Engine, i: usize, now: Instant) {
        self.watch.arm(i, e.tally.ns(now) + e.plan.timeout.as_nanos() as u64);
        self.refill(e, i, now, e.plan.depth);
    }

    /// Starts connection `i`'s connect, when `--connect-rate` lets it (else it waits its turn,
    /// in order, and maintenance starts it when the rate allows).
    fn reconnect(&mut self, e: &mut Engine, i: usize, now: Instant) {
        if !e.may_connect(now) {
            self.waiting.push_back(i);
            return;
        }
        let conn = &mut self.conns[i];
        let tls = e.plan.tls.as_deref();
        if let Err(err) = conn.connect(&e.plan.endpoint, tls, e.poll.registry(), Token(i)) {
            if e.fatal.is_none() {
                let open = self
                    .conns
                    .iter()
                    .filter(|c| matches!(c.life().phase, Phase::Up | Phase::Connecting))
                    .count();
                e.fatal = crate::engine::limit_hit(&err, &e.plan.endpoint, open);
            }
            self.handle(e, i, Status::Failed(Cause::of_connect(&err)), now);
        } else if conn.life().phase == Phase::Up {
            self.came_up(e, i, now); // UDP: no handshake
        }
    }
}

impl<C: EchoConn> Workload for EchoLoad<C> {
    fn start(&mut self, e: &mut Engine, now: Instant) -> io::Result<()> {
        for i in 0..self.conns.len() {
            self.reconnect(e, i, now);
        }
        Ok(())
    }

    // Inlined into the engine's loop, as the echo's serving was before the loop was shared:
    // called, it costs about 50 instructions more per message (callgrind).
    #[inline(always)]
    fn serve(&mut self, e: &mut Engine, i: usize, event: &Event, now: Instant) {
        let Some(conn) = self.conns.get_mut(i) else { return };
        match conn.life().phase {
            Phase::Down(_) => {}
            Phase::Connecting => {
                // Any event: a TLS handshake goes on with readable ones too.
                let status = conn.check_connected();
                let up = conn.life().phase == Phase::Up;
                if up {
                    let took = conn.life().connect_time(now);
                    e.tally.connected(e.tally.ns(now), took);
                }
                self.handle(e, i, status, now);
                if up {
                    self.came_up(e, i, now);
                }
            }
            Phase::Up => {
                if event.is_read_closed() {
                    conn.note_read_closed();
                }
                if event.is_writable() {
                    let clock = e.tally.clock;
                    let status = conn.on_writable(|| clock.now());
                    if status != Status::Ok {
                        return self.handle(e, i, status, now);
                    }
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let (status, completed) = conn.on_readable(
                        e.plan.size,
                        &mut self.scratch,
                        &mut e.tally,
                        &mut self.check,
                    );
                    if status != Status::Ok {
                        return self.handle(e, i, status, now);
                    }
                    if self.conns[i].life_done(e.plan.reconnect_every) {
                        self.conns[i].recycle(e.poll.registry(), now, &mut e.tally);
                        // Not when nothing is left to send: a connection opened only to be
                        // dropped mid-handshake at the end would make the server count a reset.
                        if e.more_to_issue(now) {
                            self.reconnect(e, i, now);
                        }
                        return;
                    }
                    if completed > 0 {
                        self.refill(e, i, now, completed);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn turn(&mut self, e: &mut Engine, now: Instant) -> io::Result<()> {
        self.issue_due(e, now);
        let pending = self.pending.take();
        for &i in &pending {
            let clock = e.tally.clock;
            let status = self.conns[i].flush(|| clock.now());
            self.handle(e, i, status, now);
        }
        self.pending.give_back(pending);
        e.tally.settle(); // after the writes: recording latencies can wait for them
        Ok(())
    }

    /// Looks at the connections whose time came (see [`Watch`]), then starts the connects the
    /// rate now allows.
    fn maintain(&mut self, e: &mut Engine, now: Instant) {
        let now_ns = e.tally.ns(now);
        let timeout = e.plan.timeout.as_nanos() as u64;
        while let Some(i) = self.watch.pop_due(now_ns) {
            match self.conns[i].life().phase {
                Phase::Up => {
                    let (status, lost) = self.conns[i].expire(now_ns, e.plan.timeout, &mut e.tally);
                    self.handle(e, i, status, now);
                    if lost > 0 {
                        self.refill(e, i, now, lost);
                    }
                    if self.conns[i].life().phase == Phase::Up {
                        // `expire` fails a message older than the timeout: look just after.
                        let oldest = self.conns[i].oldest_sent().unwrap_or(now_ns);
                        self.watch.arm(i, oldest + timeout + 1);
                    }
                }
                Phase::Connecting => {}
                Phase::Down(at) if at > now => self.watch.arm(i, e.tally.ns(at)),
                Phase::Down(_) => {
                    if e.more_to_issue(now) {
                        self.reconnect(e, i, now);
                    }
                }
            }
        }
        while let Some(&i) = self.waiting.front() {
            if !e.connect_open(now) {
                break;
            }
            self.waiting.pop_front();
            let due = matches!(self.conns[i].life().phase, Phase::Down(at) if at <= now);
            if due && e.more_to_issue(now) {
                self.reconnect(e, i, now);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.schedule.as_ref().filter(|_| !self.starved).map(Schedule::next_due)
    }

    fn finished(&self, e: &Engine, now: Instant) -> bool {
        !e.may_issue(now)
            && e.tally.recorded_inflight == 0
            // A connection still in its handshake (reopened for a message another one took, or
            // as a timed run ended) finishes it first, for at most the timeout: dropped there,
            // the server would count a failed handshake.
            && !self.conns.iter().any(|c| {
                c.life().phase == Phase::Connecting && c.life().connect_time(now) < e.plan.timeout
            })
    }

    /// Closes every connection the way a polite client does: half-close, then read the rest of
    /// the echo until the server's EOF. Dropping connections with echo data unread would make
    /// the kernel reset them, and the server count resets.
    fn begin_close(&mut self, e: &mut Engine) -> Vec<bool> {
        e.tally.never_up = self.conns.iter().filter(|c| !c.life().ever_up).count() as u64;
        self.conns.iter_mut().map(C::begin_close).collect()
    }

    fn drain(&mut self, i: usize) -> bool {
        self.conns[i].drain_until_eof(&mut self.scratch)
    }

    fn end(&mut self, e: &mut Engine) {
        let now = Instant::now();
        for conn in &mut self.conns {
            conn.drop_connection(e.poll.registry(), now, &mut e.tally);
        }
    }
}
