//! What a room said lately, numbered: every run of lines and every notice a room delivers is
//! [`Posted`] once, with the room's next sequence numbers and the time, and kept in the room's
//! [`History`] (bounded in lines and bytes) for members who ask what they missed (`/since SEQ`,
//! `/history N`).
//!
//! A post is stored once and shared: its text rendering is the segment every text member
//! receives (the same bytes as before sequence numbers existed), its JSON rendering is made the
//! first time a JSON member needs it, and the history holds the same `Arc`.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use super::outbox::Segment;
pub(crate) use crate::config::HistoryLimit;

/// What a notice says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A member took a name.
    Joined,
    /// A member changed its name from this one.
    Renamed(Box<str>),
    /// A named member left.
    Left,
    /// A name lingering after a lost member was taken back by a new connection.
    Reconnected,
}

/// A run of lines from one member, or a notice, as the room numbered and stamped it.
#[derive(Debug)]
pub(crate) struct Posted {
    /// The first line's sequence number (a notice has one number).
    pub seq: u64,
    /// Lines in `text` (a notice: 1).
    pub lines: u64,
    pub ts: SystemTime,
    /// The sender's name (lines), or the name the notice is about.
    pub name: Option<Box<str>>,
    /// `None`: lines.
    pub event: Option<Event>,
    /// The text rendering: `NAME: line` per line (or the line alone, unnamed), or `* notice`.
    pub text: Segment,
    /// The room's id (it changes when the server restarts).
    pub room: Arc<str>,
    json: OnceLock<Segment>,
}

impl Posted {
    fn new(
        seq: u64,
        lines: u64,
        name: Option<&str>,
        event: Option<Event>,
        text: Segment,
        room: &Arc<str>,
    ) -> Posted {
        Posted {
            seq,
            lines,
            ts: SystemTime::now(),
            name: name.map(Into::into),
            event,
            text,
            room: Arc::clone(room),
            json: OnceLock::new(),
        }
    }

    /// Lines `text` outside any room (tests of delivery, which need a post but no history).
    #[cfg(test)]
    pub(crate) fn loose(text: &[u8]) -> Arc<Posted> {
        let lines = text.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
        Arc::new(Posted::new(1, lines, None, None, Arc::from(text), &Arc::from("test")))
    }

    /// The last sequence number this post holds.
    pub(crate) fn last(&self) -> u64 {
        self.seq + self.lines - 1
    }

    /// The JSON rendering (one object per line), made once.
    pub(crate) fn json(&self) -> &Segment {
        self.json.get_or_init(|| self.render_json(0, usize::MAX))
    }

    /// The rendering for a member of `take` lines from line `skip` on (all of them: the shared
    /// segment itself).
    pub(crate) fn rendering(&self, json: bool, skip: usize, take: usize) -> Segment {
        let whole = skip == 0 && take as u64 >= self.lines;
        match (json, whole) {
            (false, true) => Arc::clone(&self.text),
            (true, true) => Arc::clone(self.json()),
            (false, false) => {
                let from = line_start(&self.text, skip);
                let to = from + line_start(&self.text[from..], take);
                Arc::from(&self.text[from..to])
            }
            (true, false) => self.render_json(skip, take),
        }
    }

    fn render_json(&self, skip: usize, take: usize) -> Segment {
        let room = &*self.room;
        let ts = humantime::format_rfc3339_millis(self.ts).to_string();
        let mut out = String::new();
        let name = self.name.as_deref();
        match &self.event {
            Some(event) => {
                let mut v = serde_json::json!({
                    "seq": self.seq, "room": room, "ts": ts, "name": name,
                    "event": match event {
                        Event::Joined => "joined",
                        Event::Renamed(_) => "renamed",
                        Event::Left => "left",
                        Event::Reconnected => "reconnected",
                    },
                });
                if let Event::Renamed(old) = event {
                    v["old"] = serde_json::json!(&**old);
                }
                out.push_str(&v.to_string());
                out.push('\n');
            }
            None => {
                let prefix = name.map_or(0, |n| n.len() + 2);
                let lines = self.text.split_inclusive(|&b| b == b'\n').enumerate();
                for (i, line) in lines.skip(skip).take(take) {
                    let body = &line[prefix.min(line.len())..];
                    let body = body.strip_suffix(b"\n").unwrap_or(body);
                    let text = String::from_utf8_lossy(body);
                    let v = serde_json::json!({
                        "seq": self.seq + i as u64, "room": room, "ts": ts, "from": name,
                        "text": text,
                    });
                    out.push_str(&v.to_string());
                    out.push('\n');
                }
            }
        }
        Arc::from(out.into_bytes())
    }
}

/// A new room id: 8 random bytes in hex.
fn room_id() -> Arc<str> {
    random_hex().into()
}

/// Whether `text` has a `/token` secret's form: 16 lowercase hex digits.
pub(crate) fn is_token(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 8 random bytes in hex (room ids, `/token` secrets).
pub(crate) fn random_hex() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system's random source; should it fail, the clock still tells restarts apart.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        bytes = (now.as_nanos() as u64).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where line `n` (from 0) of `text` begins.
fn line_start(text: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 0..n {
        match memchr::memchr(b'\n', &text[at..]) {
            Some(i) => at += i + 1,
            None => return text.len(),
        }
    }
    at
}

/// A room's numbered past: the next sequence number, and the posts still held.
#[derive(Debug)]
pub(crate) struct History {
    /// The room's id: chosen at start, so that numbers from before a restart are not taken for
    /// this room's.
    pub room: Arc<str>,
    limit: HistoryLimit,
    /// The next sequence number to give (the first is 1).
    next: u64,
    /// Posts held, oldest first; the oldest may be held in part: the number of its first lines
    /// already dropped is `front_skip` (its bytes stay held until it goes whole).
    posts: VecDeque<Arc<Posted>>,
    front_skip: u64,
    /// Lines held (not counting `front_skip`) and bytes held.
    lines: u64,
    bytes: usize,
}

/// What a replay is to carry: posts from a line on, and what to say around them.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Numbers asked for that are no longer held (`first..=last`), said before the lines.
    pub gap: Option<(u64, u64)>,
    /// Each post with how many of its first lines to skip, and how many to take after them.
    pub posts: Vec<(Arc<Posted>, usize, usize)>,
    /// The last number replayed, when the budget stopped the replay before the end.
    pub more: Option<u64>,
    /// The room's last number now.
    pub last: u64,
}

impl History {
    pub(crate) fn new(limit: HistoryLimit) -> Self {
        History {
            room: room_id(),
            limit,
            next: 1,
            posts: VecDeque::new(),
            front_skip: 0,
            lines: 0,
            bytes: 0,
        }
    }

    /// Numbers `lines` lines (or a notice, 1) and keeps the post.
    pub(crate) fn post(
        &mut self,
        lines: u64,
        name: Option<&str>,
        event: Option<Event>,
        text: Segment,
    ) -> Arc<Posted> {
        let post = Arc::new(Posted::new(self.next, lines, name, event, text, &self.room));
        self.next += lines;
        if self.limit.lines > 0 {
            self.lines += post.lines;
            self.bytes += post.text.len();
            self.posts.push_back(Arc::clone(&post));
            self.trim();
        }
        post
    }

    /// Drops the oldest lines until the limits hold: whole posts for bytes, and for lines the
    /// first lines of the oldest post when dropping it whole would keep fewer than the limit.
    fn trim(&mut self) {
        while self.bytes > self.limit.bytes || self.lines > self.limit.lines {
            let Some(oldest) = self.posts.front() else { break };
            let held = oldest.lines - self.front_skip;
            let excess = self.lines.saturating_sub(self.limit.lines);
            if self.bytes <= self.limit.bytes && excess < held {
                self.front_skip += excess;
                self.lines -= excess;
                break;
            }
            self.lines -= held;
            self.bytes -= oldest.text.len();
            self.front_skip = 0;
            self.posts.pop_front();
        }
    }

    /// The last number given (0: none yet).
    pub(crate) fn last(&self) -> u64 {
        self.next - 1
    }

    /// The lines after number `since`, up to number `upto`, within `budget` bytes of text (at
    /// least one line goes, so a replay always moves; a post is cut between lines).
    pub(crate) fn since(&self, since: u64, upto: u64, budget: usize) -> Replay {
        let oldest = self.posts.front().map_or(self.next, |p| p.seq + self.front_skip);
        let gap = (since + 1 < oldest && since < upto).then(|| (since + 1, (oldest - 1).min(upto)));
        let mut replay = Replay { gap, posts: Vec::new(), more: None, last: self.last() };
        let mut spent = 0;
        let since = since.max(oldest - 1);
        for post in self.posts.iter().filter(|p| p.last() > since && p.seq <= upto) {
            let skip = since.saturating_sub(post.seq - 1).min(post.lines) as usize;
            let from = line_start(&post.text, skip);
            let mut take = 0;
            for line in post.text[from..].split_inclusive(|&b| b == b'\n') {
                if spent + line.len() > budget && (spent > 0 || take > 0) {
                    break;
                }
                spent += line.len();
                take += 1;
            }
            if take > 0 {
                replay.posts.push((Arc::clone(post), skip, take));
            }
            if skip + take < post.lines as usize {
                replay.more = Some(post.seq + (skip + take) as u64 - 1);
                break;
            }
        }
        replay
    }

    /// Lines and bytes held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (u64, usize) {
        (self.lines, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> Segment {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn numbers_go_on_across_posts_and_the_oldest_go_first() {
        let mut h = History::new(HistoryLimit { lines: 3, bytes: 1 << 20 });
        let a = h.post(2, Some("al"), None, seg("al: a\nal: b\n"));
        let b = h.post(1, None, None, seg("c\n"));
        assert_eq!((a.seq, a.last(), b.seq), (1, 2, 3));
        h.post(1, Some("al"), Some(Event::Left), seg("* al left\n"));
        assert_eq!(h.held(), (3, 24), "the first post's first line went, its bytes stay");
        h.post(1, None, None, seg("d\n"));
        assert_eq!(h.held(), (3, 14), "then the first post went whole");
        assert_eq!(h.last(), 5);
    }

    #[test]
    fn a_replay_skips_what_was_seen_and_names_the_gap() {
        let mut h = History::new(HistoryLimit { lines: 4, bytes: 1 << 20 });
        h.post(3, None, None, seg("a\nb\nc\n"));
        h.post(3, None, None, seg("d\ne\nf\n")); // 1 and 2 dropped: 4 lines at most
        let r = h.since(1, h.last(), 1 << 20);
        assert_eq!(r.gap, Some((2, 2)));
        assert_eq!(r.posts.len(), 2);
        assert_eq!(&*r.posts[0].0.rendering(false, r.posts[0].1, r.posts[0].2), b"c\n");
        h.post(1, None, None, seg("g\n")); // 3 goes: the first post whole
        let r = h.since(1, h.last(), 1 << 20);
        assert_eq!((r.gap, r.posts.len()), (Some((2, 3)), 2));
        assert_eq!(&*r.posts[0].0.rendering(false, r.posts[0].1, r.posts[0].2), b"d\ne\nf\n");
        let r = h.since(4, h.last(), 1 << 20);
        assert_eq!((r.gap, r.posts[0].1), (None, 1));
        assert_eq!(&*r.posts[0].0.rendering(false, 1, 2), b"e\nf\n");
        assert!(h.since(7, h.last(), 1 << 20).posts.is_empty());
    }

    #[test]
    fn the_budget_stops_a_replay_between_posts() {
        let mut h = History::new(HistoryLimit::default());
        for _ in 0..4 {
            h.post(1, None, None, seg("0123456789\n"));
        }
        let r = h.since(0, h.last(), 25);
        assert_eq!((r.posts.len(), r.more, r.last), (2, Some(2), 4));
        // A post longer than the budget is cut between its lines.
        let mut h = History::new(HistoryLimit::default());
        h.post(4, None, None, seg("aaaa\nbbbb\ncccc\ndddd\n"));
        let r = h.since(1, h.last(), 10);
        assert_eq!((r.posts.len(), r.more), (1, Some(3)));
        assert_eq!(&*r.posts[0].0.rendering(false, r.posts[0].1, r.posts[0].2), b"bbbb\ncccc\n");
        let r = h.since(3, h.last(), 1);
        assert_eq!(
            &*r.posts[0].0.rendering(false, r.posts[0].1, r.posts[0].2),
            b"dddd\n",
            "one line at least"
        );
        assert_eq!(r.more, None);
    }

    #[test]
    fn json_names_each_line_by_number() {
        let mut h = History::new(HistoryLimit::default());
        h.post(1, None, None, seg("x\n"));
        let p = h.post(2, Some("al"), None, seg("al: a \"q\"\nal: b\n"));
        let json = String::from_utf8(p.json().to_vec()).unwrap();
        let lines: Vec<serde_json::Value> =
            json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0]["seq"].as_u64(), lines[0]["text"].as_str()),
            (Some(2), Some("a \"q\""))
        );
        assert_eq!((lines[1]["seq"].as_u64(), lines[1]["from"].as_str()), (Some(3), Some("al")));
        assert_eq!(lines[1]["room"], &*h.room);
        assert_eq!(h.room.len(), 16);
        let n = h.post(1, Some("al"), Some(Event::Renamed("bo".into())), seg("* bo is now al\n"));
        let v: serde_json::Value = serde_json::from_slice(&n.json()[..]).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["old"].as_str(), v["seq"].as_u64()),
            (Some("renamed"), Some("bo"), Some(4))
        );
    }

    #[test]
    fn zero_keeps_nothing_but_still_numbers() {
        let mut h = History::new(HistoryLimit { lines: 0, bytes: 0 });
        h.post(2, None, None, seg("a\nb\n"));
        assert_eq!((h.held(), h.last()), ((0, 0), 2));
        assert_eq!(h.since(0, 2, 100).gap, Some((1, 2)));
    }
}
