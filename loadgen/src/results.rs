//! Reading results back (`merge`, `compare`, `plot`), trusting nothing in them: a file is read
//! up to [`MAX_RESULT_FILE`], a histogram is decoded only once its header has been checked
//! against what a histogram of its bounds can hold (so a 3 KB file cannot ask for gigabytes), an
//! hlog is read one interval at a time (its histograms are never all in memory at once), and
//! per-second summaries are refused unless every figure is finite and in range.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::report::IntervalSummary;

/// The largest result or hlog file read: an 8-hour hlog of a busy run is tens of MiB.
pub const MAX_RESULT_FILE: u64 = 1 << 30;

/// The slowest latency a result may report, µs: the histograms' highest trackable value
/// (an hour).
pub const MAX_LATENCY_US: f64 = 3_600_000_000.0;

/// The V2 encodings' cookies (HdrHistogram's serialization format: a base, with the word size
/// in the low bits).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// A V2 header: cookie, payload length, normalizing offset, significant digits, lowest,
/// highest, integer-to-double ratio.
const V2_HEADER: usize = 40;
/// The most bytes one count takes in a V2 payload (a LEB128 varint of 64 bits).
const MAX_VARINT: usize = 9;

/// Reads a result or hlog file whole, refusing one past [`MAX_RESULT_FILE`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    ricochet::files::read_capped(path, MAX_RESULT_FILE, "")
}

/// Decodes a result's `histogram`: compressed V2 in base64 (uncompressed V2 is taken too).
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim_end())
        .map_err(|e| format!("the histogram is not base64: {e}"))?;
    decode_v2(&bytes).map_err(|e| format!("the histogram does not decode: {e}"))
}

/// Decodes a V2 histogram, compressed or not, after checking its header: the payload it claims
/// must fit what a histogram of its bounds can hold, and only that much is ever inflated.
fn decode_v2(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    let word = |at: usize| -> Result<u32, String> {
        let four = bytes.get(at..at + 4).ok_or("it is truncated")?;
        Ok(u32::from_be_bytes(four.try_into().expect("four bytes")))
    };
    let plain = match word(0)? {
        V2_COOKIE => {
            let header = bytes.get(..V2_HEADER).ok_or("its header is truncated")?;
            let payload = check_header(header.try_into().expect("a header"))?;
            if bytes.len() != V2_HEADER + payload {
                return Err(format!("it claims {payload} bytes of counts, and has something else"));
            }
            bytes.to_vec()
        }
        V2_COMPRESSED_COOKIE => {
            let deflated = bytes.get(8..).ok_or("it is truncated")?;
            let deflated = &deflated[..deflated.len().min(word(4)? as usize)];
            let mut inflate = flate2::read::ZlibDecoder::new(deflated);
            let mut plain = vec![0; V2_HEADER];
            inflate.read_exact(&mut plain).map_err(|e| format!("its header: {e}"))?;
            let payload = check_header(plain[..].try_into().expect("a header"))?;
            inflate
                .take(payload as u64)
                .read_to_end(&mut plain)
                .map_err(|e| format!("its counts: {e}"))?;
            if plain.len() != V2_HEADER + payload {
                return Err(format!("it claims {payload} bytes of counts, and has fewer"));
            }
            plain
        }
        _ => return Err("it is not an HdrHistogram V2 encoding".into()),
    };
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &plain[..])
        .map_err(|e| e.to_string())
}

/// Checks an uncompressed V2 header; returns the payload's length, which is at most what the
/// counts of a histogram with these bounds can take.
fn check_header(header: &[u8; V2_HEADER]) -> Result<usize, String> {
    let u32_at = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("four"));
    let u64_at = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().expect("eight"));
    if u32_at(0) != V2_COOKIE {
        return Err("it is not an HdrHistogram V2 encoding".into());
    }
    let (payload, digits, low, high) = (u32_at(4) as usize, u32_at(12), u64_at(16), u64_at(24));
    // Beyond 5 significant digits a histogram's counts alone are hundreds of MiB.
    if !(1..=5).contains(&digits) || low == 0 || high > u64::MAX / 2 || high < 2 * low {
        return Err(format!(
            "its bounds are not a histogram's (lowest {low}, highest {high}, {digits} digits)"
        ));
    }
    let counts = Histogram::<u64>::new_with_bounds(low, high, digits as u8)
        .map_err(|e| format!("its bounds: {e:?}"))?
        .distinct_values();
    if payload > counts * MAX_VARINT {
        return Err(format!(
            "it claims {payload} bytes of counts; a histogram of its bounds has at most {}",
            counts * MAX_VARINT
        ));
    }
    Ok(payload)
}

/// Reads an interval log, one interval at a time: `each` gets every interval's start (from the
/// log's base) and histogram, in order. Comment and legend lines are skipped; a malformed
/// interval line, a histogram that does not decode, or an error from `each` ends the reading.
pub fn read_hlog(
    log: &[u8],
    mut each: impl FnMut(Duration, &Histogram<u64>) -> Result<(), String>,
) -> Result<(), String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    for entry in IntervalLogIterator::new(log) {
        let entry = entry.map_err(|e| format!("bad hlog line: {e:?}"))?;
        if let LogEntry::Interval(interval) = entry {
            let hist = decode_histogram(interval.encoded_histogram())?;
            each(interval.start_timestamp(), &hist)?;
        }
    }
    Ok(())
}

/// Refuses per-second summaries with a figure no run can produce: a time past 100 years, a
/// latency past [`MAX_LATENCY_US`], anything negative or not finite (a plot's axes would span
/// them, and drawing one never ended).
pub fn check_intervals(intervals: &[IntervalSummary]) -> Result<(), String> {
    let longest = ricochet::units::MAX_DURATION.as_secs_f64();
    for iv in intervals {
        let figures = [("t", iv.t, longest), ("p50_us", iv.p50_us, MAX_LATENCY_US)]
            .into_iter()
            .chain([("p99_us", iv.p99_us, MAX_LATENCY_US), ("max_us", iv.max_us, MAX_LATENCY_US)]);
        for (name, value, most) in figures {
            if !(value.is_finite() && (0.0..=most).contains(&value)) {
                return Err(format!(
                    "an interval's {name} is {value}, outside 0 to {most} (not a loadgen result?)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(h: &Histogram<u64>, compressed: bool) -> Vec<u8> {
        use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};
        let mut bytes = Vec::new();
        if compressed {
            V2DeflateSerializer::new().serialize(h, &mut bytes).unwrap();
        } else {
            V2Serializer::new().serialize(h, &mut bytes).unwrap();
        }
        bytes
    }

    fn sample() -> Histogram<u64> {
        let mut h = crate::tally::new_histogram();
        for v in [1u64, 1_000, 2_000, 3_000_000, 3_600_000_000_000] {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn both_encodings_round_trip() {
        let h = sample();
        for compressed in [true, false] {
            let back = decode_v2(&encode(&h, compressed)).unwrap();
            assert_eq!(back, h);
        }
        let text = crate::report::encode_histogram(&h);
        assert_eq!(decode_histogram(&text).unwrap(), h);
    }

    /// A header that claims 4 GiB of counts is refused before anything is allocated for them
    /// (it once made merge, compare and plot allocate 4 GiB).
    #[test]
    fn a_payload_past_the_bounds_is_refused() {
        let mut bytes = encode(&sample(), false);
        bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = decode_v2(&bytes).unwrap_err();
        assert!(err.contains("claims 4294967295 bytes of counts; a histogram"), "{err}");
        // The same inside a compressed one.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &bytes).unwrap();
        let deflated = z.finish().unwrap();
        let mut outer = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        outer.extend_from_slice(&(deflated.len() as u32).to_be_bytes());
        outer.extend_from_slice(&deflated);
        let err = decode_v2(&outer).unwrap_err();
        assert!(err.contains("claims 4294967295 bytes"), "{err}");
    }

    #[test]
    fn absurd_bounds_and_garbage_are_refused() {
        let mut bytes = encode(&sample(), false);
        bytes[12..16].copy_from_slice(&9u32.to_be_bytes()); // 9 significant digits
        assert!(decode_v2(&bytes).unwrap_err().contains("9 digits"));
        assert!(decode_v2(b"").is_err());
        assert!(decode_v2(b"\x1c\x84\x93\x14\xff\xff\xff\xffnot zlib").is_err());
        assert!(decode_v2(&[0x1c, 0x84, 0x93, 0x13, 0, 0]).is_err());
        let mut truncated = encode(&sample(), false);
        truncated.pop();
        assert!(decode_v2(&truncated).is_err());
        assert!(decode_histogram("!!").unwrap_err().contains("not base64"));
    }

    #[test]
    fn intervals_must_be_finite_and_in_range() {
        let ok = IntervalSummary { t: 3.0, messages: 5, p50_us: 1.0, p99_us: 2.0, max_us: 3.0 };
        assert_eq!(check_intervals(std::slice::from_ref(&ok)), Ok(()));
        for bad in [
            IntervalSummary { max_us: f64::MAX, ..ok.clone() },
            IntervalSummary { max_us: f64::NAN, ..ok.clone() },
            IntervalSummary { p50_us: -1.0, ..ok.clone() },
            IntervalSummary { t: 1e300, ..ok.clone() },
            IntervalSummary { t: f64::INFINITY, ..ok.clone() },
        ] {
            assert!(check_intervals(&[ok.clone(), bad.clone()]).is_err(), "{bad:?}");
        }
        let err = check_intervals(&[IntervalSummary { max_us: f64::MAX, ..ok }]).unwrap_err();
        assert!(err.starts_with("an interval's max_us is 1797"), "{err}");
    }
}
