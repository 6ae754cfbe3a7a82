//! A randomized model test of the live server: one `ricochet` process with a plain echo, a chat
//! room, a TLS echo, an echo behind a fault plan and a control socket, driven by a seeded random
//! mix of clients: echo clients sending in random pieces (half-closing at the end, or resetting
//! midway, or reading slowly), silent ones, chat members, garbage on the TLS port, garbage and
//! plan changes on the control socket; and in one run of four a SIGTERM at a random moment.
//!
//! After each run: every clean echo is exact (and every cut one a prefix of what was sent); every
//! chat line reached every other member exactly once, in its sender's order; the counters of the
//! stopped line balance (accepted = closed = the connections the clients made; chat lines and
//! deliveries, TLS handshakes and failures exactly as the clients caused them); the server holds
//! as many descriptors after the clients as before; and it exits 0.
//!
//! `cargo test --test random` runs a few fixed seeds. `RICOCHET_SEED=S` replays seed S (a failing
//! run prints its seed); `RICOCHET_SEEDS=N` runs N seeds from `RICOCHET_SEED` (default: the clock)
//! on, which is what `scripts/random.sh` does. A seed fixes the schedule (the clients, their
//! sizes and pieces, the plans, the moment of the SIGTERM); the threads' timing is the machine's,
//! so a replay runs the same schedule, not always the same interleaving.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use util::{payload, ServerProcess, TIMEOUT};

/// splitmix64: small, seedable, good enough to pick schedules.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The listeners, in the ready line's order.
const ECHO: usize = 0;
const CHAT: usize = 1;
const TLS: usize = 2;
const FAULTY: usize = 3;

/// Plans the control clients may set on the faulty listener: they shape time and pieces, never
/// bytes, so its echoes stay exact.
const PLANS: &[&str] = &["latency=1ms", "slice=7", "latency=2ms&jitter=1ms", "rate=2MiB", "off"];

/// The most a run may add to the server's resident memory.
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

/// What one client did and saw.
#[derive(Debug, Default)]
struct Report {
    /// Connections accepted by a listener (connects that succeeded; not the control socket).
    connections: u64,
    tls_handshakes: u64,
    tls_garbage: u64,
    chat_lines: u64,
    chat_received: u64,
    /// What went wrong; empty when the client saw what the model says.
    failures: Vec<String>,
    /// The client was cut short by the server's drain (only allowed in a SIGTERM run).
    cut: bool,
}

impl Report {
    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }
}

/// The server, its addresses, its control socket.
struct Target {
    addrs: Vec<SocketAddr>,
    control: std::path::PathBuf,
    cert: std::path::PathBuf,
}

#[test]
fn random_schedules() {
    let seeds: Vec<u64> = match (std::env::var("RICOCHET_SEED"), std::env::var("RICOCHET_SEEDS")) {
        (Ok(seed), Err(_)) => vec![seed.parse().expect("RICOCHET_SEED is a number")],
        (seed, Ok(n)) => {
            let first = seed.ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    % 1_000_000_000
            });
            let n: u64 = n.parse().expect("RICOCHET_SEEDS is a count");
            (first..first + n).collect()
        }
        _ => vec![1, 2, 3, 4],
    };
    let start = Instant::now();
    let mut most_growth = 0;
    for &seed in &seeds {
        match run(seed) {
            Ok((summary, growth)) => {
                most_growth = most_growth.max(growth);
                if seeds.len() <= 10 {
                    println!("seed {seed}: {summary}");
                }
                let done = seed - seeds[0] + 1;
                if seeds.len() > 10 && done.is_multiple_of(500) {
                    println!(
                        "random: {done} of {} held ({:.0} s)",
                        seeds.len(),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => panic!(
                "seed {seed} failed (replay: RICOCHET_SEED={seed} cargo test --release --test \
                 random -- --nocapture): {e}"
            ),
        }
    }
    println!(
        "random: {} schedules held in {:.1} s (largest RSS growth over a run: {most_growth} KiB)",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}

/// One run: a server, a seeded mix of clients, the checks.
fn run(seed: u64) -> Result<(String, u64), String> {
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("ricochet-random-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let control = dir.join("control.sock");
    let threads = rng.range(1, 3).to_string();
    let server = ServerProcess::start(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "chat://127.0.0.1:0",
        "--listen",
        "tls://127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:0?latency=1ms",
        "--control",
        control.to_str().unwrap(),
        "--threads",
        &threads,
        "--drain-grace",
        "50ms",
        "--drain-timeout",
        "3s",
    ]);
    let target = Arc::new(Target {
        addrs: (0..4).map(|i| server.addr(i)).collect(),
        control,
        cert: server.ready["listeners"][TLS]["cert"].as_str().unwrap().into(),
    });
    let (fds_before, rss_before) = (server.fd_count(), server.rss_kib());
    let sigterm_midway = rng.chance(4);
    let members = rng.range(0, 5) as usize;
    let members = if members == 1 { 2 } else { members };
    let others = rng.range(2, 9) as usize;

    let mut handles = Vec::new();
    let barrier = Arc::new(Barrier::new(members.max(1)));
    let lines = rng.range(1, 40);
    for k in 0..members {
        let (target, barrier, mut rng) =
            (Arc::clone(&target), Arc::clone(&barrier), Rng(rng.next()));
        handles.push(std::thread::spawn(move || {
            chat_member(&target, k, members, lines, &barrier, &mut rng)
        }));
    }
    for _ in 0..others {
        let (target, mut rng) = (Arc::clone(&target), Rng(rng.next()));
        let kind = rng.range(0, 8);
        handles.push(std::thread::spawn(move || match kind {
            0 | 1 => echo_client(&target, ECHO, &mut rng),
            2 => echo_client(&target, FAULTY, &mut rng),
            3 => tls_client(&target, &mut rng),
            4 => silent_client(&target, &mut rng),
            5 => tls_garbage(&target, &mut rng),
            6 => control_client(&target, &mut rng),
            _ => reset_client(&target, &mut rng),
        }));
    }
    if sigterm_midway {
        std::thread::sleep(Duration::from_millis(rng.range(0, 80)));
        server.signal(libc::SIGTERM);
    }
    let reports: Vec<Report> =
        handles.into_iter().map(|h| h.join().expect("a client panicked")).collect();
    let mut failures: Vec<String> = Vec::new();
    for r in &reports {
        if !sigterm_midway && r.cut {
            failures.push("a client was cut short with no SIGTERM".into());
        }
        failures.extend(r.failures.iter().cloned());
    }
    let mut growth = 0;
    if !sigterm_midway {
        // Every connection the clients made is closed by now or soon (the server sees the last
        // FINs after the clients have gone): then the server holds what it held before.
        let settled = Instant::now();
        while server.fd_count() != fds_before && settled.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(5));
        }
        if server.fd_count() != fds_before {
            failures.push(format!(
                "{} descriptors before the clients, {} after",
                fds_before,
                server.fd_count()
            ));
        }
        // Memory: the allocator may keep what the busiest moment took (buffers go back to a
        // pool, not to the kernel), so growth is bounded, not zero: a leak per byte or per
        // connection would pass the bound over a run.
        growth = server.rss_kib().saturating_sub(rss_before);
        if growth > MAX_RSS_GROWTH_KIB {
            failures.push(format!("RSS grew by {growth} KiB over the run"));
        }
        server.signal(libc::SIGTERM);
    }
    let (code, out, err) = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if code != 0 {
        failures.push(format!("exit code {code}: {err}"));
    }
    let stopped: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "stopped")
        .ok_or_else(|| format!("no stopped line in {out:?}"))?;
    let n = |k: &str| stopped[k].as_u64().unwrap_or(u64::MAX);
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    if n("accepted") != n("closed") || n("active") != 0 {
        failures.push(format!(
            "accepted {} closed {} active {}",
            n("accepted"),
            n("closed"),
            n("active")
        ));
    }
    if !sigterm_midway {
        let checks = [
            ("accepted", sum(|r| r.connections)),
            ("chat_lines", sum(|r| r.chat_lines)),
            ("chat_deliveries", sum(|r| r.chat_received)),
            ("tls_handshakes", sum(|r| r.tls_handshakes)),
            ("tls_failures", sum(|r| r.tls_garbage)),
        ];
        for (key, want) in checks {
            if n(key) != want {
                failures.push(format!("{key}: the server counted {}, the clients {want}", n(key)));
            }
        }
    }
    let summary = format!(
        "{} clients ({} chat members){}; server: accepted {}, bytes in {}, chat deliveries {}, \
         tls handshakes {}, tls failures {}, resets {}",
        reports.len(),
        members,
        if sigterm_midway { ", SIGTERM midway" } else { "" },
        n("accepted"),
        n("bytes_in"),
        n("chat_deliveries"),
        n("tls_handshakes"),
        n("tls_failures"),
        n("resets"),
    );
    let summary = format!("{summary}, RSS growth {growth} KiB");
    match failures.is_empty() {
        true => Ok((summary, growth)),
        false => Err(format!("sigterm midway: {sigterm_midway}; {}", failures.join("; "))),
    }
}

/// Whether an I/O error is the server going away (allowed only in a SIGTERM run; the caller
/// marks the report cut).
fn gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | BrokenPipe
            | UnexpectedEof
            | ConnectionAborted
            | NotConnected
    )
}

fn try_connect(addr: SocketAddr, r: &mut Report) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(s) => {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.set_write_timeout(Some(TIMEOUT)).unwrap();
            r.connections += 1;
            Some(s)
        }
        Err(e) if gone(&e) => {
            r.cut = true;
            None
        }
        Err(e) => {
            r.fail(format!("connect: {e}"));
            None
        }
    }
}

/// Random bytes in random pieces, read back concurrently, then a half-close: the whole echo and
/// then EOF (a prefix of it if the server drained us away); one in three reads slowly.
fn echo_client(target: &Target, listener: usize, rng: &mut Rng) -> Report {
    let mut r = Report::default();
    let Some(stream) = try_connect(target.addrs[listener], &mut r) else { return r };
    let len = match rng.range(0, 4) {
        0 => 0,
        1 => rng.range(1, 100),
        2 => rng.range(100, 20_000),
        _ => rng.range(20_000, 300_000),
    } as usize;
    let data = payload(len, rng.next());
    let slow = rng.chance(3);
    let mut writer = stream.try_clone().unwrap();
    let mut wrng = Rng(rng.next());
    let got = std::thread::scope(|s| {
        let data = &data;
        let w = s.spawn(move || {
            let mut at = 0;
            while at < data.len() {
                let piece = (wrng.range(1, 9000) as usize).min(data.len() - at);
                writer.write_all(&data[at..at + piece])?;
                at += piece;
                if wrng.chance(16) {
                    std::thread::sleep(Duration::from_micros(wrng.range(0, 2000)));
                }
            }
            writer.shutdown(Shutdown::Write)
        });
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0; if slow { 512 } else { 65536 }];
        let read = loop {
            match (&stream).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
            if slow && got.len() % 8192 < 512 {
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        (w.join().unwrap(), read, got)
    });
    let (wrote, read, got) = got;
    let exact = got == data;
    if !data.starts_with(&got) {
        r.fail(format!(
            "echo on listener {listener}: {} bytes back are not a prefix of the {} sent",
            got.len(),
            data.len()
        ));
    }
    for e in [wrote.err(), read.err()].into_iter().flatten() {
        if gone(&e) {
            r.cut = true;
        } else {
            r.fail(format!("echo on listener {listener}: {e}"));
        }
    }
    if !exact && !r.cut {
        r.fail(format!(
            "echo on listener {listener}: {} of {} bytes back, then EOF",
            got.len(),
            data.len()
        ));
    }
    r.cut |= !exact;
    r
}

/// Sends some bytes, maybe reads some back, then resets the connection.
fn reset_client(target: &Target, rng: &mut Rng) -> Report {
    let mut r = Report::default();
    let Some(mut stream) = try_connect(target.addrs[ECHO], &mut r) else { return r };
    let data = payload(rng.range(1, 50_000) as usize, rng.next());
    if stream.write_all(&data).is_err() {
        r.cut = true;
        return r;
    }
    if rng.chance(2) {
        let mut back = vec![0; data.len().min(100)];
        match stream.read_exact(&mut back) {
            Ok(()) if back[..] != data[..back.len()] => {
                r.fail("reset client: the echo differs".into())
            }
            Ok(()) => {}
            Err(_) => r.cut = true,
        }
    }
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    r
}

/// Connects, says nothing for a while, half-closes: gets EOF and nothing else.
fn silent_client(target: &Target, rng: &mut Rng) -> Report {
    let mut r = Report::default();
    // Not the chat room: an unnamed member there receives the others' lines.
    let listener = [ECHO, FAULTY][rng.range(0, 2) as usize];
    let Some(stream) = try_connect(target.addrs[listener], &mut r) else { return r };
    std::thread::sleep(Duration::from_millis(rng.range(0, 60)));
    let _ = stream.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    match (&stream).read_to_end(&mut got) {
        Ok(_) if got.is_empty() => {}
        Ok(_) => r.fail(format!("a silent client on listener {listener} got {} bytes", got.len())),
        Err(e) if gone(&e) => r.cut = true,
        Err(e) => r.fail(format!("silent client: {e}")),
    }
    r
}

/// Random bytes where a TLS ClientHello belongs, then EOF: the server refuses the handshake.
fn tls_garbage(target: &Target, rng: &mut Rng) -> Report {
    let mut r = Report::default();
    let Some(mut stream) = try_connect(target.addrs[TLS], &mut r) else { return r };
    let len = rng.range(1, 3000) as usize;
    let junk = rng.bytes(len);
    let _ = stream.write_all(&junk);
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink); // an alert or nothing, then EOF or a reset
    r.tls_garbage += 1;
    r
}

/// A TLS echo: random pieces, each read back exactly, then close_notify.
fn tls_client(target: &Target, rng: &mut Rng) -> Report {
    let mut r = Report::default();
    let Some(sock) = try_connect(target.addrs[TLS], &mut r) else { return r };
    let mut tls = util::rustls_over(&target.cert, sock);
    r.tls_handshakes += 1;
    for _ in 0..rng.range(1, 8) {
        let piece = payload(rng.range(1, 20_000) as usize, rng.next());
        let mut back = vec![0; piece.len()];
        let done = tls.write_all(&piece).and_then(|()| tls.read_exact(&mut back));
        match done {
            Ok(()) if back != piece => r.fail("TLS echo differs".into()),
            Ok(()) => {}
            Err(e) if gone(&e) => {
                r.cut = true;
                return r;
            }
            Err(e) => {
                r.fail(format!("TLS echo: {e}"));
                return r;
            }
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    r
}

/// Control lines: stats, plan changes on the faulty listener, garbage; one reply per line.
fn control_client(target: &Target, rng: &mut Rng) -> Report {
    let mut r = Report::default();
    let stream = match UnixStream::connect(&target.control) {
        Ok(s) => s,
        Err(_) => {
            r.cut = true; // gone with the server's drain
            return r;
        }
    };
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut lines = Vec::new();
    for _ in 0..rng.range(1, 6) {
        lines.push(match rng.range(0, 4) {
            0 => "stats".to_string(),
            1 => format!("faults {FAULTY} {}", PLANS[rng.range(0, PLANS.len() as u64) as usize]),
            2 => String::from_utf8_lossy(&{
                let len = rng.range(1, 40) as usize;
                rng.bytes(len)
            })
            .replace(['\n', '\r'], " "),
            _ => format!("faults {} latency=1ms", rng.range(4, 100)),
        });
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut writer = &stream;
    if writer.write_all(text.as_bytes()).is_err() {
        r.cut = true;
        return r;
    }
    let want = lines.iter().filter(|l| !l.trim().is_empty()).count();
    let mut reader = BufReader::new(&stream);
    for line in &lines[..want.min(lines.len())] {
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(0) | Err(_) => {
                r.cut = true; // the server stopped while answering
                return r;
            }
            Ok(_) => {}
        }
        let ok = reply.starts_with("ok\n")
            || reply.starts_with("error: ")
            || reply.starts_with("{\"event\":\"stats\"");
        if !ok {
            r.fail(format!("control: {line:?} got {reply:?}"));
        }
    }
    r
}

/// A chat member `c{k}` of `members`: joins, waits for the others to be in, sends `lines` lines
/// in random pieces, and reads until it has every other member's lines, each once and in order.
fn chat_member(
    target: &Target,
    k: usize,
    members: usize,
    lines: u64,
    barrier: &Barrier,
    rng: &mut Rng,
) -> Report {
    let mut r = Report::default();
    let Some(mut stream) = try_connect(target.addrs[CHAT], &mut r) else {
        barrier.wait();
        return r;
    };
    // `/who` is answered after `/nick` is done: then this member is in the room.
    let joined = stream.write_all(format!("/nick c{k}\n/who\n").as_bytes());
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    let answered = joined.is_ok()
        && loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break false,
                Ok(_) if line.starts_with("* members:") => break true,
                Ok(_) => {}
            }
        };
    r.chat_lines += 2;
    barrier.wait();
    if !answered {
        r.cut = true;
        return r;
    }
    let text: Vec<u8> = (0..lines).flat_map(|i| format!("c{k} {i}\n").into_bytes()).collect();
    let mut at = 0;
    while at < text.len() {
        let piece = (rng.range(1, 40) as usize).min(text.len() - at);
        if stream.write_all(&text[at..at + piece]).is_err() {
            r.cut = true;
            return r;
        }
        at += piece;
    }
    r.chat_lines += lines;
    let mut next = vec![0u64; members];
    let want = (members as u64 - 1) * lines;
    while r.chat_received < want {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                r.cut = true;
                return r;
            }
            Ok(_) => {}
        }
        if line.starts_with("* ") {
            continue; // notices: joined, left
        }
        let parsed = line.trim_end().split_once(": ").and_then(|(from, text)| {
            let j: usize = from.strip_prefix('c')?.parse().ok()?;
            let (name, i) = text.split_once(' ')?;
            (name == from).then_some((j, i.parse::<u64>().ok()?))
        });
        match parsed {
            Some((j, i)) if j < members && j != k && next[j] == i => {
                next[j] += 1;
                r.chat_received += 1;
            }
            _ => {
                r.fail(format!("member c{k} got {line:?} (expected next: {next:?})"));
                return r;
            }
        }
    }
    wait_for_nothing_more(&mut reader, &mut r, k);
    r
}

/// After its last expected line, a member half-closes and reads to EOF: only notices may come.
fn wait_for_nothing_more(reader: &mut BufReader<TcpStream>, r: &mut Report, k: usize) {
    let _ = reader.get_ref().shutdown(Shutdown::Write);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.starts_with("* ") => {}
            Ok(_) => return r.fail(format!("member c{k} got an extra line {line:?}")),
            Err(_) => return,
        }
    }
}
