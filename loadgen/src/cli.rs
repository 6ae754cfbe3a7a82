//! The `loadgen` command line: raw flags only ([`Args`], clap), and the value parsers flags
//! share. `settings.rs` turns them into checked [`crate::settings::Settings`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ricochet::units::{parse_bytes, parse_duration, parse_fraction};

/// The raw command line.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    args_conflicts_with_subcommands = true,
    about = "Echo and chat load generator: verified payloads, HdrHistogram latencies, closed or open loop.",
    long_about = "Echo load generator: every echoed byte is verified against what was sent, every \
message's latency is recorded in an HdrHistogram (ns resolution), and open-loop runs (--rate) \
measure latency from each message's intended send time, so a stalled server shows in the \
percentiles (no coordinated omission).\n\n\
Without a TARGET, loadgen starts ricochet in-process on 127.0.0.1:0 and benchmarks it.\n\n\
A chat:// target (or --chat, for an embedded room) measures fan-out instead: every connection is \
a member of the room, --publishers of them publish lines, and every member checks that it gets \
every other publisher's lines exactly once, in order, byte for byte. A line is a message; each \
member's receipt of it is a delivery, and latency is recorded per delivery.\n\n\
Exit status: 0 when there were no errors and no mismatches (chat: and nothing lost), 1 \
otherwise, 2 for usage errors.",
    after_help = "Examples:\n  loadgen                                   # benchmark an embedded ricochet\n  \
loadgen 127.0.0.1:7007 -c 100 -d 4 -t 30s   # closed loop, 100 conns × 4 in flight\n  \
loadgen 127.0.0.1:7007 -r 50000 --json      # open loop at 50k msgs/s, JSON report\n  \
loadgen udp://127.0.0.1:7007 -s 512         # UDP, loss counted\n  \
loadgen chat://127.0.0.1:7008 -c 100 --publishers 1   # fan-out: 1 publisher, 99 readers\n  \
loadgen tls://localhost:7443 --tls-ca cert.pem --reconnect-every 1   # TLS handshakes per second\n  \
loadgen ws://127.0.0.1:9001/echo -s 1KiB     # WebSocket echo (masked frames, bytes checked)\n  \
loadgen probe unix:/tmp/echo.sock            # health check\n  \
loadgen sweep 127.0.0.1:7007 --slo p99=1ms   # the highest rate with p99 within 1 ms\n  \
loadgen 127.0.0.1:7007 --out a.json --plot a.svg; loadgen compare a.json b.json"
)]
pub struct Args {
    /// A subcommand (probe); without one, a benchmark runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// HOST:PORT, tcp://HOST:PORT, udp://HOST:PORT, unix:PATH, tls://HOST:PORT,
    /// ws://HOST:PORT[/PATH], wss://HOST:PORT[/PATH] (echo), or chat://HOST:PORT,
    /// chat+tls://HOST:PORT, chat+unix:PATH, chat+ws://…, chat+wss://… (a chat room): the URLs
    /// `ricochet --listen` takes. Omit it to benchmark an embedded ricochet.
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,

    /// Without a TARGET: benchmark an embedded ricochet chat room instead of its echo.
    #[arg(long, conflicts_with = "target")]
    pub chat: bool,

    /// Chat: how many of the connections publish lines (the others only receive)
    /// [default: all of them].
    #[arg(long, value_name = "N")]
    pub publishers: Option<u32>,

    /// Connections (UDP: connected sockets; chat: members), spread over the threads.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 50)]
    pub connections: u32,

    /// Bytes per message (UDP: per datagram, at least 8: it carries a sequence number; chat: per
    /// line, the newline included, at least 28: it carries its publisher and number).
    #[arg(short = 's', long, value_name = "BYTES", default_value = "64", value_parser = parse_bytes)]
    pub size: u64,

    /// Messages in flight per connection at most (pipelining). Closed loop keeps exactly this many
    /// in flight; open loop sends each due message on any connection with a free slot, and when
    /// none is free the message waits (its latency still counts from its intended time). Chat:
    /// lines in flight per publisher in closed loop (a line is complete when every other member
    /// has it).
    #[arg(short = 'd', long, value_name = "N", default_value_t = 1)]
    pub depth: u32,

    /// How long to measure, after the warm-up [default: 10s].
    #[arg(short = 't', long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "messages")]
    pub duration: Option<Duration>,

    /// Stop after N recorded messages instead of after a duration (the warm-up then defaults to
    /// 0). At most 2^63 - 1.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    pub messages: Option<u64>,

    /// Open loop: send N messages per second in total (chat: lines, round-robin over the
    /// publishers), at fixed intended times, and measure each latency from its intended send
    /// time. Without it: closed loop. A rate that changes (echo targets): FROM..TO with --ramp
    /// DUR (linear over DUR, then TO), or A,B,C with --step DUR (each for DUR, the last to the
    /// end); the warm-up runs at the first rate.
    #[arg(short = 'r', long, value_name = "N", value_parser = parse_rate)]
    pub rate: Option<RateArg>,

    /// With --rate FROM..TO: how long the ramp takes.
    #[arg(long, value_name = "DUR", value_parser = ricochet::units::parse_duration)]
    pub ramp: Option<Duration>,

    /// With --rate A,B,C: how long each rate lasts.
    #[arg(long, value_name = "DUR", value_parser = ricochet::units::parse_duration)]
    pub step: Option<Duration>,

    /// Run this long before measuring; messages completing during it are not recorded (with
    /// --messages: messages sent during it) [default: 1s, or 0 with --messages].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub warmup: Option<Duration>,

    /// Load threads, each with its own reactor and its share of the connections (0: one per CPU
    /// loadgen may run on, at most one per connection).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: u32,

    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON result (with the whole histogram and the per-second intervals) to PATH,
    /// besides the normal report.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Also draw the run to PATH.svg: the percentile spectrum and the rate and latency over time.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,

    /// Also write an HdrHistogram interval log (one interval per second) to PATH.
    #[arg(long, value_name = "PATH")]
    pub hlog: Option<PathBuf>,

    /// Print each second of the measured period as one JSON line on stdout while the run goes:
    /// {"event":"interval","t":…,"messages":…,"p50_us":…,"p99_us":…,"max_us":…}, the final
    /// report's `intervals` one for one (the report follows them).
    #[arg(long)]
    pub live: bool,

    /// Serve the running test for Prometheus at ADDR (e.g. 127.0.0.1:9101) until it ends:
    /// GET /metrics (messages and errors so far, the last second's rate and latency, the run's
    /// latency so far), GET /healthz.
    #[arg(long, value_name = "ADDR", value_parser = ricochet::cli::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// A message not echoed within DUR of being sent is an error (the connection is
    /// re-established); for UDP the datagram counts as lost, for chat each delivery still
    /// missing.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Without a TARGET: benchmark an embedded ricochet TLS listener (its generated certificate
    /// trusted); with --chat, a chat room over TLS.
    #[arg(long, conflicts_with = "target")]
    pub tls: bool,

    /// Without a TARGET: benchmark an embedded ricochet WebSocket listener (with --tls: wss; with
    /// --chat: a chat room over WebSocket).
    #[arg(long, conflicts_with = "target")]
    pub ws: bool,

    /// WebSocket targets: send text messages (payloads of ASCII letters, checked as UTF-8 by the
    /// server) instead of binary ones.
    #[arg(long)]
    pub ws_text: bool,

    /// How a tls:// target is trusted.
    #[command(flatten)]
    pub trust: TlsArgs,

    /// Resume TLS sessions when reconnecting (without it every connect is a full handshake).
    #[arg(long)]
    pub tls_resume: bool,

    /// Start the warm-up at TIME (RFC 3339, e.g. 2026-11-22T10:00:00Z, or Unix seconds with
    /// fractions), so that loadgens on several machines load the target together. A time in the
    /// past is an error.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,

    /// Sweep: a latency objective every step must meet: p50=DUR, p99=DUR, p999=DUR or max=DUR.
    /// Repeat for several. (`loadgen sweep TARGET --slo p99=1ms`)
    #[arg(long, value_name = "FIGURE=DUR")]
    pub slo: Vec<String>,

    /// Sweep: measured time per step (each after a 1 s warm-up).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub step_time: Duration,

    /// Sweep: the first step's rate [default: a tenth of a 2 s closed-loop probe's throughput].
    #[arg(long, value_name = "N")]
    pub start_rate: Option<f64>,

    /// Sweep: stop when the highest passing and lowest failing rates are this close (a fraction:
    /// 0.05 or 5%).
    #[arg(long, value_name = "FRACTION", default_value = "5%", value_parser = parse_fraction)]
    pub precision: f64,

    /// Close each connection after N messages and open it again (plain TCP: connection churn;
    /// TLS: a handshake each time). The report adds connects and their latency.
    #[arg(long, value_name = "N")]
    pub reconnect_every: Option<u64>,

    /// Connect from these local addresses, connection i from the i-th (round robin): a list
    /// and/or ranges, IPv4 or IPv6 like the target (`127.0.0.2-127.0.0.40`, `10.0.0.1,10.0.0.2`,
    /// `fd00::1-fd00::8`). Each address has its own ephemeral ports, so more connections to one
    /// target than one address's port range allows (`net.ipv4.ip_local_port_range`) can be open.
    #[arg(long, value_name = "ADDRS", value_parser = parse_sources)]
    pub source: Option<Sources>,

    /// Open connections at N per second (in all), instead of all at once; messages flow on
    /// those open meanwhile. The progress line counts them.
    #[arg(long, value_name = "N")]
    pub connect_rate: Option<f64>,

    /// Begin every connection with a PROXY protocol header of this version (v1 or v2), as a load
    /// balancer would: for servers behind one (ricochet's `?proxy=` listeners). It names the
    /// connection's own addresses (v1 UNKNOWN / v2 LOCAL over a Unix socket).
    #[arg(long, value_name = "VERSION", value_parser = parse_proxy_version)]
    pub proxy_header: Option<ricochet::proxy::Proxy>,
}

/// `v1` or `v2` (what a load balancer sends; `any` is for listeners).
fn parse_proxy_version(text: &str) -> Result<ricochet::proxy::Proxy, String> {
    match text.parse()? {
        ricochet::proxy::Proxy::Any => Err("--proxy-header is v1 or v2".into()),
        version => Ok(version),
    }
}

/// How a `tls://` target is trusted (benchmark and probe).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Trust the certificates in this PEM file: CAs the server's certificate chains to, or the
    /// server's own certificate (trusted exactly as it is, even one `openssl req -x509` made
    /// with CA:TRUE; its names are still checked). Default: the system's bundle
    /// (/etc/ssl/certs/ca-certificates.crt), unless --tls-pin is given.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Trust exactly the certificate with this SHA-256 fingerprint (64 hex digits, with or
    /// without `sha256:` and colons: the `sha256` of ricochet's ready line, or `openssl x509
    /// -noout -fingerprint -sha256`); its names are not checked. Repeat for several.
    #[arg(long, value_name = "SHA256", value_parser = crate::tls::parse_pin)]
    pub tls_pin: Vec<String>,

    /// Do not verify the server's certificate (the traffic is still encrypted). Marked in the
    /// report.
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_pin"])]
    pub insecure: bool,

    /// The server name to ask for and verify [default: the target's host].
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
}

impl TlsArgs {
    /// The first TLS flag given, for the message that says it is out of place.
    pub fn given(&self) -> Option<&'static str> {
        if self.tls_ca.is_some() {
            Some("--tls-ca")
        } else if !self.tls_pin.is_empty() {
            Some("--tls-pin")
        } else if self.insecure {
            Some("--insecure")
        } else if self.sni.is_some() {
            Some("--sni")
        } else {
            None
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one message, print its echo and round-trip time; exit 0 only on an exact echo.
    Probe {
        /// HOST:PORT, tcp://HOST:PORT, udp://HOST:PORT, tls://HOST:PORT, unix:PATH,
        /// ws://HOST:PORT[/PATH] or wss://HOST:PORT[/PATH].
        #[arg(value_name = "TARGET")]
        target: String,
        /// The message to send.
        #[arg(long, default_value = "ricochet probe")]
        message: String,
        /// Give up after DUR (connect, and again waiting for the echo).
        #[arg(long, value_name = "DUR", default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
        /// For tls:// targets.
        #[command(flatten)]
        trust: TlsArgs,
        /// Begin with a PROXY protocol header of this version (v1 or v2), for a listener behind
        /// a load balancer (ricochet's `?proxy=`).
        #[arg(long, value_name = "VERSION", value_parser = parse_proxy_version)]
        proxy_header: Option<ricochet::proxy::Proxy>,
    },
    /// Draw results (JSON from --json/--out, or --hlog logs) into one SVG: the percentile
    /// spectrum with every run overlaid, and rate and latency over time.
    Plot {
        /// Result files: loadgen JSON or hlog.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Where to write the SVG.
        #[arg(short = 'o', long = "out", value_name = "PATH.svg")]
        out: PathBuf,
    },
    /// One report from several results (JSON, or hlog): counts summed, histograms merged exactly,
    /// rates over the union of the measured periods.
    Merge {
        /// Result files (loadgen --json/--out, or --hlog logs).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Print the merged result as JSON (the keys of a result).
        #[arg(long)]
        json: bool,
        /// Also write the merged JSON to PATH.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Merge results whose proto, size or depth differ.
        #[arg(long)]
        force: bool,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); scripts/man.sh writes it to a file.
    #[command(hide = true)]
    ManPage,
    /// A table of each figure of every result (JSON), with its ratio to the first one's.
    Compare {
        /// loadgen JSON results; the first is the reference.
        #[arg(value_name = "FILE", required = true, num_args = 2..)]
        files: Vec<PathBuf>,
        /// Also draw them overlaid into this SVG.
        #[arg(long, value_name = "PATH.svg")]
        plot: Option<PathBuf>,
    },
}

/// Parses `--start-at`: RFC 3339 or Unix seconds; it must lie in the future, and no further
/// than the longest duration loadgen takes (100 years: further is a mistake, such as Unix
/// milliseconds for seconds, not a plan).
pub fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    use ricochet::units::MAX_DURATION;
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now();
    let too_far = || {
        format!("`{text}` is more than 100 years away (Unix seconds are meant, not milliseconds)")
    };
    let at = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|since| UNIX_EPOCH.checked_add(since))
            .ok_or_else(too_far)?,
        Ok(_) => return Err(format!("`{text}` is not a time")),
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|e| {
            format!("`{text}` is not RFC 3339 (2026-11-22T10:00:00Z) or Unix seconds: {e}")
        })?,
    };
    match at.duration_since(now) {
        Err(_) | Ok(Duration::ZERO) => Err(format!("`{text}` is in the past")),
        Ok(wait) if wait > MAX_DURATION => Err(too_far()),
        Ok(_) => Ok(at),
    }
}

/// `--rate` as given: a number, `FROM..TO` or `A,B,C`.
#[derive(Debug, Clone, PartialEq)]
pub enum RateArg {
    /// `N`.
    Fixed(f64),
    /// `FROM..TO` (with `--ramp`).
    Ramp(f64, f64),
    /// `A,B,C` (with `--step`).
    Steps(Vec<f64>),
}

/// Reads `--rate`.
pub fn parse_rate(text: &str) -> Result<RateArg, String> {
    let number = |s: &str| {
        s.trim().parse::<f64>().map_err(|_| {
            format!("--rate `{text}`: expected N, FROM..TO (with --ramp) or A,B,C (with --step)")
        })
    };
    if let Some((from, to)) = text.split_once("..") {
        return Ok(RateArg::Ramp(number(from)?, number(to)?));
    }
    if text.contains(',') {
        return text.split(',').map(number).collect::<Result<_, _>>().map(RateArg::Steps);
    }
    number(text).map(RateArg::Fixed)
}

/// The most addresses `--source` takes (a range past it is a typo more often than a plan).
const MAX_SOURCES: u128 = 65536;

/// `--source`'s addresses, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<std::net::IpAddr>);

/// Reads `--source`: comma-separated addresses and `FIRST-LAST` ranges (IPv4 or IPv6, one
/// family), in order, each address once.
pub fn parse_sources(text: &str) -> Result<Sources, String> {
    use std::net::IpAddr;
    let bad = |part: &str, why: &str| format!("--source `{part}`: {why}");
    let mut out: Vec<IpAddr> = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| s.parse::<IpAddr>().map_err(|_| bad(part, "not an IP address"));
        let (first, last) = (parse(first)?, parse(last)?);
        let (lo, hi) = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
            _ => return Err(bad(part, "a range's ends must be of one family")),
        };
        if hi < lo {
            return Err(bad(part, "the range ends before it begins"));
        }
        if (hi - lo + 1) + out.len() as u128 > MAX_SOURCES {
            return Err(bad(part, "more than 65536 addresses"));
        }
        for n in lo..=hi {
            let ip = match first {
                IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(n as u32)),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(n)),
            };
            if out.contains(&ip) {
                return Err(bad(part, &format!("{ip} is given twice")));
            }
            out.push(ip);
        }
    }
    if out.windows(2).any(|w| w[0].is_ipv6() != w[1].is_ipv6()) {
        return Err(format!("--source `{text}`: addresses of one family (IPv4 or IPv6)"));
    }
    Ok(Sources(out))
}
