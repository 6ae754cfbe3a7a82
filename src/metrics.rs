//! The server's scrape endpoint (`--metrics ADDR`): `GET /metrics` in the OpenMetrics text
//! format that Prometheus reads (written by `prometheus-client`), and `GET /healthz`: `200 ok`
//! while serving, `503` while starting, draining or stopped. Anything else is 404.
//!
//! Every counter of the stopped line is a family `ricochet_NAME` (counters end in `_total` on
//! the wire; `active` and `chat_members` are gauges) with one sample per reactor
//! (`reactor="0"`, ...): their sum is the stopped line's. Each stream listener's connection
//! counters are `ricochet_listener_{accepted,rejected,closed}_total` and
//! `ricochet_listener_active`, labelled `listener="tcp://127.0.0.1:7007"` (the listener's URL as
//! `--listen` takes it: `unix:/run/echo.sock`, `chat://127.0.0.1:7008?room=lobby`). Byte and message counters are per reactor only: the data path does
//! not look up its listener per message. Also `ricochet_draining` (0 or 1),
//! `ricochet_build_info{version}` and `process_start_time_seconds`.
//!
//! The numbers are those the reactors published at the end of their last turn, the same as
//! [`crate::Handle::stats`] reads.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::ListenSpec;
use crate::http::{Pages, Response};
use crate::stats::{ListenerStats, SharedStats, State, Stats};

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The counters of [`Stats`] that are gauges (values now, not totals).
const GAUGES: [&str; 2] = ["active", "chat_members"];

/// A listener counter family: its name, help, and which counter.
type ListenerCounter = (&'static str, &'static str, fn(&ListenerStats) -> u64);

const LISTENER_COUNTERS: [ListenerCounter; 3] = [
    ("ricochet_listener_accepted", "Connections the listener accepted and served.", |s| s.accepted),
    ("ricochet_listener_rejected", "Connections the listener refused over max-conns.", |s| {
        s.rejected
    }),
    ("ricochet_listener_closed", "Served connections of the listener closed.", |s| s.closed),
];

/// What `/metrics` and `/healthz` read: every reactor's published counters.
#[derive(Debug)]
pub(crate) struct ServerPages {
    registry: Registry,
    reactors: Arc<[Arc<SharedStats>]>,
}

impl ServerPages {
    /// `listeners`: the server's listeners in the ready line's order.
    pub(crate) fn new(reactors: Vec<Arc<SharedStats>>, listeners: &[ListenSpec]) -> ServerPages {
        let reactors: Arc<[Arc<SharedStats>]> = reactors.into();
        let names = listeners.iter().map(|spec| (!spec.is_udp(), spec.to_string())).collect();
        let mut registry = Registry::default();
        registry.register(
            "ricochet_build",
            "The ricochet build serving",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let started = crate::sys::process_start_time().unwrap_or(0.0);
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            ConstGauge::new(started),
        );
        registry.register_collector(Box::new(Counters {
            reactors: Arc::clone(&reactors),
            listeners: names,
        }));
        ServerPages { registry, reactors }
    }

    fn metrics(&self) -> Response {
        let mut body = String::with_capacity(16 * 1024);
        match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            Ok(()) => Response { status: 200, content_type: CONTENT_TYPE, body },
            Err(_) => Response::text(500, "the metrics could not be written\n"),
        }
    }

    fn health(&self) -> Response {
        match self.reactors[0].state() {
            State::Running => Response::text(200, "ok\n"),
            State::Starting => Response::text(503, "starting\n"),
            State::Draining => Response::text(503, "draining\n"),
            State::Stopped => Response::text(503, "stopped\n"),
        }
    }
}

impl Pages for ServerPages {
    fn get(&self, path: &str) -> Response {
        match path {
            "/metrics" => self.metrics(),
            "/healthz" => self.health(),
            other => Response::not_found(other),
        }
    }
}

/// Reads the reactors' counters at each scrape.
#[derive(Debug)]
struct Counters {
    reactors: Arc<[Arc<SharedStats>]>,
    /// Each listener: whether it is a stream listener (it has connection counters), its URL.
    listeners: Vec<(bool, String)>,
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Each reactor's counters, in `Stats::descriptions`' order.
        let each: Vec<Vec<(&str, u64)>> = self.reactors.iter().map(|r| r.load().fields()).collect();
        let labels: Vec<[(&str, String); 1]> =
            (0..each.len()).map(|i| [("reactor", i.to_string())]).collect();
        let mut name = String::new();
        for (i, (field, help)) in Stats::descriptions().iter().enumerate() {
            name.clear();
            let _ = write!(name, "ricochet_{field}");
            let gauge = GAUGES.contains(field);
            let kind = if gauge { MetricType::Gauge } else { MetricType::Counter };
            let mut family = encoder.encode_descriptor(&name, help.trim(), None, kind)?;
            for (fields, label) in each.iter().zip(&labels) {
                let value = fields[i].1;
                let sample = family.encode_family(label)?;
                match gauge {
                    true => ConstGauge::new(value as i64).encode(sample)?,
                    false => ConstCounter::new(value).encode(sample)?,
                }
            }
        }

        let mut by_listener = vec![ListenerStats::default(); self.listeners.len()];
        for reactor in self.reactors.iter() {
            for (sum, one) in by_listener.iter_mut().zip(reactor.listeners()) {
                sum.add(&one);
            }
        }
        let streams: Vec<([(&str, &str); 1], ListenerStats)> = self
            .listeners
            .iter()
            .zip(by_listener)
            .filter(|((stream, _), _)| *stream)
            .map(|((_, url), stats)| ([("listener", url.as_str())], stats))
            .collect();
        for (name, help, value) in LISTENER_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, stats) in &streams {
                ConstCounter::new(value(stats)).encode(family.encode_family(label)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "ricochet_listener_active",
            "Connections of the listener open now.",
            None,
            MetricType::Gauge,
        )?;
        for (label, stats) in &streams {
            ConstGauge::new(stats.active as i64).encode(family.encode_family(label)?)?;
        }

        let draining = matches!(self.reactors[0].state(), State::Draining);
        let family = encoder.encode_descriptor(
            "ricochet_draining",
            "1 while the server drains (listeners closed, connections finishing).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(draining as i64).encode(family)
    }
}
