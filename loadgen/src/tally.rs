//! A load thread's results: latencies in an HdrHistogram (ns, 3 significant digits), message,
//! mismatch, loss and error counts. Each thread fills its own; `report.rs` merges them.
//!
//! With per-second intervals on, a latency is recorded once, in the current interval's
//! histogram, and each interval is added to the run's histogram when it closes
//! ([`Tally::take_interval`]): one record per message instead of two, and the run's histogram
//! holds exactly the same counts.
//!
//! Echo completions are counted at once but their latencies are recorded later in the turn
//! ([`Tally::settle`], after the turn's writes): recording is work that can wait, and between an
//! echo's read and the next message's write it would delay every closed-loop round trip.

use std::cell::Cell;
use std::io;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Why a connection was dropped and re-established: the causes the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// connect(2) was refused: nothing listens.
    Refused,
    /// connect(2) failed otherwise.
    ConnectFailed,
    /// The server reset the connection.
    Reset,
    /// The server closed the connection (EOF) while echoes were owed.
    ClosedByServer,
    /// A message was not echoed within `--timeout`.
    Timeout,
    /// The server echoed more bytes than were sent.
    ExtraBytes,
}

impl Cause {
    /// What the report prints.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Refused => "connection refused",
            Cause::ConnectFailed => "connect failed",
            Cause::Reset => "connection reset by server",
            Cause::ClosedByServer => "connection closed by server",
            Cause::Timeout => "no echo within --timeout",
            Cause::ExtraBytes => "server sent bytes that were never sent to it",
        }
    }

    /// A connect (or its TLS handshake) that failed: refused when nothing listens, else a
    /// connect failure.
    pub(crate) fn of_connect(err: &io::Error) -> Cause {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Cause::Refused,
            _ => Cause::ConnectFailed,
        }
    }

    pub(crate) fn of(err: &io::Error) -> Cause {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Cause::Refused,
            io::ErrorKind::UnexpectedEof => Cause::ClosedByServer,
            _ => Cause::Reset,
        }
    }
}

/// One message in flight.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    /// Where its latency starts: first byte sent, or intended send time (open loop); in
    /// nanoseconds since the thread's clock base (see [`Tally::ns`]), like every time here.
    pub start: u64,
    /// When it was handed to the socket: the timeout runs from here, since it judges the server,
    /// not the client's backlog.
    pub sent: u64,
    /// Sent after the warm-up: its latency counts.
    pub record: bool,
}

/// Per-thread results, filled in by connections as messages complete.
#[derive(Debug)]
pub struct Tally {
    /// Latency of every recorded message, in nanoseconds.
    pub hist: Histogram<u64>,
    /// The same, for the current hlog interval only.
    pub interval: Option<Histogram<u64>>,
    /// Recorded messages completed (chat: recorded lines delivered to every other member).
    pub messages: u64,
    /// Chat: deliveries recorded (a line received by one member).
    pub deliveries: u64,
    /// Messages whose echo differed.
    pub mismatches: u64,
    /// UDP datagrams never echoed (recorded ones).
    pub lost: u64,
    /// UDP replies for a datagram already answered or never sent.
    pub duplicates: u64,
    /// UDP replies that arrived after a reply to a later datagram of the same socket.
    pub reordered: u64,
    /// Errors by cause.
    pub errors: Vec<(Cause, u64)>,
    /// Connections established (connect, and the TLS handshake) in the measured period.
    pub connects: u64,
    /// Connects completed in the whole run, warm-up included (the progress line's count).
    pub opened: u64,
    /// Connections that were never up in the whole run (echo workloads).
    pub never_up: u64,
    /// How long each of those took, in nanoseconds.
    pub connect_hist: Histogram<u64>,
    /// When the last recorded message completed.
    pub last_completion: Option<u64>,
    /// Messages flagged for recording that are in flight now.
    pub recorded_inflight: u64,
    /// A flagged message counts only if it completes (or is lost) at or after this time.
    pub record_from: u64,
    /// The clock base: times are nanoseconds since it.
    pub base: Instant,
    /// The thread's clock, read directly (see [`Clock`]).
    pub clock: Clock,
    /// Latencies of echo completions (ns, count) not yet recorded: see [`Tally::settle`].
    deferred: Vec<(u64, u64)>,
    /// The last conversion [`Tally::ns`] made: the reactor converts its turn's time many times
    /// per turn, and subtracting `Instant`s costs about 40 instructions.
    last_ns: Cell<(Instant, u64)>,
}

/// CLOCK_MONOTONIC, the clock `Instant` reads on Linux, in nanoseconds since an anchor, read
/// with one clock_gettime(2) (vDSO, no syscall) and integer arithmetic: `Instant::now()` and a
/// subtraction of `Instant`s cost about 60 instructions more per reading, and the clock is read
/// once per read of echoes and once per write of new messages.
///
/// The anchor ties it to an `Instant` (the run's start, so times that come as `Instant`s, such as
/// an open-loop message's intended time, convert to it) to within the tightest of a few paired
/// readings: tens of nanoseconds, the same for every time of the run. Times the clock takes on both
/// ends (a closed-loop latency) are exact.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// CLOCK_MONOTONIC's reading, in ns, at the anchor.
    anchor_raw: u64,
    /// How far `anchor_raw` may be off, in ns: half the paired readings' spread, rounded up.
    pub anchor_error: u64,
}

impl Clock {
    /// A clock counting from `anchor` (in the past or the future).
    pub fn anchored_at(anchor: Instant) -> Clock {
        // The raw reading between two `Instant` readings closest together stands for their
        // midpoint.
        let (mut best_width, mut raw_at_anchor) = (u64::MAX, 0);
        for _ in 0..5 {
            let before = Instant::now();
            let raw = raw_ns();
            let width = before.elapsed().as_nanos() as u64;
            if width < best_width {
                best_width = width;
                let mid = before + std::time::Duration::from_nanos(width / 2);
                raw_at_anchor = if mid >= anchor {
                    raw.saturating_sub(mid.duration_since(anchor).as_nanos() as u64)
                } else {
                    raw + anchor.duration_since(mid).as_nanos() as u64
                };
            }
        }
        Clock { anchor_raw: raw_at_anchor, anchor_error: best_width.div_ceil(2) }
    }

    /// CLOCK_MONOTONIC's reading, in ns, at `ns` after the anchor.
    pub fn raw_at(self, ns: u64) -> u64 {
        self.anchor_raw + ns
    }

    /// Nanoseconds since the anchor (0 before it).
    #[inline]
    pub fn now(self) -> u64 {
        raw_ns().saturating_sub(self.anchor_raw)
    }
}

#[inline]
fn raw_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid timespec to fill; CLOCK_MONOTONIC cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where latencies go: the open interval when intervals are kept, the run's histogram otherwise.
#[inline]
fn recording<'a>(
    interval: &'a mut Option<Histogram<u64>>,
    hist: &'a mut Histogram<u64>,
) -> &'a mut Histogram<u64> {
    interval.as_mut().unwrap_or(hist)
}

/// Adds `n` errors of `cause` to a list of counts by cause.
pub fn add_errors(errors: &mut Vec<(Cause, u64)>, cause: Cause, n: u64) {
    match errors.iter_mut().find(|(c, _)| *c == cause) {
        Some((_, count)) => *count += n,
        None => errors.push((cause, n)),
    }
}

/// Latencies are recorded in ns from 1 ns to an hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    /// Empty; times count from `base`, and flagged messages count from `record_from` on.
    pub fn new(hlog: bool, base: Instant, record_from: Instant) -> Self {
        Tally {
            hist: new_histogram(),
            interval: hlog.then(new_histogram),
            messages: 0,
            deliveries: 0,
            mismatches: 0,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            errors: Vec::new(),
            connects: 0,
            opened: 0,
            never_up: 0,
            connect_hist: new_histogram(),
            last_completion: None,
            recorded_inflight: 0,
            record_from: record_from.saturating_duration_since(base).as_nanos() as u64,
            base,
            clock: Clock::anchored_at(base),
            deferred: Vec::new(),
            last_ns: Cell::new((base, 0)),
        }
    }

    /// `t` as nanoseconds since the clock base.
    #[inline]
    pub fn ns(&self, t: Instant) -> u64 {
        let (last, ns) = self.last_ns.get();
        if t == last {
            return ns;
        }
        let ns = t.saturating_duration_since(self.base).as_nanos() as u64;
        self.last_ns.set((t, ns));
        ns
    }

    /// Now, as nanoseconds since the clock base.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.clock.now()
    }

    /// Records one latency of `ns` (at least 1), `n` times (see [`recording`]).
    #[inline]
    fn record(&mut self, ns: u64, n: u64) {
        recording(&mut self.interval, &mut self.hist).saturating_record_n(ns.max(1), n);
    }

    /// Closes the current interval: adds it to the run's histogram and returns a copy of it (the
    /// next interval starts empty). `None` when intervals are not kept.
    pub fn take_interval(&mut self) -> Option<Histogram<u64>> {
        self.settle();
        let interval = self.interval.as_mut()?;
        self.hist.add(&*interval).expect("histograms with the same bounds add");
        let closed = interval.clone();
        interval.reset();
        Some(closed)
    }

    /// Records the latencies of the completions counted since the last call. The reactor calls
    /// it once a turn, after its writes; closing an interval calls it first.
    pub fn settle(&mut self) {
        let hist = recording(&mut self.interval, &mut self.hist);
        for (ns, n) in self.deferred.drain(..) {
            hist.saturating_record_n(ns.max(1), n);
        }
    }

    /// Counts one error of `cause`.
    pub fn error(&mut self, cause: Cause) {
        self.error_n(cause, 1);
    }

    /// Counts `n` errors of `cause`.
    pub fn error_n(&mut self, cause: Cause, n: u64) {
        add_errors(&mut self.errors, cause, n);
    }

    /// A connection came up at `now` after `took` (connect and handshake); counted in the
    /// measured period only.
    pub(crate) fn connected(&mut self, now: u64, took: std::time::Duration) {
        self.opened += 1;
        if now >= self.record_from {
            self.connects += 1;
            self.connect_hist.saturating_record((took.as_nanos() as u64).max(1));
        }
    }

    /// Chat: one recorded delivery that took `ns`.
    pub(crate) fn delivery(&mut self, ns: u64) {
        self.record(ns, 1);
        self.deliveries += 1;
    }

    pub(crate) fn complete(&mut self, msg: InFlight, now: u64) {
        self.complete_n(msg, now, 1);
    }

    /// Completes `n` messages that started and finished together (`msg` stands for them all).
    pub(crate) fn complete_n(&mut self, msg: InFlight, now: u64, n: u64) {
        if !msg.record {
            return;
        }
        self.recorded_inflight -= n;
        if now >= self.record_from {
            self.deferred.push((now.saturating_sub(msg.start), n));
            self.messages += n;
            self.last_completion = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(start: u64) -> InFlight {
        InFlight { start, sent: start, record: true }
    }

    /// With intervals kept, each latency is recorded once, in its interval; the run's histogram
    /// gets every interval as it closes, and ends with exactly what a direct record gives.
    #[test]
    fn intervals_add_up_to_the_run() {
        let base = Instant::now();
        let mut with = Tally::new(true, base, base);
        let mut without = Tally::new(false, base, base);
        let mut closed = Vec::new();
        for (k, latency) in [5_000u64, 7_000, 1_000_000, 20, 5_000].into_iter().enumerate() {
            for tally in [&mut with, &mut without] {
                tally.recorded_inflight += 2;
                tally.complete_n(msg(100), 100 + latency, 2);
            }
            if k % 2 == 1 {
                closed.push(with.take_interval().expect("intervals are kept"));
            }
        }
        closed.push(with.take_interval().unwrap());
        assert_eq!(closed.iter().map(|h| h.len()).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(without.messages, 10, "counted at once");
        assert_eq!(without.hist.len(), 0, "recorded when the turn settles");
        without.settle();
        assert_eq!(with.hist, without.hist);
        assert_eq!(with.hist.len(), 10);
        assert_eq!(with.take_interval().unwrap().len(), 0, "a closed interval is not added twice");
        assert_eq!(with.hist.len(), 10);
        assert!(without.take_interval().is_none());
    }

    /// The direct clock and `Instant` agree to within the anchor's stated error.
    #[test]
    fn the_clock_agrees_with_instant() {
        let base = Instant::now();
        let tally = Tally::new(false, base, base);
        let err = tally.clock.anchor_error;
        for _ in 0..1000 {
            let before = tally.ns(Instant::now());
            let now = tally.now_ns();
            let after = tally.ns(Instant::now());
            assert!(before <= now + err && now <= after + err, "{before} {now} {after} ±{err}");
        }
        // An anchor in the future reads 0 until it comes.
        let later = Clock::anchored_at(Instant::now() + std::time::Duration::from_secs(3600));
        assert_eq!(later.now(), 0);
    }
}
