//! Deadlines for connections, kept in a min-heap with lazy re-arming. Each has a [`Kind`] that
//! says what to check when it comes due (the reactor dispatches on it): an idle timeout, or the
//! drain's quiet period. Faults and TLS add kinds (resume after a delay, handshake timeout).
//!
//! Each armed connection has one live entry, tagged with the connection's id and an arm
//! sequence number. When an entry comes due the reactor checks the connection's real deadline
//! (which moves forward as the connection is active) and either expires it or re-arms it. So an
//! event costs nothing here (it only updates the connection's `last_active`); the heap does
//! O(log n) work once per timeout period per connection. Time is always passed in.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Close the connection if it made no progress for the idle timeout.
    Idle,
    /// During a drain: close the connection once it has been quiet for the grace period.
    Quiet,
    /// A fault plan needs the connection served again (a reset waiting for acknowledgements).
    Resume,
    /// A TLS connection must have finished its handshake by now.
    Handshake,
    /// A UDP listener's delayed replies come due: `key` is the listener's index, not a slab key.
    Release,
    /// A chat room's lingering names may have run out: `key` is the room's index.
    Linger,
}

/// One armed deadline: at `at`, do what `kind` says to slab entry `key` if it still holds
/// connection `id` armed with sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// When to look.
    pub at: Instant,
    /// Slab key of the connection.
    pub key: usize,
    /// The connection's unique id (slab keys are reused).
    pub id: u64,
    /// Which arming of that connection this entry belongs to.
    pub seq: u32,
    /// What to check.
    pub kind: Kind,
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Self {
        Timers::default()
    }

    /// Arms a deadline.
    pub fn arm(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
    }

    /// The earliest armed time, if any.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    /// Entries armed (including stale ones not yet popped).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn d(at: Instant, key: usize) -> Deadline {
        Deadline { at, key, id: key as u64, seq: 0, kind: Kind::Idle }
    }

    #[test]
    fn pops_in_time_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.arm(d(t0 + Duration::from_secs(3), 3));
        timers.arm(d(t0 + Duration::from_secs(1), 1));
        timers.arm(d(t0 + Duration::from_secs(2), 2));
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due: Vec<usize> =
            std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_millis(2500)))
                .map(|d| d.key)
                .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(3)).map(|d| d.key), Some(3));
        assert!(timers.is_empty());
        assert_eq!(timers.next_at(), None);
    }
}
