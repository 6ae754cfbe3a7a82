//! Checked settings: what a benchmark run needs, converted from the raw command line
//! ([`crate::cli::Args`]) with every limit checked (each message names its flag), and holding no
//! clap type. [`Trust`] is how a
//! TLS target's certificate is trusted.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cli::{Args, RateArg};
use crate::payload::{MIN_LINE, SEQ_LEN};
use crate::target::Target;

/// A checked run description (see the command line for each field's meaning).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: start ricochet in-process on 127.0.0.1:0 and benchmark it.
    pub target: Option<Target>,
    /// Chat fan-out load (a `chat://` target, or an embedded room).
    pub chat: bool,
    /// Chat: how many connections publish.
    pub publishers: usize,
    /// Connections (UDP: sockets).
    pub connections: u32,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection at most.
    pub depth: usize,
    /// Measured period (duration mode).
    pub duration: Option<Duration>,
    /// Recorded messages to complete (message-count mode).
    pub messages: Option<u64>,
    /// Open loop: messages per second in total (a changing rate: its mean over the run, or its
    /// last rate in message-count mode).
    pub rate: Option<f64>,
    /// Open loop with a changing rate (`--rate FROM..TO --ramp`, `--rate A,B,C --step`).
    pub profile: Option<crate::schedule::Profile>,
    /// Not recorded, before the measured period.
    pub warmup: Duration,
    /// Load threads.
    pub threads: usize,
    /// A message not echoed within this is an error (UDP: lost).
    pub timeout: Duration,
    /// Write an HdrHistogram interval log here.
    pub hlog: Option<PathBuf>,
    /// Show a progress line on stderr.
    pub progress: bool,
    /// `--live`: each second as a JSON line on stdout.
    pub live: bool,
    /// `--metrics`: serve the running test here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Without a target: an embedded TLS listener.
    pub tls: bool,
    /// Without a target: an embedded WebSocket listener (over TLS with `tls`).
    pub ws: bool,
    /// WebSocket targets: text messages (ASCII payloads) instead of binary.
    pub ws_text: bool,
    /// How a `tls://` or `chat+tls://` target is trusted.
    pub trust: Trust,
    /// Resume TLS sessions when reconnecting.
    pub tls_resume: bool,
    /// Close and reopen each connection after this many messages.
    pub reconnect_every: Option<u64>,
    /// A PROXY protocol header first on every connection.
    pub proxy_header: Option<ricochet::proxy::Proxy>,
    /// `--source`: local addresses, round robin over the connections (empty: the kernel's choice).
    pub sources: Vec<std::net::IpAddr>,
    /// `--connect-rate`: connections opened per second, in all.
    pub connect_rate: Option<f64>,
    /// Start the warm-up at this instant (several loadgens together).
    pub start_at: Option<SystemTime>,
}

/// How a TLS target's certificate is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Trust the certificates in this PEM file (CAs, or the server's own); `None`: the
    /// system's bundle, unless there are pins.
    pub ca: Option<PathBuf>,
    /// Trust exactly the certificates with these SHA-256 fingerprints.
    pub pins: Vec<String>,
    /// Verify nothing (still encrypted); said in the report.
    pub insecure: bool,
    /// The server name to ask for and verify; `None`: the target's host.
    pub sni: Option<String>,
}

impl From<&crate::cli::TlsArgs> for Trust {
    fn from(args: &crate::cli::TlsArgs) -> Trust {
        Trust {
            ca: args.tls_ca.clone(),
            pins: args.tls_pin.clone(),
            insecure: args.insecure,
            sni: args.sni.clone(),
        }
    }
}

impl Trust {
    /// The TLS client for a target whose host is `host`.
    pub fn client(&self, host: &str, resume: bool) -> Result<crate::tls::TlsClient, String> {
        let name = self.sni.as_deref().unwrap_or(host);
        let spec = crate::tls::TrustSpec {
            ca: self.ca.as_deref(),
            pins: &self.pins,
            insecure: self.insecure,
        };
        crate::tls::TlsClient::new(&spec, name, resume)
    }
}

/// Largest message accepted on a stream (each connection keeps depth × size bytes).
const MAX_STREAM_SIZE: u64 = 64 << 20;
/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: u64 = 65507;
/// Longest chat line: ricochet's default --max-line, plus the newline.
const MAX_LINE: u64 = 64 * 1024 + 1;

impl TryFrom<&Args> for Settings {
    type Error = String;

    // Long on purpose: one check per flag, in the order of `--help`, each with its message; a
    // reader looking for a flag's limit finds it here, in one place.
    fn try_from(args: &Args) -> Result<Settings, String> {
        let target = args.target.as_deref().map(Target::parse).transpose()?;
        let udp = target.as_ref().is_some_and(Target::is_udp);
        let chat = args.chat || target.as_ref().is_some_and(Target::is_chat);
        if args.connections == 0 || args.connections > 100_000 {
            return Err(format!("--connections {} must be between 1 and 100000", args.connections));
        }
        if udp && !(SEQ_LEN as u64..=MAX_DATAGRAM).contains(&args.size) {
            return Err(format!(
                "--size {} for UDP must be between {SEQ_LEN} (the sequence number) and {MAX_DATAGRAM}",
                args.size
            ));
        }
        if chat {
            if !(MIN_LINE as u64..=MAX_LINE).contains(&args.size) {
                return Err(format!(
                    "--size {} for chat must be between {MIN_LINE} (a line's publisher, number \
                     and newline) and {MAX_LINE} (ricochet's default --max-line)",
                    args.size
                ));
            }
            if args.connections < 2 {
                return Err(
                    "chat needs --connections 2 or more: lines go to the other members".into()
                );
            }
            if args.threads > 1 {
                return Err("chat runs its members on one thread: leave --threads at 1".into());
            }
            if args.publishers.is_some_and(|p| p == 0 || p > args.connections) {
                return Err(format!(
                    "--publishers {} must be between 1 and --connections ({})",
                    args.publishers.unwrap_or(0),
                    args.connections
                ));
            }
        } else if args.publishers.is_some() {
            return Err("--publishers is for chat:// targets (or --chat)".into());
        }
        if !udp && !chat && !(1..=MAX_STREAM_SIZE).contains(&args.size) {
            return Err(format!("--size {} must be between 1 byte and 64MiB", args.size));
        }
        if args.depth == 0 || args.depth > 65536 {
            return Err(format!("--depth {} must be between 1 and 65536", args.depth));
        }
        let threads = match args.threads {
            0 if chat => 1,
            0 => (ricochet::sys::cpus_available() as u32).clamp(1, args.connections.min(256)),
            n => n,
        };
        if threads > 256 || threads > args.connections || (chat && threads != 1) {
            return Err(format!(
                "--threads {} must be between 1 and min(256, --connections)",
                args.threads
            ));
        }
        let profile = rate_profile(args)?;
        if profile.is_some() && (chat || args.messages.is_some()) {
            return Err(
                "a changing --rate is for echo runs of a duration (-t), not chat or -n".into()
            );
        }
        let rates = match (&args.rate, &profile) {
            (_, Some(p)) => {
                let (lo, hi) = p.bounds();
                vec![lo, hi]
            }
            (Some(RateArg::Fixed(r)), None) => vec![*r],
            _ => Vec::new(),
        };
        for rate in rates {
            if !(rate.is_finite() && (crate::schedule::MIN_RATE..=1e9).contains(&rate)) {
                return Err(format!(
                    "--rate {rate} must be between {} and 1e9 messages per second",
                    crate::schedule::MIN_RATE
                ));
            }
        }
        if args.duration == Some(Duration::ZERO) {
            return Err("--duration must be longer than 0".into());
        }
        if args.timeout.is_zero() {
            return Err("--timeout must be longer than 0".into());
        }
        let tls = args.tls || target.as_ref().is_some_and(Target::is_tls);
        if !tls {
            if let Some(flag) = args.trust.given().or(args.tls_resume.then_some("--tls-resume")) {
                return Err(format!("{flag} is for tls:// and chat+tls:// targets (or --tls)"));
            }
        }
        let websocket = args.ws || target.as_ref().is_some_and(Target::is_websocket);
        if args.ws_text && !websocket {
            return Err(
                "--ws-text is for ws://, wss://, chat+ws:// and chat+wss:// targets (or --ws)"
                    .into(),
            );
        }
        if let Some(n) = args.reconnect_every {
            if n == 0 {
                return Err("--reconnect-every must be at least 1".into());
            }
            if udp || chat {
                return Err(
                    "--reconnect-every is for stream echo targets (tcp, unix, tls, ws, wss)".into(),
                );
            }
        }
        if args.source.is_some() {
            let stream = target.as_ref().is_none_or(|t| t.host().is_some()) && !udp;
            if !stream {
                return Err(
                    "--source is for TCP targets (tcp, tls, ws, wss and chat over them)".into()
                );
            }
        }
        if let Some(rate) = args.connect_rate {
            if !(rate.is_finite() && (0.1..=1e6).contains(&rate)) {
                return Err(format!(
                    "--connect-rate {rate} must be between 0.1 and 1e6 connections per second"
                ));
            }
            if chat {
                return Err(
                    "--connect-rate is for echo targets (chat members all join at once)".into()
                );
            }
        }
        let duration = match args.messages {
            Some(_) => None,
            None => Some(args.duration.unwrap_or(Duration::from_secs(10))),
        };
        let default_warmup =
            if args.messages.is_some() { Duration::ZERO } else { Duration::from_secs(1) };
        Ok(Settings {
            target,
            chat,
            publishers: args.publishers.unwrap_or(args.connections) as usize,
            connections: args.connections,
            size: args.size as usize,
            depth: args.depth as usize,
            duration,
            messages: args.messages,
            rate: match (&args.rate, &profile) {
                (_, Some(p)) => {
                    let d = args.duration.unwrap_or(Duration::from_secs(10));
                    Some(p.messages_in(d) / d.as_secs_f64())
                }
                (Some(RateArg::Fixed(r)), None) => Some(*r),
                _ => None,
            },
            profile,
            warmup: args.warmup.unwrap_or(default_warmup),
            threads: threads as usize,
            timeout: args.timeout,
            hlog: args.hlog.clone(),
            live: args.live,
            metrics: args.metrics,
            progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            tls: args.tls,
            ws: args.ws,
            ws_text: args.ws_text,
            trust: Trust::from(&args.trust),
            tls_resume: args.tls_resume,
            reconnect_every: args.reconnect_every,
            proxy_header: args.proxy_header,
            sources: args.source.clone().map(|s| s.0).unwrap_or_default(),
            connect_rate: args.connect_rate,
            start_at: args.start_at,
        })
    }
}

/// The changing rate `--rate` with `--ramp` or `--step` asks for, checked.
fn rate_profile(args: &Args) -> Result<Option<crate::schedule::Profile>, String> {
    use crate::schedule::Profile;
    match (&args.rate, args.ramp, args.step) {
        (Some(RateArg::Ramp(from, to)), Some(over), None) if !over.is_zero() => {
            Ok(Some(Profile::Ramp { from: *from, to: *to, over }))
        }
        (Some(RateArg::Steps(rates)), None, Some(each)) if !each.is_zero() => {
            Ok(Some(Profile::Steps { rates: rates.clone(), each }))
        }
        (Some(RateArg::Ramp(..)), _, _) => {
            Err("--rate FROM..TO needs --ramp DUR (longer than 0), and no --step".into())
        }
        (Some(RateArg::Steps(_)), _, _) => {
            Err("--rate A,B,C needs --step DUR (longer than 0), and no --ramp".into())
        }
        (_, Some(_), _) => Err("--ramp is for --rate FROM..TO".into()),
        (_, _, Some(_)) => Err("--step is for --rate A,B,C".into()),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_sources, Command};
    use clap::Parser;

    fn settings(argv: &[&str]) -> Result<Settings, String> {
        let args = Args::try_parse_from(std::iter::once("loadgen").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        Settings::try_from(&args)
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn sources_are_lists_and_ranges_of_one_family() {
        let ips = |t: &str| {
            parse_sources(t).map(|s| s.0.iter().map(|ip| ip.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(ips("127.0.0.2-127.0.0.4").unwrap(), ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
        assert_eq!(
            ips("10.0.0.255-10.0.1.0, 10.0.2.1").unwrap(),
            ["10.0.0.255", "10.0.1.0", "10.0.2.1"]
        );
        assert_eq!(ips("fd00::9-fd00::a").unwrap(), ["fd00::9", "fd00::a"]);
        for (bad, why) in [
            ("127.0.0.4-127.0.0.2", "ends before it begins"),
            ("127.0.0.1,::1", "one family"),
            ("127.0.0.1-::1", "one family"),
            ("localhost", "not an IP address"),
            ("127.0.0.1,127.0.0.1", "given twice"),
            ("10.0.0.0-10.1.0.0", "more than 65536"),
        ] {
            let e = ips(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("--source"), "{bad}: {e}");
        }
        let e = settings(&["udp://127.0.0.1:9", "--source", "127.0.0.2"]).unwrap_err();
        assert!(e.contains("--source is for TCP targets"), "{e}");
        let e = settings(&["--chat", "--connect-rate", "10"]).unwrap_err();
        assert!(e.contains("--connect-rate is for echo targets"), "{e}");
        let e = settings(&["--connect-rate", "0"]).unwrap_err();
        assert!(e.contains("between 0.1 and 1e6"), "{e}");
        let s = settings(&["--source", "127.0.0.2-127.0.0.3", "--connect-rate", "50"]).unwrap();
        assert_eq!((s.sources.len(), s.connect_rate), (2, Some(50.0)));
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.target, None);
        assert_eq!((s.connections, s.size, s.depth, s.threads), (50, 64, 1, 1));
        assert_eq!(s.duration, Some(Duration::from_secs(10)));
        assert_eq!(s.warmup, Duration::from_secs(1));
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.rate, None);
    }

    #[test]
    fn chat_settings() {
        let s = settings(&["chat://127.0.0.1:7008", "-c", "10", "--publishers", "2"]).unwrap();
        assert!(s.chat);
        assert_eq!((s.connections, s.publishers), (10, 2));
        let s = settings(&["--chat", "-c", "3"]).unwrap();
        assert!(s.chat && s.target.is_none());
        assert_eq!(s.publishers, 3, "all members publish by default");
    }

    #[test]
    fn messages_mode_has_no_warmup_by_default() {
        let s = settings(&["-n", "1000", "127.0.0.1:1"]).unwrap();
        assert_eq!((s.duration, s.messages, s.warmup), (None, Some(1000), Duration::ZERO));
        let s = settings(&["-n", "1000", "--warmup", "2s"]).unwrap();
        assert_eq!(s.warmup, Duration::from_secs(2));
    }

    #[test]
    fn threads_0_is_one_per_cpu_at_most_one_per_connection() {
        let s = settings(&["--threads", "0"]).unwrap();
        assert_eq!(s.threads, ricochet::sys::cpus_available().min(50));
        assert_eq!(settings(&["-c", "1", "--threads", "0"]).unwrap().threads, 1);
    }

    #[test]
    fn rejects_nonsense() {
        for argv in [
            &["-c", "0"][..],
            &["-s", "0"],
            &["-s", "65MiB"],
            &["udp://127.0.0.1:1", "-s", "4"],
            &["udp://127.0.0.1:1", "-s", "65508"],
            &["-d", "0"],
            &["-c", "2", "--threads", "3"],
            &["-r", "0"],
            &["-r", "-5"],
            &["-t", "0s"],
            &["-n", "0"],
            &["-t", "1s", "-n", "5"],
            &["--timeout", "0s"],
            &["http://x:1"],
            &["chat://127.0.0.1:1", "-c", "1"],
            &["chat://127.0.0.1:1", "-s", "20"],
            &["chat://127.0.0.1:1", "-c", "4", "--publishers", "5"],
            &["chat://127.0.0.1:1", "--publishers", "0"],
            &["chat://127.0.0.1:1", "-c", "4", "--threads", "2"],
            &["127.0.0.1:1", "--publishers", "1"],
            &["--chat", "127.0.0.1:1"],
        ] {
            assert!(settings(argv).is_err(), "{argv:?} accepted");
        }
    }

    #[test]
    fn probe_subcommand() {
        let args =
            Args::try_parse_from(["loadgen", "probe", "unix:/tmp/x", "--message", "hi"]).unwrap();
        match args.command {
            Some(Command::Probe { target, message, timeout, .. }) => {
                assert_eq!((target.as_str(), message.as_str()), ("unix:/tmp/x", "hi"));
                assert_eq!(timeout, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
    }
}
