//! Listen URLs (`--listen`): the same schemes loadgen's targets use, so the URL a user gives
//! ricochet is the URL they give loadgen. A scheme reads behaviour-over-transport, as
//! `git+ssh://` does:
//!
//! | URL | listener |
//! |---|---|
//! | `tcp://ADDR` | TCP echo |
//! | `udp://ADDR` | UDP echo |
//! | `unix:PATH` | Unix-domain stream echo |
//! | `tls://ADDR` | TLS echo |
//! | `chat://ADDR` | a chat room on TCP |
//! | `chat+tls://ADDR` | a chat room over TLS |
//! | `chat+unix:PATH` | a chat room on a Unix socket |
//! | `ws://ADDR`, `wss://ADDR` | WebSocket echo, over TLS for `wss` |
//! | `chat+ws://ADDR`, `chat+wss://ADDR` | a chat room over WebSocket |
//!
//! After `?`: `room=NAME` (chat: the shared room of that name), `proxy=v1|v2|any` (every
//! connection begins with a PROXY protocol header, see [`crate::proxy`]; stream listeners) and
//! an echo listener's fault plan (`close-after=1KiB&p=0.5`, see [`Faults::parse`]),
//! `&`-separated. Inside a URL `%` would start an escape, so fractions are written as decimals
//! (`p=0.05`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{check_room_name, ListenSpec};
use crate::faults::Faults;
use crate::proxy::Proxy;

/// The schemes `--listen` takes, for messages.
pub const SCHEMES: &str =
    "tcp://, udp://, unix:, tls://, ws://, wss://, chat://, chat+tls://, chat+unix:, chat+ws://, chat+wss://";

/// A parsed listen URL: the listener and its fault plan.
#[derive(Debug, Clone)]
pub struct ListenUrl {
    /// The listener.
    pub spec: ListenSpec,
    /// Its fault plan (echo listeners only).
    pub plan: Option<Faults>,
}

/// Parses a listen URL into the listener and its fault plan.
pub fn parse_listen(text: &str) -> Result<ListenUrl, String> {
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (text, None),
    };
    let (scheme, rest) = match base.split_once("://") {
        Some(split) => split,
        None => match base.split_once(':') {
            Some((scheme @ ("unix" | "chat+unix"), path)) => (scheme, path),
            _ => {
                let hint = match parse_addr(base) {
                    Ok(_) => format!("; for TCP echo there: tcp://{text}"),
                    Err(_) => String::new(),
                };
                return Err(format!("`{text}` is not a listen URL (schemes: {SCHEMES}){hint}"));
            }
        },
    };
    let addr = || parse_addr(rest);
    let spec = match scheme {
        "tcp" => ListenSpec::tcp(addr()?),
        "udp" => ListenSpec::udp(addr()?),
        "tls" => ListenSpec::tls(addr()?),
        "chat" => ListenSpec::chat(addr()?),
        "chat+tls" => ListenSpec::tls_chat(addr()?),
        "unix" | "chat+unix" if rest.is_empty() => {
            return Err(format!("`{text}`: no socket path after `{scheme}:`"));
        }
        "unix" => ListenSpec::unix(rest),
        "chat+unix" => ListenSpec::unix_chat(rest),
        "ws" => ListenSpec::ws(addr()?),
        "wss" => ListenSpec::wss(addr()?),
        "chat+ws" => ListenSpec::ws_chat(addr()?),
        "chat+wss" => ListenSpec::wss_chat(addr()?),
        other => {
            return Err(format!("`{other}://` is not a listen scheme (schemes: {SCHEMES})"));
        }
    };
    let (room, proxy, plan) = split_query(query.unwrap_or(""))?;
    // UDP with proxy= is refused by `Config::check`, with every other listener rule.
    let spec = match proxy {
        Some(version) => spec.with_proxy(version),
        None => spec,
    };
    let spec = match room {
        Some(_) if !spec.is_chat() => {
            return Err(format!(
                "`{text}`: room= is for chat listeners (chat://, chat+tls://, chat+unix:, chat+ws://, chat+wss://)"
            ));
        }
        Some(room) => {
            check_room_name(room)?;
            spec.in_room(room)
        }
        None => spec,
    };
    let plan = match plan.is_empty() {
        true => None,
        false => {
            let plan = Faults::parse(&plan)?;
            plan.check_for(spec.proto())?;
            Some(plan)
        }
    };
    Ok(ListenUrl { spec, plan })
}

/// Parses `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (which means 127.0.0.1: a server binds
/// one concrete address, and `localhost` may resolve to ::1 first).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let usage = "expected IP:PORT, e.g. 127.0.0.1:7007, [::1]:7007 or localhost:7007";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not an address: no port ({usage})"));
    };
    let port = match port.parse::<u64>() {
        Ok(port) if port <= u16::MAX as u64 => port as u16,
        Ok(port) => {
            return Err(format!("port {port} in `{text}` is out of range (0 to 65535)"));
        }
        Err(_) => return Err(format!("`{port}` in `{text}` is not a port number ({usage})")),
    };
    if host == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if bare.is_none() && host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!("`{text}`: an IPv6 address takes brackets, as in [{host}]:{port}"));
    }
    Err(format!("`{host}` in `{text}` is not an IP address or localhost ({usage})"))
}

/// A query's `room=` and `proxy=` values, and the rest (the fault plan, `&`-joined).
type Query<'a> = (Option<&'a str>, Option<Proxy>, String);

/// Splits a query into its `room=` and `proxy=` values and the rest.
fn split_query(query: &str) -> Result<Query<'_>, String> {
    let (mut room, mut proxy) = (None, None);
    let mut plan = Vec::new();
    for item in query.split('&').filter(|item| !item.is_empty()) {
        if let Some(name) = item.strip_prefix("room=") {
            if room.replace(name).is_some() {
                return Err("room= is given twice".into());
            }
        } else if let Some(version) = item.strip_prefix("proxy=") {
            if proxy.replace(version.parse::<Proxy>()?).is_some() {
                return Err("proxy= is given twice".into());
            }
        } else {
            plan.push(item);
        }
    }
    Ok((room, proxy, plan.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Behaviour, Endpoint};

    fn spec(text: &str) -> ListenSpec {
        parse_listen(text).unwrap_or_else(|e| panic!("{text}: {e}")).spec
    }

    #[test]
    fn every_scheme() {
        let a: std::net::SocketAddr = "127.0.0.1:7007".parse().unwrap();
        assert_eq!(spec("tcp://127.0.0.1:7007"), ListenSpec::tcp(a));
        assert_eq!(spec("udp://127.0.0.1:7007"), ListenSpec::udp(a));
        assert_eq!(spec("tls://localhost:7007"), ListenSpec::tls(a));
        assert_eq!(spec("chat://127.0.0.1:7007"), ListenSpec::chat(a));
        assert_eq!(spec("chat+tls://127.0.0.1:7007"), ListenSpec::tls_chat(a));
        assert_eq!(spec("unix:/tmp/e.sock"), ListenSpec::unix("/tmp/e.sock"));
        let unix_room = spec("chat+unix:/tmp/c.sock?room=lobby");
        assert_eq!(unix_room.endpoint, Endpoint::Unix("/tmp/c.sock".into()));
        assert_eq!(unix_room.behaviour, Behaviour::Chat { room: Some("lobby".into()) });
        assert_eq!(spec("tcp://[::1]:0").addr(), Some("[::1]:0".parse().unwrap()));
    }

    /// A URL reads back as itself (Display is the same form).
    #[test]
    fn urls_round_trip() {
        for url in [
            "tcp://127.0.0.1:7007",
            "udp://[::1]:9",
            "unix:/tmp/e.sock",
            "tls://127.0.0.1:1",
            "chat://127.0.0.1:2",
            "chat+tls://127.0.0.1:3?room=lobby",
            "chat+unix:/tmp/c.sock",
            "tcp://127.0.0.1:4?proxy=v2",
            "chat+ws://127.0.0.1:5?room=lobby&proxy=any",
        ] {
            assert_eq!(spec(url).to_string(), url);
        }
    }

    #[test]
    fn proxy_from_the_query() {
        assert_eq!(spec("unix:/tmp/p.sock?proxy=v1").proxy, Some(Proxy::V1));
        let url = parse_listen("tcp://127.0.0.1:0?proxy=any&close-after=10").unwrap();
        assert_eq!((url.spec.proxy, url.plan.is_some()), (Some(Proxy::Any), true));
        for (bad, needle) in [
            ("tcp://127.0.0.1:0?proxy=v3", "expected v1, v2 or any"),
            ("tcp://127.0.0.1:0?proxy=v1&proxy=v2", "given twice"),
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn rooms_and_plans_from_the_query() {
        let url = parse_listen("chat+tls://127.0.0.1:0?room=lobby").unwrap();
        assert_eq!(url.spec.behaviour, Behaviour::Chat { room: Some("lobby".into()) });
        assert!(url.plan.is_none());
        let url = parse_listen("tcp://127.0.0.1:0?close-after=1KiB&p=0.5").unwrap();
        assert_eq!(url.spec, ListenSpec::tcp("127.0.0.1:0".parse().unwrap()));
        assert_eq!(url.plan.unwrap().close_after, Some(1024));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse_listen(text).unwrap_err();
        assert!(err("http://127.0.0.1:1").contains("`http://` is not a listen scheme"));
        assert!(err("127.0.0.1:1").contains("not a listen URL"));
        assert!(err("127.0.0.1:1").ends_with("for TCP echo there: tcp://127.0.0.1:1"));
        assert!(err("unix:").contains("no socket path"));
        assert!(err("tcp://127.0.0.1:1?room=x").contains("room= is for chat listeners"));
        assert!(err("chat://127.0.0.1:1?room=a b").contains("a room name is"));
        assert!(err("chat://127.0.0.1:1?room=a&room=b").contains("twice"));
        assert!(err("chat://127.0.0.1:1?close-after=1").contains("chat listeners take no"));
        assert!(err("udp://127.0.0.1:1?close-after=1").contains("a stream fault"));
        assert!(err("tcp://127.0.0.1:99999").contains("out of range"));
        assert!(err("ws://127.0.0.1:1?drop=0.5").contains("a datagram fault"));
        assert!(parse_listen("ws://127.0.0.1:1?close-after=1").unwrap().plan.is_some());
        assert_eq!(parse_listen("ws://127.0.0.1:1").unwrap().spec.proto(), "ws");
        assert_eq!(parse_listen("wss://127.0.0.1:1").unwrap().spec.proto(), "wss");
        let url = parse_listen("chat+ws://127.0.0.1:1?room=lobby").unwrap();
        assert_eq!(url.spec.to_string(), "chat+ws://127.0.0.1:1?room=lobby");
        assert_eq!(parse_listen("chat+wss://127.0.0.1:1").unwrap().spec.proto(), "chat+wss");
    }
}
