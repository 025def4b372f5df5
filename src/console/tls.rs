//! The console's TLS: TLS 1.3 only, the provider's modern AEAD suites, a certificate from files
//! or a self-signed one made once and kept in the state directory.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rcgen::PublicKeyData as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::ConsoleError;
use crate::config::ConsoleConfig;
use crate::secrets::{Secret, read_secret};

/// A certificate chain, its key, and how operators and browsers recognise it.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Secret<String>,
    /// SHA-256 of the leaf certificate, `AA:BB:...`, as browsers show it.
    pub fingerprint: String,
    /// Base64 SHA-256 of the public key (SubjectPublicKeyInfo), for pinning.
    pub spki_sha256: String,
}

const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";

impl Identity {
    /// The configured certificate, or the self-signed one in `dir` (made on first start).
    pub fn load(config: &ConsoleConfig, dir: &Path) -> Result<Self, ConsoleError> {
        let (cert, key) = match (&config.cert, &config.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => {
                let (cert, key) = (dir.join(CERT), dir.join(KEY));
                if !cert.exists() && !key.exists() {
                    make_self_signed(&config.host, &cert, &key)?;
                }
                (cert, key)
            }
        };
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| ConsoleError::Tls(format!("{}: {e}", p.display())))
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(read(&cert)?.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| ConsoleError::Tls(format!("{}: {e}", cert.display())))?;
        let (key, key_pem) =
            read_secret("console_key", &key).map_err(|e| ConsoleError::Tls(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| ConsoleError::Tls(format!("{}: no certificate", cert.display())))?;
        let pair = rcgen::KeyPair::from_pem(key_pem.expose())
            .map_err(|e| ConsoleError::Tls(format!("{}: {e}", key.display())))?;
        let fingerprint = Sha256::digest(leaf.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let spki_sha256 = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(pair.subject_public_key_info()));
        Ok(Self {
            chain,
            key: key_pem,
            fingerprint,
            spki_sha256,
        })
    }

    /// The rustls configuration: TLS 1.3 only, HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ConsoleError> {
        let tls = |e: rustls::Error| ConsoleError::Tls(e.to_string());
        let key = PrivateKeyDer::from_pem_slice(self.key.expose().as_bytes())
            .map_err(|e| ConsoleError::Tls(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .map_err(tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Makes a self-signed certificate for `host`; the key file is created 0600 and never replaced.
fn make_self_signed(host: &str, cert: &Path, key: &Path) -> Result<(), ConsoleError> {
    let made = rcgen::generate_simple_self_signed(vec![host.to_owned()])
        .map_err(|e| ConsoleError::Tls(e.to_string()))?;
    let key_pem = Secret::new(made.signing_key.serialize_pem());
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), ConsoleError> {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| ConsoleError::Tls(format!("{}: {e}", path.display())))
    };
    write(key, key_pem.expose(), 0o600)?;
    write(cert, &made.cert.pem(), 0o644)
}
