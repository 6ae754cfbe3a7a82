//! TLS listeners, observed from Python's ssl module (OpenSSL: a TLS stack independent of the
//! server's rustls; `tests/tls_client.py`) and from a rustls client: exact echo over TLS 1.3 and
//! 1.2, close_notify as the half-close, many clients at once, session resumption, plain bytes and
//! silent clients refused, a certificate made by `openssl req`, a slow reader's bounded memory,
//! faults and a chat room over TLS.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ricochet::{Config, ListenSpec};
use util::{connect, run_to_exit, wait_for, ServerProcess};

fn tls_server(mutate: impl FnOnce(&mut Config)) -> ricochet::Handle {
    let mut config = Config {
        listeners: vec![ListenSpec::tls("127.0.0.1:0".parse().unwrap())],
        ..Config::default()
    };
    mutate(&mut config);
    ricochet::spawn(config).expect("spawn")
}

/// Runs `tests/tls_client.py MODE ARGS...`; returns its "ok" line.
fn python(mode: &str, addr: SocketAddr, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(mode)
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{mode}: {stdout}{stderr}");
    assert!(stdout.starts_with("ok"), "{mode}: {stdout}{stderr}");
    stdout
}

fn ca(server: &ricochet::Handle) -> String {
    server.tls_cert().unwrap().0.display().to_string()
}

/// 1 B to 4 MiB, each on its own connection, exact, over TLS 1.3 and 1.2 (the version checked).
#[test]
fn exact_echo_over_tls13_and_tls12() {
    let server = tls_server(|_| {});
    let (addr, ca) = (server.tls_addr().unwrap(), ca(&server));
    let sizes = ["1", "100", "16384", "65537", "4194304"];
    for version in ["1.3", "1.2"] {
        let args: Vec<&str> = [ca.as_str(), version].into_iter().chain(sizes).collect();
        python("echo", addr, &args);
    }
    let stats = server.shutdown().unwrap();
    let total: u64 = [1, 100, 16384, 65537, 4194304].iter().sum::<u64>() * 2;
    assert_eq!((stats.bytes_in, stats.bytes_out), (total, total));
    assert_eq!((stats.tls_handshakes, stats.tls_failures), (10, 0));
}

/// The client's close_notify is the half-close: everything sent before it comes back, then the
/// server's own close_notify.
#[test]
fn close_notify_gets_everything_back() {
    let server = tls_server(|_| {});
    python("half-close", server.tls_addr().unwrap(), &[&ca(&server), "1000000"]);
    wait_for("the close", || server.stats().closed == 1);
    assert_eq!(server.stats().resets, 0);
}

/// 200 TLS clients at once, each echoed exactly.
#[test]
fn two_hundred_concurrent_clients() {
    let server = tls_server(|_| {});
    python("many", server.tls_addr().unwrap(), &[&ca(&server), "200"]);
    wait_for("200 handshakes", || server.stats().tls_handshakes == 200);
}

/// A second connection resumes the first one's session, and it is counted.
#[test]
fn sessions_resume() {
    let server = tls_server(|_| {});
    python("resume", server.tls_addr().unwrap(), &[&ca(&server)]);
    wait_for("two handshakes", || server.stats().tls_handshakes == 2);
    assert_eq!(server.stats().tls_resumed, 1);
}

/// Plain bytes get a TLS alert and the end; a client that never starts its handshake is closed at
/// the timeout; both are counted as failures, and neither disturbs a TLS client.
#[test]
fn plain_bytes_and_silent_clients_are_refused() {
    let server = tls_server(|c| c.handshake_timeout = Duration::from_millis(1500));
    let addr = server.tls_addr().unwrap();
    let mut silent = connect(addr);
    python("plain", addr, &[]);
    python("echo", addr, &[&ca(&server), "1.3", "1000"]);
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).expect("closed at the handshake timeout, not reset");
    assert!(rest.is_empty(), "{rest:?}");
    wait_for("both failures counted", || server.stats().tls_failures == 2);
    let stats = server.stats();
    assert_eq!((stats.tls_handshakes, stats.resets), (1, 0), "{stats:?}");
}

/// A client that ends its stream in the middle of the handshake, with no alert (rustls's client
/// does that when it rejects our certificate: a ChangeCipherSpec record, then its end), is
/// closed at once and counted as a failed handshake, on an echo and a chat listener alike.
/// Before, it stayed open until the handshake timeout (here two minutes: the Python client
/// would wait for the end, and fail, at 30 s): the end was never read when it came with the
/// record (the read was short, taken as the socket drained, and no new edge came), nor acted on
/// when read alone (the behaviours wait for the handshake before they write or close).
#[test]
fn a_client_that_leaves_mid_handshake_is_closed_at_once() {
    let server = tls_server(|c| {
        c.handshake_timeout = Duration::from_secs(120);
        c.listeners.push(ListenSpec::tls_chat("127.0.0.1:0".parse().unwrap()));
    });
    let listeners = [server.tls_addr().unwrap(), server.first("tls-chat").unwrap()];
    for addr in listeners {
        for _ in 0..5 {
            python("leave", addr, &[]);
            python("leave", addr, &["ccs"]);
        }
    }
    wait_for("every failure counted", || server.stats().tls_failures == 20);
    let stats = server.stats();
    assert_eq!((stats.active, stats.tls_handshakes), (0, 0), "{stats:?}");
}

/// A certificate and key made by `openssl req` (RSA, PKCS#8) are served as given: the ready line
/// names the file and the fingerprint openssl computes, and a client trusting exactly that
/// certificate gets its echo.
#[test]
fn a_certificate_from_openssl_req() {
    let dir = std::env::temp_dir().join(format!("ricochet-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj"])
        .args(["/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let fingerprint = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout);
    let expected = fingerprint.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server =
        ServerProcess::start(&["--tls", "127.0.0.1:0", "--tls-cert", cert_s, "--tls-key", key_s]);
    let listener = &server.ready["listeners"][0];
    assert_eq!(listener["proto"], "tls");
    assert_eq!(listener["cert"], cert_s);
    assert_eq!(listener["sha256"], expected.as_str());
    python("echo", server.addr(0), &[cert_s, "1.2", "5000"]);
    drop(server);
    assert!(cert.exists(), "a given certificate is never removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Missing or unreadable certificate files are a runtime failure (exit 1) naming the file; half a
/// pair is a usage error (exit 2).
#[test]
fn bad_certificate_paths_exit_1() {
    let (code, err) = run_to_exit(&[
        "--tls",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let (code, err) = run_to_exit(&["--tls", "127.0.0.1:0", "--tls-cert", "/etc/hostname"]);
    assert_eq!(code, 2, "{err}");
    let not_pem = "/etc/hostname";
    let (code, err) =
        run_to_exit(&["--tls", "127.0.0.1:0", "--tls-cert", not_pem, "--tls-key", not_pem]);
    assert_eq!(code, 1, "{err}");
    // Endless files are refused at the cap (/dev/zero once took all memory, /dev/urandom kept
    // the start waiting forever).
    for (cert, key, named) in [
        ("/dev/zero", "/dev/zero", "--tls-cert /dev/zero: larger than 1.00 MiB"),
        ("/dev/urandom", "/dev/urandom", "--tls-cert /dev/urandom: larger than 1.00 MiB"),
    ] {
        let (code, err) =
            run_to_exit(&["--tls", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(named), "{err}");
    }
}

/// The generated certificate's file exists while the server runs and is gone after it;
/// --tls-cert-out keeps it.
#[test]
fn a_generated_certificate_lives_with_the_server() {
    let server = ServerProcess::start(&["--tls", "127.0.0.1:0", "--tls-name", "echo.test"]);
    let path = std::path::PathBuf::from(server.ready["listeners"][0]["cert"].as_str().unwrap());
    assert!(path.exists());
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().0, 0);
    assert!(!path.exists(), "removed at exit");
    let out = std::env::temp_dir().join(format!("ricochet-kept-{}.pem", std::process::id()));
    let server =
        ServerProcess::start(&["--tls", "127.0.0.1:0", "--tls-cert-out", out.to_str().unwrap()]);
    assert_eq!(server.ready["listeners"][0]["cert"], out.to_str().unwrap());
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().0, 0);
    assert!(out.exists(), "--tls-cert-out stays");
    // Named for what made it, and for the names it serves.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-ext", "subjectAltName", "-in"])
        .arg(&out)
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("subject=CN = ricochet self-signed certificate, O = ricochet"), "{text}");
    assert!(text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"), "{text}");
    std::fs::remove_file(out).unwrap();
}

/// A rustls client of the server's TLS echo listener that trusts exactly its certificate.
fn rustls_client(server: &ricochet::Handle) -> Client {
    rustls_client_to(server, server.tls_addr().unwrap())
}

/// A rustls client of `addr` (a listener of `server`) that trusts exactly its certificate.
fn rustls_client_to(server: &ricochet::Handle, addr: SocketAddr) -> Client {
    rustls_client_trusting(server.tls_cert().unwrap().0, addr)
}

/// Waits (poll(2)) until the client's socket is readable, or writable when it has records to
/// write.
fn wait_ready(client: &Client) {
    use std::os::fd::AsRawFd;
    let write = if client.conn.wants_write() { libc::POLLOUT } else { 0 };
    let mut fd =
        libc::pollfd { fd: client.sock.as_raw_fd(), events: libc::POLLIN | write, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, util::TIMEOUT.as_millis() as i32) };
    assert!(n > 0, "the socket stayed idle for the test's timeout");
}

use util::{rustls_client_trusting, TlsClient as Client};

/// Moves records both ways without blocking; appends the plaintext that arrived to `back`.
fn pump(client: &mut Client, back: &mut Vec<u8>) {
    use std::io::ErrorKind::WouldBlock;
    while client.conn.wants_write() {
        match client.conn.write_tls(&mut client.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    match client.conn.read_tls(&mut client.sock) {
        Ok(0) => panic!("the server closed"),
        Ok(_) => {
            client.conn.process_new_packets().unwrap();
        }
        Err(e) if e.kind() == WouldBlock => {}
        Err(e) => panic!("{e}"),
    }
    let mut buf = [0u8; 1 << 16];
    loop {
        match client.conn.reader().read(&mut buf) {
            Ok(n) if n > 0 => back.extend_from_slice(&buf[..n]),
            Ok(_) => panic!("close_notify"),
            Err(e) if e.kind() == WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A client that writes without reading: the server stops reading at its cap — the plaintext it
/// holds (read but not yet taken by TLS) stays under --max-pending — and when the client reads,
/// every byte comes back, in order.
#[test]
fn a_slow_reader_gets_backpressure_and_every_byte() {
    const CAP: u64 = 256 * 1024;
    let server = tls_server(|c| c.max_pending = CAP as usize);
    let mut client = rustls_client(&server);
    client.write_all(b"hello").unwrap();
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).unwrap();
    client.sock.set_nonblocking(true).unwrap();
    let data = util::payload(64 << 20, 7);
    let mut sent = 0;
    // Write until the socket refuses and the server's input has stopped growing.
    let mut settled = 0;
    while settled < 3 && sent < data.len() {
        if !client.conn.wants_write() {
            sent += client
                .conn
                .writer()
                .write(&data[sent..(sent + (1 << 16)).min(data.len())])
                .unwrap();
        }
        match client.conn.write_tls(&mut client.sock) {
            Ok(_) => settled = 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let before = server.stats().bytes_in;
                std::thread::sleep(Duration::from_millis(100)); // checking for an absence
                settled = if server.stats().bytes_in == before { settled + 1 } else { 0 };
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < data.len(), "the server read all 64 MiB with nobody reading the echo");
    let stats = server.stats();
    assert!(
        stats.bytes_in - stats.bytes_out <= CAP,
        "plaintext held past the cap: {} in, {} out",
        stats.bytes_in,
        stats.bytes_out
    );
    // Now read, writing the rest as the echo drains.
    let mut back = Vec::new();
    while back.len() < data.len() {
        if sent < data.len() && !client.conn.wants_write() {
            sent += client
                .conn
                .writer()
                .write(&data[sent..(sent + (1 << 16)).min(data.len())])
                .unwrap();
        }
        pump(&mut client, &mut back);
        if back.len() < data.len() {
            wait_ready(&client);
        }
    }
    assert!(back == data, "every byte back, in order");
}

/// A fault plan on a TLS listener applies to the plaintext: close-after=10 gives 10 bytes, then
/// close_notify.
#[test]
fn faults_apply_to_the_plaintext() {
    let server = tls_server(|c| c.faults = vec![Some("close-after=10".parse().unwrap())]);
    let mut client = rustls_client(&server);
    client.write_all(b"0123456789abcdef").unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("a clean close_notify");
    assert_eq!(got, b"0123456789");
    wait_for("counted", || server.stats().faults_closed_after == 1);
}

/// A plan whose end comes at byte 0 acts after the handshake, on the plaintext: `stall-after=0`
/// completes the handshake and then echoes nothing (it stalled the handshake itself, once), and
/// `close-after=0` completes it and then sends close_notify.
#[test]
fn a_plan_ending_at_byte_zero_waits_for_the_handshake() {
    let server = tls_server(|c| c.faults = vec![Some("stall-after=0".parse().unwrap())]);
    let mut client = rustls_client(&server);
    client.conn.complete_io(&mut client.sock).expect("the handshake completes");
    client.write_all(b"hello").unwrap();
    wait_for("the stall counted", || server.stats().faults_stalled == 1);
    assert_eq!(server.stats().tls_handshakes, 1);
    // Nothing comes back while the server is up; its drain closes the stalled connection.
    let stats = server.shutdown().unwrap();
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert_eq!((got.len(), stats.bytes_out), (0, 0));

    let server = tls_server(|c| c.faults = vec![Some("close-after=0".parse().unwrap())]);
    let mut client = rustls_client(&server);
    client.conn.complete_io(&mut client.sock).expect("the handshake completes");
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("a clean close_notify");
    assert!(got.is_empty());
    wait_for("counted", || server.stats().faults_closed_after == 1);
    assert_eq!(server.stats().tls_handshakes, 1);
}

/// A chat room over TLS: a line from one member reaches the other.
#[test]
fn a_chat_room_over_tls() {
    let server = ServerProcess::start(&["--tls-chat", "127.0.0.1:0"]);
    let ca = server.ready["listeners"][0]["cert"].as_str().unwrap().to_owned();
    assert_eq!(server.ready["listeners"][0]["proto"], "tls-chat");
    python("chat", server.addr(0), &[&ca]);
}

/// TLS with two reactors: 60 clients at once, served by both, each echoed exactly.
#[test]
fn tls_with_several_reactors() {
    let server = tls_server(|c| c.threads = 2);
    python("many", server.tls_addr().unwrap(), &[&ca(&server), "60"]);
    wait_for("60 handshakes", || server.stats().tls_handshakes == 60);
    // The clients come and go (each closes after its echo), so the counts of connections each
    // reactor was given follow the open ones at each accept: both reactors served some.
    let reactors = server.reactor_stats();
    assert!(
        reactors.iter().all(|r| r.accepted > 0 && r.tls_handshakes == r.accepted),
        "{reactors:?}"
    );
}

/// A chat member that never finishes its TLS handshake (a plain TCP connection that says
/// nothing) has the room's lines queued like any member's, within --max-pending, and is cut off
/// as slow past it; the others are served throughout and SIGTERM stops the server. Before the
/// fix, the 65 537th byte queued for it (rustls's own buffer, full before the handshake) made
/// the reactor spin at 100 % of a core, serve nobody and ignore SIGTERM.
#[test]
fn a_member_stuck_in_its_handshake_freezes_nobody() {
    const CAP: usize = 256 * 1024;
    let mut server =
        ServerProcess::start(&["--tls-chat", "127.0.0.1:0", "--max-pending", &CAP.to_string()]);
    let (addr, ca) = (server.addr(0), server.ready["listeners"][0]["cert"].clone());
    let ca = std::path::Path::new(ca.as_str().unwrap());
    let _silent = connect(addr);
    // Connected now (and so accepted before the writer), its handshake only after lines came.
    let mut late = rustls_client_trusting(ca, addr);
    let mut reader = rustls_client_trusting(ca, addr);
    let mut writer = rustls_client_trusting(ca, addr);
    writer.conn.complete_io(&mut writer.sock).expect("the writer's handshake");
    let who = |reader: &mut Client| {
        reader.write_all(b"/who\n").unwrap();
        let mut answer = Vec::new();
        while answer.last() != Some(&b'\n') {
            let mut byte = [0u8];
            reader.read_exact(&mut byte).expect("the answer to /who");
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    };
    assert_eq!(who(&mut reader), "* members: (+4 unnamed)\n");

    let mut line = vec![b'x'; 999];
    line.push(b'\n');
    let send_lines = |writer: &mut Client, reader: &mut Client, count: usize| {
        for _ in 0..count {
            writer.write_all(&line).unwrap();
        }
        let mut got = vec![0; count * line.len()];
        reader.read_exact(&mut got).expect("the lines reach the other member");
        assert!(got.chunks(line.len()).all(|l| l == line), "every line exact");
    };
    // 70 000 bytes for the silent member: past rustls's own 64 KiB, within the cap.
    send_lines(&mut writer, &mut reader, 70);
    assert_eq!(who(&mut reader), "* members: (+4 unnamed)\n", "the silent member stays");
    // The late member's lines waited for its handshake, and come when it ends.
    late.conn.complete_io(&mut late.sock).expect("the late member's handshake");
    let read_lines = |member: &mut Client, count: usize| {
        let mut got = vec![0; count * line.len()];
        member.read_exact(&mut got).expect("the queued lines");
        assert!(got.chunks(line.len()).all(|l| l == line), "every line exact");
    };
    read_lines(&mut late, 70);
    // 200 000 more pass the cap: the silent member is cut off, the room goes on.
    send_lines(&mut writer, &mut reader, 200);
    read_lines(&mut late, 200);
    assert_eq!(who(&mut reader), "* members: (+3 unnamed)\n", "the silent member was cut off");

    server.signal(libc::SIGTERM);
    let stopped = loop {
        let line = server.next_line();
        if line["event"] == "stopped" {
            break line;
        }
    };
    assert_eq!(stopped["slow_members"], 1, "{stopped}");
    // The reader and the late member got all 270 lines; the silent member was queued whole runs
    // of lines (as many as one read brought) while they fit under the cap: at least the first
    // 70, at most CAP / 1000.
    let queued = stopped["chat_deliveries"].as_u64().unwrap() - 2 * 270;
    assert!((70..=(CAP / line.len()) as u64).contains(&queued), "{queued} lines queued");
    assert_eq!(server.wait().0, 0);
}

/// `--listen` URLs with `?room=lobby` put a TLS listener and a plain one into one room: a
/// member on each hears the other, `/who` counts both, and with two reactors too. The ready
/// line's entries are the shorthand flags' (`tls-chat` with its certificate, `chat`).
#[test]
fn one_room_over_tls_and_plain_tcp() {
    for threads in ["1", "2"] {
        let server = ServerProcess::start(&[
            "--listen",
            "chat+tls://127.0.0.1:0?room=lobby",
            "--listen",
            "chat://127.0.0.1:0?room=lobby",
            "--threads",
            threads,
        ]);
        let listeners = &server.ready["listeners"];
        assert_eq!(
            (&listeners[0]["proto"], &listeners[1]["proto"]),
            (&"tls-chat".into(), &"chat".into())
        );
        assert!(listeners[0]["cert"].is_string() && listeners[1]["cert"].is_null(), "{listeners}");
        let ca = std::path::PathBuf::from(listeners[0]["cert"].as_str().unwrap());
        let mut secure = rustls_client_trusting(&ca, server.addr(0));
        let plain = connect(server.addr(1));
        let mut plain_reader = std::io::BufReader::new(plain.try_clone().unwrap());
        let mut plain_writer = plain;
        let read_line = |reader: &mut dyn std::io::BufRead| {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a line");
            line
        };
        secure.write_all(b"/nick alice\n").unwrap();
        assert_eq!(read_line(&mut plain_reader), "* alice joined\n", "threads {threads}");
        plain_writer.write_all(b"/nick bob\nhello from tcp\n").unwrap();
        let mut secure_reader = std::io::BufReader::new(&mut secure);
        assert_eq!(read_line(&mut secure_reader), "* bob joined\n");
        assert_eq!(read_line(&mut secure_reader), "bob: hello from tcp\n");
        secure_reader.get_mut().write_all(b"hello from tls\n/who\n").unwrap();
        assert_eq!(read_line(&mut plain_reader), "alice: hello from tls\n");
        assert_eq!(read_line(&mut secure_reader), "* members: alice, bob\n");
    }
}
