//! What the reactors of one server share when there are several (`--threads N`): each one's load,
//! its hand-off queue, chat relay queue, waker, command word and published counters. Nothing here
//! is touched per echoed message: only at accept (the first reactor picks the least loaded one and
//! hands it the connection), at close (a reactor counts its load down), once per turn that posted
//! chat mail (relayed to the other reactors' members), and for commands and shutdown.
//!
//! Why hand-offs and not SO_REUSEPORT for streams: the kernel's reuseport hash spreads many
//! connections well but a few badly (with 4 connections on 4 reactors, some reactors often get
//! none). Accepting on one reactor and handing each connection to the one with the fewest makes
//! the counts differ by at most one whatever the number of connections, at the cost of a queue
//! push and a wake-up per connection, never per message.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::behaviour::chat::history::Posted;
use crate::stats::{SharedStats, Stats};
use crate::transport::Stream;

/// A connection accepted by the first reactor for another one to serve.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub stream: Stream,
    /// The listener that accepted it (its behaviour, plan and TLS config apply).
    pub listener: usize,
    /// Its number, in accept order over the whole server (fault seeds use it).
    pub id: u64,
}

/// Chat mail relayed from the reactor where its sender is to every other one.
#[derive(Debug)]
pub(crate) struct Relayed {
    pub room: usize,
    pub post: Arc<Posted>,
    pub lines: u64,
}

/// One server's reactors, as seen by each of them.
#[derive(Debug)]
pub(crate) struct Peers {
    /// Stream connections each reactor serves, or is being handed.
    loads: Vec<AtomicUsize>,
    handoffs: Vec<Mutex<Vec<Handoff>>>,
    /// Chat mail for each reactor's members, from the other reactors, in each sender's order.
    relays: Vec<Mutex<Vec<Relayed>>>,
    wakers: Vec<Arc<Waker>>,
    controls: Vec<Arc<AtomicU8>>,
    stats: Vec<Arc<SharedStats>>,
}

impl Peers {
    pub(crate) fn new(
        wakers: Vec<Arc<Waker>>,
        controls: Vec<Arc<AtomicU8>>,
        stats: Vec<Arc<SharedStats>>,
    ) -> Self {
        let n = wakers.len();
        Peers {
            loads: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            handoffs: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            relays: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            wakers,
            controls,
            stats,
        }
    }

    /// The reactor with the fewest connections (the lowest index among equals), counted up by
    /// one for the connection about to be given to it.
    pub(crate) fn take_least_loaded(&self) -> usize {
        let (index, _) = self
            .loads
            .iter()
            .enumerate()
            .min_by_key(|(i, load)| (load.load(Ordering::Relaxed), *i))
            .expect("at least one reactor");
        self.loads[index].fetch_add(1, Ordering::Relaxed);
        index
    }

    /// Reactor `index` closed (or could not take) one connection.
    pub(crate) fn release(&self, index: usize) {
        self.loads[index].fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections served by all reactors together (for the process-wide `max_conns`).
    pub(crate) fn total_load(&self) -> usize {
        self.loads.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }

    /// Queues `handoff` for reactor `to` and wakes it.
    pub(crate) fn hand_over(&self, to: usize, handoff: Handoff) {
        self.handoffs[to].lock().unwrap_or_else(|e| e.into_inner()).push(handoff);
        let _ = self.wakers[to].wake();
    }

    /// The connections handed to reactor `index` since it last looked.
    pub(crate) fn take_handoffs(&self, index: usize) -> Vec<Handoff> {
        std::mem::take(&mut *self.handoffs[index].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Relays a turn's chat mail from reactor `from` to every other reactor (one lock and one
    /// wake-up per reactor per turn, whatever the number of lines).
    pub(crate) fn relay(&self, from: usize, mail: &[Relayed]) {
        for (to, (queue, waker)) in self.relays.iter().zip(&self.wakers).enumerate() {
            if to == from {
                continue;
            }
            let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.extend(mail.iter().map(|m| Relayed {
                room: m.room,
                post: Arc::clone(&m.post),
                lines: m.lines,
            }));
            drop(queue);
            let _ = waker.wake();
        }
    }

    /// The chat mail relayed to reactor `index` since it last looked.
    pub(crate) fn take_relayed(&self, index: usize) -> Vec<Relayed> {
        std::mem::take(&mut *self.relays[index].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends a command (drain, stop) to every reactor.
    pub(crate) fn command_all(&self, command: u8) {
        for (control, waker) in self.controls.iter().zip(&self.wakers) {
            control.fetch_max(command, Ordering::AcqRel);
            let _ = waker.wake();
        }
    }

    /// Every reactor's last published counters.
    pub(crate) fn snapshot(&self) -> Vec<Stats> {
        self.stats.iter().map(|s| s.load()).collect()
    }
}
