//! What loadgen talks to, as a URL whose scheme reads workload-over-transport (the same URLs
//! `ricochet --listen` takes): `HOST:PORT` or `tcp://HOST:PORT`, `udp://HOST:PORT`, `unix:PATH`,
//! `tls://HOST:PORT`, `ws://HOST:PORT[/PATH]`, `wss://HOST:PORT[/PATH]` (echo), and
//! `chat://HOST:PORT`, `chat+tls://HOST:PORT`, `chat+unix:PATH`, `chat+ws://…`, `chat+wss://…`
//! (a chat room: fan-out load instead of echo).
//!
//! A target is a [`Workload`] over a [`Transport`]; host names are resolved once, up front, and
//! [`Target::resolve`] returns every address so the caller can use the first one that answers
//! (`localhost` may resolve to `::1` first while the server listens on 127.0.0.1 only).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::websocket::WsTarget;

/// What load a target gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Every message back to its sender, checked (streams: byte for byte; UDP: per datagram).
    Echo,
    /// A chat room: lines from the publishers, each checked as every other member receives it.
    Chat,
}

/// The transport a target names, unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP to `HOST:PORT`.
    Tcp(String),
    /// TLS over TCP to `HOST:PORT`.
    Tls(String),
    /// UDP to `HOST:PORT`.
    Udp(String),
    /// A Unix-domain stream socket.
    Unix(PathBuf),
    /// WebSocket over TCP to `HOST:PORT`, with the request path.
    Ws(String, String),
    /// WebSocket over TLS to `HOST:PORT`, with the request path.
    Wss(String, String),
}

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What load it gets.
    pub workload: Workload,
    /// Over what.
    pub transport: Transport,
}

/// A transport with its address resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP server.
    Tcp(SocketAddr),
    /// A TLS server.
    Tls(SocketAddr),
    /// A UDP server.
    Udp(SocketAddr),
    /// A Unix-domain stream server.
    Unix(PathBuf),
}

/// A target resolved to one address: what a load thread connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// What load it gets.
    pub workload: Workload,
    /// Where, over what.
    pub address: Address,
    /// WebSocket framing over the address's stream (`ws://`, `wss://` and their chat forms).
    pub websocket: Option<WsTarget>,
    /// A PROXY protocol header first on every connection (`--proxy-header`).
    pub proxy: Option<ricochet::proxy::Proxy>,
    /// Local addresses to connect from, connection i from the i-th (`--source`; empty: the
    /// kernel's choice).
    pub sources: Arc<Vec<IpAddr>>,
}

/// The schemes loadgen takes, for messages.
const SCHEMES: &str =
    "HOST:PORT, tcp://HOST:PORT, udp://HOST:PORT, unix:PATH, tls://HOST:PORT, ws://HOST:PORT[/PATH], \
     wss://HOST:PORT[/PATH], chat://HOST:PORT, chat+tls://HOST:PORT, chat+unix:PATH, \
     chat+ws://HOST:PORT[/PATH] or chat+wss://HOST:PORT[/PATH]";

impl Target {
    /// Parses the command-line form.
    pub fn parse(text: &str) -> Result<Target, String> {
        let bad = || format!("`{text}` is not a target: expected {SCHEMES}");
        for (prefix, workload) in [("unix:", Workload::Echo), ("chat+unix:", Workload::Chat)] {
            if let Some(path) = text.strip_prefix(prefix) {
                let path = path.strip_prefix("//").unwrap_or(path);
                if path.is_empty() {
                    return Err(bad());
                }
                return Ok(Target { workload, transport: Transport::Unix(path.into()) });
            }
        }
        let (scheme, hostport) = text.split_once("://").unwrap_or(("tcp", text));
        let websocket = matches!(scheme, "ws" | "wss" | "chat+ws" | "chat+wss");
        let (hostport, path) = match hostport.find('/') {
            Some(i) if websocket => (&hostport[..i], &hostport[i..]),
            _ => (hostport, "/"),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let hostport = hostport.to_owned();
        let (workload, transport) = match scheme {
            "tcp" => (Workload::Echo, Transport::Tcp(hostport)),
            "udp" => (Workload::Echo, Transport::Udp(hostport)),
            "tls" => (Workload::Echo, Transport::Tls(hostport)),
            "chat" => (Workload::Chat, Transport::Tcp(hostport)),
            "chat+tls" => (Workload::Chat, Transport::Tls(hostport)),
            "ws" => (Workload::Echo, Transport::Ws(hostport, path.into())),
            "wss" => (Workload::Echo, Transport::Wss(hostport, path.into())),
            "chat+ws" => (Workload::Chat, Transport::Ws(hostport, path.into())),
            "chat+wss" => (Workload::Chat, Transport::Wss(hostport, path.into())),
            _ => return Err(bad()),
        };
        Ok(Target { workload, transport })
    }

    /// The scheme: `tcp`, `udp`, `unix`, `tls`, `ws`, `wss`, `chat`, `chat+tls`, `chat+unix`,
    /// `chat+ws` or `chat+wss` (the JSON's `proto`).
    pub fn proto(&self) -> &'static str {
        let ws = matches!(self.transport, Transport::Ws(..) | Transport::Wss(..));
        let kind = match &self.transport {
            Transport::Udp(_) => Kind::Udp,
            Transport::Unix(_) => Kind::Unix,
            _ => Kind::Stream,
        };
        scheme(self.workload, self.is_tls(), ws, kind)
    }

    /// Whether it speaks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_) | Transport::Wss(..))
    }

    /// Whether it speaks WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(self.transport, Transport::Ws(..) | Transport::Wss(..))
    }

    /// Whether it is UDP.
    pub fn is_udp(&self) -> bool {
        matches!(self.transport, Transport::Udp(_))
    }

    /// Whether it is a chat room.
    pub fn is_chat(&self) -> bool {
        self.workload == Workload::Chat
    }

    /// The host part (`localhost`, `127.0.0.1`, `[::1]`), if the target has one.
    pub fn host(&self) -> Option<&str> {
        match &self.transport {
            Transport::Tcp(h)
            | Transport::Udp(h)
            | Transport::Tls(h)
            | Transport::Ws(h, _)
            | Transport::Wss(h, _) => h.rsplit_once(':').map(|(host, _)| host),
            Transport::Unix(_) => None,
        }
    }

    /// Every endpoint the target resolves to, in resolver order.
    pub fn resolve(&self) -> Result<Vec<Endpoint>, String> {
        let lookup = |hostport: &str| {
            let addrs: Vec<SocketAddr> = hostport
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve `{hostport}`: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{hostport}` resolves to no address"));
            }
            Ok(addrs)
        };
        let addresses: Vec<Address> = match &self.transport {
            Transport::Tcp(h) => lookup(h)?.into_iter().map(Address::Tcp).collect(),
            Transport::Tls(h) => lookup(h)?.into_iter().map(Address::Tls).collect(),
            Transport::Udp(h) => lookup(h)?.into_iter().map(Address::Udp).collect(),
            Transport::Unix(p) => vec![Address::Unix(p.clone())],
            Transport::Ws(h, _) => lookup(h)?.into_iter().map(Address::Tcp).collect(),
            Transport::Wss(h, _) => lookup(h)?.into_iter().map(Address::Tls).collect(),
        };
        let workload = self.workload;
        let websocket = match &self.transport {
            Transport::Ws(host, path) | Transport::Wss(host, path) => Some(WsTarget {
                host: host.clone(),
                path: path.clone(),
                text: false,
                message: 0,
                lines: workload == Workload::Chat,
            }),
            _ => None,
        };
        Ok(addresses
            .into_iter()
            .map(|address| Endpoint {
                workload,
                address,
                websocket: websocket.clone(),
                proxy: None,
                sources: Arc::default(),
            })
            .collect())
    }
}

/// The socket kind under a scheme.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stream,
    Udp,
    Unix,
}

/// The scheme of a workload over a transport.
fn scheme(workload: Workload, tls: bool, ws: bool, kind: Kind) -> &'static str {
    match (workload, tls, ws, kind) {
        (Workload::Chat, true, true, _) => "chat+wss",
        (Workload::Chat, false, true, _) => "chat+ws",
        (Workload::Chat, true, ..) => "chat+tls",
        (Workload::Chat, _, _, Kind::Unix) => "chat+unix",
        (Workload::Chat, ..) => "chat",
        (Workload::Echo, true, true, _) => "wss",
        (Workload::Echo, false, true, _) => "ws",
        (Workload::Echo, true, ..) => "tls",
        (Workload::Echo, _, _, Kind::Udp) => "udp",
        (Workload::Echo, _, _, Kind::Unix) => "unix",
        (Workload::Echo, ..) => "tcp",
    }
}

impl Endpoint {
    /// A resolved echo target.
    pub fn echo(address: Address) -> Endpoint {
        Endpoint {
            workload: Workload::Echo,
            address,
            websocket: None,
            proxy: None,
            sources: Arc::default(),
        }
    }

    /// A resolved chat room.
    pub fn chat(address: Address) -> Endpoint {
        Endpoint {
            workload: Workload::Chat,
            address,
            websocket: None,
            proxy: None,
            sources: Arc::default(),
        }
    }

    /// The scheme (as [`Target::proto`]).
    pub fn proto(&self) -> &'static str {
        let kind = match &self.address {
            Address::Udp(_) => Kind::Udp,
            Address::Unix(_) => Kind::Unix,
            _ => Kind::Stream,
        };
        let tls = matches!(self.address, Address::Tls(_));
        scheme(self.workload, tls, self.websocket.is_some(), kind)
    }

    /// The socket address, for every address but a Unix socket.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.address {
            Address::Tcp(a) | Address::Tls(a) | Address::Udp(a) => Some(a),
            Address::Unix(_) => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::Unix(p) => write!(f, "{}:{}", self.proto(), p.display()),
            Address::Tcp(a) | Address::Tls(a) | Address::Udp(a) => {
                let path = self.websocket.as_ref().map_or("", |ws| ws.path.as_str());
                write!(f, "{}://{a}{}", self.proto(), if path == "/" { "" } else { path })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let echo = |transport| Target { workload: Workload::Echo, transport };
        let tcp = |h: &str| Transport::Tcp(h.into());
        assert_eq!(Target::parse("127.0.0.1:7007"), Ok(echo(tcp("127.0.0.1:7007"))));
        assert_eq!(Target::parse("tcp://[::1]:80"), Ok(echo(tcp("[::1]:80"))));
        assert_eq!(
            Target::parse("udp://localhost:9"),
            Ok(echo(Transport::Udp("localhost:9".into())))
        );
        assert_eq!(
            Target::parse("unix:/tmp/e.sock"),
            Ok(echo(Transport::Unix("/tmp/e.sock".into())))
        );
        let chat = Target::parse("chat://127.0.0.1:7008").unwrap();
        assert_eq!((chat.workload, chat.transport), (Workload::Chat, tcp("127.0.0.1:7008")));
        let tls = Target::parse("tls://localhost:7443").unwrap();
        assert_eq!(tls, echo(Transport::Tls("localhost:7443".into())));
        assert_eq!((tls.proto(), tls.host()), ("tls", Some("localhost")));
        let room = Target::parse("chat+tls://localhost:7444").unwrap();
        assert_eq!((room.proto(), room.is_tls(), room.is_chat()), ("chat+tls", true, true));
        for bad in ["", "7007", "host", "http://x:1", "tcp://x", "x:99999", "unix:", ":80"] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Target::parse("http://x:1").unwrap_err().contains("chat+wss://HOST:PORT"));
        let ws = Target::parse("ws://localhost:9001/echo?x=1").unwrap();
        assert_eq!(ws.transport, Transport::Ws("localhost:9001".into(), "/echo?x=1".into()));
        assert_eq!((ws.proto(), ws.host(), ws.is_tls()), ("ws", Some("localhost"), false));
        let room = Target::parse("chat+wss://h:1").unwrap();
        assert_eq!((room.proto(), room.is_tls(), room.is_chat()), ("chat+wss", true, true));
        assert_eq!(room.transport, Transport::Wss("h:1".into(), "/".into()));
        let eps = Target::parse("ws://127.0.0.1:9/p").unwrap().resolve().unwrap();
        assert_eq!(eps[0].to_string(), "ws://127.0.0.1:9/p");
        assert_eq!(eps[0].websocket.as_ref().unwrap().host, "127.0.0.1:9");
        let room = Target::parse("chat+unix:/tmp/c.sock").unwrap();
        assert_eq!(
            (room.proto(), room.transport),
            ("chat+unix", Transport::Unix("/tmp/c.sock".into()))
        );
    }

    #[test]
    fn resolves_literals_and_localhost() {
        let eps = Target::parse("127.0.0.1:9").unwrap().resolve().unwrap();
        assert_eq!(eps, vec![Endpoint::echo(Address::Tcp("127.0.0.1:9".parse().unwrap()))]);
        assert_eq!(eps[0].to_string(), "tcp://127.0.0.1:9");
        let eps = Target::parse("udp://localhost:9").unwrap().resolve().unwrap();
        assert!(eps.iter().all(|e| matches!(e.address, Address::Udp(a) if a.ip().is_loopback())));
        let eps = Target::parse("chat+tls://127.0.0.1:9").unwrap().resolve().unwrap();
        assert_eq!(eps[0].to_string(), "chat+tls://127.0.0.1:9");
        assert_eq!(
            Target::parse("unix:/x.sock").unwrap().resolve().unwrap()[0].to_string(),
            "unix:/x.sock"
        );
    }
}
