//! WebSocket (RFC 6455) over a stream transport, as a transport itself: the behaviour above
//! (echo, chat) reads message payloads and writes bytes, and this layer does the opening
//! handshake, unmasks and checks the client's frames, answers pings and closes, and frames what
//! the behaviour writes. The behaviours stay as they are, their caps and backpressure included.
//!
//! - **Reading**: raw bytes are read into the caller's buffer and decoded in place: headers are
//!   dropped, payloads unmasked (sixteen bytes at a time) and moved to the front in one pass.
//!   A text message's UTF-8 is checked as it arrives, failing as soon as the bytes cannot be
//!   valid. A protocol error, or the client's close frame, reads as end of stream; the close
//!   frame we owe goes out when the behaviour shuts down (after everything it still had to
//!   send).
//! - **Writing**, zero-copy: the behaviour's bytes go out from its own buffers, with headers
//!   between them in one vectored write. In [`Mode::Echo`] each reply frame belongs to a message
//!   received (its opcode, and FIN once that message has ended and its last byte goes out), so a
//!   message comes back whole with its opcode. A partial write keeps the current frame's
//!   state (the rest of its header, its payload bytes still owed): the behaviour offers the
//!   untaken bytes again, and they continue the frame. In [`Mode::Lines`] (chat) the behaviour
//!   writes its lines already framed, one text message each ([`proto::frame_lines`], made once
//!   per post for every WebSocket member): they pass through as they are, and a walk over their
//!   headers keeps where each frame ends.
//! - **Control frames** we send (the handshake's answer, pongs, a close) wait in `ctl` for a
//!   frame boundary; `ctl` is written before any further data, and is empty (no allocation) on
//!   an idle connection.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::num::NonZeroU16;

use libc::EAGAIN;

use super::Transport;
use crate::http::{self, MAX_HEAD};
use crate::stats::Stats;
use crate::sys::Errno;
use crate::websocket::{self as proto, close, opcode};

/// How long the client's end of stream is awaited after our close frame (or refusal).
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Pong and other control output a client may leave unread before it is cut off.
const MAX_CTL: usize = 64 * 1024;

/// Frames planned for one vectored write.
const MAX_FRAMES: usize = 16;

/// "No status code" (RFC 6455 §7.4.1): the client's close frame had no body, nor will ours.
const NO_STATUS: u16 = 1005;

/// How a behaviour's bytes become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Each message comes back whole, with the opcode it arrived with.
    Echo,
    /// Lines: each text message in is a line (a `\n` added when it has none); the behaviour
    /// writes its lines as text frames ([`proto::frame_lines`]), each a message without its
    /// `\n`. Binary messages are refused (close 1003).
    Lines,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the request head (kept in [`Aside::head`] until it is whole).
    Opening,
    /// Messages flow.
    Open,
    /// The request got an HTTP answer other than 101: closed once it is written.
    Refused,
    /// The client's close arrived, or the connection failed: nothing more is read.
    Closing,
}

/// What happened since the reactor last counted.
#[derive(Debug, Default, Clone, Copy)]
struct Happened {
    handshake: bool,
    failure: bool,
    protocol_error: bool,
    messages_in: u32,
    messages_out: u32,
    /// Echo: payload bytes answered in place ([`Ws::reply_in_place`]), in and out, never
    /// handed to the behaviour (which counts the bytes it reads and writes itself).
    echoed: u32,
}

impl Happened {
    /// Counts the whole replies [`Ws::reply_in_place`] left to its caller.
    #[inline]
    fn replied(&mut self, replied: &Replied) {
        self.messages_in += replied.frames;
        self.messages_out += replied.frames;
        self.echoed += replied.payload;
    }
}

/// How [`Ws::answer_in_place`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InPlaceRead {
    /// The framing is in no state for it: nothing was read.
    Not,
    /// All of the read was answered and sent, the socket is drained, and the messages are
    /// counted into the stats: the connection was active, and nothing else is to be done.
    Answered,
    /// What [`Transport::recv`] would have returned for this read, but for `Ok(0)`, which
    /// here means "read again" (the end of stream shows then, as it stays).
    Read(Result<usize, Errno>),
}

/// What [`Ws::reply_in_place`] did.
#[derive(Debug)]
struct Replied {
    /// Where the frames it did not take start.
    next: usize,
    /// Payload bytes handed back at the front of the buffer, for the behaviour (see
    /// [`Ws::hand_back`]).
    back: usize,
    /// Messages answered whole and all taken by the socket, not yet counted (with `payload`,
    /// their payload bytes); 0 when it counted them itself.
    frames: u32,
    payload: u32,
}

/// The reading side: where the decoder is in the client's frames.
#[derive(Debug, Default)]
struct Rx {
    /// The current frame's header, as far as it has arrived; whole, it stays while the
    /// payload arrives (its masking key is read from it).
    head: [u8; proto::MAX_HEADER],
    have: u8,
    /// In a frame's payload (else in a header).
    in_payload: bool,
    /// Payload bytes of the current frame still to come (a data frame's are within
    /// `max_message`, at most 1 GiB, a control frame's within 125).
    left: u32,
    /// Offset into the payload, mod 4, for the mask.
    phase: u8,
    op: u8,
    fin: bool,
    /// The data message in progress (its first frame's opcode), or 0.
    msg: u8,
    msg_len: u32,
    /// The message's last byte so far was `\n` (lines: no `\n` to add).
    ends_nl: bool,
    utf8: proto::Utf8Check,
    /// The last read from below filled what was asked (more may wait).
    full: bool,
    /// The poll reported the client's end of stream: read until it shows (a short read is not
    /// the socket drained).
    end_reported: bool,
}

impl Rx {
    /// The current frame's masking key: the last 4 bytes of its header.
    #[inline]
    fn key(&self) -> [u8; 4] {
        let end = header_len(self.head[1]);
        self.head[end - 4..end].try_into().expect("4 bytes")
    }
}

/// What a connection holds only for a while, boxed so that an idle one holds one null pointer
/// (see [`tidy`]): the request head while it arrives, our own output waiting for a frame
/// boundary (the handshake's answer, pongs, a close), a control frame's payload as it arrives,
/// the echo's replies owed beyond the oldest.
#[derive(Debug, Default)]
struct Aside {
    head: Vec<u8>,
    ctl: Vec<u8>,
    /// At most 125 bytes.
    control: Vec<u8>,
    more: VecDeque<OutMsg>,
}

impl Aside {
    fn is_empty(&self) -> bool {
        self.head.is_empty()
            && self.ctl.is_empty()
            && self.control.is_empty()
            && self.more.is_empty()
    }
}

/// The aside, made if there is none yet.
fn aside(slot: &mut Option<Box<Aside>>) -> &mut Aside {
    slot.get_or_insert_with(Box::default)
}

/// A message received, as the echo sends it back.
#[derive(Debug, Clone, Copy)]
struct OutMsg {
    op: u8,
    /// Payload bytes received so far (within `max_message`).
    len: u32,
    /// Payload bytes put in reply frames so far.
    sent: u32,
    /// Its last frame arrived.
    complete: bool,
    /// A reply frame of it went out (the next is a continuation).
    started: bool,
}

impl Tx {
    /// Echo: the oldest message owed a reply.
    fn front(&self) -> Option<&OutMsg> {
        self.first.as_ref()
    }

    fn front_mut(&mut self) -> Option<&mut OutMsg> {
        self.first.as_mut()
    }
}

/// Echo: the messages owed replies, oldest first: [`Tx::first`], then [`Aside::more`]. Free
/// functions of the two fields, so that the decoder can use them while it holds the reader.
fn reply_back<'a>(
    first: &'a mut Option<OutMsg>,
    aside: &'a mut Option<Box<Aside>>,
) -> Option<&'a mut OutMsg> {
    match aside.as_mut().and_then(|a| a.more.back_mut()) {
        Some(last) => Some(last),
        None => first.as_mut(),
    }
}

fn reply_get<'a>(
    first: &'a Option<OutMsg>,
    aside: &'a Option<Box<Aside>>,
    i: usize,
) -> Option<&'a OutMsg> {
    match i {
        0 => first.as_ref(),
        i => aside.as_ref()?.more.get(i - 1),
    }
}

fn reply_push(first: &mut Option<OutMsg>, aside_slot: &mut Option<Box<Aside>>, msg: OutMsg) {
    match first {
        None => *first = Some(msg),
        Some(_) => aside(aside_slot).more.push_back(msg),
    }
}

#[inline]
fn reply_pop(first: &mut Option<OutMsg>, aside: &mut Option<Box<Aside>>) {
    *first = None;
    if aside.is_some() {
        reply_pop_more(first, aside);
    }
}

/// [`reply_pop`] with replies owed beyond the first (not the common case: kept out of line).
#[cold]
fn reply_pop_more(first: &mut Option<OutMsg>, aside: &mut Option<Box<Aside>>) {
    if let Some(a) = aside {
        *first = a.more.pop_front();
        if a.more.is_empty() {
            a.more = VecDeque::new(); // back to holding nothing
        }
        tidy(aside);
    }
}

/// Lets the aside go once it holds nothing.
fn tidy(aside: &mut Option<Box<Aside>>) {
    if aside.as_ref().is_some_and(|a| a.is_empty()) {
        *aside = None;
    }
}

/// The writing side: where our frames are.
#[derive(Debug, Default)]
struct Tx {
    /// Echo: the oldest message whose reply is not all sent, inline (the common case, one at a
    /// time, costs no allocation and an idle connection holds none); those after it are in
    /// [`Aside::more`].
    first: Option<OutMsg>,
    /// Lines: the behaviour writes whole frames of its own, passed through as they are (see
    /// [`Ws::pass_frames`]); `left`, `hdr`, `hdr_at` and `hdr_len` then follow them.
    passes: bool,
    /// Payload bytes of the current frame still owed (its header went out, or is in `hdr`).
    left: u32,
    /// What is left of a header only partly written (lines: the header seen so far, `hdr_len`
    /// its length once known).
    hdr: [u8; 10],
    hdr_at: u8,
    hdr_len: u8,
    /// The behaviour's last write was not all taken: it still owes bytes (echo replies), which
    /// go out before our close frame.
    owes: bool,
    /// Our FIN went, after the last word.
    fin_sent: bool,
}

impl Tx {
    /// Between frames: control frames may go out.
    fn at_boundary(&self) -> bool {
        self.left == 0 && self.hdr_at == self.hdr_len
    }

    /// The rest of a header-only frame is unsent: no payload byte of the behaviour's follows it
    /// (echo: ours to finish; lines: the behaviour's bytes, which it offers again).
    fn owns_header_rest(&self) -> bool {
        self.left == 0 && self.hdr_at < self.hdr_len && !self.passes
    }

    /// Lines: follows `bytes` of the behaviour's frames as they went out; returns how many
    /// frames began (each a message: one frame per line).
    fn walk(&mut self, mut bytes: &[u8]) -> u32 {
        let mut begun = 0;
        while let Some((&b, rest)) = bytes.split_first() {
            if self.left > 0 {
                let k = bytes.len().min(self.left as usize);
                self.left -= k as u32;
                bytes = &bytes[k..];
                continue;
            }
            if let ([_, b1, ..], 0) = (bytes, self.hdr_at) {
                if b1 & 0x7f < 126 {
                    // The common header, whole here: two bytes.
                    self.left = u32::from(b1 & 0x7f);
                    bytes = &bytes[2..];
                    begun += 1;
                    continue;
                }
            }
            self.hdr[self.hdr_at as usize] = b;
            self.hdr_at += 1;
            bytes = rest;
            self.hdr_len = if self.hdr_at < 2 { 2 } else { header_len(self.hdr[1]) as u8 };
            if self.hdr_at == self.hdr_len {
                // A line is within the member's cap, far below 4 GiB.
                self.left = u32::try_from(proto::payload_len(&self.hdr)).unwrap_or(u32::MAX);
                (self.hdr_at, self.hdr_len) = (0, 0);
                begun += 1;
            }
        }
        begun
    }
}

/// One frame planned for a write.
#[derive(Clone, Copy)]
struct Planned {
    hdr: [u8; proto::MAX_HEADER],
    hdr_len: u8,
    /// Index of its part, and the payload's range in it.
    part: usize,
    at: usize,
    len: usize,
    fin: bool,
    /// Continues the current frame (no header of its own but `hdr`'s rest).
    cont: bool,
}

/// A WebSocket connection over transport `T`.
#[derive(Debug)]
pub(crate) struct Ws<T> {
    inner: T,
    mode: Mode,
    phase: Phase,
    /// At most 1 GiB (`--max-message`).
    max_message: u32,
    rx: Rx,
    tx: Tx,
    /// The request head, our own output, a control frame's payload: `None` when there are none.
    aside: Option<Box<Aside>>,
    /// The close code we will send (the client's, echoed; or why we end it).
    close_code: Option<NonZeroU16>,
    /// Our last word is queued (the close frame, or the HTTP answer refusing the handshake):
    /// nothing more goes out, and what the client still sends is read and dropped until its
    /// end of stream (or the linger deadline), so that our close is not lost to a reset.
    close_sent: bool,
    /// The client's close frame arrived: it ended the session, so a reset that follows is the
    /// client not waiting for our close, not an abrupt end.
    their_close: bool,
    /// The transport below was told the upgrade is done (a fault plan counts from there).
    told: bool,
    /// Bytes written under the framing since the upgrade's answer.
    wrote: u64,
    /// The linger began (the reactor arms its deadline once).
    linger_began: bool,
    happened: Happened,
}

impl<T: Transport> Ws<T> {
    pub(crate) fn new(inner: T, mode: Mode, max_message: u32) -> Self {
        Ws {
            inner,
            mode,
            phase: Phase::Opening,
            max_message,
            rx: Rx::default(),
            tx: Tx { passes: mode == Mode::Lines, ..Tx::default() },
            aside: None,
            close_code: None,
            close_sent: false,
            their_close: false,
            told: false,
            wrote: 0,
            linger_began: false,
            happened: Happened::default(),
        }
    }

    pub(crate) fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The same connection over another transport made from this one's (a fault plan set or
    /// removed at run time), given the bytes written under the framing since the upgrade.
    pub(crate) fn map_inner<U>(self, f: impl FnOnce(T, u64) -> U) -> Ws<U> {
        Ws {
            inner: f(self.inner, self.wrote),
            mode: self.mode,
            phase: self.phase,
            max_message: self.max_message,
            rx: self.rx,
            tx: self.tx,
            aside: self.aside,
            close_code: self.close_code,
            close_sent: self.close_sent,
            their_close: self.their_close,
            linger_began: self.linger_began,
            told: self.told,
            wrote: self.wrote,
            happened: self.happened,
        }
    }

    /// Closing or refused: queues our last word (the close frame, at a frame boundary), writes
    /// it, and sends FIN once it is out.
    fn last_word_out(&mut self) -> Result<(), Errno> {
        if !self.close_sent {
            match self.phase {
                // After every reply to what arrived before the client's close.
                Phase::Closing if self.tx.at_boundary() && !self.tx.owes => {
                    self.queue_close();
                    self.close_sent = true;
                }
                Phase::Refused => self.close_sent = true,
                _ => {}
            }
        }
        if self.flush_ctl()? && self.close_sent && !self.tx.fin_sent {
            self.tx.fin_sent = true;
            self.inner.shutdown_write();
        }
        Ok(())
    }

    /// Queues the close frame with our code (none: an empty body).
    fn queue_close(&mut self) {
        let payload = match self.close_code.map(NonZeroU16::get) {
            None | Some(NO_STATUS) => Vec::new(),
            Some(code) => code.to_be_bytes().to_vec(),
        };
        self.queue_frame(opcode::CLOSE, &payload);
    }

    /// Reads and drops what the client sends after our last word, until its end of stream.
    fn linger(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.last_word_out()?;
        loop {
            match self.inner.recv(buf) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `ctl` (at a frame boundary) until it is gone (true) or the socket refuses.
    #[inline]
    fn flush_ctl(&mut self) -> Result<bool, Errno> {
        if self.aside.is_none() && self.told && !self.tx.owns_header_rest() {
            return Ok(true); // the common case: nothing of our own to write
        }
        self.flush_ctl_slow()
    }

    fn flush_ctl_slow(&mut self) -> Result<bool, Errno> {
        while self.tx.owns_header_rest() {
            // The rest of a header-only frame (an empty message) cut short: no behaviour byte
            // will carry it out, so it is ours to finish.
            let rest = &self.tx.hdr[self.tx.hdr_at as usize..self.tx.hdr_len as usize];
            match self.inner.send(rest) {
                Ok(n) => {
                    self.wrote += n as u64;
                    self.tx.hdr_at += n as u8;
                    if self.tx.hdr_at < self.tx.hdr_len {
                        return Ok(false);
                    }
                    self.tx.hdr_at = 0;
                    self.tx.hdr_len = 0;
                }
                Err(EAGAIN) => return Ok(false),
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        while let Some(a) = self.aside.as_mut().filter(|a| !a.ctl.is_empty()) {
            if !self.tx.at_boundary() {
                return Ok(false);
            }
            match self.inner.send(&a.ctl) {
                Ok(n) => {
                    if self.told {
                        self.wrote += n as u64;
                    }
                    a.ctl.drain(..n);
                    if !a.ctl.is_empty() {
                        return Ok(false);
                    }
                }
                Err(EAGAIN) => return Ok(false),
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(a) = &mut self.aside {
            a.ctl = Vec::new(); // an idle connection holds no buffer
        }
        tidy(&mut self.aside);
        if !self.told && !self.is_opening() {
            // The upgrade's answer is out: a fault plan below starts here.
            self.told = true;
            self.inner.upgraded();
        }
        Ok(true)
    }

    /// Queues a control frame (or the handshake's answer) for the next frame boundary.
    fn queue_frame(&mut self, op: u8, payload: &[u8]) {
        proto::frame(&mut aside(&mut self.aside).ctl, true, op, payload, None);
    }

    /// Whether none of our own output waits.
    fn ctl_is_empty(&self) -> bool {
        self.aside.as_ref().is_none_or(|a| a.ctl.is_empty())
    }

    /// Takes the control frame's payload that arrived.
    fn take_control(&mut self) -> Vec<u8> {
        let payload = self.aside.as_mut().map(|a| std::mem::take(&mut a.control));
        tidy(&mut self.aside);
        payload.unwrap_or_default()
    }

    /// What this listener serves, for the HTTP answer to a plain GET.
    fn what(&self) -> &'static str {
        match self.mode {
            Mode::Echo => "a WebSocket echo: every message comes back",
            Mode::Lines => "a WebSocket chat room: each text message is a line to the room",
        }
    }

    /// Fails the connection with `code`: nothing more is read, and the close says why.
    fn fail(&mut self, code: u16) {
        self.happened.protocol_error = true;
        self.close_code = NonZeroU16::new(code);
        self.phase = Phase::Closing;
    }

    /// Reads the request head; answers it once it is whole. Returns where the bytes after the
    /// head (frames the client sent at once) start in `data`, once the handshake is answered.
    fn open(&mut self, data: &[u8]) -> Option<usize> {
        if self.phase != Phase::Opening {
            return Some(0);
        }
        let head = &mut aside(&mut self.aside).head;
        let before = head.len();
        let take = data.len().min(MAX_HEAD + 1 - before);
        head.extend_from_slice(&data[..take]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let (answer, rest) = match req.parse(head) {
            Ok(httparse::Status::Partial) if head.len() > MAX_HEAD => {
                (Answer::TooLarge, data.len())
            }
            Ok(httparse::Status::Partial) => return None,
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => (Answer::TooLarge, data.len()),
            // The frames the client sent at once start where its head ended.
            Ok(httparse::Status::Complete(len)) => (judge(&req), len - before),
            Err(httparse::Error::TooManyHeaders) => (Answer::TooLarge, data.len()),
            Err(_) => (Answer::Malformed, data.len()),
        };
        aside(&mut self.aside).head = Vec::new();
        self.answer(answer);
        Some(rest)
    }

    fn answer(&mut self, answer: Answer) {
        let (status, extra, body) = match answer {
            Answer::Upgrade(key) => {
                aside(&mut self.aside).ctl = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    proto::accept_key(key.as_bytes())
                )
                .into_bytes();
                self.phase = Phase::Open;
                self.happened.handshake = true;
                return;
            }
            Answer::Root => {
                ("200 OK", "", format!("ricochet: {}. Connect with ws://.\n", self.what()))
            }
            Answer::NoUpgrade => (
                "426 Upgrade Required",
                "Upgrade: websocket\r\n",
                format!("ricochet: {}; this needs a WebSocket client (ws://).\n", self.what()),
            ),
            Answer::BadVersion => (
                "426 Upgrade Required",
                "Sec-WebSocket-Version: 13\r\n",
                "ricochet: only WebSocket version 13 (RFC 6455) is spoken.\n".to_owned(),
            ),
            Answer::Malformed => (
                "400 Bad Request",
                "",
                "ricochet: not a WebSocket opening handshake (RFC 6455 section 4).\n".to_owned(),
            ),
            Answer::TooLarge => (
                "431 Request Header Fields Too Large",
                "",
                format!("ricochet: the request head is over {} KiB.\n", MAX_HEAD / 1024),
            ),
        };
        if !matches!(answer, Answer::Root) {
            self.happened.failure = true;
        }
        aside(&mut self.aside).ctl = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        self.phase = Phase::Refused;
    }

    /// Decodes the client's frames in `buf[from..to]`: data payloads are moved to `buf[w..]`,
    /// unmasked (`w` <= `from`); returns where they end. Stops at a close or an error.
    fn decode(&mut self, buf: &mut [u8], from: usize, to: usize, mut w: usize) -> usize {
        let mut r = from;
        while r < to && self.phase == Phase::Open {
            if !self.rx.in_payload {
                if self.rx.have == 0 {
                    if let Some(next) = self.whole_message(buf, r, to, &mut w) {
                        r = next;
                        continue;
                    }
                }
                let rx = &mut self.rx;
                // A whole header at hand: taken in one step.
                let need = match rx.have {
                    0 if to - r >= 2 => header_len(buf[r + 1]),
                    0 | 1 => 2,
                    _ => header_len(rx.head[1]),
                };
                let take = (need - rx.have as usize).min(to - r);
                rx.head[rx.have as usize..rx.have as usize + take]
                    .copy_from_slice(&buf[r..r + take]);
                rx.have += take as u8;
                r += take;
                if rx.have < 2 || (rx.have as usize) < header_len(rx.head[1]) {
                    continue; // more of the header to come
                }
                if let Err(code) = self.start_frame() {
                    self.fail(code);
                    break;
                }
                if self.rx.left == 0 {
                    self.end_frame(buf, &mut w);
                }
                continue;
            }
            let take = (self.rx.left as usize).min(to - r);
            let rx = &mut self.rx;
            if rx.op >= 8 {
                proto::mask(&mut buf[r..r + take], rx.key(), rx.phase as usize);
                aside(&mut self.aside).control.extend_from_slice(&buf[r..r + take]);
            } else {
                // Unmasked and moved to the front in one pass.
                proto::unmask_within(buf, r, take, w, rx.key(), rx.phase as usize);
                if rx.msg == opcode::TEXT && !rx.utf8.feed(&buf[w..w + take]) {
                    self.fail(close::INVALID_DATA);
                    break;
                }
                if take > 0 {
                    rx.ends_nl = buf[w + take - 1] == b'\n';
                    w += take;
                    if let Some(last) = reply_back(&mut self.tx.first, &mut self.aside) {
                        last.len += take as u32;
                    }
                }
            }
            r += take;
            let rx = &mut self.rx;
            rx.left -= take as u32;
            rx.phase = (rx.phase + (take & 3) as u8) & 3;
            if rx.left == 0 {
                self.end_frame(buf, &mut w);
            }
        }
        w
    }

    /// An echo's whole message in one frame at `buf[r..to]`, the common case: FIN, no reserved
    /// bits, text or binary, masked, 1 to 125 bytes, within `max_message`, no fragmented
    /// message in progress. Its opcode and payload length; `None` for anything else, which the
    /// general path takes a header and a payload at a time.
    #[inline]
    fn small_frame(&self, buf: &[u8], r: usize, to: usize) -> Option<(u8, usize)> {
        let frame = buf.get(r..to)?;
        if frame.len() < 7 {
            return None;
        }
        let (b0, b1) = (frame[0], frame[1]);
        // FIN, no reserved bits, text (0x81) or binary (0x82); masked, 1 to 125 bytes (0x81 to
        // 0xfd) and within `max_message`: two comparisons.
        let largest = self.max_message.min(125) as u8;
        if b0.wrapping_sub(0x81) > 1 || b1.wrapping_sub(0x81) >= largest {
            return None;
        }
        let len = (b1 & 0x7f) as usize;
        if frame.len() < 6 + len {
            return None;
        }
        Some((b0 & 0x0f, len))
    }

    /// [`Ws::small_frame`] at `buf[r..]`, taken in one step: its payload is unmasked and moved
    /// to `buf[*w..]`, its reply queued; returns where the next frame starts. `None` (nothing
    /// done) when it is not one. The same checks and outcomes as the general path: it is only
    /// shorter.
    #[inline]
    fn whole_message(
        &mut self,
        buf: &mut [u8],
        r: usize,
        to: usize,
        w: &mut usize,
    ) -> Option<usize> {
        if self.mode != Mode::Echo || self.rx.msg != 0 {
            return None;
        }
        let (op, len) = self.small_frame(buf, r, to)?;
        let key: [u8; 4] = buf[r + 2..r + 6].try_into().expect("4 bytes");
        // Unmasked and moved to the front in one pass, as the replies made in place are.
        proto::unmask_within(buf, r + 6, len, *w, key, 0);
        if op == opcode::TEXT && std::str::from_utf8(&buf[*w..*w + len]).is_err() {
            self.fail(close::INVALID_DATA);
            return Some(to);
        }
        *w += len;
        let msg = OutMsg { op, len: len as u32, sent: 0, complete: true, started: false };
        reply_push(&mut self.tx.first, &mut self.aside, msg);
        self.happened.messages_in += 1;
        self.end_replies();
        Some(r + 6 + len)
    }

    /// Whether the echo's replies may be made here, in the read buffer: messages flow, the
    /// read drained the socket, the decoder is between messages, and nothing is owed before
    /// them (no reply, no frame half sent, none of our own output).
    #[inline]
    fn may_reply_in_place(&self) -> bool {
        !self.rx.full && self.may_reply_in_place_before_read()
    }

    /// [`Ws::may_reply_in_place`] but for the read, not made yet.
    #[inline]
    fn may_reply_in_place_before_read(&self) -> bool {
        self.mode == Mode::Echo
            && self.aside.is_none()
            && self.tx.first.is_none()
            && self.phase == Phase::Open
            && self.told
            && !self.close_sent
            && self.rx.have == 0
            && !self.rx.in_payload
            && self.rx.msg == 0
            && self.tx.at_boundary()
    }

    /// The echo's common case answered without the behaviour: the run of
    /// [`Ws::small_frame`]s at `buf[r..to]` becomes its replies where it lies (each header
    /// shrinks from 6 bytes to 2, each payload is unmasked and moves to the front), and the
    /// replies go out in one write. When the socket took them all, they are left for the
    /// caller to count ([`Replied::frames`], [`Replied::payload`]: the reactor counts them
    /// straight into its stats); anything else (a partial write, invalid UTF-8) is counted
    /// here, into `happened`.
    #[inline(always)]
    fn reply_in_place(
        &mut self,
        buf: &mut [u8],
        mut r: usize,
        to: usize,
    ) -> Result<Replied, Errno> {
        let (mut out, mut frames, mut payload) = (0, 0u32, 0);
        let mut invalid = false;
        while let Some((op, len)) = self.small_frame(buf, r, to) {
            let key: [u8; 4] = buf[r + 2..r + 6].try_into().expect("4 bytes");
            // Unmasked and moved up in one pass (the frame's own bytes are all read).
            proto::unmask_within(buf, r + 6, len, out + 2, key, 0);
            if op == opcode::TEXT && std::str::from_utf8(&buf[out + 2..out + 2 + len]).is_err() {
                invalid = true; // fails the connection once the replies before it are out
                break;
            }
            buf[out..out + 2].copy_from_slice(&[0x80 | op, len as u8]);
            out += 2 + len;
            payload += len as u32;
            frames += 1;
            r += 6 + len;
        }
        if frames == 0 && !invalid {
            return Ok(Replied { next: r, back: 0, frames, payload });
        }
        let mut written = 0;
        if frames > 0 {
            written = loop {
                match self.inner.send(&buf[..out]) {
                    Ok(n) => break n,
                    Err(EAGAIN) => break 0,
                    Err(libc::EINTR) => {}
                    Err(e) => return Err(e),
                }
            };
            self.wrote += written as u64;
            if written == out && !invalid {
                return Ok(Replied { next: r, back: 0, frames, payload });
            }
        }
        Ok(self.replied_short(buf, r, to, out, written, frames, invalid))
    }

    /// [`Ws::reply_in_place`] when the socket took part of the replies, or invalid UTF-8 ended
    /// the run (nothing after it is read, as in the general path): counted here.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn replied_short(
        &mut self,
        buf: &mut [u8],
        r: usize,
        to: usize,
        out: usize,
        written: usize,
        frames: u32,
        invalid: bool,
    ) -> Replied {
        self.happened.messages_in += frames;
        let back = if written == out {
            self.happened.messages_out += frames;
            0
        } else {
            self.hand_back(buf, out, written)
        };
        // What went out, whole or in part, is all the payload but what goes back.
        self.happened.echoed += (out - 2 * frames as usize - back) as u32;
        if invalid {
            self.fail(close::INVALID_DATA);
        }
        Replied { next: if invalid { to } else { r }, back, frames: 0, payload: 0 }
    }

    /// The socket took `written` of the `out` bytes of reply frames at the front of `buf`: what
    /// it did not take goes the general way, as if decoded. A frame begun stays the current
    /// frame (the rest of its header, its payload owed), the frames after it are queued
    /// replies, and every payload byte unsent moves to the front of `buf` for the behaviour,
    /// which offers it again. Returns how many there are.
    #[cold]
    fn hand_back(&mut self, buf: &mut [u8], out: usize, written: usize) -> usize {
        let (mut at, mut w) = (0, 0);
        while at < out {
            let (b0, len) = (buf[at], (buf[at + 1] & 0x7f) as usize);
            let end = at + 2 + len;
            let sent = written.saturating_sub(at).min(2 + len);
            if sent > 0 {
                // Begun: the message's reply is under way (counted out, as `begin` does).
                self.happened.messages_out += 1;
                let p = sent.saturating_sub(2);
                if sent < 2 + len {
                    self.tx.hdr[..2].copy_from_slice(&buf[at..at + 2]);
                    self.tx.hdr_at = sent.min(2) as u8;
                    self.tx.hdr_len = 2;
                    self.tx.left = (len - p) as u32;
                    buf.copy_within(at + 2 + p..end, w);
                    w += len - p;
                }
            } else {
                let op = b0 & 0x0f;
                let msg = OutMsg { op, len: len as u32, sent: 0, complete: true, started: false };
                reply_push(&mut self.tx.first, &mut self.aside, msg);
                buf.copy_within(at + 2..end, w);
                w += len;
            }
            at = end;
        }
        w
    }

    /// What a read of `n` bytes into `buf[from..]` comes to: the request head answered, then the
    /// frames decoded (the echo's small ones answered in place). `Some(m)`: `m` payload bytes
    /// at the front of `buf` for the behaviour; `None`: nothing for it, read again (more may
    /// wait, or our last word and the client's end of stream are due); `EAGAIN`: the socket
    /// is drained.
    fn took(&mut self, buf: &mut [u8], from: usize, n: usize) -> Result<Option<usize>, Errno> {
        self.rx.full = self.more_may_wait(n, buf.len() - from);
        let mut start = from;
        if self.is_opening() {
            match self.open(&buf[from..from + n]) {
                None if self.rx.full => return Ok(None),
                None => return Err(EAGAIN),
                Some(rest) => start = from + rest,
            }
        }
        let mut w = 0;
        if self.may_reply_in_place() {
            let replied = self.reply_in_place(buf, start, from + n)?;
            self.happened.replied(&replied);
            (start, w) = (replied.next, replied.back);
        }
        self.took_frames(buf, start, from + n, w)
    }

    /// Whether a read of `n` bytes, `asked` for, may have left more behind: it filled what was
    /// asked, the transport below holds more, or the peer's end was reported (read until it
    /// shows).
    #[inline]
    fn more_may_wait(&self, n: usize, asked: usize) -> bool {
        n == asked || !self.inner.short_read_drains() || self.rx.end_reported
    }

    /// [`Ws::took`] from the frames at `buf[start..end]` on, `w` payload bytes for the behaviour
    /// already at the front of `buf`.
    fn took_frames(
        &mut self,
        buf: &mut [u8],
        start: usize,
        end: usize,
        w: usize,
    ) -> Result<Option<usize>, Errno> {
        let m = self.decode(buf, start, end, w);
        if !self.ctl_is_empty() && self.tx.at_boundary() {
            self.flush_ctl()?;
        }
        if m > 0 {
            return Ok(Some(m));
        }
        if matches!(self.phase, Phase::Refused | Phase::Closing) || self.rx.full {
            return Ok(None); // our last word, then the client's end of stream; or more to read
        }
        Err(EAGAIN)
    }

    /// The echo's readable event when the framing can serve it whole (see
    /// [`Ws::may_reply_in_place`]): one read into `buf`, answered in place where it can be.
    #[inline]
    pub(crate) fn answer_in_place(&mut self, buf: &mut [u8], stats: &mut Stats) -> InPlaceRead {
        if !self.may_reply_in_place_before_read() {
            return InPlaceRead::Not;
        }
        let n = match self.inner.recv(buf) {
            Ok(0) => return InPlaceRead::Read(Ok(0)),
            Ok(n) => n,
            Err(e) => return InPlaceRead::Read(Err(e)),
        };
        self.rx.full = self.more_may_wait(n, buf.len());
        let (mut start, mut w) = (0, 0);
        if !self.rx.full {
            let replied = match self.reply_in_place(buf, 0, n) {
                Ok(replied) => replied,
                Err(e) => return InPlaceRead::Read(Err(e)),
            };
            if replied.next == n && replied.frames > 0 {
                // All answered and all taken (a short write or invalid UTF-8 counts itself
                // and leaves `frames` 0), the socket drained.
                stats.ws_messages_in += u64::from(replied.frames);
                stats.ws_messages_out += u64::from(replied.frames);
                stats.bytes_in += u64::from(replied.payload);
                stats.bytes_out += u64::from(replied.payload);
                return InPlaceRead::Answered;
            }
            self.happened.replied(&replied);
            (start, w) = (replied.next, replied.back);
        }
        InPlaceRead::Read(self.took_frames(buf, start, n, w).map(|m| m.unwrap_or(0)))
    }

    /// A whole header arrived: check it and start its frame.
    fn start_frame(&mut self) -> Result<(), u16> {
        let rx = &mut self.rx;
        rx.have = 0;
        let (b0, b1) = (rx.head[0], rx.head[1]);
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0f;
        let len = proto::payload_len(&rx.head);
        if b0 & 0x70 != 0 || b1 & 0x80 == 0 || len >> 63 != 0 {
            return Err(close::PROTOCOL); // reserved bits (no extension agreed), unmasked, 2^63
        }
        match op {
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !fin || len > proto::MAX_CONTROL as u64 {
                    return Err(close::PROTOCOL);
                }
            }
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {
                if (op == opcode::CONTINUATION) != (rx.msg != 0) {
                    return Err(close::PROTOCOL); // a continuation of nothing, or a new message
                }
                if op == opcode::BINARY && self.mode == Mode::Lines {
                    return Err(close::UNSUPPORTED);
                }
                if op != opcode::CONTINUATION {
                    rx.msg = op;
                    rx.msg_len = 0;
                    rx.ends_nl = false;
                    rx.utf8 = proto::Utf8Check::default();
                    if self.mode == Mode::Echo {
                        let msg = OutMsg { op, len: 0, sent: 0, complete: false, started: false };
                        reply_push(&mut self.tx.first, &mut self.aside, msg);
                    }
                }
                if len > u64::from(self.max_message - rx.msg_len) {
                    return Err(close::TOO_BIG);
                }
                rx.msg_len += len as u32;
            }
            _ => return Err(close::PROTOCOL), // a reserved opcode
        }
        rx.phase = 0;
        rx.left = len as u32; // within max_message, or 125 for a control frame
        rx.op = op;
        rx.fin = fin;
        rx.in_payload = true;
        Ok(())
    }

    /// The current frame's payload is all in.
    fn end_frame(&mut self, buf: &mut [u8], w: &mut usize) {
        let rx = &mut self.rx;
        rx.in_payload = false;
        match rx.op {
            opcode::PING => {
                let payload = self.take_control();
                self.queue_frame(opcode::PONG, &payload);
                if self.aside.as_ref().is_some_and(|a| a.ctl.len() > MAX_CTL) {
                    self.fail(close::POLICY); // pings sent, their pongs never read
                }
            }
            opcode::PONG => drop(self.take_control()),
            opcode::CLOSE => {
                let payload = self.take_control();
                match payload.len() {
                    0 => self.close_code = NonZeroU16::new(NO_STATUS),
                    1 => return self.fail(close::PROTOCOL),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !proto::is_valid_close_code(code) {
                            return self.fail(close::PROTOCOL);
                        }
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return self.fail(close::INVALID_DATA);
                        }
                        self.close_code = NonZeroU16::new(code);
                    }
                }
                self.their_close = true;
                self.phase = Phase::Closing;
            }
            _ if rx.fin => {
                if rx.msg == opcode::TEXT && !rx.utf8.is_complete() {
                    return self.fail(close::INVALID_DATA);
                }
                rx.msg = 0;
                self.happened.messages_in += 1;
                match self.mode {
                    Mode::Echo => {
                        if let Some(last) = reply_back(&mut self.tx.first, &mut self.aside) {
                            last.complete = true;
                        }
                        self.end_replies();
                    }
                    Mode::Lines if !rx.ends_nl || rx.msg_len == 0 => {
                        // Room is sure: raw input starts a byte in, and every message end in
                        // one read but the first had a header (2 bytes and more) before it.
                        buf[*w] = b'\n';
                        *w += 1;
                    }
                    Mode::Lines => {}
                }
            }
            _ => {}
        }
    }

    /// Echo: replies whose every byte went out but whose FIN did not (the message ended after
    /// its last byte was sent, or was empty) get their final, empty frame now.
    fn end_replies(&mut self) {
        while let Some(head) = self.tx.front() {
            // Its bytes all out (the cheap test first), and no frame half sent.
            if !(head.complete && head.sent == head.len && self.tx.at_boundary()) {
                break;
            }
            let op = if head.started { opcode::CONTINUATION } else { head.op };
            reply_pop(&mut self.tx.first, &mut self.aside);
            self.queue_frame(op, &[]);
            self.happened.messages_out += 1;
        }
    }

    /// Frames and writes the behaviour's bytes.
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let result = self.write_data(parts, total);
        if self.tx.front().is_some_and(|m| m.complete && m.sent == m.len) && self.tx.at_boundary() {
            // A message that ended while its last frame was going out: its FIN, now.
            self.end_replies();
            self.flush_ctl()?;
        }
        self.tx.owes = !matches!(result, Ok(n) if n == total);
        if self.phase == Phase::Closing && !self.close_sent && !self.tx.owes {
            self.last_word_out()?; // the replies are all out: now our close
        }
        result
    }

    /// Frames and writes `parts` (`total` bytes in all).
    fn write_data(&mut self, parts: &[&[u8]], total: usize) -> Result<usize, Errno> {
        match self.phase {
            Phase::Opening => return Err(EAGAIN),
            // Nothing goes out after our last word (RFC 6455 §5.5.1): the rest is dropped.
            Phase::Refused => return Ok(total),
            _ if self.close_sent => return Ok(total),
            _ => {}
        }
        if self.tx.passes {
            return self.pass_frames(parts, total);
        }
        if let [one] = parts {
            if let Some(taken) = self.write_whole_reply(one)? {
                return Ok(taken);
            }
        }
        let mut taken = 0;
        let (mut part, mut at) = (0, 0);
        let mut plan = [None; MAX_FRAMES];
        loop {
            if self.tx.at_boundary() && !self.flush_ctl()? {
                break; // the socket refused our own frames: a writable edge will follow
            }
            while part < parts.len() && at == parts[part].len() {
                part += 1;
                at = 0;
            }
            let planned = self.plan(parts, part, at, &mut plan);
            if planned == 0 {
                break;
            }
            let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES];
            let mut count = 0;
            for frame in plan.iter().take(planned).flatten() {
                let hdr = if frame.cont {
                    &self.tx.hdr[self.tx.hdr_at as usize..self.tx.hdr_len as usize]
                } else {
                    &frame.hdr[..frame.hdr_len as usize]
                };
                if !hdr.is_empty() {
                    slices[count] = IoSlice::new(hdr);
                    count += 1;
                }
                if frame.len > 0 {
                    slices[count] =
                        IoSlice::new(&parts[frame.part][frame.at..frame.at + frame.len]);
                    count += 1;
                }
            }
            let planned_bytes: usize = slices[..count].iter().map(|s| s.len()).sum();
            let written = if count == 0 {
                0
            } else {
                match self.inner.send_vectored(&slices[..count]) {
                    Ok(n) => n,
                    Err(EAGAIN) if taken > 0 => break,
                    Err(e) => return Err(e),
                }
            };
            self.wrote += written as u64;
            let took = self.commit(&plan[..planned], written);
            taken += took;
            (part, at) = advance(parts, part, at, took);
            if written < planned_bytes {
                break; // the socket refused the rest: a writable edge will follow
            }
        }
        if taken == 0 && total > 0 {
            return Err(EAGAIN);
        }
        Ok(taken)
    }

    /// Lines: `parts` are whole text frames the behaviour made (one per line, see
    /// [`proto::frame_lines`]): they go out as they are, in one write, and the walk over what
    /// went out keeps where the current frame ends, so that our own control frames go only
    /// between frames. With ours waiting in the middle of a frame, only the rest of that frame
    /// goes first.
    fn pass_frames(&mut self, parts: &[&[u8]], total: usize) -> Result<usize, Errno> {
        let mut taken = 0;
        while taken < total {
            if self.tx.at_boundary() && !self.flush_ctl()? {
                break; // the socket refused our own frames: a writable edge will follow
            }
            // With ours still waiting (in the middle of a frame), up to that frame's end.
            let limit =
                if self.ctl_is_empty() { total - taken } else { self.frame_end(parts, taken) };
            let mut slices = Vec::with_capacity(parts.len());
            let (mut skip, mut room) = (taken, limit);
            for part in parts {
                if room == 0 {
                    break;
                }
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let take = (part.len() - skip).min(room);
                slices.push(IoSlice::new(&part[skip..skip + take]));
                (skip, room) = (0, room - take);
            }
            let planned: usize = slices.iter().map(|s| s.len()).sum();
            let written = match self.inner.send_vectored(&slices) {
                Ok(n) => n,
                Err(EAGAIN) if taken > 0 => break,
                Err(e) => return Err(e),
            };
            self.wrote += written as u64;
            self.walk_out(&slices, written);
            taken += written;
            if written < planned {
                break; // the socket refused the rest: a writable edge will follow
            }
        }
        if self.tx.at_boundary() && !self.ctl_is_empty() {
            self.flush_ctl()?; // ours, once the frame it waited for ended
        }
        if taken == 0 && total > 0 {
            return Err(EAGAIN);
        }
        Ok(taken)
    }

    /// Lines: the walk over the first `written` bytes of `slices`, as they went out.
    fn walk_out(&mut self, slices: &[IoSlice<'_>], written: usize) {
        let mut left = written;
        for slice in slices {
            if left == 0 {
                break;
            }
            let k = slice.len().min(left);
            self.happened.messages_out += self.tx.walk(&slice[..k]);
            left -= k;
        }
    }

    /// Lines, the common write: messages flow and none of our own output waits, so the
    /// behaviour's frames go out from its own slices, as they are (see [`Ws::pass_frames`] for
    /// the rest). `None` when this is not the case.
    #[inline]
    fn pass_slices(&mut self, bufs: &[IoSlice<'_>]) -> Option<Result<usize, Errno>> {
        if !self.tx.passes || self.phase != Phase::Open || self.close_sent || !self.ctl_is_empty() {
            return None;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let written = match self.inner.send_vectored(bufs) {
            Ok(n) => n,
            Err(e) => {
                self.tx.owes = total > 0;
                return Some(Err(e));
            }
        };
        self.wrote += written as u64;
        self.walk_out(bufs, written);
        self.tx.owes = written != total;
        Some(Ok(written))
    }

    /// Lines: how many of the bytes from `parts`' byte `from` on finish the frame under way.
    fn frame_end(&self, parts: &[&[u8]], from: usize) -> usize {
        let mut probe = Tx { passes: true, ..Tx::default() };
        (probe.left, probe.hdr, probe.hdr_at, probe.hdr_len) =
            (self.tx.left, self.tx.hdr, self.tx.hdr_at, self.tx.hdr_len);
        let (mut n, mut skip) = (0, from);
        for part in parts {
            for &b in part.iter().skip(skip) {
                probe.walk(&[b]);
                n += 1;
                if probe.at_boundary() {
                    return n;
                }
            }
            skip = skip.saturating_sub(part.len());
        }
        n
    }

    /// The echo's common write: `bytes` are the rest of the oldest message received, or part of
    /// it, at a frame boundary with nothing of our own to send first: one frame, one write.
    /// `None` when the general path must plan it.
    #[inline]
    fn write_whole_reply(&mut self, bytes: &[u8]) -> Result<Option<usize>, Errno> {
        if self.mode != Mode::Echo || !self.ctl_is_empty() || !self.tx.at_boundary() {
            return Ok(None);
        }
        let Some(msg) = self.tx.front() else { return Ok(None) };
        let owed = msg.len - msg.sent;
        if bytes.len() > owed as usize || bytes.is_empty() || !self.told {
            return Ok(None);
        }
        let fin = msg.complete && bytes.len() == owed as usize;
        let op = if msg.started { opcode::CONTINUATION } else { msg.op };
        let mut hdr = [0; proto::MAX_HEADER];
        let hdr_len = proto::header(&mut hdr, fin, op, bytes.len() as u64, None);
        let written =
            self.inner.send_vectored(&[IoSlice::new(&hdr[..hdr_len]), IoSlice::new(bytes)])?;
        self.wrote += written as u64;
        if written == hdr_len + bytes.len() {
            // All of it: the message moves on, no frame is left half sent.
            let msg = self.tx.front_mut().expect("checked above");
            msg.sent += bytes.len() as u32;
            msg.started = true;
            if fin {
                reply_pop(&mut self.tx.first, &mut self.aside);
                self.happened.messages_out += 1;
                // A message behind it whose bytes are all out (an empty one) ends now.
                if self.tx.front().is_some_and(|m| m.complete && m.sent == m.len) {
                    self.end_replies();
                    self.flush_ctl()?;
                }
            }
            return Ok(Some(bytes.len()));
        }
        let frame = Planned {
            hdr,
            hdr_len: hdr_len as u8,
            part: 0,
            at: 0,
            len: bytes.len(),
            fin,
            cont: false,
        };
        let taken = self.commit(&[Some(frame)], written);
        if taken == 0 {
            return Err(EAGAIN); // only header bytes went, or none: the socket is full
        }
        Ok(Some(taken))
    }

    /// Plans up to [`MAX_FRAMES`] frames for the bytes from `parts[part][at..]` on (each
    /// frame's payload within one part); returns how many.
    fn plan(
        &self,
        parts: &[&[u8]],
        mut part: usize,
        mut at: usize,
        plan: &mut [Option<Planned>],
    ) -> usize {
        let mut n = 0;
        let mut queue_at = 0;
        let mut sent_of_head = None::<(u32, bool)>; // the head message's state as planned
        let blank = [0; proto::MAX_HEADER];
        if !self.tx.at_boundary() {
            // Continue the current frame first.
            let avail = parts.get(part).map_or(0, |p| p.len() - at);
            let len = (self.tx.left as usize).min(avail);
            let hdr_left = self.tx.hdr_at < self.tx.hdr_len;
            if len == 0 && !hdr_left {
                return 0; // its bytes are not offered yet
            }
            plan[0] =
                Some(Planned { hdr: blank, hdr_len: 0, part, at, len, fin: false, cont: true });
            n = 1;
            if len < self.tx.left as usize {
                return n; // the frame goes on in the next part
            }
            at += len;
        }
        while n < MAX_FRAMES {
            while part < parts.len() && at == parts[part].len() {
                part += 1;
                at = 0;
            }
            let avail = parts.get(part).map_or(0, |p| p.len() - at);
            let Some(msg) = reply_get(&self.tx.first, &self.aside, queue_at) else { break };
            let (sent, began) = sent_of_head.unwrap_or((msg.sent, msg.started));
            let owed = msg.len - sent;
            let len = (owed as usize).min(avail);
            let fin = msg.complete && len == owed as usize;
            if len == 0 && !fin {
                break;
            }
            if fin {
                queue_at += 1;
                sent_of_head = None;
            } else {
                sent_of_head = Some((sent + len as u32, true));
            }
            let op = if began { opcode::CONTINUATION } else { msg.op };
            let mut hdr = blank;
            let hdr_len = proto::header(&mut hdr, fin, op, len as u64, None) as u8;
            plan[n] = Some(Planned { hdr, hdr_len, part, at, len, fin, cont: false });
            n += 1;
            at += len;
        }
        n
    }

    /// `written` bytes of the planned frames went out: move the framing state on by the frames
    /// begun, keep the rest of a frame cut short. Returns the behaviour's bytes taken.
    fn commit(&mut self, plan: &[Option<Planned>], mut written: usize) -> usize {
        let mut taken = 0;
        for frame in plan.iter().flatten() {
            let hdr_len = if frame.cont {
                (self.tx.hdr_len - self.tx.hdr_at) as usize
            } else {
                frame.hdr_len as usize
            };
            if written == 0 && (hdr_len > 0 || frame.len > 0) {
                return taken; // not begun: planned again next time
            }
            let h = written.min(hdr_len);
            written -= h;
            let p = written.min(frame.len);
            written -= p;
            taken += p;
            if frame.cont {
                self.tx.hdr_at += h as u8;
                self.tx.left -= p as u32;
            } else {
                // A new frame begun: the message moves on.
                self.begin(frame);
                self.tx.hdr = frame.hdr[..10].try_into().expect("10 bytes");
                self.tx.hdr_at = h as u8;
                self.tx.hdr_len = hdr_len as u8;
                self.tx.left = (frame.len - p) as u32;
            }
            if self.tx.hdr_at < self.tx.hdr_len || self.tx.left > 0 {
                return taken;
            }
            self.tx.hdr_at = 0;
            self.tx.hdr_len = 0;
        }
        taken
    }

    /// A planned frame began to go out: its message's state moves on.
    fn begin(&mut self, frame: &Planned) {
        let head = self.tx.front_mut().expect("a reply frame has its message");
        head.sent += frame.len as u32;
        head.started = true;
        if frame.fin {
            reply_pop(&mut self.tx.first, &mut self.aside);
            self.happened.messages_out += 1;
        }
    }
}

/// Moves `(part, at)` on by `n` bytes of `parts`.
fn advance(parts: &[&[u8]], mut part: usize, mut at: usize, mut n: usize) -> (usize, usize) {
    while n > 0 && part < parts.len() {
        let step = n.min(parts[part].len() - at);
        at += step;
        n -= step;
        if at == parts[part].len() {
            part += 1;
            at = 0;
        }
    }
    (part, at)
}

/// What the reactor asks of a connection's WebSocket framing, whatever is under it (the wire, or
/// a fault plan on the wire).
pub(crate) trait WsState {
    /// Whether the opening handshake is still going on.
    fn is_opening(&self) -> bool;
    /// The handshake did not finish in time.
    fn time_out(&mut self);
    /// Adds what happened since the last call to the counters; returns whether messages were echoed in place (bytes moved that the behaviour never
    /// saw: the connection was active).
    fn count(&mut self, stats: &mut Stats) -> bool;
    /// The reactor is about to close the connection: `code` says why (see
    /// `CloseReason::ws_close_code`), unless the client's close or a failure already chose one.
    fn last_word(&mut self, code: Option<u16>);
    /// After a writable edge (the transport below served it first): write our control output.
    fn on_writable_edge(&mut self) -> Result<(), Errno>;
    /// Whether the linger just began: the reactor arms its deadline (once).
    fn linger_began(&mut self) -> bool;
    /// Whether our last word went and we wait for the client's end of stream.
    fn is_lingering(&self) -> bool;
    /// Whether the client's close frame arrived (it ended the session).
    fn client_closed(&self) -> bool;
}

impl<T: Transport> WsState for Ws<T> {
    fn is_opening(&self) -> bool {
        matches!(self.phase, Phase::Opening)
    }

    fn time_out(&mut self) {
        if self.is_opening() {
            self.happened.failure = true;
            self.phase = Phase::Refused;
        }
    }

    fn count(&mut self, stats: &mut Stats) -> bool {
        let h = std::mem::take(&mut self.happened);
        stats.ws_handshakes += h.handshake as u64;
        stats.ws_failures += h.failure as u64;
        stats.ws_protocol_errors += h.protocol_error as u64;
        stats.ws_messages_in += h.messages_in as u64;
        stats.ws_messages_out += h.messages_out as u64;
        stats.bytes_in += h.echoed as u64;
        stats.bytes_out += h.echoed as u64;
        h.echoed > 0
    }

    fn last_word(&mut self, code: Option<u16>) {
        if self.phase == Phase::Open && self.close_code.is_none() {
            self.close_code = code.and_then(NonZeroU16::new);
        }
    }

    fn on_writable_edge(&mut self) -> Result<(), Errno> {
        if self.close_sent {
            return self.last_word_out();
        }
        self.flush_ctl().map(|_| ())
    }

    fn linger_began(&mut self) -> bool {
        if self.close_sent && !self.linger_began {
            self.linger_began = true;
            return true;
        }
        false
    }

    fn is_lingering(&self) -> bool {
        self.close_sent
    }

    fn client_closed(&self) -> bool {
        self.their_close
    }
}

/// A stream under an echo with a fault plan: as it is, or under WebSocket framing (the plan then
/// acts on the bytes under the framing: frames are delayed, sliced, cut or corrupted).
#[derive(Debug)]
pub(crate) enum Framed<T> {
    Raw(T),
    Ws(Box<Ws<T>>),
}

impl<T: Transport> Framed<T> {
    /// The stream under the framing.
    pub(crate) fn inner_mut(&mut self) -> &mut T {
        match self {
            Framed::Raw(t) => t,
            Framed::Ws(ws) => ws.inner_mut(),
        }
    }

    /// The WebSocket framing, if there is one.
    pub(crate) fn ws_mut(&mut self) -> Option<&mut dyn WsState> {
        match self {
            Framed::Raw(_) => None,
            Framed::Ws(ws) => Some(&mut **ws),
        }
    }
}

macro_rules! framed {
    ($self:ident, $io:ident => $e:expr) => {
        match $self {
            Framed::Raw($io) => $e,
            Framed::Ws($io) => $e,
        }
    };
}

impl<T: Transport> Transport for Framed<T> {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        framed!(self, io => io.recv(buf))
    }

    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        framed!(self, io => io.send(buf))
    }

    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        framed!(self, io => io.send2(first, second))
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        framed!(self, io => io.send_vectored(bufs))
    }

    fn shutdown_write(&mut self) {
        framed!(self, io => io.shutdown_write())
    }

    fn has_buffered(&self) -> bool {
        framed!(self, io => io.has_buffered())
    }

    fn is_handshaking(&self) -> bool {
        framed!(self, io => io.is_handshaking())
    }

    fn short_read_drains(&self) -> bool {
        framed!(self, io => io.short_read_drains())
    }

    fn frames_lines(&self) -> bool {
        framed!(self, io => io.frames_lines())
    }

    fn reserve(&self) -> usize {
        framed!(self, io => io.reserve())
    }

    fn cap(&self, cap: usize) -> usize {
        framed!(self, io => io.cap(cap))
    }

    fn unacked(&self) -> usize {
        framed!(self, io => io.unacked())
    }

    fn reset_on_close(&mut self) {
        framed!(self, io => io.reset_on_close())
    }

    fn note_read_closed(&mut self) {
        framed!(self, io => io.note_read_closed())
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        framed!(self, io => io.source())
    }
}

/// A header's length from its second byte: 2, the extended length, the masking key.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// What a request head gets.
enum Answer {
    /// 101, with the client's key.
    Upgrade(String),
    /// A plain GET of `/`: a short text (not a failure).
    Root,
    /// A GET without the upgrade.
    NoUpgrade,
    /// A WebSocket version other than 13.
    BadVersion,
    Malformed,
    TooLarge,
}

/// Judges a complete request head (RFC 6455 §4.2.1).
fn judge(req: &httparse::Request<'_, '_>) -> Answer {
    if req.method != Some("GET") || req.version != Some(1) {
        return Answer::Malformed;
    }
    let header = |name: &str| http::header(req.headers, name);
    let has_token = |name: &str, token: &str| http::has_token(req.headers, name, token);
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return match req.path {
            Some("/") if header("upgrade").is_none() => Answer::Root,
            _ if header("upgrade").is_none() => Answer::NoUpgrade,
            _ => Answer::Malformed,
        };
    }
    if header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Answer::BadVersion;
    }
    match header("sec-websocket-key") {
        Some(key) if proto::is_valid_key(key) => {
            Answer::Upgrade(String::from_utf8_lossy(key.trim_ascii()).into_owned())
        }
        _ => Answer::Malformed,
    }
}

impl<T: Transport> Transport for Ws<T> {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        // Lines: raw input starts a byte in, so a message's `\n` always has room.
        let from = (self.mode == Mode::Lines) as usize;
        loop {
            if matches!(self.phase, Phase::Refused | Phase::Closing) {
                return self.linger(buf);
            }
            let n = match self.inner.recv(&mut buf[from..]) {
                // The client's end before its request head was whole: it gave up. A failed
                // handshake, now, not at the handshake timeout (the behaviours wait for the
                // upgrade before they write or close).
                Ok(0) if self.is_opening() => {
                    self.happened.failure = true;
                    self.phase = Phase::Refused;
                    return Err(libc::ECONNRESET);
                }
                Ok(0) => return Ok(0),
                Ok(n) => n,
                Err(e) => return Err(e),
            };
            if let Some(m) = self.took(buf, from, n)? {
                return Ok(m);
            }
        }
    }

    // Out of line: the wire's `send` that dispatches here stays small enough to be inlined
    // where the plain socket's send is the hot one (the echo answered in place).
    #[inline(never)]
    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        if let Some(sent) = self.pass_slices(&[IoSlice::new(buf)]) {
            return sent;
        }
        self.write_parts(&[buf])
    }

    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        self.write_parts(&[first, second])
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        if let Some(sent) = self.pass_slices(bufs) {
            return sent;
        }
        let parts: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.write_parts(&parts)
    }

    fn shutdown_write(&mut self) {
        if !self.close_sent && matches!(self.phase, Phase::Open | Phase::Closing) {
            if self.close_code.is_some() && self.tx.at_boundary() {
                self.queue_close();
            }
            self.close_sent = true;
        }
        let _ = self.flush_ctl();
        if !self.tx.fin_sent {
            self.tx.fin_sent = true;
            self.inner.shutdown_write();
        }
    }

    fn has_buffered(&self) -> bool {
        !self.ctl_is_empty() || self.tx.owns_header_rest() || self.inner.has_buffered()
    }

    fn is_handshaking(&self) -> bool {
        self.is_opening() || self.inner.is_handshaking()
    }

    fn short_read_drains(&self) -> bool {
        // Closing: read again, for our close and the end of stream that follow the data.
        !self.rx.full && matches!(self.phase, Phase::Open | Phase::Opening)
    }

    fn frames_lines(&self) -> bool {
        self.tx.passes
    }

    fn reserve(&self) -> usize {
        self.inner.reserve()
    }

    fn cap(&self, cap: usize) -> usize {
        match self.mode {
            Mode::Echo => cap.max(self.max_message as usize),
            Mode::Lines => cap,
        }
    }

    fn unacked(&self) -> usize {
        self.inner.unacked()
    }

    fn reset_on_close(&mut self) {
        self.inner.reset_on_close()
    }

    fn note_read_closed(&mut self) {
        self.rx.end_reported = true;
        self.inner.note_read_closed()
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}

/// Property tests: the framing driven through a scripted transport that returns the client's
/// bytes in random pieces and takes the server's output in random partial writes, against a
/// model of what must come back (each message whole with its opcode, a pong per ping, the
/// close code echoed), and arbitrary bytes that must never panic.
#[cfg(test)]
pub(crate) mod properties {
    use proptest::prelude::*;

    use super::{Mode, Ws};
    use crate::transport::scripted::Scripted;
    use crate::transport::Transport;
    use crate::websocket::{self as proto, opcode};

    pub(crate) const REQUEST: &[u8] = b"GET /p HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    /// A client message: its opcode, payload, the fragment sizes it is sent in, and whether a
    /// ping goes between its first two fragments.
    #[derive(Debug, Clone)]
    pub(crate) struct Message {
        op: u8,
        payload: Vec<u8>,
        cuts: Vec<usize>,
        ping: Option<Vec<u8>>,
    }

    pub(crate) fn message() -> impl Strategy<Value = Message> {
        (
            prop_oneof![Just(opcode::TEXT), Just(opcode::BINARY)],
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(1usize..100, 0..4),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..125)),
        )
            .prop_map(|(op, payload, cuts, ping)| {
                // Text must be UTF-8: keep it ASCII here (the checker has its own property).
                let payload = match op {
                    opcode::TEXT => payload.into_iter().map(|b| b'a' + b % 26).collect(),
                    _ => payload,
                };
                Message { op, payload, cuts, ping }
            })
    }

    /// A message small enough to be echoed in place: one frame of 1 to 125 bytes.
    fn small_message() -> impl Strategy<Value = Message> {
        (prop_oneof![Just(opcode::TEXT), Just(opcode::BINARY)], 1usize..126, any::<u8>()).prop_map(
            |(op, len, seed)| {
                let payload = (0..len).map(|i| b'a' + (seed as usize + i) as u8 % 26).collect();
                Message { op, payload, cuts: Vec::new(), ping: None }
            },
        )
    }

    /// Where each of the client's frames in `wire` ends.
    fn frame_ends(wire: &[u8]) -> Vec<usize> {
        let (mut at, mut ends) = (0, Vec::new());
        while at < wire.len() {
            let (len, hl) = match wire[at + 1] & 0x7f {
                126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 8),
                127 => (u64::from_be_bytes(wire[at + 2..at + 10].try_into().unwrap()) as usize, 14),
                n => (n as usize, 6),
            };
            at += hl + len;
            ends.push(at);
        }
        ends
    }

    fn client_frame(out: &mut Vec<u8>, fin: bool, op: u8, payload: &[u8], key: [u8; 4]) {
        proto::frame(out, fin, op, payload, Some(key));
    }

    /// The client's bytes for `messages`, then a close with code 4000.
    pub(crate) fn client_bytes(messages: &[Message]) -> Vec<u8> {
        let mut out = REQUEST.to_vec();
        for (i, m) in messages.iter().enumerate() {
            let key = [i as u8, 0x5a, 0xa5, 7];
            let mut pieces = Vec::new();
            let mut rest = &m.payload[..];
            for &cut in &m.cuts {
                let take = cut.min(rest.len());
                pieces.push(&rest[..take]);
                rest = &rest[take..];
            }
            pieces.push(rest);
            for (j, piece) in pieces.iter().enumerate() {
                let op = if j == 0 { m.op } else { opcode::CONTINUATION };
                client_frame(&mut out, j + 1 == pieces.len(), op, piece, key);
                if j == 0 {
                    if let Some(ping) = &m.ping {
                        client_frame(&mut out, true, opcode::PING, ping, key);
                    }
                }
            }
        }
        client_frame(&mut out, true, opcode::CLOSE, &4000u16.to_be_bytes(), [1, 2, 3, 4]);
        out
    }

    /// Parses the server's output: the 101 head, then (messages, pongs, close code: 1005 for a
    /// close without one); every
    /// message must be finished.
    #[allow(clippy::type_complexity)]
    fn server_output(out: &[u8]) -> (Vec<(u8, Vec<u8>)>, Vec<Vec<u8>>, Option<u16>) {
        let (messages, pongs, close, unfinished) = server_frames(out);
        assert!(!unfinished, "a message never finished: {:?}", frame_list(out));
        (messages, pongs, close)
    }

    fn frame_list(out: &[u8]) -> Vec<(bool, u8, usize)> {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut at = end;
        let mut v = Vec::new();
        while at < out.len() {
            let (b0, b1) = (out[at], out[at + 1]);
            let (len, hl) = match b1 & 0x7f {
                126 => (u16::from_be_bytes([out[at + 2], out[at + 3]]) as usize, 4),
                n => (n as usize, 2),
            };
            v.push((b0 & 0x80 != 0, b0 & 0x0f, len));
            at += hl + len;
        }
        v
    }

    /// As [`server_output`], also saying whether the output ends inside a message (right when
    /// the client's own message never ended).
    #[allow(clippy::type_complexity)]
    pub(crate) fn server_frames(
        out: &[u8],
    ) -> (Vec<(u8, Vec<u8>)>, Vec<Vec<u8>>, Option<u16>, bool) {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer") + 4;
        assert!(out.starts_with(b"HTTP/1.1 101 "), "{:?}", String::from_utf8_lossy(&out[..end]));
        let (mut at, mut messages, mut pongs, mut close) = (end, Vec::new(), Vec::new(), None);
        let mut current: Option<(u8, Vec<u8>)> = None;
        while at < out.len() {
            let (b0, b1) = (out[at], out[at + 1]);
            assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
            let (len, hl) = match b1 & 0x7f {
                126 => (u16::from_be_bytes([out[at + 2], out[at + 3]]) as usize, 4),
                127 => (u64::from_be_bytes(out[at + 2..at + 10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            let payload = out[at + hl..at + hl + len].to_vec();
            at += hl + len;
            let (fin, op) = (b0 & 0x80 != 0, b0 & 0x0f);
            match op {
                opcode::PONG => pongs.push(payload),
                // A close without a code answers one without a code: 1005 says so (RFC 6455
                // §7.1.5), as it never goes on the wire.
                opcode::CLOSE => {
                    assert!(payload.len() != 1, "a close payload of one byte");
                    close =
                        Some(payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])))
                }
                opcode::CONTINUATION => {
                    current.as_mut().expect("a started message").1.extend(payload)
                }
                op => {
                    assert!(current.is_none(), "a new message inside another");
                    current = Some((op, payload));
                }
            }
            if fin && op < 8 {
                messages.push(current.take().unwrap());
            }
        }
        (messages, pongs, close, current.is_some())
    }

    /// Drives `ws` as the echo behaviour does: read, write back what was read, keep what the
    /// transport refused, and at the end of stream flush and shut down.
    pub(crate) fn run_echo(ws: &mut Ws<Scripted>) {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        let mut eof = false;
        let trace = std::env::var_os("WS_TRACE").is_some();
        for _ in 0..1_000_000 {
            if !pending.is_empty() {
                let before = ws.inner.output.len();
                let (tl, th, ta) = (ws.tx.left, ws.tx.hdr_at, ws.tx.hdr_len);
                let r = ws.send(&pending);
                if trace {
                    eprintln!("send {} -> {:?} closing {} sent {} owes {} out +{} tx before left {} hdr {}/{} ctl {} front {:?}", pending.len(), r, ws.phase == super::Phase::Closing, ws.close_sent, ws.tx.owes, ws.inner.output.len() - before, tl, th, ta, ws.aside.as_ref().map_or(0, |a| a.ctl.len()), ws.tx.front());
                }
                if let Ok(n) = r {
                    pending.drain(..n);
                }
            }
            let _ = super::WsState::on_writable_edge(ws);
            if eof {
                if pending.is_empty() && !ws.has_buffered() {
                    ws.shutdown_write();
                    return;
                }
                continue;
            }
            let r = ws.recv(&mut buf);
            if trace {
                eprintln!(
                    "recv -> {:?} closing {} sent {}",
                    r,
                    ws.phase == super::Phase::Closing,
                    ws.close_sent
                );
            }
            match r {
                Ok(0) => eof = true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        panic!(
            "no progress: phase {:?} pending {} ctl {} tx left {} hdr {}/{} close_sent {} owes {} queue {:?}",
            ws.phase, pending.len(), ws.aside.as_ref().map_or(0, |a| a.ctl.len()), ws.tx.left, ws.tx.hdr_at, ws.tx.hdr_len,
            ws.close_sent, ws.tx.owes, ws.tx.first
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Any messages, fragmented anyhow, pings between fragments, read in any pieces and
        /// written in any partial writes: each comes back whole with its opcode, in order, a
        /// pong carries each ping's payload, and the close code comes back.
        #[test]
        fn echo_returns_every_message_whatever_the_pieces(
            messages in prop::collection::vec(message(), 0..8),
            reads in prop::collection::vec(0usize..200, 1..8),
            writes in prop::collection::vec(0usize..200, 1..8),
        ) {
            let mut reads = reads;
            reads.push(1 + reads[0]); // never only refusals
            let mut writes = writes;
            writes.push(1 + writes[0]);
            let io = Scripted::new(client_bytes(&messages), reads, writes);
            let mut ws = Ws::new(io, Mode::Echo, 1 << 20);
            run_echo(&mut ws);
            let (got, pongs, close) = server_output(&ws.inner.output);
            let want: Vec<(u8, Vec<u8>)> =
                messages.iter().map(|m| (m.op, m.payload.clone())).collect();
            prop_assert_eq!(got, want);
            let pings: Vec<Vec<u8>> = messages.iter().filter_map(|m| m.ping.clone()).collect();
            prop_assert_eq!(pongs, pings);
            prop_assert_eq!(close, Some(4000));
            prop_assert!(ws.inner.shut);
        }

        /// Runs of small messages, several to a read, answered in place, and the socket taking
        /// any part of each batch of replies (cut in a header, in a payload, between frames):
        /// what it did not take goes the general way, and every message still comes back whole
        /// and in order. The reads end on frame boundaries (as a client's messages arrive), so
        /// that each begins between messages; some messages are the general path's.
        #[test]
        fn replies_made_in_place_survive_any_partial_write(
            messages in prop::collection::vec(
                prop_oneof![8 => small_message(), 1 => message()], 1..40),
            groups in prop::collection::vec(1usize..8, 1..8),
            writes in prop::collection::vec(prop_oneof![1 => 0usize..4, 3 => 4usize..600], 1..8),
        ) {
            let input = client_bytes(&messages);
            let mut reads = vec![REQUEST.len()];
            let ends = frame_ends(&input[REQUEST.len()..]);
            let mut at = 0;
            for (i, &end) in ends.iter().enumerate() {
                if (i + 1) % groups[i % groups.len()] == 0 {
                    reads.push(end - at);
                    at = end;
                }
            }
            reads.push(input.len() - REQUEST.len() - at);
            let mut writes = writes;
            writes.push(1 + writes[0]);
            let io = Scripted::new(input, reads, writes);
            let mut ws = Ws::new(io, Mode::Echo, 1 << 20);
            run_echo(&mut ws);
            let (got, _, close) = server_output(&ws.inner.output);
            let want: Vec<(u8, Vec<u8>)> =
                messages.iter().map(|m| (m.op, m.payload.clone())).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(close, Some(4000));
        }

        /// Lines (chat): the behaviour's framed lines go out as they are, in any partial writes,
        /// and the pongs the client's pings are owed go only between frames, however the
        /// frames are cut: every line comes back as one text message, in order, and every
        /// ping's pong whole.
        #[test]
        fn framed_lines_pass_through_with_pongs_between_frames(
            lines in prop::collection::vec(prop::collection::vec(b'a'..=b'z', 0..300), 1..30),
            pings in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..6),
            reads in prop::collection::vec(1usize..40, 1..6),
            writes in prop::collection::vec(prop_oneof![1 => 0usize..4, 3 => 4usize..400], 1..8),
        ) {
            let mut input = REQUEST.to_vec();
            for ping in &pings {
                client_frame(&mut input, true, opcode::PING, ping, [9, 8, 7, 6]);
            }
            let mut writes = writes;
            writes.push(1 + writes[0]);
            let io = Scripted::new(input, reads, writes);
            let mut ws = Ws::new(io, Mode::Lines, 1 << 20);
            let text: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
            let mut pending = proto::frame_lines(&text);
            let mut buf = vec![0u8; 4096];
            let mut eof = false;
            for _ in 0..1_000_000 {
                if !pending.is_empty() {
                    if let Ok(n) = ws.send(&pending) {
                        pending.drain(..n);
                    }
                }
                let _ = super::WsState::on_writable_edge(&mut ws);
                if !eof {
                    eof = matches!(ws.recv(&mut buf), Ok(0));
                }
                if eof && pending.is_empty() && !ws.has_buffered() {
                    break;
                }
            }
            prop_assert!(pending.is_empty(), "the lines never all went");
            ws.shutdown_write();
            let (messages, pongs, close, unfinished) = server_frames(&ws.inner.output);
            prop_assert!(!unfinished);
            let want: Vec<(u8, Vec<u8>)> = lines.iter().map(|l| (opcode::TEXT, l.clone())).collect();
            prop_assert_eq!(messages, want);
            prop_assert_eq!(pongs, pings);
            prop_assert_eq!(close, None);
            prop_assert_eq!(ws.happened.messages_out as usize, lines.len(), "messages counted out");
        }

        /// Arbitrary bytes after a valid upgrade, in any pieces: never a panic, never a hang,
        /// and whatever comes out is well-formed server frames.
        #[test]
        fn arbitrary_frames_never_panic(
            junk in prop::collection::vec(any::<u8>(), 0..600),
            reads in prop::collection::vec(1usize..100, 1..6),
        ) {
            let mut input = REQUEST.to_vec();
            input.extend_from_slice(&junk);
            let io = Scripted::new(input, reads, vec![usize::MAX]);
            let mut ws = Ws::new(io, Mode::Echo, 1 << 16);
            run_echo(&mut ws);
            let _ = server_frames(&ws.inner.output);
        }

        /// Arbitrary request heads: never a panic; whatever is answered is HTTP.
        #[test]
        fn arbitrary_request_heads_get_an_answer(
            head in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut input = head;
            input.extend_from_slice(b"\r\n\r\n");
            let io = Scripted::new(input, vec![64], vec![usize::MAX]);
            let mut ws = Ws::new(io, Mode::Echo, 1 << 16);
            run_echo(&mut ws);
            let out = &ws.inner.output;
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "));
        }

        /// The incremental UTF-8 check agrees with `std::str::from_utf8` on the whole, however
        /// the bytes are split.
        #[test]
        fn utf8_check_agrees_with_std(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            cuts in prop::collection::vec(0usize..64, 0..6),
        ) {
            let text = String::from_utf8_lossy(&bytes).into_owned().into_bytes();
            for input in [bytes, text] {
                let mut check = proto::Utf8Check::default();
                let mut ok = true;
                let mut at = 0;
                let mut cuts = cuts.clone();
                cuts.sort();
                for cut in cuts.into_iter().chain([input.len()]) {
                    let cut = cut.min(input.len()).max(at);
                    ok &= check.feed(&input[at..cut]);
                    at = cut;
                }
                let whole = std::str::from_utf8(&input).is_ok();
                prop_assert_eq!(ok && check.is_complete(), whole);
            }
        }
    }
}
