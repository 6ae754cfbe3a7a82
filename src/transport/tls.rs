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

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use libc::{EAGAIN, EINTR, EIO};
use rustls::{HandshakeKind, ServerConfig, ServerConnection};

use super::{Plain, Transport};
use crate::stats::Stats;
use crate::sys::{self, Errno};

/// A TLS session on a socket.
pub(crate) struct Tls {
    inner: Plain,
    conn: ServerConnection,
    /// Bytes of TLS records rustls may hold unsent.
    limit: usize,
    /// The peer's end of stream was read (close_notify or FIN): recv returns 0 from now on.
    eof: bool,
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
            .field("eof", &self.eof)
            .field("failed", &self.failed)
            .finish()
    }
}

/// The socket as `io::Read`/`io::Write` for rustls, through the raw syscalls.
struct Fd(i32);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf).map_err(io::Error::from_raw_os_error)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf).map_err(io::Error::from_raw_os_error)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::send_vectored(self.0, bufs).map_err(io::Error::from_raw_os_error)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn errno(e: &io::Error) -> Errno {
    e.raw_os_error().unwrap_or(EIO)
}

impl Tls {
    /// A server session on `inner`; `limit` bounds the TLS records held unsent.
    pub(crate) fn new(inner: Plain, config: Arc<ServerConfig>, limit: usize) -> io::Result<Self> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let limit = limit.max(1);
        conn.set_buffer_limit(Some(limit));
        Ok(Tls {
            inner,
            conn,
            limit,
            eof: false,
            failed: false,
            established: false,
            happened: Happened::default(),
        })
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking() && !self.failed
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
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Fd(self.inner.fd)) {
                Ok(_) => {}
                Err(e) if errno(&e) == EAGAIN => return Ok(false),
                Err(e) if errno(&e) == EINTR => {}
                Err(e) => return Err(errno(&e)),
            }
        }
        Ok(true)
    }

    /// Reads what the socket has into the session and processes it; false once the socket is
    /// drained (would block).
    fn read_records(&mut self) -> Result<bool, Errno> {
        loop {
            match self.conn.read_tls(&mut Fd(self.inner.fd)) {
                Ok(0) => {
                    // TCP FIN. Whatever it left unsaid reads as end of stream (unclean, or after
                    // close_notify); what was already decrypted is still delivered first.
                    self.eof = true;
                    break;
                }
                Ok(_) => break,
                Err(e) if errno(&e) == EAGAIN => return Ok(false),
                Err(e) if errno(&e) == EINTR => {}
                Err(e) if e.kind() == io::ErrorKind::Other => break, // plaintext buffer full
                Err(e) => return Err(errno(&e)),
            }
        }
        match self.conn.process_new_packets() {
            Ok(state) => {
                if state.peer_has_closed() {
                    self.eof = true;
                }
            }
            Err(_) => {
                // rustls queued an alert for the peer: send it, then the session is over.
                self.failed = true;
                self.happened.failure = !self.established;
                let _ = self.write_records();
                return Err(libc::ECONNRESET);
            }
        }
        if !self.established && !self.conn.is_handshaking() {
            self.established = true;
            self.happened.handshake = true;
            self.happened.resumed = self.conn.handshake_kind() == Some(HandshakeKind::Resumed);
        }
        // Handshake messages (and key updates) go out as soon as they exist.
        self.write_records()?;
        Ok(true)
    }

    /// A writable edge: write the records the socket refused before.
    pub(crate) fn on_writable_edge(&mut self) -> Result<(), Errno> {
        self.write_records().map(|_| ())
    }

    /// Encrypts as much of `parts` as the buffer limit allows, writing records out as it goes;
    /// stops when the socket refuses.
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        if self.failed {
            return Err(libc::ECONNRESET);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut taken = 0;
        'parts: for part in parts {
            let mut at = 0;
            while at < part.len() {
                let n = self.conn.writer().write(&part[at..]).map_err(|e| errno(&e))?;
                at += n;
                taken += n;
                if !self.write_records()? {
                    break 'parts; // the socket refused: a writable edge will follow
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
        let mut filled = 0;
        loop {
            while filled < buf.len() {
                match self.conn.reader().read(&mut buf[filled..]) {
                    Ok(0) => {
                        self.eof = true; // close_notify
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A FIN without close_notify: the end, as far as the echo is concerned.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.eof = true;
                        break;
                    }
                    Err(e) => return Err(errno(&e)),
                }
            }
            if filled == buf.len() || self.eof {
                return Ok(filled);
            }
            if !self.read_records()? {
                return if filled > 0 { Ok(filled) } else { Err(EAGAIN) };
            }
        }
    }

    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        self.write_parts(&[buf])
    }

    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        self.write_parts(&[first, second])
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        let parts: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.write_parts(&parts)
    }

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

    fn short_read_drains(&self) -> bool {
        !self.eof
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

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}
