//! TLS over an accepted socket (rustls), in the reactor's edge-triggered discipline: records are
//! read until the socket would block, decrypted into the caller's buffer, and records are
//! written until the socket refuses or nothing is left. rustls's own mio example re-registers
//! interest on every event; we never do: a refused write waits for the writable edge that is
//! sure to follow, and the reactor hands that edge to [`Tls::on_writable_edge`].
//!
//! - `recv` fills the buffer as far as the socket's records allow, so a short read still means
//!   "drained" to the behaviour above — except right after the peer's end of stream, which
//!   [`Transport::short_read_drains`] reports.
//! - `send` encrypts into rustls's buffer (bounded by `limit`, which the behaviour's cap leaves
//!   room for: [`Transport::reserve`]) and writes the records out; it returns a partial count
//!   only when the socket refused bytes.
//! - The client's `close_notify` (or a TCP FIN without one) reads as end of stream; our close
//!   sends `close_notify`, then FIN.
//! - A handshake error (plain bytes, no shared cipher) sends rustls's alert and reads as a reset;
//!   [`Tls::failed`] tells the reactor to count it as a TLS failure.

use std::io::{IoSlice, Write};
use std::sync::Arc;

use libc::{EAGAIN, EIO};
use rustls::{HandshakeKind, ServerConfig, ServerConnection};

use super::{Plain, Transport};
use crate::stats::Stats;
use crate::sys::Errno;
use crate::tls_records;

/// A TLS session on a socket.
pub(crate) struct Tls {
    inner: Plain,
    conn: ServerConnection,
    /// Bytes of TLS records rustls may hold unsent.
    limit: usize,
    /// Ciphertext read but not yet taken by rustls, and the peer's end of stream.
    inbound: tls_records::Inbound,
    /// The session failed (a bad handshake, a corrupt record).
    failed: bool,
    /// The handshake completed (counted once).
    established: bool,
    /// Counted into the stats by the reactor.
    happened: Happened,
}

#[derive(Debug, Default, Clone, Copy)]
struct Happened {
    handshake: bool,
    resumed: bool,
    failure: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("eof", &self.inbound.eof)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Tls {
    /// A server session on `inner`; `limit` bounds the TLS records held unsent. `inner` back if
    /// rustls could not make one.
    pub(crate) fn new(
        inner: Plain,
        config: Arc<ServerConfig>,
        limit: usize,
    ) -> Result<Self, Plain> {
        let Ok(mut conn) = ServerConnection::new(config) else { return Err(inner) };
        let limit = limit.max(1);
        conn.set_buffer_limit(Some(limit));
        Ok(Tls {
            inner,
            conn,
            limit,
            inbound: tls_records::Inbound::default(),
            failed: false,
            established: false,
            happened: Happened::default(),
        })
    }

    /// Whether the session failed (a handshake error): the reactor counts it, not as a reset.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// The handshake did not finish in time.
    pub(crate) fn time_out(&mut self) {
        if !self.failed {
            self.failed = true;
            self.happened.failure = true;
        }
    }

    /// Adds what happened since the last call to the counters.
    pub(crate) fn count(&mut self, stats: &mut Stats) {
        let h = std::mem::take(&mut self.happened);
        stats.tls_handshakes += h.handshake as u64;
        stats.tls_resumed += h.resumed as u64;
        stats.tls_failures += h.failure as u64;
    }

    /// Writes TLS records until none is left (true) or the socket refuses (false).
    fn write_records(&mut self) -> Result<bool, Errno> {
        tls_records::write_records(&mut self.conn, self.inner.fd)
    }

    /// Notes a completed handshake, once (and whether it resumed a session).
    fn note_handshake(&mut self) {
        if !self.established && !self.conn.is_handshaking() {
            self.established = true;
            self.happened.handshake = true;
            self.happened.resumed = self.conn.handshake_kind() == Some(HandshakeKind::Resumed);
        }
    }

    /// A writable edge: write the records the socket refused before.
    pub(crate) fn on_writable_edge(&mut self) -> Result<(), Errno> {
        self.write_records().map(|_| ())
    }

    /// Encrypts as much of `parts` as the buffer limit allows, writing records out as it goes;
    /// stops when the socket refuses.
    ///
    /// Nothing is taken during the handshake: rustls would buffer the plaintext (up to its
    /// limit, then take nothing while the loop below waited for it), where the behaviour's own
    /// queue holds it under the behaviour's cap.
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        if self.failed {
            return Err(libc::ECONNRESET);
        }
        if self.conn.is_handshaking() {
            return Err(EAGAIN);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut taken = 0;
        'parts: for part in parts {
            let mut at = 0;
            while at < part.len() {
                let n = self
                    .conn
                    .writer()
                    .write(&part[at..])
                    .map_err(|e| e.raw_os_error().unwrap_or(EIO))?;
                at += n;
                taken += n;
                if !self.write_records()? {
                    break 'parts; // the socket refused: a writable edge will follow
                }
                if n == 0 {
                    // Records all written yet nothing taken: cannot happen after the handshake
                    // (the limit applies to unsent records), but never loop on it.
                    break 'parts;
                }
            }
        }
        if taken == 0 && total > 0 {
            return Err(EAGAIN);
        }
        Ok(taken)
    }
}

impl Transport for Tls {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.failed {
            return Err(libc::ECONNRESET);
        }
        let result = tls_records::read_plain(&mut self.conn, self.inner.fd, buf, &mut self.inbound);
        self.note_handshake();
        match result {
            Err(tls_records::TLS_FAILED) => {
                self.failed = true;
                self.happened.failure = !self.established;
                Err(libc::ECONNRESET)
            }
            // The client's end of stream before the handshake's: it gave up (a client that
            // rejects our certificate and closes without an alert, as rustls's does). Nothing
            // can follow, and a behaviour that waits for the handshake before it writes or
            // closes would wait for the handshake timeout: a failed handshake, now.
            Ok(0) if !self.established => {
                self.failed = true;
                self.happened.failure = true;
                Err(libc::ECONNRESET)
            }
            other => other,
        }
    }

    write_by_parts!(write_parts);

    fn shutdown_write(&mut self) {
        if !self.failed {
            self.conn.send_close_notify();
            let _ = self.write_records();
        }
        self.inner.shutdown_write();
    }

    fn has_buffered(&self) -> bool {
        self.conn.wants_write()
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking() && !self.failed
    }

    fn short_read_drains(&self) -> bool {
        !self.inbound.eof
    }

    fn reserve(&self) -> usize {
        self.limit
    }

    fn unacked(&self) -> usize {
        self.inner.unacked()
    }

    fn reset_on_close(&mut self) {
        self.inner.reset_on_close();
    }

    fn note_read_closed(&mut self) {
        self.inbound.end_reported = true;
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}
