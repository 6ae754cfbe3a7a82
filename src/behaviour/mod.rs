//! What a connection does with its bytes. A listener carries a [`Role`] (its configured
//! [`crate::config::Behaviour`], with its chat room resolved to this reactor's room index),
//! fixed when a connection is accepted; the reactor keeps the connection as a [`Conn`] and
//! reaches the behaviour through one `match` per event.
//!
//! - [`echo`]: every byte back to its sender (the monomorphic fast path).
//! - [`chat`]: lines broadcast to the other members of a room; [`lines`] frames them and
//!   [`crate::outbox`] queues the shared segments each member still has to receive.
//!
//! Behaviours never touch a file descriptor: they read and write through a
//! [`Transport`](crate::transport::Transport). They never touch another connection either: what
//! must reach other members is posted to the reactor ([`chat::Mail`]), which delivers it.

pub(crate) mod chat;
pub(crate) mod echo;

use std::time::Instant;

use crate::buffer::{Aligned, BufferPool};
use crate::faults::stream::Faulty;
use crate::stats::Stats;
use crate::timer::{Clock, Tick};
use crate::transport::ws::{Framed, Ws, WsState};
use crate::transport::{Plain, Wire};
use chat::{ChatCtx, Member};
use echo::Echo;

/// What a listener's connections do, as this reactor serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Echo every byte.
    Echo,
    /// Be a member of chat room `room` (an index into [`ChatCtx::rooms`]).
    Chat { room: usize },
}

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The peer half-closed and got everything back (chat: or said `/quit`).
    Eof,
    /// The peer reset, or a socket error.
    Reset,
    /// A fault plan's `reset-after` reset it on purpose.
    FaultReset,
    /// No progress for the idle timeout.
    IdleTimeout,
    /// Quiet during a graceful shutdown.
    Drained,
    /// Still busy when the drain timeout expired (or at a second signal).
    DrainAborted,
    /// A chat member whose undelivered output would have passed its cap.
    Slow,
    /// A chat member sent a line longer than `--max-line` (it was told why first).
    LineTooLong,
    /// A TLS or WebSocket handshake failed or timed out (counted as `tls_failures` or
    /// `ws_failures`).
    HandshakeFailure,
    /// No valid PROXY protocol header came first (counted as `proxy_refused`).
    ProxyRefused,
    /// A chat member whose name a new connection took back with its `/token`.
    Replaced,
}

impl CloseReason {
    /// The WebSocket close code that says why the server ends a connection (RFC 6455 §7.4.1),
    /// for the reasons the server chooses; the others send none of their own.
    pub(crate) fn ws_close_code(self) -> Option<u16> {
        use crate::websocket::close;
        match self {
            CloseReason::Drained | CloseReason::DrainAborted | CloseReason::IdleTimeout => {
                Some(close::GOING_AWAY)
            }
            CloseReason::Slow => Some(close::POLICY),
            CloseReason::LineTooLong => Some(close::TOO_BIG),
            _ => None,
        }
    }
}

/// What the reactor does next with a connection it just served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing until the next readiness event.
    Idle,
    /// Hit its per-turn budget with input still waiting: serve it again after this batch.
    MoreToRead,
    /// Close it.
    Close(CloseReason),
}

/// The reactor's bookkeeping for one connection, whatever it does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Life {
    /// The connection's number on its reactor (slab keys are reused), in 32 bits: unique
    /// until 2^32 connections later. 4 bytes, so that `Life` is 16 and the plain echo
    /// connection 48 (its slot is 64 either way; a WebSocket echo's box is what it saves).
    pub id: u32,
    /// Last time a byte moved in either direction (stamped with [`Ctx::tick`]).
    pub last_active: Tick,
    /// Which arming of this connection's deadline is live (see `timer.rs`).
    pub timer_seq: u32,
    /// Already in the reactor's ready queue.
    pub queued: bool,
    /// The index of the listener that accepted it (its plan changes reach it).
    pub listener: u16,
}

impl Life {
    pub(crate) fn new(id: u64, now: Tick, listener: u16) -> Self {
        Life { id: id as u32, last_active: now, timer_seq: 0, queued: false, listener }
    }
}

/// The reactor's resources that connections use, owned by the reactor and lent to one
/// connection at a time (one pointer, so serving an event costs no setup).
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The one shared read buffer.
    pub buf: Aligned,
    /// Recycled output-buffer storage.
    pub pool: BufferPool,
    /// The counters.
    pub stats: Stats,
    /// Cap on a connection's pending output.
    pub cap: usize,
    /// Bytes a connection may read per turn.
    pub budget: usize,
    /// The current turn's time (exact when a deadline needs it; see the reactor).
    pub now: Instant,
    /// The same time as a [`Tick`] of `clock`, for stamping connections.
    pub tick: Tick,
    /// The reactor's clock for ticks.
    pub clock: Clock,
    /// The chat rooms and what their members posted for delivery.
    pub chat: ChatCtx,
}

impl Ctx {
    /// Sets the turn's time, and its tick.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.tick = self.clock.tick(now);
    }
}

/// One connection in the reactor's slab: the plain echo, or anything else behind one box.
///
/// One cache line: 64 bytes, aligned to 64 (tested). The plain echo's 48 bytes are its socket
/// (the descriptor and two flags), its output buffer (one pointer, null while nothing is owed),
/// its [`Life`] (the last activity as a 32-bit [`Tick`]), its byte count and three state bytes.
/// Serving an event touches that one line and no other, whatever the connection's place in the
/// slab; an idle connection costs its 64 bytes. Before, 96 bytes straddled two lines, and the
/// first load from a connection was the hottest instruction at 1 000 connections.
///
/// Two variants on purpose. The plain echo's fast path begins with this match; with a third
/// variant its tag no longer folds into the echo's own state test, and the plain echo path costs
/// 5 more instructions per message (callgrind).
#[derive(Debug)]
#[repr(align(64))]
pub(crate) enum Conn {
    Echo(Echo<Plain>),
    /// Boxed: larger than an echo connection, and idle echo connections must stay small.
    Other(Box<Other>),
}

/// The behaviours other than the plain echo, over a [`Wire`] (the plain socket or TLS on it).
#[derive(Debug)]
pub(crate) enum Other {
    /// Echo over TLS.
    Echo(Echo<Wire>),
    /// Echo over WebSocket (ws, and wss over TLS): the framing inline, so that the whole
    /// connection is this box and its slab slot. It sets the box's size (tested): a TLS
    /// session is thousands of bytes anyway.
    WsEcho(Echo<Ws<Wire>>),
    /// Echo through a fault plan (under the WebSocket framing on a WebSocket listener). Boxed:
    /// a plan's state is large, and every other connection's box would be as large.
    FaultyEcho(Box<Echo<Framed<Faulty<Wire>>>>),
    /// A chat room member. Boxed: a member is three times an echo connection's size, and
    /// every TLS or WebSocket echo connection's box would be as large (an idle WebSocket echo
    /// connection held 184 bytes here where it uses 64).
    Chat(Box<Member<Wire>>),
    /// A connection whose PROXY protocol header has not all come yet: it becomes its listener's
    /// kind of connection once it has.
    Proxy(Awaiting),
}

/// A connection waiting for its PROXY protocol header (read by peeking, so nothing after the
/// header is taken from the socket before the connection it becomes reads it).
#[derive(Debug)]
pub(crate) struct Awaiting {
    pub io: Plain,
    pub life: Life,
    pub version: crate::proxy::Proxy,
    closed: bool,
}

impl Awaiting {
    pub(crate) fn new(io: Plain, life: Life, version: crate::proxy::Proxy) -> Self {
        Awaiting { io, life, version, closed: false }
    }

    /// Nothing is owed before the header.
    pub(crate) fn pending(&self) -> usize {
        0
    }
}

/// Applies `$e` to the connection inside an `Other`, whatever its behaviour (`$c` names it).
macro_rules! each_other {
    ($other:expr, $c:ident => $e:expr) => {
        match $other {
            Other::Echo($c) => $e,
            Other::WsEcho($c) => $e,
            Other::FaultyEcho($c) => $e,
            Other::Chat($c) => $e,
            Other::Proxy($c) => $e,
        }
    };
}

impl Conn {
    pub(crate) fn other(other: Other) -> Conn {
        Conn::Other(Box::new(other))
    }

    /// The chat member, if this connection is one.
    pub(crate) fn member_mut(&mut self) -> Option<&mut Member<Wire>> {
        match self {
            Conn::Other(other) => match &mut **other {
                Other::Chat(member) => Some(member),
                _ => None,
            },
            Conn::Echo(_) => None,
        }
    }

    /// The echo connection with a fault plan, if this is one.
    pub(crate) fn faulty_mut(&mut self) -> Option<&mut Echo<Framed<Faulty<Wire>>>> {
        match self {
            Conn::Other(other) => match &mut **other {
                Other::FaultyEcho(echo) => Some(&mut **echo),
                _ => None,
            },
            Conn::Echo(_) => None,
        }
    }

    /// Whether it still waits for its PROXY protocol header.
    pub(crate) fn awaits_proxy(&self) -> bool {
        matches!(self, Conn::Other(other) if matches!(**other, Other::Proxy(_)))
    }

    /// The TLS session under this connection, if it has one.
    pub(crate) fn tls_mut(&mut self) -> Option<&mut crate::transport::tls_session::Tls> {
        match self {
            Conn::Other(other) => match &mut **other {
                Other::Echo(c) => c.io.tls_mut(),
                Other::WsEcho(c) => c.io.inner_mut().tls_mut(),
                Other::FaultyEcho(c) => c.io.inner_mut().inner_mut().tls_mut(),
                Other::Chat(m) => m.io.tls_mut(),
                Other::Proxy(_) => None,
            },
            Conn::Echo(_) => None,
        }
    }

    /// The WebSocket framing under this connection, if it has one.
    pub(crate) fn ws_mut(&mut self) -> Option<&mut dyn WsState> {
        match self {
            Conn::Other(other) => match &mut **other {
                Other::Echo(c) => c.io.ws_mut(),
                Other::WsEcho(c) => Some(&mut c.io),
                Other::FaultyEcho(c) => c.io.ws_mut(),
                Other::Chat(m) => m.io.ws_mut(),
                Other::Proxy(_) => None,
            },
            Conn::Echo(_) => None,
        }
    }

    /// Counts what the connection's TLS session and WebSocket framing did since last asked.
    pub(crate) fn count_wire(&mut self, stats: &mut Stats) {
        if let Some(ws) = self.ws_mut() {
            ws.count(stats);
        }
        if let Some(tls) = self.tls_mut() {
            tls.count(stats);
        }
    }

    #[inline]
    pub(crate) fn life(&self) -> &Life {
        match self {
            Conn::Echo(c) => &c.life,
            Conn::Other(other) => each_other!(&**other, c => &c.life),
        }
    }

    #[inline]
    pub(crate) fn life_mut(&mut self) -> &mut Life {
        match self {
            Conn::Echo(c) => &mut c.life,
            Conn::Other(other) => each_other!(&mut **other, c => &mut c.life),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Conn::Echo(c) => c.state() == echo::State::Closed,
            Conn::Other(other) => match &**other {
                Other::Echo(c) => c.state() == echo::State::Closed,
                Other::WsEcho(c) => c.state() == echo::State::Closed,
                Other::FaultyEcho(c) => c.state() == echo::State::Closed,
                Other::Chat(m) => m.is_closed(),
                Other::Proxy(a) => a.closed,
            },
        }
    }

    /// Whether output is still owed to the peer, by the behaviour or inside the transport (a
    /// drain waits for it).
    pub(crate) fn owes_output(&self) -> bool {
        use crate::transport::Transport;
        match self {
            Conn::Echo(c) => c.pending() > 0 || c.io.has_buffered(),
            Conn::Other(other) => {
                each_other!(&**other, c => c.pending() > 0 || c.io.has_buffered())
            }
        }
    }

    /// Serves the connection again after it stopped at its budget.
    pub(crate) fn resume(&mut self, ctx: &mut Ctx) -> Outcome {
        match self {
            Conn::Echo(c) => c.on_readable(ctx, 0),
            Conn::Other(other) => match &mut **other {
                Other::Echo(c) => c.on_readable(ctx, 0),
                Other::WsEcho(c) => c.on_readable(ctx, 0),
                Other::FaultyEcho(c) => {
                    let outcome = c.on_readable(ctx, 0);
                    c.io.inner_mut().count(&mut ctx.stats);
                    outcome
                }
                Other::Chat(m) => m.on_readable(ctx, 0),
                Other::Proxy(_) => Outcome::Idle,
            },
        }
    }

    /// Ends the connection for `reason` (see each behaviour's `close`).
    pub(crate) fn close(&mut self, ctx: &mut Ctx, reason: CloseReason) {
        match self {
            Conn::Echo(c) => c.close(&mut ctx.pool),
            Conn::Other(other) => match &mut **other {
                Other::Echo(c) => c.close(&mut ctx.pool),
                Other::WsEcho(c) => c.close(&mut ctx.pool),
                Other::FaultyEcho(c) => {
                    c.close(&mut ctx.pool);
                    c.io.inner_mut().count(&mut ctx.stats);
                }
                Other::Chat(m) => m.close(ctx, reason),
                // Dropped with the header unread: the client is reset, as it should be.
                Other::Proxy(a) => a.closed = true,
            },
        }
        self.count_wire(&mut ctx.stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    /// A plain echo connection is one cache line: its slab slot is 64 bytes, aligned to 64, so
    /// serving an event touches one line and an idle connection costs 64 bytes (see [`Conn`]).
    #[test]
    fn a_connection_is_one_cache_line() {
        assert_eq!(size_of::<Life>(), 16);
        assert_eq!(size_of::<Echo<Plain>>(), 48, "the plain echo connection's fields");
        assert_eq!(size_of::<Conn>(), 64);
        assert_eq!(align_of::<Conn>(), 64);
        // The slab's slot (vacant or occupied) takes no more: its tag fits in a niche, as
        // Option's does.
        assert_eq!(size_of::<Option<Conn>>(), 64);
    }

    /// The box behind a TLS or WebSocket echo connection is no larger than the WebSocket echo
    /// (its framing inline): the larger behaviours are boxed again inside it. An idle WebSocket
    /// echo connection is this box and its slab slot (`scripts/compare-ws.sh` measures it).
    #[test]
    fn the_other_connections_box_fits_a_websocket_echo() {
        assert_eq!(size_of::<Other>(), size_of::<Echo<Ws<Wire>>>());
        // 168 bytes: malloc's 176-byte chunk, which with the 64-byte slot keeps an idle
        // WebSocket connection within its 256 bytes. 8 more would take the next chunk size.
        assert_eq!(size_of::<Other>(), 168);
    }
}
