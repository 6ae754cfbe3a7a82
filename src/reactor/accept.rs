//! Listeners: serving their readiness (accept batches, UDP echo), admitting connections, and
//! closing listeners for a drain.

use std::io;
use std::time::Instant;

use mio::{Interest, Token};

use super::{Reactor, CONN_BASE, LISTENER_BASE};
use crate::connection::{Connection, Stream};
use crate::listener::{self, AcceptBackoff, SocketFile};
use crate::udp::UdpEcho;

/// A listening socket, or the one UDP socket of a UDP listen address.
#[derive(Debug)]
pub(super) enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener, SocketFile),
    Udp(UdpEcho),
}

impl Listener {
    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l, _) => l,
            Listener::Udp(u) => &mut u.socket,
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Udp(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

impl Reactor {
    pub(super) fn serve_listener(&mut self, index: usize, writable: bool, now: Instant) {
        match self.listeners.get_mut(index) {
            Some(Some(Listener::Udp(udp))) => {
                let batch = self.udp_batch.as_mut().expect("a UDP listener has its batch");
                if writable {
                    udp.flush(&mut self.ctx.stats);
                }
                if udp.on_readable(batch, &mut self.ctx.stats) {
                    self.ready.push_back(Token(LISTENER_BASE + index));
                }
            }
            Some(Some(_)) => self.accept_from(index, now),
            _ => {} // closed for the drain
        }
    }

    pub(super) fn accept_from(&mut self, index: usize, now: Instant) {
        if self.backoff.paused(now) {
            return; // retried for every listener when the pause ends
        }
        for _ in 0..self.config.accept_batch {
            let Some(Some(listener)) = self.listeners.get(index) else { return };
            match listener.accept() {
                Ok(stream) => {
                    self.backoff.succeed();
                    self.admit(stream, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if listener::is_per_connection(&e) => {}
                Err(e) => {
                    self.ctx.stats.accept_errors += 1;
                    let pause = self.backoff.fail(Instant::now());
                    if self.config.log_stderr && pause == AcceptBackoff::FIRST {
                        eprintln!(
                            "ricochet: accept failed ({e}); pausing accepts, retrying with backoff"
                        );
                    }
                    return;
                }
            }
        }
        // The batch cap was reached: more may be waiting, and no new edge will say so.
        self.ready.push_back(Token(LISTENER_BASE + index));
    }

    fn admit(&mut self, stream: Stream, now: Instant) {
        if self.config.max_conns.is_some_and(|max| self.conns.len() >= max) {
            self.ctx.stats.rejected += 1;
            stream.shutdown_write();
            return; // dropped: closed at once
        }
        listener::configure_accepted(&stream, &self.config);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Connection::new(stream, self.next_id, now);
        self.next_id += 1;
        let registered = self.poll.registry().register(
            conn.stream.source(),
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.ctx.stats.accept_errors += 1;
            return;
        }
        entry.insert(conn);
        self.ctx.stats.accepted += 1;
        self.ctx.stats.active += 1;
        if let Some(idle) = self.config.idle_timeout {
            self.arm(key, now + idle);
        }
    }

    pub(super) fn close_listeners(&mut self) {
        for slot in &mut self.listeners {
            if let Some(mut listener) = slot.take() {
                let _ = self.poll.registry().deregister(listener.source());
                if let Listener::Unix(_, file) = &listener {
                    file.remove();
                }
            }
        }
    }
}
