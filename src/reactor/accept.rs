//! Serving listeners' readiness (accept batches, UDP echo), admitting connections with the
//! listener's role, and closing listeners for a drain. The listeners themselves, and how they are
//! built from the config, are `listener.rs`'s.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::{Interest, Token};

use super::peers::Handoff;
use super::{Reactor, CONN_BASE};
use crate::behaviour::chat::Member;
use crate::behaviour::echo::Echo;
use crate::behaviour::{Awaiting, Conn, Life, Other, Role};
use crate::faults::stream::Faulty;
use crate::faults::Rng;
use crate::listener::{self, AcceptBackoff, Listener, StreamListener};
use crate::transport::tls_session::Tls;
use crate::transport::ws::{self, Framed};
use crate::transport::{Plain, Stream, Wire};

impl Reactor {
    pub(super) fn serve_listener(
        &mut self,
        index: usize,
        readable: bool,
        writable: bool,
        now: Instant,
    ) {
        match self.listeners.get_mut(index) {
            Some(Some(Listener::Udp(udp))) => {
                if writable {
                    udp.flush(&mut self.ctx.stats);
                }
                if !readable {
                    return;
                }
                let batch = self.udp_batch.as_mut().expect("a UDP listener has its batch");
                let more = udp.on_readable(batch, &mut self.ctx.stats);
                if let Some(at) = udp.arm_at() {
                    self.arm_release(index, at);
                }
                if more {
                    self.requeue_listener(index);
                }
            }
            Some(Some(_)) if readable => self.accept_from(index, now),
            _ => {} // closed for the drain, or a writable-only event
        }
    }

    #[inline(never)]
    pub(super) fn accept_from(&mut self, index: usize, now: Instant) {
        if self.backoff.paused(now) {
            return; // retried for every listener when the pause ends
        }
        for _ in 0..self.config.accept_batch {
            let Some(Some(Listener::Stream { socket: Some(socket), .. })) =
                self.listeners.get(index)
            else {
                return;
            };
            match socket.accept() {
                Ok(stream) => {
                    self.backoff.succeed();
                    self.admit(stream, index, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if listener::is_per_connection(&e) => {}
                Err(e) => {
                    self.ctx.stats.accept_errors += 1;
                    let pause = self.backoff.fail(Instant::now());
                    if self.config.log_stderr && pause == AcceptBackoff::FIRST {
                        crate::output::stderr_line(&format!(
                            "ricochet: accept failed ({e}); pausing accepts, retrying with backoff"
                        ));
                    }
                    return;
                }
            }
        }
        // The batch cap was reached: more may be waiting, and no new edge will say so.
        self.requeue_listener(index);
    }

    /// A connection accepted on listener `index`: refused over `max_conns` (process-wide), else
    /// given to the least loaded reactor (chat members too: rooms span reactors).
    fn admit(&mut self, stream: Stream, index: usize, now: Instant) {
        let load = match &self.peers {
            Some(peers) => peers.total_load(),
            None => self.conns.len(),
        };
        if self.config.max_conns.is_some_and(|max| load >= max) {
            self.ctx.stats.rejected += 1;
            self.by_listener[index].rejected += 1;
            self.by_listener_changed = true;
            stream.shutdown_write();
            return; // dropped: closed at once
        }
        let id = self.next_id;
        self.next_id += 1;
        let Some(peers) = self.peers.clone() else {
            return self.adopt(stream, index, id, now);
        };
        let to = peers.take_least_loaded();
        if to == self.index {
            self.adopt(stream, index, id, now);
        } else {
            peers.hand_over(to, Handoff { stream, listener: index, id });
        }
    }

    /// Serves the connections the first reactor handed this one.
    #[inline(never)]
    pub(super) fn adopt_handoffs(&mut self) {
        let Some(peers) = self.peers.clone() else { return };
        let now = Instant::now();
        self.ctx.set_now(now);
        for handoff in peers.take_handoffs(self.index) {
            self.adopt(handoff.stream, handoff.listener, handoff.id, now);
        }
    }

    /// Makes `stream`, accepted on listener `index` as connection number `id`, one of this
    /// reactor's connections, with the listener's behaviour, fault plan and TLS (once its PROXY
    /// protocol header has come, if the listener wants one).
    fn adopt(&mut self, stream: Stream, index: usize, id: u64, now: Instant) {
        let Some(Some(Listener::Stream { tls, websocket, proxy, .. })) = self.listeners.get(index)
        else {
            return self.refuse(stream); // closed for a drain since
        };
        let (handshake, proxy) = (tls.is_some() || *websocket || proxy.is_some(), *proxy);
        listener::configure_accepted(&stream, &self.config);
        let key = self.conns.vacant_entry().key();
        let life = Life::new(id, self.ctx.clock.tick(now), index as u16);
        let mut io = Plain::new(stream);
        let registered = self.poll.registry().register(
            crate::transport::Transport::source(&mut io),
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.ctx.stats.accept_errors += 1;
            return self.release_load();
        }
        let conn = match proxy {
            Some(version) => Conn::other(Other::Proxy(Awaiting::new(io, life, version))),
            None => match self.make_conn(io, life, key, now, None) {
                Ok(conn) => conn,
                Err(_) => return self.release_load(), // its descriptor leaves the poll with it
            },
        };
        let inserted = self.conns.insert(conn);
        debug_assert_eq!(inserted, key, "the slab fills the entry it offered");
        self.ctx.stats.accepted += 1;
        self.ctx.stats.active += 1;
        let counted = &mut self.by_listener[index];
        counted.accepted += 1;
        counted.active += 1;
        self.by_listener_changed = true;
        if let Some(idle) = self.config.idle_timeout {
            self.arm(key, now + idle, crate::timer::Kind::Idle);
        }
        if handshake {
            // One deadline from accept for the PROXY header and the TLS and WebSocket
            // handshakes. The clock afresh: `now` is stale on a turn that was not clocked
            // (nothing armed), and a deadline from it could already be due after a quiet spell.
            let at = Instant::now() + self.config.handshake_timeout;
            self.arm(key, at, crate::timer::Kind::Handshake);
        }
    }

    /// The connection over `io` (registered as `key`) that its listener serves: echo or chat,
    /// over TLS and WebSocket if the listener speaks them, through its fault plan if it has one.
    /// `io` back if its TLS session could not be made (counted) or the listener is gone.
    /// `source`: the client's address from a PROXY protocol header, when it gave one.
    pub(super) fn make_conn(
        &mut self,
        io: Plain,
        life: Life,
        key: usize,
        now: Instant,
        source: Option<SocketAddr>,
    ) -> Result<Conn, Plain> {
        let index = usize::from(life.listener);
        let Some(Some(Listener::Stream { role, plan, tls, websocket, .. })) =
            self.listeners.get(index)
        else {
            return Err(io);
        };
        let (role, plan, tls, websocket) = (*role, plan.clone(), tls.clone(), *websocket);
        // A chat member can say where it is (`/whoami`); an echo connection keeps nothing.
        let from = match role {
            Role::Chat { .. } => source.or_else(|| io.peer_addr()),
            Role::Echo => None,
        };
        let wire = match tls {
            None => Wire::Plain(io),
            // The TLS records it may hold unsent: a quarter of the cap, the rest for the echo.
            Some(config) => match Tls::new(io, config, self.config.max_pending / 4) {
                Ok(tls) => Wire::Tls(Box::new(tls)),
                Err(io) => {
                    self.ctx.stats.tls_failures += 1;
                    return Err(io);
                }
            },
        };
        // WebSocket framing goes over the wire, or over the fault plan on the wire: a plan acts
        // on the bytes under the framing.
        let framing = websocket.then_some(match role {
            Role::Echo => ws::Mode::Echo,
            Role::Chat { .. } => ws::Mode::Lines,
        });
        // At most 1 GiB (the configuration is checked), so it fits.
        let max_message = u32::try_from(self.config.max_message).unwrap_or(u32::MAX);
        let conn = match (role, plan, wire) {
            (Role::Echo, None, Wire::Plain(io)) if framing.is_none() => {
                Conn::Echo(Echo::new(io, life))
            }
            (Role::Echo, Some(plan), wire) => {
                // One draw per connection decides whether `p` makes it faulty: reproducible from
                // the seed, the listener and the connection's number.
                let rng = Rng::new(plan.seed_or(self.config.seed), index, u64::from(life.id));
                let max_pending = self.config.max_pending;
                let io = match framing {
                    None => Framed::Raw(Faulty::new(wire, plan, rng, max_pending, now, 0)),
                    Some(mode) => {
                        let faulty = Faulty::under_upgrade(wire, plan, rng, max_pending, now);
                        Framed::Ws(Box::new(ws::Ws::new(faulty, mode, max_message)))
                    }
                };
                Conn::other(Other::FaultyEcho(Box::new(Echo::new(io, life))))
            }
            (Role::Echo, None, wire) => match framing {
                None => Conn::other(Other::Echo(Echo::new(wire, life))),
                Some(mode) => {
                    let ws = ws::Ws::new(wire, mode, max_message);
                    Conn::other(Other::WsEcho(Echo::new(ws, life)))
                }
            },
            (Role::Chat { room }, _, wire) => {
                let wire = match framing {
                    None => wire,
                    Some(mode) => Wire::Ws(Box::new(ws::Ws::new(wire, mode, max_message))),
                };
                let member = Member::join(wire, life, key, room, from, &mut self.ctx);
                Conn::other(Other::Chat(Box::new(member)))
            }
        };
        Ok(conn)
    }

    /// A handed-over connection this reactor cannot serve: closed at once.
    fn refuse(&mut self, stream: Stream) {
        stream.shutdown_write();
        self.release_load();
    }

    /// One connection fewer on this reactor (for the hand-off's least-loaded choice).
    pub(super) fn release_load(&self) {
        if let Some(peers) = &self.peers {
            peers.release(self.index);
        }
    }

    /// Arms a deadline for UDP listener `index`'s next delayed reply.
    pub(super) fn arm_release(&mut self, index: usize, at: Instant) {
        let kind = crate::timer::Kind::Release;
        self.timers.arm(crate::timer::Deadline { at, key: index, id: 0, seq: 0, kind });
    }

    /// A UDP listener's release deadline: send the delayed replies that are due.
    pub(super) fn release_udp(&mut self, index: usize, now: Instant) {
        let Some(Some(Listener::Udp(udp))) = self.listeners.get_mut(index) else { return };
        udp.release(now, &mut self.ctx.stats);
        if let Some(at) = udp.arm_at() {
            self.arm_release(index, at);
        }
    }

    pub(super) fn close_listeners(&mut self) {
        for slot in &mut self.listeners {
            if let Some(mut listener) = slot.take() {
                if let Some(source) = listener.source() {
                    let _ = self.poll.registry().deregister(source);
                }
                if let Listener::Stream { socket: Some(StreamListener::Unix(_, file)), .. } =
                    &listener
                {
                    file.remove();
                }
            }
        }
    }
}
