//! TCP echo through the library (`ricochet::spawn`): exact bytes whatever the sizes and splits,
//! half-close, many connections, fairness, limits and timeouts, with exact counters.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ricochet::{Config, ListenSpec};
use util::*;

fn spawn_with(mutate: impl FnOnce(&mut Config)) -> ricochet::Handle {
    let mut config = Config::ephemeral();
    mutate(&mut config);
    ricochet::spawn(config).expect("spawn")
}

/// Sizes from 1 byte to 16 MiB come back byte for byte while the client writes and reads at once,
/// with writes split at odd sizes; the counters match exactly.
#[test]
fn exact_echo_for_every_size() {
    let server = spawn_with(|_| {});
    let addr = server.tcp_addr().unwrap();
    let mut total = 0u64;
    for (i, &size) in
        [1usize, 2, 63, 64, 1000, 4096, 65535, 65536, 65537, 1 << 20, 16 << 20].iter().enumerate()
    {
        let stream = connect(addr);
        let data = payload(size, i as u64);
        let back = echo_concurrently(&stream, &data, 7919);
        assert!(back == data, "{size} bytes: echo differs");
        assert_eq!(finish(&stream), b"", "nothing after the echo");
        total += size as u64;
    }
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.bytes_in, total);
    assert_eq!(stats.bytes_out, total);
    assert_eq!(stats.accepted, 11);
    assert_eq!(stats.closed, 11);
    assert_eq!(stats.resets, 0);
}

/// Pipelined requests interleaved with partial reads come back in order.
#[test]
fn pipelined_messages_keep_their_order() {
    let server = spawn_with(|_| {});
    let mut stream = connect(server.tcp_addr().unwrap());
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let msg = format!("message {i:05}|");
        stream.write_all(msg.as_bytes()).unwrap();
        expected.extend_from_slice(msg.as_bytes());
    }
    let mut got = vec![0; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, expected);
}

/// 10 MiB then shutdown(Write): every byte comes back, then an orderly EOF (not a reset).
#[test]
fn half_close_gets_everything_back_then_eof() {
    let server = spawn_with(|_| {});
    let stream = connect(server.tcp_addr().unwrap());
    let data = payload(10 << 20, 42);
    let mut writer = stream.try_clone().unwrap();
    let back = std::thread::scope(|s| {
        s.spawn(|| {
            writer.write_all(&data).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        read_to_eof(&stream)
    });
    assert!(back == data, "got {} of {} bytes, or different bytes", back.len(), data.len());
    drop(stream);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.closed, stats.resets), (1, 0));
}

/// Data and FIN in one go, many times: the short-read shortcut must never miss the EOF.
#[test]
fn data_then_fin_in_one_go() {
    let server = spawn_with(|_| {});
    let addr = server.tcp_addr().unwrap();
    for i in 0..300 {
        let mut stream = connect(addr);
        let msg = payload(1 + i * 7, i as u64);
        stream.write_all(&msg).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&stream), msg, "round {i}");
    }
}

/// 1000 connections opened in one burst are each served.
#[test]
fn thousand_connections_in_one_burst() {
    raise_nofile(4096);
    let server = spawn_with(|_| {});
    let addr = server.tcp_addr().unwrap();
    let mut clients: Vec<_> = (0..1000).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("client {i}").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let want = format!("client {i}");
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, want.as_bytes());
    }
    // Counters are published at the end of each reactor turn: wait for the turn to finish.
    wait_for("1000 accepted", || server.stats().accepted == 1000);
    assert_eq!(server.stats().active, 1000);
    drop(clients);
    wait_for("all 1000 closed", || server.stats().closed == 1000);
    assert_eq!(server.stats().active, 0);
}

/// One connection flooding the server (writing and reading as fast as it can) does not starve
/// 20 ping-pong clients: each completes its 200 round trips while the flood goes on.
#[test]
fn a_flooder_does_not_starve_others() {
    let server = spawn_with(|_| {});
    let addr = server.tcp_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let flood = connect(addr);
        let mut flood_w = flood.try_clone().unwrap();
        let stop = &stop;
        s.spawn(move || {
            let chunk = vec![0xAB; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if flood_w.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = flood_w.shutdown(Shutdown::Write);
        });
        s.spawn(move || {
            let mut buf = vec![0; 256 * 1024];
            let mut flood_r = &flood;
            while flood_r.read(&mut buf).is_ok_and(|n| n > 0) {}
        });
        let pingers: Vec<_> = (0..20)
            .map(|i| {
                s.spawn(move || {
                    let mut c = connect(addr);
                    for round in 0..200 {
                        ping(&mut c, format!("{i}:{round}").as_bytes());
                    }
                })
            })
            .collect();
        for p in pingers {
            p.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(server.stats().bytes_in > 1 << 20, "the flood did flow");
}

/// Over `max_conns`, a connection is accepted and closed at once, and counted as rejected; the
/// served ones keep working.
#[test]
fn max_conns_rejects_the_excess() {
    let server = spawn_with(|c| c.max_conns = Some(2));
    let addr = server.tcp_addr().unwrap();
    let mut a = connect(addr);
    let mut b = connect(addr);
    ping(&mut a, b"a");
    ping(&mut b, b"b");
    let c = connect(addr);
    assert_eq!(read_to_eof(&c), b"", "the third connection is closed at once");
    wait_for("the rejection to be counted", || server.stats().rejected == 1);
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.rejected, stats.active), (2, 1, 2));
    ping(&mut a, b"still served");
    drop(b);
    wait_for("a slot to free", || server.stats().active == 1);
    let mut d = connect(addr);
    ping(&mut d, b"d fits again");
}

/// The idle timeout closes a silent connection (orderly EOF) but not one that keeps talking.
#[test]
fn idle_timeout_spares_active_connections() {
    let server = spawn_with(|c| c.idle_timeout = Some(Duration::from_millis(300)));
    let addr = server.tcp_addr().unwrap();
    let idle = connect(addr);
    let mut active = connect(addr);
    let active = std::thread::scope(|s| {
        let talker = s.spawn(move || {
            // Talk every 50 ms for 1.2 s: four idle timeouts' worth.
            for i in 0..24 {
                ping(&mut active, format!("ping {i}").as_bytes());
                std::thread::sleep(Duration::from_millis(50));
            }
            active
        });
        assert_eq!(read_to_eof(&idle), b"", "the idle client sees EOF");
        let mut active = talker.join().unwrap();
        ping(&mut active, b"still open");
        active // kept open until the counters are read: its close would count too
    });
    wait_for("the idle close to be counted", || server.stats().idle_timeouts == 1);
    assert_eq!(server.stats().closed, 1, "only the idle one closed");
    drop(active);
}

/// Clients that reset (SO_LINGER 0) in the middle of an echo close only their own connection.
#[test]
fn resets_close_only_that_connection() {
    raise_nofile(4096);
    let server = spawn_with(|_| {});
    let addr = server.tcp_addr().unwrap();
    let mut survivor = connect(addr);
    let clients: Vec<_> = (0..500).map(|_| connect(addr)).collect();
    for (i, mut c) in clients.into_iter().enumerate() {
        c.write_all(&payload(100_000, i as u64)).unwrap();
        socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
        drop(c); // RST, with echo data unread
    }
    wait_for("every reset connection closed", || server.stats().closed == 500);
    ping(&mut survivor, b"unaffected");
    assert_eq!(server.stats().active, 1);
}

/// One process serves IPv4 and IPv6 listeners side by side.
#[test]
fn ipv4_and_ipv6_listeners_together() {
    let server = spawn_with(|c| {
        c.listeners = vec![
            ListenSpec::tcp("127.0.0.1:0".parse().unwrap()),
            ListenSpec::tcp("[::1]:0".parse().unwrap()),
        ];
    });
    let addrs: Vec<SocketAddr> = server
        .local_addrs()
        .iter()
        .map(|a| match (a.proto(), a.addr()) {
            ("tcp", Some(a)) => a,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
    assert_ne!(addrs[0].port(), 0);
    for addr in addrs {
        let mut c = connect(addr);
        ping(&mut c, format!("hello over {addr}").as_bytes());
    }
}

/// A peer that writes but never reads fills the server's cap and then the kernel buffers; the
/// server stops reading (backpressure), other clients are still served, and when the peer finally
/// reads, every byte comes back.
#[test]
fn backpressure_then_full_recovery() {
    let server = spawn_with(|c| c.max_pending = 64 * 1024);
    let addr = server.tcp_addr().unwrap();
    let hog = connect(addr);
    let data = payload(32 << 20, 7);
    let written = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut w = hog.try_clone().unwrap();
        let (data, written) = (&data, &written);
        s.spawn(move || {
            for chunk in data.chunks(64 * 1024) {
                w.write_all(chunk).unwrap();
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        });
        // Wait until the writer is stuck: the server has stopped reading.
        let mut last = usize::MAX;
        wait_for("the writer to block", || {
            let now = written.load(Ordering::Relaxed);
            let stuck = now == last && now > 0;
            last = now;
            std::thread::sleep(Duration::from_millis(100));
            stuck
        });
        assert!(written.load(Ordering::Relaxed) < data.len(), "the writer did block");
        let mut other = connect(addr);
        ping(&mut other, b"served during backpressure");
        let mut back = vec![0; data.len()];
        (&hog).read_exact(&mut back).unwrap();
        assert!(back == *data, "the backpressured echo differs");
    });
}

/// A client that keeps talking through a graceful drain is served until it goes quiet, then gets
/// an orderly EOF; this holds even when the server sat idle before the drain (without timeouts it
/// does not read the clock while idle, so its idea of "last active" is old).
#[test]
fn drain_serves_a_talking_client_until_it_goes_quiet() {
    let server = spawn_with(|c| c.drain_timeout = Duration::from_secs(30));
    let mut c = connect(server.tcp_addr().unwrap());
    ping(&mut c, b"before the drain");
    std::thread::sleep(Duration::from_millis(300)); // not synchronisation: the idle spell itself
    server.stopper().drain();
    // A pause shorter than the 100 ms grace period: the connection is not yet quiet.
    std::thread::sleep(Duration::from_millis(50));
    // Six grace periods of talk: every round trip must still be served.
    for i in 0..30 {
        ping(&mut c, format!("during the drain {i}").as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_to_eof(&c), b"", "closed once quiet");
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.closed, stats.drain_aborted, stats.resets), (1, 0, 0));
}
