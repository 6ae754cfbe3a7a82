//! Several reactors (`Config::threads`, `--threads`): connections spread evenly however few
//! there are, each echoes exactly, UDP is served by every reactor, the connection limit and fault
//! changes span the process, a chat room works, and one SIGTERM drains them all.

mod util;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};

use ricochet::{Config, ListenSpec};
use util::{connect, wait_for, ServerProcess, TIMEOUT};

fn threaded(threads: usize, listeners: Vec<ListenSpec>) -> ricochet::Handle {
    ricochet::spawn(Config { listeners, threads, ..Config::default() }).expect("spawn")
}

fn tcp() -> ListenSpec {
    ListenSpec::tcp("127.0.0.1:0".parse().unwrap())
}

/// The spread of open connections over the reactors: (fewest, most).
fn spread(server: &ricochet::Handle) -> (u64, u64) {
    let active: Vec<u64> = server.reactor_stats().iter().map(|s| s.active).collect();
    (*active.iter().min().unwrap(), *active.iter().max().unwrap())
}

/// Connections opened one after another: after each, the reactors' counts differ by at most one.
#[test]
fn connections_opened_one_by_one_spread_evenly() {
    let server = threaded(4, vec![tcp()]);
    assert_eq!(server.reactor_stats().len(), 4);
    let mut conns = Vec::new();
    for k in 1..=9u64 {
        let mut s = connect(server.tcp_addr().unwrap());
        util::ping(&mut s, b"hello");
        conns.push(s);
        wait_for("the connection counted", || server.stats().active == k);
        let (low, high) = spread(&server);
        assert!(high - low <= 1, "after {k} connections: {:?}", server.reactor_stats());
    }
    // Closing some and opening more keeps it even: new ones go where there is room.
    conns.truncate(5);
    wait_for("four closed", || server.stats().active == 5);
    for k in 6..=8u64 {
        let mut s = connect(server.tcp_addr().unwrap());
        util::ping(&mut s, b"again");
        conns.push(s);
        wait_for("counted", || server.stats().active == k);
    }
    let accepted: u64 = server.reactor_stats().iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, 12);
}

/// 1000 connections opened at once (as a load generator starts) over 4 reactors spread evenly
/// too, and each echoes its own bytes exactly; the per-reactor counters add up to the totals.
#[test]
fn a_thousand_connections_at_once_spread_and_echo_exactly() {
    util::raise_nofile(4096);
    let server = threaded(4, vec![tcp()]);
    let addr = server.tcp_addr().unwrap();
    let conns: Vec<TcpStream> = (0..1000).map(|_| connect(addr)).collect();
    wait_for("1000 connections", || server.stats().active == 1000);
    let (low, high) = spread(&server);
    assert!(high - low <= 1, "{:?}", server.reactor_stats());
    std::thread::scope(|s| {
        for (t, chunk) in conns.chunks(100).enumerate() {
            s.spawn(move || {
                for (i, conn) in chunk.iter().enumerate() {
                    let data = util::payload(20_000, (t * 100 + i) as u64);
                    assert!(util::echo_concurrently(conn, &data, 4096) == data, "{t}/{i}");
                }
            });
        }
    });
    drop(conns);
    wait_for("all closed", || server.stats().active == 0);
    let each = server.reactor_stats();
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.bytes_in, stats.bytes_out), (20_000_000, 20_000_000));
    assert_eq!(each.iter().map(|r| r.bytes_in).sum::<u64>(), stats.bytes_in);
    assert_eq!(each.iter().map(|r| r.accepted).sum::<u64>(), 1000);
    assert_eq!(stats.resets, 0);
}

/// Port 0 with 2 and with 4 reactors resolves to one port that every reactor serves (TCP and
/// UDP), named once in the ready line; `--threads 0` runs one reactor per CPU.
#[test]
fn one_port_for_all_reactors_and_threads_0() {
    for threads in ["2", "4", "0"] {
        let server = ServerProcess::start(&[
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--threads",
            threads,
        ]);
        let listeners = server.ready["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 2, "each listener once");
        assert!(!server.ready["listeners"][0]["addr"].as_str().unwrap().ends_with(":0"));
        let mut conns: Vec<TcpStream> = (0..8).map(|_| connect(server.addr(0))).collect();
        for s in &mut conns {
            util::ping(s, b"same port");
        }
        server.signal(libc::SIGTERM);
        let (code, out, _) = server.wait();
        assert_eq!(code, 0);
        let stopped: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let expected = match threads {
            "0" => ricochet::sys::cpus_available(),
            n => n.parse().unwrap(),
        };
        assert_eq!(stopped["reactors"].as_array().unwrap().len(), expected);
    }
}

/// A drain with busy connections on every reactor loses nothing: each gets all of its echo, then
/// an orderly EOF.
#[test]
fn a_drain_with_busy_connections_on_every_reactor_loses_nothing() {
    let server = threaded(3, vec![tcp()]);
    let conns: Vec<TcpStream> = (0..6).map(|_| connect(server.tcp_addr().unwrap())).collect();
    for (i, mut s) in conns.iter().enumerate() {
        s.write_all(&util::payload(100_000, i as u64)).unwrap();
    }
    wait_for("every byte read", || server.stats().bytes_in == 600_000);
    assert_eq!(spread(&server), (2, 2));
    server.stopper().drain();
    for (i, s) in conns.iter().enumerate() {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(util::read_to_eof(s) == util::payload(100_000, i as u64), "connection {i}");
    }
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.bytes_out, stats.drain_aborted, stats.resets), (600_000, 0, 0));
}

/// Unix-domain listeners spread like TCP.
#[test]
fn unix_connections_spread() {
    let path = std::env::temp_dir().join(format!("ricochet-threads-{}.sock", std::process::id()));
    let server = threaded(2, vec![ListenSpec::unix(path.clone())]);
    let mut conns = Vec::new();
    for k in 1..=4u64 {
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"unix").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"unix");
        conns.push(s);
        wait_for("counted", || server.stats().active == k);
    }
    assert_eq!(spread(&server), (2, 2));
}

/// A UDP listener is served by every reactor (a socket each on the same port): datagrams from
/// many sources all come back.
#[test]
fn udp_with_several_reactors() {
    let server = threaded(2, vec![ListenSpec::udp("127.0.0.1:0".parse().unwrap())]);
    let addr = server.udp_addr().unwrap();
    for i in 0..40u32 {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        sock.send_to(&i.to_le_bytes(), addr).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&i.to_le_bytes()[..], addr));
    }
    wait_for("40 counted", || server.stats().datagrams_out == 40);
}

/// `max_conns` is one limit for the whole process, not one per reactor.
#[test]
fn the_connection_limit_spans_reactors() {
    let server =
        ricochet::spawn(Config { threads: 3, max_conns: Some(4), ..Config::ephemeral() }).unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut served = Vec::new();
    for _ in 0..4 {
        let mut s = connect(addr);
        util::ping(&mut s, b"in");
        served.push(s);
    }
    for _ in 0..2 {
        let refused = connect(addr);
        assert!(util::read_to_eof(&refused).is_empty(), "closed at once");
    }
    wait_for("two rejected", || server.stats().rejected == 2);
    assert_eq!(server.stats().active, 4);
}

/// A fault plan set at run time reaches the connections of every reactor.
#[test]
fn fault_changes_reach_every_reactor() {
    let server = threaded(2, vec![tcp()]);
    let mut conns: Vec<TcpStream> = (0..4).map(|_| connect(server.tcp_addr().unwrap())).collect();
    for s in &mut conns {
        util::ping(s, b"before");
    }
    assert_eq!(spread(&server), (2, 2));
    server.set_faults(0, Some("stall-after=0".parse().unwrap())).unwrap();
    wait_for("all four stalled", || server.stats().faults_stalled == 4);
    server.set_faults(0, None).unwrap();
    for s in &mut conns {
        util::ping(s, b"after");
    }
}

/// A chat room spans reactors: members are spread over them like any connection, a line reaches
/// every other member whichever reactor serves it, and names are one directory for the room.
#[test]
fn a_chat_room_spans_reactors() {
    let server = threaded(2, vec![ListenSpec::chat("127.0.0.1:0".parse().unwrap())]);
    let addr = server.chat_addr().unwrap();
    let mut members: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    wait_for("four members", || server.stats().chat_members == 4);
    let per: Vec<u64> = server.reactor_stats().iter().map(|s| s.chat_members).collect();
    assert_eq!(per, [2, 2], "members on both reactors");
    let read_line = |s: &mut TcpStream| {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            s.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    };
    // Member 0 (first reactor) takes a name; member 1 (second reactor) hears of it, then finds
    // it taken room-wide and takes another.
    members[0].write_all(b"/nick ann\n").unwrap();
    assert_eq!(read_line(&mut members[1]), "* ann joined\n");
    members[1].write_all(b"/nick ann\n/nick bo\n").unwrap();
    assert_eq!(read_line(&mut members[1]), "* error: the name ann is taken\n");
    assert_eq!(read_line(&mut members[0]), "* bo joined\n");
    for m in &mut members[2..] {
        assert_eq!(read_line(m), "* ann joined\n");
        assert_eq!(read_line(m), "* bo joined\n");
    }
    members[3].write_all(b"/who\n").unwrap();
    assert_eq!(read_line(&mut members[3]), "* members: ann, bo (+2 unnamed)\n");
    members[0].write_all(b"hello room\n").unwrap();
    for m in &mut members[1..] {
        assert_eq!(read_line(m), "ann: hello room\n");
    }
}

/// The binary: `--threads 2`, one SIGTERM drains both reactors, exit 0, and the stopped line has
/// one `reactors` entry each, summing to the totals.
#[test]
fn one_sigterm_drains_every_reactor() {
    let server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--threads", "2"]);
    let conns: Vec<TcpStream> = (0..4).map(|_| connect(server.addr(0))).collect();
    for mut s in &conns {
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    server.signal(libc::SIGTERM);
    for s in &conns {
        assert!(util::read_to_eof(s).is_empty(), "drained: an orderly EOF");
    }
    let (code, out, err) = server.wait();
    assert_eq!(code, 0, "{err}");
    let stopped: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let reactors = stopped["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 2);
    let accepted: u64 = reactors.iter().map(|r| r["accepted"].as_u64().unwrap()).sum();
    assert_eq!((stopped["accepted"].as_u64(), accepted), (Some(4), 4));
    assert!(reactors.iter().all(|r| r["accepted"] == 2), "{reactors:?}");
}
