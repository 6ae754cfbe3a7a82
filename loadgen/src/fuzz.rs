//! Fuzz targets for the readers of files users pass around (see ricochet's `src/fuzz/mod.rs`
//! for the harness and the budget): a result's `histogram` and an interval log. Invariants: any
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
