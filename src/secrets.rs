//! Secrets: the one wrapper type for key material, and loading of the bastion's private keys.
//!
//! Invariants: secret bytes only live inside [`Secret`], which wipes them on drop and never prints
//! them; a key file readable by group or others is refused; when systemd passes credentials
//! (`$CREDENTIALS_DIRECTORY`), a credential of the same name wins over the configured path.

use std::fmt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{Algorithm, PrivateKey};
use zeroize::Zeroize;

/// Wipes its contents when dropped; `Debug` shows nothing of them; not serializable.
pub struct Secret<T: Wipe>(T);

/// How a secret's contents are wiped.
pub trait Wipe {
    fn wipe(&mut self);
}

impl Wipe for Vec<u8> {
    fn wipe(&mut self) {
        self.zeroize();
    }
}

impl Wipe for String {
    fn wipe(&mut self) {
        self.zeroize();
    }
}

impl Wipe for PrivateKey {
    fn wipe(&mut self) {
        // ssh-key wipes the private scalar of its key types in their own Drop; nothing is left
        // to do here, and no copy of the bytes is kept elsewhere by this module.
    }
}

impl<T: Wipe> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Wipe> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.wipe();
    }
}

impl<T: Wipe> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key {path} is not an OpenSSH private key: {source}")]
    Parse {
        path: PathBuf,
        source: russh::keys::ssh_key::Error,
    },
    #[error("key {path} is encrypted; the bastion needs it unencrypted (systemd keeps it safe)")]
    Encrypted { path: PathBuf },
    #[error("key {path} is {algorithm}, only ssh-ed25519 is accepted here")]
    Algorithm { path: PathBuf, algorithm: String },
    #[error("key {path} exists already; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("cannot write key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode key {path}: {source}")]
    Encode {
        path: PathBuf,
        source: russh::keys::ssh_key::Error,
    },
    #[error("all keys exist already; refusing to overwrite them")]
    AllExist,
}

/// Where a key is read from: the systemd credential `name` if present, else `path`. An empty
/// `name` (a key that is no credential, such as a target's static key) is always `path`.
pub fn key_source(name: &str, path: &Path) -> PathBuf {
    if name.is_empty() {
        return path.to_owned();
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let cred = Path::new(&dir).join(name);
        if cred.exists() {
            return cred;
        }
    }
    path.to_owned()
}

/// Loads an Ed25519 private key in OpenSSH format.
pub fn load_key(name: &str, path: &Path) -> Result<Secret<PrivateKey>, SecretError> {
    let key = load_private_key(name, path)?;
    if key.expose().algorithm() != Algorithm::Ed25519 {
        return Err(SecretError::Algorithm {
            path: key_source(name, path),
            algorithm: key.expose().algorithm().to_string(),
        });
    }
    Ok(key)
}

/// Reads a secret file: the systemd credential `name` if present, else `path`. A file that group
/// or others may read is refused. Returns the path it came from, for messages.
pub fn read_secret(name: &str, path: &Path) -> Result<(PathBuf, Secret<String>), SecretError> {
    let path = key_source(name, path);
    let read_err = |source| SecretError::Read {
        path: path.clone(),
        source,
    };
    let meta = std::fs::metadata(&path).map_err(read_err)?;
    if meta.mode() & 0o077 != 0 {
        return Err(SecretError::Permissions {
            path,
            mode: meta.mode() & 0o777,
        });
    }
    let text = Secret::new(std::fs::read_to_string(&path).map_err(read_err)?);
    Ok((path, text))
}

/// Loads an unencrypted private key of any type in OpenSSH format.
pub fn load_private_key(name: &str, path: &Path) -> Result<Secret<PrivateKey>, SecretError> {
    let (path, bytes) = read_secret(name, path)?;
    let key = PrivateKey::from_openssh(bytes.expose()).map_err(|source| SecretError::Parse {
        path: path.clone(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(SecretError::Encrypted { path });
    }
    Ok(Secret::new(key))
}

/// Creates whichever of the bastion's own keys (host, user CA, audit signing) do not exist
/// yet, never overwriting one; refuses when all exist. Returns one line per key for the
/// operator: its path with fingerprint and name, or that it was kept.
pub fn init_keys(host: &Path, ca: &Path, signing: &Path) -> Result<Vec<String>, SecretError> {
    if [host, ca, signing].iter().all(|p| p.exists()) {
        return Err(SecretError::AllExist);
    }
    // The signing key's comment is its name in signed notes: no spaces.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let audit_name = format!("stapsteen-audit@{}", hostname.trim());
    let mut lines = Vec::new();
    for (path, comment) in [
        (host, "stapsteen host key"),
        (ca, "stapsteen user CA"),
        (signing, audit_name.as_str()),
    ] {
        if path.exists() {
            lines.push(format!("{}: exists, kept", path.display()));
            continue;
        }
        let key = generate_key(comment);
        write_new_key(path, &key)?;
        lines.push(format!(
            "{}: {} {comment}",
            path.display(),
            key.expose().fingerprint(russh::keys::HashAlg::Sha256)
        ));
    }
    Ok(lines)
}

/// A new random Ed25519 key.
pub fn generate_key(comment: &str) -> Secret<PrivateKey> {
    let mut seed: [u8; 32] = rand::random();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.zeroize();
    let mut key = key;
    key.set_comment(comment);
    Secret::new(key)
}

/// Writes a new key (mode 0600) and its `.pub` next to it; never overwrites.
pub fn write_new_key(path: &Path, key: &Secret<PrivateKey>) -> Result<(), SecretError> {
    let werr = |source: std::io::Error| SecretError::Write {
        path: path.to_owned(),
        source,
    };
    let encode = |source| SecretError::Encode {
        path: path.to_owned(),
        source,
    };
    let text = key.expose().to_openssh(LineEnding::LF).map_err(encode)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SecretError::Exists {
                path: path.to_owned(),
            },
            _ => werr(e),
        })?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(werr)?;
    let public = key.expose().public_key().to_openssh().map_err(encode)?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    std::fs::write(pub_path, format!("{public}\n")).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
    }

    #[test]
    fn key_roundtrip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_key(&path, &generate_key("t")).unwrap();
        assert!(matches!(
            write_new_key(&path, &generate_key("t")),
            Err(SecretError::Exists { .. })
        ));
        load_key("k", &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_key("k", &path),
            Err(SecretError::Permissions { .. })
        ));
    }
}
