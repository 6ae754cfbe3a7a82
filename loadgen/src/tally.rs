//! A load thread's results: latencies in an HdrHistogram (ns, 3 significant digits), message,
//! mismatch, loss and error counts. Each thread fills its own; `report.rs` merges them.

use std::cell::Cell;
use std::io;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::client::InFlight;

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

    pub(crate) fn of(err: &io::Error) -> Cause {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Cause::Refused,
            io::ErrorKind::UnexpectedEof => Cause::ClosedByServer,
            _ => Cause::Reset,
        }
    }
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
    /// The last conversion [`Tally::ns`] made: the reactor converts its turn's time many times
    /// per turn, and subtracting `Instant`s costs about 40 instructions.
    last_ns: Cell<(Instant, u64)>,
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
            connect_hist: new_histogram(),
            last_completion: None,
            recorded_inflight: 0,
            record_from: record_from.saturating_duration_since(base).as_nanos() as u64,
            base,
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
        Instant::now().saturating_duration_since(self.base).as_nanos() as u64
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
        if now >= self.record_from {
            self.connects += 1;
            self.connect_hist.saturating_record((took.as_nanos() as u64).max(1));
        }
    }

    /// Chat: one recorded delivery that took `ns`.
    pub(crate) fn delivery(&mut self, ns: u64) {
        let ns = ns.max(1);
        self.hist.saturating_record(ns);
        if let Some(interval) = &mut self.interval {
            interval.saturating_record(ns);
        }
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
            let ns = now.saturating_sub(msg.start).max(1);
            self.hist.saturating_record_n(ns, n);
            if let Some(interval) = &mut self.interval {
                interval.saturating_record_n(ns, n);
            }
            self.messages += n;
            self.last_completion = Some(now);
        }
    }
}
