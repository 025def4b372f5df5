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

/// FIDO flag: the user touched the key.
pub const FLAG_USER_PRESENT: u8 = 0x01;
/// FIDO flag: the user verified (PIN).
pub const FLAG_USER_VERIFIED: u8 = 0x04;

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
        let counter = self.counter.fetch_add(1, Ordering::SeqCst);
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

    fn answer(&self, request: &[u8]) -> Vec<u8> {
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
