//! TLS over an accepted socket: rustls's unbuffered API through the handshake, then, for TLS 1.3,
//! the records protected here with the secrets it negotiated ([`super::tls13`]); a TLS 1.2
//! session stays with rustls throughout. The connection owns no buffer while it is idle. Records are read into a per-thread scratch buffer and decrypted there, and our
//! records are encrypted into another and written from it; a connection keeps bytes of its own
//! only while they cannot move on — the start of a record that has not all arrived, plaintext
//! the caller's buffer had no room for, records the socket refused — and frees them as soon as
//! they do. (rustls's buffered connection keeps ≈ 6.6 KB of buffers per connection, idle or not.)
//!
//! The reactor's edge-triggered discipline holds: records are read until the socket would
//! block, and written until the socket refuses or nothing is left. A refused write waits for the
//! writable edge that is sure to follow, which the reactor hands to [`Tls::on_writable_edge`].
//!
//! - `recv` fills the buffer as far as the socket's records allow, so a short read still means
//!   "drained" to the behaviour above — except right after the peer's end of stream, which
//!   [`Transport::short_read_drains`] reports.
//! - `send` encrypts at most `limit` bytes at a time and writes the records out; it returns a
//!   partial count only when the socket refused records (then held, [`Transport::has_buffered`]).
//! - The client's `close_notify` (or a TCP FIN without one) reads as end of stream; our close
//!   sends `close_notify`, then FIN.
//! - A handshake error (plain bytes, no shared cipher) sends rustls's alert and reads as a reset;
//!   [`Tls::failed`] tells the reactor to count it as a TLS failure.
//!
//! Copies: a TLS 1.3 record is decrypted in place in the scratch buffer and copied once, into the
//! caller's buffer; our records are copied once from the caller's parts into the scratch buffer
//! (several parts into one record) and encrypted there. Under rustls (the handshake, TLS 1.2)
//! the plaintext takes one more copy, into a `Vec` of rustls's own.

use std::cell::RefCell;
use std::io::IoSlice;
use std::sync::Arc;

use libc::{EAGAIN, EINTR};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};

use super::tls13::{self, Alert, Opened, Records};
use super::{Plain, Transport};
use crate::stats::Stats;
use crate::sys::{self, Errno};

/// Bytes read from the socket per `recv`, and the size of the encryption scratch buffer.
const GULP: usize = 64 * 1024;

thread_local! {
    /// Where records are read and decrypted.
    static INBOX: RefCell<crate::buffer::Aligned> = RefCell::new(crate::buffer::Aligned::zeroed(GULP));
    /// Where records are encrypted before they are written.
    static OUTBOX: RefCell<crate::buffer::Aligned> = RefCell::new(crate::buffer::Aligned::zeroed(GULP));
}

/// A TLS session on a socket.
pub(crate) struct Tls {
    inner: Plain,
    session: Session,
    /// Bytes of plaintext encrypted at a time (so at most this much, plus record overhead, is
    /// held when the socket refuses).
    limit: usize,
    held: Held,
    /// The session failed (a bad handshake, a corrupt record).
    failed: bool,
    /// The handshake completed (counted once).
    established: bool,
    /// Counted into the stats by the reactor.
    happened: Happened,
}

/// Who protects the records.
enum Session {
    /// rustls: through the handshake, and a TLS 1.2 session throughout.
    Rustls(Box<UnbufferedServerConnection>),
    /// An established TLS 1.3 session's records, protected here.
    Records(Box<Records>),
    /// Neither: the session failed as it changed hands.
    Gone,
}

/// What a connection keeps between calls (each empty, without an allocation, while idle), and
/// where its input stands.
#[derive(Debug, Default)]
struct Held {
    /// Ciphertext read but not processed yet: the start of a record, or records after the ones
    /// that filled the caller's buffer.
    input: Vec<u8>,
    /// Plaintext decrypted that the caller's buffer had no room for.
    plain: Vec<u8>,
    /// Records ready that the socket has not taken yet.
    output: Vec<u8>,
    /// The peer's end of stream: `recv` returns 0 once what came before it is read.
    eof: bool,
    /// The poll reported the peer's end: a short read is not the socket drained (the end may
    /// wait behind it, and no new edge would announce it), so read on until it shows.
    end_reported: bool,
}

impl Held {
    /// Writes the held records until none is left (true) or the socket refuses (false).
    fn flush(&mut self, fd: std::os::fd::RawFd) -> Result<bool, Errno> {
        let output = &mut self.output;
        if output.is_empty() {
            return Ok(true);
        }
        let mut sent = 0;
        let result = loop {
            if sent == output.len() {
                break Ok(true);
            }
            match sys::send(fd, &output[sent..]) {
                Ok(n) => sent += n,
                Err(EINTR) => {}
                Err(EAGAIN) => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        if sent == output.len() {
            *output = Vec::new(); // an idle connection holds nothing
        } else {
            output.drain(..sent);
        }
        result
    }
}

/// The caller's buffer, filled from the front.
struct Sink<'b> {
    buf: &'b mut [u8],
    filled: usize,
}

impl Sink<'_> {
    fn is_full(&self) -> bool {
        self.filled == self.buf.len()
    }

    /// Copies `payload` in, what does not fit into `overflow`; true if the buffer is full.
    fn deliver(&mut self, payload: &[u8], overflow: &mut Vec<u8>) -> bool {
        let n = payload.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&payload[..n]);
        self.filled += n;
        overflow.extend_from_slice(&payload[n..]);
        self.is_full()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Happened {
    handshake: bool,
    resumed: bool,
    failure: bool,
}

/// Where processing the records read so far stopped.
enum Stop {
    /// Every whole record is processed: read more.
    Drained,
    /// The caller's buffer is full.
    Full,
    /// The peer closed the session (close_notify).
    Closed,
}

/// The session failed; the alert to send, where rustls has not queued its own.
struct Failed(Option<Alert>);

impl From<Alert> for Failed {
    fn from(alert: Alert) -> Failed {
        Failed(Some(alert))
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let session = match &self.session {
            Session::Rustls(conn) if conn.is_handshaking() => "handshake",
            Session::Rustls(_) => "rustls",
            Session::Records(_) => "records",
            Session::Gone => "gone",
        };
        f.debug_struct("Tls")
            .field("session", &session)
            .field("held", &self.held)
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
        let Ok(conn) = UnbufferedServerConnection::new(config) else { return Err(inner) };
        Ok(Tls {
            inner,
            session: Session::Rustls(Box::new(conn)),
            limit: limit.max(1),
            held: Held::default(),
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

    /// What happened since the last count: handshakes, resumed, failures.
    #[cfg(test)]
    fn count_now(&mut self) -> (u64, u64, u64) {
        let mut stats = Stats::default();
        self.count(&mut stats);
        (stats.tls_handshakes, stats.tls_resumed, stats.tls_failures)
    }

    /// Adds what happened since the last call to the counters.
    pub(crate) fn count(&mut self, stats: &mut Stats) {
        let h = std::mem::take(&mut self.happened);
        stats.tls_handshakes += h.handshake as u64;
        stats.tls_resumed += h.resumed as u64;
        stats.tls_failures += h.failure as u64;
    }

    /// A writable edge: write the records the socket refused before.
    pub(crate) fn on_writable_edge(&mut self) -> Result<(), Errno> {
        self.flush().map(|_| ())
    }

    /// Writes the held records until none is left (true) or the socket refuses (false).
    fn flush(&mut self) -> Result<bool, Errno> {
        self.held.flush(self.inner.fd)
    }

    /// Notes a completed handshake, once (and whether it resumed a session).
    fn note_handshake(&mut self) {
        if let Session::Rustls(conn) = &self.session {
            if !self.established && !conn.is_handshaking() {
                self.established = true;
                self.happened.handshake = true;
                self.happened.resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
            }
        }
    }

    /// The session failed: send the alert (rustls's, or `why`'s) if the socket takes it, and from
    /// now on read and write nothing.
    fn fail(&mut self, why: Failed) -> Errno {
        if !self.failed {
            self.failed = true;
            self.happened.failure |= !self.established;
            match &mut self.session {
                Session::Rustls(_) => {
                    let _ = self.settle();
                }
                Session::Records(records) => {
                    if let Some(alert) = why.0 {
                        records.fatal(alert, &mut self.held.output);
                        let _ = self.flush();
                    }
                }
                Session::Gone => {}
            }
        }
        libc::ECONNRESET
    }

    /// Lets rustls encode and write what it has queued with no new input (handshake messages,
    /// session tickets, a key update, an alert).
    fn settle(&mut self) -> Result<Option<()>, Failed> {
        self.settle_then(|_| ())
    }

    /// As [`Tls::settle`], then `write` called on the session once it takes application data;
    /// returns what `write` returned (`None` when it takes none: during the handshake, after a
    /// close, or when the session is not rustls's).
    fn settle_then<R>(
        &mut self,
        write: impl FnOnce(&mut rustls::unbuffered::WriteTraffic<'_, ServerConnectionData>) -> R,
    ) -> Result<Option<R>, Failed> {
        let mut write = Some(write);
        loop {
            let Session::Rustls(conn) = &mut self.session else { return Ok(None) };
            let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
            match state.map_err(|_| Failed(None))? {
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut self.held.output, |out| data.encode(out))?
                }
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    let _ = self.flush();
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    return Ok(write.take().map(|write| write(&mut traffic)));
                }
                ConnectionState::ReadTraffic(mut traffic) => {
                    // Never left behind by `recv`; kept rather than lost if it ever is.
                    while let Some(Ok(record)) = traffic.next_record() {
                        self.held.plain.extend_from_slice(record.payload);
                    }
                }
                _ => return Ok(None),
            }
        }
    }

    /// Processes the records in `input` until the caller's buffer is full or no whole record is
    /// left; returns how many bytes of `input` are done with, and why it stopped. A TLS 1.3
    /// session changes hands here, once its handshake is done and its records all sent.
    fn process(&mut self, input: &mut [u8], sink: &mut Sink<'_>) -> Result<(usize, Stop), Failed> {
        let mut at = 0;
        loop {
            let held = &mut self.held;
            let (done, stop) = match &mut self.session {
                Session::Rustls(conn) => {
                    process_rustls(conn, held, self.inner.fd, &mut input[at..], sink)?
                }
                Session::Records(records) => {
                    let result = open_records(records, held, &mut input[at..], sink);
                    // A reply to a key update.
                    held.flush(self.inner.fd).map_err(|_| Failed(None))?;
                    result?
                }
                Session::Gone => return Err(Failed(None)),
            };
            at += done;
            if matches!(stop, Stop::Drained) && self.take_over()? {
                continue;
            }
            return Ok((at, stop));
        }
    }

    /// Takes a TLS 1.3 session's records over from rustls if its handshake is done and nothing
    /// of rustls's is left to send; true if it did.
    fn take_over(&mut self) -> Result<bool, Failed> {
        let Session::Rustls(conn) = &self.session else { return Ok(false) };
        if conn.is_handshaking()
            || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
            || conn.wants_write()
        {
            return Ok(false);
        }
        self.note_handshake();
        let Session::Rustls(conn) = std::mem::replace(&mut self.session, Session::Gone) else {
            unreachable!("matched above")
        };
        self.session = Session::Records(Box::new(Records::take_over(*conn)?));
        Ok(true)
    }

    /// Reads plaintext into `buf`, as much as the socket's records allow (see the module's
    /// contract). The handshake moves on as records arrive; its replies are written at once.
    fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        let filled = take_front(&mut self.held.plain, buf);
        let mut sink = Sink { buf, filled };
        if sink.is_full() || self.held.eof {
            return Ok(sink.filled);
        }
        INBOX.with(|inbox| {
            let inbox = &mut inbox.borrow_mut()[..];
            // The held input first (it may hold whole records), then the socket's.
            let mut len = self.held.input.len();
            inbox[..len].copy_from_slice(&self.held.input);
            self.held.input = Vec::new();
            let mut fresh = len > 0;
            loop {
                if fresh {
                    let (done, stop) =
                        self.process(&mut inbox[..len], &mut sink).map_err(|e| self.fail(e))?;
                    inbox.copy_within(done..len, 0);
                    len -= done;
                    match stop {
                        Stop::Drained => {}
                        Stop::Full => {
                            self.held.input.extend_from_slice(&inbox[..len]);
                            return Ok(sink.filled);
                        }
                        Stop::Closed => {
                            self.held.eof = true;
                            return Ok(sink.filled);
                        }
                    }
                }
                let room = inbox.len() - len;
                if room == 0 {
                    // A handshake message over our whole buffer: no client sends one.
                    return Err(self.fail(Failed(None)));
                }
                let n = loop {
                    match sys::recv(self.inner.fd, &mut inbox[len..]) {
                        Ok(n) => break n,
                        Err(EINTR) => {}
                        Err(EAGAIN) => {
                            self.held.input.extend_from_slice(&inbox[..len]);
                            return if sink.filled > 0 { Ok(sink.filled) } else { Err(EAGAIN) };
                        }
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 {
                    // The socket's end, with or without close_notify; a partial record before
                    // it is dropped.
                    self.held.eof = true;
                    return Ok(sink.filled);
                }
                len += n;
                fresh = true;
                if n < room && !self.held.end_reported {
                    // A short read: the socket is drained once these records are processed.
                    let (done, stop) =
                        self.process(&mut inbox[..len], &mut sink).map_err(|e| self.fail(e))?;
                    self.held.input.extend_from_slice(&inbox[done..len]);
                    if let Stop::Closed = stop {
                        self.held.eof = true;
                    }
                    return if sink.filled > 0 || self.held.eof {
                        Ok(sink.filled)
                    } else {
                        Err(EAGAIN)
                    };
                }
            }
        })
    }

    /// Encrypts as much of `parts` as the socket takes, `limit` bytes at a time; stops when
    /// the socket refuses (the records it refused are held).
    ///
    /// Nothing is taken during the handshake: the behaviour's own queue holds its output under
    /// its cap until then.
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        if self.failed {
            return Err(libc::ECONNRESET);
        }
        if self.is_handshaking() || !self.flush()? {
            return Err(EAGAIN);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut from = Parts { parts, part: 0, at: 0 };
        let mut taken = 0;
        while taken < total {
            if let Session::Records(records) = &mut self.session {
                if records.update_due() {
                    records
                        .update_if_due(&mut self.held.output)
                        .map_err(|a| self.fail(a.into()))?;
                    if !self.flush()? {
                        break;
                    }
                }
            }
            let limit = self.limit;
            let batch = OUTBOX.with(|outbox| {
                let outbox = &mut outbox.borrow_mut()[..];
                let sealed = match &mut self.session {
                    Session::Records(records) => {
                        Ok(seal_records(records, &mut from, limit, outbox))
                    }
                    Session::Rustls(_) => self.encrypt_rustls(&mut from, limit, outbox),
                    Session::Gone => Err(Failed(None)),
                };
                let (took, encrypted) = sealed.map_err(|e| self.fail(e))?;
                let mut sent = 0;
                while sent < encrypted {
                    match sys::send(self.inner.fd, &outbox[sent..encrypted]) {
                        Ok(n) => sent += n,
                        Err(EINTR) => {}
                        Err(EAGAIN) => break,
                        Err(e) => return Err(e),
                    }
                }
                self.held.output.extend_from_slice(&outbox[sent..encrypted]);
                Ok((took, sent == encrypted))
            });
            let (took, all_sent) = batch?;
            taken += took;
            if !all_sent || took == 0 {
                break; // the socket refused: a writable edge will follow
            }
        }
        if taken == 0 && total > 0 {
            return Err(EAGAIN);
        }
        Ok(taken)
    }

    /// Encrypts up to `limit` bytes of `from` into `outbox` through rustls; returns the
    /// plaintext taken and the records' length.
    fn encrypt_rustls(
        &mut self,
        from: &mut Parts<'_, '_>,
        limit: usize,
        outbox: &mut [u8],
    ) -> Result<(usize, usize), Failed> {
        let mut encrypted = 0;
        let took = self.settle_then(|traffic| -> Result<usize, Failed> {
            let mut took = 0;
            while took < limit {
                let room = plaintext_room(outbox.len() - encrypted).min(limit - took);
                let Some(chunk) = from.next(room) else { break };
                match traffic.encrypt(chunk, &mut outbox[encrypted..]) {
                    Ok(written) => encrypted += written,
                    Err(EncryptError::InsufficientSize(_)) => {
                        unreachable!("plaintext_room leaves room for every record's overhead")
                    }
                    Err(_) => return Err(Failed(None)),
                }
                took += chunk.len();
            }
            Ok(took)
        });
        match took {
            Ok(Some(took)) => Ok((took?, encrypted)),
            Ok(None) => Err(Failed(None)), // closed under us
            Err(failed) => Err(failed),
        }
    }
}

/// The parts of a write, and how far they are taken.
struct Parts<'p, 'b> {
    parts: &'p [&'b [u8]],
    part: usize,
    at: usize,
}

impl<'b> Parts<'_, 'b> {
    /// The next at most `max` bytes of one part (`None` when nothing is left or `max` is 0).
    fn next(&mut self, max: usize) -> Option<&'b [u8]> {
        while self.part < self.parts.len() {
            let part = self.parts[self.part];
            let rest = &part[self.at..];
            if rest.is_empty() {
                (self.part, self.at) = (self.part + 1, 0);
                continue;
            }
            if max == 0 {
                return None;
            }
            let n = rest.len().min(max);
            self.at += n;
            return Some(&rest[..n]);
        }
        None
    }
}

/// Seals up to `limit` bytes of `from` into TLS 1.3 records in `outbox`, as many parts to a
/// record as fit; returns the plaintext taken and the records' length.
fn seal_records(
    records: &mut Records,
    from: &mut Parts<'_, '_>,
    limit: usize,
    outbox: &mut [u8],
) -> (usize, usize) {
    let (mut took, mut sealed) = (0, 0);
    loop {
        let room = (outbox.len() - sealed).saturating_sub(tls13::OVERHEAD);
        let max = room.min(tls13::RECORD).min(limit - took);
        if max == 0 {
            return (took, sealed);
        }
        let body = &mut outbox[sealed + tls13::HEADER..];
        let mut len = 0;
        while let Some(chunk) = from.next(max - len) {
            body[len..len + chunk.len()].copy_from_slice(chunk);
            len += chunk.len();
        }
        if len == 0 {
            return (took, sealed);
        }
        sealed += records.seal_data(len, &mut outbox[sealed..]);
        took += len;
    }
}

/// [`Tls::process`] under rustls.
fn process_rustls(
    conn: &mut UnbufferedServerConnection,
    held: &mut Held,
    fd: std::os::fd::RawFd,
    input: &mut [u8],
    sink: &mut Sink<'_>,
) -> Result<(usize, Stop), Failed> {
    let mut at = 0;
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut input[at..]);
        let stop = match state.map_err(|_| Failed(None))? {
            ConnectionState::ReadTraffic(mut traffic) => {
                let mut full = false;
                while let Some(record) = traffic.next_record() {
                    let payload = record.map_err(|_| Failed(None))?.payload;
                    full = sink.deliver(payload, &mut held.plain);
                }
                full.then_some(Stop::Full)
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode(&mut held.output, |out| data.encode(out))?;
                None
            }
            ConnectionState::TransmitTlsData(data) => {
                data.done();
                // A refused flight waits for the writable edge, held.
                held.flush(fd).map_err(|_| Failed(None))?;
                None
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => Some(Stop::Closed),
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                Some(Stop::Drained)
            }
            // Early data is not enabled; anything new is not understood.
            _ => return Err(Failed(None)),
        };
        at += discard;
        if let Some(stop) = stop {
            return Ok((at, stop));
        }
    }
}

/// Opens the whole records at the start of `input`, moving their data into `sink` (what does
/// not fit into `held.plain`); returns how many bytes of `input` are done with, and why it
/// stopped.
fn open_records(
    records: &mut Records,
    held: &mut Held,
    input: &mut [u8],
    sink: &mut Sink<'_>,
) -> Result<(usize, Stop), Failed> {
    let mut at = 0;
    while let Some(len) = Records::record_len(&input[at..])? {
        let record = &mut input[at..at + len];
        let opened = records.open(record, &mut held.output)?;
        at += len;
        match opened {
            Opened::Data(range) => {
                if sink.deliver(&record[range], &mut held.plain) {
                    return Ok((at, Stop::Full));
                }
            }
            Opened::Closed => return Ok((at, Stop::Closed)),
            Opened::Nothing => {}
        }
    }
    Ok((at, Stop::Drained))
}

/// Encodes one of rustls's own records at the end of `output`, growing it as asked.
fn encode(
    output: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), Failed> {
    let start = output.len();
    let mut want = 4096;
    loop {
        output.resize(start + want, 0);
        match encode(&mut output[start..]) {
            Ok(n) => {
                output.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(e)) if e.required_size > want => {
                want = e.required_size
            }
            Err(_) => {
                output.truncate(start);
                return Err(Failed(None));
            }
        }
    }
}

/// The most plaintext whose rustls records fit in `room` bytes (a record's overhead is at most
/// 29 bytes: TLS 1.2 AES-GCM's header, explicit nonce and tag).
fn plaintext_room(room: usize) -> usize {
    const OVERHEAD: usize = 32;
    let record = tls13::RECORD + OVERHEAD;
    (room / record) * tls13::RECORD + (room % record).saturating_sub(OVERHEAD)
}

/// Moves bytes from the front of `held` into `buf`; returns how many.
fn take_front(held: &mut Vec<u8>, buf: &mut [u8]) -> usize {
    if held.is_empty() {
        return 0;
    }
    let n = held.len().min(buf.len());
    buf[..n].copy_from_slice(&held[..n]);
    if n == held.len() {
        *held = Vec::new();
    } else {
        held.drain(..n);
    }
    n
}

impl Transport for Tls {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.failed {
            return Err(libc::ECONNRESET);
        }
        let result = self.read_plain(buf);
        self.note_handshake();
        match result {
            // The client's end of stream before the handshake's: it gave up (a client that
            // rejects our certificate and closes without an alert, as rustls's does). Nothing
            // can follow, and a behaviour that waits for the handshake before it writes or
            // closes would wait for the handshake timeout: a failed handshake, now.
            Ok(0) if !self.established && !self.failed => {
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
            match &mut self.session {
                Session::Records(records) => records.close_notify(&mut self.held.output),
                Session::Rustls(_) => {
                    OUTBOX.with(|outbox| {
                        let outbox = &mut outbox.borrow_mut()[..];
                        let n = self
                            .settle_then(|traffic| traffic.queue_close_notify(outbox).unwrap_or(0));
                        if let Ok(Some(n)) = n {
                            self.held.output.extend_from_slice(&outbox[..n]);
                        }
                    });
                }
                Session::Gone => {}
            }
            let _ = self.flush();
        }
        self.inner.shutdown_write();
    }

    fn has_buffered(&self) -> bool {
        !self.held.output.is_empty()
    }

    fn is_handshaking(&self) -> bool {
        match &self.session {
            Session::Rustls(conn) => conn.is_handshaking() && !self.failed,
            _ => false,
        }
    }

    fn short_read_drains(&self) -> bool {
        !self.held.eof
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
        self.held.end_reported = true;
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{ErrorKind, Read, Write};
    use std::os::unix::net::UnixStream;

    use crate::certificate::{Identity, TlsSettings};
    use crate::transport::Stream;

    /// Our session on one end of a socket pair and a rustls client on the other, in one
    /// thread; the server's side echoes.
    struct Pair {
        server: Tls,
        client: rustls::ClientConnection,
        sock: UnixStream,
        _identity: Identity,
    }

    fn pair(versions: &[&'static rustls::SupportedProtocolVersion]) -> Pair {
        let identity = Identity::new(&TlsSettings::default()).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let plain = Plain::new(Stream::Unix(mio::net::UnixStream::from_std(ours)));
        let server = Tls::new(plain, identity.config.clone(), 64 * 1024).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&identity.cert_path).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        Pair { server, client, sock: theirs, _identity: identity }
    }

    impl Pair {
        /// Moves records and echoes until nothing moves; returns what the client received, or
        /// the error the client's session ended with.
        fn run(&mut self) -> Result<Vec<u8>, rustls::Error> {
            let mut back = Vec::new();
            loop {
                let mut moved = false;
                while self.client.wants_write() {
                    match self.client.write_tls(&mut self.sock) {
                        Ok(n) => moved |= n > 0,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                let mut buf = [0u8; 4096];
                match self.server.recv(&mut buf) {
                    Ok(n) if n > 0 => {
                        moved = true;
                        let mut at = 0;
                        while at < n {
                            at += self.server.send(&buf[at..n]).expect("the echo's send");
                        }
                    }
                    Ok(_) | Err(EAGAIN) | Err(libc::ECONNRESET) => {}
                    Err(e) => panic!("recv: errno {e}"),
                }
                match self.client.read_tls(&mut self.sock) {
                    Ok(n) if n > 0 => {
                        moved = true;
                        self.client.process_new_packets()?;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                let mut plain = [0u8; 4096];
                loop {
                    match self.client.reader().read(&mut plain) {
                        Ok(n) if n > 0 => back.extend_from_slice(&plain[..n]),
                        _ => break,
                    }
                }
                if !moved {
                    return Ok(back);
                }
            }
        }

        /// Sends `message` and returns what came back.
        fn echo(&mut self, message: &[u8]) -> Vec<u8> {
            let mut back = Vec::new();
            for chunk in message.chunks(16 * 1024) {
                self.client.writer().write_all(chunk).unwrap();
                back.extend(self.run().expect("the client's session"));
            }
            back
        }

        fn records(&self) -> &Records {
            match &self.server.session {
                Session::Records(records) => records,
                other => panic!("not taken over: {:?}", matches!(other, Session::Rustls(_))),
            }
        }
    }

    #[test]
    fn a_tls13_session_changes_hands_and_echoes() {
        let mut pair = pair(&[&rustls::version::TLS13]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        let seqs = pair.records().seqs();
        let big: Vec<u8> = (0..100_000).map(|i| (i * 7 % 251) as u8).collect();
        assert!(pair.echo(&big) == big, "100 kB back, in order");
        assert!(pair.records().seqs().1 > seqs.1);
        assert_eq!(pair.server.count_now(), (1, 0, 0));
    }

    #[test]
    fn a_tls12_session_stays_with_rustls() {
        let mut pair = pair(&[&rustls::version::TLS12]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        assert!(matches!(pair.server.session, Session::Rustls(_)));
    }

    /// The client moves its send key on and asks for ours to move too: we answer with our own
    /// KeyUpdate under the old key, then seal under the new one (the client reads it all).
    #[test]
    fn a_key_update_from_the_client_moves_both_keys_on() {
        let mut pair = pair(&[&rustls::version::TLS13]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        for round in 0..3 {
            pair.client.refresh_traffic_keys().unwrap();
            assert_eq!(pair.echo(b"after"), b"after", "round {round}");
            // Our KeyUpdate went under the old key; one echo record under the new one.
            assert_eq!(pair.records().seqs(), (1, 1), "round {round}");
        }
    }

    /// Our send key moves on by itself after `update_after` records.
    #[test]
    fn our_send_key_moves_on_when_worn() {
        let mut pair = pair(&[&rustls::version::TLS13]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        match &mut pair.server.session {
            Session::Records(records) => records.update_after = 3,
            _ => panic!("not taken over"),
        }
        for i in 0..10u8 {
            assert_eq!(pair.echo(&[i; 10]), [i; 10]);
            assert!(pair.records().seqs().0 <= 3, "{:?}", pair.records().seqs());
        }
    }

    /// A record that fails to authenticate ends the session with bad_record_mac.
    #[test]
    fn a_corrupt_record_gets_an_alert() {
        let mut pair = pair(&[&rustls::version::TLS13]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        pair.client.writer().write_all(b"tampered").unwrap();
        let mut record = Vec::new();
        pair.client.write_tls(&mut record).unwrap();
        let last = record.len() - 1;
        record[last] ^= 1;
        pair.sock.write_all(&record).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(pair.server.recv(&mut buf), Err(libc::ECONNRESET));
        assert!(pair.server.failed());
        assert_eq!(
            pair.run(),
            Err(rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac))
        );
        // Not a failed handshake: the handshake was done.
        assert_eq!(pair.server.count_now(), (1, 0, 0));
    }

    /// Key updates without data between them are a pest past a bound.
    #[test]
    fn endless_key_updates_are_refused() {
        let mut pair = pair(&[&rustls::version::TLS13]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        let mut ended = None;
        for _ in 0..40 {
            pair.client.refresh_traffic_keys().unwrap();
            if let Err(e) = pair.run() {
                ended = Some(e);
                break;
            }
        }
        assert_eq!(
            ended,
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::UnexpectedMessage))
        );
    }

    /// close_notify reads as the end of the stream, and ours goes back.
    #[test]
    fn close_notify_both_ways() {
        let mut pair = pair(&[&rustls::version::TLS13]);
        assert_eq!(pair.echo(b"hello"), b"hello");
        pair.client.send_close_notify();
        pair.run().unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(pair.server.recv(&mut buf), Ok(0));
        pair.server.shutdown_write();
        pair.run().unwrap();
        let mut plain = [0u8; 8];
        assert_eq!(pair.client.reader().read(&mut plain).unwrap(), 0, "close_notify");
    }

    #[test]
    fn plaintext_room_leaves_room_for_every_record() {
        let record = tls13::RECORD;
        assert_eq!(plaintext_room(0), 0);
        assert_eq!(plaintext_room(32), 0);
        assert_eq!(plaintext_room(33), 1);
        assert_eq!(plaintext_room(record + 32), record);
        assert_eq!(plaintext_room(GULP), 3 * record + (GULP - 3 * (record + 32) - 32));
    }

    #[test]
    fn parts_are_taken_in_order_across_empty_ones() {
        let parts: [&[u8]; 4] = [b"", b"abc", b"", b"de"];
        let mut from = Parts { parts: &parts, part: 0, at: 0 };
        assert_eq!(from.next(2), Some(&b"ab"[..]));
        assert_eq!(from.next(0), None);
        assert_eq!(from.next(5), Some(&b"c"[..]));
        assert_eq!(from.next(5), Some(&b"de"[..]));
        assert_eq!(from.next(5), None);
    }
}
