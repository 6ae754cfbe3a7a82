//! What every echo connection has, whatever it carries: its life ([`Life`]: connecting, up,
//! down with a backoff, the generation that makes stale open-loop slots recognisable, the
//! `--reconnect-every` counts) and the interface the echo workload drives it through
//! ([`EchoConn`]). A stream connection (`stream.rs`: TCP, Unix, TLS) and a datagram one
//! (`datagram.rs`: UDP) implement it; the workload is compiled for each (no question of "is
//! this UDP?" asked per message).

use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::tally::{Cause, InFlight, Tally};
use crate::target::Endpoint;
use crate::tls::TlsClient;

/// What the workload needs to know after serving a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Drop it and reconnect later, counting this cause as an error.
    Failed(Cause),
    /// The echo differed from what was sent: count a mismatch, reconnect to resynchronise.
    Mismatch,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// connect(2) in progress (over TLS: and the handshake).
    Connecting,
    /// Carrying load.
    Up,
    /// Dropped; reconnect at this time.
    Down(Instant),
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A connection's life, the same for every kind.
#[derive(Debug)]
pub struct Life {
    /// Global connection number: it keys the payload pattern.
    pub id: u32,
    /// Where it is in its life.
    pub phase: Phase,
    backoff: Duration,
    /// Bumped whenever the connection is dropped: free-slot tokens of an older life are stale.
    pub generation: u32,
    /// Has queued bytes to write this turn.
    pub dirty: bool,
    /// When the current connect began (connect latency runs to the end of the handshake).
    connect_started: Instant,
    /// Messages issued and completed in this connection's life (`--reconnect-every`).
    pub issued: u64,
    /// See `issued`.
    pub completed: u64,
    /// It has been up at least once in the run.
    pub ever_up: bool,
}

impl Life {
    /// A connection that will connect on its first connect.
    pub fn new(id: u32) -> Life {
        Life {
            id,
            phase: Phase::Down(Instant::now()),
            backoff: FIRST_BACKOFF,
            generation: 0,
            dirty: false,
            connect_started: Instant::now(),
            issued: 0,
            completed: 0,
            ever_up: false,
        }
    }

    /// A connect begins: a new life.
    pub fn connecting(&mut self) {
        self.connect_started = Instant::now();
        self.issued = 0;
        self.completed = 0;
        self.phase = Phase::Connecting;
    }

    /// Connected (and the handshake done): the backoff starts over.
    pub fn up(&mut self) {
        self.phase = Phase::Up;
        self.ever_up = true;
        self.backoff = FIRST_BACKOFF;
    }

    /// Dropped at `now`: reconnect after the backoff, which doubles (to a ceiling).
    pub fn down(&mut self, now: Instant) {
        self.dirty = false;
        self.phase = Phase::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.generation = self.generation.wrapping_add(1);
    }

    /// Closed on purpose (`--reconnect-every`): reconnect at once, the backoff unchanged.
    pub fn recycled(&mut self, now: Instant, backoff: Duration) {
        self.backoff = backoff;
        self.phase = Phase::Down(now);
    }

    /// The current backoff (kept across a recycle).
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// How long the connect (and handshake) that just finished took.
    pub fn connect_time(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connect_started)
    }

    /// Messages this connection may still take before it is recycled after `every`.
    pub fn left(&self, every: Option<u64>) -> usize {
        every.map_or(usize::MAX, |n| n.saturating_sub(self.issued) as usize)
    }
}

/// An echo connection, as the echo workload drives it.
pub trait EchoConn {
    /// A connection that will connect on the first [`EchoConn::connect`].
    fn new(id: u32) -> Self;
    /// Its life.
    fn life(&self) -> &Life;
    /// Its life, to change.
    fn life_mut(&mut self) -> &mut Life;
    /// Starts a connect and registers the socket under `token` (over TLS, a session from `tls`).
    fn connect(
        &mut self,
        endpoint: &Endpoint,
        tls: Option<&TlsClient>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()>;
    /// An event while connecting: did the connect work (and the handshake finish)?
    fn check_connected(&mut self) -> Status;
    /// Drops the socket and everything in flight; reconnect after a backoff.
    fn drop_connection(&mut self, registry: &Registry, now: Instant, tally: &mut Tally);
    /// Hands `n` messages like `msg` to the connection (open loop: `stamped` with their intended
    /// time; closed loop: stamped when their bytes go out).
    fn issue(
        &mut self,
        msg: InFlight,
        n: usize,
        stamped: bool,
        size: usize,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> Status;
    /// Writes what was queued this turn (`clock`: read just before the write, when needed).
    fn flush(&mut self, clock: impl FnOnce() -> u64) -> Status;
    /// A writable edge.
    fn on_writable(&mut self, clock: impl FnOnce() -> u64) -> Status;
    /// Reads and checks every echo waiting; how many messages completed.
    fn on_readable(
        &mut self,
        size: usize,
        scratch: &mut [u8],
        tally: &mut Tally,
        check: &mut Vec<u8>,
    ) -> (Status, usize);
    /// The peer's end or a hang-up was reported.
    fn note_read_closed(&mut self);
    /// What waited past `timeout` at `now` (ns): a stream's failure, or datagrams lost (how
    /// many: their slots are free again).
    fn expire(&mut self, now: u64, timeout: Duration, tally: &mut Tally) -> (Status, usize);
    /// When the oldest message that [`EchoConn::expire`] will time out was sent (ns), if any.
    fn oldest_sent(&self) -> Option<u64>;
    /// Messages in flight.
    fn in_flight(&self) -> usize;
    /// End of the run: our end of stream; whether there is anything to wait for.
    fn begin_close(&mut self) -> bool;
    /// End of the run: reads the rest; true once the server's end (or an error) came.
    fn drain_until_eof(&mut self, scratch: &mut [u8]) -> bool;

    /// `--reconnect-every`: closes politely and reconnects at once, with no backoff and no error
    /// counted.
    fn recycle(&mut self, registry: &Registry, now: Instant, tally: &mut Tally) {
        self.begin_close();
        let backoff = self.life().backoff();
        self.drop_connection(registry, now, tally);
        self.life_mut().recycled(now, backoff);
    }

    /// Whether it completed its `every` messages and owes nothing (`--reconnect-every`).
    fn life_done(&self, every: Option<u64>) -> bool {
        every.is_some_and(|n| self.life().completed >= n && self.in_flight() == 0)
    }
}
