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
use std::time::{Duration, Instant};

/// A moment kept small: whole milliseconds since a [`Clock`]'s epoch, wrapping after 49.7 days.
/// A connection keeps its last activity as one (4 bytes where an `Instant` takes 16: the
/// connection fits one cache line); [`Clock::instant`] reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tick(u32);

/// Converts between instants and [`Tick`]s.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// Ticks counted from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Clock { epoch }
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The tick holding `at`.
    pub fn tick(&self, at: Instant) -> Tick {
        Tick(self.millis(at) as u32)
    }

    /// The end of `tick`'s millisecond, read at `now` (`tick` no later than `now` and no more
    /// than 49.7 days before it; older ticks read as younger, by multiples of that). The end, so
    /// that a deadline counted from it is never early: a connection is closed for idleness up to
    /// a millisecond late, never before its time.
    pub fn instant(&self, tick: Tick, now: Instant) -> Instant {
        let now_ms = self.millis(now);
        let age = u64::from((now_ms as u32).wrapping_sub(tick.0));
        self.epoch + Duration::from_millis(now_ms.saturating_sub(age) + 1)
    }
}

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
    /// Slab key of the connection (below 2^32).
    pub key: usize,
    /// The connection's 32-bit number (slab keys are reused). Mistaking a new connection for
    /// the one armed would take 2^32 connections through the same slab entry while the old
    /// entry waits, and the check at expiry (the real deadline, from the connection's own
    /// state) would still hold.
    pub id: u32,
    /// Which arming of that connection this entry belongs to.
    pub seq: u32,
    /// What to check.
    pub kind: Kind,
}

/// A min-heap of deadlines.
#[derive(Debug)]
pub struct Timers {
    /// Entries keep their time as nanoseconds from here: a deadline armed for earlier reads
    /// back as this instant.
    base: Instant,
    heap: BinaryHeap<Reverse<Entry>>,
}

/// A [`Deadline`] as the heap keeps it: 24 bytes where the deadline takes 40. Every TLS,
/// WebSocket and PROXY protocol connection has one armed for its handshake, so this is part of
/// what a new connection costs (and the heap's capacity stays at its high-water mark).
/// Ordered as deadlines are: by time first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: u64,
    key: u32,
    id: u32,
    seq: u32,
    kind: Kind,
}

impl Timers {
    /// No deadlines; none will be armed for before `base`.
    pub fn new(base: Instant) -> Self {
        Timers { base, heap: BinaryHeap::new() }
    }

    /// Arms a deadline.
    pub fn arm(&mut self, d: Deadline) {
        let at = d.at.saturating_duration_since(self.base).as_nanos() as u64;
        let key = u32::try_from(d.key).expect("slab keys are below 2^32");
        self.heap.push(Reverse(Entry { at, key, id: d.id, seq: d.seq, kind: d.kind }));
    }

    fn instant(&self, at: u64) -> Instant {
        self.base + Duration::from_nanos(at)
    }

    /// The earliest armed time, if any.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| self.instant(e.at))
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        let Reverse(e) = *self.heap.peek()?;
        let at = self.instant(e.at);
        if at > now {
            return None;
        }
        self.heap.pop();
        Some(Deadline { at, key: e.key as usize, id: e.id, seq: e.seq, kind: e.kind })
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

    #[test]
    fn a_tick_reads_back_as_the_end_of_its_millisecond() {
        let epoch = Instant::now();
        let clock = Clock::new(epoch);
        let at = epoch + Duration::from_micros(12_345_678);
        let tick = clock.tick(at);
        assert_eq!(tick, Tick(12_345));
        let later = at + Duration::from_secs(3600);
        assert_eq!(clock.instant(tick, later), epoch + Duration::from_millis(12_346));
        assert_eq!(clock.instant(tick, at), epoch + Duration::from_millis(12_346));
        // Past the wrap (2^32 ms after the epoch), a recent tick still reads right.
        let wrap = Duration::from_millis(1 << 32);
        let late = epoch + wrap + Duration::from_millis(500);
        let tick = clock.tick(late - Duration::from_millis(200));
        assert_eq!(tick, Tick(300));
        assert_eq!(clock.instant(tick, late), epoch + wrap + Duration::from_millis(301));
    }

    fn d(at: Instant, key: usize) -> Deadline {
        Deadline { at, key, id: key as u32, seq: 0, kind: Kind::Idle }
    }

    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn pops_in_time_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
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
