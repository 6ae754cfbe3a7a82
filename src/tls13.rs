//! TLS 1.3 records after rustls's handshake, for the server's transport and loadgen's client
//! alike (public but hidden, like [`crate::sys`]), protected here with the traffic secrets rustls
//! negotiated — what the kernel does for kTLS (rustls's `dangerous_into_kernel_connection` is
//! made for it), in user space: this machine's kernel has no `tls` module.
//!
//! Why: an established rustls connection keeps ≈ 3 KB of state that an echo never uses again
//! (the handshake deframer's spans, the connection's own queues, the state machine), and hands
//! each record's plaintext over in a `Vec` of its own. Here an idle connection keeps two AEAD
//! keys, two nonces and two sequence numbers (plus rustls's small post-handshake state, for key
//! updates), and a record is decrypted in place in the reactor's scratch buffer.
//!
//! What is handled after the handshake (RFC 8446 §4.6, §5, §6): application data; alerts
//! (close_notify ends the stream, user_canceled is ignored, any other ends the connection);
//! KeyUpdate from the peer (our receive key moves on; when it asks, we answer with our own and
//! move our send key on); our own KeyUpdate before a send key has sealed [`UPDATE_AFTER`]
//! records (AES-GCM's confidentiality limit, RFC 8446 §5.5, is 2^24.5); on the client, the
//! server's NewSessionTickets (to rustls's session store, for resumption). A handshake message
//! split across records is refused (no peer splits a 5-byte KeyUpdate or a ticket; rustls would
//! join them), as is any other post-handshake message (the server asks for no client
//! certificate, and a client sends no tickets).
//!
//! TLS 1.2 sessions stay with rustls throughout.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

/// A record's header: content type, legacy version, length.
pub const HEADER: usize = 5;
/// The AEAD tag after each record's ciphertext.
pub const TAG: usize = 16;
/// The largest plaintext of one record.
pub const RECORD: usize = 16 * 1024;
/// What one record adds to its plaintext: header, inner content type, tag.
pub const OVERHEAD: usize = HEADER + 1 + TAG;
/// The longest ciphertext a record may carry (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = RECORD + 256;
/// The longest whole record, header included.
pub const MAX_RECORD: usize = HEADER + MAX_CIPHERTEXT;

/// Records sealed with one send key before we move it on.
pub const UPDATE_AFTER: u64 = 1 << 23;

/// Records in a row that carry no data (empty ones, key updates, warnings) before the peer is
/// taken for a pest (rustls allows as many key updates without data between them).
const MAX_FRUITLESS: u8 = 32;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// What a side does with a post-handshake message only its peer may send.
pub trait Side: Sized {
    /// A NewSessionTicket's body (the client stores it; the server never gets one).
    fn ticket(kernel: &mut KernelConnection<Self>, body: &[u8]) -> Result<(), Alert>;
}

impl Side for ServerConnectionData {
    fn ticket(_: &mut KernelConnection<Self>, _: &[u8]) -> Result<(), Alert> {
        Err(Alert::UNEXPECTED_MESSAGE)
    }
}

impl Side for ClientConnectionData {
    fn ticket(kernel: &mut KernelConnection<Self>, body: &[u8]) -> Result<(), Alert> {
        kernel.handle_new_session_ticket(body).map_err(|_| Alert::DECODE_ERROR)
    }
}

/// An alert we send before we close: the connection failed (its description, RFC 8446 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert(pub u8);

impl Alert {
    const UNEXPECTED_MESSAGE: Alert = Alert(10);
    const BAD_RECORD_MAC: Alert = Alert(20);
    const RECORD_OVERFLOW: Alert = Alert(22);
    const DECODE_ERROR: Alert = Alert(50);
    const INTERNAL_ERROR: Alert = Alert(80);
    /// Not an alert to send: the peer sent a fatal one.
    pub const PEER_FAILED: Alert = Alert(0);
}

/// What one record held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data: this many bytes at the region's start.
    Data(usize),
    /// The peer's close_notify: nothing follows.
    Closed,
    /// Nothing for the caller (a key update, a warning).
    Nothing,
}

/// The length of the whole record at the start of `input`, or `None` if it has not all
/// arrived.
pub fn record_len(input: &[u8]) -> Result<Option<usize>, Alert> {
    let Some(header) = input.get(..HEADER) else { return Ok(None) };
    if header[0] != APPLICATION_DATA {
        // Every record after the handshake is protected (a plain alert, a late
        // ChangeCipherSpec or any other type is out of place).
        return Err(Alert::UNEXPECTED_MESSAGE);
    }
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    if len > MAX_CIPHERTEXT {
        return Err(Alert::RECORD_OVERFLOW);
    }
    Ok((input.len() >= HEADER + len).then_some(HEADER + len))
}

/// One direction's key, nonce and sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Direction, Alert> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(Alert::INTERNAL_ERROR),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| Alert::INTERNAL_ERROR)?;
        let iv = iv.as_ref().try_into().map_err(|_| Alert::INTERNAL_ERROR)?;
        Ok(Direction { key: LessSafeKey::new(key), iv, seq })
    }

    /// The per-record nonce (RFC 8446 §5.3), and the sequence number moved on.
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

/// An established TLS 1.3 session's record protection.
pub struct Records<D> {
    tx: Direction,
    rx: Direction,
    /// rustls's post-handshake state: the key schedule, for key updates.
    kernel: KernelConnection<D>,
    /// Records a send key seals before we move it on ([`UPDATE_AFTER`]; less in tests).
    pub update_after: u64,
    /// Records in a row with no data.
    fruitless: u8,
}

impl<D> std::fmt::Debug for Records<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish()
    }
}

impl<D: Side> Records<D> {
    /// Takes over a TLS 1.3 session from what rustls handed over (its handshake done, its
    /// records all sent).
    pub fn new(secrets: ExtractedSecrets, kernel: KernelConnection<D>) -> Result<Self, Alert> {
        Ok(Records {
            tx: Direction::new(secrets.tx)?,
            rx: Direction::new(secrets.rx)?,
            kernel,
            update_after: UPDATE_AFTER,
            fruitless: 0,
        })
    }

    /// Decrypts the one whole record at `region[at..]` (header first) to the region's start,
    /// in one pass (ring's `open_within`: a record read behind plaintext already taken out
    /// of the buffer lands right after it); a reply it calls for (our KeyUpdate) is sealed at
    /// the end of `replies`.
    pub fn open(
        &mut self,
        region: &mut [u8],
        at: usize,
        replies: &mut Vec<u8>,
    ) -> Result<Opened, Alert> {
        if region.len() - at < HEADER + TAG + 1 {
            return Err(Alert::DECODE_ERROR);
        }
        let header: [u8; HEADER] = region[at..at + HEADER].try_into().expect("a header");
        let aad = Aad::from(header);
        let nonce = self.rx.next_nonce();
        let plain = self
            .rx
            .key
            .open_within(nonce, aad, region, at + HEADER..)
            .map_err(|_| Alert::BAD_RECORD_MAC)?;
        // The inner content type is the last byte that is not padding (§5.4).
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(Alert::UNEXPECTED_MESSAGE);
        };
        if end > RECORD {
            return Err(Alert::RECORD_OVERFLOW);
        }
        let content = &plain[..end];
        if plain[end] == APPLICATION_DATA && end > 0 {
            self.fruitless = 0;
            return Ok(Opened::Data(end));
        }
        self.fruitless += 1;
        if self.fruitless > MAX_FRUITLESS {
            return Err(Alert::UNEXPECTED_MESSAGE);
        }
        match plain[end] {
            APPLICATION_DATA => Ok(Opened::Nothing), // empty
            ALERT => match content {
                [_, 0] => Ok(Opened::Closed),
                [1, 90] => Ok(Opened::Nothing), // user_canceled: a warning
                [_, _] => Err(Alert::PEER_FAILED),
                _ => Err(Alert::DECODE_ERROR),
            },
            HANDSHAKE => self.handshake(content, replies),
            CHANGE_CIPHER_SPEC => Err(Alert::UNEXPECTED_MESSAGE),
            _ => Err(Alert::UNEXPECTED_MESSAGE),
        }
    }

    /// Post-handshake messages, each whole in this record: KeyUpdate (last in its record:
    /// the keys change after it), and NewSessionTicket where the side takes one.
    fn handshake(&mut self, mut messages: &[u8], replies: &mut Vec<u8>) -> Result<Opened, Alert> {
        while !messages.is_empty() {
            let [typ, a, b, c, rest @ ..] = messages else { return Err(Alert::DECODE_ERROR) };
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            let Some(body) = rest.get(..len) else { return Err(Alert::DECODE_ERROR) };
            messages = &rest[len..];
            match (*typ, body) {
                (KEY_UPDATE, [requested @ (0 | 1)]) if messages.is_empty() => {
                    self.rx = Direction::new(
                        self.kernel.update_rx_secret().map_err(|_| Alert::INTERNAL_ERROR)?,
                    )?;
                    if *requested == 1 {
                        self.update_tx(replies)?;
                    }
                }
                (KEY_UPDATE, [0 | 1]) => return Err(Alert::UNEXPECTED_MESSAGE),
                (KEY_UPDATE, _) => return Err(Alert::DECODE_ERROR),
                (NEW_SESSION_TICKET, body) => D::ticket(&mut self.kernel, body)?,
                _ => return Err(Alert::UNEXPECTED_MESSAGE),
            }
        }
        Ok(Opened::Nothing)
    }

    /// Sends our KeyUpdate (not asking for the peer's) under the current send key, then moves
    /// that key on.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), Alert> {
        self.seal_to(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out);
        self.tx =
            Direction::new(self.kernel.update_tx_secret().map_err(|_| Alert::INTERNAL_ERROR)?)?;
        Ok(())
    }

    /// Our KeyUpdate, at the end of `out`, if the send key has sealed its share of records;
    /// true if it went there.
    pub fn update_if_due(&mut self, out: &mut Vec<u8>) -> Result<bool, Alert> {
        if self.tx.seq < self.update_after {
            return Ok(false);
        }
        self.update_tx(out)?;
        Ok(true)
    }

    /// The send and receive sequence numbers (records sealed and opened under the current keys).
    #[cfg(test)]
    pub fn seqs(&self) -> (u64, u64) {
        (self.tx.seq, self.rx.seq)
    }

    /// Seals a record of application data whose `len` bytes of plaintext the caller put at
    /// `out[HEADER..]`; returns the record's length (`len + OVERHEAD`, which `out` must hold).
    pub fn seal_data(&mut self, len: usize, out: &mut [u8]) -> usize {
        self.seal(APPLICATION_DATA, len, out)
    }

    /// Our close_notify, at the end of `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.seal_to(ALERT, &[1, 0], out);
    }

    /// The fatal alert for `alert` at the end of `out` (none when the peer sent one).
    pub fn fatal(&mut self, alert: Alert, out: &mut Vec<u8>) {
        if alert != Alert::PEER_FAILED {
            self.seal_to(ALERT, &[2, alert.0], out);
        }
    }

    /// A record of `content` appended to `out`.
    fn seal_to(&mut self, typ: u8, content: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + content.len() + OVERHEAD, 0);
        out[start + HEADER..start + HEADER + content.len()].copy_from_slice(content);
        self.seal(typ, content.len(), &mut out[start..]);
    }

    fn seal(&mut self, typ: u8, len: usize, out: &mut [u8]) -> usize {
        let body = len + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (body >> 8) as u8, body as u8];
        out[..HEADER].copy_from_slice(&header);
        out[HEADER + len] = typ;
        let nonce = self.tx.next_nonce();
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(header),
                &mut out[HEADER..HEADER + len + 1],
            )
            .expect("a record within AEAD limits");
        out[HEADER + len + 1..HEADER + body].copy_from_slice(tag.as_ref());
        HEADER + body
    }
}
