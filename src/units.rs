//! Parsing of the human units used on every command line: byte sizes (`65536`, `64KiB`, `1MiB`,
//! `1.5MB`), durations (`500ms`, `2s`, `1m`, via humantime) and fractions (`0.05`, `5%`).
//!
//! Both parsers return a one-line message fit for clap's error output; they never panic.

use std::time::Duration;

/// Parses a byte size: a non-negative number with an optional unit.
///
/// Binary units (`KiB`, `MiB`, `GiB`, also `K`, `M`, `G`) are powers of 1024; decimal ones (`kB`,
/// `MB`, `GB`) powers of 1000. Case of the unit is ignored except that `b` alone means bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split =
        text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number.replace('_', "");
    if number.is_empty() {
        return Err(format!("`{text}` is not a byte size (examples: 65536, 64KiB, 1MiB)"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use B, KiB, MiB, GiB, kB, MB or GB)"
            ))
        }
    };
    let value = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(multiplier)
    } else {
        let fractional: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a byte size (examples: 65536, 64KiB, 1MiB)"))?;
        let bytes = fractional * multiplier as f64;
        (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes.round() as u64)
    };
    value.ok_or_else(|| format!("`{text}` is too large for a byte size"))
}

/// The longest duration taken anywhere (flags, fault plans, the control socket): 100 years of
/// 365.25 days. Longer ones mean "never" in practice, and near 2^63 s they no longer fit in a
/// clock reading (`Instant + Duration` panics), so they are refused here, once for every user.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Parses a duration such as `500ms`, `2s`, `1m30s`, `1h`, at most [`MAX_DURATION`]. A bare
/// number is rejected: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}; examples: 500ms, 2s, 1m)"))?;
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than the longest duration taken, 100 years"));
    }
    Ok(duration)
}

/// Parses a fraction given on the command line: `0.05` or `5%`. (Inside a URL's fault plan `%`
/// starts an escape, so plans keep the decimal form.)
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('%') {
        Some(percent) => (percent.trim_end(), 100.0),
        None => (text, 1.0),
    };
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value / scale),
        _ => Err(format!("`{text}` is not a fraction (examples: 0.05, 5%)")),
    }
}

/// Formats a byte count for humans: `1.5 MiB`, `512 B`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("64k"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_bytes("10kB"), Ok(10_000));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert_eq!(parse_bytes("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        for bad in ["", "-1", "abc", "12 parsecs", "1.2.3MiB", "99999999999999999999", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_bytes("18446744073709551615GiB").is_err());
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    /// Up to 100 years, and nothing longer: a longer one once panicked where it was added to
    /// the clock (2^63 s and more).
    #[test]
    fn durations_have_a_largest() {
        assert_eq!(parse_duration("100years"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("3155760000s"), Ok(MAX_DURATION));
        for long in ["3155760001s", "101years", "9223372036854775807s", "18446744073709551615s"] {
            let err = parse_duration(long).unwrap_err();
            assert!(err.contains("100 years"), "{long}: {err}");
        }
        // The largest is safe to add to a clock reading.
        let _ = std::time::Instant::now() + MAX_DURATION + MAX_DURATION;
    }

    #[test]
    fn fractions_as_decimals_or_percentages() {
        assert_eq!(parse_fraction("0.05"), Ok(0.05));
        assert_eq!(parse_fraction("5%"), Ok(0.05));
        assert_eq!(parse_fraction("12.5 %"), Ok(0.125));
        for bad in ["", "%", "five", "5%%", "inf", "NaN%", "1e999"] {
            assert!(parse_fraction(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_bytes_for_humans() {
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(1536.0), "1.50 KiB");
        assert_eq!(format_bytes(3.0 * 1024.0 * 1024.0), "3.00 MiB");
    }
}
