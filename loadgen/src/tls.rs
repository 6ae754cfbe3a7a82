//! loadgen's TLS client side (rustls, the `ring` provider): which certificates to trust
//! (`--tls-ca`: CAs or the server's own certificate; `--tls-pin`: fingerprints; the system's
//! bundle; or none at all with `--insecure`), the name to ask for
//! (`--sni`, else the target's host), and whether to resume sessions (`--tls-resume`; off by
//! default, so `--reconnect-every` measures full handshakes).
//!
//! The load connections' record pumping ([`read_plain`], [`write_records`]) is ricochet's own
//! (`ricochet::tls_io`): the socket read in 64 KiB gulps, records written until the socket
//! refuses.

use std::io;
use std::os::fd::RawFd;

use ricochet::tls_io;
use rustls::ClientConnection;

pub use ricochet::client::tls::{parse_pin, TlsClient, TrustSpec, BUFFER_LIMIT, MAX_CA_FILE};

/// Writes records until none is left (`Ok(true)`) or the socket refuses (`Ok(false)`).
pub fn write_records(tls: &mut ClientConnection, fd: RawFd) -> io::Result<bool> {
    tls_io::write_records(tls, fd).map_err(io::Error::from_raw_os_error)
}

/// Moves the handshake on; `Ok(true)` once it is complete.
pub fn handshake(tls: &mut ClientConnection, fd: RawFd) -> io::Result<bool> {
    loop {
        write_records(tls, fd)?;
        if !tls.is_handshaking() {
            return Ok(true);
        }
        match tls.read_tls(&mut tls_io::Fd(fd)) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads plaintext into `buf` (see `ricochet::tls_io::read_plain`: short only when the socket
/// is drained or at the server's end, which `inbound.eof` says).
pub fn read_plain(
    tls: &mut ClientConnection,
    fd: RawFd,
    buf: &mut [u8],
    inbound: &mut tls_io::Inbound,
) -> io::Result<usize> {
    tls_io::read_plain(tls, fd, buf, inbound).map_err(|e| match e {
        tls_io::TLS_FAILED => io::Error::new(io::ErrorKind::InvalidData, "TLS protocol error"),
        e => io::Error::from_raw_os_error(e),
    })
}
