//! Fuzz targets for the parsers and framers that read other people's bytes, as property tests on
//! stable Rust (proptest: already the WebSocket property tests' engine, it shrinks a failing input
//! to a small one, and it runs here without the nightly toolchain cargo-fuzz needs). Each target
//! states invariants, not only "no panic": round trips where a format is written and read,
//! framing independent of how the input is split into reads, incremental UTF-8 checking equal
//! to `std::str::from_utf8` on the whole, bounds never exceeded.
//!
//! Budget: a plain `cargo test` runs each target for [`MIN_CASES`] inputs;
//! `RICOCHET_FUZZ_SECS=N` runs each for N seconds (at least as many inputs), and
//! `scripts/fuzz.sh N` does that for every target and prints the inputs tried per target. A
//! failure panics with the shrunk input; it is fixed, and the input goes into
//! `fuzz/corpus/TARGET/` (one file per input, raw bytes), which the target replays first on
//! every run.

/// Where the corpora are: `fuzz/corpus/TARGET/`.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");

mod harness;
mod machines;
use harness::*;
use proptest::prelude::*;

mod proxy_header {
    use std::net::SocketAddr;

    use super::*;
    use crate::proxy::{encode, parse, Header, Proxy, V1_MAX, V2_MAX};

    fn version() -> impl Strategy<Value = Proxy> {
        prop_oneof![Just(Proxy::V1), Just(Proxy::V2), Just(Proxy::Any)]
    }

    /// Any bytes: a verdict, never a panic; a whole header is within the bytes and the bounds;
    /// a header's verdict does not change with what follows it, and every prefix of it is
    /// `Partial`.
    /// Headers as a balancer writes them, some with a byte changed or cut short, and bytes
    /// after them; v1-looking text; and any bytes.
    fn near_headers() -> impl Strategy<Value = Vec<u8>> {
        let addr = any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port)));
        let header = (prop_oneof![Just(Proxy::V1), Just(Proxy::V2)], addr.clone(), addr)
            .prop_map(|(v, s, d)| encode(v, Some(s), Some(d)));
        prop_oneof![
            bytes(V2_MAX + 64),
            (header.clone(), bytes(16)).prop_map(|(h, rest)| [h, rest].concat()),
            (header.clone(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                |(mut h, at, b)| {
                    let i = at.index(h.len());
                    h[i] = b;
                    h
                }
            ),
            (header, any::<prop::sample::Index>())
                .prop_map(|(h, at)| h[..at.index(h.len())].to_vec()),
            "PROXY (TCP4|TCP6|UNKNOWN)[ 0-9a-f.:]{0,60}(\r\n)?".prop_map(String::into_bytes),
        ]
    }

    #[test]
    fn parse_any_bytes() {
        let strategy = (near_headers(), version());
        fuzz("proxy", strategy.prop_map(|(b, v)| Input(b, v)), |Input(data, version)| {
            if let Header::Whole { len, .. } = parse(&data, version) {
                prop_assert!(len <= data.len() && len <= V2_MAX);
                let whole = parse(&data[..len], version);
                prop_assert_eq!(whole, parse(&data, version));
                for cut in 0..len {
                    prop_assert_eq!(parse(&data[..cut], version), Header::Partial, "cut {}", cut);
                }
            }
            if data.len() > V1_MAX && data.starts_with(b"PROXY ") && version != Proxy::V2 {
                prop_assert!(!matches!(parse(&data, version), Header::Partial));
            }
            Ok(())
        });
    }

    /// What `encode` writes for any addresses, `parse` reads back, with anything after it.
    #[test]
    fn encode_round_trips() {
        let addr = prop_oneof![
            any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ];
        let strategy =
            (prop_oneof![Just(Proxy::V1), Just(Proxy::V2)], addr.clone(), addr, bytes(64));
        run("proxy-encode", strategy, |(version, source, dest, rest)| {
            let header = encode(version, Some(source), Some(dest));
            let same_family = source.is_ipv4() == dest.is_ipv4();
            let want = Header::Whole { len: header.len(), source: same_family.then_some(source) };
            prop_assert_eq!(parse(&[header.as_slice(), &rest].concat(), Proxy::Any), want);
            Ok(())
        });
    }

    /// Bytes and a version, from raw corpus bytes (the first byte picks the version).
    #[derive(Debug, Clone)]
    struct Input(Vec<u8>, Proxy);

    impl FromCorpus for Input {
        fn from_corpus(mut bytes: Vec<u8>) -> Input {
            let version = match bytes.first().copied().unwrap_or(0) % 3 {
                0 => Proxy::V1,
                1 => Proxy::V2,
                _ => Proxy::Any,
            };
            if !bytes.is_empty() {
                bytes.remove(0);
            }
            Input(bytes, version)
        }
    }
}

mod http_head {
    use super::*;

    /// The metrics listener's request head: any bytes get a verdict, and a whole head's length
    /// is within the bytes.
    #[test]
    fn parse_any_bytes() {
        fuzz("http", bytes(10_000), |data| {
            if let crate::http::Parsed::Request { len, .. } = crate::http::parse(&data) {
                prop_assert!(len <= data.len());
            }
            Ok(())
        });
    }
}

mod chat_lines {
    use super::*;
    use crate::behaviour::chat::lines::{Framer, Piece};

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum P {
        Lines(Vec<u8>, usize),
        Command(Vec<u8>),
        TooLong,
    }

    /// Frames `pieces` one read at a time with line cap `max`: what is delivered, lines joined
    /// (a run of lines may come in one piece or several, by how the reads fell).
    fn frame(pieces: &[&[u8]], max: usize) -> Vec<P> {
        let mut f = Framer::default();
        let mut got: Vec<P> = Vec::new();
        let mut push = |p: Piece<'_>| {
            let p = match p {
                Piece::Lines(b, n) => P::Lines(b.to_vec(), n),
                Piece::Command(b) => P::Command(b.to_vec()),
                Piece::TooLong => P::TooLong,
            };
            match (got.last_mut(), p) {
                (Some(P::Lines(all, count)), P::Lines(more, n)) => {
                    all.extend_from_slice(&more);
                    *count += n;
                }
                (_, p) => got.push(p),
            }
            true
        };
        for piece in pieces {
            if !f.feed(piece, max, &mut push) {
                return got; // too long: the member is cut off
            }
            assert!(f.held() <= max, "held {} over the cap {max}", f.held());
        }
        got
    }

    /// The chat framing is independent of how the input was split into reads, never holds more
    /// than the line cap, and delivers every byte of complete lines exactly once.
    #[test]
    fn framing_is_independent_of_reads() {
        let text = proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'/'), Just(b'a'), any::<u8>()],
            0..600,
        );
        let strategy = (text, cuts(), 1usize..200);
        run("chat-lines", strategy, |(data, cuts, max)| {
            let whole = frame(&[&data], max);
            let pieces = split(&data, &cuts);
            prop_assert_eq!(frame(&pieces, max), whole.clone());
            // Every complete line, each byte once and in order (a command without its `\n`).
            let mut delivered = Vec::new();
            for p in &whole {
                match p {
                    P::Lines(b, n) => {
                        prop_assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), *n);
                        delivered.extend_from_slice(b);
                    }
                    P::Command(b) => {
                        prop_assert!(b.first() == Some(&b'/') && !b.contains(&b'\n'));
                        delivered.extend_from_slice(b);
                        delivered.push(b'\n');
                    }
                    P::TooLong => {}
                }
            }
            if !whole.contains(&P::TooLong) {
                let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                prop_assert_eq!(&delivered[..], &data[..complete]);
            }
            Ok(())
        });
    }
}

mod utf8 {
    use super::*;
    use crate::websocket::Utf8Check;

    /// Incremental UTF-8 checking, over any split, agrees with `std::str::from_utf8` on the
    /// whole: valid and complete, valid so far, or invalid.
    #[test]
    fn incremental_equals_whole() {
        let text = prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..64),
            (any::<String>(), any::<u8>(), 0usize..8).prop_map(|(s, b, at)| {
                let mut v = s.into_bytes();
                let at = at.min(v.len());
                v.insert(at, b);
                v
            }),
        ];
        run("utf8", (text, cuts()), |(data, cuts)| {
            let mut check = Utf8Check::default();
            let ok = split(&data, &cuts).iter().all(|piece| check.feed(piece));
            match std::str::from_utf8(&data) {
                Ok(_) => prop_assert!(ok && check.is_complete()),
                // Invalid for good, or valid so far with a character cut at the end.
                Err(e) => prop_assert_eq!(ok && !check.is_complete(), e.error_len().is_none()),
            }
            Ok(())
        });
    }
}

mod text_values {
    use super::*;
    use crate::units::{parse_bytes, parse_duration};

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9_.]{0,30}[a-zA-Z%]{0,4}",
            "[0-9]{1,25}(ns|us|ms|s|m|h|d|KiB|MiB|GiB|kB|MB|GB|b)?",
        ]
    }

    /// Sizes and durations: any text gets a value or a one-line message, never a panic.
    #[test]
    fn units_any_text() {
        fuzz("units", text(), |s| {
            if let Err(msg) = parse_bytes(&s) {
                prop_assert!(!msg.is_empty() && !msg.contains('\n'));
            }
            if let Err(msg) = parse_duration(&s) {
                prop_assert!(!msg.is_empty());
            }
            Ok(())
        });
    }

    /// Fault plans: any text is a plan or a message; a plan's text parses to the same plan.
    #[test]
    fn fault_plans_any_text() {
        let plan = prop_oneof![
            any::<String>(),
            "((latency|jitter|rate|slice|close-after|reset-after|stall-after|corrupt|p|drop|dup|seed)=[0-9.a-zA-Z%]{0,8}&?){0,4}",
        ];
        fuzz("faults", plan, |s| {
            if let Ok(plan) = crate::faults::Faults::parse(&s) {
                let again = crate::faults::Faults::parse(plan.text());
                prop_assert!(again.is_ok(), "{:?} reads back as {:?}", plan.text(), again);
            }
            Ok(())
        });
    }

    /// Listen URLs: any text is a listener or a message; a listener's URL reads back as itself.
    #[test]
    fn listen_urls_round_trip() {
        let url = prop_oneof![
            any::<String>(),
            "(tcp|udp|tls|ws|wss|chat|chat\\+tls|chat\\+ws|chat\\+wss)://127\\.0\\.0\\.1:[0-9]{1,5}(\\?(room=[a-z]{1,5}|proxy=(v1|v2|any|v3))(&(room=[a-z]{1,3}|proxy=v1|latency=1ms))?)?",
            "(unix|chat\\+unix):/tmp/[a-z]{0,8}(\\?proxy=v2)?",
        ];
        fuzz("listen-urls", url, |s| {
            if let Ok(parsed) = crate::url::parse_listen(&s) {
                let text = parsed.spec.to_string();
                let again = crate::url::parse_listen(&text);
                prop_assert!(again.is_ok(), "{} -> {} fails: {:?}", s, text, again.err());
                prop_assert_eq!(again.unwrap().spec, parsed.spec);
            }
            Ok(())
        });
    }
}

mod control {
    use std::io::Read;

    use super::*;
    use crate::control::{session, Request, MAX_LINE};

    /// Hands out its bytes in the scripted read sizes (cycled).
    struct Pieces<'a> {
        data: &'a [u8],
        cuts: &'a [usize],
        turn: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let want =
                self.cuts.get(self.turn % self.cuts.len().max(1)).copied().unwrap_or(usize::MAX);
            self.turn += 1;
            let n = want.max(1).min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The reply a request line gets, as the server words it but with no server behind it.
    fn answer(line: &str) -> Option<String> {
        Some(match Request::parse(line)? {
            Ok(request) => format!("ok {request}"),
            Err(e) => format!("error: {e}"),
        })
    }

    /// Command lines as scripts write them, broken ones, long ones, and any bytes.
    fn sessions() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just("stats".to_string()),
            "faults [0-9]{1,3} (off|latency=[0-9]{1,3}ms|reset-after=[0-9]{1,4}|corrupt=0\\.[0-9]|x)",
            "[ \t]{0,2}(faults|stats|FAULTS)( [0-9a-z=&.-]{0,12}){0,3}[ \t\r]{0,2}",
            any::<String>(),
        ];
        let text =
            proptest::collection::vec(line, 0..8).prop_map(|lines| lines.join("\n").into_bytes());
        let long = (1usize..3, any::<u8>()).prop_map(|(k, b)| {
            let mut v = vec![b'a'; MAX_LINE as usize * k - 1 + usize::from(b % 3)];
            v.extend_from_slice(b"\nstats\n");
            v
        });
        prop_oneof![6 => text, 3 => bytes(400), 1 => long]
    }

    /// The control protocol: over any bytes in any reads, one reply line per non-blank line (a
    /// line over the limit, or not UTF-8, gets its error and the session goes on); a request
    /// reads back from its own words.
    #[test]
    fn one_reply_per_line() {
        fuzz(
            "control",
            (sessions(), cuts()).prop_map(|(b, c)| Input(b, c)),
            |Input(data, cuts)| {
                let mut out = Vec::new();
                let reader = Pieces { data: &data, cuts: &cuts, turn: 0 };
                session(reader, &mut out, answer).expect("reads and writes in memory cannot fail");
                let mut want = Vec::new();
                let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
                if data.ends_with(b"\n") || data.is_empty() {
                    lines.pop();
                }
                for line in lines {
                    let reply = if line.len() >= MAX_LINE as usize {
                        Some(format!("error: a command line longer than {MAX_LINE} bytes"))
                    } else {
                        match std::str::from_utf8(line) {
                            Ok(text) => answer(text),
                            Err(_) => Some("error: a command line must be UTF-8 text".into()),
                        }
                    };
                    if let Some(reply) = reply {
                        prop_assert!(!reply.contains('\n'), "a reply of two lines: {:?}", reply);
                        want.extend_from_slice(reply.as_bytes());
                        want.push(b'\n');
                    }
                    if let Ok(Some(Ok(request))) = std::str::from_utf8(line).map(Request::parse) {
                        let again = Request::parse(&request.to_string());
                        prop_assert_eq!(again, Some(Ok(request)));
                    }
                }
                prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
                Ok(())
            },
        );
    }

    /// A session's bytes and its read sizes (corpus files hold the bytes; read whole).
    #[derive(Debug, Clone)]
    struct Input(Vec<u8>, Vec<usize>);

    impl FromCorpus for Input {
        fn from_corpus(bytes: Vec<u8>) -> Input {
            Input(bytes, Vec::new())
        }
    }
}

mod ws_frames {
    use super::*;
    use crate::transport::scripted::Scripted;
    use crate::transport::ws::properties::{
        client_bytes, message, run_echo, server_frames, REQUEST,
    };
    use crate::transport::ws::{Mode, Ws};

    /// The server's output for the client's `data` (after a valid upgrade) read in `reads`:
    /// the messages it finished, its close code, and whether it ended inside a message.
    #[allow(clippy::type_complexity)]
    fn serve(data: &[u8], reads: Vec<usize>) -> (Vec<(u8, Vec<u8>)>, Option<u16>, bool) {
        let io = Scripted::new([REQUEST, data].concat(), reads, vec![usize::MAX]);
        let mut ws = Ws::new(io, Mode::Echo, 4096);
        run_echo(&mut ws);
        let (messages, _pongs, close, unfinished) = server_frames(&ws.inner_mut().output);
        (messages, close, unfinished)
    }

    /// Client frames as clients write them, some with a byte changed or cut short, and any
    /// bytes.
    fn client_frames() -> impl Strategy<Value = Vec<u8>> {
        let valid = || {
            proptest::collection::vec(message(), 0..4)
                .prop_map(|m| client_bytes(&m)[REQUEST.len()..].to_vec())
        };
        prop_oneof![
            2 => valid(),
            3 => (valid(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                |(mut v, at, b)| {
                    if !v.is_empty() {
                        let i = at.index(v.len());
                        v[i] = b;
                    }
                    v
                }
            ),
            1 => (valid(), any::<prop::sample::Index>()).prop_map(|(v, at)| v[..at.index(v.len() + 1)].to_vec()),
            2 => bytes(600),
        ]
    }

    /// The WebSocket frame decoder, behind a valid upgrade: any client bytes, in any reads,
    /// never panic or hang, and get well-formed server frames; the messages echoed whole and
    /// the close code do not depend on how the bytes were split into reads (a message still
    /// open when the connection fails may have been echoed in part, by how far the reads got).
    #[test]
    fn decoding_is_independent_of_reads() {
        let reads = proptest::collection::vec(1usize..100, 1..6);
        fuzz(
            "ws-frames",
            (client_frames(), reads).prop_map(|(b, r)| Input(b, r)),
            |Input(data, reads)| {
                let whole = serve(&data, vec![usize::MAX]);
                let pieces = serve(&data, reads);
                prop_assert_eq!(&pieces.0, &whole.0, "messages echoed whole");
                prop_assert_eq!(pieces.1, whole.1, "close code");
                Ok(())
            },
        );
    }

    /// Client bytes and read sizes (corpus files hold the bytes after the upgrade; read whole).
    #[derive(Debug, Clone)]
    struct Input(Vec<u8>, Vec<usize>);

    impl FromCorpus for Input {
        fn from_corpus(bytes: Vec<u8>) -> Input {
            Input(bytes, vec![7])
        }
    }
}
