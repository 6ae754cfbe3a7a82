//! The server's counters.
//!
//! The reactor bumps plain integers in [`Stats`] (no atomics on the hot path) and publishes a copy
//! into [`SharedStats`] once per reactor turn, where [`crate::Handle::stats`] reads it. One macro
//! lists the counters once, for both.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// A snapshot of the server's counters (all totals since start, except `active`).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Stats {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        /// The published copy of [`Stats`], readable from any thread, with each listener's
        /// connection counters and the reactor's state.
        #[derive(Debug, Default)]
        pub struct SharedStats {
            $( $name: AtomicU64, )*
            listeners: Mutex<Vec<ListenerStats>>,
            state: AtomicU8,
        }

        impl SharedStats {
            /// Stores a snapshot. Single writer (the reactor), so relaxed stores suffice: each
            /// counter is individually exact, and a reader may see one turn's counters mixed
            /// with the previous turn's.
            pub fn publish(&self, stats: &Stats) {
                $( self.$name.store(stats.$name, Ordering::Relaxed); )*
            }

            /// Reads the last published snapshot.
            pub fn load(&self) -> Stats {
                Stats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl Stats {
            /// Every counter with its name, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }

            /// Every counter's name and description (its documentation), in declaration order.
            pub fn descriptions() -> &'static [(&'static str, &'static str)] {
                &[ $( (stringify!($name), concat!($($doc),*)), )* ]
            }

            /// Adds another reactor's counters to these.
            pub fn add(&mut self, other: &Stats) {
                $( self.$name += other.$name; )*
            }
        }
    };
}

counters! {
    /// Stream connections accepted and served.
    accepted,
    /// Stream connections accepted and closed at once because of `max_conns`.
    rejected,
    /// Served stream connections closed, for any reason.
    closed,
    /// Stream connections open now (echo connections and chat members).
    active,
    /// Connections closed because the peer reset them or a socket error occurred.
    resets,
    /// Connections closed by the idle timeout.
    idle_timeouts,
    /// Connections cut off when the drain timeout expired.
    drain_aborted,
    /// accept(2) failures (EMFILE and the like); each starts a backoff.
    accept_errors,
    /// Bytes received on stream connections (echo and chat).
    bytes_in,
    /// Bytes sent on stream connections (echo and chat).
    bytes_out,
    /// Datagrams received.
    datagrams_in,
    /// Datagrams echoed.
    datagrams_out,
    /// Datagrams that could not be echoed (the socket kept refusing and the queue was full, or
    /// the send failed).
    datagrams_dropped,
    /// Datagrams dropped by the low-source-port reflection guard.
    datagrams_low_port,
    /// Chat members in a room now.
    chat_members,
    /// Complete lines received from chat members (commands included).
    chat_lines,
    /// Lines queued to chat members other than their sender (notices and command answers not
    /// counted).
    chat_deliveries,
    /// Lines and notices replayed from a room's history (`/since`, `/history`).
    chat_replayed,
    /// Names taken back by a new connection while they lingered after a lost member.
    chat_reconnects,
    /// Chat members disconnected because their undelivered output would have passed the cap.
    slow_members,
    /// TLS handshakes completed.
    tls_handshakes,
    /// Of those, resumed sessions.
    tls_resumed,
    /// TLS handshakes that failed (a handshake error, plain bytes, a timeout).
    tls_failures,
    /// WebSocket opening handshakes answered with 101.
    ws_handshakes,
    /// WebSocket opening handshakes refused (an HTTP error answer) or timed out. A plain GET of
    /// `/`, answered with a short text, is not one.
    ws_failures,
    /// WebSocket data messages received whole (text and binary; control frames not counted).
    ws_messages_in,
    /// WebSocket data messages sent whole.
    ws_messages_out,
    /// WebSocket connections failed for a protocol error (a close 1002, 1003, 1007, 1009 or
    /// 1008 for unread pongs sent).
    ws_protocol_errors,
    /// Connections closed because they did not begin with a valid PROXY protocol header (on a
    /// listener with `proxy=`), or it did not come within the handshake timeout.
    proxy_refused,
    /// Faults: chunks of stream output held back by latency (JSON: `faults.delayed`).
    faults_delayed,
    /// Faults: times a connection's output waited for its rate.
    faults_throttled,
    /// Faults: chunks of stream output cut into slices (at least one cut).
    faults_sliced,
    /// Faults: connections that sent FIN after close-after bytes.
    faults_closed_after,
    /// Faults: connections reset after reset-after bytes.
    faults_reset_after,
    /// Faults: connections stalled after stall-after bytes.
    faults_stalled,
    /// Faults: stream connections with a corrupted byte, and corrupted datagrams.
    faults_corrupted,
    /// Faults: datagrams not echoed on purpose.
    faults_dropped,
    /// Faults: datagrams echoed twice on purpose.
    faults_duplicated,
}

/// A reactor's state, as [`SharedStats::state`] tells it (for health probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Bound, not yet serving.
    Starting,
    /// Serving.
    Running,
    /// Draining: listeners closed, connections finishing.
    Draining,
    /// Stopped.
    Stopped,
}

impl SharedStats {
    /// Publishes each listener's connection counters (in the ready line's order).
    pub fn publish_listeners(&self, listeners: &[ListenerStats]) {
        let mut shared = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        shared.clear();
        shared.extend_from_slice(listeners);
    }

    /// Each listener's last published connection counters (empty before the first accept).
    pub fn listeners(&self) -> Vec<ListenerStats> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// What the reactor is doing.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Starting,
            1 => State::Running,
            2 => State::Draining,
            _ => State::Stopped,
        }
    }
}

/// One listener's stream connections on one reactor (the counters of the same names in
/// [`Stats`], split by the listener that accepted them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ListenerStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused because of `max_conns`.
    pub rejected: u64,
    /// Served connections closed.
    pub closed: u64,
    /// Connections open now.
    pub active: u64,
}

impl ListenerStats {
    /// Adds another reactor's counters for the same listener.
    pub fn add(&mut self, other: &ListenerStats) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.closed += other.closed;
        self.active += other.active;
    }
}

impl Stats {
    /// The totals of several reactors' counters.
    pub fn total(reactors: &[Stats]) -> Stats {
        let mut total = Stats::default();
        for r in reactors {
            total.add(r);
        }
        total
    }

    /// The counters of a one-reactor server as a JSON event line (see [`event_json`]).
    pub fn to_event_json(&self, event: &str) -> String {
        event_json(event, std::slice::from_ref(self))
    }
}

/// The counters as a JSON event line: `{"event":NAME,...totals,"faults":{...},"reactors":[...]}`.
/// The `faults_*` counters go into the `faults` object without their prefix; `reactors` has one
/// entry per reactor (`active`, `accepted`: the connections it was given, `bytes_in`).
pub fn event_json(event: &str, reactors: &[Stats]) -> String {
    use std::fmt::Write;
    let total = Stats::total(reactors);
    let mut line = String::with_capacity(640 + 64 * reactors.len());
    let _ = write!(line, "{{\"event\":{}", serde_json::Value::from(event));
    let (faults, plain): (Vec<_>, Vec<_>) =
        total.fields().into_iter().partition(|(name, _)| name.starts_with("faults_"));
    for (name, value) in plain {
        let _ = write!(line, ",\"{name}\":{value}");
    }
    line.push_str(",\"faults\":{");
    for (i, (name, value)) in faults.into_iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(line, "{comma}\"{}\":{value}", &name["faults_".len()..]);
    }
    line.push_str("},\"reactors\":[");
    for (i, r) in reactors.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(
            line,
            "{comma}{{\"active\":{},\"accepted\":{},\"bytes_in\":{}}}",
            r.active, r.accepted, r.bytes_in
        );
    }
    line.push_str("]}");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_load_round_trips() {
        let shared = SharedStats::default();
        let stats =
            Stats { accepted: 3, bytes_in: 1 << 40, datagrams_low_port: 9, ..Stats::default() };
        shared.publish(&stats);
        assert_eq!(shared.load(), stats);
    }

    #[test]
    fn event_line_starts_with_event_and_has_every_counter() {
        let stats = Stats { closed: 2, faults_dropped: 3, ..Stats::default() };
        let line = stats.to_event_json("stopped");
        assert!(line.starts_with(r#"{"event":"stopped","#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["closed"], 2);
        assert_eq!(v["bytes_out"], 0);
        assert_eq!(v.as_object().unwrap().len(), 32, "event, 29 counters, faults, reactors");
        assert_eq!(v["reactors"], serde_json::json!([{"active":0,"accepted":0,"bytes_in":0}]));
        assert_eq!(v["faults"]["dropped"], 3);
        assert_eq!(v["faults"].as_object().unwrap().len(), 9);
        assert_eq!(v["faults"]["sliced"], 0);
    }
}
