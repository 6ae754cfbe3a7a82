//! Open-loop pacing: messages at fixed intended times, independent of how fast echoes return.
//!
//! Message `m` of a schedule is intended at `start + m / rate`, computed in integers from the
//! rate in thousandths of a message per second (`m × 10¹² / millirate` ns, in 128 bits): exact
//! for any rate given to three decimals, and no drift however long the run. A client that falls behind sends the overdue messages as soon as it can, and their
//! latency is measured from the intended time, not from when they finally went out: a stall of
//! the server shows up in every message that should have been sent during it (no coordinated
//! omission). Time is passed in, so this is tested with a simulated clock.
//!
//! A rate that changes ([`Profile`]: `--rate FROM..TO --ramp DUR`, `--rate A,B,C --step DUR`)
//! is a list of segments, each linear in rate; message `m`'s intended time solves "the
//! messages intended up to `t` reach `m`" within its segment (a quadratic on a ramp), in `f64`
//! seconds from the start: nanosecond-exact for runs of days.

use std::time::{Duration, Instant};

/// The lowest rate a schedule takes: one message every 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// How an open loop's rate changes over the measured period.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// From `from` to `to` messages per second, linearly over `over`, then `to`.
    Ramp {
        /// The rate at the start (and through the warm-up).
        from: f64,
        /// The rate at the end of the ramp, and after it.
        to: f64,
        /// How long the ramp takes.
        over: Duration,
    },
    /// Each rate for `each`, the last one to the end.
    Steps {
        /// The rates, in order (the first through the warm-up too).
        rates: Vec<f64>,
        /// How long each lasts.
        each: Duration,
    },
}

/// A stretch of a profile: `secs` long (infinite for the last), its rate going linearly from
/// `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    secs: f64,
    from: f64,
    to: f64,
}

impl Segment {
    /// Messages intended over the whole segment.
    fn messages(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.secs
    }

    /// Messages intended over its first `x` seconds.
    fn messages_to(&self, x: f64) -> f64 {
        match self.secs.is_finite() {
            true => self.from * x + (self.to - self.from) * x * x / (2.0 * self.secs),
            false => self.from * x,
        }
    }

    /// When (seconds into it) its messages reach `m`: `from·x + k·x² = m` with
    /// `k = (to - from) / 2secs`, in the form that stays exact when `k` is small or negative.
    fn time_of(&self, m: f64) -> f64 {
        let k = match self.secs.is_finite() {
            true => (self.to - self.from) / (2.0 * self.secs),
            false => 0.0,
        };
        let a = self.from;
        2.0 * m / (a + (a * a + 4.0 * k * m).max(0.0).sqrt())
    }
}

impl Profile {
    /// The lowest and highest rate in it.
    pub fn bounds(&self) -> (f64, f64) {
        let rates = match self {
            Profile::Ramp { from, to, .. } => vec![*from, *to],
            Profile::Steps { rates, .. } => rates.clone(),
        };
        rates.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)))
    }

    /// The same shape at `share` of the rate (one load thread's part).
    pub fn scaled(&self, share: f64) -> Profile {
        match self {
            Profile::Ramp { from, to, over } => {
                Profile::Ramp { from: from * share, to: to * share, over: *over }
            }
            Profile::Steps { rates, each } => {
                Profile::Steps { rates: rates.iter().map(|r| r * share).collect(), each: *each }
            }
        }
    }

    /// Its segments after a lead-in of `lead` at the first rate (the warm-up).
    fn segments(&self, lead: Duration) -> Vec<Segment> {
        let first = match self {
            Profile::Ramp { from, .. } => *from,
            Profile::Steps { rates, .. } => rates[0],
        };
        let mut out = vec![Segment { secs: lead.as_secs_f64(), from: first, to: first }];
        match self {
            Profile::Ramp { from, to, over } => {
                out.push(Segment { secs: over.as_secs_f64(), from: *from, to: *to });
                out.push(Segment { secs: f64::INFINITY, from: *to, to: *to });
            }
            Profile::Steps { rates, each } => {
                for (i, &r) in rates.iter().enumerate() {
                    let secs =
                        if i + 1 == rates.len() { f64::INFINITY } else { each.as_secs_f64() };
                    out.push(Segment { secs, from: r, to: r });
                }
            }
        }
        out.retain(|s| s.secs > 0.0);
        out
    }

    /// The messages it intends over the first `d` (no lead-in): the mean rate a run of `d`
    /// asks for is this over `d`.
    pub fn messages_in(&self, d: Duration) -> f64 {
        let mut left = d.as_secs_f64();
        let mut total = 0.0;
        for s in self.segments(Duration::ZERO) {
            let x = left.min(s.secs);
            total += s.messages_to(x);
            left -= x;
            if left <= 0.0 {
                break;
            }
        }
        total
    }
}

/// An open-loop schedule: a constant rate, or a [`Profile`].
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Thousandths of a message per second (a constant rate).
    millirate: u128,
    /// A changing rate's segments (then `millirate` is unused).
    segments: Vec<Segment>,
    issued: u64,
}

impl Schedule {
    /// `rate` messages per second from `start` on, rounded to thousandths; at least
    /// [`MIN_RATE`].
    pub fn new(start: Instant, rate: f64) -> Self {
        assert!(rate >= MIN_RATE && rate.is_finite(), "rate must be at least {MIN_RATE}");
        let millirate = (rate * 1000.0).round() as u128;
        Schedule { start, millirate, segments: Vec::new(), issued: 0 }
    }

    /// `profile` from `start` on, after `lead` at its first rate (the warm-up).
    pub fn shaped(start: Instant, lead: Duration, profile: &Profile) -> Self {
        let segments = profile.segments(lead);
        Schedule { start, millirate: 1, segments, issued: 0 }
    }

    /// The intended time of message `m`.
    pub fn intended(&self, m: u64) -> Instant {
        if !self.segments.is_empty() {
            return self.start + Duration::from_secs_f64(self.seconds_to(m as f64));
        }
        let ns = m as u128 * 1_000_000_000_000 / self.millirate;
        self.start + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// Seconds from the start to message `m` of a profile.
    fn seconds_to(&self, mut m: f64) -> f64 {
        let mut t = 0.0;
        for s in &self.segments {
            let here = s.messages();
            if m < here || !s.secs.is_finite() {
                return (t + s.time_of(m)).min(1e12);
            }
            m -= here;
            t += s.secs;
        }
        1e12
    }

    /// When the next message is due.
    pub fn next_due(&self) -> Instant {
        self.intended(self.issued)
    }

    /// Takes the next message if it is due at `now`: its index and intended time.
    pub fn take_due(&mut self, now: Instant) -> Option<(u64, Instant)> {
        let at = self.next_due();
        if at > now {
            return None;
        }
        let m = self.issued;
        self.issued += 1;
        Some((m, at))
    }

    /// Messages taken so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_exact_and_do_not_drift() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0);
        assert_eq!(s.intended(0), t0);
        assert_eq!(s.intended(1), t0 + Duration::from_millis(1));
        assert_eq!(s.intended(1_000_000), t0 + Duration::from_secs(1000));
        let s = Schedule::new(t0, 3.0);
        assert_eq!(s.intended(3), t0 + Duration::from_secs(1));
        assert_eq!(s.intended(3_000_000_000), t0 + Duration::from_secs(1_000_000_000));
        let s = Schedule::new(t0, 0.5);
        assert_eq!(s.intended(1), t0 + Duration::from_secs(2));
        // 33.333 per second: message 33333 is due at exactly 1000 s.
        let s = Schedule::new(t0, 33.333);
        assert_eq!(s.intended(33_333), t0 + Duration::from_secs(1000));
    }

    /// Steps: each rate for its time, exactly; a ramp: the messages of each second are its mean
    /// rate, and the times solve the quadratic exactly.
    #[test]
    fn profiles_intend_their_rates() {
        let t0 = Instant::now();
        let secs = |s: f64| t0 + Duration::from_secs_f64(s);
        let steps =
            Profile::Steps { rates: vec![100.0, 200.0, 400.0], each: Duration::from_secs(1) };
        let s = Schedule::shaped(t0, Duration::ZERO, &steps);
        assert_eq!(s.intended(0), t0);
        assert_eq!(s.intended(100), secs(1.0));
        assert_eq!(s.intended(300), secs(2.0));
        assert_eq!(s.intended(700), secs(3.0), "the last rate goes on");
        assert_eq!(steps.messages_in(Duration::from_secs(3)), 700.0);
        // With a warm-up of 0.5 s at the first rate before it.
        let s = Schedule::shaped(t0, Duration::from_millis(500), &steps);
        assert_eq!(s.intended(150), secs(1.5));

        let ramp = Profile::Ramp { from: 100.0, to: 300.0, over: Duration::from_secs(10) };
        let s = Schedule::shaped(t0, Duration::ZERO, &ramp);
        // Second k of the ramp intends 110 + 20k messages (its mean rate).
        let count_to = |t: f64| (0..).take_while(|&m| s.intended(m) < secs(t)).count();
        for k in 0..10 {
            let got = count_to(k as f64 + 1.0) - count_to(k as f64);
            assert_eq!(got, 110 + 20 * k, "second {k}");
        }
        assert_eq!(ramp.messages_in(Duration::from_secs(10)), 2000.0);
        assert_eq!(ramp.messages_in(Duration::from_secs(12)), 2600.0, "then 300 per second");
        let down = Profile::Ramp { from: 300.0, to: 100.0, over: Duration::from_secs(10) };
        let s = Schedule::shaped(t0, Duration::ZERO, &down);
        assert_eq!(s.intended(2000), secs(10.0), "a ramp down reaches its end exactly");
        assert_eq!(ramp.scaled(0.5).bounds(), (50.0, 150.0));
    }

    #[test]
    fn takes_only_what_is_due() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100.0);
        let now = t0 + Duration::from_millis(35);
        let due: Vec<u64> = std::iter::from_fn(|| s.take_due(now)).map(|(m, _)| m).collect();
        assert_eq!(due, vec![0, 1, 2, 3]);
        assert_eq!(s.next_due(), t0 + Duration::from_millis(40));
        assert_eq!(s.issued(), 4);
    }

    /// A simulated server that answers in 1 ms but stalls for 1 s once. A closed-loop client
    /// (send the next when the previous returns) records the stall once; the open-loop schedule,
    /// measuring from intended times, records it for every message that should have gone out
    /// during the stall, which is what a user of the service would have seen.
    #[test]
    fn open_loop_accounts_for_a_stall_that_closed_loop_hides() {
        let t0 = Instant::now();
        let service = Duration::from_millis(1);
        let stall_from = t0 + Duration::from_secs(1);
        let stall_until = stall_from + Duration::from_secs(1);
        // When does a message sent at `t` come back?
        let answer = |t: Instant| {
            let begin = if t >= stall_from && t < stall_until { stall_until } else { t };
            begin + service
        };
        let end = t0 + Duration::from_secs(3);

        let mut closed = Vec::new();
        let mut t = t0;
        while t < end {
            let back = answer(t);
            closed.push(back - t);
            t = back;
        }

        let mut open = Vec::new();
        let mut schedule = Schedule::new(t0, 500.0); // one message every 2 ms: below capacity
        let mut free_at = t0; // one connection, one message at a time
        while schedule.next_due() < end {
            let (_, intended) = schedule.take_due(schedule.next_due()).unwrap();
            let sent = intended.max(free_at);
            let back = answer(sent);
            free_at = back;
            open.push(back - intended);
        }

        let over_100ms =
            |v: &[Duration]| v.iter().filter(|d| **d > Duration::from_millis(100)).count();
        assert_eq!(over_100ms(&closed), 1, "closed loop sees the stall once");
        // The open loop sees it for every message due during the stall (~500 of them).
        assert!(over_100ms(&open) >= 450, "open loop saw {} slow messages", over_100ms(&open));
        let p99 = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() * 99 / 100]
        };
        assert!(p99(closed) <= Duration::from_millis(2), "closed-loop p99 hides the stall");
        assert!(p99(open) >= Duration::from_millis(500), "open-loop p99 shows it");
    }
}
