//! Publishing: lines issued by the publishers (closed loop: `depth` in flight each; open loop:
//! the schedule's lines round-robin over the publishers with room), queued per member and written
//! once per turn, each line starting when the write that takes its first byte happens.

use std::time::Instant;

use super::{ChatLoad, Line, Phase, MAX_QUEUED};
use crate::engine::Engine;
use crate::payload;
use crate::tally::Cause;

impl ChatLoad {
    /// Closed loop: publishes up to `n` lines from publisher `p`.
    pub(super) fn publish(&mut self, e: &mut Engine, p: usize, now: Instant, n: usize) {
        if self.members[self.pubs[p].member].phase != Phase::Up {
            return;
        }
        for _ in 0..n {
            if !e.may_issue(now) {
                return;
            }
            let (record, 1) = e.admit(now, 1) else { return };
            // The turn's time until the write stamps it (the timeout needs a time meanwhile).
            let at = e.tally.ns(now);
            if self.issue(e, p, Line { start: at, sent: at, remaining: self.receivers, record }) {
                self.pubs[p].unstamped += 1;
            }
        }
    }

    /// Open loop: hands every line that came due to the next publisher with room.
    pub(super) fn issue_due(&mut self, e: &mut Engine, now: Instant) {
        while e.may_issue(now) {
            let Some(schedule) = &self.schedule else { return };
            if schedule.next_due() > now {
                return;
            }
            let Some(p) =
                (0..self.pubs.len()).map(|k| (self.turn + k) % self.pubs.len()).find(|&p| {
                    let m = &self.members[self.pubs[p].member];
                    m.phase == Phase::Up && m.out.len() - m.written < MAX_QUEUED
                })
            else {
                return; // every publisher is backed up: the line waits, its latency runs
            };
            self.turn = p + 1;
            let Some(schedule) = &mut self.schedule else { return };
            let Some((_, intended)) = schedule.take_due(now) else { return };
            let (record, 1) = e.admit(now, 1) else { return };
            let line = Line {
                start: e.tally.ns(intended),
                sent: e.tally.ns(now),
                remaining: self.receivers,
                record,
            };
            self.issue(e, p, line);
        }
    }

    /// Queues `line` on publisher `p`'s connection; false if it is not up.
    fn issue(&mut self, e: &mut Engine, p: usize, line: Line) -> bool {
        let publisher = &mut self.pubs[p];
        let m = publisher.member;
        if self.members[m].phase != Phase::Up {
            return false;
        }
        let seq = publisher.base + publisher.lines.len() as u64;
        publisher.lines.push_back(line);
        let out = &mut self.members[m].out;
        let from = out.len();
        out.resize(from + e.plan.size, 0);
        payload::fill_line(&mut out[from..], p as u32, seq);
        self.mark(m);
        true
    }

    pub(super) fn flush_dirty(&mut self, e: &mut Engine) {
        let pending = self.pending.take();
        for &m in &pending {
            if !self.members[m].write_blocked {
                self.flush(e, m);
            }
        }
        self.pending.give_back(pending);
    }

    /// Writes member `m`'s queued lines, in one syscall unless the socket is full.
    pub(super) fn flush(&mut self, e: &mut Engine, m: usize) {
        let member = &mut self.members[m];
        if member.phase != Phase::Up || member.written == member.out.len() {
            return;
        }
        let publisher = member.publisher.filter(|&p| self.pubs[p].unstamped > 0);
        let now = if publisher.is_some() { e.tally.now_ns() } else { 0 };
        let result = member.wire.write(member.socket.fd(), &member.out[member.written..]);
        if let (Some(p), Ok((n @ 1.., _))) = (publisher, &result) {
            // The lines whose first byte went out start now; the rest when their bytes go.
            let publisher = &mut self.pubs[p];
            let unstamped = publisher.unstamped.min(publisher.lines.len());
            let went = went_out(member.out.len(), member.written + n, unstamped, e.plan.size);
            let first = publisher.lines.len() - unstamped;
            for line in publisher.lines.range_mut(first..first + went) {
                (line.start, line.sent) = (now, now);
            }
            publisher.unstamped = unstamped - went;
        }
        match result {
            Ok((n, blocked)) => {
                member.written += n;
                member.write_blocked = blocked;
                if member.written == member.out.len() {
                    member.out.clear();
                    member.written = 0;
                }
            }
            Err(err) => self.kill(e, m, Cause::of(&err)),
        }
    }
}

/// Of the newest `unstamped` lines of `size` bytes at the end of `out_len` queued bytes, how many
/// have their first byte among the first `written` bytes (the oldest of them first).
fn went_out(out_len: usize, written: usize, unstamped: usize, size: usize) -> usize {
    let first = out_len.saturating_sub(unstamped * size);
    match written > first {
        true => (written - first).div_ceil(size).min(unstamped),
        false => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::went_out;

    /// A partial write starts exactly the lines whose first byte it took (chat once stamped
    /// every waiting line at any write that took a byte).
    #[test]
    fn a_partial_write_starts_only_the_lines_it_began() {
        // 100 bytes queued: 20 already stamped, then 4 unstamped lines of 20 bytes.
        assert_eq!(went_out(100, 20, 4, 20), 0, "nothing of the unstamped lines went");
        assert_eq!(went_out(100, 21, 4, 20), 1, "one byte of the first");
        assert_eq!(went_out(100, 40, 4, 20), 1, "the first whole, not a byte of the second");
        assert_eq!(went_out(100, 41, 4, 20), 2);
        assert_eq!(went_out(100, 100, 4, 20), 4, "everything");
        assert_eq!(went_out(80, 80, 4, 20), 4, "only unstamped lines queued");
        assert_eq!(went_out(80, 0, 4, 20), 0);
    }
}
