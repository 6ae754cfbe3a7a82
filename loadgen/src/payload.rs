//! The payload pattern: message `seq` of stream `stream` is a keyed pseudo-random byte string,
//! so no two messages (of one connection or of two) share content and a dropped, duplicated,
//! reordered or shifted byte cannot line up by accident.
//!
//! Stream connections keep what they sent until it is echoed and compare the echo with it byte
//! for byte; the pattern is what makes that comparison meaningful across message boundaries.
//! Datagrams carry their sequence number in their first 8 bytes (little endian), followed by the
//! pattern, so a reply can be matched to its request whatever order it comes back in.
//!
//! Chat lines are text: `PPPPPPPP SSSSSSSSSSSSSSSS ` (publisher and sequence number in hex), then
//! the pattern of that publisher's line mapped onto 64 printable characters (never `\n`, never a
//! leading `/`), then `\n`. A receiver can tell whose line it is, which one, and whether every
//! byte is right.

/// Bytes of sequence number at the start of a datagram.
pub const SEQ_LEN: usize = 8;

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// `j·φ` for the eight words of a 64-byte block.
const STEPS: [u64; 8] = {
    let mut steps = [0; 8];
    let mut j = 0;
    while j < 8 {
        steps[j] = (j as u64).wrapping_mul(GOLDEN);
        j += 1;
    }
    steps
};

/// The pattern's 64-bit words: each message has its own fully mixed key, and word `j` of it is
/// `key ^ j·φ`, so every word of a message differs from its neighbours. The words are made eight
/// at a time, a 64-byte block as `key ^ (b·8φ + STEPS)`: additions and exclusive ors the compiler
/// turns into a few vector instructions (written as a product, `j·φ` became emulated 64-bit
/// vector multiplies, which once made generating payloads loadgen's costliest step).
#[derive(Debug)]
struct Blocks {
    key: u64,
    /// `b·8φ` for the next block `b`.
    base: u64,
}

impl Blocks {
    #[inline]
    fn new(stream: u32, seq: u64) -> Self {
        Blocks { key: splitmix64(((stream as u64) << 40) ^ seq ^ 0x5EED), base: 0 }
    }

    #[inline]
    fn next_block(&mut self) -> [u8; 64] {
        let mut block = [0u8; 64];
        for (word, step) in block.as_chunks_mut::<8>().0.iter_mut().zip(STEPS) {
            *word = (self.key ^ self.base.wrapping_add(step)).to_le_bytes();
        }
        self.base = self.base.wrapping_add(GOLDEN.wrapping_mul(8));
        block
    }
}

/// Fills `out` with the pattern of message `seq` on stream `stream`.
pub fn fill(out: &mut [u8], stream: u32, seq: u64) {
    let mut blocks = Blocks::new(stream, seq);
    let (whole, tail) = out.as_chunks_mut::<64>();
    for block in whole {
        *block = blocks.next_block();
    }
    if !tail.is_empty() {
        let len = tail.len();
        tail.copy_from_slice(&blocks.next_block()[..len]);
    }
}

/// Appends `count` messages of `stream`, `size` bytes each, numbered from `first`: the same bytes
/// as [`fill`] gives each, written straight into the spare capacity (no zeroing first).
#[inline]
pub fn append(out: &mut Vec<u8>, count: usize, size: usize, stream: u32, first: u64) {
    use std::mem::MaybeUninit;
    let (start, len) = (out.len(), count * size);
    out.reserve(len);
    // Into the spare capacity, a block at a time: zeroing first (`resize`) cost more than
    // the pattern (perf: 4 % of loadgen's bulk samples in `memset`), and a block at a time
    // through `extend_from_slice` paid a length check per 64 bytes.
    let spare = &mut out.spare_capacity_mut()[..len];
    for (k, message) in spare.chunks_exact_mut(size.max(1)).enumerate() {
        let mut blocks = Blocks::new(stream, first + k as u64);
        let (whole, tail) = message.as_chunks_mut::<64>();
        for block in whole {
            *block = blocks.next_block().map(MaybeUninit::new);
        }
        for (byte, value) in tail.iter_mut().zip(blocks.next_block()) {
            *byte = MaybeUninit::new(value);
        }
    }
    // SAFETY: the loop above wrote every one of the `len` bytes after `start` (`count`
    // messages of `size` bytes, each its whole blocks and then its tail).
    unsafe { out.set_len(start + len) };
}

/// Fills `out` (at least [`SEQ_LEN`] bytes) as datagram `seq`: sequence number, then pattern.
pub fn fill_datagram(out: &mut [u8], stream: u32, seq: u64) {
    out[..SEQ_LEN].copy_from_slice(&seq.to_le_bytes());
    fill(&mut out[SEQ_LEN..], stream, seq);
}

/// Checks a received datagram: returns its sequence number if every byte is what datagram
/// `seq` of `stream` carried and it has the expected length, `None` otherwise.
pub fn check_datagram(data: &[u8], stream: u32, size: usize, scratch: &mut Vec<u8>) -> Option<u64> {
    if data.len() != size || size < SEQ_LEN {
        return None;
    }
    let seq = u64::from_le_bytes(data[..SEQ_LEN].try_into().ok()?);
    scratch.resize(size, 0);
    fill_datagram(scratch, stream, seq);
    (scratch[..] == *data).then_some(seq)
}

/// Bytes of a chat line before its pattern: publisher, space, sequence number, space.
pub const LINE_HEADER: usize = 8 + 1 + 16 + 1;
/// The shortest chat line: the header, one pattern byte, the newline.
pub const MIN_LINE: usize = LINE_HEADER + 2;

const LINE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-";

/// Turns payload bytes into ASCII letters, digits, `+` and `-` (WebSocket text messages): six of
/// every eight bits kept, so the stream still differs at every offset for the checks.
pub fn to_text(bytes: &mut [u8]) {
    for b in bytes {
        *b = LINE_ALPHABET[(*b & 63) as usize];
    }
}

/// Fills `out` (at least [`MIN_LINE`] bytes, its last byte the `\n`) as line `seq` of
/// `publisher`.
pub fn fill_line(out: &mut [u8], publisher: u32, seq: u64) {
    // `{publisher:08x} {seq:016x} `, written in place: formatting it allocated a String for
    // every line made or checked (a fifth of loadgen's time on a fan-out run).
    put_hex(&mut out[..8], u64::from(publisher));
    out[8] = b' ';
    put_hex(&mut out[9..25], seq);
    out[25] = b' ';
    let body_len = out.len() - LINE_HEADER - 1;
    let (body, newline) = out[LINE_HEADER..].split_at_mut(body_len);
    fill(body, publisher, seq);
    for b in body.iter_mut() {
        *b = LINE_ALPHABET[(*b & 63) as usize];
    }
    newline[0] = b'\n';
}

/// The publisher and sequence number a chat line (without its `\n`) claims, if its header
/// parses; the rest is not checked.
pub fn line_header(line: &[u8]) -> Option<(u32, u64)> {
    if line.len() < LINE_HEADER || line[8] != b' ' || line[25] != b' ' {
        return None;
    }
    Some((u32::try_from(hex_value(&line[..8])?).ok()?, hex_value(&line[9..25])?))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the low `out.len()` hex digits of `v` into `out`, lowercase, zero-padded.
fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

/// The value of `digits` read as lowercase hex (as [`put_hex`] writes them); `None` for any
/// other byte or more than 16 digits.
fn hex_value(digits: &[u8]) -> Option<u64> {
    if digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(d))
    })
}

/// Reads a received chat line (without its `\n`): its publisher and sequence number if it is
/// exactly what [`fill_line`] made for a `size`-byte line, `None` otherwise.
pub fn check_line(line: &[u8], size: usize, scratch: &mut Vec<u8>) -> Option<(u32, u64)> {
    if line.len() + 1 != size || size < MIN_LINE {
        return None;
    }
    let (publisher, seq) = line_header(line)?;
    scratch.resize(size, 0);
    fill_line(scratch, publisher, seq);
    (scratch[..size - 1] == *line).then_some((publisher, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(stream: u32, seq: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        fill(&mut v, stream, seq);
        v
    }

    #[test]
    fn hex_is_written_and_read_as_format_does() {
        for v in [0u64, 1, 0x2a, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut out = [0u8; 16];
            put_hex(&mut out, v);
            assert_eq!(&out, format!("{v:016x}").as_bytes());
            assert_eq!(hex_value(&out), Some(v));
            let mut short = [0u8; 8];
            put_hex(&mut short, v);
            assert_eq!(&short, format!("{:08x}", v as u32).as_bytes(), "the low digits");
        }
        for bad in [&b"12g4"[..], b"+123", b"12 4", b"ABCD", b"00000000000000001"] {
            assert_eq!(hex_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deterministic_and_distinct() {
        assert_eq!(message(1, 2, 64), message(1, 2, 64));
        assert_ne!(message(1, 2, 64), message(1, 3, 64));
        assert_ne!(message(1, 2, 64), message(2, 2, 64));
        // Prefix property: a shorter message is the start of a longer one with the same key.
        assert_eq!(message(5, 9, 13)[..], message(5, 9, 64)[..13]);
    }

    #[test]
    fn shifted_streams_do_not_line_up() {
        // Concatenate messages; a stream shifted by any offset 1..size differs from the original.
        let size = 16;
        let stream: Vec<u8> = (0..32).flat_map(|seq| message(0, seq, size)).collect();
        for shift in 1..size {
            let matching = stream[shift..].iter().zip(&stream).filter(|(a, b)| a == b).count();
            assert!(matching < stream.len() / 16, "shift {shift}: {matching} bytes line up");
        }
        // A dropped message is visible: message k+1 differs from message k at almost every byte.
        let same =
            message(0, 4, 64).iter().zip(message(0, 5, 64)).filter(|(a, b)| **a == *b).count();
        assert!(same < 8, "{same}");
    }

    #[test]
    fn words_follow_the_documented_formula() {
        let key = splitmix64((3u64 << 40) ^ 1234 ^ 0x5EED);
        let expected: Vec<u8> =
            (0u64..9).flat_map(|j| (key ^ j.wrapping_mul(GOLDEN)).to_le_bytes()).collect();
        assert_eq!(message(3, 1234, 70)[..], expected[..70]);
        // Across several 64-byte blocks too.
        let expected: Vec<u8> =
            (0u64..40).flat_map(|j| (key ^ j.wrapping_mul(GOLDEN)).to_le_bytes()).collect();
        assert_eq!(message(3, 1234, 317)[..], expected[..317]);
    }

    #[test]
    fn append_matches_fill() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 128, 130, 1000] {
            let mut v = vec![0xEE; 3];
            append(&mut v, 1, len, 4, 99);
            assert_eq!(v[..3], [0xEE; 3]);
            assert_eq!(v[3..], message(4, 99, len)[..], "len {len}");
            // Several at once: each message in turn, numbered on from the first.
            let mut v = vec![0xEE; 3];
            append(&mut v, 3, len, 4, 99);
            let expected: Vec<u8> = (99..102).flat_map(|seq| message(4, seq, len)).collect();
            assert_eq!(v[3..], expected[..], "len {len} x 3");
        }
    }

    #[test]
    fn chat_lines_round_trip_and_reject_corruption() {
        let mut scratch = Vec::new();
        let mut line = vec![0; 64];
        fill_line(&mut line, 0x2a, 0x1234);
        assert_eq!(&line[..LINE_HEADER], b"0000002a 0000000000001234 ");
        assert_eq!(line[63], b'\n');
        assert!(!line[..63].contains(&b'\n') && line[0] != b'/');
        assert!(line[..63].iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        let text = &line[..63];
        assert_eq!(check_line(text, 64, &mut scratch), Some((0x2a, 0x1234)));
        assert_eq!(check_line(&text[..62], 64, &mut scratch), None, "truncated");
        assert_eq!(check_line(text, 65, &mut scratch), None, "another size");
        let mut bad = text.to_vec();
        bad[40] ^= 1;
        assert_eq!(check_line(&bad, 64, &mut scratch), None, "one flipped bit");
        let mut other = line.clone();
        fill_line(&mut other, 0x2a, 0x1235);
        assert_ne!(other[LINE_HEADER..], line[LINE_HEADER..], "lines differ by sequence number");
        assert_eq!(check_line(b"* alice joined", 15, &mut scratch), None);
    }

    #[test]
    fn datagrams_round_trip_and_reject_corruption() {
        let mut scratch = Vec::new();
        let mut d = vec![0; 100];
        fill_datagram(&mut d, 3, 77);
        assert_eq!(check_datagram(&d, 3, 100, &mut scratch), Some(77));
        assert_eq!(check_datagram(&d, 4, 100, &mut scratch), None, "another stream's");
        assert_eq!(check_datagram(&d[..99], 3, 100, &mut scratch), None, "truncated");
        d[50] ^= 1;
        assert_eq!(check_datagram(&d, 3, 100, &mut scratch), None, "one flipped bit");
    }
}
