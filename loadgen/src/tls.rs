//! loadgen's TLS client side (rustls, the `ring` provider): which certificates to trust
//! (`--tls-ca`, the system's bundle, or none at all with `--insecure`), the name to ask for
//! (`--sni`, else the target's host), and whether to resume sessions (`--tls-resume`; off by
//! default, so `--reconnect-every` measures full handshakes).
//!
//! The load connections' record pumping ([`read_plain`], [`write_records`]) is ricochet's own
//! (`ricochet::tls_io`): the socket read in 64 KiB gulps, records written until the socket
//! refuses.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use ricochet::tls_io;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// Bytes of plaintext a connection hands rustls ahead of the socket, at most: what it accepted
/// is nearly what went out, so closed-loop start times stay honest.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// The most read from a CA file: the system's bundle is about 200 KiB.
pub const MAX_CA_FILE: u64 = 16 << 20;

/// Where Debian (and most Linux distributions) keep the system's trusted CAs.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How load connections speak TLS.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// Certificates are not verified (`--insecure`): said loudly in the report.
    pub insecure: bool,
}

impl TlsClient {
    /// Trusts `ca` (a PEM file of certificates), or the system bundle when `None`, or nothing
    /// (`insecure`); asks for `name`.
    pub fn new(
        ca: Option<&Path>,
        insecure: bool,
        name: &str,
        resume: bool,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let path = ca.unwrap_or(Path::new(SYSTEM_BUNDLE));
            let mut roots = rustls::RootCertStore::empty();
            let pem = ricochet::files::read_capped(path, MAX_CA_FILE, "--tls-ca").map_err(|e| {
                let hint = if ca.is_none() { " (give --tls-ca PEM, or --insecure)" } else { "" };
                format!("{e}{hint}")
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no CA certificate in the file", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("`{name}` is not a TLS server name: {e}"))?
            .to_owned();
        Ok(TlsClient { config: Arc::new(config), name, insecure })
    }

    /// A new session (its ClientHello waiting to be written).
    pub fn session(&self) -> io::Result<ClientConnection> {
        let mut conn = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(conn)
    }
}

/// `--insecure`: accepts any certificate (the handshake's signatures are still checked, so the
/// session is encrypted, just not authenticated).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

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
