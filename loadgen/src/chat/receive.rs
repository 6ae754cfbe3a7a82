//! Receiving: each member reads its lines and checks them, per publisher: exactly once, in
//! order, byte for byte, never its own; a line is complete when every other member has it.

use std::io;
use std::time::Duration;

use super::{ChatLoad, Phase, SYNC};
use crate::engine::Engine;
use crate::payload;
use crate::tally::Cause;

impl ChatLoad {
    /// Reads every line waiting for member `m`.
    pub(super) fn on_readable(&mut self, e: &mut Engine, m: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            if self.members[m].phase != Phase::Up {
                break;
            }
            let member = &mut self.members[m];
            let read = member.wire.read(member.socket.fd(), &mut scratch);
            // The end came with the data: read again rather than wait for an edge.
            member.read_closed |= member.wire.saw_end();
            let n = match read {
                Ok(0) => {
                    self.kill(e, m, Cause::ClosedByServer);
                    break;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.kill(e, m, Cause::of(&err));
                    break;
                }
            };
            let at = e.tally.now_ns(); // when this member read it
            let mut data = &scratch[..n];
            let mut carry = std::mem::take(&mut self.members[m].carry);
            if !carry.is_empty() {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        carry.extend_from_slice(&data[..i]);
                        self.line(e, m, &carry, at);
                        carry.clear();
                        data = &data[i + 1..];
                    }
                    None => {
                        carry.extend_from_slice(data);
                        data = &[];
                    }
                }
            }
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', data) {
                self.line(e, m, &data[start..end], at);
                start = end + 1;
            }
            data = &data[start..];
            carry.extend_from_slice(data);
            if carry.len() > e.plan.size {
                // No line of this run is that long: what came is not what was sent.
                e.tally.mismatches += 1;
                carry.clear();
            }
            self.members[m].carry = carry;
            if n < scratch.len() && !self.members[m].read_closed {
                break; // a short read: the receive queue is empty (epoll(7))
            }
        }
        self.scratch = scratch;
    }

    /// One line received by member `m` (without its `\n`) at `at` ns.
    fn line(&mut self, e: &mut Engine, m: usize, line: &[u8], at: u64) {
        if line == SYNC {
            self.members[m].synced = true;
            return;
        }
        let member = &mut self.members[m];
        let Some((p, seq)) = payload::line_header(line) else {
            e.tally.mismatches += 1; // not a line of this run
            return;
        };
        let p = p as usize;
        if p >= self.pubs.len() || member.publisher == Some(p) {
            e.tally.mismatches += 1; // a publisher that does not exist, or its own line back
            return;
        }
        let expected = member.next[p];
        if seq != expected {
            // Lines skipped that had already timed out were counted lost: not counted again.
            // Any other gap (lines missing or reordered), or a duplicate, is a mismatch.
            let skipped_expired = seq > expected && seq <= self.pubs[p].base;
            if !skipped_expired {
                e.tally.mismatches += 1;
                if seq < expected {
                    return; // a duplicate
                }
            }
            member.next[p] = seq;
            return self.line(e, m, line, at);
        }
        member.next[p] = seq + 1;
        if payload::check_line(line, e.plan.size, &mut self.check) != Some((p as u32, seq)) {
            e.tally.mismatches += 1; // the right header on corrupted bytes
            return;
        }
        let publisher = &mut self.pubs[p];
        let Some(index) = seq.checked_sub(publisher.base) else {
            return; // it had already timed out (counted lost)
        };
        let Some(sent) = publisher.lines.get_mut(index as usize) else { return };
        sent.remaining -= 1;
        if sent.record {
            e.tally.delivery(at.saturating_sub(sent.start));
        }
        if index == 0 && sent.remaining == 0 {
            self.complete(e, p, at);
        }
    }

    /// Pops the lines at the front of publisher `p` that every member has, and publishes as many
    /// new ones (closed loop).
    fn complete(&mut self, e: &mut Engine, p: usize, at: u64) {
        let publisher = &mut self.pubs[p];
        let mut freed = 0;
        while publisher.lines.front().is_some_and(|l| l.remaining == 0) {
            let line = publisher.lines.pop_front().expect("checked");
            publisher.base += 1;
            freed += 1;
            if line.record {
                e.tally.messages += 1;
                e.tally.last_completion = Some(at);
            }
        }
        if freed > 0 && self.schedule.is_none() {
            let now = e.tally.base + Duration::from_nanos(at);
            self.publish(e, p, now, freed);
        }
    }
}
