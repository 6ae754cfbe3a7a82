//! Listeners with `proxy=`: the PROXY protocol header is taken before anything else sees a byte,
//! whatever reads it arrives in; what follows it is served as the listener's connection (echo,
//! chat, WebSocket); a missing, malformed, wrong-version or never-finished header closes the
//! connection, echoes nothing and counts `proxy_refused`. `tests/proxy_client.py` checks the same
//! with headers built by an independent implementation (PyPI's `proxy-protocol`), TLS included.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use ricochet::proxy::{Proxy, V2_SIGNATURE};
use ricochet::{Config, ListenSpec};
use util::{connect, read_to_eof, wait_for, ServerProcess};

fn spawn(specs: Vec<ListenSpec>, mutate: impl FnOnce(&mut Config)) -> ricochet::Handle {
    let mut config = Config { listeners: specs, ..Config::default() };
    mutate(&mut config);
    ricochet::spawn(config).expect("spawn")
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A v2 PROXY header for a TCP/IPv4 client.
fn v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&7007u16.to_be_bytes());
    h
}

/// Whatever came back before the end (or a reset).
fn read_all(mut c: &TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = c.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// The header and the data, in one write and a byte at a time: the echo is exactly the data.
#[test]
fn the_header_is_taken_and_the_rest_echoed_however_it_arrives() {
    let server = spawn(
        vec![
            ListenSpec::tcp(local()).with_proxy(Proxy::V1),
            ListenSpec::tcp(local()).with_proxy(Proxy::Any),
        ],
        |_| {},
    );
    let (v1_addr, any_addr) =
        (server.local_addrs()[0].addr().unwrap(), server.local_addrs()[1].addr().unwrap());
    let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7007\r\n";
    let data = util::payload(100_000, 7);

    let c = connect(v1_addr);
    (&c).write_all(&[header.as_slice(), &data].concat()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&c), data);

    for whole in [header.to_vec(), v2([203, 0, 113, 7], 56324)] {
        let mut c = connect(any_addr);
        c.set_nodelay(true).unwrap();
        for byte in whole.iter().chain(b"byte by byte") {
            c.write_all(&[*byte]).unwrap();
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&c), b"byte by byte");
    }
    wait_for("every connection closed", || server.stats().closed == 3);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.proxy_refused, stats.resets), (0, 0));
    assert_eq!(stats.bytes_in, data.len() as u64 + 24, "the headers are not echo traffic");
}

/// No header, a malformed one, the wrong version, an end of stream inside one, and one that
/// never finishes: each is closed with nothing echoed and counted once.
#[test]
fn a_missing_or_bad_header_is_refused() {
    let server = spawn(
        vec![
            ListenSpec::tcp(local()).with_proxy(Proxy::V1),
            ListenSpec::tcp(local()).with_proxy(Proxy::V2),
        ],
        |c| c.handshake_timeout = Duration::from_millis(300),
    );
    let (v1_addr, v2_addr) =
        (server.local_addrs()[0].addr().unwrap(), server.local_addrs()[1].addr().unwrap());
    let cases: [(SocketAddr, Vec<u8>); 4] = [
        (v1_addr, b"hello, no header\n".to_vec()),
        (v1_addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\necho me".to_vec()),
        (v2_addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\necho me".to_vec()),
        (v1_addr, b"PROXY TCP4 1.2.3".to_vec()), // then the end of stream
    ];
    for (i, (addr, bytes)) in cases.iter().enumerate() {
        let c = connect(*addr);
        // The server may close before all is written or the half-close is sent.
        let _ = (&c).write_all(bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        assert_eq!(read_all(&c), b"", "case {i}");
        wait_for("the refusal to be counted", || server.stats().proxy_refused == i as u64 + 1);
    }
    // Half a header, then silence: refused at the handshake timeout.
    let c = connect(v2_addr);
    (&c).write_all(&v2([1, 2, 3, 4], 5)[..10]).unwrap();
    assert_eq!(read_all(&c), b"");
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.proxy_refused, stats.closed, stats.bytes_out), (5, 5, 0));
}

/// A chat member's `/whoami` is the header's source; a WebSocket listener upgrades after the
/// header.
#[test]
fn chat_and_websocket_behind_the_header() {
    let server = spawn(
        vec![
            ListenSpec::chat(local()).with_proxy(Proxy::V2),
            ListenSpec::ws(local()).with_proxy(Proxy::V1),
        ],
        |_| {},
    );
    let (chat, ws) =
        (server.local_addrs()[0].addr().unwrap(), server.local_addrs()[1].addr().unwrap());
    let mut c = connect(chat);
    c.write_all(&[v2([198, 51, 100, 9], 40000).as_slice(), b"/whoami\n"].concat()).unwrap();
    let mut line = [0u8; 64];
    let want = b"* you are unnamed, from 198.51.100.9:40000\n";
    c.read_exact(&mut line[..want.len()]).unwrap();
    assert_eq!(&line[..want.len()], want);
    drop(c);

    let mut c = connect(ws);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "PROXY TCP6 2001:db8::7 2001:db8::1 4433 80\r\nGET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    c.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    drop(c);
    wait_for("both closed", || server.stats().closed == 2);
    assert_eq!(server.stats().ws_handshakes, 1);
}

/// Headers from an independent implementation (Python's `proxy-protocol`), TLS after one, and
/// the stopped line's count. CI installs the package; here its absence skips.
#[test]
fn headers_from_an_independent_implementation() {
    let have = Command::new("python3").args(["-c", "import proxyprotocol"]).status();
    if !have.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI needs python3 -m pip install proxy-protocol");
        eprintln!("skipped: python3 has no `proxyprotocol` (pip install proxy-protocol)");
        return;
    }
    let server = ServerProcess::start(&[
        "--listen",
        "tcp://127.0.0.1:0?proxy=v1",
        "--listen",
        "tcp://127.0.0.1:0?proxy=v2",
        "--listen",
        "chat://127.0.0.1:0?proxy=any",
        "--listen",
        "tls://127.0.0.1:0?proxy=v2",
    ]);
    assert_eq!(server.ready["listeners"][1]["proxy"], "v2");
    let ready = std::env::temp_dir().join(format!("ricochet-proxy-{}.json", std::process::id()));
    std::fs::write(&ready, server.ready.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy_client.py");
    let out = Command::new("python3").args([script, ready.to_str().unwrap()]).output().unwrap();
    std::fs::remove_file(&ready).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.signal(libc::SIGTERM);
    let (code, rest, _) = server.wait();
    assert_eq!(code, 0);
    let stopped: serde_json::Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(stopped["proxy_refused"], 1, "{stopped}");
    assert_eq!(stopped["tls_handshakes"], 1, "{stopped}");
}
