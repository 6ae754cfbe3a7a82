//! Open-loop pacing: messages at fixed intended times, independent of how fast echoes return.
//!
//! Message `m` of a schedule is intended at `start + m / rate`, computed in integers from the
//! rate in thousandths of a message per second (`m × 10¹² / millirate` ns, in 128 bits): exact
//! for any rate given to three decimals, and no drift however long the run. A client that falls behind sends the overdue messages as soon as it can, and their
//! latency is measured from the intended time, not from when they finally went out: a stall of
//! the server shows up in every message that should have been sent during it (no coordinated
//! omission). Time is passed in, so this is tested with a simulated clock.

use std::time::{Duration, Instant};

/// The lowest rate a schedule takes: one message every 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// A constant-rate schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Thousandths of a message per second.
    millirate: u128,
    issued: u64,
}

impl Schedule {
    /// `rate` messages per second from `start` on, rounded to thousandths; at least
    /// [`MIN_RATE`].
    pub fn new(start: Instant, rate: f64) -> Self {
        assert!(rate >= MIN_RATE && rate.is_finite(), "rate must be at least {MIN_RATE}");
        Schedule { start, millirate: (rate * 1000.0).round() as u128, issued: 0 }
    }

    /// The intended time of message `m`.
    pub fn intended(&self, m: u64) -> Instant {
        let ns = m as u128 * 1_000_000_000_000 / self.millirate;
        self.start + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
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
