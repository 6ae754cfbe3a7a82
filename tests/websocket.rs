//! WebSocket listeners (RFC 6455), from a minimal blocking client written here on the protocol
//! pieces of `ricochet::websocket`, so every byte on the wire is the test's own: each message
//! back whole with its opcode, fragmentation with control frames between fragments, ping/pong,
//! the close handshake, the HTTP answers to requests that are not an upgrade, and the hostile
//! inputs (unmasked frames, a 2^63 length, a 126-byte control frame, invalid UTF-8 split across
//! fragments, an oversized message, a slowloris handshake, a client that never reads); a chat
//! room shared by WebSocket and TCP members; close 1001 on a drain. `tests/ws_client.py` checks
//! the same server from Python's independent `websockets` library.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use ricochet::websocket::{self as ws, opcode};
use ricochet::{Config, ListenSpec};
use util::{connect, read_to_eof, wait_for};

fn server(specs: Vec<ListenSpec>, mutate: impl FnOnce(&mut Config)) -> ricochet::Handle {
    let mut config = Config { listeners: specs, ..Config::default() };
    mutate(&mut config);
    ricochet::spawn(config).expect("spawn")
}

fn ws_echo(mutate: impl FnOnce(&mut Config)) -> (ricochet::Handle, SocketAddr) {
    let server = server(vec![ListenSpec::ws("127.0.0.1:0".parse().unwrap())], mutate);
    let addr = server.first("ws").unwrap();
    (server, addr)
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads an HTTP response head (to the blank line).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read the head"), 1, "EOF in {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A connected, upgraded client.
fn open(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(upgrade_request("").as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    assert!(head.contains(&format!("Sec-WebSocket-Accept: {}\r\n", ws::accept_key(KEY.as_bytes()))));
    stream
}

/// A masked client frame.
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ws::frame(&mut out, fin, op, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
    out
}

/// One server frame: (fin, opcode, payload). Server frames must be unmasked.
fn read_frame(stream: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    let mut h = [0u8; 2];
    stream.read_exact(&mut h).expect("a frame header");
    assert_eq!(h[0] & 0x70, 0, "reserved bits");
    assert_eq!(h[1] & 0x80, 0, "a server frame is never masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).unwrap();
    (h[0] & 0x80 != 0, h[0] & 0x0f, payload)
}

/// One whole message (fragments joined; control frames in between are returned first if
/// `controls` is given, else not expected).
fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let (mut fin, op, mut payload) = read_frame(stream);
    assert!(op == opcode::TEXT || op == opcode::BINARY || op == opcode::CLOSE, "opcode {op}");
    while !fin {
        let (f, cont, more) = read_frame(stream);
        assert_eq!(cont, opcode::CONTINUATION);
        payload.extend_from_slice(&more);
        fin = f;
    }
    (op, payload)
}

/// Expects the server's close frame with `code`, then its end of stream.
fn expect_close(stream: &mut TcpStream, code: u16) {
    let (fin, op, payload) = read_frame(stream);
    assert!(fin);
    assert_eq!(op, opcode::CLOSE, "expected a close, got {payload:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
    assert!(read_to_eof(stream).is_empty());
}

#[test]
fn echo_returns_each_message_whole_with_its_opcode() {
    let (server, addr) = ws_echo(|_| {});
    let mut c = open(addr);
    let big = util::payload(70_000, 1);
    let cases: Vec<(u8, Vec<u8>)> = vec![
        (opcode::TEXT, b"hello".to_vec()),
        (opcode::BINARY, vec![0, 1, 2, 255]),
        (opcode::TEXT, Vec::new()),
        (opcode::BINARY, big.clone()),
        (opcode::TEXT, "κόσμε €".as_bytes().to_vec()),
    ];
    for (op, payload) in &cases {
        c.write_all(&frame(true, *op, payload)).unwrap();
        assert_eq!(read_message(&mut c), (*op, payload.clone()));
    }
    // Fragmented, with a ping between the fragments: the pong comes first (or between), the
    // message whole after.
    let mut wire = frame(false, opcode::TEXT, b"frag-");
    wire.extend(frame(true, opcode::PING, b"are you there"));
    wire.extend(frame(false, opcode::CONTINUATION, b"men"));
    wire.extend(frame(true, opcode::CONTINUATION, b"ted"));
    c.write_all(&wire).unwrap();
    let mut text = Vec::new();
    let mut pongs = 0;
    loop {
        let (fin, op, payload) = read_frame(&mut c);
        match op {
            opcode::PONG => {
                assert_eq!(payload, b"are you there");
                pongs += 1;
            }
            opcode::TEXT | opcode::CONTINUATION => {
                assert_eq!(op == opcode::TEXT, text.is_empty());
                text.extend(payload);
                if fin {
                    break;
                }
            }
            other => panic!("opcode {other}"),
        }
    }
    assert_eq!((text.as_slice(), pongs), (&b"frag-mented"[..], 1));
    // Close with a code: it comes back, then the end of stream.
    c.write_all(&frame(true, opcode::CLOSE, &4000u16.to_be_bytes())).unwrap();
    expect_close(&mut c, 4000);
    wait_for("the connection to close", || server.stats().active == 0);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.ws_handshakes, stats.ws_failures, stats.ws_protocol_errors), (1, 0, 0));
    assert_eq!((stats.ws_messages_in, stats.ws_messages_out), (6, 6));
    let payload_bytes: u64 = cases.iter().map(|(_, p)| p.len() as u64).sum::<u64>() + 11;
    assert_eq!((stats.bytes_in, stats.bytes_out), (payload_bytes, payload_bytes));
}

/// Each hostile frame fails the connection with its code, after the good message before it
/// was echoed.
#[test]
fn protocol_errors_close_with_the_right_code() {
    let (server, addr) = ws_echo(|c| c.max_message = 1000);
    let unmasked = [0x81u8, 0x02, b'h', b'i'];
    let mut huge = vec![0x82u8, 0xff];
    huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    let long_ping = frame(true, opcode::PING, &[b'p'; 126]);
    let mut over = vec![0x82u8, 0x80 | 126];
    over.extend_from_slice(&2000u16.to_be_bytes());
    over.extend_from_slice(&[1, 2, 3, 4]); // the header alone: its length is refused at once
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked.to_vec(), ws::close::PROTOCOL),
        ("2^63 length", huge, ws::close::PROTOCOL),
        ("126-byte ping", long_ping, ws::close::PROTOCOL),
        ("fragmented ping", frame(false, opcode::PING, b"x"), ws::close::PROTOCOL),
        ("reserved opcode", frame(true, 0x3, b"x"), ws::close::PROTOCOL),
        (
            "reserved bit",
            {
                let mut f = frame(true, opcode::TEXT, b"x");
                f[0] |= 0x40;
                f
            },
            ws::close::PROTOCOL,
        ),
        ("continuation of nothing", frame(true, opcode::CONTINUATION, b"x"), ws::close::PROTOCOL),
        ("over max-message", over, ws::close::TOO_BIG),
        ("bad close code", frame(true, opcode::CLOSE, &1005u16.to_be_bytes()), ws::close::PROTOCOL),
        ("text not UTF-8", frame(true, opcode::TEXT, &[b'a', 0xff]), ws::close::INVALID_DATA),
    ];
    for (name, bad, code) in &cases {
        let mut c = open(addr);
        c.write_all(&frame(true, opcode::TEXT, b"fine")).unwrap();
        assert_eq!(read_message(&mut c), (opcode::TEXT, b"fine".to_vec()), "{name}");
        c.write_all(bad).unwrap();
        expect_close(&mut c, *code);
    }
    // Good small messages and an invalid one in one write: the good come back (answered in
    // place), then the invalid one fails the connection as it would alone.
    let mut c = open(addr);
    let mut wire = frame(true, opcode::TEXT, b"first");
    wire.extend(frame(true, opcode::BINARY, b"second"));
    wire.extend(frame(true, opcode::TEXT, b"twenty bytes, \xff: no"));
    c.write_all(&wire).unwrap();
    assert_eq!(read_message(&mut c), (opcode::TEXT, b"first".to_vec()));
    assert_eq!(read_message(&mut c), (opcode::BINARY, b"second".to_vec()));
    expect_close(&mut c, ws::close::INVALID_DATA);
    // Invalid UTF-8 split across fragments fails at the fragment that makes it invalid, before
    // the message's last fragment is sent: 0xF4 then 0x90 can never be a character.
    let mut c = open(addr);
    c.write_all(&frame(false, opcode::TEXT, &[b'o', b'k', 0xf4])).unwrap();
    let (fin, op, payload) = read_frame(&mut c);
    assert_eq!((fin, op, payload.as_slice()), (false, opcode::TEXT, &[b'o', b'k', 0xf4][..]));
    c.write_all(&frame(false, opcode::CONTINUATION, &[0x90])).unwrap();
    expect_close(&mut c, ws::close::INVALID_DATA);
    wait_for("every connection to close", || server.stats().active == 0);
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.ws_protocol_errors, cases.len() as u64 + 2);
    assert_eq!(stats.ws_handshakes, cases.len() as u64 + 2);
}

/// Requests that are not a WebSocket upgrade get a plain HTTP answer and a close; only the
/// refusals count as failures (a GET of `/` is answered, not failed).
#[test]
fn requests_that_are_not_an_upgrade_get_an_http_answer() {
    let (server, addr) = ws_echo(|_| {});
    let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(9000));
    let cases: Vec<(String, &str, &str)> = vec![
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(), "HTTP/1.1 200 OK\r\n", "WebSocket echo"),
        (
            "GET /x HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "HTTP/1.1 426 Upgrade Required\r\n",
            "Upgrade: websocket",
        ),
        (
            upgrade_request("").replace("Version: 13", "Version: 8"),
            "HTTP/1.1 426 Upgrade Required\r\n",
            "Sec-WebSocket-Version: 13",
        ),
        (upgrade_request("").replace(KEY, "short"), "HTTP/1.1 400 Bad Request\r\n", ""),
        ("POST / HTTP/1.1\r\n\r\n".into(), "HTTP/1.1 400 Bad Request\r\n", ""),
        ("\x16\x03\x01 not http\r\n\r\n".into(), "HTTP/1.1 400 Bad Request\r\n", ""),
        (big, "HTTP/1.1 431 Request Header Fields Too Large\r\n", ""),
    ];
    for (request, status, has) in &cases {
        let mut c = connect(addr);
        c.write_all(request.as_bytes()).unwrap();
        let answer = String::from_utf8(read_to_eof(&c)).unwrap();
        assert!(answer.starts_with(status), "{request:.40}: {answer}");
        assert!(answer.contains(has), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{answer}");
        let _ = c.flush();
    }
    wait_for("every connection to close", || server.stats().active == 0);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.ws_failures, stats.ws_handshakes), (cases.len() as u64 - 1, 0));
}

/// A client that sends half a request head and nothing more is closed at the handshake timeout
/// (counted as a failure); the server serves others meanwhile.
#[test]
fn a_slowloris_handshake_is_cut_off() {
    let (server, addr) = ws_echo(|c| c.handshake_timeout = Duration::from_millis(300));
    let mut slow = connect(addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
    let mut other = open(addr);
    other.write_all(&frame(true, opcode::BINARY, b"still here")).unwrap();
    assert_eq!(read_message(&mut other), (opcode::BINARY, b"still here".to_vec()));
    assert!(read_to_eof(&slow).is_empty());
    wait_for("the failure to be counted", || server.stats().ws_failures == 1);
    drop(other);
    server.shutdown().unwrap();
}

/// A client that sends half a request head and then its end of stream is closed at once, not at
/// the handshake timeout (two minutes here), and counted as a failure; whether the end comes
/// with the bytes or after them.
#[test]
fn a_client_that_leaves_mid_handshake_is_closed_at_once() {
    let (server, addr) = ws_echo(|c| c.handshake_timeout = Duration::from_secs(120));
    for pause in [false, true] {
        let mut half = connect(addr);
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
        if pause {
            std::thread::sleep(Duration::from_millis(50)); // the bytes alone first
        }
        half.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = half.read_to_end(&mut rest); // its end (or a reset), long before two minutes
        assert!(rest.is_empty(), "{rest:?}");
    }
    wait_for("both failures counted", || server.stats().ws_failures == 2);
    assert_eq!(server.stats().active, 0);
}

/// A client that writes and never reads: the server stops reading it at its cap and keeps
/// serving others; once the client reads, every message comes back exact and in order. With
/// large messages (through the echo's buffers) and small ones (answered in place until the
/// socket refuses, then through the echo's buffers).
#[test]
fn a_client_that_never_reads_is_held_at_the_cap() {
    for size in [4096, 100] {
        a_client_that_never_reads_is_held(size);
    }
}

fn a_client_that_never_reads_is_held(size: usize) {
    let (server, addr) = ws_echo(|c| {
        c.max_pending = 64 * 1024;
        c.max_message = 64 * 1024;
        c.send_buffer = Some(64 * 1024);
        c.recv_buffer = Some(64 * 1024);
    });
    let mut hog = open(addr);
    hog.set_nonblocking(true).unwrap();
    let msg = util::payload(size, 7);
    let one = frame(true, opcode::BINARY, &msg);
    let limit = 80_000_000 / one.len(); // far past what the buffers on the way can hold
    let mut sent = 0usize;
    let mut wire = Vec::new();
    // Write until the socket refuses for a while: the server stopped reading.
    let mut refused = 0;
    while refused < 50 && sent < limit {
        if wire.is_empty() {
            wire = one.clone();
        }
        match hog.write(&wire) {
            Ok(n) => {
                wire.drain(..n);
                if wire.is_empty() {
                    sent += 1;
                }
                refused = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < limit, "the server kept reading a client that never reads ({size} B)");
    let mut other = open(addr);
    other.write_all(&frame(true, opcode::TEXT, b"served")).unwrap();
    assert_eq!(read_message(&mut other), (opcode::TEXT, b"served".to_vec()));
    // Now read everything back, finishing the partial frame on the way.
    hog.set_nonblocking(false).unwrap();
    let writer_rest = wire.clone();
    let mut writer = hog.try_clone().unwrap();
    let finisher = std::thread::spawn(move || writer.write_all(&writer_rest).unwrap());
    let total = sent + usize::from(!wire.is_empty());
    for i in 0..total {
        assert_eq!(read_message(&mut hog), (opcode::BINARY, msg.clone()), "message {i} ({size} B)");
    }
    finisher.join().unwrap();
    server.shutdown().unwrap();
}

/// The idle timeout closes a silent WebSocket connection (close 1001) but not one whose small
/// messages keep coming, though the framing answers those itself and the echo never sees them.
#[test]
fn idle_timeout_spares_a_talking_websocket() {
    let (server, addr) = ws_echo(|c| c.idle_timeout = Some(Duration::from_millis(300)));
    let mut idle = open(addr);
    let mut active = open(addr);
    let active = std::thread::scope(|s| {
        let talker = s.spawn(move || {
            // A message every 50 ms for 1.2 s: four idle timeouts' worth.
            for i in 0..24 {
                let text = format!("ping {i}");
                active.write_all(&frame(true, opcode::TEXT, text.as_bytes())).unwrap();
                assert_eq!(read_message(&mut active), (opcode::TEXT, text.into_bytes()));
                std::thread::sleep(Duration::from_millis(50));
            }
            active
        });
        expect_close(&mut idle, 1001);
        talker.join().unwrap()
    });
    wait_for("the idle close to be counted", || server.stats().idle_timeouts == 1);
    assert_eq!(server.stats().closed, 1, "only the idle one closed");
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.ws_messages_in, stats.ws_messages_out), (24, 24));
    let bytes: u64 = (0..24).map(|i| format!("ping {i}").len() as u64).sum();
    assert_eq!((stats.bytes_in, stats.bytes_out), (bytes, bytes));
    drop(active);
}

/// WebSocket and TCP members in one room: a text message is a line, a line is a text message
/// without its `\n`; binary is refused with close 1003.
#[test]
fn chat_room_shared_by_websocket_and_tcp_members() {
    let server = server(
        vec![
            ListenSpec::ws_chat("127.0.0.1:0".parse().unwrap()).in_room("lobby"),
            ListenSpec::chat("127.0.0.1:0".parse().unwrap()).in_room("lobby"),
        ],
        |_| {},
    );
    let mut web = open(server.first("chat+ws").unwrap());
    let mut tcp = connect(server.first("chat").unwrap());
    wait_for("both members", || server.stats().chat_members == 2);
    tcp.write_all(b"from tcp\n").unwrap();
    assert_eq!(read_message(&mut web), (opcode::TEXT, b"from tcp".to_vec()));
    web.write_all(&frame(true, opcode::TEXT, b"from the web")).unwrap();
    web.write_all(&frame(true, opcode::TEXT, b"with its own newline\n")).unwrap();
    let mut got = vec![0; "from the web\nwith its own newline\n".len()];
    tcp.read_exact(&mut got).unwrap();
    assert_eq!(got, b"from the web\nwith its own newline\n");
    web.write_all(&frame(true, opcode::BINARY, b"\x00")).unwrap();
    expect_close(&mut web, ws::close::UNSUPPORTED);
    drop(tcp);
    server.shutdown().unwrap();
}

/// A drain tells WebSocket clients it is going away (close 1001).
#[test]
fn a_drain_closes_with_going_away() {
    let (server, addr) = ws_echo(|c| c.drain_grace = Duration::from_millis(50));
    let mut c = open(addr);
    c.write_all(&frame(true, opcode::TEXT, b"x")).unwrap();
    assert_eq!(read_message(&mut c), (opcode::TEXT, b"x".to_vec()));
    server.stopper().drain();
    expect_close(&mut c, ws::close::GOING_AWAY);
    server.shutdown().unwrap();
}

/// Python's `websockets` (an independent, strict client) over ws and wss: text, binary,
/// fragmented, ping, close codes, a large message. Needs `pip install websockets`; CI installs
/// it, and there its absence is a failure.
#[test]
fn python_websockets_client_over_ws_and_wss() {
    let have = Command::new("python3").args(["-c", "import websockets"]).status();
    if !have.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI needs python3 -m pip install websockets");
        eprintln!("skipped: python3 has no `websockets` (pip install websockets)");
        return;
    }
    let server = server(
        vec![
            ListenSpec::ws("127.0.0.1:0".parse().unwrap()),
            ListenSpec::wss("127.0.0.1:0".parse().unwrap()),
        ],
        |_| {},
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_client.py");
    let ca = server.tls_cert().unwrap().0.display().to_string();
    for url in [
        format!("ws://{}/any/path", server.first("ws").unwrap()),
        format!("wss://localhost:{}/", server.first("wss").unwrap().port()),
    ] {
        let out = Command::new("python3").args([script, &url, &ca]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stdout.starts_with("ok"), "{url}: {stdout}{stderr}");
    }
    wait_for("the clients to close", || server.stats().active == 0);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.ws_handshakes, stats.ws_failures, stats.ws_protocol_errors), (2, 0, 0));
    assert_eq!(stats.tls_handshakes, 1);
}

/// Plain HTTP to a wss port is a failed TLS handshake: closed, counted, and nothing else hurt.
#[test]
fn plain_bytes_to_a_wss_port_are_refused() {
    let server = server(vec![ListenSpec::wss("127.0.0.1:0".parse().unwrap())], |_| {});
    let mut c = connect(server.first("wss").unwrap());
    c.write_all(upgrade_request("").as_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest); // a TLS alert, then the end (or a reset)
    assert!(!String::from_utf8_lossy(&rest).contains("101"), "{rest:?}");
    wait_for("the failure to be counted", || server.stats().tls_failures == 1);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.ws_handshakes, stats.tls_handshakes), (0, 0));
}

/// A connection accepted after the server was idle longer than the handshake timeout gets the
/// whole timeout for its handshake (the deadline once came from the last clocked turn, so such
/// a connection was closed at once, for TLS too).
#[test]
fn a_handshake_after_a_quiet_spell_gets_its_full_time() {
    let server = server(
        vec![
            ListenSpec::ws("127.0.0.1:0".parse().unwrap()),
            ListenSpec::tls("127.0.0.1:0".parse().unwrap()),
        ],
        |c| c.handshake_timeout = Duration::from_millis(300),
    );
    // The quiet spell is the condition under test, not a wait for an event.
    std::thread::sleep(Duration::from_millis(600));
    // Connected, accepted, and only then the request: the deadline's turn has come and gone.
    let mut c = connect(server.first("ws").unwrap());
    wait_for("the accept", || server.stats().accepted == 1);
    c.write_all(upgrade_request("").as_bytes()).unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    c.write_all(&frame(true, opcode::TEXT, b"on time")).unwrap();
    assert_eq!(read_message(&mut c), (opcode::TEXT, b"on time".to_vec()));
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.ws_handshakes, stats.ws_failures), (1, 0));
}

/// A real browser: headless Chromium runs a page whose `new WebSocket(...)` talks to the ws
/// and wss echo (text and binary, checked), then reports through a chat room over WebSocket,
/// which the test reads as a TCP member of the same room (an event, not a wait). Needs
/// `chromium` (Debian); CI installs it, and there its absence is a failure.
#[test]
fn a_real_browser_over_ws_and_wss() {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        assert!(std::env::var_os("CI").is_none(), "CI needs chromium (apt-get install chromium)");
        eprintln!("skipped: no chromium to run the browser check");
        return;
    };
    let server = server(
        vec![
            ListenSpec::ws("127.0.0.1:0".parse().unwrap()),
            ListenSpec::wss("127.0.0.1:0".parse().unwrap()),
            ListenSpec::ws_chat("127.0.0.1:0".parse().unwrap()).in_room("report"),
            ListenSpec::chat("127.0.0.1:0".parse().unwrap()).in_room("report"),
        ],
        |_| {},
    );
    let mut report = connect(server.first("chat").unwrap());
    wait_for("the reporting member", || server.stats().chat_members == 1);
    let ws = server.first("ws").unwrap();
    let wss = server.first("wss").unwrap().port();
    let room = server.first("chat+ws").unwrap();
    let page = format!(
        r#"<!doctype html><script>
const check = (url) => new Promise((done) => {{
  const ws = new WebSocket(url); ws.binaryType = "arraybuffer"; const got = [];
  ws.onopen = () => {{ ws.send("hello, κόσμε"); ws.send(new Uint8Array([0, 1, 255]).buffer); }};
  ws.onmessage = (e) => {{
    got.push(typeof e.data === "string" ? "text:" + e.data : "binary:" + Array.from(new Uint8Array(e.data)).join(","));
    if (got.length === 2) ws.close(4002, "done");
  }};
  ws.onclose = (e) => done(url.split(":")[0] + " " + got.join(" ") + " close:" + e.code);
  ws.onerror = () => done(url + " error");
}});
(async () => {{
  const lines = [await check("ws://{ws}/browser"), await check("wss://localhost:{wss}/browser")];
  const out = new WebSocket("ws://{room}/");
  out.onopen = () => {{ lines.forEach((l) => out.send(l)); out.send("end"); }};
}})();
</script>"#
    );
    let dir = std::env::temp_dir().join(format!("ricochet-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("page.html");
    std::fs::write(&path, page).unwrap();
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", path.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with("end\n") {
        let n = report.read(&mut buf).expect("the browser's report");
        assert!(n > 0, "the room closed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        text,
        "ws text:hello, κόσμε binary:0,1,255 close:4002\n\
         wss text:hello, κόσμε binary:0,1,255 close:4002\nend\n"
    );
    server.shutdown().unwrap();
}

/// A fault plan on a WebSocket listener acts on the bytes under the framing, counted from the
/// first byte after the upgrade's answer (which goes out unshaped): `close-after=7` lets
/// exactly one 5-byte message's frame (2 + 5 bytes) out, then FIN with no close frame;
/// `stall-after=0` gives a finished upgrade and then silence; `corrupt-after=0` flips the first
/// frame's first byte, which a client sees as reserved bits and a reserved opcode.
#[test]
fn fault_plans_act_under_the_framing() {
    let listen =
        |plan: &str| ricochet::url::parse_listen(&format!("ws://127.0.0.1:0?{plan}")).unwrap();
    let plans = ["close-after=7", "stall-after=0", "corrupt-after=0", "latency=50ms"];
    let urls: Vec<_> = plans.iter().map(|p| listen(p)).collect();
    let server = server(urls.iter().map(|u| u.spec.clone()).collect(), |c| {
        c.faults = urls.iter().map(|u| u.plan.clone()).collect();
    });
    let addr = |i: usize| server.local_addrs()[i].addr().unwrap();

    let mut c = open(addr(0));
    c.write_all(&frame(true, opcode::TEXT, b"hello")).unwrap();
    c.write_all(&frame(true, opcode::TEXT, b"world")).unwrap();
    assert_eq!(read_to_eof(&c), b"\x81\x05hello", "one frame, then the end");

    let mut c = open(addr(1));
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    c.write_all(&frame(true, opcode::TEXT, b"anyone?")).unwrap();
    let e = c.read(&mut [0u8; 16]).unwrap_err();
    assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));

    let mut c = open(addr(2));
    c.write_all(&frame(true, opcode::BINARY, b"abc")).unwrap();
    let mut got = [0u8; 5];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, [0x82 ^ 0xff, 3, b'a', b'b', b'c']);

    let mut c = open(addr(3));
    c.write_all(&frame(true, opcode::TEXT, b"later")).unwrap();
    assert_eq!(read_message(&mut c), (opcode::TEXT, b"later".to_vec()));
    let stats = server.stats();
    assert_eq!((stats.faults_closed_after, stats.faults_stalled), (1, 1));
    assert_eq!((stats.faults_corrupted, stats.faults_delayed), (1, 1));
    assert_eq!((stats.ws_handshakes, stats.ws_failures), (4, 0));
    server.shutdown().unwrap();
}

/// A plan set while a WebSocket connection is open goes under its framing, counting the bytes
/// written under it since the upgrade (here 3: one echoed frame), and removing it makes the
/// connection plain again, still framed.
#[test]
fn a_plan_set_at_run_time_goes_under_the_framing() {
    let (server, addr) = ws_echo(|_| {});
    let mut plain = open(addr);
    plain.write_all(&frame(true, opcode::TEXT, b"a")).unwrap();
    assert_eq!(read_message(&mut plain), (opcode::TEXT, b"a".to_vec()));
    let mut cut = open(addr);
    cut.write_all(&frame(true, opcode::TEXT, b"x")).unwrap();
    assert_eq!(read_message(&mut cut), (opcode::TEXT, b"x".to_vec()));
    // Both connections wrote 3 bytes under the framing: an end at byte 3 happens at once.
    server.set_faults(0, Some(ricochet::Faults::parse("close-after=3").unwrap())).unwrap();
    assert!(read_to_eof(&cut).is_empty());
    server.set_faults(0, None).unwrap();
    // The first connection's end happened too; a new one is plain and framed.
    assert!(read_to_eof(&plain).is_empty());
    let mut fresh = open(addr);
    fresh.write_all(&frame(true, opcode::BINARY, b"after")).unwrap();
    assert_eq!(read_message(&mut fresh), (opcode::BINARY, b"after".to_vec()));
    assert_eq!(server.stats().faults_closed_after, 2);
    server.shutdown().unwrap();
}

/// A client that sends its close and then resets instead of waiting for ours (RFC 6455 asks it
/// to wait; `--reconnect-every` clients and many libraries do not) ended the session cleanly:
/// not a reset. One that resets with no close is one.
#[test]
fn a_reset_after_the_clients_close_is_not_counted_as_a_reset() {
    let (server, addr) = ws_echo(|_| {});
    let reset = |c: TcpStream| {
        socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
        drop(c); // RST
    };
    let mut polite = open(addr);
    polite.write_all(&frame(true, opcode::CLOSE, &1000u16.to_be_bytes())).unwrap();
    let (fin, op, payload) = read_frame(&mut polite);
    assert_eq!((fin, op, payload), (true, opcode::CLOSE, 1000u16.to_be_bytes().to_vec()));
    reset(polite);
    wait_for("the closed session to be closed", || server.stats().closed == 1);
    assert_eq!(server.stats().resets, 0);

    let mut abrupt = open(addr);
    abrupt.write_all(&frame(true, opcode::TEXT, b"x")).unwrap();
    assert_eq!(read_message(&mut abrupt), (opcode::TEXT, b"x".to_vec()));
    reset(abrupt);
    wait_for("the reset connection to be closed", || server.stats().closed == 2);
    assert_eq!(server.stats().resets, 1);
    server.shutdown().unwrap();
}
