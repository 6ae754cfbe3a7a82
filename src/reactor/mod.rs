//! The poll loop: one thread, edge-triggered mio, every socket kind.
//!
//! Tokens: [`WAKER`] and [`SIGNALS`] are fixed; listener `i` is `LISTENER_BASE + i`; connection
//! `key` of the slab is `CONN_BASE + key`.
//!
//! One turn: poll (timeout = nearest deadline, zero if the ready queue has work) → serve each
//! event → serve the ready queue (connections and listeners that stopped at their budget: no new
//! edge would come for them) → fire due deadlines → deliver chat mail and flush the members it
//! reached → free connections closed during the turn (removed and closed: a key is never
//! reused within the batch that closed it) → publish the counters.
//!
//! A connection is a [`Conn`]: its behaviour (echo, chat member) is matched once per event; the
//! plain echo keeps its fast path. Listeners (accept, admit, UDP) are in `accept.rs`; deadlines,
//! the drain and the stop in `lifecycle.rs`; chat delivery in `fanout.rs`.

mod accept;
mod commands;
mod fanout;
mod lifecycle;
mod other;
pub(crate) mod peers;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::behaviour::chat::{ChatCtx, Directory, Room};
use crate::behaviour::{CloseReason, Conn, Ctx, Other, Outcome};
use crate::buffer::{Aligned, BufferPool};
use crate::config::{Config, ListenSpec};
use crate::control::Inbox;
use crate::error::{Error, Result};
use crate::listener::{self, AcceptBackoff, Listener};
use crate::signals::Signals;
use crate::stats::{ListenerStats, SharedStats, State, Stats};
use crate::timer::{Clock, Deadline, Kind, Tick, Timers};
use crate::udp::Batch;
use peers::Peers;

pub(crate) const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 2;
const CONN_BASE: usize = 1 << 16;

/// Commands from [`crate::Handle`], delivered through the waker.
pub(crate) const CMD_NONE: u8 = 0;
pub(crate) const CMD_DRAIN: u8 = 1;
pub(crate) const CMD_STOP: u8 = 2;

/// Freed output blocks kept for reuse.
const POOL_BLOCKS: usize = 64;

/// The most connection slots a reactor reserves up front (64 MiB of address space).
const MAX_RESERVED_SLOTS: usize = 1 << 20;

/// Connection slots to reserve: this reactor's share of the most connections the server can hold
/// (`--max-conns`, else the open-file limit). Address space only: the kernel backs a page when a
/// connection first uses it, so an idle connection costs its 64-byte slot and nothing more. A
/// slab grown by doubling instead copies itself each time, and the blocks it leaves behind stay
/// in the allocator: 100-124 bytes per connection at 5 000 (scripts/conn-memory.py).
fn reserved_slots(config: &Config) -> usize {
    let most = config.max_conns.or_else(crate::sys::open_file_limit).unwrap_or(1024);
    most.min(MAX_RESERVED_SLOTS).div_ceil(config.reactors())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining { deadline: Instant },
    Stopped,
}

/// The reactor and everything it owns.
#[derive(Debug)]
pub(crate) struct Reactor {
    poll: Poll,
    config: Config,
    listeners: Vec<Option<Listener>>,
    /// Listener `i` is in the ready queue.
    listener_queued: Vec<bool>,
    conns: Slab<Conn>,
    /// Read buffer, buffer pool, counters, limits and the turn's time, lent to connections.
    ctx: Ctx,
    udp_batch: Option<Box<Batch>>,
    shared: Arc<SharedStats>,
    /// Each listener's connection counters on this reactor, published when they change.
    by_listener: Vec<ListenerStats>,
    by_listener_changed: bool,
    control: Arc<AtomicU8>,
    /// Fault plan changes from other threads, applied at the waker's event.
    inbox: Inbox,
    signals: Option<Signals>,
    ready: VecDeque<Token>,
    closed: Vec<usize>,
    timers: Timers,
    backoff: AcceptBackoff,
    phase: Phase,
    next_id: u64,
    next_stats: Option<Instant>,
    /// This reactor's place among its server's reactors (0: the one that accepts).
    index: usize,
    /// The other reactors, when there are several.
    peers: Option<Arc<Peers>>,
}

// The loop, its dispatch, and the steps every serving path shares (apply an outcome, close, free,
// arm a deadline) stay together here, about 320 lines; accepting, the lifecycle, commands, chat
// fan-out, the peers and the serving of the connections other than the plain echo are each a
// file of their own beside it.
impl Reactor {
    /// The first (or only) reactor: binds every listener (concrete addresses come back in the same
    /// order as the config's) and accepts every stream connection. `tls`: the TLS listeners'
    /// server config (present when there is one).
    pub(crate) fn bind(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<(Reactor, Vec<ListenSpec>, Arc<Waker>)> {
        // `Server::bind`, the only caller, has checked the config.
        let specs = config.listeners.clone();
        Reactor::build(config, tls, &specs, 0)
    }

    /// Reactor `index` (> 0) of several: given the listeners' concrete addresses, it opens its
    /// own SO_REUSEPORT socket for each UDP listener and serves the stream connections the first
    /// reactor hands it.
    pub(crate) fn follower(
        mut config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        addrs: &[ListenSpec],
        index: usize,
    ) -> Result<(Reactor, Arc<Waker>)> {
        config.handle_signals = false; // the first reactor takes the signals for all
        let (reactor, _, waker) = Reactor::build(config, tls, addrs, index)?;
        Ok((reactor, waker))
    }

    fn build(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        specs: &[ListenSpec],
        index: usize,
    ) -> Result<(Reactor, Vec<ListenSpec>, Arc<Waker>)> {
        let poll = Poll::new().map_err(Error::io("creating the poll instance"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::io("creating the waker"))?);
        let built = listener::build(&config, tls.as_ref(), specs, index)?;
        let mut listeners = Vec::with_capacity(built.listeners.len());
        for (i, mut listener) in built.listeners.into_iter().enumerate() {
            let interest = match listener {
                Listener::Udp(_) => Interest::READABLE | Interest::WRITABLE,
                _ => Interest::READABLE,
            };
            if let Some(source) = listener.source() {
                poll.registry()
                    .register(source, Token(LISTENER_BASE + i), interest)
                    .map_err(Error::io("registering a listener"))?;
            }
            listeners.push(Some(listener));
        }
        let history = config.chat_history;
        let (addrs, rooms) = (built.addrs, (0..built.rooms).map(|_| Room::new(history)).collect());
        let signals = if config.handle_signals {
            Some(
                Signals::register(poll.registry(), SIGNALS)
                    .map_err(Error::io("installing signal handlers"))?,
            )
        } else {
            None
        };
        let udp_batch = addrs.iter().any(ListenSpec::is_udp).then(Batch::new);
        let epoch = Instant::now();
        let reactor = Reactor {
            poll,
            ctx: Ctx {
                buf: Aligned::zeroed(config.read_buffer),
                pool: BufferPool::new(POOL_BLOCKS),
                stats: Stats::default(),
                cap: config.max_pending,
                budget: config.turn_budget,
                now: Instant::now(),
                tick: Tick::default(),
                clock: Clock::new(epoch),
                chat: ChatCtx {
                    rooms,
                    max_line: config.max_line,
                    delivered: vec![0; built.rooms],
                    linger: config.chat_linger,
                    ..ChatCtx::default()
                },
            },
            listener_queued: vec![false; listeners.len()],
            by_listener: vec![ListenerStats::default(); listeners.len()],
            by_listener_changed: true,
            listeners,
            conns: Slab::with_capacity(reserved_slots(&config)),
            udp_batch,
            shared: Arc::new(SharedStats::default()),
            control: Arc::new(AtomicU8::new(CMD_NONE)),
            inbox: Arc::new(Mutex::new(Some(Vec::new()))),
            signals,
            ready: VecDeque::new(),
            closed: Vec::new(),
            timers: Timers::new(epoch),
            backoff: AcceptBackoff::new(),
            phase: Phase::Running,
            next_id: 0,
            next_stats: None,
            index,
            peers: None,
            config,
        };
        Ok((reactor, addrs, waker))
    }

    /// Joins this reactor to the others of its server: their hand-offs, relays and commands,
    /// and the first reactor's room directories (a room's names are the same everywhere).
    pub(crate) fn join(&mut self, peers: Arc<Peers>, rooms: &[Arc<Mutex<Directory>>]) {
        self.peers = Some(peers);
        for (room, dir) in self.ctx.chat.rooms.iter_mut().zip(rooms) {
            room.dir = Arc::clone(dir);
        }
    }

    /// Each room's directory.
    pub(crate) fn room_directories(&self) -> Vec<Arc<Mutex<Directory>>> {
        self.ctx.chat.rooms.iter().map(|room| Arc::clone(&room.dir)).collect()
    }

    pub(crate) fn shared_stats(&self) -> Arc<SharedStats> {
        Arc::clone(&self.shared)
    }

    pub(crate) fn control(&self) -> Arc<AtomicU8> {
        Arc::clone(&self.control)
    }

    pub(crate) fn inbox(&self) -> Inbox {
        Arc::clone(&self.inbox)
    }

    /// Runs until a shutdown completes; returns the final counters.
    pub(crate) fn run(&mut self) -> Result<Stats> {
        let mut events = Events::with_capacity(1024);
        let mut now = Instant::now();
        self.shared.set_state(State::Running);
        self.next_stats = self.config.stats_interval.map(|every| now + every);
        while self.phase != Phase::Stopped {
            // The clock is read only when a deadline needs it: most turns of a busy server
            // without timeouts never look at it. Paths that start a deadline read it afresh.
            // Nothing that `needs_clock` looks at changes while the reactor waits in poll.
            let clocked = self.needs_clock();
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else if clocked {
                now = Instant::now();
                self.poll_timeout(now)
            } else {
                None
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Io { context: "polling", cause: e });
            }
            if clocked {
                now = Instant::now();
                self.ctx.set_now(now);
            }
            for event in events.iter() {
                self.dispatch(event, now);
            }
            if !self.ready.is_empty() {
                self.serve_ready(now);
            }
            // Unclocked, nothing is armed: anything armed during this turn lies in the future,
            // and the next turn is clocked.
            if clocked {
                self.fire_deadlines(now);
            }
            if self.chat_owed() {
                self.flush_chat();
            }
            if !self.closed.is_empty() {
                self.free_closed();
            }
            if matches!(self.phase, Phase::Draining { .. }) && self.conns.is_empty() {
                self.phase = Phase::Stopped;
            }
            self.shared.publish(&self.ctx.stats);
            if self.by_listener_changed {
                self.publish_listeners();
            }
        }
        self.close_listeners();
        self.close_inbox();
        self.shared.publish(&self.ctx.stats);
        self.publish_listeners();
        self.shared.set_state(State::Stopped);
        if let Some(peers) = &self.peers {
            // Whatever was handed over after this reactor stopped is closed, not leaked.
            for handoff in peers.take_handoffs(self.index) {
                handoff.stream.shutdown_write();
            }
        }
        Ok(self.ctx.stats)
    }

    /// Whether anything time-based is armed or configured: deadlines, an accept pause, stats
    /// lines, a drain, or an idle timeout (connections are then stamped with the time).
    fn needs_clock(&self) -> bool {
        self.config.idle_timeout.is_some()
            || !self.timers.is_empty()
            || self.backoff.until().is_some()
            || self.next_stats.is_some()
            || self.phase != Phase::Running
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let drain = match self.phase {
            Phase::Draining { deadline } => Some(deadline),
            _ => None,
        };
        [self.timers.next_at(), self.backoff.until(), drain, self.next_stats]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        match event.token() {
            WAKER => {
                self.adopt_handoffs();
                self.adopt_relayed();
                self.run_commands();
                match self.control.swap(CMD_NONE, Ordering::AcqRel) {
                    CMD_DRAIN => self.begin_drain(),
                    CMD_STOP => self.stop_now(),
                    _ => {}
                }
            }
            SIGNALS => self.on_signals(),
            Token(t) if t >= CONN_BASE => {
                let read_closed = event.is_read_closed();
                let readable = read_closed || event.is_readable() || event.is_error();
                self.serve_conn(t - CONN_BASE, readable, event.is_writable(), read_closed);
            }
            Token(t) => {
                let readable = event.is_readable() || event.is_error();
                self.serve_listener(t - LISTENER_BASE, readable, event.is_writable(), now)
            }
        }
    }

    #[inline(never)]
    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else { return };
        for signal in signals.pending() {
            match self.phase {
                Phase::Running => {
                    if self.config.log_stderr {
                        crate::output::stderr_line(&format!(
                            "ricochet: {}: closing listeners, draining {} connection(s) for up to {}",
                            crate::signals::name(signal),
                            self.conns.len(),
                            humantime::format_duration(self.config.drain_timeout)
                        ));
                    }
                    self.begin_drain();
                }
                _ => {
                    if self.config.log_stderr {
                        crate::output::stderr_line(&format!(
                            "ricochet: second signal ({}): closing {} connection(s) now",
                            crate::signals::name(signal),
                            self.conns.len()
                        ));
                    }
                    self.stop_now();
                }
            }
        }
    }

    #[inline(always)]
    fn serve_conn(&mut self, key: usize, readable: bool, writable: bool, read_closed: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let ctx = &mut self.ctx;
        let outcome = match conn {
            Conn::Echo(conn) => match conn.on_event(ctx, readable, writable, read_closed) {
                Some(outcome) => outcome,
                None => return, // a stale event for a connection closed earlier in this batch
            },
            Conn::Other(other) => match **other {
                Other::FaultyEcho(_) => {
                    return self.serve_faulty(key, readable, writable, read_closed)
                }
                Other::WsEcho(_) => {
                    return self.serve_ws_echo(key, readable, writable, read_closed)
                }
                _ => return self.serve_other(key, readable, writable, read_closed),
            },
        };
        self.apply(key, outcome);
    }

    // Always: left to the heuristics it was once not inlined into the plain echo's path after an
    // unrelated change, at 21 instructions per message (callgrind).
    #[inline(always)]
    fn apply(&mut self, key: usize, outcome: Outcome) {
        match outcome {
            Outcome::Idle => {}
            Outcome::MoreToRead => {
                let life = self.conns[key].life_mut();
                if !life.queued {
                    life.queued = true;
                    self.ready.push_back(Token(CONN_BASE + key));
                }
            }
            Outcome::Close(reason) => self.close(key, reason),
        }
    }

    /// Marks a connection closed; it is freed after the current batch.
    #[inline(never)]
    fn close(&mut self, key: usize, mut reason: CloseReason) {
        let conn = &mut self.conns[key];
        if conn.is_closed() {
            return;
        }
        if let Some(ws) = conn.ws_mut() {
            if reason == CloseReason::Reset && ws.client_closed() {
                // The client sent its close and then reset rather than wait for ours (RFC 6455
                // asks it to wait; many clients do not): the session ended cleanly, whether the
                // reset showed on its own read or on a chat delivery's write.
                reason = CloseReason::Eof;
            }
            ws.last_word(reason.ws_close_code()); // the close frame says why
        }
        conn.close(&mut self.ctx, reason);
        for (room, at) in self.ctx.chat.lingers.drain(..) {
            let deadline =
                crate::timer::Deadline { at, key: room, id: 0, seq: 0, kind: Kind::Linger };
            self.timers.arm(deadline);
        }
        self.by_listener[conn.life().listener as usize].closed += 1;
        self.by_listener_changed = true;
        self.closed.push(key);
        let stats = &mut self.ctx.stats;
        stats.closed += 1;
        match reason {
            CloseReason::Reset => stats.resets += 1,
            CloseReason::IdleTimeout => stats.idle_timeouts += 1,
            CloseReason::DrainAborted => stats.drain_aborted += 1,
            CloseReason::Slow => stats.slow_members += 1,
            CloseReason::ProxyRefused => stats.proxy_refused += 1,
            CloseReason::FaultReset
            | CloseReason::HandshakeFailure
            | CloseReason::Eof
            | CloseReason::Drained
            | CloseReason::LineTooLong
            | CloseReason::Replaced => {}
        }
    }

    /// Frees the connections closed during this turn: removed from the slab (whose key may then
    /// be reused), the socket closed. No `EPOLL_CTL_DEL` first: closing a socket's only
    /// descriptor takes it out of the epoll set (no connection socket is ever duplicated), and
    /// no event of this turn is left to read, so a connection costs one `epoll_ctl`, as in C.
    #[inline(never)]
    fn free_closed(&mut self) {
        for key in self.closed.drain(..) {
            let conn = self.conns.remove(key);
            self.by_listener[conn.life().listener as usize].active -= 1;
            self.ctx.stats.active -= 1;
            if let Some(peers) = &self.peers {
                peers.release(self.index);
            }
        }
    }

    /// Publishes each listener's connection counters (when they changed: not on every turn).
    #[inline(never)]
    fn publish_listeners(&mut self) {
        self.shared.publish_listeners(&self.by_listener);
        self.by_listener_changed = false;
    }

    fn arm(&mut self, key: usize, at: Instant, kind: Kind) {
        let life = self.conns[key].life();
        self.timers.arm(Deadline { at, key, id: life.id, seq: life.timer_seq, kind });
    }

    /// Puts listener `index` on the ready queue (once): it stopped with work left.
    fn requeue_listener(&mut self, index: usize) {
        if !self.listener_queued[index] {
            self.listener_queued[index] = true;
            self.ready.push_back(Token(LISTENER_BASE + index));
        }
    }

    #[inline(never)]
    fn serve_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some(Token(t)) = self.ready.pop_front() else { break };
            if t < CONN_BASE {
                let index = t - LISTENER_BASE;
                self.listener_queued[index] = false;
                self.serve_listener(index, true, false, now);
                continue;
            }
            let key = t - CONN_BASE;
            let Some(conn) = self.conns.get_mut(key) else { continue };
            conn.life_mut().queued = false;
            if conn.is_closed() {
                continue;
            }
            let outcome = conn.resume(&mut self.ctx);
            self.apply(key, outcome);
        }
    }
}
