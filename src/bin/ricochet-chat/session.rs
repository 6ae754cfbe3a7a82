//! The chat client's protocol, without sockets or a terminal: what to send when a connection
//! opens, what each line from the room means, what to show, and when a line the user typed is
//! known to have reached the room. The driver (`main.rs`) feeds it events and carries out the
//! [`Action`]s it queues; the tests below feed it lines.
//!
//! The client speaks JSON with the server (`/format json`): every delivery then carries its
//! sequence number and room id, and every command's answer is one object. Commands are answered
//! in the order they were sent, so the answers awaited are a queue ([`Expect`]).
//!
//! Nothing typed is lost:
//! - A line typed while offline waits in `queued` and is sent once the client is back in the
//!   room, in order.
//! - A line sent stays in `unacked` until the room has certainly taken it: a `/history 0` sent
//!   after it (the *probe*, one at a time) is answered only after the server has read everything
//!   before it. The answer's `last` is kept as `acked_upto`: every line acknowledged so far has a
//!   number up to it, every line still unacknowledged a higher one.
//! - On a reconnect the client asks `/since min(last seen, acked_upto)`. The room replays the
//!   member's own lines too (a live member never gets its own lines back), so those numbered
//!   past `acked_upto` are, in order, the unacknowledged lines that did arrive: they are
//!   acknowledged, and the rest are sent again.

use std::collections::{BTreeSet, VecDeque};

use serde::Deserialize;

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A line for the server (without its `\n`).
    Send(String),
    /// A delivery or answer for the user: its text rendering and the server's JSON line.
    Show { text: String, json: String },
    /// The client's own news (connection lost, back, missed lines).
    Status(String),
    /// In the room: the reconnect backoff starts over.
    Joined,
    /// Stop with this failure.
    Fatal(Failure),
    /// Everything typed has reached the room and the client has left: exit 0.
    Done,
}

/// Why the client stops with an error; each has its exit code (see `--help`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The name was taken (exit 3).
    NameTaken(String),
    /// The first connection failed or the peer is not a chat room (exit 4).
    Connect(String),
}

/// What the user asked for at the start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The name to take.
    pub nick: String,
    /// Lines of the room's history to show on joining.
    pub history: u64,
    /// At the end, wait for the room to take every line typed, however long reconnecting takes
    /// (a script's input); otherwise (a person leaving) go at once when not in the room.
    pub patient: bool,
}

/// An answer awaited, in the order the commands were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// `/format json`.
    Format,
    /// `/nick NAME`: no answer when it works (the `/token` after it tells), an error if not.
    Nick { user: bool },
    /// `/token`, sent after every `/nick`: says the name the member now has.
    Token { user: bool },
    /// The first join's `/history N`: the lines are shown, the answer sets the room.
    First,
    /// A reconnect's `/history 0`: the room (the same, or new after a restart) and its last number.
    Sync,
    /// A reconnect's `/since N`: the lines missed (own lines acknowledge unacknowledged ones).
    Since,
    /// `/history 0` after lines were sent: acknowledges that many lines.
    Probe(usize),
    /// `/history 0` after a quiet spell: proves the connection still works.
    Ping,
    /// The user's `/since` or `/history`: everything is shown, seen before or not.
    Replay,
    /// Any other command the user typed: the answer is shown.
    Show,
}

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offline,
    /// Connected, the joining commands sent, not yet in the room.
    Joining,
    Live,
}

/// One line from the server, in JSON (fields absent where they do not apply).
#[derive(Debug, Default, Deserialize)]
struct Msg {
    seq: Option<u64>,
    room: Option<String>,
    from: Option<String>,
    text: Option<String>,
    event: Option<String>,
    name: Option<String>,
    old: Option<String>,
    names: Option<Vec<String>>,
    unnamed: Option<u64>,
    token: Option<String>,
    complete: Option<bool>,
    last: Option<u64>,
    replayed: Option<u64>,
    first: Option<u64>,
    format: Option<String>,
}

/// The client's state across connections.
#[derive(Debug)]
pub struct Session {
    settings: Settings,
    /// The name held (or being taken).
    nick: String,
    /// `/token`'s secret for `nick`, to take it back from a connection the server still holds.
    token: Option<String>,
    /// The room's id: a new one means the server restarted.
    room: Option<String>,
    /// The highest number of a delivery seen.
    last: u64,
    /// Numbers seen at or above `floor()`, to drop what a replay repeats.
    seen: BTreeSet<u64>,
    expect: VecDeque<Expect>,
    phase: Phase,
    /// In the room at least once: a lost connection is then reconnected, not fatal.
    was_live: bool,
    /// Lines sent but not known to have reached the room, oldest first.
    unacked: VecDeque<String>,
    /// Every line acknowledged so far has a number up to this.
    acked_upto: u64,
    /// A probe is in flight.
    probing: bool,
    /// Typed while not in the room: sent, in order, once back.
    queued: VecDeque<String>,
    /// The user is done (`/quit`, end of input): leave once everything is acknowledged.
    ending: bool,
    quit_sent: bool,
    out: Vec<Action>,
}

impl Session {
    /// A client that will take `settings.nick`.
    pub fn new(settings: Settings) -> Session {
        Session {
            nick: settings.nick.clone(),
            settings,
            token: None,
            room: None,
            last: 0,
            seen: BTreeSet::new(),
            expect: VecDeque::new(),
            phase: Phase::Offline,
            was_live: false,
            unacked: VecDeque::new(),
            acked_upto: 0,
            probing: false,
            queued: VecDeque::new(),
            ending: false,
            quit_sent: false,
            out: Vec::new(),
        }
    }

    /// The name the client holds or is taking.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Was in the room at least once (a lost connection is reconnected).
    pub fn was_live(&self) -> bool {
        self.was_live
    }

    /// The user is done and the client is leaving.
    pub fn is_ending(&self) -> bool {
        self.ending
    }

    /// In the room now.
    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// Lines typed and not yet known to have reached the room.
    pub fn unsent(&self) -> usize {
        self.unacked.len() + self.queued.len()
    }

    /// The actions queued since the last call.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// A connection is open: join (JSON, the name, its token) and ask what is needed.
    pub fn connected(&mut self) {
        self.phase = Phase::Joining;
        self.expect.clear();
        self.probing = false;
        self.send("/format json".into(), Expect::Format);
        let nick = match &self.token {
            Some(token) => format!("/nick {} {token}", self.nick),
            None => format!("/nick {}", self.nick),
        };
        self.send(nick, Expect::Nick { user: false });
        self.send("/token".into(), Expect::Token { user: false });
        match self.was_live {
            false => self.send(format!("/history {}", self.settings.history), Expect::First),
            true => self.send("/history 0".into(), Expect::Sync),
        }
    }

    /// The connection ended (`why`: what the driver saw).
    pub fn lost(&mut self, why: &str) {
        let joined = self.phase == Phase::Live;
        self.phase = Phase::Offline;
        self.expect.clear();
        self.probing = false;
        if self.quit_sent {
            self.out.push(Action::Done);
        } else if !self.was_live {
            self.out.push(Action::Fatal(Failure::Connect(why.into())));
        } else if joined {
            self.note(format!("connection lost: {why}"));
        }
    }

    /// A line the user typed.
    pub fn typed(&mut self, line: String) {
        if self.phase != Phase::Live {
            if line.trim() == "/quit" {
                return self.end();
            }
            self.queued.push_back(line);
            return;
        }
        let command = line.split(' ').next().unwrap_or("");
        match command {
            "/quit" => self.end(),
            "/format" => self.note(
                "this client reads the room in JSON; start it with --json to see the JSON lines"
                    .into(),
            ),
            "/nick" => {
                self.send(line, Expect::Nick { user: true });
                self.send("/token".into(), Expect::Token { user: false });
            }
            "/token" => self.send(line, Expect::Token { user: true }),
            "/since" | "/history" => self.send(line, Expect::Replay),
            _ if command.starts_with('/') => self.send(line, Expect::Show),
            _ => {
                self.out.push(Action::Send(line.clone()));
                self.unacked.push_back(line);
                self.probe();
            }
        }
    }

    /// The client's own news (the session's, and the driver's in order with it).
    pub fn note(&mut self, text: String) {
        self.out.push(Action::Status(text));
    }

    /// Asks the room for an answer, to find out whether a quiet connection still works.
    pub fn ping(&mut self) {
        if self.phase == Phase::Live {
            self.send("/history 0".into(), Expect::Ping);
        }
    }

    /// The user's input ended: leave once every line typed has reached the room.
    pub fn end(&mut self) {
        self.ending = true;
        if !self.settings.patient && self.phase != Phase::Live {
            let unsent = self.unsent();
            if unsent > 0 {
                self.note(format!("left without the room: {unsent} line(s) typed were not sent"));
            }
            return self.out.push(Action::Done);
        }
        self.finish();
    }

    /// One line from the server (without its `\n`).
    pub fn line(&mut self, raw: &str) {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw == "/format json" {
            let why = "it sent back what it was sent: an echo server, not a chat room";
            return self.out.push(Action::Fatal(Failure::Connect(why.into())));
        }
        let msg: Msg = match serde_json::from_str(raw) {
            Ok(msg) => msg,
            // Lines that came before the switch to JSON: the joining replay covers them.
            Err(_) if self.expect.front() == Some(&Expect::Format) => return,
            Err(_) => return self.show(raw.into(), raw),
        };
        if let Some(room) = &msg.room {
            self.note_room(room);
        }
        match msg.seq {
            Some(seq) => self.delivery(seq, &msg, raw),
            None => self.answer(&msg, raw),
        }
    }

    /// A line or notice of the room, live or replayed.
    fn delivery(&mut self, seq: u64, msg: &Msg, raw: &str) {
        let front = self.expect.front();
        let own_line = msg.event.is_none() && msg.from.as_deref() == Some(&*self.nick);
        if msg.event.is_some()
            && msg.name.as_deref() == Some(&*self.nick)
            && front == Some(&Expect::Since)
        {
            return; // a notice about this client's own comings and goings, which it knows
        }
        if own_line {
            // Only a replay brings a member's own lines: past `acked_upto`, they are the
            // unacknowledged ones that reached the room, in order.
            if seq > self.acked_upto && self.unacked.front().map(|s| &**s) == msg.text.as_deref() {
                self.unacked.pop_front();
                self.acked_upto = seq;
            }
            // Shown as typed already, unless the user asked or they are from before this run.
            if !matches!(front, Some(Expect::Replay | Expect::First)) {
                return;
            }
        }
        let fresh = self.seen.insert(seq);
        self.last = self.last.max(seq);
        if fresh || front == Some(&Expect::Replay) {
            self.show(render(msg), raw);
        }
    }

    /// The answer to the oldest command still awaiting one.
    fn answer(&mut self, msg: &Msg, raw: &str) {
        let event = msg.event.as_deref().unwrap_or("");
        // A `/nick` that worked has no answer of its own: the next one is the `/token`'s.
        while let Some(&Expect::Nick { user }) = self.expect.front() {
            self.expect.pop_front();
            if event == "error" {
                let text = msg.text.clone().unwrap_or_default();
                if !user {
                    return self.out.push(Action::Fatal(Failure::NameTaken(text)));
                }
                return self.show(render(msg), raw);
            }
        }
        let Some(expect) = self.expect.pop_front() else {
            return self.show(render(msg), raw); // said without being asked (an error before a close)
        };
        match (expect, event) {
            (Expect::Format, "format") => {}
            (Expect::Token { user }, "token") => {
                self.token = msg.token.clone();
                if let Some(name) = msg.name.as_ref().filter(|&name| *name != self.nick) {
                    self.nick = name.clone();
                    if self.phase == Phase::Live {
                        self.note(format!("you are {name} now"));
                        self.out.push(Action::Joined); // the prompt shows it
                    }
                }
                if user {
                    self.show(render(msg), raw);
                }
            }
            (Expect::Token { user: false }, _) => {}
            (expect @ (Expect::First | Expect::Since | Expect::Replay), "gap") => {
                let (first, last) = (msg.first.unwrap_or(0), msg.last.unwrap_or(0));
                match expect {
                    Expect::Replay => self.show(render(msg), raw),
                    Expect::Since => {
                        let seen = self.seen.range(first..=last).count() as u64;
                        let missed = (last + 1).saturating_sub(first).saturating_sub(seen);
                        if missed > 0 {
                            self.note(format!(
                                "missed {missed} line{} (#{first}..#{last}): the server no longer holds them",
                                if missed == 1 { "" } else { "s" }
                            ));
                        }
                    }
                    _ => {}
                }
                self.expect.push_front(expect); // the history answer is still to come
            }
            (Expect::First, "history") => {
                self.acked_upto = msg.last.unwrap_or(0);
                self.last = self.last.max(self.acked_upto);
                self.go_live(false);
            }
            (Expect::Sync, "history") => {
                let since = self.last.min(self.acked_upto);
                self.send(format!("/since {since}"), Expect::Since);
            }
            (Expect::Since, "history") => match (msg.complete, msg.replayed) {
                (Some(false), Some(upto)) => self.send(format!("/since {upto}"), Expect::Since),
                _ => {
                    self.acked_upto = msg.last.unwrap_or(self.acked_upto);
                    self.go_live(true);
                }
            },
            (Expect::Ping, "history") => {}
            (Expect::Probe(count), "history") => {
                self.probing = false;
                for _ in 0..count.min(self.unacked.len()) {
                    self.unacked.pop_front();
                }
                self.acked_upto = msg.last.unwrap_or(self.acked_upto);
                self.prune();
                self.probe();
                self.finish();
            }
            (Expect::Replay | Expect::Show, _) => self.show(render(msg), raw),
            // An answer out of turn (an error before the server closes): shown; still awaited.
            (expect, _) => {
                self.expect.push_front(expect);
                self.show(render(msg), raw);
            }
        }
    }

    /// In the room: what was typed meanwhile goes out.
    fn go_live(&mut self, again: bool) {
        self.phase = Phase::Live;
        self.was_live = true;
        self.out.push(Action::Joined);
        match again {
            true => self.note(format!("back in the room as {}", self.nick)),
            false => self.note(format!("in the room as {}", self.nick)),
        }
        let resend: Vec<String> = self.unacked.iter().cloned().collect();
        for line in resend {
            self.out.push(Action::Send(line));
        }
        self.probe();
        while self.phase == Phase::Live {
            let Some(line) = self.queued.pop_front() else { break };
            self.typed(line);
        }
        self.prune();
        self.finish();
    }

    /// A room id: a different one than before means the server restarted.
    fn note_room(&mut self, room: &str) {
        match &self.room {
            Some(known) if known == room => {}
            Some(known) => {
                self.note(format!(
                    "the server restarted (room {known} is gone, {room} is new): lines said \
                     before the restart that you had not seen are lost"
                ));
                self.room = Some(room.into());
                self.last = 0;
                self.acked_upto = 0;
                self.seen.clear();
            }
            None => self.room = Some(room.into()),
        }
    }

    /// Sends a `/history 0` after unacknowledged lines, unless one is in flight.
    fn probe(&mut self) {
        if !self.probing && !self.unacked.is_empty() && self.phase == Phase::Live {
            self.probing = true;
            let count = self.unacked.len();
            self.send("/history 0".into(), Expect::Probe(count));
        }
    }

    /// Leaves when the user is done and every line typed reached the room.
    fn finish(&mut self) {
        if self.ending && !self.quit_sent {
            if self.phase == Phase::Live && self.unsent() == 0 {
                self.quit_sent = true;
                self.out.push(Action::Send("/quit".into()));
            } else if !self.was_live && self.phase == Phase::Offline {
                self.out.push(Action::Done);
            }
        }
    }

    /// Forgets numbers no reconnect will ask for again.
    fn prune(&mut self) {
        let floor = self.last.min(self.acked_upto);
        self.seen = self.seen.split_off(&floor);
    }

    fn send(&mut self, line: String, expect: Expect) {
        self.expect.push_back(expect);
        self.out.push(Action::Send(line));
    }

    fn show(&mut self, text: String, raw: &str) {
        self.out.push(Action::Show { text, json: raw.into() });
    }
}

/// A line of the room or an answer as text, as the server's text format says it.
fn render(msg: &Msg) -> String {
    let name = msg.name.as_deref().unwrap_or("?");
    let text = msg.text.as_deref().unwrap_or("");
    match msg.event.as_deref() {
        None => match &msg.from {
            Some(from) => format!("{from}: {text}"),
            None => text.to_string(),
        },
        Some("joined") => format!("* {name} joined"),
        Some("left") => format!("* {name} left"),
        Some("reconnected") => format!("* {name} reconnected"),
        Some("renamed") => format!("* {} is now {name}", msg.old.as_deref().unwrap_or("?")),
        Some("members") => {
            let names = msg.names.as_deref().unwrap_or_default().join(", ");
            match msg.unnamed.unwrap_or(0) {
                0 => format!("* members: {names}"),
                n => format!("* members: {names} (+{n} unnamed)"),
            }
        }
        Some("you") => format!(
            "* you are {}, from {}",
            msg.name.as_deref().unwrap_or("unnamed"),
            msg.from.as_deref().unwrap_or("an unnamed socket")
        ),
        Some("token") => format!("* token for {name}: {}", msg.token.as_deref().unwrap_or("")),
        Some("error") => format!("* error: {text}"),
        Some("format") => format!("* format {}", msg.format.as_deref().unwrap_or("")),
        Some("gap") => format!(
            "* history gap: {}..{} no longer held",
            msg.first.unwrap_or(0),
            msg.last.unwrap_or(0)
        ),
        Some("history") => {
            let (room, last) = (msg.room.as_deref().unwrap_or("?"), msg.last.unwrap_or(0));
            match (msg.complete, msg.replayed) {
                (Some(false), Some(upto)) => format!(
                    "* history incomplete: room {room}, replayed up to {upto} of {last}; ask /since {upto} for more"
                ),
                _ => format!("* history complete: room {room}, last {last}"),
            }
        }
        Some(other) => format!("* {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "r1";

    fn session() -> Session {
        Session::new(Settings { nick: "alice".into(), history: 5, patient: true })
    }

    /// The texts of one kind of action, in order.
    fn of<'a>(actions: &'a [Action], kind: &str) -> Vec<&'a str> {
        let text = |a: &'a Action| match (a, kind) {
            (Action::Send(t), "sent")
            | (Action::Show { text: t, .. }, "shown")
            | (Action::Status(t), "status") => Some(&**t),
            _ => None,
        };
        actions.iter().filter_map(text).collect()
    }

    fn sent(actions: &[Action]) -> Vec<&str> {
        of(actions, "sent")
    }

    fn shown(actions: &[Action]) -> Vec<&str> {
        of(actions, "shown")
    }

    fn statuses(actions: &[Action]) -> Vec<&str> {
        of(actions, "status")
    }

    fn message(seq: u64, from: &str, text: &str) -> String {
        format!(r#"{{"from":"{from}","room":"{ROOM}","seq":{seq},"text":"{text}","ts":"t"}}"#)
    }

    fn history(room: &str, last: u64) -> String {
        format!(r#"{{"complete":true,"event":"history","last":{last},"room":"{room}"}}"#)
    }

    fn token(name: &str) -> String {
        format!(r#"{{"event":"token","name":"{name}","token":"0123456789abcdef"}}"#)
    }

    /// Connects; the server has switched to JSON.
    fn connect_json(s: &mut Session) {
        s.connected();
        s.take();
        s.line(r#"{"event":"format","format":"json"}"#);
    }

    /// Joins for the first time; the room's last number is `last`.
    fn join(s: &mut Session, last: u64) {
        s.connected();
        assert_eq!(
            sent(&s.take()),
            ["/format json", "/nick alice", "/token", "/history 5"],
            "the joining commands"
        );
        s.line("bob: said before the switch to JSON");
        s.line(r#"{"event":"format","format":"json"}"#);
        s.line(&token("alice"));
        s.line(&history(ROOM, last));
        let actions = s.take();
        assert!(actions.contains(&Action::Joined), "{actions:?}");
        assert!(shown(&actions).is_empty(), "the text line before the switch is not shown");
    }

    #[test]
    fn the_first_join_shows_the_history_and_lines_are_rendered() {
        let mut s = session();
        connect_json(&mut s);
        s.line(&token("alice"));
        s.line(&message(1, "bob", "hi"));
        s.line(&message(2, "alice", "from an earlier run"));
        s.line(r#"{"event":"joined","name":"carol","room":"r1","seq":3,"ts":"t"}"#);
        s.line(&history(ROOM, 3));
        s.line(r#"{"event":"renamed","name":"caro","old":"carol","room":"r1","seq":4,"ts":"t"}"#);
        s.line(r#"{"from":null,"room":"r1","seq":5,"text":"raw","ts":"t"}"#);
        let actions = s.take();
        assert_eq!(
            shown(&actions),
            [
                "bob: hi",
                "alice: from an earlier run",
                "* carol joined",
                "* carol is now caro",
                "raw"
            ]
        );
        assert!(s.is_live());
    }

    #[test]
    fn a_taken_name_on_joining_is_fatal() {
        let mut s = session();
        connect_json(&mut s);
        s.line(r#"{"event":"error","text":"the name alice is taken"}"#);
        assert_eq!(s.take(), [Action::Fatal(Failure::NameTaken("the name alice is taken".into()))]);
    }

    #[test]
    fn an_echo_server_is_named_as_such() {
        let mut s = session();
        s.connected();
        s.take();
        s.line("/format json");
        assert!(
            matches!(&s.take()[..], [Action::Fatal(Failure::Connect(why))] if why.contains("echo server"))
        );
    }

    #[test]
    fn lines_are_acknowledged_by_the_probe_after_them() {
        let mut s = session();
        join(&mut s, 3);
        s.typed("one".into());
        s.typed("two".into());
        assert_eq!(sent(&s.take()), ["one", "/history 0", "two"], "one probe in flight");
        assert_eq!(s.unsent(), 2);
        s.line(&history(ROOM, 4)); // covers "one"
        assert_eq!(sent(&s.take()), ["/history 0"], "a probe for what is left");
        assert_eq!(s.unsent(), 1);
        s.line(&history(ROOM, 5));
        assert_eq!(s.unsent(), 0);
        assert!(s.take().is_empty());
    }

    #[test]
    fn a_reconnect_replays_what_was_missed_and_resends_only_what_did_not_arrive() {
        let mut s = session();
        join(&mut s, 3);
        s.line(&message(4, "bob", "seen live"));
        s.typed("arrived".into());
        s.typed("lost".into());
        s.take();
        s.lost("reset by the peer");
        assert_eq!(statuses(&s.take()), ["connection lost: reset by the peer"]);
        s.typed("typed offline".into());
        assert!(s.take().is_empty(), "nothing goes out while offline");

        s.connected();
        assert_eq!(
            sent(&s.take()),
            ["/format json", "/nick alice 0123456789abcdef", "/token", "/history 0"],
            "the name taken back with its token"
        );
        s.line(r#"{"event":"format","format":"json"}"#);
        s.line(&token("alice"));
        s.line(&history(ROOM, 7));
        assert_eq!(sent(&s.take()), ["/since 3"], "from the last acknowledged number");
        s.line(&message(4, "bob", "seen live"));
        s.line(&message(5, "alice", "arrived"));
        s.line(&message(6, "bob", "missed"));
        s.line(r#"{"event":"reconnected","name":"alice","room":"r1","seq":7,"ts":"t"}"#);
        s.line(&history(ROOM, 7));
        let actions = s.take();
        assert_eq!(shown(&actions), ["bob: missed"], "not its own lines and notices");
        assert_eq!(statuses(&actions), ["back in the room as alice"]);
        assert_eq!(
            sent(&actions),
            ["lost", "/history 0", "typed offline"],
            "the unacknowledged line again, then the one typed offline, in order"
        );
        s.line(&history(ROOM, 9));
        s.take();
        assert_eq!(s.unsent(), 1, "the probe covered the resent line only");
    }

    #[test]
    fn a_gap_and_a_restart_are_told() {
        let mut s = session();
        join(&mut s, 3);
        s.lost("closed");
        connect_json(&mut s);
        s.line(&token("alice"));
        s.line(&history(ROOM, 20));
        s.take();
        s.line(r#"{"event":"gap","first":4,"last":10,"room":"r1"}"#);
        s.line(&history(ROOM, 20));
        assert_eq!(
            statuses(&s.take()),
            [
                "missed 7 lines (#4..#10): the server no longer holds them",
                "back in the room as alice"
            ]
        );

        s.lost("closed");
        connect_json(&mut s);
        s.line(&token("alice"));
        s.line(&history("r2", 2));
        let actions = s.take();
        assert!(
            statuses(&actions)[0].starts_with("the server restarted (room r1 is gone, r2 is new)")
        );
        assert_eq!(sent(&actions), ["/since 0"], "everything the new room holds");
    }

    #[test]
    fn the_end_of_input_leaves_once_everything_is_acknowledged() {
        let mut s = session();
        join(&mut s, 0);
        s.typed("last words".into());
        s.end();
        assert_eq!(sent(&s.take()), ["last words", "/history 0"], "not /quit yet");
        s.line(&history(ROOM, 1));
        assert_eq!(sent(&s.take()), ["/quit"]);
        s.lost("closed by the server");
        assert_eq!(s.take(), [Action::Done]);
    }

    #[test]
    fn a_person_leaves_at_once_when_offline_a_script_waits() {
        let mut s = session();
        join(&mut s, 0);
        s.lost("reset");
        s.typed("unsent".into());
        s.take();
        s.end();
        assert!(s.take().is_empty(), "a script's lines wait for the room");
        let mut s = Session::new(Settings { nick: "alice".into(), history: 5, patient: false });
        join(&mut s, 0);
        s.lost("reset");
        s.typed("unsent".into());
        s.take();
        s.end();
        assert_eq!(
            s.take(),
            [
                Action::Status("left without the room: 1 line(s) typed were not sent".into()),
                Action::Done
            ]
        );
    }

    #[test]
    fn the_users_commands_are_answered_and_a_new_name_is_held() {
        let mut s = session();
        join(&mut s, 0);
        s.typed("/who".into());
        s.typed("/nick al".into());
        assert_eq!(sent(&s.take()), ["/who", "/nick al", "/token"]);
        s.line(r#"{"event":"members","names":["alice","bob"],"unnamed":2}"#);
        s.line(&token("al"));
        let actions = s.take();
        assert_eq!(shown(&actions), ["* members: alice, bob (+2 unnamed)"]);
        assert_eq!(statuses(&actions), ["you are al now"]);
        assert_eq!(s.nick(), "al");
        s.typed("/token".into());
        s.take();
        s.line(&token("al"));
        assert_eq!(shown(&s.take()), ["* token for al: 0123456789abcdef"]);
        s.typed("/nick bob".into());
        s.take();
        s.line(r#"{"event":"error","text":"the name bob is taken"}"#);
        s.line(&token("al"));
        assert_eq!(shown(&s.take()), ["* error: the name bob is taken"], "not fatal when asked");
        assert_eq!(s.nick(), "al");
    }
}
