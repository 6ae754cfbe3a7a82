//! UDP datagram echo and Unix-domain stream echo: exact datagrams of every size, bursts, the
//! low-port reflection guard, Unix half-close, socket-file handling, and all three families in
//! one process.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use ricochet::{Config, ListenSpec};
use util::*;

fn udp_server(allow_low_ports: bool) -> ricochet::Handle {
    let mut config = Config::ephemeral();
    config.listeners = vec![ListenSpec::udp("127.0.0.1:0".parse().unwrap())];
    config.recv_buffer = Some(1 << 20);
    config.udp_allow_low_ports = allow_low_ports;
    ricochet::spawn(config).unwrap()
}

fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20).unwrap();
    socket
}

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ricochet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Datagrams of 0, 1, 1472, 8192 and 65507 bytes come back whole and exact.
#[test]
fn udp_datagrams_of_every_size() {
    let server = udp_server(false);
    let client = udp_client();
    client.connect(server.udp_addr().unwrap()).unwrap();
    let mut buf = vec![0; 70_000];
    for (i, size) in [0usize, 1, 1472, 8192, 65507].into_iter().enumerate() {
        let data = payload(size, i as u64);
        client.send(&data).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(n, size);
        assert!(buf[..n] == data, "{size}-byte datagram differs");
    }
    wait_for("the last turn's counters", || server.stats().datagrams_out == 5);
    let stats = server.stats();
    assert_eq!((stats.datagrams_in, stats.datagrams_out, stats.datagrams_dropped), (5, 5, 0));
}

/// A burst of 10 000 small datagrams from several sockets: with 1 MiB receive buffers on
/// loopback, all come back.
#[test]
fn udp_burst_from_several_sockets() {
    let server = udp_server(false);
    let addr = server.udp_addr().unwrap();
    let clients: Vec<UdpSocket> = (0..4).map(|_| udp_client()).collect();
    // Send in rounds small enough for the socket buffers, reading replies as we go.
    let mut received = 0;
    let mut buf = [0u8; 64];
    for round in 0..25 {
        for (c, client) in clients.iter().enumerate() {
            for i in 0..100u32 {
                let msg = format!("{c}:{round}:{i}");
                client.send_to(msg.as_bytes(), addr).unwrap();
            }
        }
        for client in &clients {
            for _ in 0..100 {
                let (n, from) = client.recv_from(&mut buf).unwrap();
                assert_eq!(from, addr);
                assert!(n > 0);
                received += 1;
            }
        }
    }
    assert_eq!(received, 10_000);
    wait_for("the last turn's counters", || server.stats().datagrams_out == 10_000);
    let stats = server.stats();
    assert_eq!((stats.datagrams_in, stats.datagrams_out), (10_000, 10_000));
}

/// A datagram from a source port below 1024 is dropped and counted by default; echoed when the
/// guard is off. (Binding a low port needs privilege: skipped, saying so, without it.)
#[test]
fn udp_low_source_ports_are_dropped_by_default() {
    let low = (600..1024).find_map(|port| UdpSocket::bind(("127.0.0.1", port)).ok());
    let Some(low) = low else {
        eprintln!("skipped: cannot bind a port below 1024 here");
        return;
    };
    low.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let guarded = udp_server(false);
    low.send_to(b"loop?", guarded.udp_addr().unwrap()).unwrap();
    // A datagram from a high port sent after it is echoed, so the first was processed first.
    let high = udp_client();
    high.connect(guarded.udp_addr().unwrap()).unwrap();
    high.send(b"fine").unwrap();
    assert_eq!(high.recv(&mut [0; 16]).unwrap(), 4);
    wait_for("the low-port drop to be counted", || guarded.stats().datagrams_low_port == 1);
    assert!(low.recv(&mut [0; 16]).is_err(), "no echo to a low port");

    let open = udp_server(true);
    low.set_read_timeout(Some(TIMEOUT)).unwrap();
    low.send_to(b"allowed", open.udp_addr().unwrap()).unwrap();
    let mut buf = [0; 16];
    let n = low.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"allowed");
}

fn unix_server(path: &std::path::Path) -> ricochet::Handle {
    let mut config = Config::ephemeral();
    config.listeners = vec![ListenSpec::unix(path.to_owned())];
    ricochet::spawn(config).unwrap()
}

fn unix_connect(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Unix-domain stream echo with half-close: 4 MiB, shutdown(Write), all bytes back, then EOF.
#[test]
fn unix_echo_with_half_close() {
    let dir = scratch("unix-echo");
    let path = dir.join("echo.sock");
    let server = unix_server(&path);
    let stream = unix_connect(&path);
    let data = payload(4 << 20, 3);
    let mut w = stream.try_clone().unwrap();
    let back = std::thread::scope(|s| {
        s.spawn(|| {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        (&stream).read_to_end(&mut back).unwrap();
        back
    });
    assert!(back == data, "got {} of {} bytes", back.len(), data.len());
    drop(server);
    assert!(!path.exists(), "socket file removed at shutdown");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A stale socket file (nobody listening) is replaced.
#[test]
fn unix_stale_socket_is_replaced() {
    let dir = scratch("unix-stale");
    let path = dir.join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves the file, with nobody accepting
    assert!(path.exists());
    let server = unix_server(&path);
    let mut c = unix_connect(&path);
    c.write_all(b"fresh").unwrap();
    let mut back = [0; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"fresh");
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A live socket is "address in use" (exit 1); a path that is not a socket is refused and left
/// untouched (exit 1).
#[test]
fn unix_live_socket_and_regular_file_are_refused() {
    let dir = scratch("unix-refuse");
    let live = dir.join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    let (code, err) = run_to_exit(&["--unix", live.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use") || err.contains("accepting"), "{err}");
    assert!(live.exists(), "the live socket is left alone");

    let file = dir.join("precious.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let (code, err) = run_to_exit(&["--unix", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    std::fs::remove_dir_all(dir).unwrap();
}

/// TCP, UDP and Unix listeners in one process: the ready line lists all three with concrete
/// addresses, each echoes, and after SIGTERM the socket file is gone and the exit code is 0.
#[test]
fn all_three_families_in_one_process() {
    let dir = scratch("families");
    let path = dir.join("echo.sock");
    let server = ServerProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--unix",
        path.to_str().unwrap(),
    ]);
    let listeners = server.ready["listeners"].as_array().unwrap();
    let protos: Vec<&str> = listeners.iter().map(|l| l["proto"].as_str().unwrap()).collect();
    assert_eq!(protos, ["tcp", "udp", "unix"]);
    assert_eq!(listeners[2]["addr"], path.to_str().unwrap());

    let mut tcp = connect(server.addr(0));
    ping(&mut tcp, b"over tcp");
    let udp = udp_client();
    let udp_addr: SocketAddr = server.addr(1);
    assert_ne!(udp_addr.port(), 0);
    udp.send_to(b"over udp", udp_addr).unwrap();
    let mut buf = [0; 16];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over udp");
    let mut unix = unix_connect(&path);
    unix.write_all(b"over unix").unwrap();
    let mut back = [0; 9];
    unix.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over unix");
    drop((tcp, unix));

    server.signal(libc::SIGTERM);
    let (code, out, err) = server.wait();
    assert_eq!(code, 0, "{err}");
    assert!(!path.exists(), "socket file removed after SIGTERM");
    let stopped: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (stopped["accepted"].as_u64(), stopped["datagrams_out"].as_u64()),
        (Some(2), Some(1))
    );
    std::fs::remove_dir_all(dir).unwrap();
}
