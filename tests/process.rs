//! The `ricochet` binary as a process: ready line, signals and drain, exit codes and messages,
//! environment variables, stats lines, fd exhaustion, memory bound and fd hygiene.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use util::*;

/// SIGTERM while clients are mid-transfer (tens of MiB each, not reading yet): listeners close at
/// once, every byte is still echoed, then each client gets EOF, and the process exits 0 with a
/// `stopped` line whose counters add up.
#[test]
fn sigterm_drains_clients_mid_transfer() {
    let mut server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--drain-timeout", "60s"]);
    let addr = server.addr(0);
    const SIZE: usize = 24 << 20;
    let progress: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..3).map(|_| connect(addr)).collect();
        for (i, c) in clients.iter().enumerate() {
            let mut w = c.try_clone().unwrap();
            let progress = &progress[i];
            s.spawn(move || {
                for chunk in payload(SIZE, i as u64).chunks(256 * 1024) {
                    w.write_all(chunk).unwrap();
                    progress.fetch_add(chunk.len(), Ordering::Relaxed);
                }
                // Client 0 half-closes; the others just go quiet once done.
                if i == 0 {
                    w.shutdown(Shutdown::Write).unwrap();
                }
            });
        }
        wait_for("every client to be sending", || {
            progress.iter().all(|p| p.load(Ordering::Relaxed) >= 1 << 20)
        });
        server.signal(libc::SIGTERM);
        // Listeners close at once: a new connection is refused (or reset) promptly.
        wait_for("the listener to close", || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
        });
        for (i, c) in clients.iter().enumerate() {
            let mut back = vec![0; SIZE];
            (&*c).read_exact(&mut back).unwrap();
            assert!(back == payload(SIZE, i as u64), "client {i}: echo differs");
            assert_eq!(read_to_eof(c), b"", "client {i}: EOF after the echo");
        }
    });
    let stopped = server.next_line();
    assert_eq!(stopped["event"], "stopped");
    assert_eq!(stopped["bytes_in"], 3 * SIZE as u64);
    assert_eq!(stopped["bytes_out"], 3 * SIZE as u64);
    // The listener probes above may have been accepted before the signal landed; each is closed.
    assert_eq!(stopped["closed"], stopped["accepted"]);
    assert_eq!((stopped["resets"].as_u64(), stopped["drain_aborted"].as_u64()), (Some(0), Some(0)));
    let (code, _, err) = server.wait();
    assert_eq!(code, 0, "stderr: {err}");
    assert!(err.contains("SIGTERM"), "stderr says what happened: {err}");
}

/// With only idle clients, SIGTERM ends the process almost at once even with a long drain timeout.
#[test]
fn sigterm_with_idle_clients_exits_at_once() {
    let server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--drain-timeout", "60s"]);
    let addr = server.addr(0);
    let mut clients: Vec<_> = (0..10).map(|_| connect(addr)).collect();
    for c in &mut clients {
        ping(c, b"hi");
    }
    let start = Instant::now();
    server.signal(libc::SIGTERM);
    for c in &clients {
        assert_eq!(read_to_eof(c), b"", "idle clients get an orderly EOF");
    }
    let (code, out, _) = server.wait();
    assert_eq!(code, 0);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    let stopped: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (stopped["closed"].as_u64(), stopped["drain_aborted"].as_u64()),
        (Some(10), Some(0))
    );
}

/// A second signal during the drain stops at once, cutting off busy connections.
#[test]
fn second_signal_stops_at_once() {
    let server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--drain-timeout", "60s"]);
    let c = connect(server.addr(0));
    // Owed output that is never read keeps the connection busy.
    let mut w = c.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = w.write_all(&vec![1u8; 64 << 20]);
    });
    wait_for("output to be owed", || c.peek(&mut [0]).is_ok());
    server.signal(libc::SIGTERM);
    server.signal(libc::SIGINT);
    let (code, out, _) = server.wait();
    assert_eq!(code, 0);
    let stopped: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(stopped["drain_aborted"], 1);
}

/// Usage errors exit 2 with a message naming the problem; nothing panics.
#[test]
fn bad_command_lines_exit_2() {
    for (args, needle) in [
        (&["--tcp", "not-an-address"][..], "not an address"),
        (&["--max-pending", "-5"], "max-pending"),
        (&["--max-pending", "0"], "max-pending"),
        (&["--max-pending", "99GiB"], "max-pending"),
        (&["--max-conns", "0"], "max-conns"),
        (&["--idle-timeout", "5"], "duration"),
        (&["--backlog", "-1"], "backlog"),
        (&["--frobnicate"], "frobnicate"),
        (&["--tcp", "127.0.0.1:99999"], "port 99999 in `127.0.0.1:99999` is out of range"),
        (&["--idle-timeout", "-1s"], "`-1s` is not a duration"),
        (&["--nodelay", "--no-nodelay"], "cannot be used with"),
        (&["--chat", "127.0.0.1"], "no port"),
        (&["--max-line", "0"], "max-line"),
        // Durations past the longest taken (they once panicked when added to the clock).
        (&["--idle-timeout", "9223372036854775807s"], "longest duration taken, 100 years"),
        (&["--stats-interval", "9223372036854775807s"], "100 years"),
        (&["--tls-handshake-timeout", "9223372036854775807s"], "100 years"),
        (&["--drain-timeout", "101years"], "100 years"),
        (&["--drain-grace", "9223372036854775807s"], "100 years"),
        (&["--tcp", "127.0.0.1:0?latency=9223372036854775807s"], "100 years"),
        (&["--udp", "127.0.0.1:0?latency=9223372036854775807s"], "100 years"),
        (&["--tcp", "127.0.0.1:0?slice=1&slice-delay=9223372036854775807s"], "100 years"),
        (&["--udp", "127.0.0.1:0?jitter=9223372036854775807s"], "100 years"),
    ] {
        let (code, err) = run_to_exit(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: message {err:?} does not mention {needle:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A port in use is a runtime failure: exit 1 and one clear line.
#[test]
fn port_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_to_exit(&["--tcp", &addr]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "the cause said once: {err}");
    let (code, err) = run_to_exit(&["--unix", "/nonexistent-ricochet-dir/echo.sock"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the cause said once: {err}");
}

/// A reader that goes away (`ricochet | head -n1`, as a CI script reads the ready line) never
/// stops the server: stats and stopped lines to the closed pipe are dropped, it keeps echoing,
/// and SIGTERM still ends it with exit 0.
#[test]
fn closed_stdout_never_stops_the_server() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ricochet"))
        .args(["--tcp", "127.0.0.1:0", "--stats-interval", "10ms"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // The reader is gone now, as `head -n1` would be.
    let ready: serde_json::Value = serde_json::from_str(&first).unwrap();
    let addr: std::net::SocketAddr =
        ready["listeners"][0]["addr"].as_str().unwrap().parse().unwrap();
    let mut client = connect(addr);
    for i in 0..50 {
        ping(&mut client, format!("still here {i}").as_bytes());
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the stopped line to a closed pipe must not kill it");
}

/// Every flag reads its RICOCHET_* variable; the ready file holds the ready line.
#[test]
fn environment_variables_and_ready_file() {
    let dir = std::env::temp_dir().join(format!("ricochet-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready_file = dir.join("ready.json");
    let server = ServerProcess::start_with(
        Command::new(env!("CARGO_BIN_EXE_ricochet"))
            .env("RICOCHET_TCP", "127.0.0.1:0,[::1]:0")
            .env("RICOCHET_MAX_CONNS", "1")
            .env("RICOCHET_READY_FILE", &ready_file),
    );
    let listeners = server.ready["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2);
    assert!(server.addr(1).is_ipv6());
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready_file).unwrap()).unwrap();
    assert_eq!(file, server.ready);
    let mut first = connect(server.addr(0));
    ping(&mut first, b"one");
    let second = connect(server.addr(1));
    assert_eq!(read_to_eof(&second), b"", "RICOCHET_MAX_CONNS=1 took effect");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--stats-interval` prints stats lines with the live counters.
#[test]
fn stats_interval_lines() {
    let mut server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--stats-interval", "50ms"]);
    let mut c = connect(server.addr(0));
    ping(&mut c, b"0123456789");
    let line = loop {
        let line = server.next_line();
        assert_eq!(line["event"], "stats");
        if line["bytes_out"] == 10 {
            break line;
        }
    };
    assert_eq!(line["accepted"], 1);
    assert_eq!(line["active"], 1);
    assert_eq!(server.next_line()["event"], "stats", "lines keep coming");
}

/// Under RLIMIT_NOFILE=64 with 200 clients the server stays alive, does not spin on EMFILE, and
/// serves new clients once fds free up.
#[test]
fn fd_exhaustion_backs_off_and_recovers() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ricochet"));
    cmd.args(["--tcp", "127.0.0.1:0"]);
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = ServerProcess::start_with(&mut cmd);
    let addr = server.addr(0);
    let clients: Vec<_> = (0..200).map(|_| connect(addr)).collect();
    wait_for("the fd limit to be reached", || server.fd_count() >= 60);
    // Not spinning: over one second the server uses a small fraction of a CPU.
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    assert!(used < 30, "server used {used} ticks of 100 in a second: spinning on EMFILE?");
    // Those accepted are served.
    let mut first = clients.into_iter().next().unwrap();
    ping(&mut first, b"accepted before the limit");
    drop(first);
    // Free everything; a new client is served once the backlog clears.
    let mut fresh = connect(addr);
    ping(&mut fresh, b"served after fds free up");
    let (code, out, err) = {
        server.signal(libc::SIGTERM);
        server.wait()
    };
    assert_eq!(code, 0, "{err}");
    let stopped: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(stopped["accept_errors"].as_u64().unwrap() >= 1);
    assert!(err.contains("Too many open files"), "EMFILE is reported: {err}");
}

/// A client writing 256 MiB without reading: the server's memory stays within its cap plus a
/// small constant, others keep being served, and when the client reads every byte comes back.
#[test]
fn slow_reader_memory_is_bounded() {
    const CAP: u64 = 1 << 20;
    let server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--max-pending", "1MiB"]);
    let addr = server.addr(0);
    // Warm up: touch the shared read buffer and a full output block once.
    let warm = connect(addr);
    echo_concurrently(&warm, &payload(4 << 20, 1), 1 << 20);
    drop(warm);
    let baseline = server.rss_kib();
    const SIZE: usize = 256 << 20;
    let hog = connect(addr);
    let written = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut w = hog.try_clone().unwrap();
        let written = &written;
        s.spawn(move || {
            let chunk = payload(1 << 20, 9);
            for _ in 0..SIZE >> 20 {
                w.write_all(&chunk).unwrap();
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        });
        let mut last = usize::MAX;
        wait_for("the writer to block", || {
            let now = written.load(Ordering::Relaxed);
            let stuck = now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(200));
            stuck
        });
        let grown = server.rss_kib().saturating_sub(baseline);
        assert!(
            grown <= CAP / 1024 + 4096,
            "RSS grew by {grown} KiB with a {} KiB cap",
            CAP / 1024
        );
        let mut other = connect(addr);
        ping(&mut other, b"others are served");
        let chunk = payload(1 << 20, 9);
        let mut back = vec![0; 1 << 20];
        for i in 0..SIZE >> 20 {
            (&hog).read_exact(&mut back).unwrap();
            assert!(back == chunk, "MiB {i} differs");
        }
    });
}

/// 500 clients that reset mid-echo leave the server alive with its fd count back at baseline.
#[test]
fn resets_leave_no_fds_behind() {
    let server = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--stats-interval", "1h"]);
    let addr = server.addr(0);
    let baseline = server.fd_count();
    for round in 0..5 {
        let clients: Vec<_> = (0..100).map(|_| connect(addr)).collect();
        for (i, mut c) in clients.into_iter().enumerate() {
            c.write_all(&payload(64 * 1024, (round * 100 + i) as u64)).unwrap();
            socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
        }
    }
    wait_for("fds back to baseline", || server.fd_count() == baseline);
    let mut c = connect(addr);
    ping(&mut c, b"alive");
}

/// With `--reuseport` two servers share one port, and both serve; a third without the flag is
/// refused the port (exit 1).
#[test]
fn reuseport_lets_servers_share_a_port() {
    let first = ServerProcess::start(&["--tcp", "127.0.0.1:0", "--reuseport"]);
    let addr = first.addr(0).to_string();
    let second = ServerProcess::start(&["--tcp", &addr, "--reuseport"]);
    assert_eq!(second.addr(0), first.addr(0));
    for i in 0..20 {
        let mut c = connect(first.addr(0));
        ping(&mut c, format!("either server {i}").as_bytes());
    }
    let (code, err) = run_to_exit(&["--tcp", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use"), "{err}");
}

/// The socket-option flags are accepted together and the server still echoes exactly with them.
#[test]
fn socket_option_flags_work_together() {
    let server = ServerProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--no-nodelay",
        "--keepalive",
        "30s",
        "--recv-buffer",
        "64KiB",
        "--send-buffer",
        "64KiB",
        "--backlog",
        "16",
    ]);
    let c = connect(server.addr(0));
    let data = payload(1 << 20, 5);
    assert!(echo_concurrently(&c, &data, 4096) == data);
}

/// `--completions SHELL` prints a completion script naming the flags, and `--man-page` a man page,
/// both from the same definitions as `--help`; neither starts a server.
#[test]
fn completions_and_man_page_come_from_the_flags() {
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_ricochet")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["--completions", "bash"]);
    assert!(
        bash.contains("_ricochet()") && bash.contains("--tls-cert") && bash.contains("--threads")
    );
    let zsh = run(&["--completions", "zsh"]);
    assert!(zsh.starts_with("#compdef ricochet"), "{zsh}");
    let man = run(&["--man-page"]);
    assert!(man.contains(".TH ricochet 1") && man.contains("tls\\-handshake\\-timeout"), "{man}");
    let (code, err) = run_to_exit(&["--completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}
