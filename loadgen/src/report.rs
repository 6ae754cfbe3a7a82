//! Results: per-thread tallies merged into one [`Report`], printed as text, as the one JSON
//! object of the contract, or as an HdrHistogram interval log (hlog).
//!
//! Latencies are recorded in nanoseconds and reported in microseconds (fractions kept).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

pub use crate::results::{decode_histogram, read_hlog};
use crate::tally::{Cause, Tally};

/// Latency summary in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest echo.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Slowest echo.
    pub max: f64,
}

impl Latency {
    /// Summarises a histogram of nanoseconds.
    pub fn of(hist: &Histogram<u64>) -> Latency {
        if hist.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            min: us(hist.min()),
            mean: hist.mean() / 1000.0,
            p50: us(hist.value_at_quantile(0.5)),
            p90: us(hist.value_at_quantile(0.9)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            p9999: us(hist.value_at_quantile(0.9999)),
            max: us(hist.max()),
        }
    }
}

/// The JSON report: exactly the keys of the contract, in its order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The target as used (`tcp://127.0.0.1:7007`).
    pub target: String,
    /// `tcp`, `udp` or `unix`.
    pub proto: &'static str,
    /// Connections (UDP: sockets).
    pub connections: u32,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection at most.
    pub depth: usize,
    /// Requested messages per second (open loop); `null` in closed loop.
    pub rate: Option<f64>,
    /// The measured period, seconds.
    pub duration_s: f64,
    /// Echoes completed of messages sent after the warm-up.
    pub messages: u64,
    /// messages × size: payload echoed back.
    pub bytes: u64,
    /// Achieved messages per second.
    pub msgs_per_sec: f64,
    /// Achieved payload bytes per second.
    pub bytes_per_sec: f64,
    /// Errors of every cause.
    pub errors: u64,
    /// Messages whose echo differed from what was sent.
    pub mismatches: u64,
    /// UDP datagrams never echoed.
    pub lost: u64,
    /// Latency from first byte sent (or intended, open loop) to last byte back; chat: from a
    /// line's send (or intended) time to its receipt by each member.
    pub latency_us: Latency,
    /// `errors` by cause.
    pub error_causes: ErrorCauses,
    /// UDP replies to a datagram already answered (or never sent).
    pub duplicated: u64,
    /// UDP replies that arrived after the reply to a later datagram of the same socket.
    pub reordered: u64,
    /// Chat only: members that published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishers: Option<usize>,
    /// Chat only: lines received by members other than their publisher (≈ messages × the
    /// other members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
    /// Chat only: deliveries per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_sec: Option<f64>,
    /// Connections established in the measured period (connect, and the TLS handshake; with
    /// `--reconnect-every`, every reconnect).
    pub connects: u64,
    /// How long those took, from connect(2) to the end of the handshake.
    pub connect_latency_us: Latency,
    /// TLS only: certificates were not verified (`--insecure`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// The whole latency histogram of the measured period, values in ns: HdrHistogram's
    /// compressed V2 encoding in base64 (as in an hlog line). [`decode_histogram`] reads it.
    pub histogram: String,
    /// One entry per second of the measured period.
    pub intervals: Vec<IntervalSummary>,
    /// When the measured period began, Unix seconds (with fractions): results of loadgens on
    /// several hosts line up by it (`--start-at`, `loadgen merge`).
    pub start_unix: f64,
}

/// One second of the measured period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct IntervalSummary {
    /// Seconds from the start of the measured period.
    pub t: f64,
    /// Messages completed in it.
    pub messages: u64,
    /// Its median latency.
    pub p50_us: f64,
    /// Its 99th percentile.
    pub p99_us: f64,
    /// Its slowest.
    pub max_us: f64,
}

impl IntervalSummary {
    /// Second `index` of the measured period, from its latencies (ns).
    pub fn of(index: u64, hist: &Histogram<u64>) -> IntervalSummary {
        let l = Latency::of(hist);
        let (p50_us, p99_us, max_us) = (l.p50, l.p99, l.max);
        IntervalSummary { t: index as f64, messages: hist.len(), p50_us, p99_us, max_us }
    }
}

/// Encodes a histogram as the JSON's `histogram`: compressed V2, base64.
pub fn encode_histogram(hist: &Histogram<u64>) -> String {
    use base64::Engine;
    use hdrhistogram::serialization::Serializer;
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(hist, &mut bytes).expect("serializing to memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `loadgen compare`: one row per figure, one column per result (file name), each with its
/// ratio to the first result's.
pub fn compare_table(results: &[(String, serde_json::Value)]) -> Result<String, String> {
    type Figure = (&'static str, fn(&serde_json::Value) -> Option<f64>);
    let figures: [Figure; 6] = [
        ("msgs/s", |v| v["msgs_per_sec"].as_f64()),
        ("p50 µs", |v| v["latency_us"]["p50"].as_f64()),
        ("p99 µs", |v| v["latency_us"]["p99"].as_f64()),
        ("p99.9 µs", |v| v["latency_us"]["p999"].as_f64()),
        ("max µs", |v| v["latency_us"]["max"].as_f64()),
        ("errors", |v| v["errors"].as_f64()),
    ];
    for (name, v) in results {
        if figures.iter().any(|(_, get)| get(v).is_none()) {
            return Err(format!("{name}: not a loadgen result (run loadgen with --json or --out)"));
        }
    }
    let mut out = String::new();
    let _ = write!(out, "{:<10}", "");
    for (name, _) in results {
        let short = std::path::Path::new(name)
            .file_name()
            .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
        let _ = write!(out, " {:>26}", short);
    }
    out.push('\n');
    for (label, get) in figures {
        let _ = write!(out, "{label:<10}");
        let first = get(&results[0].1).unwrap_or(0.0);
        for (i, (_, v)) in results.iter().enumerate() {
            let x = get(v).unwrap_or(0.0);
            let cell = if i == 0 {
                format!("{} (1.00)", number(x))
            } else if first == 0.0 {
                format!("{} (—)", number(x))
            } else {
                format!("{} ({:.2})", number(x), x / first)
            };
            let _ = write!(out, " {cell:>26}");
        }
        out.push('\n');
    }
    Ok(out)
}

fn number(x: f64) -> String {
    if x >= 1000.0 {
        group(x.round() as u64)
    } else if x.fract() == 0.0 {
        format!("{x:.0}") // a count (errors)
    } else {
        us(x)
    }
}

/// Errors by cause, as the JSON reports them (their sum is `errors`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCauses {
    /// connect(2) refused: nothing listens.
    pub refused: u64,
    /// connect(2) failed otherwise.
    pub connect_failed: u64,
    /// The server reset the connection.
    pub reset: u64,
    /// The server closed the connection (EOF) while echoes were owed.
    pub closed: u64,
    /// A message was not echoed within `--timeout`.
    pub timeout: u64,
    /// The server sent bytes that were never sent to it.
    pub extra_bytes: u64,
}

impl ErrorCauses {
    fn of(errors: &[(Cause, u64)]) -> Self {
        let mut causes = ErrorCauses::default();
        for &(cause, n) in errors {
            *match cause {
                Cause::Refused => &mut causes.refused,
                Cause::ConnectFailed => &mut causes.connect_failed,
                Cause::Reset => &mut causes.reset,
                Cause::ClosedByServer => &mut causes.closed,
                Cause::Timeout => &mut causes.timeout,
                Cause::ExtraBytes => &mut causes.extra_bytes,
            } += n;
        }
        causes
    }
}

/// Everything measured, merged over threads, with what the text report adds to the JSON.
#[derive(Debug)]
pub struct Merged {
    /// All latencies, ns.
    pub hist: Histogram<u64>,
    /// The JSON part.
    pub report: Report,
    /// Errors by cause, most frequent first.
    pub errors: Vec<(Cause, u64)>,
    /// UDP replies to datagrams already answered.
    pub duplicates: u64,
    /// UDP replies that came back after a later datagram's reply.
    pub reordered: u64,
    /// What the run was asked to do (threads, warm-up, embedded target, ...).
    pub run: RunInfo,
    /// Whether the run was cut short (Ctrl-C).
    pub interrupted: bool,
}

/// What the run was asked to do, for the report.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The target as used.
    pub target: String,
    /// The target is ricochet, started in-process for this run.
    pub embedded: bool,
    /// `tcp`, `udp` or `unix`.
    pub proto: &'static str,
    /// Connections.
    pub connections: u32,
    /// Bytes per message.
    pub size: usize,
    /// Depth.
    pub depth: usize,
    /// Requested rate (open loop).
    pub rate: Option<f64>,
    /// Load threads.
    pub threads: usize,
    /// Warm-up.
    pub warmup: Duration,
    /// Chat: how many members publish (`None` for echo runs).
    pub publishers: Option<usize>,
    /// TLS certificates are not verified (`--insecure`).
    pub insecure: bool,
    /// When the measured period began, Unix seconds.
    pub start_unix: f64,
}

/// Merges thread tallies into the report for a measured period of `measured`, with the merged
/// per-second `intervals` (index: seconds from the start of the measured period).
pub fn merge(
    info: &RunInfo,
    tallies: Vec<Tally>,
    measured: Duration,
    interrupted: bool,
    intervals: &[(u64, Histogram<u64>)],
) -> Merged {
    let mut hist = crate::tally::new_histogram();
    let (mut messages, mut mismatches, mut lost, mut duplicates, mut reordered) = (0, 0, 0, 0, 0);
    let mut deliveries = 0;
    let mut errors: Vec<(Cause, u64)> = Vec::new();
    let mut connects = 0;
    let mut connect_hist = crate::tally::new_histogram();
    for t in &tallies {
        hist.add(&t.hist).expect("histograms with the same bounds add");
        connect_hist.add(&t.connect_hist).expect("histograms with the same bounds add");
        connects += t.connects;
        messages += t.messages;
        deliveries += t.deliveries;
        mismatches += t.mismatches;
        lost += t.lost;
        duplicates += t.duplicates;
        reordered += t.reordered;
        for &(cause, n) in &t.errors {
            crate::tally::add_errors(&mut errors, cause, n);
        }
    }
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let secs = measured.as_secs_f64();
    let per_sec = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };
    let bytes = messages * info.size as u64;
    let report = Report {
        target: info.target.clone(),
        proto: info.proto,
        connections: info.connections,
        size: info.size,
        depth: info.depth,
        rate: info.rate,
        duration_s: secs,
        messages,
        bytes,
        msgs_per_sec: per_sec(messages),
        bytes_per_sec: per_sec(bytes),
        errors: errors.iter().map(|(_, n)| n).sum(),
        mismatches,
        lost,
        latency_us: Latency::of(&hist),
        error_causes: ErrorCauses::of(&errors),
        duplicated: duplicates,
        reordered,
        publishers: info.publishers,
        deliveries: info.publishers.map(|_| deliveries),
        deliveries_per_sec: info.publishers.map(|_| per_sec(deliveries)),
        connects,
        connect_latency_us: Latency::of(&connect_hist),
        insecure: info.insecure,
        histogram: encode_histogram(&hist),
        intervals: intervals.iter().map(|(index, h)| IntervalSummary::of(*index, h)).collect(),
        start_unix: info.start_unix,
    };
    Merged { hist, report, errors, duplicates, reordered, run: info.clone(), interrupted }
}

impl Merged {
    /// The one-line JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.report).expect("plain values serialize")
    }

    /// The human report.
    // Long on purpose: the report's lines in the order a reader sees them, each next to the
    // figures it prints; helpers would each take most of the report's fields.
    pub fn text(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        let mode = match r.rate {
            Some(rate) => format!("open loop at {} msgs/s", group(rate.round() as u64)),
            None => "closed loop".to_owned(),
        };
        let embedded = if self.run.embedded { ", embedded ricochet" } else { "" };
        let _ = writeln!(out, "target      {} ({mode}{embedded})", r.target);
        if r.insecure {
            let _ =
                writeln!(out, "INSECURE    the server's certificate was not verified (--insecure)");
        }
        match r.publishers {
            Some(publishers) => {
                let _ = writeln!(
                    out,
                    "load        {} member(s), {publishers} publishing, depth {} per publisher, \
                     {}-byte lines",
                    r.connections, r.depth, r.size
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "load        {} connection(s) × depth {}, {}-byte messages, {} thread(s)",
                    r.connections, r.depth, r.size, self.run.threads
                );
            }
        }
        let _ = writeln!(
            out,
            "measured    {:.2} s after a {} warm-up{}",
            r.duration_s,
            humantime::format_duration(self.run.warmup),
            if self.interrupted { " (interrupted)" } else { "" }
        );
        let _ = writeln!(
            out,
            "messages    {}  ({} msgs/s)",
            group(r.messages),
            group(r.msgs_per_sec.round() as u64)
        );
        match (r.deliveries, r.deliveries_per_sec) {
            (Some(deliveries), Some(per_sec)) => {
                let _ = writeln!(
                    out,
                    "deliveries  {}  ({} deliveries/s: lines received by the other members)",
                    group(deliveries),
                    group(per_sec.round() as u64)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "throughput  {}/s echoed ({:.1} Mbit/s each way)",
                    ricochet::units::format_bytes(r.bytes_per_sec),
                    r.bytes_per_sec * 8.0 / 1e6
                );
            }
        }
        if let Some(rate) = r.rate {
            let share = if rate > 0.0 { r.msgs_per_sec / rate * 100.0 } else { 0.0 };
            if share < 99.0 {
                let _ = writeln!(
                    out,
                    "RATE NOT REACHED: asked for {} msgs/s, achieved {} ({share:.1} %). The client \
                     or the server could not keep up; the latencies below include the queueing \
                     this caused, measured from each message's intended send time.",
                    group(rate.round() as u64),
                    group(r.msgs_per_sec.round() as u64)
                );
            } else {
                let _ = writeln!(out, "rate        achieved {share:.1} % of the requested rate");
            }
        }
        let _ = writeln!(
            out,
            "errors      {}   mismatches {}   lost {}",
            r.errors, r.mismatches, r.lost
        );
        for (cause, n) in &self.errors {
            let _ = writeln!(out, "  {n:>10}  {}", cause.describe());
        }
        if r.proto == "udp" {
            let _ = writeln!(
                out,
                "datagrams   {} duplicated, {} reordered (like loss, not errors)",
                self.duplicates, self.reordered
            );
        }
        let l = &r.latency_us;
        if self.hist.is_empty() {
            let _ =
                writeln!(out, "latency     no data: no message completed in the measured period");
        } else {
            let _ = writeln!(
                out,
                "latency µs  min {}  mean {}  max {}",
                us(l.min),
                us(l.mean),
                us(l.max)
            );
            let _ = writeln!(out, "  percentile     latency");
            for (label, value) in [
                ("50", l.p50),
                ("90", l.p90),
                ("99", l.p99),
                ("99.9", l.p999),
                ("99.99", l.p9999),
                ("100", l.max),
            ] {
                let _ = writeln!(out, "  {label:>9} %  {:>10} µs", us(value));
            }
        }
        // Connection churn (or a TLS run) is worth a line; steady plain connections are not.
        if r.proto == "tls" || r.connects > u64::from(r.connections) {
            let c = &r.connect_latency_us;
            let _ = writeln!(
                out,
                "connects    {} in the measured period; connect{} µs  p50 {}  p99 {}  max {}",
                group(r.connects),
                if r.proto == "tls" { " + handshake" } else { "" },
                us(c.p50),
                us(c.p99),
                us(c.max)
            );
        }
        out
    }
}

fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes an HdrHistogram interval log: header comments, `StartTime`/`BaseTime`, the legend, then
/// one line per interval with a base64 V2-deflate-compressed histogram. Values, Interval_Max
/// included, are nanoseconds (what HdrHistogram's log processor assumes by default).
pub struct HlogWriter<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
    start: SystemTime,
}

impl<W: Write> std::fmt::Debug for HlogWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlogWriter").field("start", &self.start).finish()
    }
}

impl<W: Write> HlogWriter<W> {
    /// Writes the header; intervals are then timed from `start`.
    pub fn new(mut out: W, start: SystemTime, target: &str) -> io::Result<Self> {
        let secs = start.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        writeln!(out, "#[loadgen latencies (ns) against {target}]")?;
        writeln!(out, "#[Histogram log format version 1.3]")?;
        writeln!(out, "#[StartTime: {secs:.3} (seconds since epoch)]")?;
        writeln!(out, "#[BaseTime: {secs:.3} (seconds since epoch)]")?;
        writeln!(out, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")?;
        Ok(HlogWriter { out, serializer: V2DeflateSerializer::new(), start })
    }

    /// One interval starting `offset` after the start, lasting `length`.
    pub fn interval(
        &mut self,
        hist: &Histogram<u64>,
        offset: Duration,
        length: Duration,
    ) -> io::Result<()> {
        // A builder with no comments, times or divisor writes nothing of its own.
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.serializer)?;
        writer
            .write_histogram(hist, offset, length, None)
            .map_err(|e| io::Error::other(format!("writing an hlog interval: {e:?}")))
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            target: "tcp://127.0.0.1:1".into(),
            embedded: false,
            proto: "tcp",
            connections: 2,
            size: 64,
            depth: 1,
            rate: None,
            threads: 2,
            warmup: Duration::from_secs(1),
            publishers: None,
            insecure: false,
            start_unix: 0.0,
        }
    }

    fn tally(values_ns: &[u64], errors: &[(Cause, u64)]) -> Tally {
        let mut t = Tally::new(false, std::time::Instant::now(), std::time::Instant::now());
        for &v in values_ns {
            t.hist.record(v).unwrap();
        }
        t.messages = values_ns.len() as u64;
        for &(c, n) in errors {
            t.error_n(c, n);
        }
        t
    }

    #[test]
    fn merge_adds_histograms_and_counters() {
        let a = tally(&[1_000, 2_000, 3_000], &[(Cause::Reset, 1)]);
        let b = tally(&[4_000, 100_000], &[(Cause::Reset, 2), (Cause::Timeout, 1)]);
        let m = merge(&info(), vec![a, b], Duration::from_secs(2), false, &[]);
        assert_eq!(m.report.messages, 5);
        assert_eq!(m.report.bytes, 5 * 64);
        assert_eq!(m.report.msgs_per_sec, 2.5);
        assert_eq!(m.report.errors, 4);
        assert_eq!(m.errors, vec![(Cause::Reset, 3), (Cause::Timeout, 1)]);
        assert_eq!(m.report.latency_us.min, 1.0);
        assert!((m.report.latency_us.max - 100.0).abs() < 0.1);
        // Three significant digits: a percentile is its bucket's highest equivalent value.
        assert!((m.report.latency_us.p50 - 3.0).abs() <= 0.003, "{}", m.report.latency_us.p50);
        assert!((m.report.latency_us.mean - 22.0).abs() < 0.05);
    }

    #[test]
    fn json_has_exactly_the_contract_keys_in_order() {
        let m = merge(&info(), vec![tally(&[1500], &[])], Duration::from_secs(1), false, &[]);
        let json = m.json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut expected = vec![
            "target",
            "proto",
            "connections",
            "size",
            "depth",
            "rate",
            "duration_s",
            "messages",
            "bytes",
            "msgs_per_sec",
            "bytes_per_sec",
            "errors",
            "mismatches",
            "lost",
            "latency_us",
            "error_causes",
            "duplicated",
            "reordered",
            "connects",
            "connect_latency_us",
            "histogram",
            "intervals",
            "start_unix",
        ];
        expected.sort();
        assert_eq!(keys, expected);
        assert!(json.starts_with(r#"{"target":"tcp://127.0.0.1:1","proto":"tcp","#), "{json}");
        assert_eq!(v["rate"], serde_json::Value::Null);
        let lat: Vec<&str> =
            v["latency_us"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(lat, ["max", "mean", "min", "p50", "p90", "p99", "p999", "p9999"]);
        assert_eq!(v["latency_us"]["p50"], 1.5);
        let causes: Vec<&str> =
            v["error_causes"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            causes,
            ["closed", "connect_failed", "extra_bytes", "refused", "reset", "timeout"]
        );
    }

    #[test]
    fn error_causes_add_up_to_errors() {
        let errors = [(Cause::Reset, 3), (Cause::Timeout, 2), (Cause::ClosedByServer, 1)];
        let m = merge(&info(), vec![tally(&[1500], &errors)], Duration::from_secs(1), false, &[]);
        let c = &m.report.error_causes;
        assert_eq!((c.reset, c.timeout, c.closed, c.refused), (3, 2, 1, 0));
        assert_eq!(m.report.errors, 6);
    }

    #[test]
    fn text_says_plainly_when_the_rate_was_not_reached() {
        let mut i = info();
        i.rate = Some(1000.0);
        let m = merge(&i, vec![tally(&[1000; 500], &[])], Duration::from_secs(1), false, &[]);
        assert!(m.text().contains("RATE NOT REACHED"), "{}", m.text());
        let m = merge(&i, vec![tally(&[1000; 1000], &[])], Duration::from_secs(1), false, &[]);
        assert!(!m.text().contains("NOT REACHED"));
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn hlog_round_trips_through_the_standard_reader() {
        let mut h = crate::tally::new_histogram();
        for v in [1_000u64, 2_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let mut w = HlogWriter::new(Vec::new(), SystemTime::now(), "tcp://x").unwrap();
        w.interval(&h, Duration::from_secs(0), Duration::from_secs(1)).unwrap();
        w.interval(&h, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let log = w.finish().unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.contains("#[StartTime: "), "{text}");
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\""));
        let mut seen = 0;
        read_hlog(&log, |start, back| {
            assert_eq!(start, Duration::from_secs(seen));
            assert_eq!(back.len(), 3);
            assert_eq!(back.max(), h.max());
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2);
    }
}
