//! Chat delivery: mail posted by members goes to every other member of the room, and the members
//! it reached are flushed once per turn.
//!
//! Writing to another connection's output is this one operation, with one rule: the bytes go
//! behind what is pending for that member, and if they would take its undelivered output past
//! the cap, the member is first flushed (it may only have been waiting for the end of the turn)
//! and, if that does not make room, cut off as a slow member. The sender and the other members go
//! on at full speed; nothing ever waits for the slowest.
//!
//! Mail is delivered at the end of the turn, so what several senders post in one turn reaches
//! each member in one vectored write. The turn's last mail goes straight to the sockets of the
//! members that owe nothing (one `send` each, nothing queued): with one sender, the common case,
//! a member costs one touch and one syscall per turn.

use std::sync::Arc;

use super::peers::Relayed;
use super::Reactor;
use crate::behaviour::chat::history::Event;
use crate::behaviour::chat::{ChatCtx, Mail, Renderings};
use crate::behaviour::{CloseReason, Conn, Ctx, Outcome};

impl Reactor {
    /// Whether chat mail or member output waits for [`Reactor::flush_chat`].
    #[inline]
    pub(super) fn chat_owed(&self) -> bool {
        !self.ctx.chat.mail.is_empty() || !self.ctx.chat.dirty.is_empty()
    }

    /// Delivers all mail, then flushes every member it reached, until nothing is left (closing a
    /// member can post a notice, and a flush can close a member).
    #[inline(never)]
    pub(super) fn flush_chat(&mut self) {
        while self.chat_owed() {
            self.deliver_mail();
            let dirty = std::mem::take(&mut self.ctx.chat.dirty);
            for &key in &dirty {
                let Some(member) = self.conns.get_mut(key).and_then(Conn::member_mut) else {
                    continue;
                };
                member.unlist();
                if member.is_closed() {
                    continue;
                }
                let outcome = member.flush(&mut self.ctx.stats, self.ctx.tick);
                self.apply(key, outcome);
            }
            // Keep the list's storage for the next turn.
            let mut dirty = dirty;
            dirty.clear();
            if self.ctx.chat.dirty.is_empty() {
                self.ctx.chat.dirty = dirty;
            }
        }
    }

    /// Queues each posted mail, in order, to every member of its room but the sender; mail posted
    /// here goes to the other reactors too (their members deliver it the same way).
    fn deliver_mail(&mut self) {
        let mut cut = Vec::new();
        let mut relay = Vec::new();
        while let Some(mail) = self.ctx.chat.mail.pop_front() {
            if self.peers.is_some() && mail.from != REMOTE {
                relay.push(Relayed {
                    room: mail.room,
                    post: Arc::clone(&mail.post),
                    lines: mail.lines,
                });
            }
            let Ctx { chat, stats, cap, tick, .. } = &mut self.ctx;
            let last = chat.mail.is_empty();
            if let Some(delivered) = chat.delivered.get_mut(mail.room) {
                *delivered = (*delivered).max(mail.post.last());
            }
            let ChatCtx { rooms, dirty, .. } = chat;
            let reconnected = mail.post.event == Some(Event::Reconnected);
            let mut post = Renderings::new(&mail.post);
            for &key in &rooms[mail.room].members {
                if key == mail.from {
                    continue;
                }
                let Some(member) = self.conns.get_mut(key).and_then(Conn::member_mut) else {
                    continue;
                };
                if reconnected && member.holds(mail.post.name.as_deref(), mail.from) {
                    // The old connection of a client that came back with its token: it goes,
                    // and its name stays with the new one.
                    cut.push((key, CloseReason::Replaced));
                    continue;
                }
                if last && member.can_send_now() {
                    match member.send_now(&mut post, stats, *tick) {
                        Ok(()) => stats.chat_deliveries += mail.lines,
                        Err(reason) => cut.push((key, reason)),
                    }
                    continue;
                }
                if !member.deliver(&mut post, *cap, dirty) {
                    // Over the cap with this turn's output still unsent: send what it takes.
                    if let Outcome::Close(reason) = member.flush(stats, *tick) {
                        cut.push((key, reason));
                        continue;
                    }
                    if !member.deliver(&mut post, *cap, dirty) {
                        cut.push((key, CloseReason::Slow));
                        continue;
                    }
                }
                stats.chat_deliveries += mail.lines;
            }
            // Closing posts `* NAME left` notices behind the mail still queued.
            for (key, reason) in cut.drain(..) {
                if reason == CloseReason::Replaced {
                    if let Some(member) = self.conns.get_mut(key).and_then(Conn::member_mut) {
                        member.surrender(&mut self.ctx.chat);
                    }
                }
                self.close(key, reason);
            }
        }
        if let (Some(peers), false) = (&self.peers, relay.is_empty()) {
            peers.relay(self.index, &relay);
        }
    }

    /// Chat mail relayed from the other reactors: delivered to this reactor's members at the end
    /// of this turn, in the order each sender posted it.
    #[inline(never)]
    pub(super) fn adopt_relayed(&mut self) {
        let Some(peers) = &self.peers else { return };
        for r in peers.take_relayed(self.index) {
            self.ctx.chat.mail.push_back(Mail {
                from: REMOTE,
                room: r.room,
                post: r.post,
                lines: r.lines,
            });
        }
    }
}

/// The sender of mail relayed from another reactor: no member here.
const REMOTE: usize = usize::MAX;
