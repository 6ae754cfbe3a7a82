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

pub(crate) mod lines;
pub(crate) mod outbox;

use std::collections::{BTreeSet, VecDeque};
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libc::{EAGAIN, EINTR};

use super::{CloseReason, Ctx, Life, Outcome};
use crate::stats::Stats;
use crate::sys::MAX_IOV;
use crate::transport::Transport;
use lines::{Framer, Piece};
use outbox::{Outbox, Segment};

/// The longest name.
pub(crate) const MAX_NAME: usize = 32;

/// One room as one reactor sees it: its members there (slab keys), and the room's directory.
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// Slab keys of this reactor's members, in joining order.
    pub members: Vec<usize>,
    /// Names and the unnamed count of the whole room, shared by every reactor serving members
    /// of it (locked on join, `/nick`, leave and `/who` only, never per line).
    pub dir: Arc<Mutex<Directory>>,
}

/// Who is in a room: its names and how many members have none.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    names: BTreeSet<Box<str>>,
    unnamed: usize,
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
    pub seg: Segment,
    /// Lines in `seg` (each delivery counts them); 0 for a notice.
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
        self.read_closed |= read_closed;
        let mut outcome = Outcome::Idle;
        if writable && self.write_blocked {
            self.write_blocked = false;
            outcome = self.flush(&mut ctx.stats, ctx.now);
        }
        if readable && outcome == Outcome::Idle {
            outcome = self.on_readable(ctx, 0);
            if outcome == Outcome::Idle && !self.out.is_empty() && !self.write_blocked {
                // Output queued while the handshake went on, which these reads may have ended:
                // no writable edge will say so.
                outcome = self.flush(&mut ctx.stats, ctx.now);
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
            self.life.last_active = ctx.now;
            let mut framer = std::mem::take(&mut self.framer);
            let Ctx { buf, chat, stats, .. } = ctx;
            framer.feed(&buf[..n], chat.max_line, |piece| self.piece(piece, chat, stats));
            self.framer = framer;
            if self.out.len() > ctx.cap {
                // Its own replies (a flood of commands it never reads the answers to).
                return Outcome::Close(CloseReason::Slow);
            }
            if self.state != State::Open {
                return self.flush(&mut ctx.stats, ctx.now);
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
        let Ctx { chat, stats, .. } = ctx;
        framer.finish(|piece| self.piece(piece, chat, stats));
        if self.state == State::Open {
            self.set_state(State::Leaving(CloseReason::Eof), chat, stats);
        }
        self.flush(&mut ctx.stats, ctx.now)
    }

    /// Handles one framed piece; false stops the framing (the member is leaving).
    fn piece(&mut self, piece: Piece<'_>, chat: &mut ChatCtx, stats: &mut Stats) -> bool {
        match piece {
            Piece::Lines(bytes, count) => {
                stats.chat_lines += count as u64;
                let seg = match &self.name {
                    None => Arc::from(bytes),
                    Some(name) => prefixed(name, bytes, count),
                };
                chat.mail.push_back(Mail {
                    from: self.key,
                    room: self.room,
                    seg,
                    lines: count as u64,
                });
                true
            }
            Piece::Command(line) => {
                stats.chat_lines += 1;
                self.command(line, chat, stats)
            }
            Piece::TooLong => {
                self.reply(b"* error: line too long\n", chat);
                self.set_state(State::Leaving(CloseReason::LineTooLong), chat, stats);
                false
            }
        }
    }

    /// One command line (without its `\n`; a trailing `\r` is ignored, for telnet).
    fn command(&mut self, line: &[u8], chat: &mut ChatCtx, stats: &mut Stats) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let (command, arg) = match text.split_once(' ') {
            Some((command, arg)) => (command, arg.trim()),
            None => (&*text, ""),
        };
        match command {
            "/nick" => self.nick(arg, chat),
            "/who" => {
                let answer = who(&chat.rooms[self.room]);
                self.reply(answer.as_bytes(), chat);
            }
            "/whoami" => {
                let from = self.from.map_or("an unnamed socket".into(), |a| a.to_string());
                let answer = match &self.name {
                    Some(name) => format!("* you are {name}, from {from}\n"),
                    None => format!("* you are unnamed, from {from}\n"),
                };
                self.reply(answer.as_bytes(), chat);
            }
            "/quit" => {
                self.set_state(State::Leaving(CloseReason::Eof), chat, stats);
                return false;
            }
            _ => {
                let answer = format!("* error: unknown command {command}\n");
                self.reply(answer.as_bytes(), chat);
            }
        }
        true
    }

    fn nick(&mut self, name: &str, chat: &mut ChatCtx) {
        if !valid_name(name) {
            let answer =
                format!("* error: a name is 1 to {MAX_NAME} of A-Z a-z 0-9 _ -, not {name:?}\n");
            return self.reply(answer.as_bytes(), chat);
        }
        if self.name.as_deref() == Some(name) {
            return; // already so named: nothing changes, nobody is told
        }
        let mut dir = chat.rooms[self.room].dir();
        if dir.names.contains(name) {
            drop(dir);
            let answer = format!("* error: the name {name} is taken\n");
            return self.reply(answer.as_bytes(), chat);
        }
        let notice = match self.name.take() {
            None => {
                dir.unnamed -= 1;
                format!("* {name} joined\n")
            }
            Some(old) => {
                dir.names.remove(&old);
                format!("* {old} is now {name}\n")
            }
        };
        dir.names.insert(name.into());
        drop(dir);
        self.name = Some(name.into());
        chat.mail.push_back(Mail {
            from: self.key,
            room: self.room,
            seg: Arc::from(notice.as_bytes()),
            lines: 0,
        });
    }

    /// Queues an answer for this member only.
    fn reply(&mut self, bytes: &[u8], chat: &mut ChatCtx) {
        self.out.push(Arc::from(bytes));
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
                room.dir().names.remove(name);
                let notice = format!("* {name} left\n");
                chat.mail.push_back(Mail {
                    from: self.key,
                    room: self.room,
                    seg: Arc::from(notice.as_bytes()),
                    lines: 0,
                });
            }
        }
    }

    /// Queues `seg` from another member, unless that would take the undelivered output past
    /// `cap` (false: the member is too slow). A member that owes nothing always takes it: one
    /// read's run of lines may be longer than the cap, and a member keeping up is not slow. Lists
    /// the member for the end-of-turn flush.
    pub(crate) fn deliver(&mut self, seg: &Segment, cap: usize, dirty: &mut Vec<usize>) -> bool {
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
        seg: &Segment,
        stats: &mut Stats,
        now: Instant,
    ) -> Result<(), CloseReason> {
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
    pub(crate) fn flush(&mut self, stats: &mut Stats, now: Instant) -> Outcome {
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

    /// Ends the connection: out of the room (the others are told), FIN, output dropped.
    pub(crate) fn close(&mut self, ctx: &mut Ctx) {
        if self.state != State::Closed {
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

/// The answer to `/who`: names in order, then the count of unnamed members.
fn who(room: &Room) -> String {
    let dir = room.dir();
    let names: Vec<&str> = dir.names.iter().map(|n| &**n).collect();
    let mut answer = format!("* members: {}", names.join(", "));
    if dir.unnamed > 0 {
        if !names.is_empty() {
            answer.push(' ');
        }
        answer.push_str(&format!("(+{} unnamed)", dir.unnamed));
    }
    answer.push('\n');
    answer
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
            life: Life::new(0, Instant::now(), 0),
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
            assert!(member.deliver(&Arc::from(line), 1 << 20, &mut dirty));
        }
        assert_eq!(dirty, vec![0], "listed once");
        let mut stats = Stats::default();
        assert_eq!(member.flush(&mut stats, Instant::now()), Outcome::Idle);
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
        let big: Segment = Arc::from(vec![b'x'; 100]);
        assert!(member.deliver(&big, 10, &mut dirty), "owes nothing: takes it");
        assert!(!member.deliver(&Arc::from(&b"y\n"[..]), 10, &mut dirty), "owes 100 > cap 10");
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
        assert_eq!(who(&room), "* members: alice, bob (+3 unnamed)\n");
        room.dir().unnamed = 0;
        assert_eq!(who(&room), "* members: alice, bob\n");
        room.dir().names.clear();
        room.dir().unnamed = 2;
        assert_eq!(who(&room), "* members: (+2 unnamed)\n");
    }
}
