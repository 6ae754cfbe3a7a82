//! loadgen's TLS client side (rustls, the `ring` provider): which certificates to trust
//! (`--tls-ca`: CAs or the server's own certificate; `--tls-pin`: fingerprints; the system's
//! bundle; or none at all with `--insecure`), the name to ask for
//! (`--sni`, else the target's host), and whether to resume sessions (`--tls-resume`; off by
//! default, so `--reconnect-every` measures full handshakes).
//!
//! A load connection's session is ricochet's own engine ([`ricochet::tls_records::Session`],
//! the server's too): rustls's unbuffered API through the handshake, then TLS 1.3 records
//! sealed and opened in place with the keys rustls hands over; the socket read in 64 KiB gulps,
//! records written until the socket refuses.

use std::io;

use ricochet::tls_records::TLS_FAILED;

pub use ricochet::client::tls::{parse_pin, TlsClient, TrustSpec, BUFFER_LIMIT, MAX_CA_FILE};

/// A load connection's TLS session.
pub type Session = ricochet::tls_records::Session<rustls::client::UnbufferedClientConnection>;

/// A session's errno as an `io::Error`: a TLS failure says what rustls saw.
pub fn error(session: &Session, errno: i32) -> io::Error {
    match (errno, session.error()) {
        (TLS_FAILED, Some(error)) => io::Error::other(error.clone()),
        (TLS_FAILED, None) => io::Error::new(io::ErrorKind::InvalidData, "TLS protocol error"),
        (errno, _) => io::Error::from_raw_os_error(errno),
    }
}
