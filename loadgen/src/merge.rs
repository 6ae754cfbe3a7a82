//! `loadgen merge`: one report from the results of several loadgens (one per host, say, started
//! together with `--start-at`).
//!
//! Counts (messages, bytes, errors by cause, mismatches, lost, duplicated, reordered, connections,
//! connects, deliveries) are summed; latency histograms are merged exactly (each result carries
//! its whole histogram), so the merged percentiles are those of every sample together, never an
//! average of percentiles. The measured period is the union of the results' periods (from the
//! earliest start to the latest end), and the rates are the merged counts over it. Per-second
//! intervals are merged by second: messages summed, and for p50, p99 and max the highest of the
//! results' (an upper bound: the seconds' own histograms are not kept). Connect latencies are the
//! highest of the results' figures, for the same reason. An hlog is taken as a result with only
//! latencies.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::report::{encode_histogram, IntervalSummary, Latency};
use crate::results::{check_intervals, decode_histogram, read_hlog};

/// One input: its name and its JSON (an hlog is turned into a JSON with only latencies).
#[derive(Debug, Clone)]
pub struct Input {
    /// The file it came from.
    pub name: String,
    /// The result.
    pub value: Value,
}

impl Input {
    /// Reads a loadgen JSON result or an hlog.
    pub fn load(path: &Path) -> Result<Input, String> {
        Input::from_bytes(path.display().to_string(), &crate::results::read_file(path)?)
    }

    /// A result or an hlog from its bytes; `name` names it in errors.
    pub fn from_bytes(name: String, bytes: &[u8]) -> Result<Input, String> {
        if bytes.first() == Some(&b'{') {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("{name}: not a JSON result: {e}"))?;
            if value["histogram"].as_str().is_none() {
                return Err(format!(
                    "{name}: not a loadgen result with a histogram (run loadgen with --json or --out)"
                ));
            }
            let intervals: Vec<IntervalSummary> =
                serde_json::from_value(value["intervals"].clone()).unwrap_or_default();
            check_intervals(&intervals).map_err(|e| format!("{name}: {e}"))?;
            return Ok(Input { name, value });
        }
        let mut hist = crate::tally::new_histogram();
        let mut seconds = 0.0;
        read_hlog(bytes, |start, h| {
            seconds = start.as_secs_f64() + 1.0;
            hist.add(h).map_err(|e| format!("{e:?}"))
        })
        .map_err(|e| format!("{name}: not an hlog either: {e}"))?;
        check_intervals(&[IntervalSummary { t: seconds, ..IntervalSummary::default() }])
            .map_err(|e| format!("{name}: {e}"))?;
        let value = json!({
            "messages": hist.len(),
            "duration_s": seconds,
            "histogram": encode_histogram(&hist),
        });
        Ok(Input { name, value })
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

/// Merges `inputs` into one result with a result's keys; refuses results whose proto, size or
/// depth differ (naming the field) unless `force`.
// Long on purpose: one line per field of the merged result, in the result's order, so the
// merge of each field sits next to its key; split, the keys would scatter over helpers.
pub fn merge(inputs: &[Input], force: bool) -> Result<Value, String> {
    let first = inputs.first().ok_or("nothing to merge")?;
    if !force {
        for field in ["proto", "size", "depth"] {
            let values: Vec<(&str, &Value)> = inputs
                .iter()
                .filter(|i| !i.value[field].is_null())
                .map(|i| (i.name.as_str(), &i.value[field]))
                .collect();
            if let Some((name, value)) = values.iter().find(|(_, v)| **v != *values[0].1) {
                return Err(format!(
                    "`{field}` differs: {} in {}, {} in {name} (--force merges them anyway)",
                    values[0].1, values[0].0, value
                ));
            }
        }
    }
    let mut hist = crate::tally::new_histogram();
    for input in inputs {
        let h = decode_histogram(input.value["histogram"].as_str().unwrap_or_default())
            .map_err(|e| format!("{}: {e}", input.name))?;
        hist.add(&h).map_err(|e| format!("{}: {e:?}", input.name))?;
    }
    let sum = |key: &str| inputs.iter().map(|i| num(&i.value, key)).sum::<f64>();
    let sum_in =
        |outer: &str, key: &str| inputs.iter().map(|i| num(&i.value[outer], key)).sum::<f64>();
    // The union of the measured periods.
    let starts: Vec<f64> = inputs.iter().filter_map(|i| i.value["start_unix"].as_f64()).collect();
    let (duration, start_unix) = if starts.len() == inputs.len() {
        let begin = starts.iter().copied().fold(f64::INFINITY, f64::min);
        let end = inputs
            .iter()
            .map(|i| num(&i.value, "start_unix") + num(&i.value, "duration_s"))
            .fold(0.0, f64::max);
        (end - begin, begin)
    } else {
        (inputs.iter().map(|i| num(&i.value, "duration_s")).fold(0.0, f64::max), 0.0)
    };
    let per_sec = |x: f64| if duration > 0.0 { x / duration } else { 0.0 };
    let messages = hist.len() as f64;
    let bytes = sum("bytes");
    let causes = ["refused", "connect_failed", "reset", "closed", "timeout", "extra_bytes"];
    let error_causes: serde_json::Map<String, Value> =
        causes.iter().map(|c| (c.to_string(), json!(sum_in("error_causes", c) as u64))).collect();
    let connect_latency: serde_json::Map<String, Value> =
        ["min", "mean", "p50", "p90", "p99", "p999", "p9999", "max"]
            .iter()
            .map(|k| {
                let top = inputs
                    .iter()
                    .map(|i| num(&i.value["connect_latency_us"], k))
                    .fold(0.0, f64::max);
                (k.to_string(), json!(top))
            })
            .collect();
    let mut seconds: BTreeMap<i64, (u64, f64, f64, f64)> = BTreeMap::new();
    for input in inputs {
        let offset = input.value["start_unix"].as_f64().map_or(0.0, |s| s - start_unix);
        for iv in input.value["intervals"].as_array().into_iter().flatten() {
            let t = (num(iv, "t") + offset).floor() as i64;
            let entry = seconds.entry(t).or_insert((0, 0.0, 0.0, 0.0));
            entry.0 = entry.0.saturating_add(iv["messages"].as_u64().unwrap_or(0));
            entry.1 = entry.1.max(num(iv, "p50_us"));
            entry.2 = entry.2.max(num(iv, "p99_us"));
            entry.3 = entry.3.max(num(iv, "max_us"));
        }
    }
    let intervals: Vec<Value> = seconds
        .into_iter()
        .map(|(t, (m, p50, p99, max))| {
            json!({"t": t as f64, "messages": m, "p50_us": p50, "p99_us": p99, "max_us": max})
        })
        .collect();
    let mut targets: Vec<&str> = inputs.iter().filter_map(|i| i.value["target"].as_str()).collect();
    targets.dedup();
    let mut out = json!({
        "target": targets.join(","),
        "proto": first.value["proto"],
        "connections": sum("connections") as u64,
        "size": first.value["size"],
        "depth": first.value["depth"],
        "rate": if inputs.iter().all(|i| i.value["rate"].is_f64()) { json!(sum("rate")) } else { Value::Null },
        "duration_s": duration,
        "messages": messages as u64,
        "bytes": bytes as u64,
        "msgs_per_sec": per_sec(messages),
        "bytes_per_sec": per_sec(bytes),
        "errors": sum("errors") as u64,
        "mismatches": sum("mismatches") as u64,
        "lost": sum("lost") as u64,
        "latency_us": serde_json::to_value(Latency::of(&hist)).expect("plain values"),
        "error_causes": error_causes,
        "duplicated": sum("duplicated") as u64,
        "reordered": sum("reordered") as u64,
        "connects": sum("connects") as u64,
        "connect_latency_us": connect_latency,
        "histogram": encode_histogram(&hist),
        "intervals": intervals,
        "start_unix": start_unix,
        "merged": inputs.len(),
    });
    if inputs.iter().any(|i| !i.value["deliveries"].is_null()) {
        out["publishers"] = json!(sum("publishers") as u64);
        out["deliveries"] = json!(sum("deliveries") as u64);
        out["deliveries_per_sec"] = json!(per_sec(sum("deliveries")));
    }
    Ok(out)
}

/// The merged result as text, for a person.
pub fn text(merged: &Value) -> String {
    use std::fmt::Write;
    let group = |x: f64| crate::report::group(x.round() as u64);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "merged      {} results against {}",
        merged["merged"],
        merged["target"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "measured    {:.2} s: the union of the results' measured periods (rates are over it)",
        num(merged, "duration_s")
    );
    let _ = writeln!(
        out,
        "messages    {}  ({} msgs/s)",
        group(num(merged, "messages")),
        group(num(merged, "msgs_per_sec"))
    );
    let _ = writeln!(
        out,
        "errors      {}   mismatches {}   lost {}",
        merged["errors"], merged["mismatches"], merged["lost"]
    );
    let l = &merged["latency_us"];
    let _ = writeln!(out, "latency µs  (every sample of every result, merged exactly)");
    for (label, key) in [
        ("50", "p50"),
        ("90", "p90"),
        ("99", "p99"),
        ("99.9", "p999"),
        ("99.99", "p9999"),
        ("100", "max"),
    ] {
        let _ = writeln!(out, "  {label:>9} %  {:>10.1} µs", num(l, key));
    }
    out
}
