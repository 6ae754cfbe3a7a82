//! The chat room, seen from real members over TCP: delivery to the others only, names and
//! notices, commands, order per sender under concurrency, EOF, over-long lines, slow members.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use ricochet::{Config, ListenSpec};
use util::{connect, wait_for};

fn room_with(mutate: impl FnOnce(&mut Config)) -> ricochet::Handle {
    let mut config = Config {
        listeners: vec![ListenSpec::chat("127.0.0.1:0".parse().unwrap())],
        ..Config::default()
    };
    mutate(&mut config);
    ricochet::spawn(config).expect("spawn")
}

fn room() -> ricochet::Handle {
    room_with(|_| {})
}

/// A member: a connection with a line reader.
struct Member {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Member {
    /// Joins and waits until the room counts `members_after` members.
    fn join(server: &ricochet::Handle, members_after: u64) -> Member {
        let stream = connect(server.chat_addr().unwrap());
        wait_for("the member to join", || server.stats().chat_members == members_after);
        Member { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    fn say(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line");
        line
    }

    /// Everything until the server closes the connection.
    fn rest(mut self) -> String {
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).expect("read to EOF");
        rest
    }

    /// Proves, by a round trip, that everything sent to this member before now has arrived:
    /// the room answers `/who` behind it.
    fn sync(&mut self) -> String {
        self.say("/who\n");
        let mut before = String::new();
        loop {
            let line = self.line();
            if line.starts_with("* members:") {
                return before;
            }
            before.push_str(&line);
        }
    }
}

/// Lines per batch in [`pump`].
const BATCH: usize = 100;

/// `sender` sends `batches` batches of [`BATCH`] 1000-byte lines of `fill`, never more than two
/// batches ahead of `reader`, which checks each line: the reader keeps up, so it is never slow.
fn pump(sender: &mut Member, reader: &mut Member, fill: char, batches: usize) {
    let line = format!("{}\n", fill.to_string().repeat(999));
    pump_lines(sender, reader, &line, BATCH, batches);
}

/// As [`pump`], with `per_batch` copies of `line` per batch.
fn pump_lines(
    sender: &mut Member,
    reader: &mut Member,
    line: &str,
    per_batch: usize,
    batches: usize,
) {
    let (done, batches_read) = std::sync::mpsc::sync_channel::<()>(batches);
    std::thread::scope(|s| {
        s.spawn(move || {
            let batch = line.repeat(per_batch);
            for k in 0..batches {
                if k >= 2 {
                    batches_read.recv().unwrap();
                }
                sender.say(&batch);
            }
        });
        for _ in 0..batches {
            for _ in 0..per_batch {
                assert_eq!(reader.line(), *line);
            }
            let _ = done.send(()); // the sender stops listening after its last batch
        }
    });
}

/// Three members: lines go to the two others byte for byte, never back to the sender; names
/// prefix lines and bring notices; `/who` answers the asker; an unknown command and a bad name
/// are errors to the sender only; `/quit` ends a member and the others hear that it left.
#[test]
fn three_members_names_notices_and_commands() {
    // No linger: a lost member's name goes at once (the linger has its own test).
    let server = room_with(|c| c.chat_linger = Duration::ZERO);
    let mut a = Member::join(&server, 1);
    let mut b = Member::join(&server, 2);
    let mut c = Member::join(&server, 3);

    a.say("hello from a\n\n");
    assert_eq!(b.line(), "hello from a\n");
    assert_eq!(b.line(), "\n", "an empty line is a line");
    assert_eq!(c.line(), "hello from a\n");
    assert_eq!(c.line(), "\n");
    assert_eq!(a.sync(), "", "the sender gets nothing back");

    a.say("/nick alice\n");
    assert_eq!(b.line(), "* alice joined\n");
    assert_eq!(c.line(), "* alice joined\n");
    b.say("/nick bob\n");
    assert_eq!(a.line(), "* bob joined\n");
    assert_eq!(c.line(), "* bob joined\n");
    c.say("/nick alice\n");
    assert_eq!(c.line(), "* error: the name alice is taken\n");
    c.say("/nick no spaces!\n");
    assert!(c.line().starts_with("* error: a name is 1 to 32"), "bad name");
    c.say("/dance\n");
    assert_eq!(c.line(), "* error: unknown command /dance\n");
    c.say("/who\n");
    assert_eq!(c.line(), "* members: alice, bob (+1 unnamed)\n");

    a.say("one\ntwo\n");
    assert_eq!(b.line(), "alice: one\n");
    assert_eq!(b.line(), "alice: two\n");
    assert_eq!(c.line(), "alice: one\n");
    assert_eq!(c.line(), "alice: two\n");
    a.say("/nick al\n");
    assert_eq!(b.line(), "* alice is now al\n");
    assert_eq!(c.line(), "* alice is now al\n");
    c.say("from c\n");
    assert_eq!(a.line(), "from c\n", "an unnamed member's lines come as sent");
    assert_eq!(b.line(), "from c\n");
    // Nobody heard anything else: no notice for the unnamed, no echo of commands.
    assert_eq!(a.sync(), "");
    assert_eq!(b.sync(), "");
    assert_eq!(c.sync(), "");

    b.say("bye\n/quit\nnever delivered\n");
    assert_eq!(b.rest(), "", "quit closes after pending output (none here)");
    assert_eq!(a.line(), "bob: bye\n");
    assert_eq!(a.line(), "* bob left\n");
    assert_eq!(c.line(), "bob: bye\n");
    assert_eq!(c.line(), "* bob left\n");
    assert_eq!(a.sync(), "", "nothing after /quit was delivered");
    c.say("/who\n");
    assert_eq!(c.line(), "* members: al (+1 unnamed)\n");

    drop(a);
    assert_eq!(c.line(), "* al left\n", "a reset or close counts as leaving too");
    wait_for("the members to be counted", || server.stats().chat_members == 1);
    let stats = server.stats();
    // Ordinary lines x the other members: a's 2 + 2, c's 1, b's 1 (notices and answers not
    // counted).
    assert_eq!(stats.chat_deliveries, (2 + 2 + 1 + 1) * 2);
    assert_eq!(stats.slow_members, 0);
}

/// 20 members send 200 numbered lines each, all at once, in writes that split lines anywhere;
/// every member receives every other member's lines exactly once, whole, in the order sent,
/// and none of its own.
#[test]
fn order_per_sender_under_twenty_concurrent_senders() {
    const MEMBERS: usize = 20;
    const LINES: usize = 200;
    let server = room();
    let addr = server.chat_addr().unwrap();
    let streams: Vec<TcpStream> = (0..MEMBERS).map(|_| connect(addr)).collect();
    wait_for("all members", || server.stats().chat_members == MEMBERS as u64);
    let received: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, stream)| {
                let mut writer = stream.try_clone().unwrap();
                s.spawn(move || {
                    let text: String = (0..LINES)
                        .map(|i| {
                            format!("member {me} line {i} {}\n", "x".repeat((me * 7 + i) % 50))
                        })
                        .collect();
                    // Odd-sized writes, so lines are split across reads.
                    for chunk in text.as_bytes().chunks(97) {
                        writer.write_all(chunk).unwrap();
                    }
                });
                let reader = stream.try_clone().unwrap();
                s.spawn(move || {
                    let mut reader = BufReader::new(reader);
                    let mut lines = Vec::new();
                    for _ in 0..(MEMBERS - 1) * LINES {
                        let mut line = String::new();
                        reader.read_line(&mut line).expect("a line");
                        lines.push(line);
                    }
                    lines
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (me, lines) in received.iter().enumerate() {
        let mut next = [0usize; MEMBERS];
        for line in lines {
            let words: Vec<&str> = line.trim_end().split(' ').collect();
            assert!(words.len() >= 4 && words[0] == "member", "{me} got a mangled line {line:?}");
            let (from, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
            assert_ne!(from, me, "member {me} got its own line back");
            assert_eq!(i, next[from], "member {me}: line {i} of {from} out of order");
            let filler = "x".repeat((from * 7 + i) % 50);
            assert_eq!(*line, format!("member {from} line {i} {filler}\n"), "corrupted");
            next[from] += 1;
        }
        for (from, &count) in next.iter().enumerate() {
            assert_eq!(count, if from == me { 0 } else { LINES }, "member {me} from {from}");
        }
    }
    let stats = server.stats();
    assert_eq!(stats.chat_lines, (MEMBERS * LINES) as u64);
    assert_eq!(stats.chat_deliveries, (MEMBERS * LINES * (MEMBERS - 1)) as u64);
}

/// At EOF, a member's complete lines and then its unterminated last line (with `\n` added) are
/// delivered; then it leaves, and its own connection ends in an orderly way.
#[test]
fn eof_delivers_the_unterminated_last_line() {
    let server = room();
    let mut a = Member::join(&server, 1);
    let mut b = Member::join(&server, 2);
    b.say("/nick bee\n");
    assert_eq!(a.line(), "* bee joined\n");
    b.say("whole\nno newline");
    b.writer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(b.rest(), "", "orderly end for the leaver");
    assert_eq!(a.line(), "bee: whole\n");
    assert_eq!(a.line(), "bee: no newline\n");
    assert_eq!(a.line(), "* bee left\n");
}

/// More than --max-line bytes without a newline: the member is told and disconnected, and no
/// fragment of the long line reaches anyone; lines before it do.
#[test]
fn an_over_long_line_disconnects_its_sender_only() {
    let server = room_with(|c| c.max_line = 1000);
    let mut a = Member::join(&server, 1);
    let mut b = Member::join(&server, 2);
    b.say("fine\n");
    assert_eq!(a.line(), "fine\n");
    // Exactly the limit is allowed.
    b.say(&format!("{}\n", "y".repeat(1000)));
    assert_eq!(a.line(), format!("{}\n", "y".repeat(1000)));
    b.say("before\n");
    b.say(&"z".repeat(600));
    b.say(&"z".repeat(600));
    assert_eq!(b.rest(), "* error: line too long\n");
    assert_eq!(a.line(), "before\n");
    assert_eq!(a.sync(), "", "no fragment of the long line");
    wait_for("b to leave", || server.stats().chat_members == 1);
}

/// A member that never reads is cut off once its undelivered output would pass the cap, while
/// the sender and a member that reads receive everything. The sender keeps at most two batches
/// of 100 lines ahead of the reader, so the reader itself is never slow.
#[test]
fn a_member_that_never_reads_is_cut_off_and_the_room_goes_on() {
    let server = room_with(|c| c.max_pending = 1 << 20);
    let addr = server.chat_addr().unwrap();
    let sleeper = std::net::TcpStream::connect(addr).unwrap();
    // A tiny receive buffer, so the kernel takes little of what the room sends it.
    socket2::SockRef::from(&sleeper).set_recv_buffer_size(4096).unwrap();
    wait_for("the sleeper to join", || server.stats().chat_members == 1);
    let mut reader = Member::join(&server, 2);
    let mut sender = Member::join(&server, 3);
    const BATCHES: usize = 100; // 10 MB: far past the sleeper's kernel buffers and its 1 MiB cap
    pump(&mut sender, &mut reader, 'p', BATCHES);
    let total = (BATCH * BATCHES) as u64;
    // Counters are published at the end of the turn that delivered the last lines.
    wait_for("the sleeper to be cut off and every line counted", || {
        let stats = server.stats();
        stats.slow_members == 1 && stats.chat_lines == total
    });
    let stats = server.stats();
    assert_eq!(stats.chat_members, 2);
    // Every line reached the reader; the sleeper got some before it was cut.
    assert!(stats.chat_deliveries > total && stats.chat_deliveries < 2 * total);
    drop(sleeper);
}

/// An idle timeout and max-conns apply to members as to echo connections.
#[test]
fn limits_apply_to_members() {
    let server = room_with(|c| {
        c.max_conns = Some(2);
        c.idle_timeout = Some(Duration::from_millis(300));
    });
    let mut a = Member::join(&server, 1);
    let _b = Member::join(&server, 2);
    let mut third = connect(server.chat_addr().unwrap());
    let mut buf = [0u8; 1];
    assert_eq!(third.read(&mut buf).unwrap(), 0, "over max-conns: closed at once");
    wait_for("the rejection", || server.stats().rejected == 1);
    a.say("/nick a\n");
    assert_eq!(a.rest(), "", "the idle timeout closes a quiet member");
    wait_for("both idle members closed", || server.stats().idle_timeouts == 2);
    assert_eq!(server.stats().chat_members, 0);
}

/// Chat rooms are separate: a line reaches only its own room; an echo listener beside them
/// still echoes.
#[test]
fn rooms_are_separate_and_echo_is_unaffected() {
    let server = ricochet::spawn(Config {
        listeners: vec![
            ListenSpec::chat("127.0.0.1:0".parse().unwrap()),
            ListenSpec::chat("127.0.0.1:0".parse().unwrap()),
            ListenSpec::tcp("127.0.0.1:0".parse().unwrap()),
        ],
        ..Config::default()
    })
    .unwrap();
    let rooms: Vec<SocketAddr> = server
        .local_addrs()
        .iter()
        .filter(|l| l.proto() == "chat")
        .filter_map(ListenSpec::addr)
        .collect();
    let join = |addr| {
        let s = connect(addr);
        Member { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
    };
    let mut a1 = join(rooms[0]);
    let mut a2 = join(rooms[0]);
    let mut b1 = join(rooms[1]);
    wait_for("three members", || server.stats().chat_members == 3);
    a1.say("room a\n");
    assert_eq!(a2.line(), "room a\n");
    assert_eq!(b1.sync(), "", "the other room heard nothing");
    let mut echo = connect(server.tcp_addr().unwrap());
    util::ping(&mut echo, b"echo still echoes\n");
}

/// The binary: `--chat` appears in the ready line as `chat`; a member that never reads while
/// 20 MB of lines go through the room costs the server no more than its cap; SIGTERM drains a
/// busy room (members still talking are served until they go quiet, then closed) and exits 0
/// with the chat counters in the `stopped` line.
#[test]
fn process_room_memory_is_bounded_and_sigterm_drains_it() {
    let mut server = util::ServerProcess::start(&[
        "--chat",
        "127.0.0.1:0",
        "--max-pending",
        "256KiB",
        "--drain-timeout",
        "30s",
    ]);
    assert_eq!(server.ready["listeners"][0]["proto"], "chat");
    let addr = server.addr(0);
    let sleeper = std::net::TcpStream::connect(addr).unwrap();
    socket2::SockRef::from(&sleeper).set_recv_buffer_size(4096).unwrap();
    let join = || {
        let s = connect(addr);
        Member { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
    };
    let mut reader = join();
    let mut sender = join();
    // Everyone is in once each has had an answer to /who.
    reader.sync();
    sender.sync();
    let rss_before = server.rss_kib();
    const BATCHES: usize = 200;
    pump(&mut sender, &mut reader, 'q', BATCHES);
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB for a 256 KiB cap"
    );
    // Draining a busy room: the sender keeps talking after SIGTERM and is served until it stops.
    server.signal(libc::SIGTERM);
    for i in 0..20 {
        sender.say(&format!("after the signal {i}\n"));
        assert_eq!(reader.line(), format!("after the signal {i}\n"));
    }
    drop(sender);
    assert_eq!(reader.rest(), "", "the reader is closed once the room goes quiet");
    let stopped = server.next_line();
    assert_eq!(stopped["event"], "stopped");
    assert_eq!(stopped["chat_members"], 0);
    assert_eq!(stopped["slow_members"], 1, "the sleeper");
    assert_eq!(stopped["chat_lines"], (BATCH * BATCHES + 20 + 2) as u64);
    assert_eq!(stopped["drain_aborted"], 0);
    let (code, _, _) = server.wait();
    assert_eq!(code, 0);
    drop(sleeper);
}

/// A run of lines longer than the cap, read in one go, reaches a member that owes nothing: only
/// a member that falls behind is slow.
#[test]
fn a_burst_longer_than_the_cap_reaches_a_member_keeping_up() {
    let server = room_with(|c| c.max_pending = 4096);
    let mut a = Member::join(&server, 1);
    let mut b = Member::join(&server, 2);
    let burst: String = (0..200).map(|i| format!("line {i:03} of a burst of 200\n")).collect();
    assert!(burst.len() > 4096);
    b.say(&burst);
    let mut got = String::new();
    for _ in 0..200 {
        got.push_str(&a.line());
    }
    assert_eq!(got, burst);
    assert_eq!(server.stats().slow_members, 0);
}

/// `chat+unix:PATH` serves a room on a Unix socket, and `?room=` joins it to a TCP room.
#[test]
fn a_room_on_a_unix_socket_joined_to_tcp() {
    let path = std::env::temp_dir().join(format!("ricochet-chat-{}.sock", std::process::id()));
    let server = ricochet::spawn(Config {
        listeners: vec![
            ListenSpec::unix_chat(&path).in_room("hall"),
            ListenSpec::chat("127.0.0.1:0".parse().unwrap()).in_room("hall"),
        ],
        ..Config::default()
    })
    .unwrap();
    assert_eq!(server.local_addrs()[0].proto(), "unix-chat");
    assert_eq!(
        server.local_addrs()[0].to_string(),
        format!("chat+unix:{}?room=hall", path.display())
    );
    let unix = std::os::unix::net::UnixStream::connect(&path).unwrap();
    unix.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let mut tcp = connect(server.chat_addr().unwrap());
    wait_for("two members", || server.stats().chat_members == 2);
    tcp.write_all(b"over tcp\n").unwrap();
    let mut line = String::new();
    BufReader::new(&unix).read_line(&mut line).unwrap();
    assert_eq!(line, "over tcp\n");
    (&unix).write_all(b"over unix\n").unwrap();
    let mut line = String::new();
    BufReader::new(&tcp).read_line(&mut line).unwrap();
    assert_eq!(line, "over unix\n");
    drop(server);
    assert!(!path.exists(), "the socket file is removed");
}

/// Parses a JSON line.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

/// Sequence numbers, history and the JSON format: every line and notice gets the room's next
/// number (one counter for all senders); `/since SEQ` replays what came after SEQ (part of a
/// run of lines too) and says the history is complete, with the room's id and last number;
/// `/history N` replays the last N; JSON members get `{"seq","room","ts","from","text"}` per line
/// and JSON answers, text members the same bytes as always.
#[test]
fn sequence_numbers_history_and_json() {
    let server = room();
    let mut a = Member::join(&server, 1);
    let mut b = Member::join(&server, 2);
    b.say("/format json\n");
    assert_eq!(json(&b.line()), serde_json::json!({"event": "format", "format": "json"}));
    a.say("one\ntwo\n"); // seq 1, 2
    let (one, two) = (json(&b.line()), json(&b.line()));
    assert_eq!(
        (one["seq"].as_u64(), one["text"].as_str(), one["from"].is_null()),
        (Some(1), Some("one"), true)
    );
    assert_eq!((two["seq"].as_u64(), two["text"].as_str()), (Some(2), Some("two")));
    let room_id = one["room"].as_str().unwrap().to_string();
    assert_eq!(room_id.len(), 16);
    assert!(humantime::parse_rfc3339(one["ts"].as_str().unwrap()).is_ok(), "{one}");
    a.say("/nick alice\nthree\n"); // the notice is 3, the line 4
    let notice = json(&b.line());
    assert_eq!(
        (notice["seq"].as_u64(), notice["event"].as_str(), notice["name"].as_str()),
        (Some(3), Some("joined"), Some("alice"))
    );
    let three = json(&b.line());
    assert_eq!(
        (three["seq"].as_u64(), three["from"].as_str(), three["text"].as_str()),
        (Some(4), Some("alice"), Some("three"))
    );
    b.say("quiet\n"); // 5: a text member sees the same bytes as ever
    assert_eq!(a.line(), "quiet\n");

    // A third member asks what it missed, in text: the lines as they were delivered.
    let mut c = Member::join(&server, 3);
    c.say("/since 1\n");
    assert_eq!(c.line(), "two\n");
    assert_eq!(c.line(), "* alice joined\n");
    assert_eq!(c.line(), "alice: three\n");
    assert_eq!(c.line(), "quiet\n");
    assert_eq!(c.line(), format!("* history complete: room {room_id}, last 5\n"));
    c.say("/history 2\n");
    assert_eq!(c.line(), "alice: three\n");
    assert_eq!(c.line(), "quiet\n");
    assert_eq!(c.line(), format!("* history complete: room {room_id}, last 5\n"));
    c.say("/since 5\n/since x\n");
    assert_eq!(c.line(), format!("* history complete: room {room_id}, last 5\n"));
    assert_eq!(c.line(), "* error: /since takes a number, not \"x\"\n");
    // In JSON: the replay carries the numbers.
    b.say("/since 3\n");
    let replay: Vec<serde_json::Value> = (0..3).map(|_| json(&b.line())).collect();
    assert_eq!(replay[0]["seq"], 4);
    assert_eq!((replay[1]["seq"].as_u64(), replay[1]["text"].as_str()), (Some(5), Some("quiet")));
    assert_eq!(
        replay[2],
        serde_json::json!({"event": "history", "complete": true, "room": room_id, "last": 5})
    );
    b.say("/who\n/bogus\n");
    assert_eq!(
        json(&b.line()),
        serde_json::json!({"event": "members", "names": ["alice"], "unnamed": 2})
    );
    assert_eq!(
        json(&b.line()),
        serde_json::json!({"event": "error", "text": "unknown command /bogus"})
    );
    assert_eq!(a.sync(), "", "a asked nothing and heard nothing new");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.chat_replayed, 4 + 2 + 2);
}

/// A bounded history: past its limit the oldest lines go, and a `/since` from before them says
/// which numbers are gone before replaying what is held.
#[test]
fn a_gap_in_the_history_is_named() {
    let server = room_with(|c| c.chat_history = "3".parse().unwrap());
    let mut a = Member::join(&server, 1);
    let mut b = Member::join(&server, 2);
    a.say("l1\nl2\n");
    a.say("l3\n");
    a.say("l4\n");
    a.say("l5\n");
    for n in 1..=5 {
        assert_eq!(b.line(), format!("l{n}\n"));
    }
    b.say("/since 0\n");
    assert_eq!(b.line(), "* history gap: 1..2 no longer held\n");
    assert_eq!(b.line(), "l3\n");
    assert_eq!(b.line(), "l4\n");
    assert_eq!(b.line(), "l5\n");
    assert!(b.line().starts_with("* history complete: room "));
    // The limit in bytes: as many lines as fit.
    assert!("0".parse::<ricochet::config::HistoryLimit>().unwrap().lines == 0);
    let both: ricochet::config::HistoryLimit = "100,4KiB".parse().unwrap();
    assert_eq!((both.lines, both.bytes), (100, 4096));
    for bad in ["", "x", "1,2,3", "2GiB"] {
        assert!(bad.parse::<ricochet::config::HistoryLimit>().is_err(), "{bad:?}");
    }
}

/// Resets the member's connection (RST, as a dropped network or a killed client would).
fn reset(member: Member) {
    socket2::SockRef::from(&member.writer).set_linger(Some(Duration::ZERO)).unwrap();
}

/// Names survive a reconnect: a named member lost without an orderly leave (a reset) keeps its
/// name for `--chat-linger`; a new connection's `/nick NAME` takes it back and the others hear
/// `* NAME reconnected`, not left and joined; a name whose linger runs out leaves then, with
/// `* NAME left`; an orderly `/quit` leaves at once.
#[test]
fn a_lost_members_name_lingers_for_its_reconnect() {
    let server = room_with(|c| c.chat_linger = Duration::from_millis(300));
    let mut alice = Member::join(&server, 1);
    let mut bob = Member::join(&server, 2);
    alice.say("/nick alice\n");
    bob.say("/nick bob\n");
    assert_eq!(bob.line(), "* alice joined\n");
    assert_eq!(alice.line(), "* bob joined\n");
    reset(alice);
    wait_for("the lost member to go", || server.stats().chat_members == 1);
    bob.say("/who\n");
    assert_eq!(bob.line(), "* members: alice, bob\n", "the name lingers, untold");
    let mut again = Member::join(&server, 2);
    again.say("/nick alice\n");
    assert_eq!(bob.line(), "* alice reconnected\n");
    again.say("back\n");
    assert_eq!(bob.line(), "alice: back\n");
    // Lost again, and this time nobody comes back: left when the linger runs out.
    reset(again);
    assert_eq!(bob.line(), "* alice left\n");
    bob.say("/who\n");
    assert_eq!(bob.line(), "* members: bob\n");
    // An orderly leave is told at once, however long the linger.
    let mut carol = Member::join(&server, 2);
    carol.say("/nick carol\n");
    assert_eq!(bob.line(), "* carol joined\n");
    carol.say("/quit\n");
    assert_eq!(bob.line(), "* carol left\n");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.chat_reconnects, 1);
}

/// A drop the server has not noticed (the old connection still open): `/token` gives the
/// member a secret for its name, and a new connection's `/nick NAME TOKEN` takes the name from
/// the old one, which is closed; the others see `* NAME reconnected` only. A wrong token is
/// refused. With several reactors too (the old and new connections may be on different ones).
#[test]
fn a_token_takes_a_name_back_from_a_connection_still_open() {
    for threads in [1, 3] {
        let server = room_with(|c| c.threads = threads);
        let mut alice = Member::join(&server, 1);
        let mut bob = Member::join(&server, 2);
        alice.say("/nick alice\n/token\n");
        assert_eq!(bob.line(), "* alice joined\n");
        let answer = alice.line();
        let token = answer.strip_prefix("* token for alice: ").expect(&answer).trim().to_string();
        assert_eq!(token.len(), 16, "{answer}");
        alice.say("/token\n");
        assert_eq!(alice.line(), answer, "the same secret while the name is held");
        let mut again = Member::join(&server, 3);
        // With several reactors, a notice posted on one reaches another's members when that
        // one adopts it: a member that joined meanwhile may get `* alice joined` late.
        again.sync();
        again.say("/nick alice 0000000000000000\n");
        assert_eq!(again.line(), "* error: the name alice is taken (the token is not its token)\n");
        again.say(&format!("/nick alice {token}\n"));
        assert_eq!(bob.line(), "* alice reconnected\n");
        assert_eq!(alice.rest(), "", "the old connection is closed, nothing more said to it");
        wait_for("the old connection to go", || server.stats().chat_members == 2);
        bob.say("/who\n");
        assert_eq!(bob.line(), "* members: alice (+1 unnamed)\n");
        again.say("still me\n");
        assert_eq!(bob.line(), "alice: still me\n");
        let stats = server.shutdown().unwrap();
        assert_eq!((stats.chat_reconnects, stats.chat_members), (1, 0), "threads {threads}");
    }
}

/// A full history of large lines stays within its bound in bytes: 32 MiB of 16 KiB lines go
/// through a room that keeps at most 4 MiB; the server's memory grows by about that, and a
/// `/since 0` names the numbers no longer held (all but the last 256 lines at most).
#[test]
fn a_full_history_of_large_lines_stays_in_its_bound() {
    let server =
        util::ServerProcess::start(&["--chat", "127.0.0.1:0", "--chat-history", "100000,4MiB"]);
    let join = || {
        let s = connect(server.addr(0));
        Member { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
    };
    let (mut reader, mut sender) = (join(), join());
    reader.sync();
    sender.sync();
    let rss_before = server.rss_kib();
    let line = format!("{}\n", "h".repeat(16 * 1024 - 1));
    pump_lines(&mut sender, &mut reader, &line, 32, 64); // 2048 lines, 32 MiB
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 12 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB for a 4 MiB history"
    );
    reader.say("/since 0\n");
    let gap = reader.line();
    let last_gone: u64 = gap
        .strip_prefix("* history gap: 1..")
        .and_then(|rest| rest.strip_suffix(" no longer held\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{gap:?}"));
    assert!((2048 - 256..2048).contains(&last_gone), "{gap:?}: at most 256 lines of 16 KiB held");
    // What follows is the held lines, as many as half the free cap takes, then how to go on.
    let mut replayed = 0;
    loop {
        let l = reader.line();
        if l.starts_with("* history incomplete:") || l.starts_with("* history complete:") {
            assert!(l.contains("of 2048;") || l.contains("last 2048"), "{l}");
            break;
        }
        assert_eq!(l, line);
        replayed += 1;
    }
    assert!((1..=256).contains(&replayed), "{replayed}");
}
