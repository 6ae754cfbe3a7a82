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
//! - `latency=D` (`jitter=J`): each chunk written is held and goes out D later (± J, uniform),
//!   never before an earlier chunk. Held bytes are bounded (at most `--max-pending`; past that
//!   the echo keeps the rest and stops reading, as with a slow peer). The reactor wakes the
//!   connection with a `Resume` deadline at the next release; the end-of-stream faults above
//!   count bytes as they are released.
//! - `rate=R`: released output is throttled to R bytes per second by a token bucket holding at
//!   most a tenth of a second's worth (so the first second is throttled too), at least one byte.
//! - `slice=N` or `slice=MIN..MAX` (`slice-delay=D`): released output goes out in pieces of N
//!   (or a fresh draw from MIN..=MAX) bytes, one write each, D apart. A piece may span chunks;
//!   a chunk counts as sliced once when a piece ends inside it.
//!
//! Byte counts run from the connection's start (under WebSocket framing: from the first byte
//! after the upgrade's answer, which goes out unshaped; the plan then acts on the frames). A partial write is returned only when the
//! kernel refused bytes, so the echo's "a writable edge will follow" rule holds. Over TLS the
//! plan acts on the plaintext: an end at byte 0 waits for the handshake to complete (plaintext
//! that arrives with the handshake's last records is read, and dropped by the end).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::{EAGAIN, ECONNRESET};

use crate::faults::{Faults, Rng};
use crate::stats::Stats;
use crate::sys::Errno;
use crate::transport::{write_by_parts, Transport};

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
    /// This connection's draw at accept, uniform in 0..1: it is faulty while below the plan's `p`.
    draw: f64,
    /// This connection drew below the plan's `p` (and the plan was not removed).
    active: bool,
    /// Bytes of echo that went out.
    echoed: u64,
    end: End,
    corrupted: bool,
    /// Things that happened since the reactor last counted them.
    happened: Happened,
    /// Chunks held until their release time, in order.
    held: VecDeque<Held>,
    held_bytes: usize,
    /// The most bytes held at once.
    cap: usize,
    /// The socket refused a release: wait for its writable edge.
    blocked: bool,
    /// The reactor's time, set before each serving.
    now: Instant,
    /// Draws for jitter.
    rng: Rng,
    /// The earliest `Resume` deadline armed for this connection and not yet fired.
    armed: Option<Instant>,
    /// Rate: bytes that may go out now, and when they were last topped up.
    tokens: f64,
    refilled: Instant,
    /// Rate: released output waits for tokens until then.
    throttled_until: Option<Instant>,
    /// Slice: bytes left in the current piece (0: draw the next piece's size).
    piece_left: usize,
    /// Slice: the next piece waits until then (slice-delay).
    next_piece_at: Option<Instant>,
    /// The hold refused the echo bytes although the socket did not: the echo waits for a
    /// writable edge that only the reactor can give (a `Resume` once the hold has room).
    owes_edge: bool,
    /// A catch-up waits for the inner transport's handshake to end.
    after_handshake: bool,
    /// A WebSocket upgrade above is going on: bytes pass unshaped and uncounted.
    upgrading: bool,
}

/// A chunk of output held for a later release.
#[derive(Debug)]
struct Held {
    at: Instant,
    bytes: Vec<u8>,
    /// Bytes of `bytes` already sent.
    sent: usize,
    /// A slice ended inside this chunk (counted once).
    cut: bool,
}

/// Fault events, counted by the reactor into [`Stats`].
#[derive(Debug, Default, Clone, Copy)]
struct Happened {
    closed: bool,
    reset: bool,
    stalled: bool,
    corrupted: bool,
    delayed: u64,
    throttled: u64,
    sliced: u64,
}

// One type on purpose (about 340 lines): every stream fault acts on the same output, in the same
// byte counts and the same release order (a rate throttles what latency held, a slice cuts what
// the rate lets out, an end counts what was released); split, each part would need the others'
// state.
impl<T: Transport> Faulty<T> {
    /// Wraps `inner`; `rng` is the connection's own generator, whose first draw decides `p`
    /// (see [`Faults::applies`]); `cap` bounds the bytes held for latency.
    /// `echoed`: bytes the connection echoed before it got the plan (0 at accept).
    pub(crate) fn new(
        inner: T,
        plan: Arc<Faults>,
        rng: Rng,
        cap: usize,
        now: Instant,
        echoed: u64,
    ) -> Self {
        let mut faulty = Faulty::new_waiting(inner, plan, rng, cap, now, echoed, false);
        faulty.catch_up();
        faulty
    }

    fn new_waiting(
        inner: T,
        plan: Arc<Faults>,
        mut rng: Rng,
        cap: usize,
        now: Instant,
        echoed: u64,
        upgrading: bool,
    ) -> Self {
        let draw = rng.unit();
        Faulty {
            draw,
            active: plan.applies(draw),
            inner,
            plan,
            echoed,
            end: End::Open,
            corrupted: false,
            happened: Happened::default(),
            held: VecDeque::new(),
            held_bytes: 0,
            cap,
            blocked: false,
            now,
            rng,
            armed: None,
            tokens: 0.0,
            refilled: now,
            throttled_until: None,
            piece_left: 0,
            next_piece_at: None,
            owes_edge: false,
            after_handshake: false,
            upgrading,
        }
    }

    /// Wraps `inner` under a WebSocket upgrade that is yet to happen: until the framing above
    /// says it is done ([`Transport::upgraded`]), bytes pass unshaped and uncounted, so the plan
    /// acts on the frames and counts from the first byte after the upgrade's answer.
    pub(crate) fn under_upgrade(
        inner: T,
        plan: Arc<Faults>,
        rng: Rng,
        cap: usize,
        now: Instant,
    ) -> Self {
        let mut faulty = Faulty::new_waiting(inner, plan, rng, cap, now, 0, true);
        faulty.catch_up();
        faulty
    }

    /// An end the plan puts at or behind what was already echoed happens now, not at the next
    /// write (`stall-after=0`; a plan set at run time on a connection that echoed more). Not
    /// during a handshake: the plan acts on the plaintext, so the first read after the handshake
    /// catches up instead.
    fn catch_up(&mut self) {
        if self.upgrading {
            // Caught up once the upgrade is done.
        } else if self.inner.is_handshaking() {
            self.after_handshake = true;
        } else if self.held.is_empty() {
            let _ = self.write_now(&[]);
        }
    }

    /// Replaces the plan (`None`: removes it), at once. Byte counts still run from the
    /// connection's start; a stalled connection that the new plan does not stall resumes, and an
    /// end the new plan puts behind what was already echoed happens now. A FIN or a reset
    /// already on its way stays. Held output goes out in order, at the times it was given.
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<Faults>>) {
        match plan {
            Some(plan) => {
                self.active = plan.applies(self.draw);
                self.plan = plan;
            }
            None => self.active = false,
        }
        self.tokens = 0.0;
        self.refilled = self.now;
        self.throttled_until = None;
        self.next_piece_at = None;
        self.piece_left = 0;
        let stalls = self.active && self.plan.stall_after.is_some_and(|n| n <= self.echoed);
        if self.end == End::Stalled && !stalls {
            self.end = End::Open;
        }
        self.catch_up();
    }

    /// Whether the plan is gone and left nothing behind: the connection can be plain again.
    pub(crate) fn is_spent(&self) -> bool {
        !self.active && self.held.is_empty() && self.end == End::Open
    }

    /// The transport under the plan.
    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    /// Slice: the size of the next write of at most `rest` bytes (`rest` when not slicing).
    fn piece(&mut self, rest: usize) -> usize {
        let Some((min, max)) = self.plan.slice.filter(|_| self.active) else { return rest };
        if self.piece_left == 0 {
            let size = min + self.rng.below(max - min + 1);
            self.piece_left = usize::try_from(size).unwrap_or(usize::MAX);
        }
        self.piece_left.min(rest)
    }

    /// Rate: the bucket's size, a tenth of a second's worth (at least one byte).
    fn burst(&self, rate: u64) -> f64 {
        (rate as f64 / 10.0).max(1.0)
    }

    /// Rate: how many of `want` bytes may go out now; if fewer, when to look again.
    fn allowance(&mut self, want: usize) -> usize {
        let Some(rate) = self.plan.rate.filter(|_| self.active) else { return want };
        let burst = self.burst(rate);
        let elapsed = self.now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst);
        self.refilled = self.now;
        let allowed = (self.tokens as usize).min(want);
        if allowed < want {
            // Wait until the bucket holds what is left of this chunk, or a full bucket.
            let target = ((want - allowed) as f64).min(burst);
            let wait = (target - (self.tokens - allowed as f64)).max(1.0) / rate as f64;
            self.throttled_until = Some(self.now + Duration::from_secs_f64(wait));
            self.happened.throttled += 1;
        }
        allowed
    }

    /// The time to arm a `Resume` deadline for, unless one that early is armed already.
    pub(crate) fn arm_at(&mut self) -> Option<Instant> {
        let at = self.wake_at(self.now)?;
        if self.armed.is_some_and(|armed| armed <= at) {
            return None;
        }
        self.armed = Some(at);
        Some(at)
    }

    /// A `Resume` deadline fired.
    pub(crate) fn fired(&mut self) {
        self.armed = None;
    }

    /// The reactor is about to give the echo the writable edge it waited for.
    pub(crate) fn edge_given(&mut self) {
        self.owes_edge = false;
    }

    /// The reactor's time for this serving.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Whether output is held for a later release.
    fn timed(&self) -> bool {
        self.active
            && (self.plan.latency.is_some()
                || self.plan.jitter.is_some()
                || self.plan.rate.is_some()
                || self.plan.slice.is_some())
    }

    /// A writable edge came: the socket takes bytes again.
    pub(crate) fn writable(&mut self) {
        self.blocked = false;
    }

    /// The transport under the plan.
    pub(crate) fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Sends the held chunks that are due, in order, piece by piece, until the socket refuses,
    /// the rate's tokens run out or a slice delay begins.
    pub(crate) fn release(&mut self) -> Result<(), Errno> {
        let now = self.now;
        if [self.throttled_until, self.next_piece_at].iter().flatten().any(|t| *t > now) {
            return Ok(());
        }
        self.throttled_until = None;
        self.next_piece_at = None;
        while !self.blocked {
            let Some(front) = self.held.front() else { break };
            if front.at > now {
                break;
            }
            let rest = front.bytes.len() - front.sent;
            let piece = self.piece(rest);
            let allowed = self.allowance(piece);
            let mut chunk = self.held.pop_front().expect("checked");
            let n = match allowed {
                0 => 0,
                _ => match self.write_now(&[&chunk.bytes[chunk.sent..chunk.sent + allowed]]) {
                    Ok(n) => n,
                    Err(EAGAIN) => 0,
                    Err(e) => {
                        self.held.push_front(chunk);
                        return Err(e);
                    }
                },
            };
            self.tokens -= n as f64;
            self.held_bytes -= n;
            chunk.sent += n;
            let slicing = self.active && self.plan.slice.is_some();
            if slicing {
                self.piece_left -= n;
                if n == piece && piece < rest && !chunk.cut {
                    chunk.cut = true;
                    self.happened.sliced += 1;
                }
            }
            if chunk.sent < chunk.bytes.len() {
                self.held.push_front(chunk);
            }
            if n < allowed {
                self.blocked = true; // refused bytes: a writable edge will follow
                break;
            }
            if allowed < piece {
                break; // throttled: the rest waits for tokens
            }
            if self.piece_left == 0 && slicing {
                if let Some(delay) = self.plan.slice_delay.filter(|d| !d.is_zero()) {
                    self.next_piece_at = Some(now + delay);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Holds `parts` (as much as fits) until `now` + latency ± jitter, behind earlier chunks.
    fn hold(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        let room = self.cap.saturating_sub(self.held_bytes);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if room < total {
            self.owes_edge = true; // a `Resume` wakes the echo once there is room, as an edge would
        }
        if room == 0 {
            return Err(EAGAIN);
        }
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).take(room).collect();
        // Without a plan (removed while output was held) new bytes only queue behind the rest.
        let delay = if self.active { self.plan.delay(&mut self.rng) } else { Duration::ZERO };
        let at = self.held.back().map_or(self.now + delay, |last| (self.now + delay).max(last.at));
        self.held_bytes += bytes.len();
        let n = bytes.len();
        self.held.push_back(Held { at, bytes, sent: 0, cut: false });
        if self.active && self.plan.delays() {
            self.happened.delayed += 1;
        }
        Ok(n)
    }

    /// Adds what happened since the last call to the counters.
    pub(crate) fn count(&mut self, stats: &mut Stats) {
        let h = std::mem::take(&mut self.happened);
        stats.faults_closed_after += h.closed as u64;
        stats.faults_reset_after += h.reset as u64;
        stats.faults_stalled += h.stalled as u64;
        stats.faults_corrupted += h.corrupted as u64;
        stats.faults_delayed += h.delayed;
        stats.faults_throttled += h.throttled;
        stats.faults_sliced += h.sliced;
    }

    /// When the reactor must look at this connection again: a reset waiting for acks, an echo
    /// refused by a hold that has room again, or the next release of held output.
    pub(crate) fn wake_at(&self, now: Instant) -> Option<Instant> {
        if self.end == End::ResetPending {
            return Some(now + RESET_POLL);
        }
        if self.owes_edge && !self.blocked && self.held_bytes < self.cap {
            return Some(now);
        }
        match self.held.front() {
            Some(front) if !self.blocked => [self.throttled_until, self.next_piece_at]
                .into_iter()
                .flatten()
                .chain([front.at])
                .max(),
            _ => None,
        }
    }

    /// A reset waiting for acks: true once it may go (everything sent was acknowledged).
    pub(crate) fn reset_due(&self) -> bool {
        self.end == End::ResetPending && self.inner.unacked() == 0
    }

    /// The byte count at which the plan ends the echo, if it does.
    fn end_at(&self) -> Option<u64> {
        self.plan.close_after.or(self.plan.reset_after).or(self.plan.stall_after)
    }

    /// Writes `parts` (in order) as the plan allows: held for later under latency, else at once.
    fn write(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        if self.upgrading {
            return send_parts(&mut self.inner, parts); // the upgrade's answer, unshaped
        }
        // Behind held output, even when the plan no longer holds any: order is kept.
        if (self.timed() || !self.held.is_empty()) && self.end == End::Open {
            return self.hold(parts);
        }
        self.write_now(parts)
    }

    /// Writes `parts` to the socket now, applying the end-of-stream and corruption faults.
    fn write_now(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
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
            _ if self.upgrading => self.inner.recv(buf),
            _ if self.after_handshake => {
                // The handshake's records go through; once it is over, the plan catches up (a
                // stall or a close at byte 0 happens now, before any plaintext is echoed).
                let read = self.inner.recv(buf);
                if !self.inner.is_handshaking() {
                    self.after_handshake = false;
                    self.catch_up();
                }
                read
            }
            _ => self.inner.recv(buf),
        }
    }

    write_by_parts!(write);

    fn has_buffered(&self) -> bool {
        !self.held.is_empty() || self.inner.has_buffered()
    }

    fn upgraded(&mut self) {
        if self.upgrading {
            self.upgrading = false;
            self.catch_up();
        }
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn short_read_drains(&self) -> bool {
        self.inner.short_read_drains()
    }

    fn reserve(&self) -> usize {
        self.inner.reserve()
    }

    fn cap(&self, cap: usize) -> usize {
        self.inner.cap(cap)
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

    fn note_read_closed(&mut self) {
        self.inner.note_read_closed();
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}
