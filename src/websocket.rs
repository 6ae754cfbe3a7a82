//! The pieces of RFC 6455 that both ends need: the opening handshake's key and accept value, frame
//! headers, masking (a word at a time), close codes, and an incremental UTF-8 check that fails
//! as soon as the bytes seen so far cannot be valid. The server's framing of a connection is
//! `transport/ws.rs`; loadgen's client framing uses these same pieces.

/// The GUID of RFC 6455 §1.3, appended to the client's key before hashing.
pub const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A frame's opcode (RFC 6455 §5.2).
pub mod opcode {
    /// A later fragment of a data message.
    pub const CONTINUATION: u8 = 0x0;
    /// A UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// The close handshake.
    pub const CLOSE: u8 = 0x8;
    /// A ping: answered with a pong of the same payload.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// Close codes this server sends (RFC 6455 §7.4.1).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away (the server drains, or the connection was idle too long).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// A data type the endpoint does not take (binary in a chat room).
    pub const UNSUPPORTED: u16 = 1003;
    /// Text that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy: a chat member too slow to keep up.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// The largest payload of a control frame.
pub const MAX_CONTROL: usize = 125;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte masking key.
pub const MAX_HEADER: usize = 14;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64(ctx.finish().as_ref())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: the base64 of 16 bytes (24 characters).
pub fn is_valid_key(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        // The last character before the padding carries 4 bits: the low 2 of the 6 are zero.
        && BASE64.iter().position(|&c| c == key[21]).is_some_and(|v| v & 0x0f == 0)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes a frame header into `out` and returns its length: FIN, the opcode, the payload length
/// in its shortest form, and the masking key when there is one (a client's frames).
pub fn header(
    out: &mut [u8; MAX_HEADER],
    fin: bool,
    op: u8,
    len: u64,
    key: Option<[u8; 4]>,
) -> usize {
    out[0] = (fin as u8) << 7 | op;
    let mask_bit = (key.is_some() as u8) << 7;
    let mut at = if len < 126 {
        out[1] = mask_bit | len as u8;
        2
    } else if len <= u16::MAX as u64 {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(key) = key {
        out[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// The payload length a whole frame header states: `head` holds the header from its first byte
/// (2, 4 or 10 bytes before any masking key, as its second byte says).
pub fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
        len => u64::from(len),
    }
}

/// Appends a whole frame to `out`: its header, then `payload`, masked with `key` if there is
/// one (a client's frames are masked, a server's are not).
pub fn frame(out: &mut Vec<u8>, fin: bool, op: u8, payload: &[u8], key: Option<[u8; 4]>) {
    let mut hdr = [0; MAX_HEADER];
    let n = header(&mut hdr, fin, op, payload.len() as u64, key);
    out.extend_from_slice(&hdr[..n]);
    let from = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = key {
        mask(&mut out[from..], key, 0);
    }
}

/// XORs `buf` with the masking key, `phase` bytes into it (the offset of `buf[0]` in the frame's
/// payload, mod 4). In place, sixteen bytes to a step (which LLVM compiles to two 64-bit XORs
/// into memory), then eight, then single bytes; [`unmask_within`] is the one that moves.
#[inline]
pub fn mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let key = Key::new(key, phase);
    let mut chunks = buf.chunks_exact_mut(16);
    for chunk in &mut chunks {
        let word = u128::from_ne_bytes((&*chunk).try_into().expect("16 bytes")) ^ key.wider;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let mut chunks = chunks.into_remainder().chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ key.wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key.bytes[i & 3];
    }
}

/// [`mask`] of `buf[from..from + len]` with its result written to `buf[to..]` (`to <= from`;
/// the two may overlap): a payload unmasked and moved to the front of a read buffer in one
/// pass over its bytes, where [`mask`] then a `copy_within` make two. Sixteen bytes at a time
/// (SSE2 on x86-64, where LLVM would split a `u128` into two 64-bit halves), then eight, four
/// and single bytes; each read before it is written at or below where it was, so no byte is
/// overwritten before it is read.
#[inline(always)]
pub fn unmask_within(
    buf: &mut [u8],
    from: usize,
    len: usize,
    to: usize,
    key: [u8; 4],
    phase: usize,
) {
    assert!(
        to <= from && from <= buf.len() && len <= buf.len() - from,
        "unmask_within out of bounds"
    );
    let key = Key::new(key, phase);
    // SAFETY: `from + len <= buf.len()` and `to <= from` (asserted above): both ranges lie
    // inside `buf`.
    unsafe { unmask_raw(buf.as_mut_ptr().add(from), buf.as_mut_ptr().add(to), len, &key) };
}

/// `len` bytes at `src` XORed with the key and written to `dst` (at or below `src`), each
/// read before the write that may overlap it.
///
/// # Safety
/// Both ranges must lie in one allocation, and `dst <= src`.
#[inline(always)]
unsafe fn unmask_raw(src: *const u8, dst: *mut u8, len: usize, key: &Key) {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128, _mm_xor_si128};
        // SAFETY: SSE2 is part of x86-64 (no detection needed); `sixteen` is 16 bytes.
        let k = unsafe { _mm_loadu_si128(key.sixteen.as_ptr().cast::<__m128i>()) };
        while i + 16 <= len {
            // SAFETY: `i + 16 <= len`, inside both ranges (the caller's promise).
            unsafe {
                let word = _mm_loadu_si128(src.add(i).cast::<__m128i>());
                _mm_storeu_si128(dst.add(i).cast::<__m128i>(), _mm_xor_si128(word, k));
            }
            i += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    while i + 16 <= len {
        // SAFETY: `i + 16 <= len`, inside both ranges (the caller's promise).
        unsafe {
            let word = src.add(i).cast::<u128>().read_unaligned();
            dst.add(i).cast::<u128>().write_unaligned(word ^ key.wider);
        }
        i += 16;
    }
    // The rest, at offsets that are multiples of 4 (the key's phase is unchanged) but the
    // last few bytes.
    if len - i >= 8 {
        // SAFETY: `i + 8 <= len`, inside both ranges.
        unsafe {
            let word = src.add(i).cast::<u64>().read_unaligned();
            dst.add(i).cast::<u64>().write_unaligned(word ^ key.wide);
        }
        i += 8;
    }
    if len - i >= 4 {
        // SAFETY: `i + 4 <= len`, inside both ranges.
        unsafe {
            let word = src.add(i).cast::<u32>().read_unaligned();
            dst.add(i).cast::<u32>().write_unaligned(word ^ key.wide as u32);
        }
        i += 4;
    }
    while i < len {
        // SAFETY: `i < len`, inside both ranges.
        unsafe { *dst.add(i) = *src.add(i) ^ key.bytes[i & 3] };
        i += 1;
    }
}

/// A masking key turned to start `phase` bytes into it, in the widths [`mask`] uses.
struct Key {
    bytes: [u8; 4],
    wide: u64,
    wider: u128,
    /// `wider` as bytes, for a 16-byte register.
    sixteen: [u8; 16],
}

impl Key {
    #[inline]
    fn new(key: [u8; 4], phase: usize) -> Self {
        // The key from `phase` bytes into it: a rotation of its word (towards the low byte in
        // memory order).
        let turn = 8 * (phase as u32 & 3);
        let word = u32::from_ne_bytes(key);
        let word = if cfg!(target_endian = "little") {
            word.rotate_right(turn)
        } else {
            word.rotate_left(turn)
        };
        // Both halves alike: the same bytes in memory whatever the byte order.
        let wide = u64::from(word) | (u64::from(word) << 32);
        let wider = u128::from(wide) | (u128::from(wide) << 64);
        Key { bytes: word.to_ne_bytes(), wide, wider, sixteen: wider.to_ne_bytes() }
    }
}

/// Frames lines for a WebSocket chat member: each `\n`-terminated line of `text` becomes one
/// text message (a server frame, FIN, unmasked) without its `\n`; bytes after the last `\n`
/// (a line without its end) are one more. Made once per post and shared by every WebSocket
/// member it goes to.
pub fn frame_lines(text: &[u8]) -> Vec<u8> {
    let lines = memchr::memchr_iter(b'\n', text).count() + usize::from(!text.ends_with(b"\n"));
    let mut out = Vec::with_capacity(text.len() + lines * 4);
    let mut rest = text;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let mut hdr = [0; MAX_HEADER];
        let n = header(&mut hdr, true, opcode::TEXT, line.len() as u64, None);
        out.extend_from_slice(&hdr[..n]);
        out.extend_from_slice(line);
        rest = next;
    }
    out
}

/// Whether a close frame may carry `code` (RFC 6455 §7.4: the defined codes a peer may send,
/// and the ranges for libraries and applications).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// An incremental UTF-8 check over a message's fragments: each call takes the next bytes and
/// fails as soon as they cannot be the start of valid UTF-8 (not only at the message's end).
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Check {
    /// The bytes of an unfinished character carried from the last call.
    carry: [u8; 4],
    carried: u8,
}

impl Utf8Check {
    /// Checks the next bytes; false when the text so far cannot be UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.carried > 0 {
            // Complete the carried character first, a byte at a time.
            while self.carried < 4 && !bytes.is_empty() {
                self.carry[self.carried as usize] = bytes[0];
                self.carried += 1;
                bytes = &bytes[1..];
                match std::str::from_utf8(&self.carry[..self.carried as usize]) {
                    Ok(_) => {
                        self.carried = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return false,
                    Err(_) => {}
                }
            }
            if self.carried > 0 {
                return true; // still unfinished, and out of bytes
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_some() => false,
            Err(e) => {
                let tail = &bytes[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len() as u8;
                true
            }
        }
    }

    /// Whether the text ends on a whole character (checked at the message's end).
    pub fn is_complete(&self) -> bool {
        self.carried == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZR=="), "stray low bits");
        assert!(!is_valid_key(b"short"));
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn unmasking_within_matches_mask_then_move() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..90u8).map(|b| b.wrapping_mul(37)).collect();
        // Every length to 50 (the 16-byte steps and the bytes after them), at every phase and
        // every distance back, overlapping or not.
        for phase in 0..4 {
            for len in 0..=50 {
                for back in 0..=40 {
                    let from = 40;
                    let mut fast = data.clone();
                    unmask_within(&mut fast, from, len, from - back, key, phase);
                    let mut slow = data.clone();
                    mask(&mut slow[from..from + len], key, phase);
                    slow.copy_within(from..from + len, from - back);
                    assert_eq!(
                        fast[from - back..from - back + len],
                        slow[from - back..from - back + len],
                        "phase {phase}, len {len}, back {back}"
                    );
                }
            }
        }
    }

    #[test]
    fn masking_at_any_phase_matches_the_bytewise_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        // Every length to 50: the 16-, 8- and 1-byte steps alone and together.
        let data: Vec<u8> = (0..50u8).collect();
        for phase in 0..8 {
            for start in 0..=50 {
                let mut fast = data[start..].to_vec();
                mask(&mut fast, key, phase);
                let slow: Vec<u8> = data[start..]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[(i + phase) & 3])
                    .collect();
                assert_eq!(fast, slow, "phase {phase}, start {start}");
            }
        }
    }

    #[test]
    fn lines_become_one_text_frame_each() {
        let long = "x".repeat(300);
        let text = format!("al: hi\n\n* bo joined\n{long}\ntail");
        let framed = frame_lines(text.as_bytes());
        let mut want = Vec::new();
        for line in ["al: hi", "", "* bo joined", &long, "tail"] {
            frame(&mut want, true, opcode::TEXT, line.as_bytes(), None);
        }
        assert_eq!(framed, want);
        assert_eq!(frame_lines(b""), b"");
    }

    #[test]
    fn headers_take_the_shortest_length_form() {
        let mut h = [0; MAX_HEADER];
        assert_eq!(header(&mut h, true, opcode::TEXT, 5, None), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(header(&mut h, false, opcode::BINARY, 126, None), 4);
        assert_eq!(&h[..4], &[0x02, 126, 0, 126]);
        assert_eq!(header(&mut h, true, opcode::BINARY, 65536, Some([1, 2, 3, 4])), 14);
        assert_eq!(&h[..14], &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]);
        let mut out = Vec::new();
        frame(&mut out, true, opcode::PONG, b"ab", Some([1, 2, 3, 4]));
        assert_eq!(out, [0x8a, 0x82, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2]);
        frame(&mut out, false, opcode::TEXT, b"x", None);
        assert_eq!(&out[8..], [0x01, 1, b'x']);
        // And read back, in each length form, masked or not.
        for (len, key) in [(0, None), (125, None), (126, Some([1, 2, 3, 4])), (65535, None)]
            .into_iter()
            .chain([(65536, Some([9, 9, 9, 9])), (1 << 40, None)])
        {
            header(&mut h, true, opcode::BINARY, len, key);
            assert_eq!(payload_len(&h), len);
        }
    }

    #[test]
    fn utf8_check_fails_fast_and_carries_split_characters() {
        let text = "κόσμε €𝄞".as_bytes();
        for split in 0..text.len() {
            let mut check = Utf8Check::default();
            assert!(check.feed(&text[..split]));
            assert!(check.feed(&text[split..]));
            assert!(check.is_complete(), "split at {split}");
        }
        let mut check = Utf8Check::default();
        assert!(check.feed(&[0xce]));
        assert!(!check.is_complete());
        // 0xF4 0x90 can never start a valid character: fails at the second byte.
        let mut check = Utf8Check::default();
        assert!(check.feed(&[0xf4]));
        assert!(!check.feed(&[0x90]));
        assert!(!Utf8Check::default().feed(&[b'a', 0xff]));
        // An encoded surrogate is invalid.
        assert!(!Utf8Check::default().feed(&[0xed, 0xa0]));
        assert!(
            is_valid_close_code(1000) && !is_valid_close_code(1005) && !is_valid_close_code(999)
        );
    }
}
