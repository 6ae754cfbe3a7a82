//! Time-driven work and shutdown: due deadlines (idle timeouts, the drain's quiet periods, the
//! end of an accept pause, periodic stats lines), the graceful drain and the immediate stop.

use std::time::{Duration, Instant};

use super::{Phase, Reactor};
use crate::behaviour::CloseReason;
use crate::listener::Listener;
use crate::timer::Kind;
use crate::transport::Transport;

impl Reactor {
    #[inline(never)]
    pub(super) fn fire_deadlines(&mut self, now: Instant) {
        if self.backoff.take_expired(now) {
            for index in 0..self.listeners.len() {
                if let Some(Some(Listener::Stream { .. })) = self.listeners.get(index) {
                    self.accept_from(index, now);
                }
            }
        }
        if let Some(at) = self.next_stats {
            if now >= at {
                let line = match &self.peers {
                    Some(peers) => {
                        // The others' last published counters, and this reactor's own now.
                        let mut all = peers.snapshot();
                        all[self.index] = self.ctx.stats;
                        crate::stats::event_json("stats", &all)
                    }
                    None => self.ctx.stats.to_event_json("stats"),
                };
                crate::output::stdout_line(&line);
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
            if d.kind == Kind::Release {
                self.release_udp(d.key, now);
                continue;
            }
            if d.kind == Kind::Linger {
                crate::behaviour::chat::expire_lingering(&mut self.ctx.chat, d.key, now);
                continue;
            }
            let Some(conn) = self.conns.get(d.key) else { continue };
            let life = conn.life();
            if life.id != d.id || life.timer_seq != d.seq || conn.is_closed() {
                continue; // stale: the connection is gone or was re-armed
            }
            match d.kind {
                Kind::Idle => {
                    let Some(idle) = self.config.idle_timeout else { continue };
                    let due = self.ctx.clock.instant(life.last_active, now) + idle;
                    if due > now {
                        self.arm(d.key, due, Kind::Idle);
                    } else {
                        self.close(d.key, CloseReason::IdleTimeout);
                    }
                }
                Kind::Resume => self.resume_faulty(d.key, now),
                Kind::Handshake => {
                    let conn = &mut self.conns[d.key];
                    if conn.awaits_proxy() {
                        // Its PROXY header never came whole.
                        self.close(d.key, CloseReason::ProxyRefused);
                        continue;
                    }
                    let mut late = false;
                    if let Some(tls) = conn.tls_mut().filter(|tls| tls.is_handshaking()) {
                        tls.time_out();
                        late = true;
                    } else if let Some(ws) = conn.ws_mut().filter(|ws| ws.is_opening()) {
                        ws.time_out();
                        late = true;
                    } else if conn.ws_mut().is_some_and(|ws| ws.is_lingering()) {
                        // Our close went long ago and the client never ended its stream.
                        self.close(d.key, CloseReason::Eof);
                        continue;
                    }
                    if late {
                        conn.count_wire(&mut self.ctx.stats);
                        self.close(d.key, CloseReason::HandshakeFailure);
                    }
                }
                Kind::Release | Kind::Linger => unreachable!("handled above"),
                Kind::Quiet => {
                    let grace = self.config.drain_grace;
                    let due = self.ctx.clock.instant(life.last_active, now) + grace;
                    if due > now {
                        self.arm(d.key, due, Kind::Quiet);
                    } else if conn.owes_output() {
                        // Still owed output: not quiet. Look again after another grace period.
                        self.arm(d.key, now + grace, Kind::Quiet);
                    } else {
                        self.close(d.key, CloseReason::Drained);
                    }
                }
            }
        }
    }

    /// Graceful shutdown: stop accepting at once; close each connection once it is quiet.
    pub(super) fn begin_drain(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        self.shared.set_state(crate::stats::State::Draining);
        if let Some(peers) = &self.peers {
            peers.command_all(super::CMD_DRAIN); // every reactor drains (idempotent)
        }
        let now = Instant::now();
        // Connections served later in this turn must be stamped with this time, not an old one.
        self.ctx.set_now(now);
        self.phase = Phase::Draining { deadline: now + self.config.drain_timeout };
        self.close_listeners();
        let grace = self.config.drain_grace;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            // Every connection starts the drain as active (without an idle timeout the clock was
            // not read on every turn, so `last_active` may be old); from now on it is kept exact.
            // The new arming replaces any idle deadline.
            let life = self.conns[key].life_mut();
            life.timer_seq = life.timer_seq.wrapping_add(1);
            life.last_active = self.ctx.tick;
            self.arm(key, now + grace, Kind::Quiet);
            // The new arming made a pending release deadline stale: arm it again.
            if let Some(conn) = self.conns[key].faulty_mut() {
                let faulty = conn.io.inner_mut();
                faulty.fired();
                if let Some(at) = faulty.arm_at() {
                    self.arm(key, at, Kind::Resume);
                }
            }
        }
    }

    /// Closes every connection now and ends the loop.
    pub(super) fn stop_now(&mut self) {
        if let Some(peers) = &self.peers {
            if self.phase != Phase::Stopped {
                peers.command_all(super::CMD_STOP);
            }
        }
        self.close_listeners();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::DrainAborted);
        }
        self.ctx.chat.mail.clear(); // notices for members that are all gone
        self.free_closed();
        self.phase = Phase::Stopped;
    }
}
