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
//!
//! Listeners (accept, admit, UDP) are in `accept.rs`; deadlines, the drain and the stop in
//! `lifecycle.rs`.

mod accept;
mod lifecycle;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffer::BufferPool;
use crate::config::{Config, ListenSpec};
use crate::connection::{CloseReason, Connection, Ctx, Outcome, State};
use crate::error::{Error, Result};
use crate::listener::{self, AcceptBackoff};
use crate::signals::Signals;
use crate::stats::{SharedStats, Stats};
use crate::timer::{Deadline, Timers};
use crate::udp::{Batch, UdpEcho};
use accept::Listener;

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
}
