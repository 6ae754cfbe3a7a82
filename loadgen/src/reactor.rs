//! One load thread: its own mio poll, its share of the connections, its own histogram.
//!
//! A turn: poll → serve events (connects, echoes: each completion in closed loop queues the next
//! message) → issue open-loop messages that came due → one write per connection that has
//! anything queued → every 10 ms, maintenance (timeouts, reconnects, progress, hlog intervals).
//!
//! Open loop hands each due message to a free depth slot of any connection (a queue of slots,
//! filled as connections come up and messages complete). With no slot free, overdue messages
//! simply stay in the schedule, which knows every intended time: the backlog of an overloaded run
//! costs no memory, and each message's latency still runs from its intended time.
//!
//! Recording: in duration mode a message counts if it completes within the measured period; in
//! message-count mode, if it was issued after the warm-up (so exactly N count).
//!
//! Open loop wakes on a timerfd armed for the next intended send time: poll's own timeout has
//! millisecond granularity (rounded up), which would add up to a millisecond of client-made
//! latency to messages measured from their intended time.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::client::{Conn, InFlight, Phase, Status};
use crate::schedule::Schedule;
use crate::tally::{Cause, Tally};
use crate::target::{Endpoint, Workload};

pub(crate) const TICK: Token = Token(usize::MAX - 1);
pub(crate) const MAINTENANCE: Duration = Duration::from_millis(10);
pub(crate) const HLOG_INTERVAL: Duration = Duration::from_secs(1);
/// How long the end of a run waits for servers to finish echoing and close.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// What a load thread tells the main thread while it runs.
#[derive(Debug)]
pub enum Report {
    /// An hlog interval is complete.
    Interval(Interval),
    /// The thread has finished (its result is ready to join).
    Finished,
}

/// One interval of latencies for the hlog, from one thread.
#[derive(Debug)]
pub struct Interval {
    /// Interval number, counted from the end of the warm-up.
    pub index: u64,
    /// Latencies recorded in it, ns.
    pub hist: Histogram<u64>,
}

/// What one load thread does.
#[derive(Debug)]
pub struct Plan {
    /// Where to send load.
    pub endpoint: Endpoint,
    /// The global numbers of this thread's connections.
    pub conn_ids: Vec<u32>,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection at most.
    pub depth: usize,
    /// Open loop: this thread's share of the rate, messages per second.
    pub rate: Option<f64>,
    /// When the run started (warm-up included).
    pub start: Instant,
    /// Messages sent before this are not recorded.
    pub warmup_end: Instant,
    /// Duration mode: stop at this time.
    pub end: Option<Instant>,
    /// Message-count mode: how many recorded messages may still be issued (shared by threads).
    pub tickets: Option<Arc<AtomicI64>>,
    /// A message not echoed within this is an error (streams) or lost (datagrams).
    pub timeout: Duration,
    /// Set to end the run early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Recorded messages completed so far, for the progress line.
    pub progress: Arc<AtomicU64>,
    /// Send an interval (its latencies) every second of the measured period: for the JSON's
    /// `intervals`, and the hlog.
    pub hlog: bool,
    /// Where to send intervals and the final [`Report::Finished`].
    pub reports: Sender<Report>,
    /// Chat: how many of the connections publish (the first ones).
    pub publishers: usize,
    /// `tls://`: how connections speak TLS.
    pub tls: Option<Arc<crate::tls::TlsClient>>,
    /// Close and reopen each connection after this many messages.
    pub reconnect_every: Option<u64>,
}

/// A timerfd with nanosecond precision, for open-loop pacing.
#[derive(Debug)]
pub(crate) struct Tick {
    fd: OwnedFd,
    armed: Option<Instant>,
}

impl Tick {
    pub(crate) fn new(poll: &Poll) -> io::Result<Tick> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), TICK, Interest::READABLE)?;
        // Let the kernel wake this thread within 1 ns of the timer, not the default 50 µs.
        // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects this thread only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        Ok(Tick { fd, armed: None })
    }

    /// Fires at `at` unless already armed for that time. The timer is set to the absolute
    /// CLOCK_MONOTONIC time (through `tally`'s clock), so a turn's time read before its work
    /// does not delay the wake-up by that work.
    pub(crate) fn arm(&mut self, at: Instant, tally: &Tally) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        let raw = tally.clock.raw_at(tally.ns(at)).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (raw / 1_000_000_000) as libc::time_t,
                tv_nsec: (raw % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a valid itimerspec.
        let ret = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if ret != 0 {
            // Unarmed, the open loop would wait for the next maintenance tick: a wrong latency.
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at);
        Ok(())
    }

    pub(crate) fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from our own timerfd.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        self.armed = None;
    }
}

struct Worker {
    plan: Plan,
    poll: Poll,
    conns: Vec<Conn>,
    dirty: Vec<usize>,
    listed: Vec<bool>,
    tally: Tally,
    scratch: Vec<u8>,
    check: Vec<u8>,
    schedule: Option<Schedule>,
    /// Open loop: one entry per free depth slot, `(connection, its generation)`.
    slots: VecDeque<(usize, u32)>,
    /// Open loop: a message is due but no slot is free; wait for completions, not for time.
    starved: bool,
    issuing_done: bool,
}

/// Runs one load thread to the end of the run; returns what it measured.
pub fn run(plan: Plan) -> io::Result<Tally> {
    let reports = plan.reports.clone();
    let result = match plan.endpoint.workload {
        Workload::Chat => crate::chat::run(plan),
        Workload::Echo => run_plan(plan),
    };
    let _ = reports.send(Report::Finished);
    result
}

fn run_plan(plan: Plan) -> io::Result<Tally> {
    let poll = Poll::new()?;
    let n = plan.conn_ids.len();
    let mut worker = Worker {
        conns: plan.conn_ids.iter().map(|&id| Conn::new(id)).collect(),
        dirty: Vec::with_capacity(n),
        listed: vec![false; n],
        tally: Tally::new(
            plan.hlog,
            plan.start,
            if plan.tickets.is_some() { plan.start } else { plan.warmup_end },
        ),
        scratch: vec![0; plan.size.max(64 * 1024)],
        check: Vec::new(),
        schedule: plan.rate.map(|rate| Schedule::new(plan.start, rate)),
        slots: VecDeque::new(),
        starved: false,
        issuing_done: false,
        poll,
        plan,
    };
    worker.run()
}

impl Worker {
    fn run(&mut self) -> io::Result<Tally> {
        let mut tick = match self.schedule {
            Some(_) => Some(Tick::new(&self.poll)?),
            None => None,
        };
        let mut events = Events::with_capacity(1024);
        let mut next_maintenance = Instant::now();
        let mut next_interval = self.plan.warmup_end + HLOG_INTERVAL;
        let mut interval_index = 0;
        for i in 0..self.conns.len() {
            self.reconnect(i, Instant::now());
        }
        // The turn's time, read once after each poll: the next turn plans its wait from it, late
        // by that turn's work (microseconds; the open loop's timer is absolute).
        let mut now = Instant::now();
        loop {
            let mut wake = next_maintenance;
            if let Some(end) = self.plan.end {
                wake = wake.min(end);
            }
            let waiting_for_time = !self.issuing_done && !self.starved;
            if let (Some(schedule), Some(tick), true) =
                (&self.schedule, &mut tick, waiting_for_time)
            {
                let due = schedule.next_due();
                if due > now {
                    tick.arm(due, &self.tally)?;
                } else {
                    wake = now;
                }
            }
            let timeout = wake.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    TICK => {
                        if let Some(tick) = &mut tick {
                            tick.fired();
                        }
                    }
                    Token(i) => self.serve(i, event, now),
                }
            }
            self.issue_due(now);
            for k in 0..self.dirty.len() {
                let i = self.dirty[k];
                self.listed[i] = false;
                let clock = self.tally.clock;
                let status = self.conns[i].flush(|| clock.now());
                self.handle(i, status, now);
            }
            self.dirty.clear();
            self.tally.settle(); // after the writes: recording latencies can wait for them
            if now >= next_maintenance {
                next_maintenance = now + MAINTENANCE;
                self.maintain(now);
                while now >= next_interval {
                    self.send_interval(interval_index);
                    interval_index += 1;
                    next_interval += HLOG_INTERVAL;
                }
            }
            if self.finished(now) {
                break;
            }
        }
        self.send_interval(interval_index);
        self.close_all(&mut events);
        self.plan.progress.store(self.tally.messages, Ordering::Relaxed);
        Ok(std::mem::replace(&mut self.tally, Tally::new(false, self.plan.start, self.plan.start)))
    }

    /// Closes every connection the way a polite client does: half-close, read the rest of the
    /// echo until the server's EOF (at most [`CLOSE_GRACE`]), then close. Dropping connections
    /// with echo data unread would make the kernel reset them, and the server count resets.
    fn close_all(&mut self, events: &mut Events) {
        let mut open: Vec<bool> = self.conns.iter_mut().map(Conn::begin_close).collect();
        let (conns, scratch) = (&mut self.conns, &mut self.scratch);
        await_eofs(&mut self.poll, events, &mut open, |i| conns[i].drain_until_eof(scratch));
        let now = Instant::now();
        for conn in &mut self.conns {
            conn.drop_connection(self.poll.registry(), now, &mut self.tally);
        }
    }

    fn finished(&self, now: Instant) -> bool {
        if self.plan.stop.load(Ordering::Relaxed) {
            return true;
        }
        if let Some(end) = self.plan.end {
            return now >= end;
        }
        self.issuing_done && self.tally.recorded_inflight == 0
    }

    /// Whether new messages may be issued at `now`.
    fn may_issue(&self, now: Instant) -> bool {
        !self.issuing_done && self.plan.end.is_none_or(|end| now < end)
    }

    /// Whether messages may still be issued and, in message-count mode, any are left to issue
    /// (when none is, issuing is done: the run ends once the last ones complete).
    fn more_to_issue(&mut self, now: Instant) -> bool {
        let left = self.plan.tickets.as_ref().is_none_or(|t| t.load(Ordering::Relaxed) > 0);
        if !left {
            self.issuing_done = true;
        }
        left && self.may_issue(now)
    }

    /// Whether a message issued at `at` is flagged for recording (`None`: no more may be issued).
    fn flag(&mut self, at: Instant) -> Option<bool> {
        match self.flags(at, 1) {
            (_, 0) => None,
            (record, _) => Some(record),
        }
    }

    /// Whether messages issued at `at` are flagged for recording, and how many of `want` may be
    /// issued: in message-count mode only those after the warm-up are recorded, and each takes a
    /// ticket; in duration mode all are recorded (the completion time decides).
    fn flags(&mut self, at: Instant, want: usize) -> (bool, usize) {
        match &self.plan.tickets {
            None => (true, want),
            Some(_) if at < self.plan.warmup_end => (false, want),
            Some(tickets) => {
                let before = tickets.fetch_sub(want as i64, Ordering::Relaxed);
                let granted = before.clamp(0, want as i64) as usize;
                if granted < want {
                    self.issuing_done = true;
                }
                (true, granted)
            }
        }
    }

    fn serve(&mut self, i: usize, event: &mio::event::Event, now: Instant) {
        let Some(conn) = self.conns.get_mut(i) else { return };
        match conn.phase {
            Phase::Down(_) => {}
            Phase::Connecting => {
                // Any event: a TLS handshake goes on with readable ones too.
                let status = conn.check_connected();
                let up = conn.phase == Phase::Up;
                if up {
                    let took = conn.connect_time(now);
                    self.tally.connected(self.tally.ns(now), took);
                }
                self.handle(i, status, now);
                if up {
                    self.refill(i, now, self.plan.depth);
                }
            }
            Phase::Up => {
                if event.is_read_closed() {
                    conn.note_read_closed();
                }
                if event.is_writable() {
                    let clock = self.tally.clock;
                    let status = conn.on_writable(|| clock.now());
                    if status != Status::Ok {
                        return self.handle(i, status, now);
                    }
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let (status, completed) = conn.on_readable(
                        self.plan.size,
                        &mut self.scratch,
                        &mut self.tally,
                        &mut self.check,
                    );
                    if status != Status::Ok {
                        return self.handle(i, status, now);
                    }
                    if self.conns[i].life_done(self.plan.reconnect_every) {
                        self.conns[i].recycle(self.poll.registry(), now, &mut self.tally);
                        // Not when nothing is left to send: a connection opened only to be
                        // dropped mid-handshake at the end would make the server count a reset.
                        if self.more_to_issue(now) {
                            self.reconnect(i, now);
                        }
                        return;
                    }
                    if completed > 0 {
                        self.refill(i, now, completed);
                    }
                }
            }
        }
    }

    /// `freed` depth slots of connection `i` became free: closed loop fills them at once; open
    /// loop offers them to the schedule.
    fn refill(&mut self, i: usize, now: Instant, freed: usize) {
        if self.conns[i].phase != Phase::Up {
            return;
        }
        if self.schedule.is_some() {
            let generation = self.conns[i].generation;
            self.slots.extend(std::iter::repeat_n((i, generation), freed));
            self.starved = false;
            return;
        }
        let (size, depth) = (self.plan.size, self.plan.depth);
        let left = self.conns[i].life_left(self.plan.reconnect_every);
        let want = depth.saturating_sub(self.conns[i].in_flight()).min(left);
        let mut status = Status::Ok;
        if want > 0 && self.may_issue(now) {
            let (record, n) = self.flags(now, want);
            if n > 0 {
                // Times come when the first byte goes out (Conn::flush).
                let msg = InFlight { start: 0, sent: 0, record };
                status =
                    self.conns[i].issue(msg, n, false, size, &mut self.tally, &mut self.scratch);
            }
        }
        self.mark(i);
        self.handle(i, status, now);
    }

    /// Open loop: hands every message that came due to a free slot, oldest first.
    fn issue_due(&mut self, now: Instant) {
        while self.may_issue(now) {
            let Some(schedule) = &self.schedule else { return };
            if schedule.next_due() > now {
                return;
            }
            let Some((i, generation)) = self.slots.pop_front() else {
                self.starved = true;
                return;
            };
            let conn = &self.conns[i];
            if conn.generation != generation || conn.phase != Phase::Up {
                continue; // a slot of a connection that has since dropped
            }
            if conn.life_left(self.plan.reconnect_every) == 0 {
                continue; // it is done for this life: its slots come back when it reconnects
            }
            let Some(schedule) = &mut self.schedule else { return };
            let Some((_, intended)) = schedule.take_due(now) else { return };
            let Some(record) = self.flag(intended) else { return };
            let msg = InFlight { start: self.tally.ns(intended), sent: self.tally.ns(now), record };
            let status = self.conns[i].issue(
                msg,
                1,
                true,
                self.plan.size,
                &mut self.tally,
                &mut self.scratch,
            );
            self.mark(i);
            self.handle(i, status, now);
        }
    }

    fn mark(&mut self, i: usize) {
        if self.conns[i].dirty && !self.listed[i] {
            self.listed[i] = true;
            self.dirty.push(i);
        }
    }

    fn handle(&mut self, i: usize, status: Status, now: Instant) {
        match status {
            Status::Ok => return,
            Status::Failed(cause) => self.tally.error(cause),
            Status::Mismatch => {} // counted where it was found
        }
        self.conns[i].drop_connection(self.poll.registry(), now, &mut self.tally);
    }

    fn reconnect(&mut self, i: usize, now: Instant) {
        let token = Token(i);
        let conn = &mut self.conns[i];
        let tls = self.plan.tls.as_deref();
        if let Err(e) = conn.connect(&self.plan.endpoint, tls, self.poll.registry(), token) {
            let cause = if e.kind() == io::ErrorKind::ConnectionRefused {
                Cause::Refused
            } else {
                Cause::ConnectFailed
            };
            self.handle(i, Status::Failed(cause), now);
        } else if conn.phase == Phase::Up {
            self.refill(i, now, self.plan.depth); // UDP: no handshake
        }
    }

    fn maintain(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            match self.conns[i].phase {
                Phase::Up => {
                    let (status, lost) = self.conns[i].expire(
                        self.tally.ns(now),
                        self.plan.timeout,
                        &mut self.tally,
                    );
                    self.handle(i, status, now);
                    if lost > 0 {
                        self.refill(i, now, lost);
                    }
                }
                Phase::Connecting => {}
                Phase::Down(at) => {
                    if at <= now && self.more_to_issue(now) {
                        self.reconnect(i, now);
                    }
                }
            }
        }
        self.plan.progress.store(self.tally.messages, Ordering::Relaxed);
    }

    fn send_interval(&mut self, index: u64) {
        send_interval(&self.plan.reports, &mut self.tally, index);
    }
}

/// The end of a run: waits (at most [`CLOSE_GRACE`]) until every connection marked `open` has
/// been read to the server's EOF; `drain(i)` reads connection `i` and says whether its EOF (or an
/// error) came.
pub(crate) fn await_eofs(
    poll: &mut Poll,
    events: &mut Events,
    open: &mut [bool],
    mut drain: impl FnMut(usize) -> bool,
) {
    let deadline = Instant::now() + CLOSE_GRACE;
    let mut waiting = open.iter().filter(|o| **o).count();
    while waiting > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match poll.poll(events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        for event in events.iter() {
            let i = event.token().0;
            if open.get(i) == Some(&true) && drain(i) {
                open[i] = false;
                waiting -= 1;
            }
        }
    }
}

/// Sends the current hlog interval (if an hlog is written) and starts the next.
pub(crate) fn send_interval(reports: &Sender<Report>, tally: &mut Tally, index: u64) {
    if let Some(hist) = tally.take_interval() {
        let _ = reports.send(Report::Interval(Interval { index, hist }));
    }
}
