//! The client side of WebSocket (RFC 6455), for loadgen's `ws://`, `wss://`, `chat+ws://` and
//! `chat+wss://` targets and the chat client: the opening handshake, each message framed and masked as the RFC
//! requires (a fresh key per frame, applied a word at a time), and the server's frames decoded
//! back into the byte stream the workloads check.
//!
//! The workloads write bytes, as on every stream transport; this layer cuts them into messages
//! (echo: one per `--size` bytes; chat: one per line, its `\n` included, which the server
//! drops). Reading, it returns the payloads back to back (chat:
//! each message followed by the `\n` the server dropped), so the byte-exact checks stay as
//! they are. "Taken" by a write means framed into this layer's output, which holds at most
//! [`OUT_LIMIT`] bytes ahead of the socket.

use std::io;

use crate::websocket::{self as ws, opcode};

/// Framed bytes held ahead of the socket at most.
pub const OUT_LIMIT: usize = 256 * 1024;

/// The largest response head to the opening handshake.
const MAX_HEAD: usize = 16 * 1024;

/// What a WebSocket target needs beyond its socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsTarget {
    /// The `Host` header: the target's `HOST:PORT` as given.
    pub host: String,
    /// The request path (`/` when none was given).
    pub path: String,
    /// Text messages (`--ws-text`; payloads are then ASCII) instead of binary.
    pub text: bool,
    /// Bytes per message (echo: `--size`; chat: a line).
    pub message: usize,
    /// Chat: the server's messages are lines (a `\n` is added to each).
    pub lines: bool,
}

/// The WebSocket state of one connection.
#[derive(Debug)]
pub struct WsClient {
    target: WsTarget,
    /// The opening handshake: `None` before the request is queued, then the response head
    /// read so far, until it is whole.
    opening: Option<Vec<u8>>,
    open: bool,
    key: String,
    /// Framed output not yet written.
    out: Vec<u8>,
    out_at: usize,
    /// Payload bytes of the current outgoing message still to frame.
    msg_left: usize,
    mask_key: [u8; 4],
    mask_phase: usize,
    rng: u64,
    /// Payload decoded during the handshake (frames that came with the response).
    early: Vec<u8>,
    rx: Rx,
    /// The server's close frame arrived: its end.
    closed: bool,
}

#[derive(Debug, Default)]
struct Rx {
    head: [u8; 10],
    have: usize,
    in_payload: bool,
    left: u64,
    op: u8,
    fin: bool,
    control: Vec<u8>,
}

impl WsClient {
    /// A client for `target`; `seed` varies the masking keys between connections.
    pub fn new(target: WsTarget, seed: u64) -> WsClient {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let key: [u8; 16] = std::array::from_fn(|_| next(&mut rng) as u8);
        WsClient {
            target,
            opening: None,
            open: false,
            key: ws::base64(&key),
            out: Vec::new(),
            out_at: 0,
            msg_left: 0,
            mask_key: [0; 4],
            mask_phase: 0,
            rng,
            early: Vec::new(),
            rx: Rx::default(),
            closed: false,
        }
    }

    /// Text messages.
    pub fn is_text(&self) -> bool {
        self.target.text
    }

    /// The server's messages are lines.
    pub fn is_lines(&self) -> bool {
        self.target.lines
    }

    /// The handshake is done.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The server's close frame arrived.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Framed bytes waiting for the socket.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.out_at..]
    }

    /// `n` of the pending bytes were written.
    pub fn wrote(&mut self, n: usize) {
        self.out_at += n;
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
    }

    /// Queues the upgrade request (once).
    pub fn start(&mut self) {
        if self.opening.is_none() {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: loadgen\r\n\r\n",
                self.target.path, self.target.host, self.key
            );
            self.out.extend_from_slice(request.as_bytes());
            self.opening = Some(Vec::new());
        }
    }

    /// Bytes of the response to the upgrade request; `Ok(true)` once it is whole and right
    /// (frames after it are decoded and kept for the first read).
    pub fn on_response(&mut self, bytes: &[u8]) -> io::Result<bool> {
        let head = self.opening.get_or_insert_with(Vec::new);
        head.extend_from_slice(bytes);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > MAX_HEAD {
                return Err(io::Error::other("the server's answer to the upgrade is too long"));
            }
            return Ok(false);
        };
        let head = std::mem::take(head);
        check_response(&head[..end + 4], &self.key)?;
        self.open = true;
        // A byte in front: room for a line's `\n`.
        let mut rest = vec![0];
        rest.extend_from_slice(&head[end + 4..]);
        let n = rest.len();
        let m = self.decode_range(&mut rest, 0, 1, n)?;
        rest.truncate(m);
        self.early = rest;
        Ok(true)
    }

    /// Frames as much of `bytes` as [`OUT_LIMIT`] allows; returns how many were taken.
    pub fn frame(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() && self.out.len() - self.out_at < OUT_LIMIT {
            if self.msg_left == 0 {
                // Chat: a message per line, its `\n` included (lines are queued whole).
                self.msg_left = match self.target.lines {
                    true => memchr::memchr(b'\n', &bytes[taken..])
                        .map_or(bytes.len() - taken, |i| i + 1),
                    false => self.target.message.max(1),
                };
                self.mask_key = (next(&mut self.rng) as u32).to_ne_bytes();
                self.mask_phase = 0;
                let text = self.target.text || self.target.lines; // chat lines are text
                let op = if text { opcode::TEXT } else { opcode::BINARY };
                let mut hdr = [0; ws::MAX_HEADER];
                let n = ws::header(&mut hdr, true, op, self.msg_left as u64, Some(self.mask_key));
                self.out.extend_from_slice(&hdr[..n]);
            }
            let room = OUT_LIMIT - (self.out.len() - self.out_at);
            let take = self.msg_left.min(bytes.len() - taken).min(room.max(1));
            let from = self.out.len();
            self.out.extend_from_slice(&bytes[taken..taken + take]);
            ws::mask(&mut self.out[from..], self.mask_key, self.mask_phase);
            self.mask_phase = (self.mask_phase + take) & 3;
            self.msg_left -= take;
            taken += take;
        }
        taken
    }

    /// Queues our close frame (1000), unless the handshake never ended.
    pub fn close(&mut self) {
        if self.open && !self.closed {
            let key = (next(&mut self.rng) as u32).to_ne_bytes();
            let code = ws::close::NORMAL.to_be_bytes();
            ws::frame(&mut self.out, true, opcode::CLOSE, &code, Some(key));
        }
    }

    /// Payload decoded during the handshake, for the first reads.
    pub fn take_early(&mut self, buf: &mut [u8]) -> usize {
        let n = self.early.len().min(buf.len());
        buf[..n].copy_from_slice(&self.early[..n]);
        self.early.drain(..n);
        n
    }

    /// Decodes the server's frames in `buf[from..to]`, moving their payload to `buf[out..]`
    /// (lines: a `\n` after each message, for which `out < from` must leave room: a byte, as
    /// every message end after the first in one call follows a header); returns the payload's
    /// length. Pings are answered (queued); a close ends the stream.
    pub fn decode_range(
        &mut self,
        buf: &mut [u8],
        out: usize,
        from: usize,
        to: usize,
    ) -> io::Result<usize> {
        let (mut r, mut w) = (from, out);
        while r < to && !self.closed {
            let rx = &mut self.rx;
            if !rx.in_payload {
                let need = if rx.have < 2 { 2 } else { header_len(rx.head[1]) };
                let take = (need - rx.have).min(to - r);
                rx.head[rx.have..rx.have + take].copy_from_slice(&buf[r..r + take]);
                rx.have += take;
                r += take;
                if rx.have < 2 || rx.have < header_len(rx.head[1]) {
                    continue;
                }
                let (b0, b1) = (rx.head[0], rx.head[1]);
                if b1 & 0x80 != 0 || b0 & 0x70 != 0 {
                    return Err(io::Error::other("the server sent a masked or reserved frame"));
                }
                rx.left = ws::payload_len(&rx.head);
                rx.op = b0 & 0x0f;
                rx.fin = b0 & 0x80 != 0;
                rx.have = 0;
                rx.in_payload = true;
                if rx.left == 0 {
                    w = self.end_frame(buf, w);
                }
                continue;
            }
            let take = (rx.left.min((to - r) as u64)) as usize;
            if rx.op >= 8 {
                rx.control.extend_from_slice(&buf[r..r + take]);
            } else {
                buf.copy_within(r..r + take, w);
                w += take;
            }
            r += take;
            rx.left -= take as u64;
            if rx.left == 0 {
                w = self.end_frame(buf, w);
            }
        }
        Ok(w - out)
    }

    fn end_frame(&mut self, buf: &mut [u8], mut w: usize) -> usize {
        let rx = &mut self.rx;
        rx.in_payload = false;
        match rx.op {
            opcode::PING => {
                let payload = std::mem::take(&mut rx.control);
                let key = (next(&mut self.rng) as u32).to_ne_bytes();
                // Between our frames only: a ping that arrives while a message of ours is half
                // framed goes unanswered (servers under test do not ping loadgen).
                if self.msg_left == 0 {
                    ws::frame(&mut self.out, true, opcode::PONG, &payload, Some(key));
                }
            }
            opcode::CLOSE => self.closed = true,
            opcode::PONG => rx.control.clear(),
            _ if rx.fin && self.target.lines => {
                buf[w] = b'\n';
                w += 1;
            }
            _ => {}
        }
        w
    }
}

/// A header's length from its second byte (server frames carry no key).
fn header_len(b1: u8) -> usize {
    match b1 & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// Checks the server's answer to the upgrade: 101 and the right accept value.
pub fn check_response(head: &[u8], key: &str) -> io::Result<()> {
    let text = String::from_utf8_lossy(head);
    let status = text.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!(
            "the server refused the WebSocket upgrade: {}",
            status.trim()
        )));
    }
    let expected = ws::accept_key(key.as_bytes());
    let accepted = text.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    if !accepted {
        return Err(io::Error::other("the server's Sec-WebSocket-Accept is wrong or missing"));
    }
    Ok(())
}

/// xorshift64*: masking keys need no more than to vary (RFC 6455 §10.3 asks them to be
/// unpredictable to scripts in a browser, which a load generator does not host).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(message: usize, lines: bool) -> WsTarget {
        WsTarget { host: "h:1".into(), path: "/".into(), text: false, message, lines }
    }

    #[test]
    fn frames_are_masked_messages_of_the_run_size() {
        let mut c = WsClient::new(target(5, false), 1);
        assert_eq!(c.frame(b"hello wor"), 9);
        let out = c.pending().to_vec();
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 5);
        let mut body = out[6..11].to_vec();
        ws::mask(&mut body, out[2..6].try_into().unwrap(), 0);
        assert_eq!(body, b"hello");
        assert_eq!(out[11], 0x82, "the next message has its own frame");
        // The second message continues in the next write, with its key's phase kept.
        assert_eq!(c.frame(b"ld"), 2);
        let out = c.pending().to_vec();
        let key: [u8; 4] = out[13..17].try_into().unwrap();
        let mut body = out[17..22].to_vec();
        ws::mask(&mut body, key, 0);
        assert_eq!(body, b" worl");
        assert_eq!(out[22..24], [0x82, 0x85], "and `d` starts a third");
    }

    #[test]
    fn server_frames_decode_across_reads_and_lines_get_their_newline() {
        let mut c = WsClient::new(target(3, true), 2);
        c.open = true;
        let wire = [0x01, 2, b'a', b'b', 0x89, 1, b'p', 0x80, 1, b'c', 0x81, 0];
        // Byte by byte: headers split everywhere.
        let mut got = Vec::new();
        for byte in wire {
            let mut buf = vec![0u8; 2];
            buf[1] = byte;
            let n = c.decode_range(&mut buf, 0, 1, 2).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"abc\n\n");
        assert!(c.pending().starts_with(&[0x8a, 0x81]), "a masked pong");
    }

    #[test]
    fn the_response_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        check_response(ok.as_bytes(), key).unwrap();
        let e = check_response(b"HTTP/1.1 426 Upgrade Required\r\n\r\n", key).unwrap_err();
        assert!(e.to_string().contains("refused the WebSocket upgrade: HTTP/1.1 426"), "{e}");
        let wrong = ok.replace("xOo=", "xOp=");
        assert!(check_response(wrong.as_bytes(), key).is_err());
    }
}
