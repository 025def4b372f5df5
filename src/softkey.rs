//! A software security key, for the demo and the tests only: an OpenSSH agent that holds one
//! `sk-ssh-ed25519@openssh.com` or `sk-ecdsa-sha2-nistp256@openssh.com` key and signs the way a
//! FIDO authenticator does, with flags and a counter chosen by the caller. The stock `ssh` client talks to it through `SSH_AUTH_SOCK`.
//!
//! It offers no protection a hardware key gives (the private key is a file); the bastion gives
//! it no special trust: its public key must be listed in policy like any other.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use russh::keys::ssh_key::encoding::{Decode, Encode};
use russh::keys::ssh_key::private::{EcdsaKeypair, KeypairData};
use russh::keys::ssh_key::public::{Ed25519PublicKey, KeyData, SkEcdsaSha2NistP256, SkEd25519};
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, Signature};
use russh::keys::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use signature::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::secrets::Secret;

pub use crate::seckey::{USER_PRESENT as FLAG_USER_PRESENT, USER_VERIFIED as FLAG_USER_VERIFIED};

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;

#[derive(Debug, thiserror::Error)]
pub enum SoftKeyError {
    #[error("software key: {0}")]
    Io(#[from] std::io::Error),
    #[error("software key: {0}")]
    Key(String),
}

/// The software key: an Ed25519 key pair presented as a security key for `application`.
pub struct SoftKey {
    key: Secret<PrivateKey>,
    public: PublicKey,
    flags: u8,
    counter: AtomicU32,
    /// Answers every sign request with failure, as a key the user never touches.
    pub refuse_sign: bool,
    /// How much the counter rises per signature; 0 for a key whose counter stands still.
    pub counter_step: u32,
}

impl SoftKey {
    /// Loads the key file, creating it (an Ed25519 key, or P-256 with `ecdsa`) first if it does
    /// not exist; the security-key public key is written to `<file>.sk.pub`.
    pub fn open(
        path: &Path,
        application: &str,
        flags: u8,
        counter: u32,
        ecdsa: bool,
    ) -> Result<Self, SoftKeyError> {
        let kerr = |e: &dyn std::fmt::Display| SoftKeyError::Key(e.to_string());
        if !path.exists() {
            let key = if ecdsa {
                let k = PrivateKey::random(
                    &mut rand::rng(),
                    Algorithm::Ecdsa {
                        curve: EcdsaCurve::NistP256,
                    },
                )
                .map_err(|e| kerr(&e))?;
                Secret::new(k)
            } else {
                crate::secrets::generate_key("stapsteen-softkey")
            };
            crate::secrets::write_new_key(path, &key).map_err(|e| kerr(&e))?;
        }
        let key = crate::secrets::load_private_key("", path).map_err(|e| kerr(&e))?;
        let data = match key.expose().key_data() {
            KeypairData::Ed25519(k) => {
                KeyData::SkEd25519(SkEd25519::new(Ed25519PublicKey(k.public.0), application))
            }
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 { public, .. }) => {
                KeyData::SkEcdsaSha2NistP256(SkEcdsaSha2NistP256::new(*public, application))
            }
            _ => {
                return Err(SoftKeyError::Key(
                    "the key file must hold an Ed25519 or P-256 key".into(),
                ));
            }
        };
        let public = PublicKey::new(data, "software security key");
        let mut pub_path = path.as_os_str().to_owned();
        pub_path.push(".sk.pub");
        let line = public.to_openssh().map_err(|e| kerr(&e))?;
        std::fs::write(pub_path, format!("{line}\n"))?;
        Ok(Self {
            key,
            public,
            flags,
            counter: AtomicU32::new(counter),
            refuse_sign: false,
            counter_step: 1,
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message` as an authenticator would: over SHA-256(application), flags, counter and
    /// SHA-256(message).
    fn sign(&self, message: &[u8]) -> Result<Signature, SoftKeyError> {
        let kerr = |e: &dyn std::fmt::Display| SoftKeyError::Key(e.to_string());
        let (application, algorithm) = match self.public.key_data() {
            KeyData::SkEd25519(k) => (k.application(), Algorithm::SkEd25519),
            KeyData::SkEcdsaSha2NistP256(k) => (k.application(), Algorithm::SkEcdsaSha2NistP256),
            _ => return Err(SoftKeyError::Key("not a security key".into())),
        };
        let counter = self.counter.fetch_add(self.counter_step, Ordering::SeqCst);
        let mut signed = Vec::with_capacity(69);
        signed.extend(Sha256::digest(application.as_bytes()));
        signed.push(self.flags);
        signed.extend(counter.to_be_bytes());
        signed.extend(Sha256::digest(message));
        // The authenticator's signature is an ordinary Ed25519 / ECDSA-SHA256 signature over
        // `signed`; the flags and counter follow it in the SSH encoding.
        let plain: Signature = match self.key.expose().key_data() {
            KeypairData::Ed25519(k) => k.try_sign(&signed),
            KeypairData::Ecdsa(k) => k.try_sign(&signed),
            _ => return Err(SoftKeyError::Key("unsupported key".into())),
        }
        .map_err(|e| kerr(&e))?;
        let mut data = plain.as_bytes().to_vec();
        data.push(self.flags);
        data.extend(counter.to_be_bytes());
        Signature::new(algorithm, data).map_err(|e| kerr(&e))
    }

    /// An attestation of this key in OpenSSH's `ssh-sk-attest-v01` form, as
    /// `ssh-keygen -O write-attestation=FILE -O challenge=FILE` writes it: packed format, signed
    /// by an attestation certificate that the test root in `root_dir` issues (root and its key
    /// are created there on first use, `root.pem` and `root.key`).
    pub fn attest(&self, root_dir: &Path, challenge: &[u8]) -> Result<Vec<u8>, SoftKeyError> {
        attestation::attest(&self.public, root_dir, challenge)
    }

    pub(crate) fn answer(&self, request: &[u8]) -> Vec<u8> {
        self.try_answer(request)
            .unwrap_or_else(|| vec![SSH_AGENT_FAILURE])
    }

    fn try_answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let (kind, mut body) = request.split_first()?;
        let mut out = Vec::new();
        let blob = self.public.key_data().encode_vec().ok()?;
        match *kind {
            SSH_AGENTC_REQUEST_IDENTITIES => {
                out.push(SSH_AGENT_IDENTITIES_ANSWER);
                1u32.encode(&mut out).ok()?;
                blob.encode(&mut out).ok()?;
                "software security key".encode(&mut out).ok()?;
            }
            SSH_AGENTC_SIGN_REQUEST => {
                let key = Vec::<u8>::decode(&mut body).ok()?;
                let data = Vec::<u8>::decode(&mut body).ok()?;
                if key != blob || self.refuse_sign {
                    return None;
                }
                let sig = self.sign(&data).ok()?.encode_vec().ok()?;
                out.push(SSH_AGENT_SIGN_RESPONSE);
                sig.encode(&mut out).ok()?;
            }
            _ => return None,
        }
        Some(out)
    }

    /// Serves the agent protocol on `socket` until the task is dropped.
    pub async fn serve(self: Arc<Self>, socket: &Path) -> Result<(), SoftKeyError> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        loop {
            let (mut stream, _) = listener.accept().await?;
            let key = self.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(len) = stream.read_u32().await else {
                        return;
                    };
                    if len > 256 * 1024 {
                        return;
                    }
                    let mut buf = vec![0; len as usize];
                    if stream.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let reply = key.answer(&buf);
                    let Ok(n) = u32::try_from(reply.len()) else {
                        return;
                    };
                    if stream.write_u32(n).await.is_err() || stream.write_all(&reply).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
}

/// The software key's attestation: a test root, an attestation certificate, a packed statement.
mod attestation {
    use std::collections::BTreeMap;
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
        SigningKey,
    };
    use russh::keys::PublicKey;
    use russh::keys::ssh_key::encoding::Encode;
    use russh::keys::ssh_key::public::KeyData;
    use serde_cbor_2::Value;
    use sha2::{Digest, Sha256};

    use super::SoftKeyError;

    /// The software key's model id (AAGUID), in the authenticator data and the certificate.
    const AAGUID: [u8; 16] = *b"stapsteen-softky";

    fn kerr(e: impl std::fmt::Display) -> SoftKeyError {
        SoftKeyError::Key(e.to_string())
    }

    fn root_params() -> Result<CertificateParams, SoftKeyError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(kerr)?;
        p.distinguished_name
            .push(DnType::CommonName, "stapsteen test attestation root");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(p)
    }

    /// The root in `dir`, made on first use.
    fn root(dir: &Path) -> Result<Issuer<'static, KeyPair>, SoftKeyError> {
        let key_path = dir.join("root.key");
        if !key_path.exists() {
            std::fs::create_dir_all(dir)?;
            let key = KeyPair::generate().map_err(kerr)?;
            let cert = root_params()?.self_signed(&key).map_err(kerr)?;
            std::fs::write(dir.join("root.pem"), cert.pem())?;
            std::fs::write(&key_path, key.serialize_pem())?;
        }
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?).map_err(kerr)?;
        Ok(Issuer::new(root_params()?, key))
    }

    /// The credential public key as a COSE key (CBOR map).
    fn cose_key(public: &PublicKey) -> Result<Value, SoftKeyError> {
        let i = |n: i128| Value::Integer(n);
        let entries: Vec<(Value, Value)> = match public.key_data() {
            KeyData::SkEd25519(k) => vec![
                (i(1), i(1)),
                (i(3), i(-8)),
                (i(-1), i(6)),
                (i(-2), Value::Bytes(k.public_key().0.to_vec())),
            ],
            KeyData::SkEcdsaSha2NistP256(k) => {
                let p = k.ec_point();
                let (Some(x), Some(y)) = (p.x(), p.y()) else {
                    return Err(kerr("compressed point"));
                };
                vec![
                    (i(1), i(2)),
                    (i(3), i(-7)),
                    (i(-1), i(1)),
                    (i(-2), Value::Bytes(x.to_vec())),
                    (i(-3), Value::Bytes(y.to_vec())),
                ]
            }
            _ => return Err(kerr("not a security key")),
        };
        Ok(Value::Map(entries.into_iter().collect::<BTreeMap<_, _>>()))
    }

    pub(super) fn attest(
        public: &PublicKey,
        root_dir: &Path,
        challenge: &[u8],
    ) -> Result<Vec<u8>, SoftKeyError> {
        let application = match public.key_data() {
            KeyData::SkEd25519(k) => k.application(),
            KeyData::SkEcdsaSha2NistP256(k) => k.application(),
            _ => return Err(kerr("not a security key")),
        };
        // Authenticator data: application hash, flags (UP, UV, AT), counter 0, then the
        // attested credential: AAGUID, credential id, public key.
        let mut auth_data = Sha256::digest(application.as_bytes()).to_vec();
        auth_data.push(0x45);
        auth_data.extend(0u32.to_be_bytes());
        auth_data.extend(AAGUID);
        let credential_id = Sha256::digest(public.key_data().encode_vec().map_err(kerr)?);
        auth_data.extend(32u16.to_be_bytes());
        auth_data.extend(credential_id);
        auth_data.extend(serde_cbor_2::to_vec(&cose_key(public)?).map_err(kerr)?);

        let issuer = root(root_dir)?;
        let key = KeyPair::generate().map_err(kerr)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(kerr)?;
        p.distinguished_name.push(DnType::CountryName, "NL");
        p.distinguished_name
            .push(DnType::OrganizationName, "stapsteen test");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "Authenticator Attestation");
        p.distinguished_name
            .push(DnType::CommonName, "stapsteen software key");
        p.is_ca = IsCa::ExplicitNoCa;
        let mut aaguid_der = vec![0x04, 16];
        aaguid_der.extend(AAGUID);
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
            aaguid_der,
        ));
        let cert = p.signed_by(&key, &issuer).map_err(kerr)?;

        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(challenge));
        let signature = key.sign(&signed).map_err(kerr)?;

        let mut out = Vec::new();
        let e = |r: Result<(), russh::keys::ssh_key::encoding::Error>| r.map_err(kerr);
        e("ssh-sk-attest-v01".encode(&mut out))?;
        e(cert.der().as_ref().encode(&mut out))?;
        e(signature.as_slice().encode(&mut out))?;
        e(serde_cbor_2::to_vec(&Value::Bytes(auth_data))
            .map_err(kerr)?
            .as_slice()
            .encode(&mut out))?;
        e(0u32.encode(&mut out))?;
        e("".encode(&mut out))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;

    #[test]
    fn signature_verifies_as_security_key() {
        let dir = tempfile::tempdir().unwrap();
        for (name, ecdsa) in [("ed", false), ("ec", true)] {
            let k =
                SoftKey::open(&dir.path().join(name), "ssh:", FLAG_USER_PRESENT, 7, ecdsa).unwrap();
            let sig = k.sign(b"hello").unwrap();
            k.public_key().key_data().verify(b"hello", &sig).unwrap();
            assert!(k.public_key().key_data().verify(b"other", &sig).is_err());
            let bytes = sig.as_bytes();
            assert_eq!(bytes[bytes.len() - 5], FLAG_USER_PRESENT);
            assert_eq!(&bytes[bytes.len() - 4..], &7u32.to_be_bytes());
        }
    }
}
