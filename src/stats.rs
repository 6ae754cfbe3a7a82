//! The server's counters.
//!
//! The reactor bumps plain integers in [`Stats`] (no atomics on the hot path) and publishes a copy
//! into [`SharedStats`] once per reactor turn, where [`crate::Handle::stats`] reads it. One macro
//! lists the counters once, for both.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of the server's counters (all totals since start, except `active`).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// The published copy of [`Stats`], readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedStats {
            $( $name: AtomicU64, )*
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
    /// Chat members disconnected because their undelivered output would have passed the cap.
    slow_members,
}

impl Stats {
    /// The counters as a JSON event line: `{"event":NAME,...counters}`.
    pub fn to_event_json(&self, event: &str) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            event: &'a str,
            #[serde(flatten)]
            stats: &'a Stats,
        }
        serde_json::to_string(&Line { event, stats: self }).expect("plain integers serialize")
    }
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
        let stats = Stats { closed: 2, ..Stats::default() };
        let line = stats.to_event_json("stopped");
        assert!(line.starts_with(r#"{"event":"stopped","#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["closed"], 2);
        assert_eq!(v["bytes_out"], 0);
        assert_eq!(v.as_object().unwrap().len(), 19);
    }
}
