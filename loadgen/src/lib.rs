//! loadgen: an echo load generator whose numbers can be trusted. Every echoed byte is checked
//! against what was sent, every message's latency goes into an HdrHistogram, and open-loop runs
//! measure from intended send times (no coordinated omission).
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap flags only); [`settings`]: the checked
//!   [`settings::Settings`] made from it (no clap type inside), with [`settings::Trust`].
//! - [`target`]: `HOST:PORT`, `tcp://`, `udp://`, `unix:`, `tls://`, `chat://` targets and their
//!   resolution; [`tls`]: the TLS client side (trust, server name, record pumping).
//! - [`run`]: one benchmark: embedded server or preflight, threads, progress, hlog, merge.
//! - `engine`: one load thread's loop, shared by every workload: poll, the open loop's timer,
//!   maintenance and intervals, the one admission rule, the polite close.
//! - `echo`: the echo workload, compiled once for stream and once for datagram connections;
//!   `chat`: the chat room's fan-out
//!   workload (members, publishers, per-delivery checks).
//! - [`conn`]: what every echo connection has (its life) and the interface the echo workload
//!   drives; [`stream`]: a stream echo connection (send ring, byte-exact verification,
//!   completions); [`datagram`]: a datagram echo connection (sequence-numbered slots, loss,
//!   reordering).
//! - [`wire`]: a stream connection's transport: the socket (TCP, Unix) and the bytes over it,
//!   in the clear or through TLS, with WebSocket framing over either ([`websocket`]); every
//!   stream workload reads and writes through it.
//! - [`tally`]: a thread's results: latency histogram and counts by cause.
//! - [`schedule`]: open-loop intended send times; [`sweep`]: the highest rate within latency
//!   objectives.
//! - [`payload`]: the payload pattern and datagram checks.
//! - [`report`]: merged results as text, JSON and hlog; [`plot`]: results drawn as SVG;
//!   [`results`]: results and hlogs read back, checked (bounded files, histograms, figures).
//! - [`probe`]: `loadgen probe`; [`merge`]: `loadgen merge` (results of several hosts).

#![deny(missing_docs)]

mod chat;
pub mod cli;
mod commands;
pub mod conn;
pub mod datagram;
mod echo;
mod engine;
mod entry;
#[cfg(test)]
mod fuzz;
mod live;
pub mod merge;
pub mod payload;
pub mod plot;
pub mod probe;
pub mod report;
pub mod results;
pub mod run;
pub mod schedule;
pub mod settings;
pub mod stream;
pub mod sweep;
pub mod tally;
pub mod target;
pub mod tls;
/// WebSocket's client side (ricochet's, shared with the chat client).
pub use ricochet::client::websocket;
pub mod wire;

pub use entry::main;

/// What went wrong, said in one line for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |e| Error(format!("{context}: {e}"))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
