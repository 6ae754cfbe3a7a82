//! ricochet: a fast, bounded echo server (TCP over IPv4/IPv6, UDP, Unix-domain streams, TLS) and
//! chat rooms, on edge-triggered mio reactors (one, or N with `threads`), usable as a binary or
//! embedded in Rust tests.
//!
//! ```no_run
//! let server = ricochet::spawn(ricochet::Config::ephemeral())?;
//! let addr = server.tcp_addr().unwrap();
//! // ... talk to `addr` ...
//! let stats = server.shutdown()?;
//! # Ok::<(), ricochet::Error>(())
//! ```
//!
//! # Layout
//!
//! - [`config`]: the checked [`Config`] and its limits; a listener is a [`ListenSpec`], an
//!   [`Endpoint`] (TCP, TLS, UDP, Unix) and a [`Behaviour`] (echo, or chat in a room).
//! - [`url`]: listen URLs (`--listen`, the schemes loadgen's targets use).
//! - `server`: [`Server`], [`spawn`] and [`Handle`]: the coordinator above the reactors (threads,
//!   signals, the ready line, summed counters).
//! - `reactor`: one shard's poll loop: tokens, slab of connections, dispatch, ready queue; with
//!   `reactor/accept.rs` (accept, admit with the listener's role), `reactor/lifecycle.rs`
//!   (deadlines, drain, stop), `reactor/commands.rs` (plan changes from other threads applied in
//!   place), `reactor/fanout.rs` (chat delivery: the reactor's end-of-turn step) and
//!   `reactor/peers.rs` (the queues between reactors).
//! - `listener`: a reactor's listeners built from the config (sockets, rooms by name, plans, TLS),
//!   TCP and Unix listener setup, accepted-socket options, accept backoff.
//! - `behaviour`: what a connection does with its bytes, chosen by its listener:
//!   `behaviour/echo.rs` (write-through echo, backpressure, half-close: the fast path) and
//!   `behaviour/chat/` (a room's members, with `lines.rs`, the line framer, and `outbox.rs`, a
//!   member's queue of shared line segments).
//! - `transport`: the byte stream under a behaviour (`Plain`: the socket's raw syscalls;
//!   `transport/tls_session.rs`: a TLS session on it, in the same reactor; `Wire`: either).
//! - [`certificate`]: the TLS certificate, loaded (size-capped) or generated; `tls_records`: a
//!   TLS session on a non-blocking socket (rustls's unbuffered handshake, then TLS 1.3 records
//!   protected by `tls13` with the keys rustls hands over); both public but hidden: loadgen's
//!   client uses them too.
//! - [`faults`]: every fault: plans (`ADDR?close-after=1KiB`, `--faults`) and their seeded
//!   generator, `faults/stream.rs` (a plan on a connection's output), `faults/datagram.rs` (a plan
//!   on a UDP socket's replies).
//! - [`client`]: the client sides loadgen and the chat client share: which TLS certificates to
//!   trust (`client/tls.rs`) and WebSocket's client framing (`client/websocket.rs`).
//! - [`control`]: fault plans changed at run time ([`Controller`]) and the `--control` socket's
//!   line protocol ([`ControlSocket`]).
//! - [`buffer`]: the capped per-connection output buffer and its pool.
//! - `udp`: datagram echo with recvmmsg/sendmmsg.
//! - `timer`: the deadline heap; each deadline has a kind (idle timeout, drain quiet period).
//! - `signals`: SIGTERM/SIGINT as a poll source.
//! - `sys`: the hot path's raw `recv`/`send`/`sendmsg` syscalls (public but hidden: loadgen uses
//!   them too).
//! - [`stats`]: counters, published once per turn.
//! - [`cli`]: the command line of the `ricochet` binary; [`units`]: byte sizes, durations and
//!   fractions; [`files`]: files an operator names, read with a size cap.
//! - [`ready`]: the atomically written ready file; [`output`]: stdout/stderr lines that never
//!   stop the server when their reader goes away.
//!
//! Linux only: the reactor relies on epoll's edge-triggered semantics and on recvmmsg/sendmmsg.

#![deny(missing_docs)]

pub mod alloc;
mod behaviour;
pub mod buffer;
pub mod certificate;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
mod error;
pub mod faults;
pub mod files;
#[cfg(test)]
mod fuzz;
pub mod http;
mod listener;
pub mod metrics;
pub mod output;
pub mod proxy;
mod reactor;
pub mod ready;
mod server;
mod side;
mod signals;
pub mod stats;
#[doc(hidden)]
pub mod sys;
mod timer;
#[doc(hidden)]
pub mod tls13;
#[doc(hidden)]
pub mod tls_records;
mod transport;
mod udp;
pub mod units;
pub mod url;
pub mod websocket;

pub use certificate::TlsSettings;
pub use config::{Behaviour, Config, Endpoint, ListenSpec};
pub use control::{ControlSocket, Controller};
pub use error::{Error, Result};
pub use faults::Faults;
pub use server::{spawn, Handle, Server, Stopper};
pub use stats::Stats;

/// The TLS certificate (the old name of [`certificate`], kept for existing users).
pub mod tls {
    pub use crate::certificate::*;
}

/// TLS records between a socket and a session (the old name of `tls_records`).
#[doc(hidden)]
pub mod tls_io {
    pub use crate::tls_records::*;
}
