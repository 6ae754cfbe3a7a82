//! The `ricochet` command line: raw flags ([`Args`], parsed by clap, each also read from a
//! `RICOCHET_*` environment variable) and their conversion into checked [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::config::Config;
use crate::faults::Faults;
use crate::output;
use crate::units::{parse_bytes, parse_duration};
pub use crate::url::parse_addr;
use crate::url::{parse_listen, ListenUrl};
use crate::{ControlSocket, Server};

/// Parses a shorthand flag's value as the URL it stands for: `--tcp ADDR` is
/// `--listen tcp://ADDR` (a fault plan after `?` included), `--chat ADDR?room=lobby` is
/// `--listen chat://ADDR?room=lobby`, `--unix PATH` is `--listen unix:PATH`.
fn shorthand(scheme: &'static str) -> impl Fn(&str) -> Result<ListenUrl, String> + Clone {
    move |text| {
        let joiner = if matches!(scheme, "unix" | "chat+unix") { ":" } else { "://" };
        parse_listen(&format!("{scheme}{joiner}{text}"))
    }
}

/// Parses `--metrics`: an address as [`parse_addr`] takes it, or `:PORT` for every IPv4
/// interface (as a scrape target in a container usually is).
fn parse_metrics_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    match text.strip_prefix(':') {
        Some(port) => parse_addr(&format!("0.0.0.0:{port}")),
        None => parse_addr(text),
    }
}

/// The raw command line.
#[derive(Debug, Parser)]
#[command(
    name = "ricochet",
    version,
    allow_negative_numbers = true,
    about = "A fast, bounded echo server: TCP (IPv4/IPv6), UDP, Unix-domain streams and TLS, and chat rooms.",
    long_about = "A fast, bounded echo server: TCP (IPv4/IPv6), UDP, Unix-domain streams and TLS, on \
edge-triggered reactors (one by default, --threads N for more). Every byte received is sent back, \
in order, nothing added. A chat listener serves a room instead: each line a member sends goes to \
every other member. Listeners are named by URL (--listen chat+tls://127.0.0.1:7444?room=lobby), \
the same URLs loadgen takes as targets; --tcp, --udp, --unix, --tls, --chat, --tls-chat, --ws, \
--wss, --ws-chat and --wss-chat are shorthands. WebSocket listeners (ws://, wss://, chat+ws://, \
chat+wss://) speak RFC 6455 on the same reactors.\n\n\
Once every listener is bound, one JSON line {\"event\":\"ready\",...} with the concrete addresses is \
printed on stdout; at exit one {\"event\":\"stopped\",...} line with the counters. SIGTERM or SIGINT \
stops accepting and drains connections; a second signal stops at once.\n\n\
Every flag can also be set by an environment variable: RICOCHET_ plus the flag in upper snake case \
(RICOCHET_MAX_CONNS=100). Sizes: 65536, 64KiB, 1MiB. Durations: 500ms, 2s, 1m.",
    after_help = "Examples:\n  ricochet                                  # TCP echo on 127.0.0.1:7007\n  \
ricochet --tcp 127.0.0.1:0 --ready-file /tmp/echo.json   # CI backend on a free port\n  \
ricochet --tcp 0.0.0.0:7007 --tcp [::]:7007 --udp 127.0.0.1:7007 --unix /tmp/echo.sock\n  \
ricochet --chat 127.0.0.1:7008                          # a chat room: try two `nc 127.0.0.1 7008`\n  \
ricochet --listen 'chat+tls://127.0.0.1:7444?room=lobby' --listen 'chat://127.0.0.1:7008?room=lobby'"
)]
pub struct Args {
    /// Serve the listener URL names, with the schemes loadgen's targets use: tcp://ADDR,
    /// udp://ADDR, unix:PATH, tls://ADDR, ws://ADDR, wss://ADDR (echo); chat://ADDR,
    /// chat+tls://ADDR, chat+unix:PATH, chat+ws://ADDR, chat+wss://ADDR (a chat room). After `?`: an echo listener's fault plan (`tcp://127.0.0.1:0?close-after=1KiB`),
    /// `room=NAME` to put chat listeners of any transport into one room
    /// (`chat+tls://0.0.0.0:7444?room=lobby`), and `proxy=v1|v2|any` for a PROXY protocol header
    /// before every connection's first byte (behind a load balancer), `&`-joined. Repeatable; listed after the shorthand flags'
    /// listeners, in the order given. The flags below are shorthands for it.
    #[arg(long = "listen", value_name = "URL", env = "RICOCHET_LISTEN", value_delimiter = ',', value_parser = parse_listen)]
    pub listen: Vec<ListenUrl>,

    /// Serve TCP echo on ADDR: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (port 0 picks a free one),
    /// optionally with a fault plan: `ADDR?close-after=1KiB&p=0.5`. Repeatable. Default, when no
    /// listener is given: 127.0.0.1:7007. (= --listen tcp://ADDR)
    #[arg(long = "tcp", value_name = "ADDR", env = "RICOCHET_TCP", value_delimiter = ',', value_parser = shorthand("tcp"))]
    pub tcp: Vec<ListenUrl>,

    /// Serve UDP echo on ADDR (each datagram goes back whole to its sender), optionally with a
    /// fault plan: `ADDR?drop=0.05&dup=0.01`. Repeatable. (= --listen udp://ADDR)
    #[arg(long = "udp", value_name = "ADDR", env = "RICOCHET_UDP", value_delimiter = ',', value_parser = shorthand("udp"))]
    pub udp: Vec<ListenUrl>,

    /// Serve stream echo on a Unix-domain socket at PATH, optionally with a fault plan after `?`.
    /// A stale socket file is replaced; a path that is not a socket is never touched. The file is
    /// removed at exit. Repeatable. (= --listen unix:PATH)
    #[arg(long = "unix", value_name = "PATH", env = "RICOCHET_UNIX", value_delimiter = ',', value_parser = shorthand("unix"))]
    pub unix: Vec<ListenUrl>,

    /// Serve a chat room on TCP ADDR: every line (ending in \n) a member sends goes to every other
    /// member, whole and in order; `/nick NAME`, `/who` and `/quit` are commands. One room per
    /// --chat, unless `ADDR?room=NAME` names a room shared with other listeners. Repeatable.
    /// (= --listen chat://ADDR)
    #[arg(long = "chat", value_name = "ADDR", env = "RICOCHET_CHAT", value_delimiter = ',', value_parser = shorthand("chat"))]
    pub chat: Vec<ListenUrl>,

    /// Serve TLS echo (TLS 1.3 and 1.2) on TCP ADDR, optionally with a fault plan after `?`
    /// (applied to the plaintext, after the handshake). Without --tls-cert, a self-signed
    /// certificate is generated at start; the ready line names its file and SHA-256 fingerprint.
    /// Repeatable. (= --listen tls://ADDR)
    #[arg(long = "tls", value_name = "ADDR", env = "RICOCHET_TLS", value_delimiter = ',', value_parser = shorthand("tls"))]
    pub tls: Vec<ListenUrl>,

    /// Serve a chat room over TLS on TCP ADDR (`ADDR?room=NAME`: a shared room). Repeatable.
    /// (= --listen chat+tls://ADDR)
    #[arg(long = "tls-chat", value_name = "ADDR", env = "RICOCHET_TLS_CHAT", value_delimiter = ',', value_parser = shorthand("chat+tls"))]
    pub tls_chat: Vec<ListenUrl>,

    /// Serve WebSocket echo (RFC 6455) on TCP ADDR: each message comes back whole, with its
    /// opcode (text or binary). Any path is accepted; a plain GET of / gets a short text.
    /// Repeatable. (= --listen ws://ADDR)
    #[arg(long = "ws", value_name = "ADDR", env = "RICOCHET_WS", value_delimiter = ',', value_parser = shorthand("ws"))]
    pub ws: Vec<ListenUrl>,

    /// Serve WebSocket echo over TLS on TCP ADDR (the certificate as for --tls). Repeatable.
    /// (= --listen wss://ADDR)
    #[arg(long = "wss", value_name = "ADDR", env = "RICOCHET_WSS", value_delimiter = ',', value_parser = shorthand("wss"))]
    pub wss: Vec<ListenUrl>,

    /// Serve a chat room over WebSocket on TCP ADDR: each text message is a line to the room (a
    /// trailing \n optional), each line delivered is a text message without its \n
    /// (`ADDR?room=NAME`: a room shared with TCP/TLS members). Repeatable.
    /// (= --listen chat+ws://ADDR)
    #[arg(long = "ws-chat", value_name = "ADDR", env = "RICOCHET_WS_CHAT", value_delimiter = ',', value_parser = shorthand("chat+ws"))]
    pub ws_chat: Vec<ListenUrl>,

    /// Serve a chat room over WebSocket over TLS on TCP ADDR. Repeatable.
    /// (= --listen chat+wss://ADDR)
    #[arg(long = "wss-chat", value_name = "ADDR", env = "RICOCHET_WSS_CHAT", value_delimiter = ',', value_parser = shorthand("chat+wss"))]
    pub wss_chat: Vec<ListenUrl>,

    /// WebSocket: the largest message a client may send (all its fragments together). A frame
    /// header that would pass it gets close 1009 at once, before its payload is read.
    #[arg(long, value_name = "BYTES", env = "RICOCHET_MAX_MESSAGE", default_value = "16MiB", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub max_message: u64,

    /// The TLS certificate chain (PEM, leaf first), with --tls-key. Default: a self-signed
    /// certificate generated at start for localhost, 127.0.0.1, ::1 and every --tls-name.
    #[arg(long, value_name = "PEM", env = "RICOCHET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key (PEM: PKCS#8, PKCS#1 or SEC1), with --tls-cert.
    #[arg(long, value_name = "PEM", env = "RICOCHET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Another name (DNS name or IP address) for the generated certificate. Repeatable.
    #[arg(
        long = "tls-name",
        value_name = "NAME",
        env = "RICOCHET_TLS_NAME",
        value_delimiter = ','
    )]
    pub tls_names: Vec<String>,

    /// Write the generated certificate (never the key) to PATH, kept after exit. Default: a file
    /// in the temp directory, removed at exit.
    #[arg(long, value_name = "PATH", env = "RICOCHET_TLS_CERT_OUT", conflicts_with = "tls_cert")]
    pub tls_cert_out: Option<PathBuf>,

    /// Close a TLS or WebSocket connection that has not finished its handshake (TLS, then the
    /// WebSocket opening handshake) this long after accept; counted in tls_failures or
    /// ws_failures. (--tls-handshake-timeout is the same flag.)
    #[arg(long, visible_alias = "tls-handshake-timeout", value_name = "DUR", env = "RICOCHET_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Reactors: N share-nothing threads, each with its own poll, buffers and timers. Stream
    /// connections (chat members too) go to the least loaded reactor at accept; each UDP listener
    /// gets a SO_REUSEPORT socket per reactor; chat lines are relayed between reactors once per
    /// turn. 0: one per CPU this process may run on.
    #[arg(long, value_name = "N", env = "RICOCHET_THREADS", default_value_t = 1)]
    pub threads: usize,

    /// A fault plan for every echo listener given without one: `key=value&key=value`. Stream
    /// faults: rate (BYTES per second), slice (N or MIN..MAX bytes per write), slice-delay (DUR),
    /// close-after, reset-after, stall-after, corrupt-after (BYTES), p (the share of connections
    /// affected); datagram faults: drop, dup, corrupt (probabilities); both: latency, jitter
    /// (DUR), seed. Each key must suit every listener it is given to.
    #[arg(long, value_name = "PLAN", env = "RICOCHET_FAULTS", value_parser = Faults::parse)]
    pub faults: Option<Faults>,

    /// Seed every random fault decision (drops, corruptions, jitter, slice sizes, which
    /// connections are faulty), so a
    /// run can be replayed. Default: a random seed, printed in the ready line.
    #[arg(long, value_name = "N", env = "RICOCHET_SEED")]
    pub seed: Option<u64>,

    /// listen(2) backlog of stream listeners.
    #[arg(long, value_name = "N", env = "RICOCHET_BACKLOG", default_value_t = 1024)]
    pub backlog: u32,

    /// Serve at most N connections at once; connections over the limit are accepted and closed at
    /// once (counted as rejected). Default: no limit but the fd limit.
    #[arg(long, value_name = "N", env = "RICOCHET_MAX_CONNS")]
    pub max_conns: Option<usize>,

    /// Cap on one connection's unsent output. At the cap the server stops reading that echo
    /// connection (the peer's writes then block) until the output drains to half; a chat member
    /// whose undelivered lines would pass it is disconnected (a slow member never slows the
    /// room). Memory is bounded by caps, never by peers.
    #[arg(long, value_name = "BYTES", env = "RICOCHET_MAX_PENDING", default_value = "256KiB", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub max_pending: u64,

    /// Chat: the longest line a member may send (the \n not counted). More than this without a
    /// newline, and the member gets `* error: line too long` and is disconnected.
    #[arg(long, value_name = "BYTES", env = "RICOCHET_MAX_LINE", default_value = "64KiB", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub max_line: u64,

    /// Chat: how much of its past each room keeps for `/since SEQ` and `/history N`: LINES
    /// (within 1 MiB), SIZE (as many lines as fit, e.g. 8MiB), or LINES,SIZE; 0 keeps nothing
    /// (lines are still numbered). Stored once: the history shares the lines members receive.
    #[arg(long, value_name = "LIMIT", env = "RICOCHET_CHAT_HISTORY", default_value = "1000")]
    pub chat_history: crate::config::HistoryLimit,

    /// Chat: a named member lost without an orderly leave (a reset, a socket error, the idle
    /// timeout) keeps its name for DUR: a new connection's `/nick NAME` takes it back and the
    /// others see `* NAME reconnected`; `* NAME left` comes only when DUR runs out. `/quit` and
    /// EOF leave at once. 0: leave at once always.
    #[arg(long, value_name = "DUR", env = "RICOCHET_CHAT_LINGER", default_value = "30s", value_parser = parse_duration)]
    pub chat_linger: Duration,

    /// Close a connection after DUR with no progress in either direction. Default: never.
    #[arg(long, value_name = "DUR", env = "RICOCHET_IDLE_TIMEOUT", allow_hyphen_values = true, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// On SIGTERM/SIGINT, serve busy connections for at most DUR, then close what remains.
    /// Connections quiet for --drain-grace (nothing received, nothing owed) are closed sooner.
    #[arg(long, value_name = "DUR", env = "RICOCHET_DRAIN_TIMEOUT", allow_hyphen_values = true, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// During a drain, close a connection once it has been quiet (nothing received, nothing
    /// owed to it) for DUR.
    #[arg(long, value_name = "DUR", env = "RICOCHET_DRAIN_GRACE", allow_hyphen_values = true, default_value = "100ms", value_parser = parse_duration)]
    pub drain_grace: Duration,

    /// TCP_NODELAY on accepted TCP connections (the default; RICOCHET_NODELAY=false turns it off).
    #[arg(long, value_name = "BOOL", env = "RICOCHET_NODELAY", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub nodelay: bool,

    /// Leave Nagle's algorithm on for accepted TCP connections.
    #[arg(long, env = "RICOCHET_NO_NODELAY", conflicts_with = "nodelay")]
    pub no_nodelay: bool,

    /// TCP keepalive on accepted connections: first probe after DUR idle. Default: off.
    #[arg(long, value_name = "DUR", env = "RICOCHET_KEEPALIVE", allow_hyphen_values = true, value_parser = parse_duration)]
    pub keepalive: Option<Duration>,

    /// SO_REUSEPORT on TCP and UDP sockets, so several ricochet processes can share a port.
    #[arg(long, env = "RICOCHET_REUSEPORT")]
    pub reuseport: bool,

    /// SO_RCVBUF for accepted connections and UDP sockets. Default: the kernel's.
    #[arg(long, value_name = "BYTES", env = "RICOCHET_RECV_BUFFER", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub recv_buffer: Option<u64>,

    /// SO_SNDBUF for accepted connections and UDP sockets. Default: the kernel's.
    #[arg(long, value_name = "BYTES", env = "RICOCHET_SEND_BUFFER", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub send_buffer: Option<u64>,

    /// Also write the ready line to PATH, atomically (temp file + rename), once all listeners
    /// are bound.
    #[arg(long, value_name = "PATH", env = "RICOCHET_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// Open a control socket at PATH (it exists before the ready line is printed; removed at
    /// exit): a line protocol to change fault plans while running, one reply line per command:
    /// `faults INDEX PLAN` or `faults INDEX off` -> `ok` or `error: ...` (INDEX: the listener's
    /// place in the ready line, from 0); `stats` -> the {"event":"stats",...} line.
    #[arg(long, value_name = "PATH", env = "RICOCHET_CONTROL")]
    pub control: Option<PathBuf>,

    /// Serve Prometheus metrics and a health probe over HTTP at ADDR (e.g. 127.0.0.1:9100;
    /// `:9100` for every interface): `GET /metrics` (OpenMetrics text: every counter of the
    /// stopped line per reactor, connections per listener), `GET /healthz` (200 `ok` while
    /// serving, 503 while draining). Named last in the ready line, as proto `metrics`; its own
    /// connections are not counted as echo traffic, and --max-conns does not apply to them.
    #[arg(long, value_name = "ADDR", env = "RICOCHET_METRICS", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Print a {"event":"stats",...} line with the counters on stdout every DUR.
    #[arg(long, value_name = "DUR", env = "RICOCHET_STATS_INTERVAL", allow_hyphen_values = true, value_parser = parse_duration)]
    pub stats_interval: Option<Duration>,

    /// Echo UDP datagrams from source ports below 1024 too. By default they are dropped (and
    /// counted), which breaks echo/chargen reflection loops.
    #[arg(long, env = "RICOCHET_UDP_ALLOW_LOW_PORTS")]
    pub udp_allow_low_ports: bool,

    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit:
    /// `ricochet --completions bash > /etc/bash_completion.d/ricochet`.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit (scripts/man.sh writes it to a file).
    #[arg(long, hide = true)]
    pub man_page: bool,
}

impl Args {
    /// `--completions` and `--man-page`: what to print instead of serving, if asked.
    pub fn generated(&self) -> Option<Vec<u8>> {
        use clap::CommandFactory;
        let mut out = Vec::new();
        if let Some(shell) = self.completions {
            clap_complete::generate(shell, &mut Args::command(), "ricochet", &mut out);
        } else if self.man_page {
            clap_mangen::Man::new(Args::command()).render(&mut out).ok()?;
        } else {
            return None;
        }
        Some(out)
    }
}

/// What the binary runs: the checked server config plus what only the binary does.
#[derive(Debug)]
pub struct Settings {
    /// The server's configuration, already checked.
    pub config: Config,
    /// Where to write the ready line too.
    pub ready_file: Option<PathBuf>,
    /// Where to open the control socket.
    pub control: Option<PathBuf>,
}

impl TryFrom<Args> for Settings {
    type Error = String;

    fn try_from(args: Args) -> Result<Settings, String> {
        let shorthands = [
            args.tcp,
            args.udp,
            args.unix,
            args.tls,
            args.chat,
            args.tls_chat,
            args.ws,
            args.wss,
            args.ws_chat,
            args.wss_chat,
        ];
        let mut urls: Vec<ListenUrl> = shorthands.into_iter().flatten().collect();
        urls.extend(args.listen);
        if urls.is_empty() {
            let default = Config::default().listeners.remove(0);
            urls.push(ListenUrl { spec: default, plan: None });
        }
        // --faults: for every echo listener given without a plan (a chat room takes none).
        let mut listeners = Vec::with_capacity(urls.len());
        let mut faults = Vec::with_capacity(urls.len());
        for url in urls {
            let fallback = args.faults.clone().filter(|_| !url.spec.is_chat());
            faults.push(url.plan.or(fallback));
            listeners.push(url.spec);
        }
        let size = |name: &str, value: u64| {
            usize::try_from(value).map_err(|_| format!("{name} {value} is too large"))
        };
        let config = Config {
            listeners,
            faults,
            seed: args.seed,
            tls: crate::certificate::TlsSettings {
                cert: args.tls_cert,
                key: args.tls_key,
                names: args.tls_names,
                cert_out: args.tls_cert_out,
            },
            handshake_timeout: args.handshake_timeout,
            max_message: size("max-message", args.max_message)?,
            threads: args.threads,
            backlog: args.backlog,
            max_conns: args.max_conns,
            max_pending: size("max-pending", args.max_pending)?,
            max_line: size("max-line", args.max_line)?,
            chat_history: args.chat_history,
            chat_linger: args.chat_linger,
            idle_timeout: args.idle_timeout,
            drain_timeout: args.drain_timeout,
            drain_grace: args.drain_grace,
            nodelay: args.nodelay && !args.no_nodelay,
            keepalive: args.keepalive,
            reuseport: args.reuseport,
            recv_buffer: args.recv_buffer.map(|b| size("recv-buffer", b)).transpose()?,
            send_buffer: args.send_buffer.map(|b| size("send-buffer", b)).transpose()?,
            stats_interval: args.stats_interval,
            metrics: args.metrics,
            udp_allow_low_ports: args.udp_allow_low_ports,
            handle_signals: true,
            log_stderr: true,
            ..Config::default()
        };
        config.check().map_err(|e| match e {
            crate::Error::Config(msg) => msg,
            other => other.to_string(),
        })?;
        Ok(Settings { config, ready_file: args.ready_file, control: args.control })
    }
}

/// Runs `ricochet` with this process's arguments: parse the command line, bind, announce
/// readiness, run, report. Exit codes: 0 clean stop, 1 runtime failure, 2 usage error. (In the
/// library so that one binary can be both ricochet and loadgen: the image's.)
pub fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    if let Some(text) = args.generated() {
        use std::io::Write;
        // A reader that goes away early is not an error here either.
        let _ = std::io::stdout().write_all(&text);
        return std::process::ExitCode::SUCCESS;
    }
    let settings = match Settings::try_from(args) {
        Ok(settings) => settings,
        Err(msg) => {
            <Args as clap::CommandFactory>::command()
                .error(clap::error::ErrorKind::ValueValidation, msg)
                .exit();
        }
    };
    match run(settings) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::stderr_line(&format!("ricochet: {e:#}"));
            std::process::ExitCode::from(1)
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    let server = Server::bind(settings.config)?;
    // Bound before the ready line, so a script may use it as soon as it reads that line; the
    // socket file goes when this is dropped, at exit.
    let _control = match &settings.control {
        Some(path) => Some(
            ControlSocket::bind(path, server.controller()).context("opening the control socket")?,
        ),
        None => None,
    };
    let ready = server.ready_json();
    if let Some(path) = &settings.ready_file {
        crate::ready::write_atomic(path, &ready)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    output::stdout_line(&ready);
    for spec in server.local_addrs() {
        output::stderr_line(&format!(
            "ricochet: listening on {} {}",
            spec.proto(),
            spec.display_addr()
        ));
    }
    if let Some(addr) = server.metrics_addr() {
        output::stderr_line(&format!("ricochet: serving /metrics and /healthz on http://{addr}"));
    }
    let reactors = server.stats_sources();
    server.run()?;
    let each: Vec<_> = reactors.iter().map(|r| r.load()).collect();
    output::stdout_line(&crate::stats::event_json("stopped", &each));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenSpec;

    fn settings(argv: &[&str]) -> Result<Settings, String> {
        let args = Args::try_parse_from(std::iter::once("ricochet").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        Settings::try_from(args)
    }

    #[test]
    fn defaults_to_tcp_7007() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.config.listeners, vec![ListenSpec::tcp("127.0.0.1:7007".parse().unwrap())]);
        assert!(s.config.nodelay);
        assert_eq!(s.config.max_pending, 256 * 1024);
        assert_eq!(s.config.drain_grace, Config::default().drain_grace);
        assert!(s.config.handle_signals);
    }

    #[test]
    fn every_kind_of_listener_in_order() {
        let s = settings(&[
            "--udp",
            "[::1]:0",
            "--chat",
            "127.0.0.1:0",
            "--tcp",
            "localhost:0",
            "--unix",
            "/tmp/a.sock",
        ])
        .unwrap();
        assert_eq!(
            s.config.listeners,
            vec![
                ListenSpec::tcp("127.0.0.1:0".parse().unwrap()),
                ListenSpec::udp("[::1]:0".parse().unwrap()),
                ListenSpec::unix("/tmp/a.sock"),
                ListenSpec::chat("127.0.0.1:0".parse().unwrap()),
            ]
        );
        // A chat listener is a listener: no default TCP echo is added.
        let s = settings(&["--chat", "127.0.0.1:7008", "--max-line", "1KiB"]).unwrap();
        assert_eq!(s.config.listeners, vec![ListenSpec::chat("127.0.0.1:7008".parse().unwrap())]);
        assert_eq!(s.config.max_line, 1024);
    }

    /// `--listen URL` and the shorthands are one syntax: the shorthands' listeners first, then
    /// the URLs in order; `?room=` joins chat listeners; --faults fills in echo listeners only.
    #[test]
    fn listen_urls_and_shorthands() {
        let s = settings(&[
            "--listen",
            "chat+tls://127.0.0.1:0?room=lobby",
            "--chat",
            "127.0.0.1:0?room=lobby",
            "--listen",
            "tcp://127.0.0.1:0?close-after=10",
            "--listen",
            "unix:/tmp/r.sock",
            "--faults",
            "stall-after=5",
        ])
        .unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            s.config.listeners,
            vec![
                ListenSpec::chat(any).in_room("lobby"),
                ListenSpec::tls_chat(any).in_room("lobby"),
                ListenSpec::tcp(any),
                ListenSpec::unix("/tmp/r.sock"),
            ]
        );
        let plans: Vec<Option<String>> =
            s.config.faults.iter().map(|p| p.as_ref().map(|p| p.to_string())).collect();
        assert_eq!(
            plans,
            [None, None, Some("close-after=10".into()), Some("stall-after=5".into())]
        );
        let err = settings(&["--listen", "ftp://127.0.0.1:1"]).unwrap_err();
        assert!(err.contains("`ftp://` is not a listen scheme"), "{err}");
        let err = settings(&["--tcp", "127.0.0.1:1?room=x"]).unwrap_err();
        assert!(err.contains("room= is for chat listeners"), "{err}");
    }

    #[test]
    fn units_and_switches() {
        let s = settings(&[
            "--max-pending=1MiB",
            "--idle-timeout=2s",
            "--no-nodelay",
            "--max-conns=10",
            "--recv-buffer=64KiB",
            "--drain-grace=250ms",
        ])
        .unwrap();
        assert_eq!(s.config.max_pending, 1 << 20);
        assert_eq!(s.config.drain_grace, Duration::from_millis(250));
        assert_eq!(s.config.idle_timeout, Some(Duration::from_secs(2)));
        assert!(!s.config.nodelay);
        assert_eq!(s.config.max_conns, Some(10));
        assert_eq!(s.config.recv_buffer, Some(65536));
    }

    /// What a new user mistypes gets a message that says exactly what is wrong.
    #[test]
    fn mistakes_are_named() {
        let err = |argv: &[&str]| settings(argv).err().unwrap_or_default();
        assert!(
            err(&["--tcp", "127.0.0.1:99999"]).contains("port 99999"),
            "{}",
            err(&["--tcp", "127.0.0.1:99999"])
        );
        assert!(err(&["--tcp", "127.0.0.1:99999"]).contains("out of range"));
        assert!(err(&["--tcp", "127.0.0.1"]).contains("no port"));
        assert!(err(&["--tcp", "::1:80"]).contains("brackets"));
        assert!(err(&["--tcp", "example:80"]).contains("not an IP address"));
        assert!(err(&["--idle-timeout", "-1s"]).contains("`-1s` is not a duration"));
        assert!(err(&["--max-pending", "-5"]).contains("`-5` is not a byte size"));
        assert!(err(&["--nodelay", "--no-nodelay"]).contains("cannot be used with"));
        assert!(err(&["--max-line", "0"]).contains("max-line"));
    }

    #[test]
    fn bad_values_are_messages() {
        for argv in [
            &["--tcp", "nonsense"][..],
            &["--max-pending", "-5"],
            &["--max-pending", "0"],
            &["--max-pending", "5GiB"],
            &["--drain-timeout", "forever"],
            &["--drain-grace", "0s"],
            &["--max-conns", "0"],
            &["--frobnicate"],
        ] {
            assert!(settings(argv).is_err(), "{argv:?} accepted");
        }
    }
}
