//! Serving the connections other than the plain echo: TLS echo and chat members over a [`Wire`]
//! (a writable edge goes to the wire first, for the TLS records it could not write before), and
//! echo through a fault plan (its held output released, its `Resume` deadlines armed). Each is
//! out of line, so that `serve_conn` compiles to the plain echo's path alone.

use std::time::Instant;

use super::Reactor;
use crate::behaviour::echo::Echo;
use crate::behaviour::{CloseReason, Conn, Ctx, Other, Outcome};
use crate::faults::stream::Faulty;
use crate::proxy::{self, Header};
use crate::stats::Stats;
use crate::sys;
use crate::timer::Kind;
use crate::transport::ws::{self, Framed, InPlaceRead, Ws, WsState};
use crate::transport::{OwnOutput, Plain, Transport, Wire};

/// After the echo of a connection with a fault plan ran: what it just wrote may be due at once
/// (a rate or slices without latency).
fn release_written(conn: &mut Echo<Framed<Faulty<Wire>>>, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Idle if conn.io.inner_mut().release().is_err() => {
            Outcome::Close(CloseReason::Reset)
        }
        other => other,
    }
}

/// An echo over TLS or WebSocket: a writable edge goes to the transport's own output first.
fn serve_echo<T: Transport + OwnOutput>(
    echo: &mut Echo<T>,
    ctx: &mut Ctx,
    readable: bool,
    writable: bool,
    read_closed: bool,
) -> Option<Outcome> {
    if writable && echo.io.write_own().is_err() {
        return Some(Outcome::Close(CloseReason::Reset));
    }
    match echo.on_event(ctx, readable, writable, read_closed) {
        Some(Outcome::Idle) if echo.is_finished() => Some(Outcome::Close(CloseReason::Eof)),
        outcome => outcome,
    }
}

/// How [`ws_in_place`] went.
enum InPlace {
    /// Not for it: nothing was read.
    Not,
    /// The read was answered where it lay and counted, the connection stamped active, the
    /// socket drained: only messages moved, nothing else to settle.
    Answered,
    /// The read went on through the echo, which came to this.
    Went(Outcome),
}

/// A WebSocket echo over a plain socket: its common readable event (quiet, and the framing
/// between messages with nothing owed) is served by the framing, answered in place
/// ([`Ws::answer_in_place`]), counted, and the connection stamped active; whatever the read
/// brings that is not for that goes on through the echo as its own read would. No writable
/// edge is owed anything then: neither the echo, nor the framing, nor a plain socket holds
/// output.
#[inline]
fn ws_in_place(
    echo: &mut Echo<Ws<Wire>>,
    ctx: &mut Ctx,
    readable: bool,
    read_closed: bool,
) -> InPlace {
    if !readable
        || read_closed
        || !echo.is_quiet()
        || !matches!(echo.io.inner_mut(), Wire::Plain(_))
    {
        return InPlace::Not;
    }
    let room = echo.room(ctx);
    match echo.io.answer_in_place(&mut ctx.buf[..room], &mut ctx.stats) {
        InPlaceRead::Not => InPlace::Not,
        InPlaceRead::Answered => {
            echo.life.last_active = ctx.tick;
            InPlace::Answered
        }
        InPlaceRead::Read(read) => InPlace::Went(match echo.after_read(read, room, ctx) {
            Outcome::Idle if echo.is_finished() => Outcome::Close(CloseReason::Eof),
            outcome => outcome,
        }),
    }
}

/// What counting a connection's TLS session and WebSocket framing found for the reactor to do.
#[derive(Debug, Default, Clone, Copy)]
struct Settled {
    /// Our WebSocket close went: the client's end is awaited for [`ws::LINGER`].
    linger_began: bool,
    /// The TLS session failed: a reset is a failed handshake.
    tls_failed: bool,
    /// The WebSocket framing echoed messages itself: the connection was active.
    echoed: bool,
}

/// Counts what `wire`'s layers did since last asked.
fn settle_wire(wire: &mut Wire, stats: &mut Stats) -> Settled {
    match wire {
        Wire::Plain(_) => Settled::default(),
        Wire::Tls(tls) => {
            tls.count(stats);
            Settled { tls_failed: tls.failed(), ..Settled::default() }
        }
        Wire::Ws(ws) => settle_ws(ws, stats),
    }
}

/// Counts what a WebSocket framing and the wire under it did since last asked (the framing
/// first, as the reactor always has).
fn settle_ws<T: Transport + OnWire>(ws: &mut Ws<T>, stats: &mut Stats) -> Settled {
    let echoed = ws.count(stats);
    let linger_began = ws.linger_began();
    let under = settle_wire(ws.inner_mut().wire(), stats);
    Settled { linger_began, tls_failed: under.tls_failed, echoed }
}

/// [`settle_ws`] for a WebSocket echo: messages the framing echoed itself, which the echo never
/// saw, stamp the connection active.
fn settle_ws_echo(echo: &mut Echo<Ws<Wire>>, ctx: &mut Ctx) -> Settled {
    let settled = settle_ws(&mut echo.io, &mut ctx.stats);
    if settled.echoed {
        echo.life.last_active = ctx.tick;
    }
    settled
}

/// What a WebSocket framing sits on: the wire, or a fault plan on the wire.
trait OnWire {
    fn wire(&mut self) -> &mut Wire;
}

impl OnWire for Wire {
    fn wire(&mut self) -> &mut Wire {
        self
    }
}

impl OnWire for Faulty<Wire> {
    fn wire(&mut self) -> &mut Wire {
        self.inner_mut()
    }
}

impl Reactor {
    /// Serves a WebSocket echo connection: its common event in [`ws_in_place`], the rest
    /// through the echo. Called by `serve_conn` itself, like [`Reactor::serve_faulty`]: through
    /// [`Reactor::serve_other`], whose frame is large, it cost ~30 instructions a message more
    /// (callgrind).
    #[inline(never)]
    pub(super) fn serve_ws_echo(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) {
        let Some(Conn::Other(other)) = self.conns.get_mut(key) else { return };
        let Other::WsEcho(echo) = &mut **other else { return };
        let ctx = &mut self.ctx;
        let outcome = match ws_in_place(echo, ctx, readable, read_closed) {
            InPlace::Answered => return,
            InPlace::Went(outcome) => outcome,
            InPlace::Not => match serve_echo(echo, ctx, readable, writable, read_closed) {
                Some(outcome) => outcome,
                None => return,
            },
        };
        let settled = settle_ws_echo(echo, ctx);
        self.settled(key, outcome, settled);
    }

    /// Serves a TLS echo connection or a chat member (over either wire; a WebSocket echo goes
    /// to [`Reactor::serve_ws_echo`]). A writable edge first goes to the wire (TLS records it
    /// could not write before).
    #[inline(never)]
    pub(super) fn serve_other(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) {
        let Some(Conn::Other(other)) = self.conns.get_mut(key) else { return };
        if matches!(**other, Other::Proxy(_)) {
            return self.serve_proxy(key, read_closed);
        }
        let ctx = &mut self.ctx;
        // Each connection's layers counted while it is at hand, by its own type (no second
        // lookup, no dynamic dispatch: about 100 instructions per WebSocket message before).
        let served = match &mut **other {
            Other::Echo(echo) => serve_echo(echo, ctx, readable, writable, read_closed)
                .map(|outcome| (outcome, settle_wire(&mut echo.io, &mut ctx.stats))),
            Other::WsEcho(_) => return self.serve_ws_echo(key, readable, writable, read_closed),
            Other::Chat(member) if member.is_closed() => None,
            Other::Chat(member) => {
                let outcome = if writable && member.io.write_own().is_err() {
                    Outcome::Close(CloseReason::Reset)
                } else {
                    member.on_event(ctx, readable, writable, read_closed)
                };
                Some((outcome, settle_wire(&mut member.io, &mut ctx.stats)))
            }
            Other::FaultyEcho(_) | Other::Proxy(_) => None, // not served here
        };
        if let Some((outcome, settled)) = served {
            self.settled(key, outcome, settled);
        }
    }

    /// A connection waiting for its PROXY protocol header: looks at what has come (without
    /// taking it from the socket); once the header is whole, takes exactly its bytes and makes
    /// the connection its listener serves, which then reads what followed the header. A header
    /// that is not one, or an end of stream before it, closes the connection.
    fn serve_proxy(&mut self, key: usize, read_closed: bool) {
        let Some(Conn::Other(other)) = self.conns.get_mut(key) else { return };
        let Other::Proxy(wait) = &mut **other else { return };
        let peek = &mut self.ctx.buf[..proxy::V2_MAX];
        let header = match sys::peek(wait.io.fd, peek) {
            Err(libc::EAGAIN) => return,
            Err(libc::EINTR) => return self.requeue(key),
            Err(_) => return self.close(key, CloseReason::Reset),
            Ok(0) => return self.close(key, CloseReason::ProxyRefused),
            Ok(n) => match proxy::parse(&peek[..n], wait.version) {
                Header::Partial if read_closed || n == peek.len() => {
                    return self.close(key, CloseReason::ProxyRefused);
                }
                Header::Partial => return, // the rest makes a new edge when it comes
                Header::Invalid(_) => return self.close(key, CloseReason::ProxyRefused),
                Header::Whole { len, source } => (len, source),
            },
        };
        let (len, source) = header;
        // The header is in the socket's buffer: this takes exactly it.
        if sys::recv(wait.io.fd, &mut self.ctx.buf[..len]) != Ok(len) {
            return self.close(key, CloseReason::Reset);
        }
        let (life, io) = (wait.life, std::mem::replace(&mut wait.io, Plain::husk()));
        let now = Instant::now();
        self.ctx.set_now(now);
        match self.make_conn(io, life, key, now, source) {
            Ok(conn) => self.conns[key] = conn,
            Err(io) => {
                // Back where it was, to be closed and freed like any other.
                if let Some(Conn::Other(other)) = self.conns.get_mut(key) {
                    if let Other::Proxy(wait) = &mut **other {
                        wait.io = io;
                    }
                }
                return self.close(key, CloseReason::HandshakeFailure);
            }
        }
        // What followed the header (and the end of stream, if it came) is waiting, and no new
        // edge will say so: served now, as a new connection's first event. Not through
        // `serve_conn` or the echo's `on_event`: a second call of the plain echo's event path
        // costs that path its inlining (plain echo 100.8 -> 132 instructions per message,
        // callgrind; see `refault`).
        let outcome = match &mut self.conns[key] {
            Conn::Echo(echo) => {
                if read_closed {
                    echo.note_read_closed();
                }
                echo.on_readable(&mut self.ctx, 0)
            }
            Conn::Other(other) => match **other {
                Other::FaultyEcho(_) => return self.serve_faulty(key, true, true, read_closed),
                _ => return self.serve_other(key, true, true, read_closed),
            },
        };
        self.apply(key, outcome);
    }

    /// Serves connection `key` again after this batch (as its budget's end does).
    fn requeue(&mut self, key: usize) {
        self.apply(key, Outcome::MoreToRead);
    }

    /// Applies `outcome` once the connection's layers are counted: arms the linger deadline if
    /// our WebSocket close just went, and takes a reset of a failed TLS session for the failed
    /// handshake it is. Nothing to do in the common case (a message served, nothing began).
    #[inline]
    fn settled(&mut self, key: usize, outcome: Outcome, settled: Settled) {
        if outcome != Outcome::Idle || settled.linger_began {
            self.settled_slow(key, outcome, settled);
        }
    }

    fn settled_slow(&mut self, key: usize, outcome: Outcome, settled: Settled) {
        if settled.linger_began {
            // Our close went: the client's end of stream is awaited this long, no longer.
            self.arm(key, Instant::now() + ws::LINGER, Kind::Handshake);
        }
        let outcome = match outcome {
            Outcome::Close(CloseReason::Reset) if settled.tls_failed => {
                Outcome::Close(CloseReason::HandshakeFailure)
            }
            other => other,
        };
        self.apply(key, outcome);
    }

    /// Serves an echo connection with a fault plan. Out of line, so that `serve_conn` compiles
    /// to the plain echo's path (inlined, this cost it instructions per message).
    #[inline(never)]
    pub(super) fn serve_faulty(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key).and_then(Conn::faulty_mut) else { return };
        let faulty = conn.io.inner_mut();
        faulty.set_now(Instant::now());
        if writable {
            faulty.writable();
            // The wire's own output (TLS records), then the framing's (WebSocket control frames).
            let edge = faulty.inner_mut().write_own();
            let framing = conn.io.ws_mut().map_or(Ok(()), |ws| ws.on_writable_edge());
            if edge.is_err() || framing.is_err() {
                return self.after_fault(key, Outcome::Close(CloseReason::Reset));
            }
        }
        let outcome = match conn.io.inner_mut().release() {
            Err(_) => Some(Outcome::Close(CloseReason::Reset)),
            Ok(()) => conn.on_event(&mut self.ctx, readable, writable, read_closed),
        };
        let Some(outcome) = outcome else { return };
        let outcome = match release_written(conn, outcome) {
            Outcome::Idle if conn.is_finished() => Outcome::Close(CloseReason::Eof),
            outcome => outcome,
        };
        self.after_fault(key, outcome);
    }

    /// After serving a connection with a fault plan: count what its plan did, tell a deliberate
    /// reset from a peer's, and arm a `Resume` deadline when its plan needs time to pass.
    fn after_fault(&mut self, key: usize, outcome: Outcome) {
        let Some(conn) = self.conns.get_mut(key).and_then(Conn::faulty_mut) else { return };
        let stats = &mut self.ctx.stats;
        let faulty = conn.io.inner_mut();
        faulty.count(stats);
        let outcome = match outcome {
            Outcome::Close(CloseReason::Reset) if faulty.reset_due() => {
                Outcome::Close(CloseReason::FaultReset)
            }
            other => other,
        };
        let resume = faulty.arm_at();
        // The framing and the wire, under the plan or over it.
        let settled = match &mut conn.io {
            Framed::Raw(faulty) => settle_wire(faulty.inner_mut(), stats),
            Framed::Ws(ws) => settle_ws(ws, stats),
        };
        if settled.echoed {
            conn.life.last_active = self.ctx.tick;
        }
        if let Some(at) = resume {
            self.arm(key, at, Kind::Resume);
        }
        self.settled(key, outcome, settled);
    }

    /// A `Resume` deadline of a connection with a fault plan: reset it if its reset is due,
    /// else send the output that came due and let the echo go on, as a writable edge would.
    pub(super) fn resume_faulty(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key).and_then(Conn::faulty_mut) else { return };
        let faulty = conn.io.inner_mut();
        faulty.fired();
        if faulty.reset_due() {
            return self.close(key, CloseReason::FaultReset);
        }
        faulty.set_now(now);
        let outcome = match faulty.release() {
            Err(_) => Outcome::Close(CloseReason::Reset),
            Ok(()) => {
                conn.io.inner_mut().edge_given();
                let outcome = conn.on_writable(&mut self.ctx);
                release_written(conn, outcome)
            }
        };
        self.after_fault(key, outcome);
    }
}
