//! Commands from other threads ([`crate::Controller`]): a listener's fault plan set or removed
//! at run time, for its new connections and, at once, for its existing ones.
//!
//! An existing plain echo connection is rebuilt around its socket as a faulty one (its byte
//! count carried over, its `p` draw the one it would have drawn at accept); a faulty one takes
//! the new plan, and becomes plain again when the plan is removed and left nothing behind (held
//! output, a stall, a FIN or reset on its way). Each changed connection is then served as if
//! readable and writable: a connection that resumes finds the input waiting for it.

use std::sync::Arc;
use std::time::Instant;

use super::Reactor;
use crate::behaviour::echo::Echo;
use crate::behaviour::{Conn, Other, Outcome, Role};
use crate::faults::stream::Faulty;
use crate::faults::{Faults, Rng};
use crate::listener::Listener;
use crate::transport::ws::Framed;
use crate::transport::{Plain, Wire};

impl Reactor {
    /// Applies the commands waiting in the inbox, answering each.
    #[inline(never)]
    pub(super) fn run_commands(&mut self) {
        let commands = self.inbox_lock().as_mut().map(std::mem::take).unwrap_or_default();
        for command in commands {
            let result = self.set_faults(command.listener, command.plan);
            let _ = command.done.send(result);
        }
    }

    /// Closes the inbox: later commands fail at once, and waiting ones are answered (dropped).
    pub(super) fn close_inbox(&mut self) {
        *self.inbox_lock() = None;
    }

    /// The inbox, locked (a poisoned lock is taken as it is: its contents are still whole).
    fn inbox_lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<crate::control::Command>>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_faults(&mut self, index: usize, plan: Option<Faults>) -> Result<(), String> {
        let seed = self.config.seed;
        match self.listeners.get_mut(index) {
            Some(Some(Listener::Udp(udp))) => {
                let rng = Rng::new(plan.as_ref().map_or(0, |p| p.seed_or(seed)), index, 0);
                udp.set_faults(plan, rng, &mut self.ctx.stats);
                if let Some(at) = udp.arm_at() {
                    self.arm_release(index, at);
                }
                Ok(())
            }
            Some(Some(Listener::Stream { role: Role::Echo, plan: slot, .. })) => {
                *slot = plan.map(Arc::new);
                let plan = slot.clone();
                let keys: Vec<usize> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| usize::from(c.life().listener) == index && !c.is_closed())
                    .map(|(key, _)| key)
                    .collect();
                for key in keys {
                    self.refault(key, index, plan.clone());
                }
                Ok(())
            }
            Some(Some(Listener::Stream { .. })) => {
                Err(format!("listener {index} is a chat room; chat rooms take no fault plan"))
            }
            Some(None) => Err(format!("listener {index} is closed: the server is shutting down")),
            None => Err(format!("there is no listener {index}")),
        }
    }

    /// Gives connection `key` of listener `index` its listener's new plan, then serves it.
    fn refault(&mut self, key: usize, index: usize, plan: Option<Arc<Faults>>) {
        let now = Instant::now();
        self.ctx.set_now(now);
        let (seed, cap) = (self.config.seed, self.config.max_pending);
        let slot = &mut self.conns[key];
        let life = *slot.life();
        let husk = || Conn::Echo(Echo::new(Plain::husk(), life));
        // The generator and draw it would have had at accept (see `admit`).
        let faulty = |wire, sent, plan: Arc<Faults>| {
            let rng = Rng::new(plan.seed_or(seed), index, u64::from(life.id));
            Faulty::new(wire, plan, rng, cap, now, sent)
        };
        match (&mut *slot, plan) {
            (Conn::Echo(_), None) => return, // plain already
            (Conn::Echo(_), Some(plan)) => {
                let Conn::Echo(echo) = std::mem::replace(slot, husk()) else { unreachable!() };
                let echo =
                    echo.map_io(|plain, sent| Framed::Raw(faulty(Wire::Plain(plain), sent, plan)));
                *slot = Conn::other(Other::FaultyEcho(Box::new(echo)));
            }
            (Conn::Other(other), plan) => match (&mut **other, plan) {
                (Other::Echo(_), Some(plan)) => {
                    let Some(Other::Echo(echo)) = take_other(slot, husk()) else { unreachable!() };
                    let echo = echo.map_io(|wire, sent| Framed::Raw(faulty(wire, sent, plan)));
                    *slot = Conn::other(Other::FaultyEcho(Box::new(echo)));
                }
                (Other::WsEcho(_), Some(plan)) => {
                    let Some(Other::WsEcho(echo)) = take_other(slot, husk()) else {
                        unreachable!()
                    };
                    // The plan goes under the framing, counting the bytes written under it
                    // since the upgrade.
                    let echo = echo.map_io(|ws, _| {
                        Framed::Ws(Box::new(ws.map_inner(|wire, wrote| faulty(wire, wrote, plan))))
                    });
                    *slot = Conn::other(Other::FaultyEcho(Box::new(echo)));
                }
                (Other::FaultyEcho(echo), plan) => {
                    let io = echo.io.inner_mut();
                    io.set_now(now);
                    io.set_plan(plan);
                    if io.is_spent() {
                        let Some(Other::FaultyEcho(echo)) = take_other(slot, husk()) else {
                            unreachable!()
                        };
                        *slot = without_plan(*echo);
                    }
                }
                (Other::Echo(_) | Other::WsEcho(_), None) | (Other::Chat(_), _) => return,
                // It takes its listener's plan as it is when its PROXY header has come.
                (Other::Proxy(_), _) => return,
            },
        }
        // Not through `serve_conn`: a second inlined copy of the plain echo's event path costs
        // that path its inlining, and instructions per message (callgrind).
        let outcome = match &mut self.conns[key] {
            Conn::Echo(echo) => match echo.on_writable(&mut self.ctx) {
                Outcome::Idle => echo.on_readable(&mut self.ctx, 0),
                other => other,
            },
            Conn::Other(other) => match **other {
                Other::FaultyEcho(_) => return self.serve_faulty(key, true, true, false),
                _ => return self.serve_other(key, true, true, false),
            },
        };
        self.apply(key, outcome);
    }
}

/// Takes the `Other` out of `slot`, leaving `husk` there for the caller to replace.
fn take_other(slot: &mut Conn, husk: Conn) -> Option<Other> {
    match std::mem::replace(slot, husk) {
        Conn::Other(other) => Some(*other),
        Conn::Echo(_) => None,
    }
}

/// An echo whose fault plan is spent, as the connection it was before the plan: plain, TLS or
/// WebSocket.
fn without_plan(echo: Echo<Framed<Faulty<Wire>>>) -> Conn {
    if matches!(echo.io, Framed::Ws(_)) {
        let echo = echo.map_io(|framed, _| match framed {
            Framed::Ws(ws) => ws.map_inner(|faulty, _| faulty.into_inner()),
            Framed::Raw(_) => unreachable!("matched above"),
        });
        return Conn::other(Other::WsEcho(echo));
    }
    let echo = echo.map_io(|framed, _| match framed {
        Framed::Raw(faulty) => faulty.into_inner(),
        Framed::Ws(_) => unreachable!("matched above"),
    });
    match echo.io {
        Wire::Plain(_) => Conn::Echo(echo.map_io(|wire, _| match wire {
            Wire::Plain(plain) => plain,
            Wire::Tls(_) | Wire::Ws(_) => unreachable!("matched above"),
        })),
        Wire::Tls(_) | Wire::Ws(_) => Conn::other(Other::Echo(echo)),
    }
}
