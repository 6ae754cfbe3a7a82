//! Fault plans: how a listener misbehaves on purpose, for people testing their clients.
//!
//! A plan is written like a URL query after a listener's address (`127.0.0.1:0?drop=0.05&seed=7`)
//! or given to `--faults`. [`Faults::parse`] checks every key and value; [`Faults::check_for`]
//! checks that each key suits the listener (stream faults on TCP and Unix, datagram faults on
//! UDP). Every error names the key.
//!
//! Random choices come from a [`Rng`] seeded from the process seed (or the plan's own `seed`),
//! the listener's index and, for streams, the connection's number: the same seed and the same
//! input give the same faults.
//!
//! Every fault lives here: the plan and its generator (this file), a stream plan applied to a
//! connection's output (`stream.rs`: the `Faulty` transport), a datagram plan applied to a UDP
//! socket's replies (`datagram.rs`).

pub(crate) mod datagram;
pub(crate) mod stream;

use std::fmt;
use std::time::Duration;

use crate::units::{parse_bytes, parse_duration};

/// A checked fault plan. Fields left `None` (or 0 for probabilities) are off.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// The plan as given, for the ready line.
    text: String,
    /// Echo each chunk this much later (streams and datagrams).
    pub latency: Option<Duration>,
    /// ± this much, uniform, on top of `latency`.
    pub jitter: Option<Duration>,
    /// Streams: echo output throttled to this many bytes per second.
    pub rate: Option<u64>,
    /// Streams: output written in pieces of `MIN..=MAX` bytes.
    pub slice: Option<(u64, u64)>,
    /// Streams: the pause between pieces.
    pub slice_delay: Option<Duration>,
    /// Streams: after echoing exactly this many bytes, send FIN and discard input.
    pub close_after: Option<u64>,
    /// Streams: after echoing exactly this many bytes, reset the connection.
    pub reset_after: Option<u64>,
    /// Streams: after echoing exactly this many bytes, stop reading and writing.
    pub stall_after: Option<u64>,
    /// Streams: flip (xor 0xff) the byte at this offset of the echo, once.
    pub corrupt_after: Option<u64>,
    /// Streams: the share of connections that are faulty (drawn once per connection).
    pub p: f64,
    /// Datagrams: the probability that a datagram is not echoed.
    pub drop: f64,
    /// Datagrams: the probability that a reply is sent twice.
    pub dup: f64,
    /// Datagrams: the probability that one byte of a reply is flipped.
    pub corrupt: f64,
    /// Overrides the process seed for this listener.
    pub seed: Option<u64>,
}

/// Keys that only streams take.
const STREAM_KEYS: &[&str] = &[
    "rate",
    "slice",
    "slice-delay",
    "close-after",
    "reset-after",
    "stall-after",
    "corrupt-after",
    "p",
];
/// Keys that only datagrams take.
const DATAGRAM_KEYS: &[&str] = &["drop", "dup", "corrupt"];
/// Keys both take.
const COMMON_KEYS: &[&str] = &["latency", "jitter", "seed"];

impl Faults {
    /// Parses `key=value&key=value`.
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut f = Faults {
            text: text.to_owned(),
            latency: None,
            jitter: None,
            rate: None,
            slice: None,
            slice_delay: None,
            close_after: None,
            reset_after: None,
            stall_after: None,
            corrupt_after: None,
            p: 1.0,
            drop: 0.0,
            dup: 0.0,
            corrupt: 0.0,
            seed: None,
        };
        if text.is_empty() {
            return Err("an empty fault plan (expected key=value&key=value)".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for item in text.split('&') {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("fault plan item `{item}` is not key=value"));
            };
            if seen.contains(&key) {
                return Err(format!("fault `{key}` is given twice"));
            }
            seen.push(key);
            let bad = |why: String| format!("fault `{key}`: {why}");
            match key {
                "latency" => f.latency = Some(parse_duration(value).map_err(bad)?),
                "jitter" => f.jitter = Some(parse_duration(value).map_err(bad)?),
                "slice-delay" => f.slice_delay = Some(parse_duration(value).map_err(bad)?),
                "rate" => f.rate = Some(positive(parse_bytes(value).map_err(bad)?).map_err(bad)?),
                "slice" => f.slice = Some(parse_slice(value).map_err(bad)?),
                "close-after" => f.close_after = Some(parse_bytes(value).map_err(bad)?),
                "reset-after" => f.reset_after = Some(parse_bytes(value).map_err(bad)?),
                "stall-after" => f.stall_after = Some(parse_bytes(value).map_err(bad)?),
                "corrupt-after" => f.corrupt_after = Some(parse_bytes(value).map_err(bad)?),
                "p" => f.p = probability(value).map_err(bad)?,
                "drop" => f.drop = probability(value).map_err(bad)?,
                "dup" => f.dup = probability(value).map_err(bad)?,
                "corrupt" => f.corrupt = probability(value).map_err(bad)?,
                "seed" => {
                    f.seed = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("`{value}` is not a whole number")))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "unknown fault `{key}` (stream faults: {}; datagram faults: {}; both: {})",
                        STREAM_KEYS.join(", "),
                        DATAGRAM_KEYS.join(", "),
                        COMMON_KEYS.join(", ")
                    ))
                }
            }
        }
        let ends = [f.close_after, f.reset_after, f.stall_after].iter().flatten().count();
        if ends > 1 {
            return Err("close-after, reset-after and stall-after exclude each other".into());
        }
        if f.slice_delay.is_some() && f.slice.is_none() {
            return Err("fault `slice-delay` needs `slice`".into());
        }
        Ok(f)
    }

    /// The plan as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Checks that every key of the plan suits a listener of `proto` (`tcp`, `unix`, `tls`,
    /// `udp`).
    pub fn check_for(&self, proto: &str) -> Result<(), String> {
        let keys: Vec<&str> =
            self.text.split('&').filter_map(|i| i.split_once('=')).map(|(k, _)| k).collect();
        let (wrong, kind) = match proto {
            "udp" => (STREAM_KEYS, "a stream fault"),
            "tcp" | "unix" | "tls" | "ws" | "wss" => (DATAGRAM_KEYS, "a datagram fault"),
            other => return Err(format!("{other} listeners take no fault plan")),
        };
        match keys.iter().find(|k| wrong.contains(k)) {
            Some(key) => Err(format!("fault `{key}` is {kind}: a {proto} listener cannot take it")),
            None => Ok(()),
        }
    }

    /// Whether the plan holds output back (latency or jitter).
    pub fn delays(&self) -> bool {
        self.latency.is_some() || self.jitter.is_some()
    }

    /// One draw of the delay: latency ± jitter (uniform), never below zero.
    pub fn delay(&self, rng: &mut Rng) -> Duration {
        let latency = self.latency.unwrap_or_default();
        match self.jitter {
            Some(jitter) if !jitter.is_zero() => {
                let spread = jitter.as_nanos() as u64 * 2;
                let offset = rng.below(spread + 1);
                (latency + Duration::from_nanos(offset)).saturating_sub(jitter)
            }
            _ => latency,
        }
    }

    /// The seed of this plan's decisions: its own `seed`, else the process seed (which
    /// `Server::bind` always sets).
    pub fn seed_or(&self, process: Option<u64>) -> u64 {
        self.seed.or(process).unwrap_or(0)
    }

    /// Whether a stream connection that drew `draw` (uniform in 0..1 at accept) is faulty.
    pub fn applies(&self, draw: f64) -> bool {
        draw < self.p
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Faults {
    type Err = String;

    fn from_str(text: &str) -> Result<Faults, String> {
        Faults::parse(text)
    }
}

fn probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{value}` is not a probability from 0 to 1")),
    }
}

fn positive(bytes: u64) -> Result<u64, String> {
    if bytes == 0 {
        Err("must be more than 0".into())
    } else {
        Ok(bytes)
    }
}

fn parse_slice(value: &str) -> Result<(u64, u64), String> {
    let (min, max) = match value.split_once("..") {
        Some((min, max)) => (parse_bytes(min)?, parse_bytes(max)?),
        None => {
            let n = parse_bytes(value)?;
            (n, n)
        }
    };
    if min == 0 || min > max {
        return Err(format!("`{value}` is not N or MIN..MAX with 1 <= MIN <= MAX"));
    }
    Ok((min, max))
}

/// A small, fast, seedable generator (splitmix64): fault decisions need reproducibility, not
/// cryptographic strength.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for one stream of decisions: the seed mixed with what it is for.
    pub fn new(seed: u64, listener: usize, stream: u64) -> Rng {
        let mut rng = Rng(seed
            ^ (listener as u64).rotate_left(32)
            ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A seed for a run that was given none: from the OS's per-process random keys.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() >> 11 // fits a JSON number exactly (53 bits), so a replay can copy it
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_served_keys() {
        let f = Faults::parse("close-after=1KiB&p=0.5&seed=42").unwrap();
        assert_eq!((f.close_after, f.p, f.seed), (Some(1024), 0.5, Some(42)));
        assert_eq!(f.text(), "close-after=1KiB&p=0.5&seed=42");
        let f = Faults::parse("drop=0.05&dup=0.01&corrupt=0.001").unwrap();
        assert_eq!((f.drop, f.dup, f.corrupt), (0.05, 0.01, 0.001));
        assert!(f.check_for("udp").is_ok());
        assert!(Faults::parse("stall-after=0").unwrap().check_for("tcp").is_ok());
    }

    #[test]
    fn every_error_names_its_key() {
        for (plan, needle) in [
            ("drop=2", "`drop`"),
            ("latency=fast", "`latency`"),
            ("wobble=1", "unknown fault `wobble`"),
            ("p=-0.1", "`p`"),
            ("close-after=abc", "`close-after`"),
            ("seed=x", "`seed`"),
            ("drop", "not key=value"),
            ("drop=0.1&drop=0.2", "twice"),
            ("close-after=1&reset-after=2", "exclude"),
            ("", "empty"),
            ("slice=0", "`slice`"),
            ("slice=10..5", "`slice`"),
            ("rate=0", "`rate`"),
            ("slice-delay=5ms", "needs `slice`"),
        ] {
            let err = Faults::parse(plan).unwrap_err();
            assert!(err.contains(needle), "{plan:?}: {err}");
        }
    }

    #[test]
    fn keys_must_suit_the_listener() {
        let udp_on_tcp = Faults::parse("drop=0.1").unwrap().check_for("tcp").unwrap_err();
        assert!(udp_on_tcp.contains("`drop` is a datagram fault"), "{udp_on_tcp}");
        let tcp_on_udp = Faults::parse("close-after=10").unwrap().check_for("udp").unwrap_err();
        assert!(tcp_on_udp.contains("`close-after` is a stream fault"), "{tcp_on_udp}");
        assert!(Faults::parse("seed=1").unwrap().check_for("chat").is_err());
        assert!(Faults::parse("latency=5ms").unwrap().check_for("tcp").is_ok());
        assert!(Faults::parse("latency=5ms&jitter=1ms").unwrap().check_for("udp").is_ok());
        assert!(Faults::parse("slice=1..10&slice-delay=1ms").unwrap().check_for("unix").is_ok());
    }

    #[test]
    fn the_generator_replays_and_spreads() {
        let draws = |seed| {
            let mut r = Rng::new(seed, 1, 2);
            (0..5).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let mut r = Rng::new(1, 0, 0);
        let hits = (0..100_000).filter(|_| r.chance(0.1)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert!(!Rng::new(1, 0, 0).chance(0.0));
    }
}
