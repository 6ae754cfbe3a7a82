//! Time-driven work and shutdown: due deadlines (idle timeouts, the drain's quiet periods, the
//! end of an accept pause, periodic stats lines), the graceful drain and the immediate stop.

use std::time::{Duration, Instant};

use super::accept::Listener;
use super::{Phase, Reactor};
use crate::connection::{CloseReason, State};

impl Reactor {
    pub(super) fn fire_deadlines(&mut self, now: Instant) {
        if self.backoff.take_expired(now) {
            for index in 0..self.listeners.len() {
                if let Some(Some(Listener::Tcp(_) | Listener::Unix(..))) = self.listeners.get(index)
                {
                    self.accept_from(index, now);
                }
            }
        }
        if let Some(at) = self.next_stats {
            if now >= at {
                println!("{}", self.ctx.stats.to_event_json("stats"));
                let every = self.config.stats_interval.unwrap_or(Duration::from_secs(1));
                self.next_stats = Some((at + every).max(now));
            }
        }
        if let Phase::Draining { deadline } = self.phase {
            if now >= deadline {
                self.stop_now();
                return;
            }
        }
        while let Some(d) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get(d.key) else { continue };
            if conn.id != d.id || conn.timer_seq != d.seq || conn.state() == State::Closed {
                continue; // stale: the connection is gone or was re-armed
            }
            let draining = matches!(self.phase, Phase::Draining { .. });
            let limit = if draining {
                self.config.drain_grace
            } else if let Some(idle) = self.config.idle_timeout {
                idle
            } else {
                continue;
            };
            let due = conn.last_active + limit;
            if due > now {
                self.arm(d.key, due);
            } else if draining && conn.pending() > 0 {
                // Still owed output: not quiet. Look again after another grace period.
                self.arm(d.key, now + limit);
            } else {
                let reason = if draining { CloseReason::Drained } else { CloseReason::IdleTimeout };
                self.close(d.key, reason);
            }
        }
    }

    /// Graceful shutdown: stop accepting at once; close each connection once it is quiet.
    pub(super) fn begin_drain(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let now = Instant::now();
        // Connections served later in this turn must be stamped with this time, not an old one.
        self.ctx.now = now;
        self.phase = Phase::Draining { deadline: now + self.config.drain_timeout };
        self.close_listeners();
        let grace = self.config.drain_grace;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            // Every connection starts the drain as active (without an idle timeout the clock was
            // not read on every turn, so `last_active` may be old); from now on it is kept exact.
            let conn = &mut self.conns[key];
            conn.timer_seq = conn.timer_seq.wrapping_add(1);
            conn.last_active = now;
            self.arm(key, now + grace);
        }
    }

    /// Closes every connection now and ends the loop.
    pub(super) fn stop_now(&mut self) {
        self.close_listeners();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::DrainAborted);
        }
        self.free_closed();
        self.phase = Phase::Stopped;
    }
}
