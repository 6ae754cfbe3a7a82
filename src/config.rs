//! The server's checked configuration. [`Config::check`] is the one place where limits are
//! validated; the reactor trusts a checked config.

use crate::proxy::Proxy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::certificate::TlsSettings;
use crate::error::{Error, Result};
use crate::faults::Faults;

/// The socket a listener binds, and whether its streams speak TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP (IPv4 or IPv6; port 0 picks a free port).
    Tcp(SocketAddr),
    /// TCP speaking TLS (1.3 and 1.2); the behaviour sees the decrypted bytes.
    Tls(SocketAddr),
    /// A UDP socket (echo only: each datagram back whole to its sender).
    Udp(SocketAddr),
    /// A Unix-domain stream socket at this path.
    Unix(PathBuf),
    /// TCP speaking WebSocket (RFC 6455): the behaviour sees message payloads (echo: each
    /// message back whole, with its opcode; chat: each text message a line).
    Ws(SocketAddr),
    /// WebSocket over TLS.
    Wss(SocketAddr),
}

/// What a listener's connections do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Every byte back to its sender.
    Echo,
    /// Members of a chat room: each line a member sends goes to every other member. `room`:
    /// the listener's own room (`None`), or the room of that name, shared by every listener
    /// that names it, whatever its transport (a TLS member and a plain one talk).
    Chat {
        /// The shared room's name.
        room: Option<String>,
    },
}

/// One listener: the socket it binds and what its connections do (its fault plan, if any, is
/// [`Config::faults`] at the same index). Made by the constructors (`ListenSpec::tcp(addr)`,
/// `ListenSpec::chat(addr).in_room("lobby")`) or from a URL ([`crate::url::parse_listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// Where, and over what.
    pub endpoint: Endpoint,
    /// What its connections do.
    pub behaviour: Behaviour,
    /// Every connection starts with a PROXY protocol header of these versions (stream
    /// listeners only; see [`crate::proxy`]).
    pub proxy: Option<Proxy>,
}

impl ListenSpec {
    fn echo(endpoint: Endpoint) -> Self {
        ListenSpec { endpoint, behaviour: Behaviour::Echo, proxy: None }
    }

    fn room(endpoint: Endpoint) -> Self {
        ListenSpec { endpoint, behaviour: Behaviour::Chat { room: None }, proxy: None }
    }

    /// The same listener, expecting a PROXY protocol header (`version`) on every connection.
    pub fn with_proxy(mut self, version: Proxy) -> Self {
        self.proxy = Some(version);
        self
    }

    /// TCP echo.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::echo(Endpoint::Tcp(addr))
    }

    /// UDP echo.
    pub fn udp(addr: SocketAddr) -> Self {
        Self::echo(Endpoint::Udp(addr))
    }

    /// Unix-domain stream echo.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::echo(Endpoint::Unix(path.into()))
    }

    /// TLS echo.
    pub fn tls(addr: SocketAddr) -> Self {
        Self::echo(Endpoint::Tls(addr))
    }

    /// A chat room on a Unix-domain stream socket.
    pub fn unix_chat(path: impl Into<PathBuf>) -> Self {
        Self::room(Endpoint::Unix(path.into()))
    }

    /// A chat room on TCP (its own, unless [`ListenSpec::in_room`] names a shared one).
    pub fn chat(addr: SocketAddr) -> Self {
        Self::room(Endpoint::Tcp(addr))
    }

    /// A chat room over TLS.
    pub fn tls_chat(addr: SocketAddr) -> Self {
        Self::room(Endpoint::Tls(addr))
    }

    /// WebSocket echo.
    pub fn ws(addr: SocketAddr) -> Self {
        Self::echo(Endpoint::Ws(addr))
    }

    /// WebSocket echo over TLS.
    pub fn wss(addr: SocketAddr) -> Self {
        Self::echo(Endpoint::Wss(addr))
    }

    /// A chat room over WebSocket (each text message a line).
    pub fn ws_chat(addr: SocketAddr) -> Self {
        Self::room(Endpoint::Ws(addr))
    }

    /// A chat room over WebSocket over TLS.
    pub fn wss_chat(addr: SocketAddr) -> Self {
        Self::room(Endpoint::Wss(addr))
    }

    /// The same chat listener, in the room called `name` (shared with every listener that
    /// names it); an echo listener is returned as it is.
    pub fn in_room(mut self, name: &str) -> Self {
        if let Behaviour::Chat { room } = &mut self.behaviour {
            *room = Some(name.to_owned());
        }
        self
    }

    /// `tcp`, `udp`, `unix`, `tls`, `ws`, `wss`, `chat`, `tls-chat`, `unix-chat`, `chat+ws` or
    /// `chat+wss`: the ready line's `proto`.
    pub fn proto(&self) -> &'static str {
        match (&self.endpoint, &self.behaviour) {
            (Endpoint::Tcp(_), Behaviour::Echo) => "tcp",
            (Endpoint::Udp(_), _) => "udp",
            (Endpoint::Unix(_), Behaviour::Echo) => "unix",
            (Endpoint::Tls(_), Behaviour::Echo) => "tls",
            (Endpoint::Tcp(_), Behaviour::Chat { .. }) => "chat",
            (Endpoint::Tls(_), Behaviour::Chat { .. }) => "tls-chat",
            (Endpoint::Unix(_), Behaviour::Chat { .. }) => "unix-chat",
            (Endpoint::Ws(_), Behaviour::Echo) => "ws",
            (Endpoint::Wss(_), Behaviour::Echo) => "wss",
            (Endpoint::Ws(_), Behaviour::Chat { .. }) => "chat+ws",
            (Endpoint::Wss(_), Behaviour::Chat { .. }) => "chat+wss",
        }
    }

    /// The URL scheme that names this listener on `--listen` and as loadgen's target: `tcp`,
    /// `udp`, `unix`, `tls`, `ws`, `wss`, `chat`, `chat+tls`, `chat+unix`, `chat+ws` or
    /// `chat+wss`.
    pub fn scheme(&self) -> &'static str {
        match self.proto() {
            "tls-chat" => "chat+tls",
            "unix-chat" => "chat+unix",
            proto => proto,
        }
    }

    /// Whether its connections speak TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.endpoint, Endpoint::Tls(_) | Endpoint::Wss(_))
    }

    /// Whether its connections speak WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(self.endpoint, Endpoint::Ws(_) | Endpoint::Wss(_))
    }

    /// Whether it is a UDP socket (every other listener serves streams).
    pub fn is_udp(&self) -> bool {
        matches!(self.endpoint, Endpoint::Udp(_))
    }

    /// Whether its connections are chat room members.
    pub fn is_chat(&self) -> bool {
        matches!(self.behaviour, Behaviour::Chat { .. })
    }

    /// The socket address, for every endpoint but a Unix socket.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.endpoint {
            Endpoint::Tcp(a)
            | Endpoint::Tls(a)
            | Endpoint::Udp(a)
            | Endpoint::Ws(a)
            | Endpoint::Wss(a) => Some(a),
            Endpoint::Unix(_) => None,
        }
    }

    /// The Unix socket's path, for a Unix endpoint.
    pub fn path(&self) -> Option<&std::path::Path> {
        match &self.endpoint {
            Endpoint::Unix(p) => Some(p),
            _ => None,
        }
    }

    /// The address as people write it: `127.0.0.1:7007`, `[::1]:7007`, `/run/echo.sock`.
    pub fn display_addr(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp(a)
            | Endpoint::Tls(a)
            | Endpoint::Udp(a)
            | Endpoint::Ws(a)
            | Endpoint::Wss(a) => a.to_string(),
        }
    }

    /// TCP echo (the enum variant's name before listeners were endpoint × behaviour).
    #[doc(hidden)]
    #[deprecated(note = "use ListenSpec::tcp")]
    #[allow(non_snake_case)]
    pub fn Tcp(addr: SocketAddr) -> Self {
        Self::tcp(addr)
    }

    /// UDP echo (the old variant's name).
    #[doc(hidden)]
    #[deprecated(note = "use ListenSpec::udp")]
    #[allow(non_snake_case)]
    pub fn Udp(addr: SocketAddr) -> Self {
        Self::udp(addr)
    }

    /// Unix-domain stream echo (the old variant's name).
    #[doc(hidden)]
    #[deprecated(note = "use ListenSpec::unix")]
    #[allow(non_snake_case)]
    pub fn Unix(path: PathBuf) -> Self {
        Self::unix(path)
    }

    /// A chat room on TCP (the old variant's name).
    #[doc(hidden)]
    #[deprecated(note = "use ListenSpec::chat")]
    #[allow(non_snake_case)]
    pub fn Chat(addr: SocketAddr) -> Self {
        Self::chat(addr)
    }

    /// TLS echo (the old variant's name).
    #[doc(hidden)]
    #[deprecated(note = "use ListenSpec::tls")]
    #[allow(non_snake_case)]
    pub fn Tls(addr: SocketAddr) -> Self {
        Self::tls(addr)
    }

    /// A chat room over TLS (the old variant's name).
    #[doc(hidden)]
    #[deprecated(note = "use ListenSpec::tls_chat")]
    #[allow(non_snake_case)]
    pub fn TlsChat(addr: SocketAddr) -> Self {
        Self::tls_chat(addr)
    }

    /// The same listener at another endpoint address (the bound one, with port 0 resolved).
    pub(crate) fn at(&self, endpoint: Endpoint) -> ListenSpec {
        ListenSpec { endpoint, behaviour: self.behaviour.clone(), proxy: self.proxy }
    }
}

impl std::fmt::Display for ListenSpec {
    /// The listener as a URL: `tcp://127.0.0.1:7007`, `chat+tls://[::1]:7444?room=lobby`,
    /// `unix:/run/echo.sock`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(p) => write!(f, "{}:{}", self.scheme(), p.display())?,
            _ => write!(f, "{}://{}", self.scheme(), self.display_addr())?,
        }
        let mut query = Vec::new();
        if let Behaviour::Chat { room: Some(room) } = &self.behaviour {
            query.push(format!("room={room}"));
        }
        if let Some(proxy) = self.proxy {
            query.push(format!("proxy={}", proxy.as_str()));
        }
        match query.is_empty() {
            true => Ok(()),
            false => write!(f, "?{}", query.join("&")),
        }
    }
}

/// Everything the server needs to know. Build one with [`Config::default`] and adjust fields;
/// [`crate::Server::bind`] checks it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sockets to serve; at least one.
    pub listeners: Vec<ListenSpec>,
    /// Fault plans by listener index (missing or `None`: the listener behaves). Each plan's
    /// keys must suit its listener (see [`Faults::check_for`]).
    pub faults: Vec<Option<Faults>>,
    /// Seed for every random fault decision; `None`: a random one, reported in the ready line.
    pub seed: Option<u64>,
    /// The TLS listeners' certificate: loaded from files, or generated at start.
    pub tls: TlsSettings,
    /// A TLS or WebSocket connection that has not finished its handshake (TLS, then the
    /// WebSocket opening handshake) this long after accept is closed, and counted as a failure.
    pub handshake_timeout: Duration,
    /// WebSocket: the largest message a client may send; a longer one is refused with close
    /// 1009 as soon as its frame header says so.
    pub max_message: usize,
    /// Reactors, each a thread of its own (1: today's single reactor; 0: one per CPU this process
    /// may run on). Stream connections are handed to the least loaded reactor at accept; each UDP
    /// listener gets a SO_REUSEPORT socket per reactor.
    pub threads: usize,
    /// listen(2) backlog for stream listeners.
    pub backlog: u32,
    /// Connections served at once; accepted connections over this are closed at once and counted
    /// as rejected. `None`: no limit but the fd limit.
    pub max_conns: Option<usize>,
    /// Cap on one connection's pending output. At the cap an echo connection stops being read
    /// (backpressure) until the output has drained to half the cap; a chat member whose
    /// undelivered output would pass it is disconnected (a slow member never slows the room).
    pub max_pending: usize,
    /// Chat: the longest line a member may send (the `\n` not counted). A member with more than
    /// this buffered without a newline is told so and disconnected.
    pub max_line: usize,
    /// Chat: how much of its past each room keeps for `/since` and `/history`.
    pub chat_history: HistoryLimit,
    /// Chat: how long a named member lost without an orderly leave (reset, socket error, idle
    /// timeout) keeps its name for a new connection to take back; zero: it leaves at once.
    pub chat_linger: Duration,
    /// Close a connection after this long with no progress in either direction.
    pub idle_timeout: Option<Duration>,
    /// How long a graceful shutdown may serve busy connections before closing them.
    pub drain_timeout: Duration,
    /// During a shutdown, a connection quiet for this long (nothing received, nothing pending) is
    /// closed.
    pub drain_grace: Duration,
    /// TCP_NODELAY on accepted TCP connections.
    pub nodelay: bool,
    /// TCP keepalive idle time on accepted TCP connections.
    pub keepalive: Option<Duration>,
    /// SO_REUSEPORT on TCP and UDP sockets (several processes may share a port).
    pub reuseport: bool,
    /// SO_RCVBUF for accepted stream sockets and UDP sockets.
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF for accepted stream sockets and UDP sockets.
    pub send_buffer: Option<usize>,
    /// Print a `{"event":"stats",...}` line on stdout this often.
    pub stats_interval: Option<Duration>,
    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` over HTTP here (see
    /// [`crate::metrics`]); its connections are not counted as echo traffic.
    pub metrics: Option<SocketAddr>,
    /// Echo UDP datagrams from source ports below 1024 (off by default: echo/chargen loops).
    pub udp_allow_low_ports: bool,
    /// Handle SIGTERM/SIGINT (graceful drain, second signal stops at once). The binary turns this
    /// on; a library user's process keeps its own signal handling.
    pub handle_signals: bool,
    /// Say on stderr what a person watching the server wants to know (shutdown progress, accept
    /// failures). The binary turns this on; a library user's output stays its own.
    pub log_stderr: bool,
    /// Size of the reactor's one shared read buffer: the most one read asks for (and never more
    /// than the room under `max_pending`). 256 KiB, the default `max_pending`: on 64 KiB bulk
    /// echo it needs half the syscalls per message of a 64 KiB buffer (measured 1.13 against
    /// 2.48, and so half the user-space CPU). One per server, so its size costs nothing per
    /// connection, and small messages only ever touch its first bytes.
    pub read_buffer: usize,
    /// Bytes one connection may read per reactor turn before others get their turn.
    pub turn_budget: usize,
    /// Accepts per listener per reactor turn.
    pub accept_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenSpec::tcp(SocketAddr::from(([127, 0, 0, 1], 7007)))],
            faults: Vec::new(),
            seed: None,
            tls: TlsSettings::default(),
            handshake_timeout: Duration::from_secs(10),
            max_message: 16 * 1024 * 1024,
            threads: 1,
            backlog: 1024,
            max_conns: None,
            max_pending: 256 * 1024,
            max_line: 64 * 1024,
            chat_history: HistoryLimit::default(),
            chat_linger: Duration::from_secs(30),
            idle_timeout: None,
            drain_timeout: Duration::from_secs(5),
            drain_grace: Duration::from_millis(100),
            nodelay: true,
            keepalive: None,
            reuseport: false,
            recv_buffer: None,
            send_buffer: None,
            stats_interval: None,
            metrics: None,
            udp_allow_low_ports: false,
            handle_signals: false,
            log_stderr: false,
            read_buffer: 256 * 1024,
            turn_budget: 256 * 1024,
            accept_batch: 256,
        }
    }
}

/// The most reactors one server runs.
pub const MAX_THREADS: usize = 1024;

/// The largest `max_pending` accepted: a per-connection cap above this is surely a typo.
pub const MAX_PENDING_LIMIT: usize = 1 << 30;
/// Socket buffer sizes above this are rejected (the kernel takes an `int` and doubles it).
pub const SOCKET_BUFFER_LIMIT: usize = 1 << 30;

impl Config {
    /// The number of reactors to run: `threads`, with 0 meaning one per CPU in this process's
    /// affinity mask (sched_getaffinity).
    pub fn reactors(&self) -> usize {
        match self.threads {
            0 => crate::sys::cpus_available().clamp(1, MAX_THREADS),
            n => n,
        }
    }

    /// The fault plan of listener `index`, if it has one.
    pub fn plan(&self, index: usize) -> Option<&Faults> {
        self.faults.get(index).and_then(Option::as_ref)
    }

    /// A config serving only `127.0.0.1:0` over TCP: what tests and embedded benchmarks want.
    pub fn ephemeral() -> Self {
        Config {
            listeners: vec![ListenSpec::tcp(SocketAddr::from(([127, 0, 0, 1], 0)))],
            ..Config::default()
        }
    }

    /// Checks every limit; the error says which setting is wrong and why.
    // Long on purpose: the one place where limits are checked (see the module), one check per
    // setting, each with its message.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.listeners.is_empty() {
            return bad("no listener given (use --tcp, --udp, --unix or --chat)".into());
        }
        if self.listeners.len() > 1000 {
            return bad(format!("{} listeners given; at most 1000", self.listeners.len()));
        }
        if self.backlog == 0 || self.backlog > i32::MAX as u32 {
            return bad(format!("backlog {} must be between 1 and {}", self.backlog, i32::MAX));
        }
        if self.threads > MAX_THREADS {
            return bad(format!("threads {} is more than {MAX_THREADS}", self.threads));
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake-timeout must be more than 0".into());
        }
        if self.max_message == 0 || self.max_message > MAX_PENDING_LIMIT {
            return bad(format!(
                "max-message {} must be between 1 byte and {} bytes (1GiB)",
                self.max_message, MAX_PENDING_LIMIT
            ));
        }
        if self.max_conns == Some(0) {
            return bad("max-conns 0 would refuse every connection; omit it for no limit".into());
        }
        if self.max_pending == 0 || self.max_pending > MAX_PENDING_LIMIT {
            return bad(format!(
                "max-pending {} must be between 1 byte and {} bytes (1GiB)",
                self.max_pending, MAX_PENDING_LIMIT
            ));
        }
        if self.max_line == 0 || self.max_line > MAX_PENDING_LIMIT {
            return bad(format!(
                "max-line {} must be between 1 byte and {} bytes (1GiB)",
                self.max_line, MAX_PENDING_LIMIT
            ));
        }
        for (name, size) in [("recv-buffer", self.recv_buffer), ("send-buffer", self.send_buffer)] {
            if let Some(size) = size {
                if size == 0 || size > SOCKET_BUFFER_LIMIT {
                    return bad(format!("{name} {size} must be between 1 byte and 1GiB"));
                }
            }
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return bad("idle-timeout must be longer than 0 (omit it to never time out)".into());
        }
        if self.drain_grace.is_zero() {
            return bad("drain-grace must be longer than 0".into());
        }
        if self.stats_interval == Some(Duration::ZERO) {
            return bad("stats-interval must be longer than 0".into());
        }
        if self.keepalive == Some(Duration::ZERO) {
            return bad("keepalive must be at least 1s".into());
        }
        if self.read_buffer < 1024 || self.turn_budget == 0 || self.accept_batch == 0 {
            return bad("read buffer must be at least 1KiB and budgets above 0".into());
        }
        if self.faults.len() > self.listeners.len() {
            return bad(format!(
                "{} fault plans for {} listeners",
                self.faults.len(),
                self.listeners.len()
            ));
        }
        for (spec, plan) in self.listeners.iter().zip(&self.faults) {
            if let Some(plan) = plan {
                plan.check_for(spec.proto()).map_err(|e| {
                    Error::Config(format!("{} {}: {e}", spec.proto(), spec.display_addr()))
                })?;
            }
        }
        for spec in &self.listeners {
            if let Behaviour::Chat { room: Some(room) } = &spec.behaviour {
                check_room_name(room).map_err(Error::Config)?;
            }
            if spec.is_udp() && spec.is_chat() {
                return bad(format!(
                    "udp {}: a chat room is served over streams (tcp, tls, unix), not UDP",
                    spec.display_addr()
                ));
            }
            if spec.is_udp() && spec.proxy.is_some() {
                return bad(format!(
                    "`{spec}`: proxy= is for stream listeners, not UDP (a PROXY header comes \
                     before a stream's first byte)"
                ));
            }
            if let Endpoint::Unix(path) = &spec.endpoint {
                if path.as_os_str().is_empty() {
                    return bad("empty --unix path".into());
                }
                // sun_path holds 108 bytes including the terminating NUL.
                if path.as_os_str().len() > 107 {
                    return bad(format!(
                        "unix socket path {} is {} bytes; the limit is 107",
                        path.display(),
                        path.as_os_str().len()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The longest room name.
pub const MAX_ROOM_NAME: usize = 64;

/// A room name: 1 to 64 of `A-Z a-z 0-9 _ - .`.
pub fn check_room_name(name: &str) -> std::result::Result<(), String> {
    let ok = (1..=MAX_ROOM_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    match ok {
        true => Ok(()),
        false => {
            Err(format!("room `{name}`: a room name is 1 to {MAX_ROOM_NAME} of A-Z a-z 0-9 _ - ."))
        }
    }
}

/// How much of its past a chat room keeps (`--chat-history`): at most `lines` lines (notices
/// count as one) and `bytes` bytes of text, the oldest going first; `lines == 0`: nothing (the
/// lines are still numbered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimit {
    /// Lines kept at most (0: none).
    pub lines: u64,
    /// Bytes of text kept at most.
    pub bytes: usize,
}

impl Default for HistoryLimit {
    /// The last 1000 lines, within 1 MiB.
    fn default() -> Self {
        HistoryLimit { lines: 1000, bytes: 1 << 20 }
    }
}

impl std::str::FromStr for HistoryLimit {
    type Err = String;

    /// `N` (lines, within 1 MiB), `SIZE` (`8MiB`: as many lines as fit), `N,SIZE` (both), or
    /// `0` (none).
    fn from_str(text: &str) -> Result<HistoryLimit, String> {
        const MAX_BYTES: u64 = 1 << 30;
        let mut limit = HistoryLimit { lines: u64::MAX, bytes: HistoryLimit::default().bytes };
        let (mut lines, mut bytes) = (false, false);
        for part in text.split(',') {
            let part = part.trim();
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && !lines {
                limit.lines = part.parse().map_err(|_| format!("`{part}` lines is too many"))?;
                lines = true;
            } else if !bytes && !part.is_empty() {
                let size = crate::units::parse_bytes(part)
                    .map_err(|e| format!("`{text}`: {e} (give LINES, SIZE or LINES,SIZE)"))?;
                if size > MAX_BYTES {
                    return Err(format!("`{part}` is more than the 1 GiB a room may keep"));
                }
                limit.bytes = size as usize;
                bytes = true;
            } else {
                return Err(format!(
                    "`{text}` is not LINES, SIZE or LINES,SIZE (e.g. 1000 or 1000,4MiB)"
                ));
            }
        }
        if !lines && !bytes {
            return Err("an empty history limit (give LINES, SIZE or LINES,SIZE)".into());
        }
        if limit.bytes == 0 {
            limit.lines = 0;
        }
        Ok(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code written against the old enum still builds (with a deprecation warning).
    #[test]
    #[allow(deprecated)]
    fn the_old_constructors_still_build_the_same_listeners() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(ListenSpec::Tcp(a), ListenSpec::tcp(a));
        assert_eq!(ListenSpec::TlsChat(a).proto(), "tls-chat");
        assert_eq!(ListenSpec::Unix("/x".into()), ListenSpec::unix("/x"));
    }

    #[test]
    fn default_is_valid() {
        Config::default().check().unwrap();
        Config::ephemeral().check().unwrap();
    }

    /// A PROXY header belongs to streams: a UDP listener given one is refused, from a URL or
    /// from code, with the listener named.
    #[test]
    fn proxy_is_for_stream_listeners() {
        let udp = ListenSpec::udp("127.0.0.1:0".parse().unwrap()).with_proxy(Proxy::V2);
        let config = Config { listeners: vec![udp], ..Config::default() };
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("udp://127.0.0.1:0?proxy=v2") && err.contains("not UDP"), "{err}");
        let url = crate::url::parse_listen("udp://127.0.0.1:0?proxy=v2").unwrap();
        let config = Config { listeners: vec![url.spec], ..Config::default() };
        assert!(config.check().unwrap_err().to_string().contains("not UDP"));
    }

    #[test]
    fn rejects_absurd_limits() {
        let cases: [fn(&mut Config); 9] = [
            |c| c.max_line = 0,
            |c| c.listeners.clear(),
            |c| c.max_pending = 0,
            |c| c.max_pending = MAX_PENDING_LIMIT + 1,
            |c| c.backlog = 0,
            |c| c.max_conns = Some(0),
            |c| c.recv_buffer = Some(0),
            |c| c.idle_timeout = Some(Duration::ZERO),
            |c| c.listeners = vec![ListenSpec::unix(PathBuf::from("x".repeat(200)))],
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut c = Config::default();
            mutate(&mut c);
            assert!(matches!(c.check(), Err(Error::Config(_))), "case {i} accepted");
        }
    }
}
