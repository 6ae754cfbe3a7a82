//! Fuzz targets for the readers of files users pass around (see ricochet's `src/fuzz/mod.rs`
//! for the harness and the budget): a result's `histogram`, an interval log, and whole result
//! files as `merge`, `compare` and `plot` read them. Invariants: any
//! input is a value or an error, never a panic (nor an allocation its header claims but the input
//! cannot back: the readers check sizes first); a histogram written by `encode_histogram` reads
//! back with the same counts.

use proptest::prelude::*;

use crate::report::encode_histogram;
use crate::results::{decode_histogram, read_hlog};
use crate::tally::new_histogram;

/// Where the corpora are: the workspace's `fuzz/corpus/TARGET/`.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus");

#[path = "../../src/fuzz/harness.rs"]
#[allow(dead_code)] // shared with ricochet's targets, which use all of it
mod harness;
use harness::*;

/// Latencies in ns as runs record them, a few large.
fn latencies() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(prop_oneof![1u64..100_000, 1u64..3_600_000_000_000], 0..200)
}

/// A histogram of `values`, as a result's base64 text.
fn encoded(values: &[u64]) -> String {
    let mut h = new_histogram();
    for v in values {
        h.record(*v).expect("within the bounds");
    }
    encode_histogram(&h)
}

/// Encodings with a byte of their binary changed, cut short, or any text.
fn near_histograms() -> impl Strategy<Value = String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mutated = (latencies(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(
        move |(values, at, byte, cut)| {
            let mut bin = b64.decode(encoded(&values)).expect("our own base64");
            let i = at.index(bin.len());
            match cut {
                true => bin.truncate(i),
                false => bin[i] = byte,
            }
            b64.encode(bin)
        },
    );
    prop_oneof![any::<String>(), "[A-Za-z0-9+/=]{0,200}", mutated]
}

/// A result's histogram: any text decodes or is refused; our own encoding round-trips.
#[test]
fn histograms() {
    fuzz("histogram", near_histograms(), |text| {
        let _ = decode_histogram(&text);
        Ok(())
    });
    run("histogram-round-trip", latencies(), |values| {
        let text = encoded(&values);
        let back = decode_histogram(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back.len(), values.len() as u64);
        let mut h = new_histogram();
        for v in &values {
            h.record(*v).expect("within the bounds");
        }
        prop_assert!(back == h, "counts differ");
        Ok(())
    });
}

/// An interval log: any bytes, or lines shaped like an hlog's with any histogram text, are read
/// or refused.
#[test]
fn interval_logs() {
    let line = (0u32..10_000, 0u32..10_000, near_histograms())
        .prop_map(|(start, len, hist)| format!("{start}.000,{len}.000,1.0,{hist}\n"));
    let log = prop_oneof![
        bytes(4096),
        proptest::collection::vec(line, 0..4).prop_map(|lines| {
            let mut log = String::from("#[StartTime: 1.000 (seconds since epoch)]\n");
            log.push_str("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n");
            log.extend(lines);
            log.into_bytes()
        }),
    ];
    fuzz("hlog", log, |data| {
        let mut seen = 0u32;
        let _ = read_hlog(&data, |_, _| {
            seen += 1;
            Ok(())
        });
        prop_assert!(seen as usize <= data.len());
        Ok(())
    });
}

/// A number as results hold them, and some they should not.
fn number() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        4 => (0u64..1_000_000).prop_map(|n| json!(n)),
        2 => (0.0f64..1e7).prop_map(|x| json!(x)),
        1 => prop_oneof![Just(json!(-1)), Just(json!(1e308)), Just(json!(-1e308)), Just(json!(u64::MAX)), Just(json!(0.0))],
        1 => prop_oneof![Just(json!(null)), Just(json!("12")), Just(json!([])), Just(json!({}))],
    ]
}

/// Results shaped like loadgen's (`--json`), with any numbers, any histogram text, intervals in
/// any order, keys missing or of the wrong kind; and any bytes.
fn near_results() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::{json, Value};
    let interval = (number(), number(), number(), number(), number())
        .prop_map(|(t, m, p50, p99, max)| json!({"t": t, "messages": m, "p50_us": p50, "p99_us": p99, "max_us": max}));
    let latency = proptest::collection::vec(number(), 8).prop_map(|v| {
        let keys = ["min", "mean", "p50", "p90", "p99", "p999", "p9999", "max"];
        Value::Object(keys.iter().map(|k| k.to_string()).zip(v).collect())
    });
    let fields = (
        proptest::collection::vec(number(), 12),
        prop_oneof![latencies().prop_map(|v| encoded(&v)), near_histograms()],
        proptest::collection::vec(interval, 0..6),
        latency,
        prop_oneof![Just("tcp"), Just("udp"), Just("chat")],
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
    );
    let result = fields.prop_map(|(n, histogram, intervals, latency, proto, drop)| {
        let mut v = json!({
            "target": "tcp://127.0.0.1:7", "proto": proto, "connections": n[0], "size": n[1],
            "depth": n[2], "rate": null, "duration_s": n[3], "messages": n[4], "bytes": n[5],
            "msgs_per_sec": n[6], "bytes_per_sec": n[7], "errors": n[8], "mismatches": n[9],
            "lost": n[10], "latency_us": latency.clone(), "connect_latency_us": latency,
            "error_causes": {"refused": n[11], "reset": n[0]},
            "histogram": histogram, "intervals": intervals, "start_unix": n[2],
        });
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        for at in drop {
            v.as_object_mut().unwrap().remove(&keys[at.index(keys.len())]);
        }
        serde_json::to_vec(&v).unwrap()
    });
    prop_oneof![6 => result, 1 => bytes(600).prop_map(|mut b| { b.insert(0, b'{'); b })]
}

/// What `merge` and `compare` do with a result file, from its bytes: read it, merge it with
/// itself, print the merge, tabulate it. Any file is a value or an error, never a panic; a result
/// that reads merges with itself to twice its histogram's count.
#[test]
fn results() {
    fuzz("results", near_results(), |data| {
        if let Ok(input) = crate::merge::Input::from_bytes("r.json".into(), &data) {
            let count =
                crate::results::decode_histogram(input.value["histogram"].as_str().unwrap_or(""))
                    .map(|h| h.len());
            match crate::merge::merge(&[input.clone(), input.clone()], false) {
                Ok(merged) => {
                    prop_assert_eq!(merged["messages"].as_u64(), count.ok().map(|c| 2 * c));
                    let _ = crate::merge::text(&merged);
                }
                Err(e) => prop_assert!(count.is_err(), "a readable result does not merge: {}", e),
            }
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&data) {
            let _ =
                crate::report::compare_table(&[("a".into(), value.clone()), ("b".into(), value)]);
        }
        Ok(())
    });
}

/// What `plot` does with a result file: a result that reads draws. Its own target because
/// drawing is slow (about 3 ms an input in a release build): fewer inputs in a plain run.
#[test]
fn result_plots() {
    let dir = std::env::temp_dir().join(format!("ricochet-fuzz-plots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let svg = dir.join("plot.svg");
    fuzz_cases("results-plot", 40, near_results(), |data| {
        if let Ok(series) = crate::plot::Series::from_bytes("r.json".into(), &data) {
            prop_assert!(
                crate::plot::draw(&[series], &svg).is_ok(),
                "a readable result does not draw"
            );
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}
