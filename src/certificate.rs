//! The TLS listeners' identity: a certificate chain and key loaded from PEM files, or a
//! self-signed certificate generated at start (rcgen: ECDSA P-256) for `localhost`, `127.0.0.1`,
//! `::1` and every extra name. The certificate (never the key) is written to a file that a
//! client can trust, and the ready line names it with the SHA-256 fingerprint of the leaf's DER.
//!
//! TLS 1.3 and 1.2 with rustls's safe defaults, on the `ring` provider (it builds with only the
//! Rust toolchain and a C compiler).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::error::{Error, Result};

/// Where the TLS identity comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM, leaf first); with `key`. `None`: generate one.
    pub cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Extra names for a generated certificate (DNS names or IP addresses).
    pub names: Vec<String>,
    /// Where to write a generated certificate (kept after exit). `None`: a file in the temp
    /// directory, removed at exit.
    pub cert_out: Option<PathBuf>,
}

/// A loaded or generated identity, ready to serve.
#[derive(Debug)]
pub(crate) struct Identity {
    pub config: Arc<ServerConfig>,
    /// The certificate file a client can trust.
    pub cert_path: PathBuf,
    /// Lowercase hex SHA-256 of the leaf certificate's DER.
    pub sha256: String,
    /// A generated certificate in the temp directory: removed when the identity goes.
    temp: bool,
}

impl Drop for Identity {
    fn drop(&mut self) {
        if self.temp {
            let _ = std::fs::remove_file(&self.cert_path);
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The lowercase hex SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

impl Identity {
    /// Loads or generates the identity `settings` describe.
    pub(crate) fn new(settings: &TlsSettings) -> Result<Identity> {
        let (chain, key, cert_path, temp) = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = load(cert, key)?;
                (chain, key, cert.clone(), false)
            }
            (None, None) => generate(settings)?,
            _ => {
                return Err(Error::Tls("--tls-cert and --tls-key go together".into()));
            }
        };
        let sha256 = fingerprint(&chain[0]);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Tls(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match (&settings.cert, &settings.key) {
                (Some(cert), Some(key)) => Error::Tls(format!(
                    "--tls-key {} is not the key of the certificate in --tls-cert {} ({e}): give \
                     the key the certificate was made with",
                    key.display(),
                    cert.display()
                )),
                _ => Error::Tls(format!("TLS: the generated certificate and key do not fit: {e}")),
            })?;
        // A TLS 1.3 session's records are protected by the transport once the handshake is
        // done, with the secrets rustls hands over (src/tls13.rs).
        config.enable_secret_extraction = true;
        Ok(Identity { config: Arc::new(config), cert_path, sha256, temp })
    }
}

/// The most read from a certificate chain or key file (a chain is a few KiB; a bundle of a few
/// hundred certificates still fits).
pub const MAX_PEM_FILE: u64 = 1 << 20;

fn load(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let bad = |path: &Path, what: &str, e: &dyn std::fmt::Display| {
        Error::Tls(format!("--tls-{what} {}: {e}", path.display()))
    };
    let cert_pem =
        crate::files::read_capped(cert, MAX_PEM_FILE, "--tls-cert").map_err(Error::Tls)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, "cert", &e))?;
    if chain.is_empty() {
        return Err(bad(cert, "cert", &"no CERTIFICATE in the file"));
    }
    let key_pem = crate::files::read_capped(key, MAX_PEM_FILE, "--tls-key").map_err(Error::Tls)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(key, "key", &e))?;
    Ok((chain, key))
}

type Generated = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, PathBuf, bool);

fn generate(settings: &TlsSettings) -> Result<Generated> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    for name in &settings.names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let failed = |e: rcgen::Error| Error::Tls(format!("generating a TLS certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    // Named for what made it, so that whoever meets it (a browser's warning, `openssl x509
    // -text`) knows where it came from.
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "ricochet self-signed certificate");
    subject.push(rcgen::DnType::OrganizationName, "ricochet");
    params.distinguished_name = subject;
    let signing_key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&signing_key).map_err(failed)?;
    let der = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let (path, temp) = match &settings.cert_out {
        Some(path) => (path.clone(), false),
        None => {
            let unique = fingerprint(&der);
            let name = format!("ricochet-{}-{}.pem", std::process::id(), &unique[..12]);
            (std::env::temp_dir().join(name), true)
        }
    };
    crate::ready::write_atomic(&path, cert.pem().trim_end()).map_err(|cause| {
        Error::Tls(format!("writing the TLS certificate to {}: {cause}", path.display()))
    })?;
    Ok((vec![der], key, path, temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_names_its_file_and_fingerprint() {
        let identity = Identity::new(&TlsSettings::default()).unwrap();
        let pem = std::fs::read_to_string(&identity.cert_path).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert!(!pem.contains("PRIVATE KEY"), "the certificate file never holds the key");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(identity.sha256, fingerprint(&der));
        assert_eq!(identity.sha256.len(), 64);
        let path = identity.cert_path.clone();
        drop(identity);
        assert!(!path.exists(), "a temp certificate goes with the server");
    }

    #[test]
    fn half_a_pair_or_a_missing_file_is_refused() {
        let only_cert = TlsSettings { cert: Some("/nonexistent.pem".into()), ..Default::default() };
        assert!(Identity::new(&only_cert).unwrap_err().to_string().contains("go together"));
        let missing = TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let err = Identity::new(&missing).unwrap_err().to_string();
        assert!(err.contains("--tls-cert /nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn fingerprint_is_lowercase_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
