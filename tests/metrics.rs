//! `--metrics`: `/metrics` equals the counters after a known load (each family's samples summed
//! over reactors, each listener's connections), Prometheus's own Python parser reads it, and
//! `/healthz` flips to 503 during a drain; the HTTP listener's bounds (a head over 8 KiB, methods,
//! unknown paths, keep-alive, too many clients).

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use ricochet::{Config, ListenSpec, Stats};
use util::{connect, echo_concurrently, payload, read_to_eof, wait_for};

fn spawn(listeners: Vec<ListenSpec>, threads: usize) -> ricochet::Handle {
    let config = Config {
        listeners,
        threads,
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        drain_grace: Duration::from_secs(30),
        ..Config::default()
    };
    ricochet::spawn(config).expect("spawn")
}

/// One request on a new connection; returns (status line, headers, body). What came before a
/// reset counts (a refused client's request may be left unread, and its close then resets).
fn get(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut c = connect(addr);
    c.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = c.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
    }
    split(&String::from_utf8(answer).unwrap())
}

fn split(answer: &str) -> (String, String, String) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, headers, body) =
        get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: application/openmetrics-text; version=1.0.0"));
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// Each sample `name{labels} value`, keyed by name and labels as written.
fn samples(body: &str) -> HashMap<(String, String), f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match key.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (key, ""),
            };
            ((name.to_owned(), labels.to_owned()), value.parse().unwrap())
        })
        .collect()
}

/// Sums a family's samples (over reactors or listeners).
fn sum(samples: &HashMap<(String, String), f64>, name: &str) -> u64 {
    let found: Vec<f64> = samples.iter().filter(|((n, _), _)| n == name).map(|(_, v)| *v).collect();
    assert!(!found.is_empty(), "no samples of {name}");
    found.iter().sum::<f64>() as u64
}

/// Every counter of the stopped line is on /metrics, per reactor, and the sums are the stopped
/// line's; each listener's connections are counted under its URL.
#[test]
fn metrics_equal_the_counters_after_a_known_load() {
    let server = spawn(
        vec![
            ListenSpec::tcp("127.0.0.1:0".parse().unwrap()),
            ListenSpec::udp("127.0.0.1:0".parse().unwrap()),
            ListenSpec::tcp("127.0.0.1:0".parse().unwrap()),
        ],
        2,
    );
    let metrics = server.metrics_addr().unwrap();
    let tcp: Vec<SocketAddr> = server
        .local_addrs()
        .iter()
        .filter(|s| s.proto() == "tcp")
        .filter_map(|s| s.addr())
        .collect();
    for i in 0..5 {
        let c = connect(tcp[0]);
        let data = payload(10_000 + i, i as u64);
        assert_eq!(echo_concurrently(&c, &data, 4096), data);
    }
    let open: Vec<TcpStream> = (0..3).map(|_| connect(tcp[1])).collect();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    for _ in 0..4 {
        udp.send_to(b"datagram", server.udp_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(udp.recv(&mut buf).unwrap(), 8);
    }
    wait_for("the counters to settle", || {
        let s = server.stats();
        s.closed == 5 && s.active == 3 && s.datagrams_out == 4
    });
    let want = server.stats();
    let body = scrape(metrics);
    let got = samples(&body);

    for (name, value) in want.fields() {
        let family = match name {
            "active" | "chat_members" => format!("ricochet_{name}"),
            _ => format!("ricochet_{name}_total"),
        };
        assert_eq!(sum(&got, &family), value, "{family}");
        assert_eq!(got.keys().filter(|(n, _)| *n == family).count(), 2, "{family}: 2 reactors");
    }
    assert_eq!(want.bytes_in, (0..5).map(|i| 10_000 + i).sum::<u64>());
    let first = format!("listener=\"tcp://{}\"", tcp[0]);
    let second = format!("listener=\"tcp://{}\"", tcp[1]);
    let at = |name: &str, labels: &str| got[&(name.to_owned(), labels.to_owned())] as u64;
    assert_eq!(at("ricochet_listener_accepted_total", &first), 5);
    assert_eq!(at("ricochet_listener_closed_total", &first), 5);
    assert_eq!(at("ricochet_listener_active", &first), 0);
    assert_eq!(at("ricochet_listener_accepted_total", &second), 3);
    assert_eq!(at("ricochet_listener_active", &second), 3);
    assert_eq!(got.keys().filter(|(n, _)| n == "ricochet_listener_active").count(), 2, "not udp");
    assert_eq!(at("ricochet_draining", ""), 0);
    assert!(got.contains_key(&(
        "ricochet_build_info".to_owned(),
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
    )));
    let started = at("process_start_time_seconds", "");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(started <= now.as_secs() + 1 && started + 3600 > now.as_secs(), "{started}");

    // The scrapes themselves are not echo traffic.
    assert_eq!(server.stats(), want);
    drop(open);
    wait_for("the open ones to close", || server.stats().active == 0);
    let stats: Stats = server.shutdown().unwrap();
    assert_eq!((stats.accepted, stats.closed), (8, 8));

    parsed_by_prometheus(&body);
}

/// Prometheus's Python client parses the exposition strictly (OpenMetrics). CI installs it; here
/// its absence skips.
fn parsed_by_prometheus(body: &str) {
    let check = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
assert families["ricochet_bytes_in"].type == "counter", families["ricochet_bytes_in"]
assert families["ricochet_active"].type == "gauge"
assert families["ricochet_build"].type == "info"
total = sum(s.value for s in families["ricochet_accepted"].samples if s.name == "ricochet_accepted_total")
print("ok", len(families), int(total))
"#;
    let have = Command::new("python3").args(["-c", "import prometheus_client"]).status();
    if !have.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 -m pip install prometheus-client"
        );
        eprintln!("skipped: python3 has no `prometheus_client` (pip install prometheus-client)");
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let families = Stats::default().fields().len() + 4 + 3;
    assert_eq!(stdout.trim(), format!("ok {families} 8"));
}

/// `/healthz` answers 200 `ok` while serving and 503 `draining` once a drain began (while a
/// connection is still finishing), and `ricochet_draining` says 1; the listener stops with the
/// server.
#[test]
fn health_flips_to_503_during_a_drain() {
    let server = spawn(vec![ListenSpec::tcp("127.0.0.1:0".parse().unwrap())], 1);
    let metrics = server.metrics_addr().unwrap();
    let health = || get(metrics, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // 503 `starting` until the reactor's first turn (the listeners are bound before it).
    wait_for("health to say ok", || health().0 == "HTTP/1.1 200 OK");
    assert_eq!(health().2, "ok\n");
    let mut busy = connect(server.tcp_addr().unwrap());
    util::ping(&mut busy, b"x");
    server.stopper().drain();
    wait_for("health to say draining", || health().0 == "HTTP/1.1 503 Service Unavailable");
    assert_eq!(health().2, "draining\n");
    assert_eq!(samples(&scrape(metrics))[&("ricochet_draining".into(), String::new())], 1.0);
    busy.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_eof(&busy).is_empty());
    server.shutdown().unwrap();
    assert!(TcpStream::connect(metrics).is_err(), "the metrics listener stops with the server");
}

/// Keep-alive answers several requests on one connection; HEAD gets the head only; other
/// methods 405, other paths 404, a head over 8 KiB 431, garbage 400, and the 17th client at once
/// a 503. `--max-conns`, reached by echo clients, does not apply to it.
#[test]
fn the_http_listener_is_bounded() {
    let config = Config {
        listeners: vec![ListenSpec::tcp("127.0.0.1:0".parse().unwrap())],
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        max_conns: Some(1),
        ..Config::default()
    };
    let server = ricochet::spawn(config).unwrap();
    let metrics = server.metrics_addr().unwrap();
    let mut echo = connect(server.tcp_addr().unwrap());
    util::ping(&mut echo, b"the one connection allowed");

    let mut c = connect(metrics);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\n\r\n").unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let all = String::from_utf8(read_to_eof(&c)).unwrap();
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
              Cache-Control: no-store\r\n";
    let want = format!("{ok}\r\nok\n{ok}\r\n{ok}Connection: close\r\n\r\nok\n");
    assert_eq!(all, want);

    let (status, headers, _) = get(metrics, "POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET, HEAD"));
    assert_eq!(
        get(metrics, "GET /nope?x HTTP/1.1\r\nConnection: close\r\n\r\n").2,
        "not found: /nope\n"
    );
    assert_eq!(get(metrics, "\x16\x03\x01\x00\x05hello\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let mut c = connect(metrics);
    let _ = c.write_all(huge.as_bytes()); // the answer may come before all of it is taken
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");

    // Clients hold their connections (a partial head each) until a new one is told 503. A held
    // one may itself be refused while the threads of the clients above are still ending, so
    // more are opened while a probe is still served; then exactly 16 of the held ones are being
    // served (they have no answer yet) and the others were refused.
    let hold = || {
        let mut c = connect(metrics);
        c.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        c
    };
    let mut held: Vec<TcpStream> = (0..16).map(|_| hold()).collect();
    wait_for("a new client to be refused", || {
        let probe = get(metrics, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").0;
        if probe == "HTTP/1.1 503 Service Unavailable" {
            return true;
        }
        held.push(hold()); // a held one was refused: hold one more
        false
    });
    // Served: no answer (their heads are unfinished); refused: a 503 and the end, which may
    // still be on its way. Looked at without blocking, again until the refusals have all come,
    // well within the server's head timeout (a slow look at each, one after another, took
    // seconds on a loaded machine and let the first held heads time out).
    for c in &held {
        c.set_nonblocking(true).unwrap();
    }
    let unanswered = |held: &[TcpStream]| {
        held.iter()
            .filter(|c| {
                let mut byte = [0u8; 1];
                matches!((&**c).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    wait_for("16 clients served at once, the others refused", || unanswered(&held) == 16);
    assert_eq!(unanswered(&held), 16, "16 clients served at once, the others refused");
    drop(held);
    wait_for("a client's place to free up", || {
        get(metrics, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").0 == "HTTP/1.1 200 OK"
    });
    assert_eq!(server.stats().accepted, 1, "none of it is echo traffic");
    drop(echo);
}
