//! Fault plans, observed from real clients: close, reset, stall and corrupt after exactly N
//! bytes; `p`; datagram drop, duplication and corruption at their rates; the same seed giving the
//! same drops; a clean listener beside a faulty one; bad plans refused.

mod util;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::UdpSocket;
use std::time::Duration;

use ricochet::{Config, Faults, ListenSpec};
use util::{connect, run_to_exit, wait_for, ServerProcess, TIMEOUT};

fn faulty(listener: ListenSpec, plan: &str, mutate: impl FnOnce(&mut Config)) -> ricochet::Handle {
    let mut config = Config {
        listeners: vec![listener],
        faults: vec![Some(Faults::parse(plan).unwrap())],
        seed: Some(1),
        ..Config::default()
    };
    mutate(&mut config);
    ricochet::spawn(config).expect("spawn")
}

fn tcp() -> ListenSpec {
    ListenSpec::tcp("127.0.0.1:0".parse().unwrap())
}

fn udp() -> ListenSpec {
    ListenSpec::udp("127.0.0.1:0".parse().unwrap())
}

/// Sends `n` bytes (0, 1, 2, ...) and reads until the server ends the stream; returns what came
/// back and how it ended.
fn send_and_collect(server: &ricochet::Handle, n: usize) -> (Vec<u8>, &'static str) {
    let mut s = connect(server.tcp_addr().unwrap());
    let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
    s.write_all(&data).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, "eof"),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, "reset"),
            Err(e) => panic!("after {} bytes: {e}", got.len()),
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

/// close-after=N: exactly N bytes, then an orderly EOF (FIN, no reset), counted once.
#[test]
fn close_after_n_bytes() {
    let server = faulty(tcp(), "close-after=1000", |_| {});
    let (got, end) = send_and_collect(&server, 5000);
    assert_eq!((got.len(), end), (1000, "eof"));
    assert_eq!(got, pattern(1000));
    wait_for("the close to be counted", || server.stats().closed == 1);
    let stats = server.stats();
    assert_eq!((stats.faults_closed_after, stats.resets), (1, 0));
}

/// reset-after=N: exactly N bytes, then a reset; counted as the fault, not as a peer's reset.
#[test]
fn reset_after_n_bytes() {
    let server = faulty(tcp(), "reset-after=777", |_| {});
    let (got, end) = send_and_collect(&server, 5000);
    assert_eq!((got.len(), end), (777, "reset"));
    assert_eq!(got, pattern(777));
    wait_for("the reset to be counted", || server.stats().faults_reset_after == 1);
    assert_eq!(server.stats().resets, 0);
}

/// stall-after=N: exactly N bytes, then nothing is read or written; the idle timeout is what
/// ends the connection.
#[test]
fn stall_after_n_bytes_until_the_idle_timeout() {
    let server =
        faulty(tcp(), "stall-after=100", |c| c.idle_timeout = Some(Duration::from_millis(300)));
    let mut s = connect(server.tcp_addr().unwrap());
    s.write_all(&pattern(1000)).unwrap();
    let mut got = [0u8; 100];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got[..], pattern(100)[..]);
    wait_for("the stall", || server.stats().faults_stalled == 1);
    let read_before = server.stats().bytes_in;
    s.write_all(&[7u8; 1000]).unwrap(); // never read by the server
    let mut rest = Vec::new();
    // The idle close ends it: EOF, or a reset since the server leaves input unread.
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(rest, b"", "nothing after the stall point");
    wait_for("the idle close", || server.stats().idle_timeouts == 1);
    assert_eq!(server.stats().bytes_in, read_before, "a stalled connection is not read");
}

/// corrupt-after=N: the byte at offset N is flipped, once; everything else is exact.
#[test]
fn corrupt_after_flips_exactly_one_byte() {
    let server = faulty(tcp(), "corrupt-after=300&close-after=1000", |_| {});
    let (got, _) = send_and_collect(&server, 1000);
    let mut expected = pattern(1000);
    expected[300] ^= 0xff;
    assert_eq!(got, expected);
    wait_for("the counters", || server.stats().faults_corrupted == 1);
}

/// p=0.5: about half the connections are faulty, the others clean; the same seed picks the same
/// ones.
#[test]
fn p_picks_a_share_of_connections_reproducibly() {
    let pick = |seed| {
        let server = faulty(tcp(), "close-after=1&p=0.5", |c| c.seed = Some(seed));
        (0..60)
            .map(|_| {
                let (got, _) = {
                    let mut s = connect(server.tcp_addr().unwrap());
                    s.write_all(b"ab").unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).unwrap();
                    (got, ())
                };
                got.len() == 1
            })
            .collect::<Vec<bool>>()
    };
    let first = pick(9);
    let faulty = first.iter().filter(|f| **f).count();
    assert!((15..=45).contains(&faulty), "{faulty} of 60 faulty at p=0.5");
    assert_eq!(pick(9), first, "the same seed, the same connections");
    assert_ne!(pick(10), first, "another seed, other connections");
}

/// Sends 4000 numbered datagrams in bursts, each burst once the server has received the one
/// before; returns the numbers echoed (with how many times).
fn udp_run(server: &ricochet::Handle) -> Vec<(u32, usize)> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20).unwrap();
    sock.connect(server.udp_addr().unwrap()).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    let mut buf = [0u8; 64];
    for burst in 0..40u32 {
        for k in 0..100u32 {
            sock.send(&(burst * 100 + k).to_le_bytes()).unwrap();
        }
        wait_for("the burst to arrive", || {
            server.stats().datagrams_in == u64::from(burst + 1) * 100
        });
        let stats = server.stats();
        let answered = stats.datagrams_out + stats.faults_dropped - stats.faults_duplicated;
        wait_for("the burst to be answered", || {
            let s = server.stats();
            s.datagrams_out + s.faults_dropped - s.faults_duplicated
                >= answered.max(u64::from(burst + 1) * 100)
        });
        sock.set_nonblocking(true).unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            *counts.entry(u32::from_le_bytes(buf[..n].try_into().unwrap())).or_insert(0) += 1;
        }
        sock.set_nonblocking(false).unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        *counts.entry(u32::from_le_bytes(buf[..n].try_into().unwrap())).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// drop and dup at their rates, each decision counted; the same seed drops the same datagrams.
#[test]
fn udp_drop_and_dup_are_seeded_and_counted() {
    let run = |seed| {
        let server = faulty(udp(), "drop=0.1&dup=0.05", |c| c.seed = Some(seed));
        let echoed = udp_run(&server);
        (echoed, server.shutdown().unwrap())
    };
    let (echoed, stats) = run(5);
    let dropped = 4000 - echoed.len() as u64;
    let doubled = echoed.iter().filter(|(_, n)| *n == 2).count() as u64;
    assert_eq!(dropped, stats.faults_dropped, "what the client missed is what was dropped");
    assert_eq!(doubled, stats.faults_duplicated);
    assert!((300..=500).contains(&dropped), "{dropped} of 4000 dropped at 0.1");
    assert!((120..=280).contains(&doubled), "{doubled} of ~3600 duplicated at 0.05");
    let kept: BTreeSet<u32> = echoed.iter().map(|(seq, _)| *seq).collect();
    let (again, _) = run(5);
    assert_eq!(again.iter().map(|(seq, _)| *seq).collect::<BTreeSet<_>>(), kept, "same seed");
    let (other, _) = run(6);
    assert_ne!(other.iter().map(|(seq, _)| *seq).collect::<BTreeSet<_>>(), kept, "other seed");
}

/// corrupt=1: every datagram comes back with exactly one byte flipped.
#[test]
fn udp_corrupt_flips_one_byte() {
    let server = faulty(udp(), "corrupt=1", |_| {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.connect(server.udp_addr().unwrap()).unwrap();
    let sent = [0x55u8; 200];
    for _ in 0..20 {
        sock.send(&sent).unwrap();
        let mut back = [0u8; 300];
        let n = sock.recv(&mut back).unwrap();
        assert_eq!(n, 200);
        let flipped: Vec<usize> = (0..n).filter(|&i| back[i] != sent[i]).collect();
        assert_eq!(flipped.len(), 1);
        assert_eq!(back[flipped[0]], 0x55 ^ 0xff);
    }
    wait_for("the count", || server.stats().faults_corrupted == 20);
}

/// The binary: a plan per listener, `--faults` for the rest, the ready line shows each plan and
/// the seed; a clean listener beside a faulty one echoes exactly.
#[test]
fn process_ready_line_and_a_clean_listener_beside_a_faulty_one() {
    let server = ServerProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tcp",
        "127.0.0.1:0?close-after=10",
        "--seed",
        "1234",
    ]);
    let l = &server.ready["listeners"];
    assert_eq!(server.ready["seed"], 1234);
    assert!(l[0].get("faults").is_none());
    assert_eq!(l[1]["faults"], "close-after=10");
    let mut clean = connect(server.addr(0));
    let data = util::payload(100_000, 3);
    let back = util::echo_concurrently(&clean, &data, 1000);
    assert!(back == data, "the clean listener echoes exactly");
    let mut cut = connect(server.addr(1));
    cut.write_all(&data[..100]).unwrap();
    let mut got = Vec::new();
    cut.read_to_end(&mut got).unwrap();
    assert_eq!(got, data[..10]);
    clean.write_all(b"still fine").unwrap();
    let mut again = [0u8; 10];
    clean.read_exact(&mut again).unwrap();
    assert_eq!(&again, b"still fine");
}

/// `--faults` gives its plan to every listener that has none.
#[test]
fn faults_flag_fills_in_listeners_without_a_plan() {
    let server = ServerProcess::start(&[
        "--udp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0?dup=0.1",
        "--faults",
        "drop=0.5",
    ]);
    let l = &server.ready["listeners"];
    assert_eq!(l[0]["faults"], "drop=0.5");
    assert_eq!(l[1]["faults"], "dup=0.1");
}

/// Without --seed, a random seed is chosen and printed, so a run can be replayed.
#[test]
fn a_random_seed_is_printed() {
    let a = ServerProcess::start(&["--udp", "127.0.0.1:0?drop=0.1"]);
    let b = ServerProcess::start(&["--udp", "127.0.0.1:0?drop=0.1"]);
    let (sa, sb) = (a.ready["seed"].as_u64().unwrap(), b.ready["seed"].as_u64().unwrap());
    assert_ne!(sa, sb);
}

/// A bad plan is a usage error (exit 2) naming the key.
#[test]
fn bad_plans_exit_2_naming_the_key() {
    for (args, needle) in [
        (&["--tcp", "127.0.0.1:0?latency=fast"][..], "latency"),
        (&["--udp", "127.0.0.1:0?drop=2"], "`drop`"),
        (&["--tcp", "127.0.0.1:0?wobble=1"], "unknown fault `wobble`"),
        (&["--tcp", "127.0.0.1:0?drop=0.1"], "`drop` is a datagram fault"),
        (&["--udp", "127.0.0.1:0?close-after=5"], "`close-after` is a stream fault"),
        (&["--unix", "/tmp/x.sock?p=3"], "`p`"),
        (&["--faults", "drop=0.1"], "`drop` is a datagram fault"),
        (&["--seed", "minus-one"], "seed"),
    ] {
        let (code, err) = run_to_exit(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} does not name {needle:?}");
    }
}

/// latency=50ms&jitter=10ms: every round trip takes at least 40 ms (never earlier than the
/// plan says) and not much more than 60 ms; chunks never overtake each other; a half-close
/// still gets everything, then EOF; every held chunk is counted.
#[test]
fn latency_and_jitter_delay_in_order() {
    let server = faulty(tcp(), "latency=50ms&jitter=10ms", |_| {});
    let mut s = connect(server.tcp_addr().unwrap());
    for i in 0..10 {
        let msg = format!("ping {i}");
        let start = std::time::Instant::now();
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).unwrap();
        let rtt = start.elapsed();
        assert_eq!(back, msg.as_bytes());
        assert!(rtt >= Duration::from_millis(40), "round trip {i} took only {rtt:?}");
        // Generous slack: a shared machine may be slow, never early.
        assert!(rtt < Duration::from_millis(60 + 1000), "round trip {i} took {rtt:?}");
    }
    let chunks: Vec<u8> =
        (0..300).flat_map(|i: u32| format!("chunk{i:04};").into_bytes()).collect();
    for piece in chunks.chunks(10) {
        s.write_all(piece).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert!(back == chunks, "order kept, nothing lost, then EOF");
    wait_for("the close", || server.stats().closed == 1);
    let stats = server.stats();
    assert!(stats.faults_delayed >= 11, "{stats:?}");
    assert_eq!(stats.bytes_in, stats.bytes_out);
}

/// Latency holds at most --max-pending: a peer that writes fast gets backpressure (its writes
/// block), not unbounded server memory, and still gets every byte back.
#[test]
fn latency_holds_are_bounded_and_lose_nothing() {
    let server = faulty(tcp(), "latency=20ms", |c| c.max_pending = 64 * 1024);
    let s = connect(server.tcp_addr().unwrap());
    let data = util::payload(4 << 20, 9);
    let back = util::echo_concurrently(&s, &data, 64 * 1024);
    assert!(back == data, "4 MiB through a 64 KiB hold, exactly");
}

/// rate=64KiB: over about three seconds the echo arrives at the limit (within 15 %), exactly,
/// and the waits are counted.
#[test]
fn rate_throttles_to_the_limit() {
    let server = faulty(tcp(), "rate=64KiB", |_| {});
    let s = connect(server.tcp_addr().unwrap());
    let data = util::payload(192 * 1024, 4);
    let start = std::time::Instant::now();
    let back = util::echo_concurrently(&s, &data, 16 * 1024);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(back == data, "exact");
    // The bucket starts empty and holds a tenth of a second's worth: the first second is
    // throttled too.
    let rate = data.len() as f64 / elapsed / 1024.0;
    assert!((64.0 * 0.85..=64.0 * 1.15).contains(&rate), "{rate:.1} KiB/s for a 64 KiB/s limit");
    assert!(server.stats().faults_throttled > 0);
}

/// slice=100&slice-delay=40ms: 1000 bytes come back exactly, in reads of at most 100 bytes, and
/// never early: byte `o` arrives no sooner than (o / 100) × 40 ms after the data was sent (the
/// first slice leaves after the data came, the others 40 ms apart). Timed from the write, not
/// from the first read: a test thread woken late for its first read would make every later
/// slice look early. Each chunk the slicing cut is counted.
#[test]
fn slice_writes_pieces_apart() {
    let server = faulty(tcp(), "slice=100&slice-delay=40ms", |_| {});
    let mut s = connect(server.tcp_addr().unwrap());
    let data = pattern(1000);
    let sent = std::time::Instant::now();
    s.write_all(&data).unwrap();
    let mut back = Vec::new();
    let mut reads = Vec::new();
    let mut buf = [0u8; 4096];
    while back.len() < data.len() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {} bytes", back.len());
        reads.push((back.len(), n, sent.elapsed()));
        back.extend_from_slice(&buf[..n]);
    }
    assert!(back == data, "exact");
    for &(offset, n, after) in &reads {
        assert!(n <= 100, "a read of {n} bytes from 100-byte slices: {reads:?}");
        let earliest = Duration::from_millis(40) * (offset / 100) as u32;
        assert!(after + Duration::from_millis(2) >= earliest, "early: {reads:?}");
    }
    assert!(reads.len() >= 10, "{reads:?}");
    wait_for("the cut counted", || server.stats().faults_sliced >= 1);
}

/// slice=1..7 without a delay: a bulk echo through random small pieces stays exact.
#[test]
fn random_slices_keep_bulk_exact() {
    let server = faulty(tcp(), "slice=1..7", |c| c.max_pending = 64 * 1024);
    let s = connect(server.tcp_addr().unwrap());
    let data = util::payload(256 * 1024, 3);
    let back = util::echo_concurrently(&s, &data, 16 * 1024);
    assert!(back == data, "exact through 1..7-byte pieces");
    assert!(server.stats().faults_sliced > 0);
}

/// UDP latency=30ms&jitter=20ms: every datagram comes back once, no sooner than 10 ms after it
/// was sent, and the jitter reorders a burst; each reply is counted as delayed.
#[test]
fn udp_latency_and_jitter_delay_and_reorder() {
    let server = faulty(udp(), "latency=30ms&jitter=20ms", |_| {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.udp_addr().unwrap()).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let start = std::time::Instant::now();
    for i in 0..200u32 {
        sock.send(&i.to_le_bytes()).unwrap();
    }
    let mut order = Vec::new();
    let mut buf = [0u8; 16];
    while order.len() < 200 {
        let n = sock.recv(&mut buf).expect("every reply arrives");
        order.push(u32::from_le_bytes(buf[..n].try_into().unwrap()));
        if order.len() == 1 {
            assert!(start.elapsed() >= Duration::from_millis(10), "{:?}", start.elapsed());
        }
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "each once");
    assert_ne!(order, sorted, "jitter reorders");
    assert_eq!(server.stats().faults_delayed, 200);
}

fn clean(listeners: Vec<ListenSpec>) -> ricochet::Handle {
    let faults = vec![None; listeners.len()];
    ricochet::spawn(Config { listeners, faults, seed: Some(1), ..Config::default() }).unwrap()
}

/// Nothing arrives within `wait` (the absence of an echo can only be checked by waiting).
fn assert_silent(s: &mut std::net::TcpStream, wait: Duration) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
}

/// Handle::set_faults on a running server: an open plain connection takes the new plan at once,
/// its byte count running from its start (10 echoed before, close-after=15 lets 5 more out);
/// a new connection gets it too; removing it makes new connections clean again.
#[test]
fn set_faults_reaches_open_and_new_connections() {
    let server = clean(vec![tcp()]);
    let mut s = connect(server.tcp_addr().unwrap());
    util::ping(&mut s, b"0123456789");
    server.set_faults(0, Some("close-after=15".parse().unwrap())).unwrap();
    s.write_all(b"abcdefghij").unwrap();
    assert_eq!(util::read_to_eof(&s), b"abcde", "15 bytes from the start, then FIN");
    let (got, end) = send_and_collect(&server, 100);
    assert_eq!((got, end), (pattern(15), "eof"), "a new connection");
    server.set_faults(0, None).unwrap();
    let mut s = connect(server.tcp_addr().unwrap());
    let data = util::payload(100_000, 5);
    assert!(util::echo_concurrently(&s, &data, 4096) == data, "clean again");
    util::ping(&mut s, b"still");
    assert_eq!(server.shutdown().unwrap().faults_closed_after, 2);
}

/// A stall set at run time silences an open connection at once (it had echoed more than
/// stall-after); removing the plan resumes it, and the input it sent while stalled comes back.
#[test]
fn a_stall_set_and_removed_at_run_time() {
    let server = clean(vec![tcp()]);
    let mut s = connect(server.tcp_addr().unwrap());
    util::ping(&mut s, b"before");
    server.set_faults(0, Some("stall-after=0".parse().unwrap())).unwrap();
    wait_for("the stall counted", || server.stats().faults_stalled == 1);
    s.write_all(b"while stalled").unwrap();
    assert_silent(&mut s, Duration::from_millis(200));
    server.set_faults(0, None).unwrap();
    let mut back = [0u8; 13];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"while stalled");
    util::ping(&mut s, b"after");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.bytes_in, stats.bytes_out, "{stats:?}");
}

/// A plan replaced on a faulty connection: latency then a rate, then removed; every byte comes
/// back in order throughout, and a plan on one listener leaves its neighbour clean.
#[test]
fn plans_replaced_while_bytes_are_held_keep_order() {
    let server = clean(vec![tcp(), tcp()]);
    let addrs: Vec<_> = server.local_addrs().to_vec();
    let neighbour = addrs[1].addr().unwrap();
    server.set_faults(0, Some("latency=30ms".parse().unwrap())).unwrap();
    let mut s = connect(server.tcp_addr().unwrap());
    let mut other = connect(neighbour);
    let mut expected = Vec::new();
    for (i, plan) in ["rate=1MiB&slice=1..100", "latency=5ms&jitter=5ms", "off"].iter().enumerate()
    {
        let chunk = util::payload(20_000, i as u64);
        s.write_all(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
        let plan = (*plan != "off").then(|| plan.parse().unwrap());
        server.set_faults(0, plan).unwrap();
        util::ping(&mut other, b"neighbour");
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(util::read_to_eof(&s) == expected, "exact and in order across three changes");
    let start = std::time::Instant::now();
    util::ping(&mut other, b"clean");
    assert!(start.elapsed() < Duration::from_millis(30) + TIMEOUT);
}

/// UDP: drop=1 set at run time drops every datagram (counted); removed, echo resumes.
#[test]
fn udp_plan_set_and_removed_at_run_time() {
    let server = clean(vec![udp()]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.udp_addr().unwrap()).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    sock.send(b"one").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"one");
    server.set_faults(0, Some("drop=1".parse().unwrap())).unwrap();
    sock.send(b"two").unwrap();
    wait_for("the drop", || server.stats().faults_dropped == 1);
    server.set_faults(0, None).unwrap();
    sock.send(b"three").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"three", "nothing of `two` came back");
}

/// Refused changes name why and change nothing.
#[test]
fn set_faults_refuses_what_does_not_fit() {
    let mut config = Config::ephemeral();
    config.listeners.push(ListenSpec::chat("127.0.0.1:0".parse().unwrap()));
    let server = ricochet::spawn(config).unwrap();
    let err = |i, plan: &str| server.set_faults(i, Some(plan.parse().unwrap())).unwrap_err();
    assert!(err(0, "drop=0.1").to_string().contains("`drop` is a datagram fault"));
    assert!(err(1, "latency=1ms").to_string().contains("chat"));
    assert!(err(2, "latency=1ms").to_string().contains("no listener 2"));
    let mut s = connect(server.tcp_addr().unwrap());
    util::ping(&mut s, b"unchanged");
    let controller = server.controller();
    server.shutdown().unwrap();
    let stopped = controller.set_faults(0, None).unwrap_err().to_string();
    assert!(stopped.contains("stopped"), "{stopped}");
}

/// --control: the socket exists when the ready line is out; `faults` changes a listener at
/// once (ok), bad commands get `error: ...` and change nothing, `stats` answers with the stats
/// line; the socket file is gone after exit.
#[test]
fn control_socket_changes_plans_of_a_running_process() {
    let path = std::env::temp_dir().join(format!("ricochet-control-{}.sock", std::process::id()));
    let server = ServerProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--control",
        path.to_str().unwrap(),
        "--seed",
        "9",
    ]);
    let control = std::os::unix::net::UnixStream::connect(&path).expect("bound before ready");
    let mut replies = std::io::BufReader::new(control.try_clone().unwrap());
    let mut ask = |command: &str| {
        use std::io::BufRead;
        (&control).write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    };
    assert_eq!(ask("faults 0 close-after=4"), "ok");
    let mut s = connect(server.addr(0));
    s.write_all(b"123456").unwrap();
    assert_eq!(util::read_to_eof(&s), b"1234");
    assert!(ask("faults 0 drop=0.5").starts_with("error: fault `drop` is a datagram fault"));
    assert!(ask("faults 1 off").starts_with("error: there is no listener 1"));
    assert!(ask("faults 0 latency=soon").starts_with("error: fault `latency`"));
    assert!(ask("reboot").starts_with("error: unknown command `reboot`"));
    // A duration past the longest is refused here too (it once answered ok, and the next
    // connection then killed the server).
    let reply = ask("faults 0 latency=9223372036854775807s");
    assert!(reply.starts_with("error: fault `latency`") && reply.contains("100 years"), "{reply}");
    let mut s = connect(server.addr(0));
    s.write_all(b"abcdef").unwrap();
    assert_eq!(util::read_to_eof(&s), b"abcd", "the refused commands changed nothing");
    assert_eq!(ask("faults 0 off"), "ok");
    let mut s = connect(server.addr(0));
    util::ping(&mut s, b"clean again");
    drop(s);
    let stats: serde_json::Value = serde_json::from_str(&ask("stats")).unwrap();
    assert_eq!(stats["event"], "stats");
    assert_eq!(stats["faults"]["closed_after"], 2);
    // A line that is not UTF-8, or longer than 64 KiB, is answered, and the lines behind it
    // still are (the first once closed the connection without a word, the second with one).
    let control = std::os::unix::net::UnixStream::connect(&path).unwrap();
    control.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let mut lines = b"faults 0 \xff\xfe\n".to_vec();
    lines.extend(std::iter::repeat_n(b'x', 70_000));
    lines.extend_from_slice(b"\n\nstats\n");
    (&control).write_all(&lines).unwrap();
    let replies: Vec<String> = {
        use std::io::BufRead;
        std::io::BufReader::new(&control).lines().take(3).map(Result::unwrap).collect()
    };
    assert_eq!(replies[0], "error: a command line must be UTF-8 text");
    assert_eq!(replies[1], "error: a command line longer than 65536 bytes");
    assert!(replies[2].starts_with("{\"event\":\"stats\""), "{}", replies[2]);
    server.signal(libc::SIGTERM);
    let (code, _, _) = server.wait();
    assert_eq!(code, 0);
    assert!(!path.exists(), "the control socket is removed at exit");
}
