//! Listeners: a reactor's [`Listener`]s built from the config's specs ([`build`]: sockets bound,
//! chat rooms resolved to room indexes, plans and TLS attached), TCP sockets via socket2
//! (SO_REUSEADDR, optional SO_REUSEPORT, IPv6-only for `[::]`, the configured backlog),
//! Unix-domain stream listeners with careful handling of the socket file, options for accepted
//! sockets, and the accept backoff used on EMFILE/ENFILE.
//!
//! Unix socket files: a stale file (nobody accepts on it) is replaced; a live one is "address in
//! use"; a path that is not a socket is never deleted. The file is removed at shutdown only if it
//! is still the one this server created (same device and inode).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use mio::net::{TcpListener, UnixListener};
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

use crate::behaviour::Role;
use crate::config::{Behaviour, Config, Endpoint, ListenSpec};
use crate::error::{Error, Result};
use crate::faults::{Faults, Rng};
use crate::transport::Stream;
use crate::udp::UdpEcho;

/// A listening stream socket.
#[derive(Debug)]
pub(crate) enum StreamListener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener, SocketFile),
}

/// A listening socket with the behaviour its connections get, or the one UDP socket of a UDP
/// listen address.
#[derive(Debug)]
pub(crate) enum Listener {
    /// `plan`: the fault plan its echo connections get, shared by all of them; `tls`: the
    /// server config its connections speak TLS with; `websocket`: they speak WebSocket (over
    /// TLS if `tls`). `socket` is `None` on the reactors that do not accept (they serve what the
    /// first reactor hands them).
    Stream {
        socket: Option<StreamListener>,
        role: Role,
        plan: Option<Arc<Faults>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        websocket: bool,
        proxy: Option<crate::proxy::Proxy>,
    },
    Udp(UdpEcho),
}

impl Listener {
    pub(crate) fn stream(
        socket: Option<StreamListener>,
        role: Role,
        plan: Option<Arc<Faults>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        websocket: bool,
        proxy: Option<crate::proxy::Proxy>,
    ) -> Self {
        Listener::Stream { socket, role, plan, tls, websocket, proxy }
    }

    /// The socket to register with the poll, if this reactor has one.
    pub(crate) fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        match self {
            Listener::Stream { socket: Some(StreamListener::Tcp(l)), .. } => Some(l),
            Listener::Stream { socket: Some(StreamListener::Unix(l, _)), .. } => Some(l),
            Listener::Stream { socket: None, .. } => None,
            Listener::Udp(u) => Some(&mut u.socket),
        }
    }
}

impl StreamListener {
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            StreamListener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            StreamListener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// One reactor's listeners, in the config's order.
#[derive(Debug)]
pub(crate) struct Built {
    pub listeners: Vec<Listener>,
    /// Each listener with its concrete address (port 0 resolved).
    pub addrs: Vec<ListenSpec>,
    /// How many chat rooms they serve (rooms are numbered in the order they first appear, the
    /// same on every reactor).
    pub rooms: usize,
}

/// Builds reactor `index`'s listeners from `specs`. The first reactor (`index` 0) binds every
/// stream socket; the others serve what it hands them, and each reactor binds its own socket of
/// every UDP listener (SO_REUSEPORT). `tls`: the server config of the TLS listeners.
pub(crate) fn build(
    config: &Config,
    tls: Option<&Arc<rustls::ServerConfig>>,
    specs: &[ListenSpec],
    index: usize,
) -> Result<Built> {
    let leader = index == 0;
    // Several reactors share each UDP port, one socket each.
    let udp_reuseport = config.reuseport || config.reactors() > 1;
    let mut built = Built { listeners: Vec::new(), addrs: Vec::new(), rooms: 0 };
    // One entry per room, in order of first appearance: its name if listeners share it.
    let mut rooms: Vec<Option<&str>> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let role = match &spec.behaviour {
            Behaviour::Echo => Role::Echo,
            Behaviour::Chat { room } => {
                let name = room.as_deref();
                let shared = name.and_then(|name| rooms.iter().position(|r| *r == Some(name)));
                Role::Chat {
                    room: shared.unwrap_or_else(|| {
                        rooms.push(name);
                        rooms.len() - 1
                    }),
                }
            }
        };
        let plan = config.plan(i).cloned().map(Arc::new);
        let tls = spec.is_tls().then(|| tls.cloned()).flatten();
        let (listener, endpoint) = match &spec.endpoint {
            Endpoint::Tcp(addr)
            | Endpoint::Tls(addr)
            | Endpoint::Ws(addr)
            | Endpoint::Wss(addr) => {
                let (socket, local) = match leader {
                    true => {
                        let l = bind_tcp(*addr, spec.proto(), config)?;
                        let local = l
                            .local_addr()
                            .map_err(Error::io("reading a TCP listener's address"))?;
                        (Some(StreamListener::Tcp(l)), local)
                    }
                    false => (None, *addr),
                };
                let endpoint = match spec.endpoint {
                    Endpoint::Tls(_) => Endpoint::Tls(local),
                    Endpoint::Ws(_) => Endpoint::Ws(local),
                    Endpoint::Wss(_) => Endpoint::Wss(local),
                    _ => Endpoint::Tcp(local),
                };
                let websocket = spec.is_websocket();
                (Listener::stream(socket, role, plan, tls, websocket, spec.proxy), endpoint)
            }
            Endpoint::Unix(path) => {
                let socket = match leader {
                    true => {
                        let (l, file) = bind_unix(path, config.backlog)?;
                        Some(StreamListener::Unix(l, file))
                    }
                    false => None,
                };
                let listener = Listener::stream(socket, role, plan, None, false, spec.proxy);
                (listener, Endpoint::Unix(path.clone()))
            }
            Endpoint::Udp(addr) => {
                let socket = crate::udp::bind(*addr, config, udp_reuseport)?;
                let local =
                    socket.local_addr().map_err(Error::io("reading a UDP socket's address"))?;
                let plan = config.plan(i).map(|plan| {
                    let rng = Rng::new(plan.seed_or(config.seed), i, index as u64);
                    (plan.clone(), rng)
                });
                let udp = UdpEcho::new(socket, config.udp_allow_low_ports, plan);
                (Listener::Udp(udp), Endpoint::Udp(local))
            }
        };
        built.listeners.push(listener);
        built.addrs.push(spec.at(endpoint));
    }
    built.rooms = rooms.len();
    Ok(built)
}

/// A bound TCP listener, ready for mio; `proto` names it in errors (`tcp`, `chat`).
pub(crate) fn bind_tcp(
    addr: SocketAddr,
    proto: &'static str,
    config: &Config,
) -> Result<TcpListener> {
    let fail = |cause| Error::Bind { proto, addr: addr.to_string(), cause };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` can then both be served on one port, each by its own listener.
        socket.set_only_v6(true).map_err(fail)?;
    }
    if config.reuseport {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(config.backlog as i32).map_err(fail)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A Unix socket file this server created: removed at shutdown if it is still ours.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the file if it is still the socket this server created.
    pub(crate) fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A bound Unix-domain stream listener at `path`.
pub(crate) fn bind_unix(path: &Path, backlog: u32) -> Result<(UnixListener, SocketFile)> {
    let fail = |cause| Error::Bind { proto: "unix", addr: path.display().to_string(), cause };
    let refuse = |reason: &str| Error::UnixPath { path: path.to_owned(), reason: reason.into() };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(refuse("the path exists and is not a socket; it was left untouched"));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is accepting on this socket",
                )))
            }
            // Nobody listens: a stale file left by a server that died. Replace it.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(fail)?;
            }
            Err(e) => return Err(fail(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&socket2::SockAddr::unix(path).map_err(fail)?).map_err(fail)?;
    let meta = std::fs::symlink_metadata(path).map_err(fail)?;
    let file = SocketFile { path: path.to_owned(), dev: meta.dev(), ino: meta.ino() };
    if let Err(e) = socket.listen(backlog as i32) {
        file.remove();
        return Err(fail(e));
    }
    Ok((UnixListener::from_std(socket.into()), file))
}

/// Applies the configured options to an accepted stream. Failures are ignored on purpose: an
/// option that cannot be set (the peer already reset, say) is no reason to drop the connection.
pub(crate) fn configure_accepted(stream: &Stream, config: &Config) {
    let sock = match stream {
        Stream::Tcp(s) => {
            let sock = SockRef::from(s);
            if config.nodelay {
                let _ = sock.set_tcp_nodelay(true);
            }
            if let Some(idle) = config.keepalive {
                let _ = sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle));
            }
            sock
        }
        Stream::Unix(s) => SockRef::from(s),
    };
    if let Some(size) = config.recv_buffer {
        let _ = sock.set_recv_buffer_size(size);
    }
    if let Some(size) = config.send_buffer {
        let _ = sock.set_send_buffer_size(size);
    }
}

/// Whether an accept error is about one connection only (it died in the backlog), so accepting
/// should simply go on.
pub(crate) fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::ENETDOWN | libc::ENOPROTOOPT)
            | Some(libc::EHOSTDOWN | libc::ENONET | libc::EHOSTUNREACH | libc::EOPNOTSUPP)
            | Some(libc::ENETUNREACH)
    )
}

/// Accept backoff: after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM) accepting pauses,
/// first for 100 ms, doubling up to 1 s while errors continue. Since edge-triggered listeners get
/// no new edge for connections already waiting, the reactor retries every listener when the pause
/// ends.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    until: Option<Instant>,
    delay: Duration,
}

impl AcceptBackoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(100);
    pub(crate) const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        AcceptBackoff { until: None, delay: Self::FIRST }
    }

    /// Starts (or extends) a pause at `now`; returns its length.
    pub(crate) fn fail(&mut self, now: Instant) -> Duration {
        let delay = self.delay;
        self.until = Some(now + delay);
        self.delay = (delay * 2).min(Self::MAX);
        delay
    }

    /// An accept worked: the next failure starts from the shortest pause again.
    pub(crate) fn succeed(&mut self) {
        self.delay = Self::FIRST;
    }

    /// Whether accepting is paused at `now`.
    pub(crate) fn paused(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// When the current pause ends, if one is running or ended without being collected.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Collects a pause that has ended at `now`: true once, when listeners must be retried.
    pub(crate) fn take_expired(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if now >= until => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::new();
        assert!(!b.paused(t0));
        assert_eq!(b.fail(t0), Duration::from_millis(100));
        assert!(b.paused(t0 + Duration::from_millis(99)));
        assert!(!b.take_expired(t0 + Duration::from_millis(99)));
        assert!(b.take_expired(t0 + Duration::from_millis(100)));
        assert!(!b.take_expired(t0 + Duration::from_millis(100)), "collected only once");
        assert_eq!(b.fail(t0), Duration::from_millis(200));
        assert_eq!(b.fail(t0), Duration::from_millis(400));
        assert_eq!(b.fail(t0), Duration::from_millis(800));
        assert_eq!(b.fail(t0), Duration::from_secs(1));
        assert_eq!(b.fail(t0), Duration::from_secs(1));
        b.succeed();
        assert_eq!(b.fail(t0), Duration::from_millis(100));
    }
}
