//! A chat member's undelivered output: a queue of shared, reference-counted segments.
//!
//! A line posted to a room is stored once, as one [`Segment`], and each member that is to receive
//! it queues a reference: a room's memory is bounded by the members' caps, not by members × lines.
//! `len` counts the bytes this member still owes its peer (the figure its cap applies to), even
//! though the storage is shared.
//!
//! Invariants: no empty segment is queued; `head < front.len()` (a fully sent segment is
//! dropped at once); `len` is the sum of the queued bytes minus `head`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

/// Bytes shared by every member that receives them.
pub(crate) type Segment = Arc<[u8]>;

/// A FIFO of segments, partly sent at the front.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    segs: VecDeque<Segment>,
    /// Bytes of the front segment already sent.
    head: usize,
    len: usize,
}

impl Outbox {
    /// Bytes still to send.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `seg` behind everything pending.
    pub(crate) fn push(&mut self, seg: Segment) {
        if !seg.is_empty() {
            self.len += seg.len();
            self.segs.push_back(seg);
        }
    }

    /// Queues what is left of `seg` after its first `sent` bytes went out directly; only when
    /// nothing else is pending (or the order would break).
    pub(crate) fn push_rest(&mut self, seg: Segment, sent: usize) {
        debug_assert!(self.is_empty() && sent <= seg.len());
        if sent < seg.len() {
            self.len = seg.len() - sent;
            self.head = sent;
            self.segs.push_back(seg);
        }
    }

    /// The pending bytes when they are all in one segment (the common case of a member that keeps
    /// up: one run of lines per turn), so that they go out with a plain `send`.
    pub(crate) fn single(&self) -> Option<&[u8]> {
        match self.segs.len() {
            1 => Some(&self.segs[0][self.head..]),
            _ => None,
        }
    }

    /// Fills `iov` with the pending bytes, oldest first; returns how many slices it used.
    pub(crate) fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut k = 0;
        for (i, seg) in self.segs.iter().take(iov.len()).enumerate() {
            let from = if i == 0 { self.head } else { 0 };
            iov[i] = IoSlice::new(&seg[from..]);
            k += 1;
        }
        k
    }

    /// Marks `n` pending bytes as sent.
    pub(crate) fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.segs.front() else { break };
            let left = front.len() - self.head;
            if n < left {
                self.head += n;
                return;
            }
            n -= left;
            self.head = 0;
            self.segs.pop_front();
        }
        if self.segs.is_empty() && self.segs.capacity() > 64 {
            self.segs = VecDeque::new(); // an idle member keeps no large queue
        }
    }

    /// Drops everything pending.
    pub(crate) fn clear(&mut self) {
        self.segs = VecDeque::new();
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(out: &Outbox) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 8];
        let k = out.slices(&mut iov);
        iov[..k].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn segments_go_out_in_order_across_partial_sends() {
        let mut out = Outbox::default();
        let shared: Segment = Arc::from(&b"hello\n"[..]);
        out.push(Arc::clone(&shared));
        out.push(Arc::from(&b""[..]));
        out.push(Arc::from(&b"world\n"[..]));
        assert_eq!(out.len(), 12);
        assert_eq!(out.single(), None);
        assert_eq!(collect(&out), b"hello\nworld\n");
        out.consume(3);
        assert_eq!((out.len(), collect(&out)), (9, b"lo\nworld\n".to_vec()));
        out.consume(3);
        assert_eq!((out.len(), collect(&out)), (6, b"world\n".to_vec()));
        out.consume(2);
        assert_eq!(out.single(), Some(&b"rld\n"[..]));
        out.push(Arc::from(&b"!"[..]));
        assert_eq!(out.single(), None);
        assert_eq!(collect(&out), b"rld\n!");
        out.consume(4);
        out.consume(1);
        assert!(out.is_empty());
        assert_eq!(collect(&out), b"");
    }

    #[test]
    fn the_rest_of_a_direct_send_is_kept() {
        let mut out = Outbox::default();
        out.push_rest(Arc::from(&b"abcdef"[..]), 6);
        assert!(out.is_empty(), "all went out");
        out.push_rest(Arc::from(&b"abcdef"[..]), 2);
        assert_eq!((out.len(), out.single()), (4, Some(&b"cdef"[..])));
        out.push(Arc::from(&b"gh"[..]));
        assert_eq!(collect(&out), b"cdefgh");
    }

    #[test]
    fn a_segment_is_stored_once_however_many_queue_it() {
        let seg: Segment = Arc::from(vec![7u8; 1000]);
        let mut boxes: Vec<Outbox> = (0..100).map(|_| Outbox::default()).collect();
        for b in &mut boxes {
            b.push(Arc::clone(&seg));
        }
        assert_eq!(Arc::strong_count(&seg), 101);
        assert!(boxes.iter().all(|b| b.len() == 1000));
        boxes[0].consume(1000);
        assert_eq!(Arc::strong_count(&seg), 100);
        boxes.truncate(1);
        assert_eq!(Arc::strong_count(&seg), 1);
    }

    #[test]
    fn slices_stop_at_the_iovec_limit() {
        let mut out = Outbox::default();
        for i in 0..10u8 {
            out.push(Arc::from(vec![i; 2]));
        }
        assert_eq!(out.slices(&mut [IoSlice::new(&[]); 4]), 4);
        out.consume(7);
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(out.slices(&mut iov), 4);
        assert_eq!(&*iov[0], &[3u8][..]);
        assert_eq!(out.len(), 13);
    }
}
