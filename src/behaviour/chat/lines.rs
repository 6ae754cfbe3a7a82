//! The chat line framer: turns a member's byte stream into complete lines, held back until their
//! `\n` arrives, and refuses a line longer than the limit before any of it is delivered.
//!
//! It hands out [`Piece`]s in stream order: runs of ordinary lines as one contiguous slice (so a
//! read full of lines costs one segment, not one per line), and each command line (starting with
//! `/`) on its own. Only the unterminated tail of the stream is copied and kept.
//!
//! Invariant: the held partial line never exceeds the limit; the moment it would, the member gets
//! [`Piece::TooLong`] and nothing of that line reaches anyone.
//!
//! Newlines are found with `memchr` (SIMD): a byte-at-a-time search was half of the room's
//! user-space instructions with one publisher and a hundred members.

/// A part of a member's stream, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// `count` complete ordinary lines, each with its `\n`, back to back.
    Lines(&'a [u8], usize),
    /// One complete command line, without its `\n`.
    Command(&'a [u8]),
    /// More than the limit without a newline: the member is to be told and cut off.
    TooLong,
}

/// Keep at most this much capacity for a member's partial line once it is delivered.
const KEEP_CAPACITY: usize = 4096;

/// A member's unterminated line, and the splitting of new input.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    partial: Vec<u8>,
}

fn newline(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}

impl Framer {
    /// Bytes held (an unterminated line).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.partial.len()
    }

    /// Splits `data`, behind whatever is held, into pieces for `each`, in order. `each` returns
    /// false to stop (the member quit); so does this, then and after a [`Piece::TooLong`].
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        max: usize,
        mut each: impl FnMut(Piece<'_>) -> bool,
    ) -> bool {
        if !self.partial.is_empty() {
            let Some(i) = newline(data) else {
                if self.partial.len() + data.len() > max {
                    self.reset();
                    each(Piece::TooLong);
                    return false;
                }
                self.partial.extend_from_slice(data);
                return true;
            };
            if self.partial.len() + i > max {
                self.reset();
                each(Piece::TooLong);
                return false;
            }
            self.partial.extend_from_slice(&data[..=i]);
            data = &data[i + 1..];
            let line = std::mem::take(&mut self.partial);
            let go = one_line(&line, &mut each);
            self.partial = line;
            self.reset();
            if !go {
                return false;
            }
        }
        // `data` now starts at the beginning of a line.
        let (mut run, mut count, mut at) = (0, 0, 0);
        for end in memchr::memchr_iter(b'\n', data) {
            if end - at > max {
                if count > 0 {
                    each(Piece::Lines(&data[run..at], count));
                }
                each(Piece::TooLong);
                return false;
            }
            if data[at] == b'/' {
                if count > 0 && !each(Piece::Lines(&data[run..at], count)) {
                    return false;
                }
                if !each(Piece::Command(&data[at..end])) {
                    return false;
                }
                (run, count) = (end + 1, 0);
            } else {
                count += 1;
            }
            at = end + 1;
        }
        if count > 0 && !each(Piece::Lines(&data[run..at], count)) {
            return false;
        }
        let tail = &data[at..];
        if tail.len() > max {
            each(Piece::TooLong);
            return false;
        }
        self.partial.extend_from_slice(tail);
        true
    }

    /// The peer's EOF: a held unterminated line is completed with a `\n` and handed out.
    pub(crate) fn finish(&mut self, mut each: impl FnMut(Piece<'_>) -> bool) {
        if self.partial.is_empty() {
            return;
        }
        let mut line = std::mem::take(&mut self.partial);
        line.push(b'\n');
        one_line(&line, &mut each);
    }

    fn reset(&mut self) {
        self.partial.clear();
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial = Vec::new();
        }
    }
}

/// Hands out one complete line (with its `\n`) as a command or an ordinary line.
fn one_line(line: &[u8], each: &mut impl FnMut(Piece<'_>) -> bool) -> bool {
    if line[0] == b'/' {
        each(Piece::Command(&line[..line.len() - 1]))
    } else {
        each(Piece::Lines(line, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum P {
        Lines(Vec<u8>, usize),
        Command(Vec<u8>),
        TooLong,
    }

    fn feed(framer: &mut Framer, data: &[u8], max: usize) -> (Vec<P>, bool) {
        let mut got = Vec::new();
        let go = framer.feed(data, max, |p| {
            got.push(match p {
                Piece::Lines(b, n) => P::Lines(b.to_vec(), n),
                Piece::Command(b) => P::Command(b.to_vec()),
                Piece::TooLong => P::TooLong,
            });
            true
        });
        (got, go)
    }

    fn lines(b: &[u8], n: usize) -> P {
        P::Lines(b.to_vec(), n)
    }

    #[test]
    fn runs_of_lines_come_whole_and_commands_apart() {
        let mut f = Framer::default();
        let (got, go) = feed(&mut f, b"a\nbb\n\n/who\nc\n/nick x\nrest", 100);
        assert!(go);
        assert_eq!(
            got,
            vec![
                lines(b"a\nbb\n\n", 3),
                P::Command(b"/who".to_vec()),
                lines(b"c\n", 1),
                P::Command(b"/nick x".to_vec()),
            ]
        );
        assert_eq!(f.held(), 4);
        let (got, _) = feed(&mut f, b"\nnext\n", 100);
        assert_eq!(got, vec![lines(b"rest\n", 1), lines(b"next\n", 1)]);
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn a_line_split_over_many_reads_is_delivered_once_whole() {
        let mut f = Framer::default();
        for part in [&b"he"[..], b"l", b"", b"lo"] {
            assert_eq!(feed(&mut f, part, 100), (vec![], true));
        }
        assert_eq!(feed(&mut f, b"\n", 100).0, vec![lines(b"hello\n", 1)]);
        // A command split the same way.
        feed(&mut f, b"/qu", 100);
        assert_eq!(
            feed(&mut f, b"it\nx\n", 100).0,
            vec![P::Command(b"/quit".to_vec()), lines(b"x\n", 1)]
        );
    }

    #[test]
    fn too_long_as_soon_as_the_limit_is_passed_and_nothing_of_it_goes_out() {
        let mut f = Framer::default();
        // Exactly the limit is fine; one more byte without a newline is not.
        assert_eq!(feed(&mut f, b"12345\n", 5).0, vec![lines(b"12345\n", 1)]);
        assert_eq!(feed(&mut f, b"123", 5), (vec![], true));
        assert_eq!(feed(&mut f, b"45", 5), (vec![], true));
        assert_eq!(feed(&mut f, b"6", 5), (vec![P::TooLong], false));
        // Within one read: earlier complete lines are delivered, the long one is not.
        let mut f = Framer::default();
        assert_eq!(
            feed(&mut f, b"ok\n123456\nlater\n", 5),
            (vec![lines(b"ok\n", 1), P::TooLong], false)
        );
        let mut f = Framer::default();
        assert_eq!(feed(&mut f, b"ok\n123456", 5), (vec![lines(b"ok\n", 1), P::TooLong], false));
        // Completed across reads but too long in total.
        let mut f = Framer::default();
        feed(&mut f, b"1234", 5);
        assert_eq!(feed(&mut f, b"56\n", 5), (vec![P::TooLong], false));
    }

    #[test]
    fn finish_completes_the_unterminated_line() {
        let mut f = Framer::default();
        feed(&mut f, b"a\nlast", 100);
        let mut got = Vec::new();
        f.finish(|p| {
            got.push(format!("{p:?}"));
            true
        });
        assert_eq!(got, vec![format!("{:?}", Piece::Lines(b"last\n", 1))]);
        let mut nothing = true;
        f.finish(|_| {
            nothing = false;
            true
        });
        assert!(nothing);
    }

    #[test]
    fn stopping_stops() {
        let mut f = Framer::default();
        let mut seen = 0;
        let go = f.feed(b"a\n/quit\nb\n", 100, |p| {
            seen += 1;
            !matches!(p, Piece::Command(_))
        });
        assert!(!go);
        assert_eq!(seen, 2);
    }
}
