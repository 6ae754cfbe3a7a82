//! TLS between a non-blocking socket and a peer, for the server's transport and loadgen's client
//! alike (public but hidden, like [`crate::sys`]): rustls's unbuffered API through the
//! handshake, then, for TLS 1.3, the records protected by [`crate::tls13`] with the secrets
//! rustls negotiated; a TLS 1.2 session stays with rustls throughout. A session owns no buffer
//! while it is idle.
//!
//! An established TLS 1.3 session reads its records straight into the caller's buffer while
//! a whole record still fits there, and decrypts each to its place in it; otherwise records are
//! read into a per-thread scratch buffer (the inbox) and decrypted there. Our records are
//! encrypted in another (the outbox) and written from it. A session keeps bytes of its own only
//! while they cannot move on — the start of a record that has not all arrived, plaintext the
//! caller's buffer had no room for, records the socket refused — and frees them as soon as they
//! do. (rustls's buffered connection keeps ≈ 6.6 KB of buffers per connection, idle or not.)
//!
//! Edge-triggered contract: [`Session::read_plain`] fills the buffer as far as the socket's
//! records allow, so it returns fewer bytes than asked only when the socket is drained (or at
//! the peer's end of stream, which [`Session::eof`] reports), and `EAGAIN` only when the socket
//! had nothing at all. [`Session::write`] encrypts at most `limit` bytes at a time and writes
//! the records out; it returns a partial count only when the socket refused records (then held:
//! [`Session::has_buffered`], written by [`Session::flush`] on the writable edge that follows).
//! A protocol failure (a bad handshake, a corrupt record) sends the alert and reads as
//! [`TLS_FAILED`]; [`Session::error`] says what rustls saw.
//!
//! Copies: a TLS 1.3 record read into the caller's buffer takes none in user space (ring's
//! `open_within` decrypts it to the end of the plaintext before it in one pass); one read
//! through the inbox takes one, into the caller's buffer. Our records are copied once from the
//! caller's parts into the outbox (several parts into one record) and encrypted there. Under
//! rustls (the handshake, TLS 1.2) the plaintext takes one more copy, into a `Vec` of rustls's
//! own.

use std::cell::RefCell;
use std::ops::DerefMut;
use std::os::fd::RawFd;

use libc::{EAGAIN, EINTR};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus,
    WriteTraffic,
};
use rustls::{ExtractedSecrets, HandshakeKind, ProtocolVersion};

use crate::sys::{self, Errno};
use crate::tls13::{self, Alert, Opened, Records, Side};

/// Bytes read from the socket per `recv`, and the size of the encryption scratch buffer.
pub const GULP: usize = 64 * 1024;

/// The errno a TLS protocol failure (a bad record, a failed handshake) is reported as; the alert
/// was sent if the socket took it.
pub const TLS_FAILED: Errno = libc::EPROTO;

thread_local! {
    /// Where records are read and decrypted.
    static INBOX: RefCell<crate::buffer::Aligned> = RefCell::new(crate::buffer::Aligned::zeroed(GULP));
    /// Where records are encrypted before they are written: a page more than a batch, for
    /// [`skew`].
    static OUTBOX: RefCell<crate::buffer::Aligned> =
        RefCell::new(crate::buffer::Aligned::zeroed(GULP + crate::buffer::BUFFER_ALIGN));
}

/// A rustls unbuffered connection, server or client.
pub trait Handshake: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Sized {
    /// rustls's side data.
    type Data: Side;
    /// `process_tls_records` of this side.
    fn process<'c, 'i>(&'c mut self, input: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// Hands the established session's secrets over (`dangerous_into_kernel_connection`).
    fn hand_over(self) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error>;
}

/// [`Handshake`] for one side's connection: the same two calls, on two types.
macro_rules! handshake {
    ($conn:ty, $data:ty) => {
        impl Handshake for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                input: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(input)
            }
            fn hand_over(
                self,
            ) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error> {
                self.dangerous_into_kernel_connection()
            }
        }
    };
}

handshake!(UnbufferedServerConnection, ServerConnectionData);
handshake!(UnbufferedClientConnection, ClientConnectionData);

/// A TLS session on a socket.
pub struct Session<C: Handshake> {
    fd: RawFd,
    state: State<C>,
    /// Bytes of plaintext encrypted at a time (so at most this much, plus record overhead, is
    /// held when the socket refuses).
    limit: usize,
    held: Held,
    /// The handshake completed: whether it resumed a session.
    established: Option<bool>,
    /// The session failed (a bad handshake, a corrupt record), and what rustls said.
    failed: bool,
    error: Option<Box<rustls::Error>>,
}

/// Who protects the records.
enum State<C: Handshake> {
    /// rustls: through the handshake, and a TLS 1.2 session throughout.
    Rustls(Box<C>),
    /// An established TLS 1.3 session's records, protected here.
    Records(Box<Records<C::Data>>),
    /// Neither: the session failed as it changed hands.
    Gone,
}

/// What a session keeps between calls (each empty, without an allocation, while idle), and
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
    /// The peer's end of stream: `read_plain` returns 0 once what came before it is read.
    eof: bool,
    /// The poll reported the peer's end: a short read is not the socket drained (the end may
    /// wait behind it, and no new edge would announce it), so read on until it shows.
    end_reported: bool,
}

/// Sends `bytes` until all went or the socket refuses; returns how many went.
fn send_some(fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
    let mut sent = 0;
    while sent < bytes.len() {
        match sys::send(fd, &bytes[sent..]) {
            Ok(n) => sent += n,
            Err(EINTR) => {}
            Err(EAGAIN) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// What one `recv` gave, for the two read loops ([`Session::read_plain`]'s through the inbox,
/// [`read_into`]'s straight into the caller's buffer).
enum Received {
    /// `n` bytes; `drained`: a short read, so the socket is drained once they are processed
    /// (not when the poll reported the peer's end: that may wait behind them, and no new edge
    /// would announce it).
    Bytes { n: usize, drained: bool },
    /// The socket's end.
    End,
    /// Nothing (`EAGAIN`).
    Nothing,
}

/// Receives into `buf` (not empty), retrying an interrupted call.
#[inline]
fn receive(fd: RawFd, buf: &mut [u8], end_reported: bool) -> Result<Received, Errno> {
    loop {
        return match sys::recv(fd, buf) {
            Ok(0) => Ok(Received::End),
            Ok(n) => Ok(Received::Bytes { n, drained: n < buf.len() && !end_reported }),
            Err(EINTR) => continue,
            Err(EAGAIN) => Ok(Received::Nothing),
            Err(e) => Err(e),
        };
    }
}

impl Held {
    /// Writes the held records until none is left (true) or the socket refuses (false).
    fn flush(&mut self, fd: RawFd) -> Result<bool, Errno> {
        if self.output.is_empty() {
            return Ok(true);
        }
        let sent = send_some(fd, &self.output)?;
        if sent == self.output.len() {
            self.output = Vec::new(); // an idle session holds nothing
            Ok(true)
        } else {
            self.output.drain(..sent);
            Ok(false)
        }
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

/// Where processing the records read so far stopped.
enum Stop {
    /// Every whole record is processed: read more.
    Drained,
    /// The caller's buffer is full.
    Full,
    /// The peer closed the session (close_notify).
    Closed,
}

/// The session failed: the alert to send where rustls has not queued its own, and what rustls
/// said.
#[derive(Debug, Default)]
struct Failed {
    alert: Option<Alert>,
    error: Option<rustls::Error>,
}

impl From<Alert> for Failed {
    fn from(alert: Alert) -> Failed {
        Failed { alert: Some(alert), error: None }
    }
}

impl From<rustls::Error> for Failed {
    fn from(error: rustls::Error) -> Failed {
        Failed { alert: None, error: Some(error) }
    }
}

impl<C: Handshake> std::fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Rustls(conn) if conn.is_handshaking() => "handshake",
            State::Rustls(_) => "rustls",
            State::Records(_) => "records",
            State::Gone => "gone",
        };
        f.debug_struct("Session")
            .field("state", &state)
            .field("held", &self.held)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<C: Handshake> Session<C> {
    /// A session of `conn` on the socket `fd`; `limit` bounds the records held unsent.
    pub fn new(conn: C, fd: RawFd, limit: usize) -> Self {
        Session {
            fd,
            state: State::Rustls(Box::new(conn)),
            limit: limit.max(1),
            held: Held::default(),
            established: None,
            failed: false,
            error: None,
        }
    }

    /// Whether the handshake is still going on (not once the session failed).
    pub fn is_handshaking(&self) -> bool {
        match &self.state {
            State::Rustls(conn) => conn.is_handshaking() && !self.failed,
            _ => false,
        }
    }

    /// `Some(resumed)` once the handshake is done.
    pub fn established(&self) -> Option<bool> {
        self.established
    }

    /// The TLS 1.3 records protected here, once rustls has handed them over.
    pub fn records(&self) -> Option<&Records<C::Data>> {
        match &self.state {
            State::Records(records) => Some(records),
            _ => None,
        }
    }

    /// As [`Session::records`], to change (tests: how soon a key is worn).
    pub fn records_mut(&mut self) -> Option<&mut Records<C::Data>> {
        match &mut self.state {
            State::Records(records) => Some(records),
            _ => None,
        }
    }

    /// Whether the session failed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// What rustls said when the session failed, if it did.
    pub fn error(&self) -> Option<&rustls::Error> {
        self.error.as_deref()
    }

    /// Ends the session without a word (a handshake that took too long, a peer that left).
    pub fn abandon(&mut self) {
        self.failed = true;
    }

    /// The peer's end of stream was read: nothing more will come.
    pub fn eof(&self) -> bool {
        self.held.eof
    }

    /// The poll reported the peer's end of stream: read on until it shows (a short read is not
    /// the socket drained any more).
    pub fn note_read_closed(&mut self) {
        self.held.end_reported = true;
    }

    /// Whether records wait for the socket.
    pub fn has_buffered(&self) -> bool {
        !self.held.output.is_empty()
    }

    /// The plaintext encrypted at a time.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Writes the held records until none is left (true) or the socket refuses (false).
    pub fn flush(&mut self) -> Result<bool, Errno> {
        self.held.flush(self.fd)
    }

    /// Notes a completed handshake, once (and whether it resumed a session).
    fn note_handshake(&mut self) {
        if let (None, State::Rustls(conn)) = (self.established, &self.state) {
            if !conn.is_handshaking() {
                self.established = Some(conn.handshake_kind() == Some(HandshakeKind::Resumed));
            }
        }
    }

    /// The session failed: send the alert (rustls's, or `why`'s) if the socket takes it, and from
    /// now on read and write nothing.
    fn fail(&mut self, why: Failed) -> Errno {
        if !self.failed {
            self.failed = true;
            self.error = why.error.map(Box::new);
            match &mut self.state {
                State::Rustls(_) => {
                    let _ = self.settle();
                }
                State::Records(records) => {
                    if let Some(alert) = why.alert {
                        records.fatal(alert, &mut self.held.output);
                        let _ = self.flush();
                    }
                }
                State::Gone => {}
            }
        }
        TLS_FAILED
    }

    /// Lets rustls encode and write what it has queued with no new input (handshake messages,
    /// session tickets, a key update, an alert).
    fn settle(&mut self) -> Result<Option<()>, Failed> {
        self.settle_then(|_| ())
    }

    /// As [`Session::settle`], then `write` called on the session once it takes application
    /// data; returns what `write` returned (`None` when it takes none: during the handshake,
    /// after a close, or when the session is not rustls's).
    fn settle_then<R>(
        &mut self,
        write: impl FnOnce(&mut WriteTraffic<'_, C::Data>) -> R,
    ) -> Result<Option<R>, Failed> {
        let mut write = Some(write);
        loop {
            let State::Rustls(conn) = &mut self.state else { return Ok(None) };
            let UnbufferedStatus { state, .. } = conn.process(&mut []);
            match state? {
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
                    // Never left behind by `read_plain`; kept rather than lost if it ever is.
                    while let Some(Ok(record)) = traffic.next_record() {
                        self.held.plain.extend_from_slice(record.payload);
                    }
                }
                _ => return Ok(None),
            }
        }
    }

    /// Moves the handshake on: writes what rustls has queued (a ClientHello first), reads
    /// what came; true once the handshake is done. (A server's handshake moves on through
    /// [`Session::read_plain`] alone.)
    pub fn handshake(&mut self) -> Result<bool, Errno> {
        if self.failed {
            return Err(TLS_FAILED);
        }
        loop {
            self.settle().map_err(|e| self.fail(e))?;
            if !self.is_handshaking() {
                return Ok(true);
            }
            match self.read_plain(&mut []) {
                Ok(_) if self.held.eof => return Err(libc::ECONNRESET),
                Ok(_) => {}
                Err(EAGAIN) => return Ok(!self.is_handshaking()),
                Err(e) => return Err(e),
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
            let (done, stop) = match &mut self.state {
                State::Rustls(conn) => {
                    let result = process_rustls(&mut **conn, held, self.fd, &mut input[at..], sink);
                    self.note_handshake();
                    result?
                }
                State::Records(records) => {
                    let result = open_records(records, held, &mut input[at..], sink);
                    // A reply to a key update.
                    held.flush(self.fd).map_err(|_| Failed::default())?;
                    result?
                }
                State::Gone => return Err(Failed::default()),
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
        let State::Rustls(conn) = &self.state else { return Ok(false) };
        if conn.is_handshaking()
            || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
            || conn.wants_write()
        {
            return Ok(false);
        }
        let State::Rustls(conn) = std::mem::replace(&mut self.state, State::Gone) else {
            unreachable!("matched above")
        };
        let (secrets, kernel) = conn.hand_over()?;
        self.state = State::Records(Box::new(Records::new(secrets, kernel)?));
        Ok(true)
    }

    /// Reads plaintext into `buf`, as much as the socket's records allow (see the module's
    /// contract). The handshake moves on as records arrive; its replies are written at once.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.failed {
            return Err(TLS_FAILED);
        }
        let mut filled = take_front(&mut self.held.plain, buf);
        if (filled == buf.len() && !buf.is_empty()) || self.held.eof {
            return Ok(filled);
        }
        if let State::Records(records) = &mut self.state {
            match read_into(records, &mut self.held, self.fd, buf, filled) {
                Ok(Direct::Done(result)) => return result,
                Ok(Direct::Low(plain)) => filled = plain,
                Err(failed) => return Err(self.fail(failed)),
            }
        }
        let mut sink = Sink { buf, filled };
        INBOX.with(|inbox| {
            let inbox = &mut inbox.borrow_mut()[..];
            // The held input first (it may hold whole records), then the socket's.
            let mut len = self.held.input.len();
            inbox[..len].copy_from_slice(&self.held.input);
            self.held.input = Vec::new();
            let mut fresh = len > 0;
            // A short read: the socket is drained once what it gave is processed.
            let mut drained = false;
            loop {
                if fresh {
                    let (done, stop) =
                        self.process(&mut inbox[..len], &mut sink).map_err(|e| self.fail(e))?;
                    inbox.copy_within(done..len, 0);
                    len -= done;
                    match stop {
                        Stop::Drained if !drained => {}
                        Stop::Drained => {
                            self.held.input.extend_from_slice(&inbox[..len]);
                            return if sink.filled > 0 { Ok(sink.filled) } else { Err(EAGAIN) };
                        }
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
                if len == inbox.len() {
                    // A handshake message over our whole buffer: no client sends one.
                    return Err(self.fail(Failed::default()));
                }
                match receive(self.fd, &mut inbox[len..], self.held.end_reported)? {
                    Received::Bytes { n, drained: short } => {
                        len += n;
                        fresh = true;
                        drained = short;
                    }
                    // The socket's end, with or without close_notify; a partial record before
                    // it is dropped.
                    Received::End => {
                        self.held.eof = true;
                        return Ok(sink.filled);
                    }
                    Received::Nothing => {
                        self.held.input.extend_from_slice(&inbox[..len]);
                        return if sink.filled > 0 { Ok(sink.filled) } else { Err(EAGAIN) };
                    }
                }
            }
        })
    }

    /// Encrypts as much of `parts` as the socket takes, `limit` bytes at a time; stops when
    /// the socket refuses (the records it refused are held).
    ///
    /// Nothing is taken during the handshake: the behaviour's own queue holds its output under
    /// its cap until then.
    pub fn write(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        if self.failed {
            return Err(TLS_FAILED);
        }
        if self.is_handshaking() || !self.flush()? {
            return Err(EAGAIN);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut from = Parts { parts, part: 0, at: 0 };
        let mut taken = 0;
        while taken < total {
            if let State::Records(records) = &mut self.state {
                let updated = records
                    .update_if_due(&mut self.held.output)
                    .map_err(|a| self.fail(a.into()))?;
                if updated && !self.flush()? {
                    break;
                }
            }
            let limit = self.limit;
            let batch = OUTBOX.with(|outbox| -> Result<(usize, bool), Errno> {
                let outbox = &mut outbox.borrow_mut()[..];
                let start = from.peek().map_or(0, |first| skew(outbox.as_ptr(), first));
                let outbox = &mut outbox[start..start + GULP];
                let sealed = match &mut self.state {
                    State::Records(records) => Ok(seal_records(records, &mut from, limit, outbox)),
                    State::Rustls(_) => self.encrypt_rustls(&mut from, limit, outbox),
                    State::Gone => Err(Failed::default()),
                };
                let (took, encrypted) = sealed.map_err(|e| self.fail(e))?;
                let sent = send_some(self.fd, &outbox[..encrypted])?;
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
                    Err(_) => return Err(Failed::default()),
                }
                took += chunk.len();
            }
            Ok(took)
        });
        match took {
            Ok(Some(took)) => Ok((took?, encrypted)),
            Ok(None) => Err(Failed::default()), // closed under us
            Err(failed) => Err(failed),
        }
    }
    /// Our close_notify, written as far as the socket takes it.
    pub fn close_notify(&mut self) {
        if self.failed {
            return;
        }
        match &mut self.state {
            State::Records(records) => records.close_notify(&mut self.held.output),
            State::Rustls(_) => OUTBOX.with(|outbox| {
                let outbox = &mut outbox.borrow_mut()[..];
                let n = self.settle_then(|traffic| traffic.queue_close_notify(outbox).unwrap_or(0));
                if let Ok(Some(n)) = n {
                    self.held.output.extend_from_slice(&outbox[..n]);
                }
            }),
            State::Gone => {}
        }
        let _ = self.flush();
    }
}

/// The parts of a write, and how far they are taken.
struct Parts<'p, 'b> {
    parts: &'p [&'b [u8]],
    part: usize,
    at: usize,
}

impl<'b> Parts<'_, 'b> {
    /// Where the next byte taken lies (`None` when nothing is left).
    fn peek(&self) -> Option<*const u8> {
        let mut at = self.at;
        for part in &self.parts[self.part..] {
            if at < part.len() {
                return Some(part[at..].as_ptr());
            }
            at = 0;
        }
        None
    }

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

/// Where in the outbox a batch of records starts, so that the first record's body lies 64
/// bytes past its source modulo a page (each later record 22 bytes further on).
///
/// Why: on this AMD EPYC, `memcpy`'s `rep movsb` copies 16 KiB at 2.2–2.7 GB/s when the
/// destination sits 1 to ~48 bytes past the source modulo 4 KiB, against 40–90 GB/s at any
/// other distance (measured with a C loop over distances 0–4095). A record's body is 5 bytes
/// past its start, so page-aligned buffers on both sides put every echo's copy into that
/// window: the copy into the outbox was 13 % of the TLS server's CPU on bulk echo.
fn skew(outbox: *const u8, source: *const u8) -> usize {
    let page = crate::buffer::BUFFER_ALIGN;
    (source as usize + 64).wrapping_sub(outbox as usize + tls13::HEADER) % page
}

/// Seals up to `limit` bytes of `from` into TLS 1.3 records in `outbox`, as many parts to a
/// record as fit; returns the plaintext taken and the records' length.
fn seal_records<D: Side>(
    records: &mut Records<D>,
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

/// [`Session::process`] under rustls.
fn process_rustls<C: Handshake>(
    conn: &mut C,
    held: &mut Held,
    fd: std::os::fd::RawFd,
    input: &mut [u8],
    sink: &mut Sink<'_>,
) -> Result<(usize, Stop), Failed> {
    let mut at = 0;
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut input[at..]);
        let stop = match state? {
            ConnectionState::ReadTraffic(mut traffic) => {
                let mut full = false;
                while let Some(record) = traffic.next_record() {
                    let payload = record?.payload;
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
                held.flush(fd).map_err(|_| Failed::default())?;
                None
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => Some(Stop::Closed),
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                Some(Stop::Drained)
            }
            // Early data is not enabled; anything new is not understood.
            _ => return Err(Failed::default()),
        };
        at += discard;
        if let Some(stop) = stop {
            return Ok((at, stop));
        }
    }
}

/// What [`read_into`] did.
enum Direct {
    /// What [`Session::read_plain`] returns.
    Done(Result<usize, Errno>),
    /// The caller's buffer, filled this far, has less room left than a record: what it still
    /// takes goes through the inbox (the start of a record held).
    Low(usize),
}

/// [`Session::read_plain`] for a TLS 1.3 session while the caller's buffer has room for a
/// whole record after its `plain` bytes: records are read into the buffer itself, after the
/// plaintext, and each is decrypted to the plaintext's end in the same pass, so their data
/// takes no copy in user space and never overflows (a record's plaintext is shorter than the
/// record). The start of a record that has not all arrived is held when the call ends.
fn read_into<D: Side>(
    records: &mut Records<D>,
    held: &mut Held,
    fd: RawFd,
    buf: &mut [u8],
    mut plain: usize,
) -> Result<Direct, Failed> {
    // buf[plain..end]: records not opened yet, the held start of one first.
    let mut end = plain + held.input.len();
    if buf.len() - plain < tls13::MAX_RECORD {
        return Ok(Direct::Low(plain));
    }
    buf[plain..end].copy_from_slice(&held.input);
    held.input = Vec::new();
    let mut fresh = end > plain;
    // A short read: the socket is drained once what it gave is opened.
    let mut drained = false;
    let outcome = loop {
        if fresh {
            let mut at = plain;
            while let Some(len) = tls13::record_len(&buf[at..end])? {
                let opened =
                    records.open(&mut buf[plain..at + len], at - plain, &mut held.output)?;
                at += len;
                match opened {
                    Opened::Data(n) => plain += n,
                    Opened::Closed => {
                        held.eof = true;
                        return Ok(Direct::Done(Ok(plain)));
                    }
                    Opened::Nothing => {}
                }
            }
            held.flush(fd).map_err(|_| Failed::default())?; // a reply to a key update
            if at > plain && end > at {
                buf.copy_within(at..end, plain);
            }
            end -= at - plain;
            if drained {
                break Direct::Done(Ok(plain));
            }
            if buf.len() - plain < tls13::MAX_RECORD {
                // The next record might not fit.
                break Direct::Low(plain);
            }
        }
        match receive(fd, &mut buf[end..], held.end_reported) {
            Ok(Received::Bytes { n, drained: short }) => {
                end += n;
                fresh = true;
                drained = short;
            }
            // The socket's end, with or without close_notify; a partial record before it is
            // dropped.
            Ok(Received::End) => {
                held.eof = true;
                return Ok(Direct::Done(Ok(plain)));
            }
            Ok(Received::Nothing) => break Direct::Done(Ok(plain)),
            Err(e) => break Direct::Done(Err(e)),
        }
    };
    if end > plain {
        held.input.extend_from_slice(&buf[plain..end]);
    }
    Ok(match outcome {
        Direct::Done(Ok(0)) if !buf.is_empty() => Direct::Done(Err(EAGAIN)),
        other => other,
    })
}

/// Opens the whole records at the start of `input`, moving their data into `sink` (what does
/// not fit into `held.plain`); returns how many bytes of `input` are done with, and why it
/// stopped.
fn open_records<D: Side>(
    records: &mut Records<D>,
    held: &mut Held,
    input: &mut [u8],
    sink: &mut Sink<'_>,
) -> Result<(usize, Stop), Failed> {
    let mut at = 0;
    while let Some(len) = tls13::record_len(&input[at..])? {
        let record = &mut input[at..at + len];
        let opened = records.open(record, 0, &mut held.output)?;
        at += len;
        match opened {
            Opened::Data(n) => {
                if sink.deliver(&record[..n], &mut held.plain) {
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
                return Err(Failed::default());
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

#[cfg(test)]
mod tests {
    use super::*;

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
