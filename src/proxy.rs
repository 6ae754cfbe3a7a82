//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer puts before a
//! connection's first byte to say whom it relays. A listener given `?proxy=v1|v2|any` expects
//! one on every connection: it is read and removed before the echo, the chat or the TLS and
//! WebSocket handshakes see a byte, and the source address it carries is the client's
//! (`/whoami` in a chat room says it). A missing or malformed header closes the connection
//! (counted as `proxy_refused`); nothing is echoed.
//!
//! [`parse`] looks at the start of a connection's bytes (the reactor peeks at them, so that
//! nothing after the header is taken from the socket) and says whether a whole header is there,
//! how long it is, and what it says. v1 `UNKNOWN`, and v2 `LOCAL` or an address family without
//! an IP address (`UNSPEC`, `UNIX`), are accepted as the specification says: the connection's
//! own address stands. v2's TLVs are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which versions a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proxy {
    /// `PROXY TCP4 ...\r\n` text.
    V1,
    /// The binary header.
    V2,
    /// Either.
    Any,
}

impl Proxy {
    /// `v1`, `v2` or `any`, as in `?proxy=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proxy::V1 => "v1",
            Proxy::V2 => "v2",
            Proxy::Any => "any",
        }
    }
}

impl std::str::FromStr for Proxy {
    type Err = String;

    fn from_str(text: &str) -> Result<Proxy, String> {
        match text {
            "v1" => Ok(Proxy::V1),
            "v2" => Ok(Proxy::V2),
            "any" => Ok(Proxy::Any),
            other => Err(format!("proxy={other}: expected v1, v2 or any")),
        }
    }
}

/// The v2 header's first 12 bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, its CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The longest v2 header taken (16 bytes and its addresses and TLVs); a longer one is refused.
pub const V2_MAX: usize = 4096;

/// What the start of a connection holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// Not all of the header yet: read more.
    Partial,
    /// Not a header this listener takes: close the connection.
    Invalid(&'static str),
    /// A whole header.
    Whole {
        /// Its length in bytes.
        len: usize,
        /// The client it names, or `None` when the connection's own address stands (v1
        /// `UNKNOWN`, v2 `LOCAL`, `UNSPEC`, `UNIX`).
        source: Option<SocketAddr>,
    },
}

/// Parses the header at the start of `data`, of a version `mode` allows.
pub fn parse(data: &[u8], mode: Proxy) -> Header {
    let v1 = b"PROXY ";
    let is_prefix = |sig: &[u8]| data.len() < sig.len() && sig.starts_with(data);
    let looks_v1 = data.starts_with(v1) || is_prefix(v1);
    let looks_v2 = data.starts_with(&V2_SIGNATURE) || is_prefix(&V2_SIGNATURE);
    match mode {
        _ if data.is_empty() => Header::Partial,
        Proxy::V1 | Proxy::Any if looks_v1 => parse_v1(data),
        Proxy::V2 | Proxy::Any if looks_v2 => parse_v2(data),
        Proxy::V1 => Header::Invalid("no PROXY v1 header"),
        Proxy::V2 => Header::Invalid("no PROXY v2 header"),
        Proxy::Any => Header::Invalid("no PROXY header"),
    }
}

/// The header a client of `source` connected to `dest` would get from a load balancer (`Any`
/// writes v2): v1 `TCP4`/`TCP6` or v2 `PROXY` over TCP when both addresses are known and of one
/// family, else v1 `UNKNOWN` or v2 `LOCAL` (a Unix socket, say). [`parse`] reads it back.
pub fn encode(version: Proxy, source: Option<SocketAddr>, dest: Option<SocketAddr>) -> Vec<u8> {
    let pair = match (source, dest) {
        (Some(s), Some(d)) if s.is_ipv4() == d.is_ipv4() => Some((s, d)),
        _ => None,
    };
    match version {
        Proxy::V1 => match pair {
            Some((s, d)) => {
                let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                let (sp, dp) = (s.port(), d.port());
                format!("PROXY {family} {} {} {sp} {dp}\r\n", s.ip(), d.ip()).into_bytes()
            }
            None => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        Proxy::V2 | Proxy::Any => {
            let mut h = V2_SIGNATURE.to_vec();
            let mut addrs = Vec::with_capacity(36);
            let (command, family) = match pair {
                Some((s, d)) => {
                    match (s.ip(), d.ip()) {
                        (IpAddr::V4(a), IpAddr::V4(b)) => {
                            addrs.extend_from_slice(&a.octets());
                            addrs.extend_from_slice(&b.octets());
                        }
                        (a, b) => {
                            addrs.extend_from_slice(&to_v6(a).octets());
                            addrs.extend_from_slice(&to_v6(b).octets());
                        }
                    }
                    addrs.extend_from_slice(&s.port().to_be_bytes());
                    addrs.extend_from_slice(&d.port().to_be_bytes());
                    (0x21, if s.is_ipv4() { 0x11 } else { 0x21 })
                }
                None => (0x20, 0x00),
            };
            h.extend_from_slice(&[command, family]);
            h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
            h.extend_from_slice(&addrs);
            h
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn parse_v1(data: &[u8]) -> Header {
    let Some(end) = data.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return match data.len() >= V1_MAX {
            true => Header::Invalid("a PROXY v1 header longer than 107 bytes"),
            false if data.contains(&b'\n') => Header::Invalid("a PROXY v1 header without CRLF"),
            false => Header::Partial,
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&data[b"PROXY ".len()..end]) else {
        return Header::Invalid("a PROXY v1 header that is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Header::Whole { len, source: None },
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            let ip = |text: &str| -> Option<IpAddr> {
                match v4 {
                    true => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                    false => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
                }
            };
            let port = |text: &str| -> Option<u16> {
                let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                let canonical = text == "0" || !text.starts_with('0');
                plain.then_some(()).filter(|_| canonical).and_then(|_| text.parse().ok())
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(src), Some(_), Some(sport), Some(_)) => {
                    Header::Whole { len, source: Some(SocketAddr::new(src, sport)) }
                }
                _ => Header::Invalid("a PROXY v1 header with a bad address or port"),
            }
        }
        _ => Header::Invalid("a PROXY v1 header of an unknown form"),
    }
}

fn parse_v2(data: &[u8]) -> Header {
    if data.len() < 16 {
        return Header::Partial;
    }
    let (version, command) = (data[12] >> 4, data[12] & 0x0f);
    if version != 2 {
        return Header::Invalid("a PROXY v2 header of another version");
    }
    let len = 16 + u16::from_be_bytes([data[14], data[15]]) as usize;
    if len > V2_MAX {
        return Header::Invalid("a PROXY v2 header longer than 4096 bytes");
    }
    let (family, transport) = (data[13] >> 4, data[13] & 0x0f);
    // The address block each family needs: AF_INET, AF_INET6, AF_UNIX.
    let needed = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Header::Invalid("a PROXY v2 header of an unknown address family"),
    };
    if transport > 2 {
        return Header::Invalid("a PROXY v2 header of an unknown transport");
    }
    if len - 16 < needed {
        return Header::Invalid("a PROXY v2 header too short for its addresses");
    }
    if data.len() < len {
        return Header::Partial;
    }
    let a = &data[16..len];
    let source = match (command, family) {
        (0, _) => None, // LOCAL: the connection's own address stands
        (1, 1) => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (1, 2) => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&a[..16]).expect("16 bytes"));
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[32], a[33]])))
        }
        (1, _) => None, // UNSPEC or UNIX: no IP address to take
        _ => return Header::Invalid("a PROXY v2 header with an unknown command"),
    };
    Header::Whole { len, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7007\r\nhello";
        let source = Some("203.0.113.7:56324".parse().unwrap());
        assert_eq!(parse(h, Proxy::V1), Header::Whole { len: h.len() - 5, source });
        assert_eq!(parse(h, Proxy::Any), Header::Whole { len: h.len() - 5, source });
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        let source = Some("[2001:db8::1]:1".parse().unwrap());
        assert_eq!(parse(h6, Proxy::V1), Header::Whole { len: h6.len(), source });
        let unknown = b"PROXY UNKNOWN whatever follows\r\n";
        assert_eq!(parse(unknown, Proxy::V1), Header::Whole { len: unknown.len(), source: None });
        for cut in 1..h.len() - 5 {
            assert_eq!(parse(&h[..cut], Proxy::Any), Header::Partial, "{cut}");
        }
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
            b"hello\n",
        ] {
            assert!(matches!(parse(bad, Proxy::V1), Header::Invalid(_)), "{bad:?}");
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(
            parse(&long, Proxy::V1),
            Header::Invalid("a PROXY v1 header longer than 107 bytes")
        );
        assert!(matches!(parse(h, Proxy::V2), Header::Invalid(_)), "v1 on a v2 listener");
    }

    /// What `encode` writes, `parse` reads back: the same source, the header's whole length.
    #[test]
    fn encode_then_parse_round_trips() {
        let v4: SocketAddr = "203.0.113.7:56324".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:4433".parse().unwrap();
        let to4: SocketAddr = "192.0.2.1:7007".parse().unwrap();
        let to6: SocketAddr = "[2001:db8::1]:7007".parse().unwrap();
        for version in [Proxy::V1, Proxy::V2] {
            for (s, d, want) in [
                (Some(v4), Some(to4), Some(v4)),
                (Some(v6), Some(to6), Some(v6)),
                (Some(v4), Some(to6), None), // mixed families: UNKNOWN / LOCAL
                (None, None, None),
            ] {
                let h = encode(version, s, d);
                assert_eq!(parse(&h, version), Header::Whole { len: h.len(), source: want });
                assert_eq!(parse(&h, Proxy::Any), Header::Whole { len: h.len(), source: want });
            }
        }
    }

    #[test]
    fn v2_headers() {
        let mut addrs = vec![203, 0, 113, 7, 192, 0, 2, 1];
        addrs.extend_from_slice(&56324u16.to_be_bytes());
        addrs.extend_from_slice(&7007u16.to_be_bytes());
        let h = v2(1, 0x11, &addrs);
        let source = Some("203.0.113.7:56324".parse().unwrap());
        assert_eq!(parse(&h, Proxy::V2), Header::Whole { len: 28, source });
        assert_eq!(
            parse(&[h.as_slice(), b"data"].concat(), Proxy::Any),
            Header::Whole { len: 28, source }
        );
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut], Proxy::Any), Header::Partial, "{cut}");
        }
        let mut tlv = addrs.clone();
        tlv.extend_from_slice(&[0x04, 0x00, 0x02, b'o', b'k']); // a TLV, skipped
        assert_eq!(parse(&v2(1, 0x11, &tlv), Proxy::V2), Header::Whole { len: 33, source });

        let mut six = [0u8; 36];
        six[15] = 1; // ::1
        six[32..34].copy_from_slice(&443u16.to_be_bytes());
        let source = Some("[::1]:443".parse().unwrap());
        assert_eq!(parse(&v2(1, 0x21, &six), Proxy::V2), Header::Whole { len: 52, source });
        assert_eq!(parse(&v2(0, 0x00, &[]), Proxy::V2), Header::Whole { len: 16, source: None });
        assert_eq!(parse(&v2(0, 0x11, &addrs), Proxy::V2), Header::Whole { len: 28, source: None });
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216]), Proxy::V2),
            Header::Whole { len: 232, source: None }
        );

        for bad in [
            v2(2, 0x11, &addrs),     // an unknown command
            v2(1, 0x41, &addrs),     // an unknown family
            v2(1, 0x13, &addrs),     // an unknown transport
            v2(1, 0x21, &addrs),     // too short for IPv6
            v2(1, 0x11, &[0; 5000]), // over the bound
        ] {
            assert!(matches!(parse(&bad, Proxy::V2), Header::Invalid(_)), "{bad:?}");
        }
        let mut v3 = h.clone();
        v3[12] = 0x31;
        assert!(matches!(parse(&v3, Proxy::V2), Header::Invalid(_)));
        assert!(matches!(parse(&h, Proxy::V1), Header::Invalid(_)), "v2 on a v1 listener");
        assert!(matches!(parse(b"\x16\x03\x01", Proxy::Any), Header::Invalid(_)), "TLS first");
    }
}
