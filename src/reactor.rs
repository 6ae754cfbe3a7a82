//! The poll loop: one thread, edge-triggered mio, every socket kind.
//!
//! Tokens: [`WAKER`] and [`SIGNALS`] are fixed; listener `i` is `LISTENER_BASE + i`; connection
//! `key` of the slab is `CONN_BASE + key`.
//!
//! One turn: poll (timeout = nearest deadline, zero if the ready queue has work) → serve each
//! event → serve the ready queue (connections and listeners that stopped at their budget: no new
//! edge would come for them) → fire due deadlines → free connections closed during the turn
//! (deregister, then remove: a key is never reused within the batch that closed it) → publish
//! the counters.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffer::BufferPool;
use crate::config::{Config, ListenSpec};
use crate::connection::{CloseReason, Connection, Ctx, Outcome, State, Stream};
use crate::error::{Error, Result};
use crate::listener::{self, AcceptBackoff, SocketFile};
use crate::signals::Signals;
use crate::stats::{SharedStats, Stats};
use crate::timer::{Deadline, Timers};
use crate::udp::{Batch, UdpEcho};

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

#[derive(Debug)]
enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener, SocketFile),
    Udp(UdpEcho),
}

impl Listener {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l, _) => l,
            Listener::Udp(u) => &mut u.socket,
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Udp(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
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
    conns: Slab<Connection>,
    /// Read buffer, buffer pool, counters, limits and the turn's time, lent to connections.
    ctx: Ctx,
    udp_batch: Option<Box<Batch>>,
    shared: Arc<SharedStats>,
    control: Arc<AtomicU8>,
    signals: Option<Signals>,
    ready: VecDeque<Token>,
    closed: Vec<usize>,
    timers: Timers,
    backoff: AcceptBackoff,
    phase: Phase,
    next_id: u64,
    next_stats: Option<Instant>,
}

impl Reactor {
    /// Binds every listener (concrete addresses come back in the same order as the config's).
    pub(crate) fn bind(config: Config) -> Result<(Reactor, Vec<ListenSpec>, Arc<Waker>)> {
        config.check()?;
        let poll = Poll::new().map_err(Error::io("creating the poll instance"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::io("creating the waker"))?);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut addrs = Vec::with_capacity(config.listeners.len());
        for (i, spec) in config.listeners.iter().enumerate() {
            let (mut listener, addr) = match spec {
                ListenSpec::Tcp(addr) => {
                    let l = listener::bind_tcp(*addr, &config)?;
                    let local =
                        l.local_addr().map_err(Error::io("reading a TCP listener's address"))?;
                    (Listener::Tcp(l), ListenSpec::Tcp(local))
                }
                ListenSpec::Udp(addr) => {
                    let socket = crate::udp::bind(*addr, &config)?;
                    let local =
                        socket.local_addr().map_err(Error::io("reading a UDP socket's address"))?;
                    (
                        Listener::Udp(UdpEcho::new(socket, config.udp_allow_low_ports)),
                        ListenSpec::Udp(local),
                    )
                }
                ListenSpec::Unix(path) => {
                    let (l, file) = listener::bind_unix(path, &config)?;
                    (Listener::Unix(l, file), ListenSpec::Unix(path.clone()))
                }
            };
            let interest = match listener {
                Listener::Udp(_) => Interest::READABLE | Interest::WRITABLE,
                _ => Interest::READABLE,
            };
            poll.registry()
                .register(listener.source(), Token(LISTENER_BASE + i), interest)
                .map_err(Error::io("registering a listener"))?;
            listeners.push(Some(listener));
            addrs.push(addr);
        }
        let signals = if config.handle_signals {
            Some(
                Signals::register(poll.registry(), SIGNALS)
                    .map_err(Error::io("installing signal handlers"))?,
            )
        } else {
            None
        };
        let udp_batch = addrs.iter().any(|a| matches!(a, ListenSpec::Udp(_))).then(Batch::new);
        let reactor = Reactor {
            poll,
            ctx: Ctx {
                buf: vec![0; config.read_buffer].into_boxed_slice(),
                pool: BufferPool::new(POOL_BLOCKS),
                stats: Stats::default(),
                cap: config.max_pending,
                budget: config.turn_budget,
                now: Instant::now(),
            },
            listeners,
            conns: Slab::new(),
            udp_batch,
            shared: Arc::new(SharedStats::default()),
            control: Arc::new(AtomicU8::new(CMD_NONE)),
            signals,
            ready: VecDeque::new(),
            closed: Vec::new(),
            timers: Timers::new(),
            backoff: AcceptBackoff::new(),
            phase: Phase::Running,
            next_id: 0,
            next_stats: None,
            config,
        };
        Ok((reactor, addrs, waker))
    }

    pub(crate) fn shared_stats(&self) -> Arc<SharedStats> {
        Arc::clone(&self.shared)
    }

    pub(crate) fn control(&self) -> Arc<AtomicU8> {
        Arc::clone(&self.control)
    }

    /// Runs until a shutdown completes; returns the final counters.
    pub(crate) fn run(&mut self) -> Result<Stats> {
        let mut events = Events::with_capacity(1024);
        let mut now = Instant::now();
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
                return Err(Error::Io { context: "polling", source: e });
            }
            if clocked {
                now = Instant::now();
                self.ctx.now = now;
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
            if !self.closed.is_empty() {
                self.free_closed();
            }
            if matches!(self.phase, Phase::Draining { .. }) && self.conns.is_empty() {
                self.phase = Phase::Stopped;
            }
            self.shared.publish(&self.ctx.stats);
        }
        self.close_listeners();
        self.shared.publish(&self.ctx.stats);
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
            WAKER => match self.control.swap(CMD_NONE, Ordering::AcqRel) {
                CMD_DRAIN => self.begin_drain(),
                CMD_STOP => self.stop_now(),
                _ => {}
            },
            SIGNALS => self.on_signals(),
            Token(t) if t >= CONN_BASE => {
                let read_closed = event.is_read_closed();
                let readable = read_closed || event.is_readable() || event.is_error();
                self.serve_conn(t - CONN_BASE, readable, event.is_writable(), read_closed);
            }
            Token(t) => self.serve_listener(t - LISTENER_BASE, event.is_writable(), now),
        }
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else { return };
        for signal in signals.pending() {
            match self.phase {
                Phase::Running => {
                    if self.config.log_stderr {
                        eprintln!(
                            "ricochet: {}: closing listeners, draining {} connection(s) for up to {}",
                            crate::signals::name(signal),
                            self.conns.len(),
                            humantime::format_duration(self.config.drain_timeout)
                        );
                    }
                    self.begin_drain();
                }
                _ => {
                    if self.config.log_stderr {
                        eprintln!(
                            "ricochet: second signal ({}): closing {} connection(s) now",
                            crate::signals::name(signal),
                            self.conns.len()
                        );
                    }
                    self.stop_now();
                }
            }
        }
    }

    fn serve_conn(&mut self, key: usize, readable: bool, writable: bool, read_closed: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let ctx = &mut self.ctx;
        if conn.state() == State::Closed {
            return; // a stale event for a connection closed earlier in this batch
        }
        if read_closed {
            conn.note_read_closed();
        }
        let mut outcome = Outcome::Idle;
        // mio reports writable with nearly every event; it matters only when output is owed
        // (a connection whose writes were refused always has output pending).
        if writable && conn.pending() > 0 {
            outcome = conn.on_writable(ctx);
        }
        if readable && outcome == Outcome::Idle {
            outcome = match conn.fast_echo(ctx) {
                Some(outcome) => outcome,
                None => conn.on_readable(ctx),
            };
        }
        self.apply(key, outcome);
    }

    #[inline]
    fn apply(&mut self, key: usize, outcome: Outcome) {
        match outcome {
            Outcome::Idle => {}
            Outcome::MoreToRead => {
                let conn = &mut self.conns[key];
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(Token(CONN_BASE + key));
                }
            }
            Outcome::Close(reason) => self.close(key, reason),
        }
    }

    /// Marks a connection closed; it is freed after the current batch.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.conns[key];
        if conn.state() == State::Closed {
            return;
        }
        conn.close(&mut self.ctx.pool);
        self.closed.push(key);
        self.ctx.stats.closed += 1;
        match reason {
            CloseReason::Reset => self.ctx.stats.resets += 1,
            CloseReason::IdleTimeout => self.ctx.stats.idle_timeouts += 1,
            CloseReason::DrainAborted => self.ctx.stats.drain_aborted += 1,
            CloseReason::Eof | CloseReason::Drained => {}
        }
    }

    fn free_closed(&mut self) {
        for key in self.closed.drain(..) {
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(conn.stream.source());
            self.ctx.stats.active -= 1;
        }
    }

    fn serve_listener(&mut self, index: usize, writable: bool, now: Instant) {
        match self.listeners.get_mut(index) {
            Some(Some(Listener::Udp(udp))) => {
                let batch = self.udp_batch.as_mut().expect("a UDP listener has its batch");
                if writable {
                    udp.flush(&mut self.ctx.stats);
                }
                if udp.on_readable(batch, &mut self.ctx.stats) {
                    self.ready.push_back(Token(LISTENER_BASE + index));
                }
            }
            Some(Some(_)) => self.accept_from(index, now),
            _ => {} // closed for the drain
        }
    }

    fn accept_from(&mut self, index: usize, now: Instant) {
        if self.backoff.paused(now) {
            return; // retried for every listener when the pause ends
        }
        for _ in 0..self.config.accept_batch {
            let Some(Some(listener)) = self.listeners.get(index) else { return };
            match listener.accept() {
                Ok(stream) => {
                    self.backoff.succeed();
                    self.admit(stream, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if listener::is_per_connection(&e) => {}
                Err(e) => {
                    self.ctx.stats.accept_errors += 1;
                    let pause = self.backoff.fail(Instant::now());
                    if self.config.log_stderr && pause == AcceptBackoff::FIRST {
                        eprintln!(
                            "ricochet: accept failed ({e}); pausing accepts, retrying with backoff"
                        );
                    }
                    return;
                }
            }
        }
        // The batch cap was reached: more may be waiting, and no new edge will say so.
        self.ready.push_back(Token(LISTENER_BASE + index));
    }

    fn admit(&mut self, stream: Stream, now: Instant) {
        if self.config.max_conns.is_some_and(|max| self.conns.len() >= max) {
            self.ctx.stats.rejected += 1;
            stream.shutdown_write();
            return; // dropped: closed at once
        }
        listener::configure_accepted(&stream, &self.config);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Connection::new(stream, self.next_id, now);
        self.next_id += 1;
        let registered = self.poll.registry().register(
            conn.stream.source(),
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.ctx.stats.accept_errors += 1;
            return;
        }
        entry.insert(conn);
        self.ctx.stats.accepted += 1;
        self.ctx.stats.active += 1;
        if let Some(idle) = self.config.idle_timeout {
            self.arm(key, now + idle);
        }
    }

    fn arm(&mut self, key: usize, at: Instant) {
        let conn = &self.conns[key];
        self.timers.arm(Deadline { at, key, id: conn.id, seq: conn.timer_seq });
    }

    fn serve_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some(Token(t)) = self.ready.pop_front() else { break };
            if t < CONN_BASE {
                self.serve_listener(t - LISTENER_BASE, false, now);
                continue;
            }
            let key = t - CONN_BASE;
            let Some(conn) = self.conns.get_mut(key) else { continue };
            let ctx = &mut self.ctx;
            conn.queued = false;
            if conn.state() == State::Closed {
                continue;
            }
            let outcome = conn.on_readable(ctx);
            self.apply(key, outcome);
        }
    }

    fn fire_deadlines(&mut self, now: Instant) {
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
    fn begin_drain(&mut self) {
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
    fn stop_now(&mut self) {
        self.close_listeners();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::DrainAborted);
        }
        self.free_closed();
        self.phase = Phase::Stopped;
    }

    fn close_listeners(&mut self) {
        for slot in &mut self.listeners {
            if let Some(mut listener) = slot.take() {
                let _ = self.poll.registry().deregister(listener.source());
                if let Listener::Unix(_, file) = &listener {
                    file.remove();
                }
            }
        }
    }
}
