//! TLS over an accepted socket: a [`tls_records::Session`] (rustls's unbuffered API through the
//! handshake, then TLS 1.3 records protected by [`crate::tls13`]) as a [`Transport`], with the
//! server's counting. The reactor's edge-triggered discipline holds: a refused write waits for
//! the writable edge that is sure to follow, which the reactor hands to
//! [`Tls::on_writable_edge`].
//!
//! - `recv` fills the buffer as far as the socket's records allow, so a short read still means
//!   "drained" to the behaviour above — except right after the peer's end of stream, which
//!   [`Transport::short_read_drains`] reports.
//! - `send` returns a partial count only when the socket refused records (then held,
//!   [`Transport::has_buffered`]).
//! - The client's `close_notify` (or a TCP FIN without one) reads as end of stream; our close
//!   sends `close_notify`, then FIN.
//! - A handshake error (plain bytes, no shared cipher) sends rustls's alert and reads as a reset;
//!   [`Tls::failed`] tells the reactor to count it as a TLS failure.

use std::io::IoSlice;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::ServerConfig;

use super::{Plain, Transport};
use crate::stats::Stats;
use crate::sys::Errno;
use crate::tls_records::{self, TLS_FAILED};

/// A TLS session on a socket.
pub(crate) struct Tls {
    inner: Plain,
    session: tls_records::Session<UnbufferedServerConnection>,
    /// The handshake's end is counted.
    noted: bool,
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
        f.debug_struct("Tls").field("session", &self.session).finish()
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
        let session = tls_records::Session::new(conn, inner.fd, limit);
        Ok(Tls { inner, session, noted: false, happened: Happened::default() })
    }

    /// Whether the session failed (a handshake error): the reactor counts it, not as a reset.
    pub(crate) fn failed(&self) -> bool {
        self.session.failed()
    }

    /// The handshake did not finish in time.
    pub(crate) fn time_out(&mut self) {
        if !self.session.failed() {
            self.session.abandon();
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
        self.session.flush().map(|_| ())
    }

    /// Notes a completed handshake, once (and whether it resumed a session).
    fn note_handshake(&mut self) {
        if let (false, Some(resumed)) = (self.noted, self.session.established()) {
            self.noted = true;
            self.happened.handshake = true;
            self.happened.resumed = resumed;
        }
    }

    /// (No handshake ends here: the session takes nothing to write until it has.)
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<usize, Errno> {
        self.session.write(parts).map_err(|e| if e == TLS_FAILED { libc::ECONNRESET } else { e })
    }
}

impl Transport for Tls {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.session.failed() {
            return Err(libc::ECONNRESET);
        }
        let result = self.session.read_plain(buf);
        self.note_handshake();
        match result {
            Err(TLS_FAILED) => {
                self.happened.failure = !self.noted;
                Err(libc::ECONNRESET)
            }
            // The client's end of stream before the handshake's: it gave up (a client that
            // rejects our certificate and closes without an alert, as rustls's does). Nothing
            // can follow, and a behaviour that waits for the handshake before it writes or
            // closes would wait for the handshake timeout: a failed handshake, now.
            Ok(0) if !self.noted => {
                self.session.abandon();
                self.happened.failure = true;
                Err(libc::ECONNRESET)
            }
            other => other,
        }
    }

    write_by_parts!(write_parts);

    fn shutdown_write(&mut self) {
        self.session.close_notify();
        self.inner.shutdown_write();
    }

    fn has_buffered(&self) -> bool {
        self.session.has_buffered()
    }

    fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    fn short_read_drains(&self) -> bool {
        !self.session.eof()
    }

    fn reserve(&self) -> usize {
        self.session.limit()
    }

    fn unacked(&self) -> usize {
        self.inner.unacked()
    }

    fn reset_on_close(&mut self) {
        self.inner.reset_on_close();
    }

    fn note_read_closed(&mut self) {
        self.session.note_read_closed();
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.inner.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{ErrorKind, Read, Write};

    use libc::EAGAIN;
    use std::os::unix::net::UnixStream;

    use crate::certificate::{Identity, TlsSettings};
    use crate::transport::Stream;

    /// Our session on one end of a socket pair and a rustls client on the other, in one
    /// thread; the server's side echoes.
    struct Pair {
        server: Tls,
        /// The server's reads: through the inbox when smaller than a record, else straight
        /// into the buffer ([`READS`]).
        read: usize,
        client: rustls::ClientConnection,
        sock: UnixStream,
        _identity: Identity,
    }

    /// The server's read sizes each test runs with: through the inbox; one record straight
    /// into the buffer, the rest through the inbox; records straight into the buffer.
    const READS: [usize; 3] = [4096, 20_000, 64 * 1024];

    fn pair(versions: &[&'static rustls::SupportedProtocolVersion], read: usize) -> Pair {
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
        Pair { server, read, client, sock: theirs, _identity: identity }
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
                let mut buf = vec![0u8; self.read];
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

        fn records(&self) -> &crate::tls13::Records<rustls::server::ServerConnectionData> {
            self.server.session.records().expect("taken over")
        }
    }

    #[test]
    fn a_tls13_session_changes_hands_and_echoes() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS13], read);
            assert_eq!(pair.echo(b"hello"), b"hello");
            let seqs = pair.records().seqs();
            let big: Vec<u8> = (0..100_000).map(|i| (i * 7 % 251) as u8).collect();
            assert!(pair.echo(&big) == big, "100 kB back, in order");
            assert!(pair.records().seqs().1 > seqs.1);
            assert_eq!(pair.server.count_now(), (1, 0, 0));
        }
    }

    #[test]
    fn a_tls12_session_stays_with_rustls() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS12], read);
            assert_eq!(pair.echo(b"hello"), b"hello");
            assert!(pair.server.session.records().is_none());
        }
    }

    /// The client moves its send key on and asks for ours to move too: we answer with our own
    /// KeyUpdate under the old key, then seal under the new one (the client reads it all).
    #[test]
    fn a_key_update_from_the_client_moves_both_keys_on() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS13], read);
            assert_eq!(pair.echo(b"hello"), b"hello");
            for round in 0..3 {
                pair.client.refresh_traffic_keys().unwrap();
                assert_eq!(pair.echo(b"after"), b"after", "round {round}");
                // Our KeyUpdate went under the old key; one echo record under the new one.
                assert_eq!(pair.records().seqs(), (1, 1), "round {round}");
            }
        }
    }

    /// Our send key moves on by itself after `update_after` records.
    #[test]
    fn our_send_key_moves_on_when_worn() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS13], read);
            assert_eq!(pair.echo(b"hello"), b"hello");
            pair.server.session.records_mut().expect("taken over").update_after = 3;
            for i in 0..10u8 {
                assert_eq!(pair.echo(&[i; 10]), [i; 10]);
                assert!(pair.records().seqs().0 <= 3, "{:?}", pair.records().seqs());
            }
        }
    }

    /// A record that fails to authenticate ends the session with bad_record_mac.
    #[test]
    fn a_corrupt_record_gets_an_alert() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS13], read);
            assert_eq!(pair.echo(b"hello"), b"hello");
            pair.client.writer().write_all(b"tampered").unwrap();
            let mut record = Vec::new();
            pair.client.write_tls(&mut record).unwrap();
            let last = record.len() - 1;
            record[last] ^= 1;
            pair.sock.write_all(&record).unwrap();
            let mut buf = vec![0u8; read];
            assert_eq!(pair.server.recv(&mut buf), Err(libc::ECONNRESET));
            assert!(pair.server.failed());
            assert_eq!(
                pair.run(),
                Err(rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac))
            );
            // Not a failed handshake: the handshake was done.
            assert_eq!(pair.server.count_now(), (1, 0, 0));
        }
    }

    /// Key updates without data between them are a pest past a bound.
    #[test]
    fn endless_key_updates_are_refused() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS13], read);
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
    }

    /// close_notify reads as the end of the stream, and ours goes back.
    #[test]
    fn close_notify_both_ways() {
        for read in READS {
            let mut pair = pair(&[&rustls::version::TLS13], read);
            assert_eq!(pair.echo(b"hello"), b"hello");
            pair.client.send_close_notify();
            pair.run().unwrap();
            let mut buf = vec![0u8; read];
            assert_eq!(pair.server.recv(&mut buf), Ok(0));
            pair.server.shutdown_write();
            pair.run().unwrap();
            let mut plain = [0u8; 8];
            assert_eq!(pair.client.reader().read(&mut plain).unwrap(), 0, "close_notify");
        }
    }
}
