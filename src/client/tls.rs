//! The TLS client side (rustls, the `ring` provider) that loadgen and the chat client share:
//! which certificates to trust (`--tls-ca`: CAs or the server's own certificate; `--tls-pin`:
//! fingerprints; the system's bundle; or none at all with `--insecure`), the name to ask for, and
//! whether to resume sessions.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// Bytes of plaintext a load connection encrypts ahead of the socket, at most: what it accepted
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
    /// Trusts what `trust` says (a certificate from the `--tls-ca` file as it is, a pinned
    /// fingerprint, or a chain to a CA; everything with `insecure`); asks for `name`.
    pub fn new(trust: &TrustSpec<'_>, name: &str, resume: bool) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Verifier::new(trust, Arc::clone(&provider))?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        // A load connection's TLS 1.3 records are protected by `ricochet::tls13` once the
        // handshake is done, with the secrets rustls hands over.
        config.enable_secret_extraction = true;
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("`{name}` is not a TLS server name: {e}"))?
            .to_owned();
        Ok(TlsClient { config: Arc::new(config), name, insecure: trust.insecure })
    }

    /// A new session (its ClientHello waiting to be written).
    pub fn session(&self) -> io::Result<ClientConnection> {
        let mut conn = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(conn)
    }
}

impl TlsClient {
    /// A new unbuffered session (its ClientHello waiting to be written), for a load
    /// connection's [`crate::tls_records::Session`].
    pub fn unbuffered(&self) -> io::Result<UnbufferedClientConnection> {
        UnbufferedClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(io::Error::other)
    }
}

/// What to trust, as the flags say it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustSpec<'a> {
    /// `--tls-ca`: a PEM file of certificates (CAs, or the server's own); `None` with no pins:
    /// the system's bundle.
    pub ca: Option<&'a Path>,
    /// `--tls-pin`: SHA-256 fingerprints of certificates trusted exactly.
    pub pins: &'a [String],
    /// `--insecure`: verify nothing.
    pub insecure: bool,
}

/// Reads a `--tls-pin` value: 64 hex digits (any case, colons allowed, as `openssl x509
/// -fingerprint -sha256` prints them), after an optional `sha256:`; gives them in lowercase,
/// as [`crate::certificate::fingerprint`] writes them.
pub fn parse_pin(text: &str) -> Result<String, String> {
    let hex: String = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text)
        .chars()
        .filter(|&c| c != ':')
        .collect();
    let bad = || {
        format!(
            "`{text}` is not a SHA-256 fingerprint (64 hex digits, as ricochet's ready line prints \
             in `sha256`, or `openssl x509 -noout -fingerprint -sha256 -in CERT`)"
        )
    };
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(hex.to_ascii_lowercase())
}

/// How the server's certificate is judged.
///
/// - `--insecure`: anything (the handshake's signatures are still checked, so the session is
///   encrypted, just not authenticated).
/// - A certificate in the `--tls-ca` file presented as the server's own is trusted as it is
///   (pinning), whatever its CA flag: `openssl req -x509` writes `CA:TRUE`, which WebPKI refuses
///   in a leaf, yet it is exactly what the user said to trust. Its names are still checked
///   against the name asked for.
/// - A certificate whose SHA-256 is given with `--tls-pin` is trusted as it is; its names are
///   not checked (the fingerprint names one certificate, like an SSH host key).
/// - Otherwise it must chain to a CA in the `--tls-ca` file (or the system's bundle) and carry
///   the name asked for (WebPKI).
#[derive(Debug)]
struct Verifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    insecure: bool,
    /// The certificates of the `--tls-ca` file, for an exact match.
    exact: Vec<CertificateDer<'static>>,
    /// Lowercase hex.
    pins: Vec<String>,
    /// WebPKI over the file's (or the system's) certificates; `None` with pins alone.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl Verifier {
    fn new(
        trust: &TrustSpec<'_>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let mut verifier = Verifier {
            provider,
            insecure: trust.insecure,
            exact: Vec::new(),
            pins: Vec::new(),
            chain: None,
        };
        if trust.insecure {
            return Ok(verifier);
        }
        verifier.pins = trust.pins.iter().map(|p| parse_pin(p)).collect::<Result<_, _>>()?;
        if trust.ca.is_none() && !verifier.pins.is_empty() {
            return Ok(verifier);
        }
        let path = trust.ca.unwrap_or(Path::new(SYSTEM_BUNDLE));
        let pem = crate::files::read_capped(path, MAX_CA_FILE, "--tls-ca").map_err(|e| {
            let hint = if trust.ca.is_none() {
                " (give --tls-ca PEM, --tls-pin SHA256 or --insecure)"
            } else {
                ""
            };
            format!("{e}{hint}")
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
            roots.add(cert.clone()).map_err(|e| {
                format!("{}: a certificate that cannot be read: {e}", path.display())
            })?;
            verifier.exact.push(cert);
        }
        if roots.is_empty() {
            return Err(format!(
                "{}: no certificate in the file (a PEM file with -----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&verifier.provider),
        )
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))?;
        verifier.chain = Some(chain);
        Ok(verifier)
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let sha256 = crate::certificate::fingerprint(end_entity);
        if self.pins.contains(&sha256) {
            return Ok(ServerCertVerified::assertion());
        }
        if self.exact.iter().any(|cert| cert[..] == end_entity[..]) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.chain {
            Some(chain) => {
                chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 {sha256}, which is not pinned"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
