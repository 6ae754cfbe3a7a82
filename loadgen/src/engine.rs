//! One load thread's engine, shared by every workload: the poll loop, the open loop's timerfd,
//! the maintenance cadence (timeouts, reconnects, progress) and per-second intervals, the end of
//! the run and the polite close. A [`Workload`] (stream or datagram echo in `echo.rs`, chat in
//! `chat.rs`) says what to do with its connections; the engine says when.
//!
//! A turn: poll (until the next maintenance, the end of the run, the workload's own wake-up, or
//! the timerfd armed for the open loop's next intended send) → the workload serves each event →
//! the workload's turn (issue what came due, one write per connection with anything queued) →
//! every [`MAINTENANCE`], the workload's maintenance and the intervals that closed → until the
//! workload is finished or the run is stopped. Then every connection is closed politely: our end
//! of stream, then the server's read (at most [`CLOSE_GRACE`]), so no unread data makes a kernel
//! reset a connection.
//!
//! Static dispatch: the thread picks its workload once (`run.rs`), and [`drive`] is compiled for
//! each.
//!
//! Open loop wakes on a timerfd armed for the next intended send time: poll's own timeout has
//! millisecond granularity (rounded up), which would add up to a millisecond of client-made
//! latency to messages measured from their intended time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::tally::Tally;
use crate::target::{Address, Endpoint};

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

/// What a load thread has done so far (stored at each maintenance, read by the main thread).
#[derive(Debug, Default)]
pub struct Progress {
    /// Recorded messages completed.
    pub messages: AtomicU64,
    /// Errors counted (of any cause).
    pub errors: AtomicU64,
    /// Connections opened so far, warm-up included (the progress line's count with
    /// `--connect-rate`).
    pub opened: AtomicU64,
}

impl Progress {
    fn store(&self, tally: &Tally) {
        self.messages.store(tally.messages, Ordering::Relaxed);
        self.opened.store(tally.opened, Ordering::Relaxed);
        let errors = tally.errors.iter().map(|(_, n)| n).sum();
        self.errors.store(errors, Ordering::Relaxed);
    }
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
    /// What this thread has done so far, for the progress line and the live results.
    pub progress: Arc<Progress>,
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
    /// Connects per second this thread may start (its share of `--connect-rate`).
    pub connect_rate: Option<f64>,
    /// Open loop with a changing rate: this thread's share of it.
    pub profile: Option<crate::schedule::Profile>,
}

/// `--connect-rate`: connects evenly spaced at a rate; turns missed are not saved up beyond one
/// maintenance tick's worth (so a late tick never opens a burst).
#[derive(Debug)]
pub(crate) struct Gate {
    interval: Duration,
    next: Instant,
}

impl Gate {
    pub(crate) fn new(per_second: f64, start: Instant) -> Gate {
        Gate { interval: Duration::from_secs_f64(1.0 / per_second), next: start }
    }

    /// Whether a connect may start at `now` (it then takes its turn).
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        let floor = now.checked_sub(MAINTENANCE).unwrap_or(now);
        self.next = self.next.max(floor) + self.interval;
        true
    }
}

/// When each connection next needs maintenance (a message's timeout, a reconnect after its
/// backoff), as a min-heap of `(time in ns, connection)` with lazy deletion: a connection has at
/// most one live entry, the one whose time `due` still holds; re-arming earlier leaves the old
/// entry stale, skipped when it comes up. Maintenance thus looks only at the connections whose
/// time came, not at every connection every [`MAINTENANCE`]: walking 20 000 of them took
/// milliseconds each time, and the open loop's messages waited behind the walk.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// Per connection: the time of its live entry (`u64::MAX`: none).
    due: Vec<u64>,
}

impl Watch {
    /// Nothing armed, for connections `0..n`.
    pub(crate) fn new(n: usize) -> Watch {
        Watch { heap: BinaryHeap::new(), due: vec![u64::MAX; n] }
    }

    /// Connection `i` wants a look at `at` (ns), or earlier if it is armed earlier already.
    pub(crate) fn arm(&mut self, i: usize, at: u64) {
        if at < self.due[i] {
            self.due[i] = at;
            self.heap.push(Reverse((at, i)));
        }
    }

    /// The next connection whose time came by `now` (ns); disarmed.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<usize> {
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.due[i] == at {
                self.due[i] = u64::MAX;
                return Some(i);
            }
        }
        None
    }
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

/// What a workload is lent each call: the plan, the poll (register connections with its
/// registry, by their index as token), the thread's tally, and the admission of messages.
#[derive(Debug)]
pub(crate) struct Engine {
    pub plan: Plan,
    pub poll: Poll,
    pub tally: Tally,
    /// No more messages may be issued (message-count mode: the tickets ran out).
    issuing_done: bool,
    /// `--connect-rate`'s pacing.
    gate: Option<Gate>,
    /// A limit the run cannot go past (out of ports or file descriptors): the run stops with it.
    pub fatal: Option<io::Error>,
}

impl Engine {
    /// Whether a connect may start at `now` (`--connect-rate`; always without it).
    pub(crate) fn may_connect(&mut self, now: Instant) -> bool {
        self.gate.as_mut().is_none_or(|gate| gate.admit(now))
    }

    /// Whether `--connect-rate` would let a connect start at `now` (without taking its turn).
    pub(crate) fn connect_open(&self, now: Instant) -> bool {
        self.gate.as_ref().is_none_or(|gate| now >= gate.next)
    }

    /// Whether messages may be issued at `now`: before the end (duration mode), while tickets
    /// last (message-count mode).
    pub(crate) fn may_issue(&self, now: Instant) -> bool {
        !self.issuing_done && self.plan.end.is_none_or(|end| now < end)
    }

    /// [`Engine::may_issue`], and in message-count mode whether any ticket is left (when none
    /// is, issuing is done: the run ends once the counted messages complete).
    pub(crate) fn more_to_issue(&mut self, now: Instant) -> bool {
        let left = self.plan.tickets.as_ref().is_none_or(|t| t.load(Ordering::Relaxed) > 0);
        self.issuing_done |= !left;
        left && self.may_issue(now)
    }

    /// Admission, the one rule for every workload: a message (a chat line) counts when it is
    /// handed to its connection in the measured period — at or after the warm-up's end, and,
    /// in message-count mode, while tickets last (each counted message takes one). It is then
    /// waited for, however long after the period it completes (at most the timeout), and all
    /// of it counts: its latency (from its intended time in open loop, so an overloaded run's
    /// backlog shows), and for a chat line every delivery. Returns whether messages handed over
    /// at `at` count, and how many of `want` may be (fewer: issuing is done).
    pub(crate) fn admit(&mut self, at: Instant, want: usize) -> (bool, usize) {
        let counted = at >= self.plan.warmup_end;
        let granted = match &self.plan.tickets {
            Some(tickets) if counted => {
                let before = tickets.fetch_sub(want as i64, Ordering::Relaxed);
                before.clamp(0, want as i64) as usize
            }
            _ => want,
        };
        self.issuing_done |= granted < want;
        (counted, granted)
    }
}

/// The pending writes: the connections with output queued this turn, each listed once, written
/// at the turn's end in the order they were marked (one write per connection per turn). Every
/// workload queues through it.
#[derive(Debug)]
pub(crate) struct Pending {
    list: Vec<usize>,
    listed: Vec<bool>,
}

impl Pending {
    /// For connections `0..n`.
    pub(crate) fn new(n: usize) -> Pending {
        Pending { list: Vec::with_capacity(n), listed: vec![false; n] }
    }

    /// Connection `i` has output to write this turn.
    #[inline]
    pub(crate) fn mark(&mut self, i: usize) {
        if !self.listed[i] {
            self.listed[i] = true;
            self.list.push(i);
        }
    }

    /// This turn's list, to write (marks made meanwhile go to the next list); hand its storage
    /// back with [`Pending::give_back`].
    #[inline]
    pub(crate) fn take(&mut self) -> Vec<usize> {
        for &i in &self.list {
            self.listed[i] = false;
        }
        std::mem::take(&mut self.list)
    }

    /// The storage of a list taken, emptied, for the next turn (unless marks made meanwhile
    /// started a list of their own).
    #[inline]
    pub(crate) fn give_back(&mut self, mut list: Vec<usize>) {
        list.clear();
        if self.list.is_empty() {
            self.list = list;
        }
    }
}

/// A kind of load, driven by the engine.
pub(crate) trait Workload {
    /// Opens the connections.
    fn start(&mut self, e: &mut Engine, now: Instant) -> io::Result<()>;
    /// A readiness event for connection `i`.
    fn serve(&mut self, e: &mut Engine, i: usize, event: &Event, now: Instant);
    /// After the turn's events: issue what came due, write what is queued. An error ends the
    /// run (a room that never formed).
    fn turn(&mut self, e: &mut Engine, now: Instant) -> io::Result<()>;
    /// Every [`MAINTENANCE`]: timeouts, losses, reconnects.
    fn maintain(&mut self, e: &mut Engine, now: Instant);
    /// The intended time of the next open-loop message, while the workload waits for time to
    /// send it (the engine arms its timerfd for it).
    fn next_due(&self) -> Option<Instant>;
    /// Another time the workload wants a turn by, if any.
    fn wake_by(&self) -> Option<Instant> {
        None
    }
    /// Whether the run is over for this workload.
    fn finished(&self, e: &Engine, now: Instant) -> bool;
    /// The end: our end of stream on every connection; which ones to wait for.
    fn begin_close(&mut self, e: &mut Engine) -> Vec<bool>;
    /// Reads connection `i` (after [`Workload::begin_close`]): true once its end (or an error)
    /// came.
    fn drain(&mut self, i: usize) -> bool;
    /// After the close: anything left to let go.
    fn end(&mut self, _e: &mut Engine) {}
}

/// Runs one load thread's workload `W` (made by `make`) to the end of the run (see the
/// module's doc); returns what it measured.
pub(crate) fn drive<W: Workload>(plan: Plan, make: impl FnOnce(&Plan) -> W) -> io::Result<Tally> {
    let record_from = if plan.tickets.is_some() { plan.start } else { plan.warmup_end };
    let tally = Tally::new(plan.hlog, plan.start, record_from);
    let mut work = make(&plan);
    let gate = plan.connect_rate.map(|rate| Gate::new(rate, Instant::now()));
    let mut e = Engine { poll: Poll::new()?, tally, plan, issuing_done: false, gate, fatal: None };
    let mut tick = match e.plan.rate {
        Some(_) => Some(Tick::new(&e.poll)?),
        None => None,
    };
    let mut events = Events::with_capacity(1024);
    let mut next_maintenance = Instant::now();
    let mut next_interval = e.plan.warmup_end + HLOG_INTERVAL;
    let mut interval_index = 0;
    work.start(&mut e, Instant::now())?;
    stop_if_fatal(&mut e)?;
    // The turn's time, read once after each poll: the next turn plans its wait from it, late by
    // that turn's work (microseconds; the open loop's timer is absolute).
    let mut now = Instant::now();
    loop {
        let mut wake = next_maintenance;
        for by in [e.plan.end, work.wake_by()].into_iter().flatten() {
            wake = wake.min(by);
        }
        let due = work.next_due().filter(|_| e.may_issue(now));
        if let (Some(due), Some(tick)) = (due, &mut tick) {
            if due > now {
                tick.arm(due, &e.tally)?;
            } else {
                wake = now;
            }
        }
        if let Err(err) = e.poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
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
                Token(i) => work.serve(&mut e, i, event, now),
            }
        }
        work.turn(&mut e, now)?;
        if now >= next_maintenance {
            next_maintenance = now + MAINTENANCE;
            work.maintain(&mut e, now);
            stop_if_fatal(&mut e)?;
            e.plan.progress.store(&e.tally);
            while now >= next_interval {
                send_interval(&e.plan.reports, &mut e.tally, interval_index);
                interval_index += 1;
                next_interval += HLOG_INTERVAL;
            }
        }
        if e.plan.stop.load(Ordering::Relaxed) || work.finished(&e, now) {
            break;
        }
    }
    send_interval(&e.plan.reports, &mut e.tally, interval_index);
    let mut open = work.begin_close(&mut e);
    await_eofs(&mut e.poll, &mut events, &mut open, |i| work.drain(i));
    work.end(&mut e);
    e.plan.progress.store(&e.tally);
    Ok(e.tally)
}

/// A limit hit (see [`Engine::fatal`]): every thread stops, and this one fails with it.
fn stop_if_fatal(e: &mut Engine) -> io::Result<()> {
    match e.fatal.take() {
        Some(err) => {
            e.plan.stop.store(true, Ordering::Relaxed);
            Err(err)
        }
        None => Ok(()),
    }
}

/// This host's ephemeral port range (`net.ipv4.ip_local_port_range`), if it can be read.
fn port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|p| p.parse().ok());
    Some((ports.next()??, ports.next()??))
}

/// A warning when each source address would open more connections to the target than half the
/// ephemeral port range: Linux's `connect()` takes even ports first (the odd ones are left for
/// `bind()`) and, past them, searches every port in use for each new connection. Measured here:
/// 19 936 connections from one address cost 5–6 s of kernel time to open, most of it in
/// `__inet_hash_connect`, against about 2 s from four addresses.
pub(crate) fn port_search_warning(endpoint: &Endpoint, connections: usize) -> Option<String> {
    if matches!(endpoint.address, Address::Udp(_) | Address::Unix(_)) {
        return None;
    }
    let (low, high) = port_range()?;
    port_search_note(connections, endpoint.sources.len(), (low, high))
}

fn port_search_note(connections: usize, sources: usize, (low, high): (u32, u32)) -> Option<String> {
    let ports = high.saturating_sub(low) as usize + 1;
    let half = ports / 2;
    let per_source = connections.div_ceil(sources.max(1));
    if per_source <= half {
        return None;
    }
    let from = match sources {
        0 | 1 => "one source address".to_string(),
        n => format!("each of {n} source addresses"),
    };
    Some(format!(
        "loadgen: {per_source} connections from {from} are more than half the ephemeral port \
         range ({low}-{high}): past half, the kernel searches the ports in use for every new \
         connection, and opening them is slow. Spread them with --source (e.g. --source \
         127.0.0.1-127.0.0.8 towards 127.0.0.1), at least {} addresses",
        connections.div_ceil(half)
    ))
}

/// A connect error that no retry can mend, as a message naming the limit and what to do;
/// `None` for the others (refused, unreachable: counted, and retried with backoff).
pub(crate) fn limit_hit(err: &io::Error, endpoint: &Endpoint, open: usize) -> Option<io::Error> {
    let text = match err.raw_os_error()? {
        libc::EADDRNOTAVAIL => {
            let range = match port_range() {
                Some((low, high)) => format!("{low}-{high}"),
                None => "?".into(),
            };
            let from = match endpoint.sources.len() {
                0 => "this host's address".to_string(),
                n => format!("{n} source address(es)"),
            };
            format!(
                "out of local ports towards {endpoint} from {from} with {open} connections of \
                 this thread open (ephemeral ports {range}, net.ipv4.ip_local_port_range): \
                 spread the connections over more local addresses with --source (e.g. \
                 --source 127.0.0.1-127.0.0.8 towards 127.0.0.1), or open fewer"
            )
        }
        libc::EMFILE | libc::ENFILE => {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit fills the struct it is given.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
            format!(
                "out of file descriptors with {open} connections of this thread open (the \
                 open-file limit is {}, hard {}; `ulimit -n`): ask for fewer connections, or \
                 raise the limit",
                limit.rlim_cur, limit.rlim_max
            )
        }
        _ => return None,
    };
    Some(io::Error::new(err.kind(), text))
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

#[cfg(test)]
mod tests {
    use super::{port_search_note, Gate, Pending, Watch, MAINTENANCE};
    use std::time::{Duration, Instant};

    /// `--connect-rate`: connects evenly spaced; a late tick opens at most a tick's worth.
    #[test]
    fn the_gate_spaces_connects_and_saves_up_no_burst() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut gate = Gate::new(1000.0, t0); // one per ms
        assert!(gate.admit(t0));
        assert!(!gate.admit(t0), "the next one's turn is a millisecond later");
        assert!(gate.admit(t0 + ms(1)));
        // A tick 10 ms on: the turns missed since, and not one more.
        let later = t0 + ms(2) + MAINTENANCE;
        let opened = (0..100).take_while(|_| gate.admit(later)).count();
        assert_eq!(opened, MAINTENANCE.as_millis() as usize + 1);
        // Far later: still one tick's worth, not the whole second's.
        let much_later = later + Duration::from_secs(1);
        let opened = (0..10_000).take_while(|_| gate.admit(much_later)).count();
        assert_eq!(opened, MAINTENANCE.as_millis() as usize + 1);
    }

    /// The port search warning: past half the range per source address, not at it; the
    /// addresses it asks for make each one's share fit.
    #[test]
    fn many_connections_from_one_address_are_warned_of() {
        let range = (32768, 60999); // 28 232 ports, half 14 116
        assert_eq!(port_search_note(14_116, 0, range), None);
        let note = port_search_note(14_117, 0, range).unwrap();
        assert!(note.contains("14117 connections from one source address"), "{note}");
        assert!(note.contains("(32768-60999)") && note.contains("at least 2 addresses"), "{note}");
        assert_eq!(port_search_note(19_936, 2, range), None);
        let note = port_search_note(60_000, 4, range).unwrap();
        assert!(note.contains("15000 connections from each of 4 source addresses"), "{note}");
        assert!(note.contains("at least 5 addresses"), "{note}");
    }

    /// Each connection is written once per turn, in the order marked; a mark made while the
    /// turn's list is being written waits for the next turn instead of being lost.
    #[test]
    fn pending_writes_list_each_connection_once() {
        let mut pending = Pending::new(4);
        for i in [2, 0, 2, 3, 0] {
            pending.mark(i);
        }
        let turn = pending.take();
        assert_eq!(turn, [2, 0, 3]);
        pending.mark(2); // while writing
        pending.give_back(turn);
        assert_eq!(pending.take(), [2]);
        pending.mark(1);
        pending.mark(1);
        assert_eq!(pending.take(), [1]);
    }

    /// Connections come up in time order, each once however often it was armed; arming earlier
    /// wins, arming later than the live entry changes nothing, and a popped connection can be
    /// armed again.
    #[test]
    fn the_watch_yields_each_connection_once_when_its_time_comes() {
        let mut watch = Watch::new(4);
        watch.arm(0, 50);
        watch.arm(1, 20);
        watch.arm(2, 80);
        watch.arm(0, 10); // earlier: the entry at 50 goes stale
        watch.arm(1, 60); // later than its live entry: ignored
        assert_eq!(watch.pop_due(5), None);
        let due: Vec<usize> = std::iter::from_fn(|| watch.pop_due(55)).collect();
        assert_eq!(due, [0, 1], "0 at 10, 1 at 20; 0's stale entry at 50 is skipped");
        watch.arm(0, 70);
        let due: Vec<usize> = std::iter::from_fn(|| watch.pop_due(100)).collect();
        assert_eq!(due, [0, 2]);
        assert_eq!(watch.pop_due(u64::MAX - 1), None, "connection 3 was never armed");
    }
}
