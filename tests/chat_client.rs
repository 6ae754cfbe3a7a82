//! `ricochet-chat`, the chat room's client, run as a user runs it: without a terminal (stdin
//! lines in, the room's lines out), in a real terminal (tmux), through a connection the test
//! cuts, across a server restart, over TLS and WebSocket, and with the mistakes users make.
//!
//! Other members are plain TCP connections of the test, so what the room delivers is read
//! byte for byte.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::{Config, ListenSpec};
use util::{connect, wait_for};

/// The longest wait for anything the client should do.
const PATIENCE: Duration = Duration::from_secs(20);

fn room_with(listeners: Vec<ListenSpec>) -> ricochet::Handle {
    ricochet::spawn(Config { listeners, chat_linger: Duration::from_secs(60), ..Config::default() })
        .expect("spawn")
}

fn room() -> ricochet::Handle {
    room_with(vec![ListenSpec::chat("127.0.0.1:0".parse().unwrap())])
}

/// The client as a child process without a terminal.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    /// stdout and stderr lines read so far.
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Client {
    fn start(url: &str, nick: &str, extra: &[&str]) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ricochet-chat"))
            .arg(url)
            .args(["--nick", nick, "--history", "0", "--max-backoff", "300ms", "--give-up", "20s"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ricochet-chat");
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Client {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a stdout line equal to `want` (every line read is kept).
    fn expect_out(&mut self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stdout.iter().any(|l| l == want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => {
                    let err = self.stderr();
                    panic!("no {want:?} on stdout; got {:?}, stderr {err:?}", self.stdout)
                }
            }
        }
    }

    /// Waits for a stderr line containing `want`.
    fn expect_err(&mut self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr.iter().any(|l| l.contains(want)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) => self.stderr.push(line),
                Err(_) => panic!("no {want:?} on stderr; got {:?}", self.stderr),
            }
        }
    }

    fn stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.err.try_recv() {
            self.stderr.push(line);
        }
        self.stderr.clone()
    }

    /// Closes stdin and waits (bounded) for the exit; returns the code, every stdout line and
    /// every stderr line.
    fn finish(mut self) -> (i32, Vec<String>, Vec<String>) {
        self.stdin.take();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("ricochet-chat did not exit; stderr {:?}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The pipes end with the process: read them to their ends.
        while let Ok(line) = self.out.recv_timeout(PATIENCE) {
            self.stdout.push(line);
        }
        while let Ok(line) = self.err.recv_timeout(PATIENCE) {
            self.stderr.push(line);
        }
        let (out, err) = (std::mem::take(&mut self.stdout), std::mem::take(&mut self.stderr));
        (status.code().unwrap_or(-1), out, err)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A member of the test's own, over plain TCP.
struct Member {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Member {
    fn join(addr: SocketAddr, name: &str) -> Member {
        let stream = connect(addr);
        let mut m = Member { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        m.say(&format!("/nick {name}"));
        m.say("/who");
        assert!(m.line().starts_with("* members:"), "joined");
        m
    }

    fn say(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line");
        line.trim_end_matches('\n').to_string()
    }
}

/// A TCP relay between a client and the room that the test can cut (a reset both ways, so the
/// room sees a lost member, not a leave) and make refuse new connections.
struct Relay {
    addr: SocketAddr,
    pairs: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    refusing: Arc<AtomicBool>,
    cutting: Arc<AtomicBool>,
    /// Connections from a generation below this one are black holes (see [`Relay::freeze`]).
    generation: Arc<AtomicUsize>,
    frozen_below: Arc<AtomicUsize>,
}

impl Relay {
    fn to(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Relay {
            addr,
            pairs: Arc::default(),
            refusing: Arc::default(),
            cutting: Arc::default(),
            generation: Arc::default(),
            frozen_below: Arc::default(),
        };
        let (pairs, refusing, cutting) =
            (Arc::clone(&relay.pairs), Arc::clone(&relay.refusing), Arc::clone(&relay.cutting));
        let (generation, frozen_below) =
            (Arc::clone(&relay.generation), Arc::clone(&relay.frozen_below));
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { break };
                if refusing.load(Ordering::SeqCst) {
                    reset(down);
                    continue;
                }
                let up = connect(upstream);
                pairs.lock().unwrap().push((down.try_clone().unwrap(), up.try_clone().unwrap()));
                let born = generation.load(Ordering::SeqCst);
                for (from, to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)]
                {
                    let (cutting, frozen_below) = (Arc::clone(&cutting), Arc::clone(&frozen_below));
                    let frozen = move || born < frozen_below.load(Ordering::SeqCst);
                    std::thread::spawn(move || pump(from, to, &cutting, frozen));
                }
            }
        });
        relay
    }

    /// Resets every relayed connection, both ways.
    fn cut(&self) {
        self.cutting.store(true, Ordering::SeqCst);
        for (down, up) in self.pairs.lock().unwrap().drain(..) {
            for s in [&down, &up] {
                socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)).unwrap();
                // Wakes the pumps' reads without sending anything; the last close resets.
                let _ = s.shutdown(Shutdown::Read);
            }
        }
    }

    /// The connections open now go silent both ways, without a close or a reset: what a
    /// network change or a dead NAT entry looks like. New connections are relayed.
    fn freeze(&self) {
        let next = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.frozen_below.store(next, Ordering::SeqCst);
    }

    fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
        if !refuse {
            self.cutting.store(false, Ordering::SeqCst);
        }
    }

    fn url(&self) -> String {
        format!("chat://{}", self.addr)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cutting: &AtomicBool, frozen: impl Fn() -> bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if frozen() => {} // lost on the way
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if !cutting.load(Ordering::SeqCst) && !frozen() {
        let _ = to.shutdown(Shutdown::Write);
    }
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
}

#[test]
fn two_members_talk_and_an_end_of_input_leaves_after_every_line() {
    let server = room();
    let url = format!("chat://{}", server.chat_addr().unwrap());
    let mut bob = Member::join(server.chat_addr().unwrap(), "bob");
    let mut alice = Client::start(&url, "alice", &[]);
    assert_eq!(bob.line(), "* alice joined");
    bob.say("hello alice");
    alice.expect_out("bob: hello alice");
    alice.say("hello bob");
    alice.say("");
    alice.say("/who");
    alice.say("bye");
    assert_eq!(bob.line(), "alice: hello bob");
    assert_eq!(bob.line(), "alice: ", "an empty line is a line");
    assert_eq!(bob.line(), "alice: bye");
    let (code, out, err) = alice.finish();
    assert_eq!(bob.line(), "* alice left", "an orderly leave at the end of input");
    assert_eq!(code, 0, "stderr {err:?}");
    assert_eq!(out, ["bob: hello alice", "* members: alice, bob"]);
    assert_eq!(err, ["ricochet-chat: in the room as alice"]);
}

#[test]
fn json_output_carries_numbers_and_the_room() {
    let server = room();
    let url = format!("chat://{}", server.chat_addr().unwrap());
    let mut bob = Member::join(server.chat_addr().unwrap(), "bob");
    let alice = Client::start(&url, "alice", &["--json"]);
    assert_eq!(bob.line(), "* alice joined");
    bob.say("one");
    bob.say("two");
    let (mut got, deadline) = (Vec::new(), Instant::now() + PATIENCE);
    while got.len() < 2 {
        let line = alice.out.recv_timeout(deadline - Instant::now()).expect("a JSON line");
        got.push(serde_json::from_str::<serde_json::Value>(&line).expect("JSON"));
    }
    assert_eq!((&got[0]["from"], &got[0]["text"]), (&"bob".into(), &"one".into()));
    assert_eq!((&got[1]["from"], &got[1]["text"]), (&"bob".into(), &"two".into()));
    let seq = got[0]["seq"].as_u64().unwrap();
    assert_eq!(got[1]["seq"].as_u64(), Some(seq + 1));
    assert_eq!(got[0]["room"], got[1]["room"]);
    assert_eq!(alice.finish().0, 0);
}

#[test]
fn a_dropped_connection_comes_back_with_every_line_both_ways() {
    let server = room();
    let relay = Relay::to(server.chat_addr().unwrap());
    let mut bob = Member::join(server.chat_addr().unwrap(), "bob");
    let mut alice = Client::start(&relay.url(), "alice", &[]);
    assert_eq!(bob.line(), "* alice joined");
    alice.say("before the drop");
    assert_eq!(bob.line(), "alice: before the drop");
    bob.say("seen live");
    alice.expect_out("bob: seen live");

    // The connection is reset both ways, and stays down while the room goes on.
    relay.refuse(true);
    relay.cut();
    alice.expect_err("connection lost");
    let lines = server.stats().chat_lines;
    for i in 1..=3 {
        bob.say(&format!("while you were away {i}"));
    }
    alice.say("typed offline 1");
    alice.say("typed offline 2");
    wait_for("the room to take bob's lines", || server.stats().chat_lines == lines + 3);
    relay.refuse(false);

    alice.expect_err("back in the room as alice");
    assert_eq!(bob.line(), "* alice reconnected", "not left and joined");
    assert_eq!(bob.line(), "alice: typed offline 1");
    assert_eq!(bob.line(), "alice: typed offline 2");
    alice.say("after");
    assert_eq!(bob.line(), "alice: after");
    let (code, out, err) = alice.finish();
    assert_eq!(code, 0, "stderr {err:?}");
    assert_eq!(bob.line(), "* alice left");
    assert_eq!(
        out,
        [
            "bob: seen live",
            "bob: while you were away 1",
            "bob: while you were away 2",
            "bob: while you were away 3"
        ],
        "every line once, in order"
    );
    assert!(err.iter().any(|l| l.contains("reconnecting in")), "{err:?}");
    assert_eq!(server.stats().chat_reconnects, 1);
}

/// A connection that goes silent without a close (the server still holds it): the keepalive
/// finds it dead, and the client takes its name back from the open connection with its token.
#[test]
fn a_silent_drop_is_found_by_the_keepalive_and_the_name_taken_back_with_the_token() {
    let server = room();
    let relay = Relay::to(server.chat_addr().unwrap());
    let mut bob = Member::join(server.chat_addr().unwrap(), "bob");
    let keepalive = ["--keepalive", "200ms", "--connect-timeout", "1s"];
    let mut alice = Client::start(&relay.url(), "alice", &keepalive);
    assert_eq!(bob.line(), "* alice joined");
    alice.expect_err("in the room as alice");
    relay.freeze();
    alice.say("into the void");
    bob.say("unheard");
    alice.expect_err("connection lost: no answer from the server for 1s 200ms");
    alice.expect_err("back in the room as alice");
    assert_eq!(bob.line(), "* alice reconnected", "the open connection's name, by its token");
    assert_eq!(bob.line(), "alice: into the void", "the line lost in the silence, sent again");
    alice.expect_out("bob: unheard");
    bob.say("/who");
    assert_eq!(bob.line(), "* members: alice, bob", "the frozen connection was closed");
    let (code, out, _) = alice.finish();
    assert_eq!(code, 0);
    assert_eq!(out, ["bob: unheard"]);
    assert_eq!(server.stats().chat_reconnects, 1);
}

#[test]
fn a_server_restart_is_reported_and_lines_typed_meanwhile_go_to_the_new_room() {
    let server = room();
    let addr = server.chat_addr().unwrap();
    let url = format!("chat://{addr}");
    let mut bob = Member::join(addr, "bob");
    let mut alice = Client::start(&url, "alice", &[]);
    assert_eq!(bob.line(), "* alice joined");
    server.shutdown().unwrap();
    drop(bob);
    alice.expect_err("connection lost");
    alice.say("said during the restart");

    let server = room_with(vec![ListenSpec::chat(addr)]);
    alice.expect_err("the server restarted");
    alice.expect_err("back in the room as alice");
    // Answered after the line typed during the restart has been taken by the new room.
    alice.say("/who");
    alice.expect_out("* members: alice");
    let mut bob = Member::join(addr, "bob");
    bob.say("/history 10");
    let mut replay = Vec::new();
    loop {
        let line = bob.line();
        if line.starts_with("* history complete") {
            break;
        }
        replay.push(line);
    }
    assert_eq!(replay, ["* alice joined", "alice: said during the restart", "* bob joined"]);
    assert_eq!(alice.finish().0, 0);
    drop(server);
}

#[test]
fn mistakes_get_clear_errors_and_exit_codes() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ricochet-chat"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["tcp://127.0.0.1:1", "--nick", "a"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`tcp://` is not a chat scheme") && err.contains("chat+tls://"), "{err}");
    let (code, err) = run(&["chat://127.0.0.1:9", "--nick", "not a name"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give --nick NAME"), "{err}");

    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, err) = run(&[&format!("chat://{closed}"), "--nick", "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot connect: connection refused"), "{err}");

    let server = room();
    let url = format!("chat://{}", server.chat_addr().unwrap());
    let _bob = Member::join(server.chat_addr().unwrap(), "bob");
    let (code, err) = run(&[&url, "--nick", "bob"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the name bob is taken"), "{err}");

    let echo = ricochet::spawn(Config::ephemeral()).unwrap();
    let (code, err) = run(&[&format!("chat://{}", echo.tcp_addr().unwrap()), "--nick", "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("an echo server, not a chat room"), "{err}");
}

#[test]
fn tls_with_a_pin_or_the_certificate_and_websocket() {
    let any = "127.0.0.1:0".parse().unwrap();
    let server = room_with(vec![
        ListenSpec::chat(any).in_room("x"),
        ListenSpec::tls_chat(any).in_room("x"),
        ListenSpec::ws_chat(any).in_room("x"),
    ]);
    let (cert, sha256) = server.tls_cert().unwrap();
    let cert = cert.to_str().unwrap().to_string();
    let tls = format!("chat+tls://localhost:{}", server.first("tls-chat").unwrap().port());
    let ws = format!("chat+ws://{}/any/path", server.first("chat+ws").unwrap());
    let mut bob = Member::join(server.chat_addr().unwrap(), "bob");
    for (i, (url, extra)) in
        [(&tls, vec!["--tls-pin", sha256]), (&tls, vec!["--tls-ca", &cert]), (&ws, vec![])]
            .into_iter()
            .enumerate()
    {
        let name = format!("m{i}");
        let mut member = Client::start(url, &name, &extra);
        assert_eq!(bob.line(), format!("* {name} joined"), "{url}");
        member.say("over the wire");
        assert_eq!(bob.line(), format!("{name}: over the wire"));
        bob.say(&format!("to {name}"));
        member.expect_out(&format!("bob: to {name}"));
        assert_eq!(member.finish().0, 0);
        assert_eq!(bob.line(), format!("* {name} left"));
    }
    let wrong = "00".repeat(32);
    let out = Command::new(env!("CARGO_BIN_EXE_ricochet-chat"))
        .args([&tls, "--nick", "m", "--tls-pin", &wrong])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&format!("has SHA-256 {sha256}, which is not pinned")), "{err}");
}

/// Two clients in real terminals (tmux): each line typed reaches the other, and the line
/// being typed stays whole while the room's lines arrive above it.
#[test]
fn in_terminals_two_clients_talk_and_typing_is_not_garbled() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux (apt-get install tmux)");
        return;
    }
    let server = room();
    let addr = server.chat_addr().unwrap();
    let prefix = format!("ricochet-chat-test-{}", std::process::id());
    let socket = std::env::temp_dir().join(&prefix);
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux").arg("-S").arg(&socket).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    struct Kill<'a>(&'a std::path::Path);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux").arg("-S").arg(self.0).arg("kill-server").output();
        }
    }
    let _kill = Kill(&socket);
    let start = |name: &str| {
        let command = format!(
            "{} chat://{addr} --nick {name} --history 0",
            env!("CARGO_BIN_EXE_ricochet-chat")
        );
        tmux(&["new-session", "-d", "-s", name, "-x", "100", "-y", "30", &command]);
    };
    let screen = |name: &str| -> Vec<String> {
        let text = tmux(&["capture-pane", "-p", "-t", name]);
        text.lines().map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect()
    };
    let shows = |name: &str, line: &str| screen(name).iter().any(|l| l == line);
    let type_in = |name: &str, text: &str, enter: bool| {
        tmux(&["send-keys", "-t", name, "-l", text]);
        if enter {
            tmux(&["send-keys", "-t", name, "Enter"]);
        }
    };

    start("alice");
    wait_for("alice in the room", || shows("alice", "~ in the room as alice"));
    start("bob");
    wait_for("bob in alice's room", || shows("alice", "* bob joined"));
    type_in("alice", "half a li", false);
    wait_for("alice's typing", || shows("alice", "alice> half a li"));
    for i in 1..=3 {
        type_in("bob", &format!("line {i} from bob"), true);
    }
    wait_for("bob's lines at alice's", || shows("alice", "bob: line 3 from bob"));
    assert_eq!(
        screen("alice"),
        [
            "~ in the room as alice",
            "* bob joined",
            "bob: line 1 from bob",
            "bob: line 2 from bob",
            "bob: line 3 from bob",
            "alice> half a li"
        ],
        "the room's lines above, the line being typed whole below"
    );
    type_in("alice", "ne", true);
    wait_for("alice's line at bob's", || shows("bob", "alice: half a line"));
    assert_eq!(
        screen("bob"),
        [
            "~ in the room as bob",
            "bob> line 1 from bob",
            "bob> line 2 from bob",
            "bob> line 3 from bob",
            "alice: half a line",
            "bob>"
        ]
    );
    type_in("alice", "/quit", true);
    wait_for("alice's leave at bob's", || shows("bob", "* alice left"));
}
