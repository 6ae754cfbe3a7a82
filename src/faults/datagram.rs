//! A datagram fault plan applied to a UDP echo socket's replies: each received datagram is
//! dropped, corrupted or duplicated by its draws ([`misbehave`]), and with `latency`/`jitter` a
//! reply is held until its own time ([`Misbehaviour::delayed`]); `udp.rs` sends what comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Faults, Rng};
use crate::stats::Stats;

/// Applies a datagram fault plan to one received datagram (corrupting it in place); returns how
/// many copies to echo: 0 (dropped), 1 or 2 (duplicated).
pub(crate) fn misbehave(
    plan: &Faults,
    rng: &mut Rng,
    datagram: &mut [u8],
    stats: &mut Stats,
) -> usize {
    if rng.chance(plan.drop) {
        stats.faults_dropped += 1;
        return 0;
    }
    if rng.chance(plan.corrupt) && !datagram.is_empty() {
        let at = rng.below(datagram.len() as u64) as usize;
        datagram[at] ^= 0xff;
        stats.faults_corrupted += 1;
    }
    if rng.chance(plan.dup) {
        stats.faults_duplicated += 1;
        return 2;
    }
    1
}

/// A reply held for latency: ordered by release time, then by arrival.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Delayed {
    pub at: Instant,
    pub seq: u64,
    pub addr: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A socket's fault plan with its generator and the replies it holds.
#[derive(Debug)]
pub(crate) struct Misbehaviour {
    pub plan: Faults,
    pub rng: Rng,
    pub delayed: BinaryHeap<Reverse<Delayed>>,
    pub delayed_bytes: usize,
    pub next_seq: u64,
    /// The earliest release deadline armed and not yet fired.
    pub armed: Option<Instant>,
}
