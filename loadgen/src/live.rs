//! Following a run while it goes. `--live` prints each second of the measured period as one JSON
//! line on stdout once every load thread has reported it — `{"event":"interval","t":0.0,
//! "messages":…,"p50_us":…,"p99_us":…,"max_us":…}`, the fields of the final report's
//! `intervals`, which the lines equal one for one (the last, partial second comes at the end).
//! `--metrics ADDR` serves the running test for Prometheus over the server's small HTTP listener
//! (`ricochet::http`): messages and errors so far, the last whole second's rate and latency, the
//! run's latency so far, and the seconds measured.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use ricochet::http::{HttpServer, Pages, Response};

use crate::engine::Progress;
use crate::report::IntervalSummary;
use crate::tally::new_histogram;

/// Where each completed second goes: stdout (`--live`), the metrics listener's state, or both.
#[derive(Debug)]
pub struct Live {
    print: bool,
    shared: Option<Arc<Shared>>,
    /// Seconds printed so far (the next to print).
    printed: u64,
    /// A duration run's measured seconds: its last second is printed at the end (messages
    /// echoed after the period count in it), and seconds past it are not seconds of the run.
    last: Option<u64>,
    /// The metrics listener, serving until the run ends.
    server: Option<HttpServer>,
}

impl Live {
    /// `print`: `--live`; `metrics`: `--metrics ADDR`; `seconds`: a duration run's measured
    /// seconds; `info`: the target and protocol, for `loadgen_run_info`.
    pub fn new(
        print: bool,
        metrics: Option<std::net::SocketAddr>,
        seconds: Option<u64>,
        progress: Vec<Arc<Progress>>,
        warmup_end: Instant,
        info: [(&'static str, String); 2],
    ) -> Result<Live, crate::Error> {
        let (shared, server) = match metrics {
            None => (None, None),
            Some(addr) => {
                let state = Mutex::new(Snapshot { last: None, run: new_histogram() });
                let shared = Arc::new(Shared { progress, state, warmup_end });
                let pages = Arc::new(LivePages::new(Arc::clone(&shared), info));
                let server = HttpServer::bind(addr, pages, "metrics")
                    .map_err(|e| crate::Error::new(e.to_string()))?;
                (Some(shared), Some(server))
            }
        };
        Ok(Live { print, shared, printed: 0, last: seconds, server })
    }

    /// The metrics listener's address, if there is one.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(HttpServer::local_addr)
    }

    /// Second `index` of the measured period is complete (every thread reported it). `end`: the
    /// run is over, and every second left is part of the result.
    pub fn second(&mut self, index: u64, hist: &Histogram<u64>, end: bool) {
        if index < self.printed || (!end && self.last.is_some_and(|last| index + 1 >= last)) {
            return;
        }
        if self.print {
            let summary = IntervalSummary::of(index, hist);
            #[derive(serde::Serialize)]
            struct Line<'a> {
                event: &'static str,
                #[serde(flatten)]
                summary: &'a IntervalSummary,
            }
            let line = Line { event: "interval", summary: &summary };
            let text = serde_json::to_string(&line).expect("plain values serialize");
            ricochet::output::stdout_line(&text);
        }
        if let Some(shared) = &self.shared {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.run.add(hist).expect("same bounds");
            state.last = Some((index, hist.clone()));
        }
        self.printed = index + 1;
    }
}

/// What the metrics listener reads: each thread's progress, and the seconds completed so far.
#[derive(Debug)]
struct Shared {
    progress: Vec<Arc<Progress>>,
    state: Mutex<Snapshot>,
    warmup_end: Instant,
}

#[derive(Debug)]
struct Snapshot {
    /// The last completed second (its index: the seconds completed are one more) and its
    /// latencies (their count: the current rate).
    last: Option<(u64, Histogram<u64>)>,
    /// Every completed second's latencies.
    run: Histogram<u64>,
}

#[derive(Debug)]
struct LivePages {
    registry: Registry,
}

impl LivePages {
    fn new(shared: Arc<Shared>, info: [(&'static str, String); 2]) -> LivePages {
        let mut registry = Registry::default();
        let mut labels = vec![("version", env!("CARGO_PKG_VERSION").to_owned())];
        labels.extend(info);
        registry.register("loadgen_run", "The run being measured", Info::new(labels));
        registry.register_collector(Box::new(Running(shared)));
        LivePages { registry }
    }
}

impl Pages for LivePages {
    fn get(&self, path: &str) -> Response {
        match path {
            "/metrics" => {
                let mut body = String::with_capacity(4096);
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => {
                        let content_type = ricochet::metrics::CONTENT_TYPE;
                        Response { status: 200, content_type, body }
                    }
                    Err(_) => Response::text(500, "the metrics could not be written\n"),
                }
            }
            "/healthz" => Response::text(200, "ok\n"),
            other => Response::not_found(other),
        }
    }
}

#[derive(Debug)]
struct Running(Arc<Shared>);

impl Collector for Running {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let sum = |f: fn(&Progress) -> u64| -> u64 { shared.progress.iter().map(|p| f(p)).sum() };
        let messages = sum(|p| p.messages.load(Ordering::Relaxed));
        let errors = sum(|p| p.errors.load(Ordering::Relaxed));
        let counters = [
            ("loadgen_messages", "Messages completed in the measured period so far.", messages),
            ("loadgen_errors", "Errors so far (of any cause).", errors),
        ];
        for (name, help, value) in counters {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        let elapsed = Instant::now().saturating_duration_since(shared.warmup_end).as_secs_f64();
        let family = encoder.encode_descriptor(
            "loadgen_measured_seconds",
            "Seconds of the measured period so far (0 during the warm-up).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(elapsed).encode(family)?;

        let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let family = encoder.encode_descriptor(
            "loadgen_seconds_completed",
            "Whole seconds every load thread has reported.",
            None,
            MetricType::Gauge,
        )?;
        let seconds = state.last.as_ref().map_or(0, |(index, _)| index + 1);
        ConstGauge::new(seconds as i64).encode(family)?;
        let rate = state.last.as_ref().map_or(0, |(_, h)| h.len());
        let family = encoder.encode_descriptor(
            "loadgen_rate",
            "Messages completed in the last whole second (the current rate, per second).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(rate as i64).encode(family)?;
        let empty = new_histogram();
        let last = state.last.as_ref().map_or(&empty, |(_, h)| h);
        let latencies = [
            ("loadgen_last_second_latency_seconds", "Latency in the last whole second.", last),
            ("loadgen_run_latency_seconds", "Latency over the whole seconds so far.", &state.run),
        ];
        for (name, help, hist) in latencies {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (quantile, q) in [("0.5", 0.5), ("0.99", 0.99), ("0.999", 0.999), ("1", 1.0)] {
                let seconds = match hist.is_empty() {
                    true => 0.0,
                    false => hist.value_at_quantile(q) as f64 / 1e9,
                };
                let labels = [("quantile", quantile)];
                ConstGauge::new(seconds).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
