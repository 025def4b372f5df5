//! Attestation: the proof, written by `ssh-keygen -O write-attestation=FILE -O challenge=FILE`
//! at enrolment, that a security key was made inside an authenticator whose maker a root
//! certificate in the policy vouches for.
//!
//! The file is OpenSSH's `ssh-sk-attest-v01` (PROTOCOL.u2f): the attestation certificate, the
//! enrolment signature and the authenticator data. The signature covers the authenticator data
//! and SHA-256 of the challenge (the "packed" format), or for U2F-only keys the U2F registration
//! form; the authenticator data holds the credential's public key, which must be this SSH key,
//! and the hash of the application, which must be the key's. WebAuthn parsing (authenticator
//! data, COSE keys, packed certificate rules) is webauthn-rs-core's; chain building is OpenSSL's.

use std::path::Path;

use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509StoreContext};
use russh::keys::PublicKey;
use russh::keys::ssh_key::encoding::Decode;
use russh::keys::ssh_key::public::KeyData;
use sha2::{Digest, Sha256};
use webauthn_rs_core::attestation::{
    FidoGenCeAaguid, assert_packed_attest_req, validate_extension,
};
use webauthn_rs_core::crypto::verify_signature;
use webauthn_rs_core::internals::AuthenticatorData;
use webauthn_rs_core::proto::{COSEAlgorithm, COSEKey, COSEKeyType, Registration};

const MAGIC: &str = "ssh-sk-attest-v01";
/// Attested credential data is present in the authenticator data.
const FLAG_ATTESTED: u8 = 0x40;

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation roots {path}: {reason}")]
    Roots { path: String, reason: String },
    #[error("not an OpenSSH attestation (ssh-sk-attest-v01): {0}")]
    Format(String),
    #[error("self-attested (no attestation certificate): nothing vouches for the key")]
    SelfAttested,
    #[error("the attestation does not attest this key: {0}")]
    OtherKey(&'static str),
    #[error("the enrolment signature does not verify (wrong challenge file?)")]
    Signature,
    #[error("the attestation certificate: {0}")]
    Certificate(String),
    #[error("the attestation certificate does not chain to a policy root: {0}")]
    Untrusted(String),
}

/// Trust anchors for attestation: the self-signed certificates of the policy's root files;
/// other certificates in those files are intermediates that may complete a chain. Validity
/// periods are not checked (see `load`).
pub struct Roots {
    store: X509Store,
    intermediates: Vec<X509>,
}

impl Roots {
    /// Loads PEM files (each may hold several certificates).
    pub fn load(files: &[&Path]) -> Result<Self, AttestationError> {
        let err = |path: &Path, reason: String| AttestationError::Roots {
            path: path.display().to_string(),
            reason,
        };
        let mut store = X509StoreBuilder::new().map_err(|e| err(Path::new(""), e.to_string()))?;
        let mut intermediates = Vec::new();
        let mut anchors = 0;
        for path in files {
            let pem = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| err(path, e.to_string()))?;
            if certs.is_empty() {
                return Err(err(path, "no PEM certificate in the file".into()));
            }
            for cert in certs {
                let self_signed = cert
                    .public_key()
                    .and_then(|k| cert.verify(&k))
                    .unwrap_or(false);
                if self_signed {
                    store.add_cert(cert).map_err(|e| err(path, e.to_string()))?;
                    anchors += 1;
                } else {
                    intermediates.push(cert);
                }
            }
        }
        // An attestation speaks of the moment of enrolment: a certificate that has expired
        // since must not make the policy, and with it every admin's access, fail.
        store
            .set_flags(X509VerifyFlags::NO_CHECK_TIME)
            .map_err(|e| err(Path::new(""), e.to_string()))?;
        if anchors == 0 {
            return Err(err(
                files.first().copied().unwrap_or(Path::new("")),
                "no self-signed root certificate among the attestation roots".into(),
            ));
        }
        Ok(Self {
            store: store.build(),
            intermediates,
        })
    }
}

/// What a verified attestation says about the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The authenticator model's AAGUID, hex (all zero for U2F-only keys).
    pub aaguid: String,
    /// Subject of the attestation certificate.
    pub certificate: String,
    /// Subject of the root it chains to.
    pub root: String,
}

struct Blob {
    certificate: Vec<u8>,
    signature: Vec<u8>,
    auth_data: Vec<u8>,
}

fn parse(mut r: &[u8]) -> Result<Blob, AttestationError> {
    let f = |e: russh::keys::ssh_key::encoding::Error| AttestationError::Format(e.to_string());
    let magic = String::decode(&mut r).map_err(f)?;
    if magic != MAGIC {
        return Err(AttestationError::Format(format!(
            "starts with {magic:?} (an attestation from OpenSSH before 8.4 lacks the authenticator data)"
        )));
    }
    let certificate = Vec::<u8>::decode(&mut r).map_err(f)?;
    let signature = Vec::<u8>::decode(&mut r).map_err(f)?;
    let cbor = Vec::<u8>::decode(&mut r).map_err(f)?;
    let _reserved_flags = u32::decode(&mut r).map_err(f)?;
    let _reserved = Vec::<u8>::decode(&mut r).map_err(f)?;
    if !r.is_empty() {
        return Err(AttestationError::Format("trailing bytes".into()));
    }
    // The authenticator data is stored CBOR-encoded, as a byte string.
    let auth_data = match serde_cbor_2::from_slice(&cbor) {
        Ok(serde_cbor_2::Value::Bytes(b)) => b,
        _ => {
            return Err(AttestationError::Format(
                "authenticator data is not a CBOR byte string".into(),
            ));
        }
    };
    Ok(Blob {
        certificate,
        signature,
        auth_data,
    })
}

/// The SSH key's application and its public key as a COSE key would hold it.
fn ssh_key_parts(key: &PublicKey) -> Result<(&str, KeyParts), AttestationError> {
    match key.key_data() {
        KeyData::SkEd25519(k) => Ok((k.application(), KeyParts::Ed25519(k.public_key().0))),
        KeyData::SkEcdsaSha2NistP256(k) => {
            let point = k.ec_point();
            match (point.x(), point.y()) {
                (Some(x), Some(y)) => Ok((
                    k.application(),
                    KeyParts::P256(x.to_vec(), y.to_vec(), point.as_bytes().to_vec()),
                )),
                _ => Err(AttestationError::OtherKey(
                    "the SSH key's point is compressed",
                )),
            }
        }
        _ => Err(AttestationError::OtherKey("not a security key")),
    }
}

enum KeyParts {
    Ed25519([u8; 32]),
    /// x, y and the uncompressed SEC1 point.
    P256(Vec<u8>, Vec<u8>, Vec<u8>),
}

/// Verifies the attestation file contents `blob`, made with `challenge`, for `key`.
pub fn verify_attestation(
    blob: &[u8],
    challenge: &[u8],
    key: &PublicKey,
    roots: &Roots,
) -> Result<Attested, AttestationError> {
    let blob = parse(blob)?;
    let (application, parts) = ssh_key_parts(key)?;
    let rp_id_hash = Sha256::digest(application.as_bytes());
    if blob.auth_data.get(..32) != Some(rp_id_hash.as_slice()) {
        return Err(AttestationError::OtherKey("made for another application"));
    }
    if blob
        .auth_data
        .get(32)
        .is_none_or(|f| f & FLAG_ATTESTED == 0)
    {
        return Err(AttestationError::Format(
            "the authenticator data holds no credential".into(),
        ));
    }
    let data = AuthenticatorData::<Registration>::try_from(blob.auth_data.as_slice())
        .map_err(|e| AttestationError::Format(format!("authenticator data: {e:?}")))?;
    let credential = data
        .acd
        .ok_or_else(|| AttestationError::Format("no attested credential".into()))?;
    let cose = COSEKey::try_from(&credential.credential_pk)
        .map_err(|e| AttestationError::Format(format!("credential key: {e:?}")))?;
    let same = match (&cose.key, &parts) {
        (COSEKeyType::EC_OKP(k), KeyParts::Ed25519(pk)) => k.x.as_ref() == pk.as_slice(),
        (COSEKeyType::EC_EC2(k), KeyParts::P256(x, y, _)) => {
            k.x.as_ref() == x.as_slice() && k.y.as_ref() == y.as_slice()
        }
        _ => false,
    };
    if !same {
        return Err(AttestationError::OtherKey("it holds another public key"));
    }
    if blob.certificate.is_empty() {
        return Err(AttestationError::SelfAttested);
    }
    let cert = X509::from_der(&blob.certificate)
        .map_err(|e| AttestationError::Certificate(e.to_string()))?;
    let alg = match cert.public_key().map(|k| k.id()) {
        Ok(Id::EC) => COSEAlgorithm::ES256,
        Ok(Id::ED25519) => COSEAlgorithm::EDDSA,
        Ok(Id::RSA) => COSEAlgorithm::RS256,
        _ => {
            return Err(AttestationError::Certificate(
                "unsupported public key type".into(),
            ));
        }
    };
    let client_data_hash = Sha256::digest(challenge);
    let verifies =
        |signed: &[u8]| verify_signature(alg, &cert, &blob.signature, signed).unwrap_or(false);
    // Packed: over the authenticator data and the client data hash, by a certificate that
    // follows the packed rules (and names the same AAGUID, if it names one).
    let mut packed = blob.auth_data.clone();
    packed.extend_from_slice(&client_data_hash);
    let packed_ok = verifies(&packed);
    if packed_ok {
        assert_packed_attest_req(&cert)
            .map_err(|e| AttestationError::Certificate(format!("{e:?}")))?;
        validate_extension::<FidoGenCeAaguid>(&cert, &credential.aaguid)
            .map_err(|e| AttestationError::Certificate(format!("AAGUID: {e:?}")))?;
    } else {
        // U2F registration: 0x00, application hash, client data hash, key handle, public key.
        // That signature does not cover the authenticator data's AAGUID, so a U2F key must
        // claim none, and its certificate must not be a CA's.
        let KeyParts::P256(_, _, point) = &parts else {
            return Err(AttestationError::Signature);
        };
        let mut u2f = vec![0u8];
        u2f.extend_from_slice(&rp_id_hash);
        u2f.extend_from_slice(&client_data_hash);
        u2f.extend_from_slice(credential.credential_id.as_ref());
        u2f.extend_from_slice(point);
        if alg != COSEAlgorithm::ES256 || !verifies(&u2f) {
            return Err(AttestationError::Signature);
        }
        if credential.aaguid != [0u8; 16] {
            return Err(AttestationError::Certificate(
                "a U2F attestation names an authenticator model (AAGUID) its signature does not cover".into(),
            ));
        }
        let ca = x509_parser::parse_x509_certificate(&blob.certificate)
            .map_err(|e| AttestationError::Certificate(e.to_string()))?
            .1
            .basic_constraints()
            .map_err(|e| AttestationError::Certificate(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if ca {
            return Err(AttestationError::Certificate(
                "a CA certificate cannot attest a key".into(),
            ));
        }
    }
    let root = chain(&cert, roots)?;
    Ok(Attested {
        aaguid: hex::encode(credential.aaguid),
        certificate: subject(&cert),
        root,
    })
}

/// The subject of the root that `cert` chains to, at the current time.
fn chain(cert: &X509, roots: &Roots) -> Result<String, AttestationError> {
    let untrusted = |e: openssl::error::ErrorStack| AttestationError::Untrusted(e.to_string());
    let mut stack = Stack::new().map_err(untrusted)?;
    for c in &roots.intermediates {
        stack.push(c.clone()).map_err(untrusted)?;
    }
    let mut ctx = X509StoreContext::new().map_err(untrusted)?;
    ctx.init(&roots.store, cert, &stack, |c| {
        Ok(if c.verify_cert()? {
            c.chain()
                .and_then(|chain| chain.iter().last().map(|root| Ok(subject(root))))
                .unwrap_or_else(|| Err("empty chain".to_owned()))
        } else {
            Err(c.error().to_string())
        })
    })
    .map_err(untrusted)?
    .map_err(AttestationError::Untrusted)
}

fn subject(cert: &openssl::x509::X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "(no common name)".into())
}
