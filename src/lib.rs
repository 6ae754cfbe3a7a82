//! ricochet: a fast, bounded echo server (TCP over IPv4/IPv6, UDP, Unix-domain streams) and chat
//! room on one edge-triggered mio reactor, usable as a binary or embedded in Rust tests.
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
//! - [`config`]: the checked [`Config`] and its limits.
//! - `reactor`: the poll loop: tokens, slab of connections, dispatch, ready queue; with
//!   `reactor/accept.rs` (listeners, accept, admit) and `reactor/lifecycle.rs` (deadlines, drain,
//!   stop).
//! - `behaviour`: what a connection does with its bytes, chosen by its listener:
//!   `behaviour/echo.rs` (write-through echo, backpressure, half-close: the fast path) and
//!   `behaviour/chat.rs` (the chat room's members), with `behaviour/lines.rs` (the line framer);
//!   `reactor/fanout.rs` delivers chat lines to the other members.
//! - [`control`]: fault plans changed at run time ([`Controller`], `reactor/control.rs`) and the
//!   `--control` socket's line protocol ([`ControlSocket`]).
//! - [`faults`]: fault plans (`ADDR?close-after=1KiB`, `--faults`) and their seeded generator;
//!   `transport/faulty.rs` applies a stream plan to a connection's output, `udp.rs` a datagram
//!   plan.
//! - `transport`: the byte stream under a behaviour (`Plain`: the socket's raw syscalls;
//!   `transport/tls.rs`: rustls on it, in the same reactor; `Wire`: either, for the behaviours
//!   other than the plain echo). [`tls`]: the certificate, loaded or generated.
//! - [`buffer`]: the capped per-connection output buffer and its pool; `outbox`: a chat member's
//!   queue of shared line segments.
//! - `listener`: TCP and Unix listener setup, accepted-socket options, accept backoff.
//! - `udp`: datagram echo with recvmmsg/sendmmsg.
//! - `timer`: the deadline heap; each deadline has a kind (idle timeout, drain quiet period).
//! - `signals`: SIGTERM/SIGINT as a poll source.
//! - `sys`: the hot path's raw `recv`/`send`/`sendmsg` syscalls (public but hidden: loadgen uses
//!   them too).
//! - [`stats`]: counters, published once per turn.
//! - `server`: [`Server`], [`spawn`] and [`Handle`].
//! - [`cli`]: the command line of the `ricochet` binary; [`url`]: listen URLs (`--listen`,
//!   the schemes loadgen's targets use); [`units`]: byte sizes, durations and fractions.
//! - [`files`]: files an operator names (certificates, keys, results), read with a size cap.
//! - [`ready`]: the atomically written ready file; [`output`]: stdout/stderr lines that never
//!   stop the server when their reader goes away.
//!
//! Linux only: the reactor relies on epoll's edge-triggered semantics and on recvmmsg/sendmmsg.

#![deny(missing_docs)]

mod behaviour;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod control;
mod error;
pub mod faults;
pub mod files;
mod listener;
mod outbox;
pub mod output;
mod reactor;
pub mod ready;
mod server;
mod signals;
pub mod stats;
#[doc(hidden)]
pub mod sys;
mod timer;
pub mod tls;
#[doc(hidden)]
pub mod tls_io;
mod transport;
mod udp;
pub mod units;
pub mod url;

pub use config::{Behaviour, Config, Endpoint, ListenSpec};
pub use control::{ControlSocket, Controller};
pub use error::{Error, Result};
pub use faults::Faults;
pub use server::{spawn, Handle, Server, Stopper};
pub use stats::Stats;
pub use tls::TlsSettings;
