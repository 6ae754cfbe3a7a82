//! What loadgen talks to: `HOST:PORT` or `tcp://HOST:PORT`, `udp://HOST:PORT`, `unix:PATH`,
//! `tls://HOST:PORT` (echo over TLS), and `chat://HOST:PORT` (a chat room: fan-out load instead
//! of echo).
//! Host names are resolved once, up front; [`Target::resolve`] returns every address so the
//! caller can use the first one that answers (`localhost` may resolve to `::1` first while the
//! server listens on 127.0.0.1 only).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Stream echo over TCP.
    Tcp(String),
    /// Datagram echo over UDP.
    Udp(String),
    /// Stream echo over a Unix-domain socket.
    Unix(PathBuf),
    /// A chat room over TCP.
    Chat(String),
    /// Stream echo over TLS.
    Tls(String),
}

/// A target with its address resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP server.
    Tcp(SocketAddr),
    /// A UDP server.
    Udp(SocketAddr),
    /// A Unix-domain stream server.
    Unix(PathBuf),
    /// A chat room over TCP.
    Chat(SocketAddr),
    /// A TLS echo server.
    Tls(SocketAddr),
}

impl Target {
    /// Parses the command-line form.
    pub fn parse(text: &str) -> Result<Target, String> {
        let bad = || {
            format!(
                "`{text}` is not a target: expected HOST:PORT, tcp://HOST:PORT, udp://HOST:PORT, \
                 unix:PATH, tls://HOST:PORT or chat://HOST:PORT"
            )
        };
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return if path.is_empty() { Err(bad()) } else { Ok(Target::Unix(path.into())) };
        }
        let (kind, hostport) = if let Some(rest) = text.strip_prefix("tcp://") {
            ("tcp", rest)
        } else if let Some(rest) = text.strip_prefix("udp://") {
            ("udp", rest)
        } else if let Some(rest) = text.strip_prefix("chat://") {
            ("chat", rest)
        } else if let Some(rest) = text.strip_prefix("tls://") {
            ("tls", rest)
        } else if text.contains("://") {
            return Err(bad());
        } else {
            ("tcp", text)
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(match kind {
            "udp" => Target::Udp(hostport.to_owned()),
            "chat" => Target::Chat(hostport.to_owned()),
            "tls" => Target::Tls(hostport.to_owned()),
            _ => Target::Tcp(hostport.to_owned()),
        })
    }

    /// `tcp`, `udp`, `unix`, `chat` or `tls`.
    pub fn proto(&self) -> &'static str {
        match self {
            Target::Tcp(_) => "tcp",
            Target::Udp(_) => "udp",
            Target::Unix(_) => "unix",
            Target::Chat(_) => "chat",
            Target::Tls(_) => "tls",
        }
    }

    /// The host part (`localhost`, `127.0.0.1`, `[::1]`), if the target has one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Target::Tcp(h) | Target::Udp(h) | Target::Chat(h) | Target::Tls(h) => {
                h.rsplit_once(':').map(|(host, _)| host)
            }
            Target::Unix(_) => None,
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
        Ok(match self {
            Target::Tcp(h) => lookup(h)?.into_iter().map(Endpoint::Tcp).collect(),
            Target::Udp(h) => lookup(h)?.into_iter().map(Endpoint::Udp).collect(),
            Target::Unix(p) => vec![Endpoint::Unix(p.clone())],
            Target::Chat(h) => lookup(h)?.into_iter().map(Endpoint::Chat).collect(),
            Target::Tls(h) => lookup(h)?.into_iter().map(Endpoint::Tls).collect(),
        })
    }
}

impl Endpoint {
    /// `tcp`, `udp`, `unix`, `chat` or `tls`.
    pub fn proto(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Udp(_) => "udp",
            Endpoint::Unix(_) => "unix",
            Endpoint::Chat(_) => "chat",
            Endpoint::Tls(_) => "tls",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Udp(a) => write!(f, "udp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Chat(a) => write!(f, "chat://{a}"),
            Endpoint::Tls(a) => write!(f, "tls://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Target::parse("127.0.0.1:7007"), Ok(Target::Tcp("127.0.0.1:7007".into())));
        assert_eq!(Target::parse("tcp://[::1]:80"), Ok(Target::Tcp("[::1]:80".into())));
        assert_eq!(Target::parse("udp://localhost:9"), Ok(Target::Udp("localhost:9".into())));
        assert_eq!(Target::parse("unix:/tmp/e.sock"), Ok(Target::Unix("/tmp/e.sock".into())));
        assert_eq!(
            Target::parse("chat://127.0.0.1:7008"),
            Ok(Target::Chat("127.0.0.1:7008".into()))
        );
        let tls = Target::parse("tls://localhost:7443").unwrap();
        assert_eq!(tls, Target::Tls("localhost:7443".into()));
        assert_eq!((tls.proto(), tls.host()), ("tls", Some("localhost")));
        for bad in ["", "7007", "host", "http://x:1", "tcp://x", "x:99999", "unix:", ":80"] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolves_literals_and_localhost() {
        let eps = Target::parse("127.0.0.1:9").unwrap().resolve().unwrap();
        assert_eq!(eps, vec![Endpoint::Tcp("127.0.0.1:9".parse().unwrap())]);
        assert_eq!(eps[0].to_string(), "tcp://127.0.0.1:9");
        let eps = Target::parse("udp://localhost:9").unwrap().resolve().unwrap();
        assert!(eps.iter().all(|e| matches!(e, Endpoint::Udp(a) if a.ip().is_loopback())));
    }
}
