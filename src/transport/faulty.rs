//! A stream fault plan applied to a connection's output: the echo logic writes as usual and this
//! transport decides what the peer gets.
//!
//! - `close-after=N`: the first N bytes go out, then FIN; later output is dropped and input is
//!   still read (and dropped) until the peer closes, so no reset destroys what was sent.
//! - `reset-after=N`: the first N bytes go out; once the peer has acknowledged them all, the
//!   connection is reset (RST). Until then the reactor looks again every millisecond.
//! - `stall-after=N`: the first N bytes go out, then nothing is read or written any more: the
//!   connection stays open until the idle timeout or a drain ends it.
//! - `corrupt-after=N`: the byte at offset N of the echo is flipped (xor 0xff), once.
//! - `p`: a connection whose draw at accept is not below `p` passes everything through.
//!
//! Byte counts run from the connection's start. A partial write is returned only when the
//! kernel refused bytes, so the echo's "a writable edge will follow" rule holds.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::{EAGAIN, ECONNRESET};

use super::Transport;
use crate::faults::Faults;
use crate::stats::Stats;
use crate::sys::Errno;

/// How often a reset waiting for the peer's acknowledgements looks again.
const RESET_POLL: Duration = Duration::from_millis(1);

/// Where the connection's plan has taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Echoing (shaped).
    Open,
    /// FIN sent after close-after bytes: output dropped, input read and dropped.
    Closed,
    /// Reset after reset-after bytes, once they are acknowledged.
    ResetPending,
    /// Stalled after stall-after bytes.
    Stalled,
}

/// A transport with a stream fault plan.
#[derive(Debug)]
pub(crate) struct Faulty<T> {
    inner: T,
    plan: Arc<Faults>,
    /// This connection drew below the plan's `p`.
    active: bool,
    /// Bytes of echo that went out.
    echoed: u64,
    end: End,
    corrupted: bool,
    /// Things that happened since the reactor last counted them.
    happened: Happened,
}

/// Fault events, counted by the reactor into [`Stats`].
#[derive(Debug, Default, Clone, Copy)]
struct Happened {
    closed: bool,
    reset: bool,
    stalled: bool,
    corrupted: bool,
}

impl<T: Transport> Faulty<T> {
    /// Wraps `inner`; `draw` is the connection's uniform draw in 0..1 (see [`Faults::applies`]).
    pub(crate) fn new(inner: T, plan: Arc<Faults>, draw: f64) -> Self {
        Faulty {
            active: plan.applies(draw),
            inner,
            plan,
            echoed: 0,
            end: End::Open,
            corrupted: false,
            happened: Happened::default(),
        }
    }

    /// Adds what happened since the last call to the counters.
    pub(crate) fn count(&mut self, stats: &mut Stats) {
        let h = std::mem::take(&mut self.happened);
        stats.faults_closed_after += h.closed as u64;
        stats.faults_reset_after += h.reset as u64;
        stats.faults_stalled += h.stalled as u64;
        stats.faults_corrupted += h.corrupted as u64;
    }

    /// When the reactor must look at this connection again (a reset waiting for acks).
    pub(crate) fn wake_at(&self, now: Instant) -> Option<Instant> {
        (self.end == End::ResetPending).then_some(now + RESET_POLL)
    }

    /// A reset waiting for acks: true once it may go (everything sent was acknowledged).
    pub(crate) fn reset_due(&self) -> bool {
        self.end == End::ResetPending && self.inner.unacked() == 0
    }

    /// The byte count at which the plan ends the echo, if it does.
    fn end_at(&self) -> Option<u64> {
        self.plan.close_after.or(self.plan.reset_after).or(self.plan.stall_after)
    }

    /// Writes `parts` (in order) as the plan allows; see the module docs.
    fn write(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match self.end {
            End::Open => {}
            // Nothing more is echoed: the bytes are taken and dropped.
            End::Closed | End::Stalled | End::ResetPending => return Ok(total),
        }
        if !self.active {
            return send_parts(&mut self.inner, parts);
        }
        let limit = self.end_at().map(|n| n.saturating_sub(self.echoed) as usize);
        let want = limit.map_or(total, |l| l.min(total));
        let flip = self.plan.corrupt_after.filter(|_| !self.corrupted).and_then(|at| {
            let offset = at.checked_sub(self.echoed)? as usize;
            (offset < want).then_some(offset)
        });
        let n = match flip {
            _ if want == 0 => 0,
            Some(offset) => {
                let mut copy: Vec<u8> =
                    parts.iter().flat_map(|p| p.iter().copied()).take(want).collect();
                copy[offset] ^= 0xff;
                let n = self.inner.send(&copy)?;
                if n > offset {
                    self.corrupted = true;
                    self.happened.corrupted = true;
                }
                n
            }
            None => send_parts(&mut self.inner, &truncate(parts, want))?,
        };
        self.echoed += n as u64;
        if n < want || limit != Some(want) {
            return Ok(n); // the kernel refused bytes, or no end is reached yet
        }
        if self.plan.close_after.is_some() {
            self.inner.shutdown_write();
            self.end = End::Closed;
            self.happened.closed = true;
        } else if self.plan.stall_after.is_some() {
            self.end = End::Stalled;
            self.happened.stalled = true;
        } else {
            self.end = End::ResetPending;
        }
        Ok(total)
    }
}

/// The first `want` bytes of `parts`.
fn truncate<'a>(parts: &[&'a [u8]], mut want: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        if want == 0 {
            break;
        }
        let take = part.len().min(want);
        out.push(&part[..take]);
        want -= take;
    }
    out
}

fn send_parts<T: Transport>(inner: &mut T, parts: &[&[u8]]) -> Result<usize, Errno> {
    match parts {
        [] => Ok(0),
        [one] => inner.send(one),
        [a, b] => inner.send2(a, b),
        many => {
            let slices: Vec<IoSlice<'_>> = many.iter().map(|p| IoSlice::new(p)).collect();
            inner.send_vectored(&slices)
        }
    }
}

impl<T: Transport> Transport for Faulty<T> {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        match self.end {
            // Stalled: nothing is read (the peer's writes back up), and no new edge comes for
            // what is waiting.
            End::Stalled => Err(EAGAIN),
            End::ResetPending if self.inner.unacked() == 0 => {
                self.happened.reset = true;
                self.inner.reset_on_close();
                Err(ECONNRESET)
            }
            _ => self.inner.recv(buf),
        }
    }

    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        self.write(&[buf])
    }

    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        self.write(&[first, second])
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        let parts: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.write(&parts)
    }

    fn shutdown_write(&mut self) {
        if self.end == End::ResetPending {
            // The connection is closing before its reset was due (drain, idle): reset now.
            self.happened.reset = true;
            self.inner.reset_on_close();
        }
        self.inner.shutdown_write();
    }

    fn unacked(&self) -> usize {
        self.inner.unacked()
    }

    fn reset_on_close(&mut self) {
        self.inner.reset_on_close();
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}
