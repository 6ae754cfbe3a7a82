//! The chat room: every complete line a member sends goes to every other member of its room,
//! whole, in order per sender; the sender never gets its own line back.
//!
//! Protocol (lines end in `\n`):
//! - An ordinary line is delivered byte for byte, or as `NAME: line` once the member has a name.
//! - `/nick NAME` (1–32 of `A-Za-z0-9_-`) names the member; the others get `* NAME joined` or
//!   `* OLD is now NAME`, and `* NAME left` when a named member leaves, for any reason.
//! - `/who` answers the asker only: `* members: alice, bob (+3 unnamed)`.
//! - `/whoami` answers the asker only: `* you are alice, from 203.0.113.7:56324` (its address as
//!   the PROXY protocol header gave it, on a listener with `proxy=`; else the socket's peer).
//! - `/quit` ends the connection once the member's pending output is sent.
//! - Every line and notice gets the room's next sequence number and is kept in the room's
//!   [`history`] (`--chat-history`): `/since SEQ` and `/history N` replay it to the asker.
//! - `/format json` switches the member's deliveries and answers to JSON lines (`/format text`
//!   back); text members get the same bytes as ever.
//! - A named member lost without an orderly leave (reset, socket error, idle timeout) keeps its
//!   name for `--chat-linger`: `/nick NAME` from a new connection takes it back (`* NAME
//!   reconnected`); `* NAME left` comes when the linger runs out. `/token` gives a secret for
//!   the member's name; `/nick NAME TOKEN` takes the name even from a connection still open
//!   (closed by its reactor when the `reconnected` notice reaches it).
//! - Anything else starting with `/` gets `* error: unknown command /xyz` (the sender only).
//! - More than `--max-line` bytes without a newline: `* error: line too long`, then the member is
//!   disconnected; no fragment of that line reaches anyone.
//! - At EOF the member's complete lines, then its unterminated last line (with `\n` added), are
//!   delivered; then it leaves.
//!
//! A member reads through its transport and frames lines ([`Framer`]); what is for the others it
//! posts as [`Mail`] (one shared [`Segment`] per run of lines), and the reactor delivers it to
//! each other member's [`Outbox`], cutting off any member whose undelivered output would pass the
//! cap: slow members never slow the room. Replies and errors go to the member's own outbox.
//!
//! Members are flushed once per reactor turn (everything that arrived for them in the turn, in
//! one vectored send), not once per line.

pub(crate) mod history;
pub(crate) mod lines;
pub(crate) mod outbox;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libc::{EAGAIN, EINTR};

use super::{CloseReason, Ctx, Life, Outcome};
use crate::stats::Stats;
use crate::sys::MAX_IOV;
use crate::timer::Tick;
use crate::transport::Transport;
use crate::websocket::frame_lines;
use history::{Event, History, HistoryLimit, Posted};
use lines::{Framer, Piece};
use outbox::{Outbox, Segment};

/// The longest name.
pub(crate) const MAX_NAME: usize = 32;

/// A post's renderings for one delivery: the shared text and JSON ones, and each framed for
/// WebSocket members ([`frame_lines`]) once, when the first of them needs it, then shared by
/// the rest (framing each line once per post, not once per member).
pub(crate) struct Renderings<'p> {
    post: &'p Posted,
    framed: [Option<Segment>; 2],
}

impl<'p> Renderings<'p> {
    pub(crate) fn new(post: &'p Posted) -> Self {
        Renderings { post, framed: [None, None] }
    }

    fn get(&mut self, json: bool, framed: bool) -> &Segment {
        let plain = if json { self.post.json() } else { &self.post.text };
        match framed {
            false => plain,
            true => self.framed[json as usize].get_or_insert_with(|| Arc::from(frame_lines(plain))),
        }
    }
}

/// One room as one reactor sees it: its members there (slab keys), and the room's directory.
#[derive(Debug)]
pub(crate) struct Room {
    /// Slab keys of this reactor's members, in joining order.
    pub members: Vec<usize>,
    /// Names, the unnamed count and the numbered history of the whole room, shared by every
    /// reactor serving members of it (locked on join, `/nick`, leave, `/who`, history commands,
    /// and once per run of lines a member posts: the room's numbering is one).
    pub dir: Arc<Mutex<Directory>>,
}

impl Room {
    pub(crate) fn new(history: HistoryLimit) -> Self {
        Room { members: Vec::new(), dir: Arc::new(Mutex::new(Directory::new(history))) }
    }
}

impl Default for Room {
    fn default() -> Self {
        Room::new(HistoryLimit::default())
    }
}

/// Who is in a room (its names and how many members have none), and what it said lately.
#[derive(Debug)]
pub(crate) struct Directory {
    /// Every name in use, lingering ones included.
    names: BTreeSet<Box<str>>,
    unnamed: usize,
    /// Names of members lost without an orderly leave, kept until then for a new connection.
    lingering: Vec<(Box<str>, Instant)>,
    /// `/token` secrets, by name: `/nick NAME TOKEN` takes NAME even from an open connection.
    tokens: HashMap<Box<str>, Box<str>>,
    history: History,
}

impl Directory {
    fn new(history: HistoryLimit) -> Self {
        Directory {
            names: BTreeSet::new(),
            unnamed: 0,
            lingering: Vec::new(),
            tokens: HashMap::new(),
            history: History::new(history),
        }
    }
}

/// The sender of a notice no member sent (a linger running out): every member gets it.
const NOBODY: usize = usize::MAX - 1;

/// Names whose linger has run out by `now` leave their room: `* NAME left` to everyone.
pub(crate) fn expire_lingering(chat: &mut ChatCtx, room: usize, now: Instant) {
    let ChatCtx { rooms, mail, .. } = chat;
    let mut dir = rooms[room].dir();
    let (gone, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut dir.lingering).into_iter().partition(|(_, until)| *until <= now);
    dir.lingering = kept;
    for (name, _) in gone {
        dir.names.remove(&name);
        dir.tokens.remove(&name);
        let notice = Arc::from(format!("* {name} left\n").as_bytes());
        let post = dir.history.post(1, Some(&name), Some(Event::Left), notice);
        mail.push_back(Mail { from: NOBODY, room, post, lines: 0 });
    }
}

impl Room {
    fn dir(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a member posted for the others of its room.
#[derive(Debug)]
pub(crate) struct Mail {
    /// The sender's slab key: it does not get its own mail (`usize::MAX`: relayed from another
    /// reactor).
    pub from: usize,
    pub room: usize,
    /// The lines or notice, numbered, with their renderings.
    pub post: Arc<Posted>,
    /// Lines in the post (each delivery counts them); 0 for a notice.
    pub lines: u64,
}

/// The reactor's chat state, lent to members with the rest of [`Ctx`].
#[derive(Debug, Default)]
pub(crate) struct ChatCtx {
    pub rooms: Vec<Room>,
    /// Posted, not yet delivered: the reactor delivers it in this order.
    pub mail: VecDeque<Mail>,
    /// Members with output to flush at the end of the turn (each listed once).
    pub dirty: Vec<usize>,
    /// `--max-line`.
    pub max_line: usize,
    /// Per room, the highest sequence number this reactor has delivered: a replay stops there,
    /// so that lines posted but not yet delivered come once, by delivery (empty: no bound).
    pub delivered: Vec<u64>,
    /// `--chat-linger`.
    pub linger: std::time::Duration,
    /// Lingers begun this turn (room, until), for the reactor to arm their deadlines.
    pub lingers: Vec<(usize, Instant)>,
}

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the room, reading and receiving.
    Open,
    /// Out of the room (quit, EOF, a line too long): sending what is pending, then closing.
    Leaving(CloseReason),
    /// Done; the reactor frees it after the current event batch.
    Closed,
}

/// One member of a room, over transport `T`.
#[derive(Debug)]
pub(crate) struct Member<T> {
    pub io: T,
    pub life: Life,
    key: usize,
    room: usize,
    state: State,
    name: Option<Box<str>>,
    joined: bool,
    out: Outbox,
    framer: Framer,
    write_blocked: bool,
    read_closed: bool,
    /// In [`ChatCtx::dirty`].
    listed: bool,
    /// The client's address (from the PROXY protocol header if the listener takes one), for
    /// `/whoami`.
    from: Option<std::net::SocketAddr>,
    /// `/format json`: deliveries and answers as JSON lines.
    json: bool,
    /// Over WebSocket: everything it is sent goes framed, one text message per line
    /// ([`Transport::frames_lines`]).
    framed: bool,
}

impl<T: Transport> Member<T> {
    /// A member of `room`, at slab key `key`, joined at once; `from`: the client's address.
    pub(crate) fn join(
        io: T,
        life: Life,
        key: usize,
        room: usize,
        from: Option<std::net::SocketAddr>,
        ctx: &mut Ctx,
    ) -> Self {
        let io_frames = io.frames_lines();
        let r = &mut ctx.chat.rooms[room];
        r.members.push(key);
        r.dir().unnamed += 1;
        ctx.stats.chat_members += 1;
        Member {
            io,
            life,
            key,
            room,
            state: State::Open,
            name: None,
            joined: true,
            out: Outbox::default(),
            framer: Framer::default(),
            write_blocked: false,
            read_closed: false,
            listed: false,
            from,
            json: false,
            framed: io_frames,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    /// A readiness event.
    pub(crate) fn on_event(
        &mut self,
        ctx: &mut Ctx,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> Outcome {
        if read_closed {
            self.read_closed = true;
            self.io.note_read_closed();
        }
        let mut outcome = Outcome::Idle;
        if writable && self.write_blocked {
            self.write_blocked = false;
            outcome = self.flush(&mut ctx.stats, ctx.tick);
        }
        if readable && outcome == Outcome::Idle {
            outcome = self.on_readable(ctx, 0);
            if outcome == Outcome::Idle && !self.out.is_empty() && !self.write_blocked {
                // Output queued while the handshake went on, which these reads may have ended:
                // no writable edge will say so.
                outcome = self.flush(&mut ctx.stats, ctx.tick);
            }
        }
        outcome
    }

    /// Reads and frames lines until the socket is drained or the budget is spent (`used` of it
    /// already was, this turn).
    pub(crate) fn on_readable(&mut self, ctx: &mut Ctx, mut used: usize) -> Outcome {
        while self.state == State::Open {
            let n = match self.io.recv(&mut ctx.buf) {
                Ok(0) => return self.on_eof(ctx),
                Ok(n) => n,
                Err(EAGAIN) => break,
                Err(EINTR) => continue,
                Err(_) => return Outcome::Close(CloseReason::Reset),
            };
            ctx.stats.bytes_in += n as u64;
            self.life.last_active = ctx.tick;
            let mut framer = std::mem::take(&mut self.framer);
            let Ctx { buf, chat, stats, cap, .. } = ctx;
            framer.feed(&buf[..n], chat.max_line, |piece| self.piece(piece, chat, stats, *cap));
            self.framer = framer;
            if self.out.len() > ctx.cap {
                // Its own replies (a flood of commands it never reads the answers to).
                return Outcome::Close(CloseReason::Slow);
            }
            if self.state != State::Open {
                return self.flush(&mut ctx.stats, ctx.tick);
            }
            used += n;
            // A short read on a stream socket means its receive queue was empty (epoll(7)).
            if n < ctx.buf.len() && !self.read_closed && self.io.short_read_drains() {
                break;
            }
            if used >= ctx.budget {
                return Outcome::MoreToRead;
            }
        }
        Outcome::Idle
    }

    /// The peer's EOF: its last unterminated line goes out too, then it leaves.
    fn on_eof(&mut self, ctx: &mut Ctx) -> Outcome {
        let mut framer = std::mem::take(&mut self.framer);
        let Ctx { chat, stats, cap, .. } = ctx;
        framer.finish(|piece| self.piece(piece, chat, stats, *cap));
        if self.state == State::Open {
            self.set_state(State::Leaving(CloseReason::Eof), chat, stats);
        }
        self.flush(&mut ctx.stats, ctx.tick)
    }

    /// Handles one framed piece; false stops the framing (the member is leaving). `cap`: the
    /// member's output cap (a history replay fills at most what is left under it).
    fn piece(
        &mut self,
        piece: Piece<'_>,
        chat: &mut ChatCtx,
        stats: &mut Stats,
        cap: usize,
    ) -> bool {
        match piece {
            Piece::Lines(bytes, count) => {
                stats.chat_lines += count as u64;
                let text = match &self.name {
                    None => Arc::from(bytes),
                    Some(name) => prefixed(name, bytes, count),
                };
                let lines = count as u64;
                let post = chat.rooms[self.room].dir().history.post(
                    lines,
                    self.name.as_deref(),
                    None,
                    text,
                );
                chat.mail.push_back(Mail { from: self.key, room: self.room, post, lines });
                true
            }
            Piece::Command(line) => {
                stats.chat_lines += 1;
                self.command(line, chat, stats, cap)
            }
            Piece::TooLong => {
                self.error("line too long", chat);
                self.set_state(State::Leaving(CloseReason::LineTooLong), chat, stats);
                false
            }
        }
    }

    /// One command line (without its `\n`; a trailing `\r` is ignored, for telnet).
    fn command(&mut self, line: &[u8], chat: &mut ChatCtx, stats: &mut Stats, cap: usize) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let (command, arg) = match text.split_once(' ') {
            Some((command, arg)) => (command, arg.trim()),
            None => (&*text, ""),
        };
        match command {
            "/nick" => {
                // `NAME TOKEN` when the second word is a token's 16 hex digits; otherwise the
                // whole argument is the name (and a name with a space is refused as such).
                let (name, token) = match arg.split_once(' ') {
                    Some((name, token)) if history::is_token(token) => (name, Some(token)),
                    _ => (arg, None),
                };
                self.nick(name, token, chat, stats)
            }
            "/token" => self.token(chat),
            "/who" => {
                let dir = chat.rooms[self.room].dir();
                let (text, json) = who(&dir);
                drop(dir);
                self.answer(text, json, chat);
            }
            "/whoami" => {
                let from = self.from.map(|a| a.to_string());
                let text = format!(
                    "* you are {}, from {}\n",
                    self.name.as_deref().unwrap_or("unnamed"),
                    from.as_deref().unwrap_or("an unnamed socket")
                );
                let json =
                    serde_json::json!({"event": "you", "name": self.name.as_deref(), "from": from});
                self.answer(text, json, chat);
            }
            "/format" => match arg {
                "json" | "text" => {
                    self.json = arg == "json";
                    let json = serde_json::json!({"event": "format", "format": arg});
                    self.answer(format!("* format {arg}\n"), json, chat);
                }
                _ => self.error(&format!("/format takes json or text, not {arg:?}"), chat),
            },
            "/since" | "/history" => match arg.parse::<u64>() {
                Ok(n) => {
                    let since = match command {
                        "/since" => n,
                        _ => chat.rooms[self.room].dir().history.last().saturating_sub(n),
                    };
                    self.replay(since, chat, stats, cap);
                }
                Err(_) => self.error(&format!("{command} takes a number, not {arg:?}"), chat),
            },
            "/quit" => {
                self.set_state(State::Leaving(CloseReason::Eof), chat, stats);
                return false;
            }
            _ => self.error(&format!("unknown command {command}"), chat),
        }
        true
    }

    /// Replays the room's lines and notices after number `since` still held (within what is left
    /// of the member's cap), then says whether that was all.
    fn replay(&mut self, since: u64, chat: &mut ChatCtx, stats: &mut Stats, cap: usize) {
        let upto = chat.delivered.get(self.room).copied().unwrap_or(u64::MAX);
        let budget = cap.saturating_sub(self.out.len()) / 2;
        let (replay, room) = {
            let dir = chat.rooms[self.room].dir();
            (dir.history.since(since, upto, budget), Arc::clone(&dir.history.room))
        };
        if let Some((first, last)) = replay.gap {
            let text = format!("* history gap: {first}..{last} no longer held\n");
            let json =
                serde_json::json!({"event": "gap", "room": &*room, "first": first, "last": last});
            self.answer(text, json, chat);
        }
        for (post, skip, take) in &replay.posts {
            stats.chat_replayed += *take as u64;
            let seg = post.rendering(self.json, *skip, *take);
            self.out.push(if self.framed { Arc::from(frame_lines(&seg)) } else { seg });
        }
        let (text, json) = match replay.more {
            None => (
                format!("* history complete: room {room}, last {}\n", replay.last),
                serde_json::json!({"event": "history", "complete": true, "room": &*room, "last": replay.last}),
            ),
            Some(upto) => (
                format!(
                    "* history incomplete: room {room}, replayed up to {upto} of {}; ask /since {upto} for more\n",
                    replay.last
                ),
                serde_json::json!({"event": "history", "complete": false, "room": &*room, "last": replay.last, "replayed": upto}),
            ),
        };
        self.answer(text, json, chat);
    }

    /// `/token`: a secret for the member's name, the same until the name is let go.
    fn token(&mut self, chat: &mut ChatCtx) {
        let Some(name) = self.name.clone() else {
            return self.error("take a name with /nick NAME first", chat);
        };
        let token = chat.rooms[self.room]
            .dir()
            .tokens
            .entry(name.clone())
            .or_insert_with(|| history::random_hex().into())
            .clone();
        let json = serde_json::json!({"event": "token", "name": &*name, "token": &*token});
        self.answer(format!("* token for {name}: {token}\n"), json, chat);
    }

    /// `/nick NAME [TOKEN]`: takes NAME if it is free, lingering after a lost member, or held by
    /// a connection that TOKEN (from `/token`) says is this client's own (that connection is
    /// then closed by the reactor that serves it, on seeing the `reconnected` notice).
    fn nick(&mut self, name: &str, token: Option<&str>, chat: &mut ChatCtx, stats: &mut Stats) {
        if !valid_name(name) {
            let e = format!("a name is 1 to {MAX_NAME} of A-Z a-z 0-9 _ -, not {name:?}");
            return self.error(&e, chat);
        }
        if self.name.as_deref() == Some(name) {
            return; // already so named: nothing changes, nobody is told
        }
        let mut dir = chat.rooms[self.room].dir();
        let lingering = dir.lingering.iter().position(|(n, _)| &**n == name);
        let owned = token.is_some() && dir.tokens.get(name).map(|t| &**t) == token;
        if lingering.is_some() || (owned && dir.names.contains(name)) {
            // A lost member's name, taken back: the others hear it came back, not left/joined.
            if let Some(i) = lingering {
                dir.lingering.remove(i);
            }
            match self.name.take() {
                None => dir.unnamed -= 1,
                Some(old) => {
                    dir.names.remove(&old);
                    dir.tokens.remove(&old);
                }
            }
            let notice = Arc::from(format!("* {name} reconnected\n").as_bytes());
            let post = dir.history.post(1, Some(name), Some(Event::Reconnected), notice);
            drop(dir);
            stats.chat_reconnects += 1;
            self.name = Some(name.into());
            chat.mail.push_back(Mail { from: self.key, room: self.room, post, lines: 0 });
            return;
        }
        if dir.names.contains(name) {
            drop(dir);
            let why = if token.is_some() { " (the token is not its token)" } else { "" };
            return self.error(&format!("the name {name} is taken{why}"), chat);
        }
        let (notice, event) = match self.name.take() {
            None => {
                dir.unnamed -= 1;
                (format!("* {name} joined\n"), Event::Joined)
            }
            Some(old) => {
                dir.names.remove(&old);
                dir.tokens.remove(&old);
                (format!("* {old} is now {name}\n"), Event::Renamed(old))
            }
        };
        dir.names.insert(name.into());
        let post = dir.history.post(1, Some(name), Some(event), Arc::from(notice.as_bytes()));
        drop(dir);
        self.name = Some(name.into());
        chat.mail.push_back(Mail { from: self.key, room: self.room, post, lines: 0 });
    }

    /// Answers this member only, in its format.
    fn answer(&mut self, text: String, json: serde_json::Value, chat: &mut ChatCtx) {
        match self.json {
            false => self.reply(text.as_bytes(), chat),
            true => self.reply(format!("{json}\n").as_bytes(), chat),
        }
    }

    /// `* error: WHAT` (text) or `{"event":"error","text":WHAT}`, to this member only.
    fn error(&mut self, what: &str, chat: &mut ChatCtx) {
        let json = serde_json::json!({"event": "error", "text": what});
        self.answer(format!("* error: {what}\n"), json, chat);
    }

    /// Queues an answer for this member only.
    fn reply(&mut self, bytes: &[u8], chat: &mut ChatCtx) {
        self.out.push(if self.framed { Arc::from(frame_lines(bytes)) } else { Arc::from(bytes) });
        self.list(&mut chat.dirty);
    }

    /// Every change of the member's state goes through here, forward only (open → leaving →
    /// closed): any state but open is out of the room, so the member leaves it (once; the
    /// others are told if it had a name).
    fn set_state(&mut self, next: State, chat: &mut ChatCtx, stats: &mut Stats) {
        debug_assert!(
            self.state != State::Closed || next == State::Closed,
            "{:?} => {next:?}",
            self.state
        );
        if next != State::Open {
            self.leave(chat, stats);
        }
        self.state = next;
    }

    /// Leaves the room (once): others are told if the member had a name.
    fn leave(&mut self, chat: &mut ChatCtx, stats: &mut Stats) {
        if !self.joined {
            return;
        }
        self.joined = false;
        stats.chat_members -= 1;
        let room = &mut chat.rooms[self.room];
        if let Some(i) = room.members.iter().position(|&k| k == self.key) {
            room.members.remove(i);
        }
        match &self.name {
            None => room.dir().unnamed -= 1,
            Some(name) => {
                let mut dir = room.dir();
                dir.names.remove(name);
                dir.tokens.remove(name);
                let notice = Arc::from(format!("* {name} left\n").as_bytes());
                let post = dir.history.post(1, Some(name), Some(Event::Left), notice);
                drop(dir);
                chat.mail.push_back(Mail { from: self.key, room: self.room, post, lines: 0 });
            }
        }
    }

    /// Whether this member holds `name` and is not `taker` (the connection taking it back).
    pub(crate) fn holds(&self, name: Option<&str>, taker: usize) -> bool {
        self.key != taker && self.name.is_some() && self.name.as_deref() == name
    }

    /// Gives up its name, silently, to a new connection that took it back with its token: it
    /// leaves as an unnamed member would (no notice; the name stays the taker's).
    pub(crate) fn surrender(&mut self, chat: &mut ChatCtx) {
        if self.name.take().is_some() {
            chat.rooms[self.room].dir().unnamed += 1;
        }
    }

    /// The rendering of the post this member receives (text or JSON, framed over WebSocket).
    #[inline]
    fn rendering<'r>(&self, post: &'r mut Renderings) -> &'r Segment {
        post.get(self.json, self.framed)
    }

    /// Queues `post` from another member, unless that would take the undelivered output past
    /// `cap` (false: the member is too slow). A member that owes nothing always takes it: one
    /// read's run of lines may be longer than the cap, and a member keeping up is not slow. Lists
    /// the member for the end-of-turn flush.
    pub(crate) fn deliver(
        &mut self,
        post: &mut Renderings,
        cap: usize,
        dirty: &mut Vec<usize>,
    ) -> bool {
        let seg = self.rendering(post);
        if !self.out.is_empty() && self.out.len() + seg.len() > cap {
            return false;
        }
        self.out.push(Arc::clone(seg));
        self.list(dirty);
        true
    }

    /// Puts the member on `dirty` (the end-of-turn flush list) unless it is on it already.
    fn list(&mut self, dirty: &mut Vec<usize>) {
        if !self.listed {
            self.listed = true;
            dirty.push(self.key);
        }
    }

    /// Whether a segment for this member may go straight to its socket: it owes nothing, the
    /// socket took everything so far, and the transport takes output (its handshake is done).
    pub(crate) fn can_send_now(&self) -> bool {
        self.out.is_empty()
            && !self.write_blocked
            && self.state != State::Closed
            && !self.io.is_handshaking()
    }

    /// Sends `seg` at once (see [`Member::can_send_now`]); what the socket does not take is
    /// kept, sharing the segment.
    pub(crate) fn send_now(
        &mut self,
        post: &mut Renderings,
        stats: &mut Stats,
        now: Tick,
    ) -> Result<(), CloseReason> {
        let seg = self.rendering(post);
        let sent = loop {
            match self.io.send(seg) {
                Err(EINTR) => continue,
                other => break other,
            }
        };
        let n = match sent {
            Ok(n) => n,
            Err(EAGAIN) => 0,
            Err(_) => return Err(CloseReason::Reset),
        };
        stats.bytes_out += n as u64;
        self.life.last_active = now;
        if n < seg.len() {
            self.out.push_rest(Arc::clone(seg), n);
            self.write_blocked = true; // refused bytes: a writable edge will follow
        }
        Ok(())
    }

    /// Taken off the dirty list.
    pub(crate) fn unlist(&mut self) {
        self.listed = false;
    }

    /// Sends pending output until it is gone or the transport refuses more; closes a leaving
    /// member once everything is out. During a handshake nothing is sent: the output stays
    /// queued (under the cap, like any member's) until a read ends the handshake.
    pub(crate) fn flush(&mut self, stats: &mut Stats, now: Tick) -> Outcome {
        if self.io.is_handshaking() {
            return Outcome::Idle;
        }
        while !self.out.is_empty() && !self.write_blocked {
            // What is offered may be less than what is pending (at most MAX_IOV segments per
            // call): only fewer bytes taken than offered means the kernel's buffer is full.
            let (offered, sent) = match self.out.single() {
                Some(bytes) => (bytes.len(), self.io.send(bytes)),
                None => {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    let k = self.out.slices(&mut iov);
                    let offered = iov[..k].iter().map(|s| s.len()).sum();
                    (offered, self.io.send_vectored(&iov[..k]))
                }
            };
            match sent {
                Ok(n) => {
                    stats.bytes_out += n as u64;
                    self.life.last_active = now;
                    self.out.consume(n);
                    // Refused bytes: a writable edge will follow.
                    self.write_blocked = n < offered;
                }
                Err(EAGAIN) => self.write_blocked = true,
                Err(EINTR) => {}
                Err(_) => return Outcome::Close(CloseReason::Reset),
            }
        }
        match self.state {
            State::Leaving(reason) if self.out.is_empty() => Outcome::Close(reason),
            _ => Outcome::Idle,
        }
    }

    /// Ends the connection: out of the room (the others are told), FIN, output dropped. A named
    /// member lost without an orderly leave (`reason`: a reset, a socket error, the idle timeout)
    /// leaves the room's list but its name lingers for `--chat-linger`, untold.
    pub(crate) fn close(&mut self, ctx: &mut Ctx, reason: CloseReason) {
        if self.state != State::Closed {
            let lost = matches!(reason, CloseReason::Reset | CloseReason::IdleTimeout);
            if lost && self.joined && !ctx.chat.linger.is_zero() {
                if let Some(name) = self.name.take() {
                    self.joined = false;
                    ctx.stats.chat_members -= 1;
                    let room = &mut ctx.chat.rooms[self.room];
                    room.members.retain(|&k| k != self.key);
                    // The clock now: `ctx.now` is exact only on turns with deadlines.
                    let until = Instant::now() + ctx.chat.linger;
                    room.dir().lingering.push((name, until));
                    ctx.chat.lingers.push((self.room, until));
                }
            }
            self.set_state(State::Closed, &mut ctx.chat, &mut ctx.stats);
            self.io.shutdown_write();
        }
        self.out.clear();
    }
}

/// `NAME: line` for each of the `count` lines in `bytes`, in one segment.
fn prefixed(name: &str, bytes: &[u8], count: usize) -> Segment {
    let mut out = Vec::with_capacity(bytes.len() + count * (name.len() + 2));
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(line);
    }
    Arc::from(out)
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The answer to `/who`: names in order, then the count of unnamed members (text, JSON).
fn who(dir: &Directory) -> (String, serde_json::Value) {
    let names: Vec<&str> = dir.names.iter().map(|n| &**n).collect();
    let mut answer = format!("* members: {}", names.join(", "));
    if dir.unnamed > 0 {
        if !names.is_empty() {
            answer.push(' ');
        }
        answer.push_str(&format!("(+{} unnamed)", dir.unnamed));
    }
    answer.push('\n');
    let json = serde_json::json!({"event": "members", "names": names, "unnamed": dir.unnamed});
    (answer, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::transport::{Plain, Stream};
    use std::io::Read;

    fn member_on_a_socket_pair() -> (Member<Plain>, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let io = Plain::new(Stream::Unix(mio::net::UnixStream::from_std(ours)));
        let member = Member {
            io,
            life: Life::new(0, Tick::default(), 0),
            key: 0,
            room: 0,
            state: State::Open,
            name: None,
            joined: false,
            out: Outbox::default(),
            framer: Framer::default(),
            write_blocked: false,
            read_closed: false,
            listed: false,
            from: None,
            json: false,
            framed: false,
        };
        (member, theirs)
    }

    /// More segments than one sendmsg takes: a flush goes on until everything is out (the
    /// socket has room), and is not left waiting for a writable edge that will never come.
    #[test]
    fn a_flush_sends_more_segments_than_one_call_takes() {
        let (mut member, mut peer) = member_on_a_socket_pair();
        let mut dirty = Vec::new();
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [b'a' + i % 26, b'\n']).collect();
        for line in expected.chunks(2) {
            let post = Posted::loose(line);
            assert!(member.deliver(&mut Renderings::new(&post), 1 << 20, &mut dirty));
        }
        assert_eq!(dirty, vec![0], "listed once");
        let mut stats = Stats::default();
        assert_eq!(member.flush(&mut stats, Tick::default()), Outcome::Idle);
        assert!(!member.write_blocked, "nothing was refused");
        assert_eq!(member.pending(), 0);
        assert_eq!(stats.bytes_out, 200);
        let mut got = vec![0; 200];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
    }

    /// The cap: a member that owes something and would pass the cap is refused (slow); one that
    /// owes nothing always takes the next segment.
    #[test]
    fn deliver_applies_the_cap_to_members_that_owe() {
        let (mut member, _peer) = member_on_a_socket_pair();
        let mut dirty = Vec::new();
        let big = Posted::loose(&[b'x'; 100]);
        assert!(
            member.deliver(&mut Renderings::new(&big), 10, &mut dirty),
            "owes nothing: takes it"
        );
        let y = Posted::loose(b"y\n");
        assert!(!member.deliver(&mut Renderings::new(&y), 10, &mut dirty), "owes 100 > cap 10");
        assert_eq!(member.pending(), 100);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("alice"));
        assert!(valid_name("a-b_9"));
        assert!(valid_name(&"x".repeat(MAX_NAME)));
        for bad in ["", "a b", "é", "bob!", &"x".repeat(MAX_NAME + 1)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefix_goes_on_every_line() {
        assert_eq!(&*prefixed("al", b"a\n\nb\n", 3), b"al: a\nal: \nal: b\n");
    }

    #[test]
    fn who_lists_names_then_the_unnamed() {
        let room = Room::default();
        room.dir().names.insert("bob".into());
        room.dir().names.insert("alice".into());
        room.dir().unnamed = 3;
        assert_eq!(who(&room.dir()).0, "* members: alice, bob (+3 unnamed)\n");
        assert_eq!(
            who(&room.dir()).1.to_string(),
            r#"{"event":"members","names":["alice","bob"],"unnamed":3}"#
        );
        room.dir().unnamed = 0;
        assert_eq!(who(&room.dir()).0, "* members: alice, bob\n");
        room.dir().names.clear();
        room.dir().unnamed = 2;
        assert_eq!(who(&room.dir()).0, "* members: (+2 unnamed)\n");
    }
}
