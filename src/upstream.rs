//! The target side: stapsteen's own SSH connection to a management-network host.
//!
//! Invariants: the target must present a host key pinned in policy (certificates and unknown
//! keys are refused); the bastion logs in with a fresh Ed25519 key and a user certificate from
//! its CA that is valid for minutes only, names the target account as its sole principal, and
//! carries the admin's name and the session id in its key id, so the target's own log names the
//! person. A target that cannot take certificates may instead be given a static key in policy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{
    Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use zeroize::Zeroize;

use crate::ids::SessionId;
use crate::policy::{Account, AdminName, Target};
use crate::secrets::Secret;

/// Certificates are valid this long; clock skew allowance is added before.
const CERT_LIFETIME: Duration = Duration::from_secs(5 * 60);
const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("SSH with {target} failed: {source}")]
    Ssh {
        target: String,
        source: russh::Error,
    },
    #[error("cannot load the static key for {target}: {source}")]
    StaticKey {
        target: String,
        source: crate::secrets::SecretError,
    },
    #[error("host key of {target} does not match the pinned key (it presented {presented})")]
    HostKeyMismatch { target: String, presented: String },
    #[error("{target} refused the bastion's certificate for account {account}")]
    AuthRefused { target: String, account: String },
    #[error("cannot sign certificate: {0}")]
    Certificate(#[from] russh::keys::ssh_key::Error),
    #[error("timed out connecting to {target}")]
    Timeout { target: String },
}

/// Checks the target's host key against the pinned ones and remembers what it saw.
pub struct PinnedHostKey {
    pinned: Vec<PublicKey>,
    presented: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(key.fingerprint(HashAlg::Sha256).to_string());
        }
        Ok(self.pinned.iter().any(|k| k.key_data() == key.key_data()))
    }
}

/// A logged-in connection to a target.
pub struct Connection {
    pub handle: client::Handle<PinnedHostKey>,
    socket: TargetSocket,
}

impl Connection {
    /// What closes this connection's TCP socket from outside russh.
    pub fn socket(&self) -> TargetSocket {
        self.socket.clone()
    }
}

/// A second handle on a target connection's TCP socket: it closes the connection even while
/// russh's loop for it waits (on a pump that reads no more, so on an admin whose window is
/// shut), which a disconnect sent through the [`client::Handle`] would wait behind.
#[derive(Clone)]
pub struct TargetSocket(Arc<std::net::TcpStream>);

impl TargetSocket {
    /// `socket` shares its connection with the stream russh runs on (a duplicated descriptor).
    pub fn new(socket: std::net::TcpStream) -> Self {
        Self(Arc::new(socket))
    }

    /// Resets the connection (see [`abort`]): the target ends the session (its processes lose
    /// their terminal or pipes); russh's loop fails once it reads again.
    pub fn abort(&self) {
        abort(&*self.0);
    }
}

/// Resets a TCP connection to a target at once, whoever else holds its socket: a RST, which the
/// firewall's output chain lets out also after the grant's element is gone (a FIN and the SSH
/// disconnect before it would be dropped, and the target's session would live on). The target's
/// sshd reads ECONNRESET and ends the session. Disconnecting the socket (connect to AF_UNSPEC)
/// is what sends the reset on Linux; an abortive close would wait for every descriptor to close.
pub fn abort(socket: impl std::os::fd::AsFd) {
    if let Err(e) = rustix::net::connect_unspec(socket) {
        tracing::warn!("cannot reset a target connection: {e}");
    }
}

/// Signs a user certificate for `key`, valid now for `account` only.
pub fn sign_certificate(
    ca: &Secret<PrivateKey>,
    key: &PublicKey,
    admin: &AdminName,
    session: &SessionId,
    account: &Account,
    pty: bool,
) -> Result<Certificate, UpstreamError> {
    let now = jiff::Timestamp::now().as_second().max(0).unsigned_abs();
    let nonce: [u8; 16] = rand::random();
    let mut b = Builder::new(
        nonce.to_vec(),
        key.key_data().clone(),
        now.saturating_sub(CLOCK_SKEW.as_secs()),
        now + CERT_LIFETIME.as_secs(),
    )
    .map_err(UpstreamError::from)?;
    b.serial(rand::random()).map_err(UpstreamError::from)?;
    b.cert_type(CertType::User).map_err(UpstreamError::from)?;
    b.key_id(format!("stapsteen admin={admin} session={session}"))
        .map_err(UpstreamError::from)?;
    b.valid_principal(account.as_str())
        .map_err(UpstreamError::from)?;
    if pty {
        b.extension("permit-pty", "").map_err(UpstreamError::from)?;
    }
    b.sign(ca.expose()).map_err(UpstreamError::from)
}

fn client_config() -> client::Config {
    client::Config {
        preferred: crate::algorithms::upstream(),
        nodelay: true,
        inactivity_timeout: None,
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        ..Default::default()
    }
}

/// A marked TCP connection to `addr` on `target` (a port forward), within `timeout`.
pub async fn connect_tcp(
    target: &str,
    addr: std::net::SocketAddr,
    mark: Option<u32>,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, UpstreamError> {
    match tokio::time::timeout(timeout, crate::net::connect(addr, mark)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(UpstreamError::Connect {
            target: target.to_owned(),
            source,
        }),
        Err(_) => Err(UpstreamError::Timeout {
            target: target.to_owned(),
        }),
    }
}

/// Who logs in where, for which session.
#[derive(Clone)]
pub struct Dial<'a> {
    pub target: &'a Target,
    pub account: &'a Account,
    pub admin: &'a AdminName,
    pub session: &'a SessionId,
    pub pty: bool,
    /// The grant's firewall mark, carried by the socket.
    pub mark: Option<u32>,
}

/// The stream, and a [`TargetSocket`] on the same socket (a duplicated descriptor).
fn with_second_handle(
    stream: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, TargetSocket)> {
    let std = stream.into_std()?;
    let second = std.try_clone()?;
    Ok((
        tokio::net::TcpStream::from_std(std)?,
        TargetSocket::new(second),
    ))
}

/// Connects and logs in to the target as the account, within `timeout`.
pub async fn connect(
    dial: Dial<'_>,
    ca: &Secret<PrivateKey>,
    timeout: Duration,
) -> Result<Connection, UpstreamError> {
    let Dial {
        target,
        account,
        admin,
        session,
        pty,
        mark,
    } = dial;
    let name = target.name.to_string();
    let attempt = async {
        let ssh_err = |source: russh::Error| UpstreamError::Ssh {
            target: name.clone(),
            source,
        };
        let connect_err = |source: std::io::Error| UpstreamError::Connect {
            target: name.clone(),
            source,
        };
        let stream = crate::net::connect((target.address, target.port).into(), mark)
            .await
            .map_err(connect_err)?;
        let (stream, socket) = with_second_handle(stream).map_err(connect_err)?;
        let presented = Arc::new(Mutex::new(None));
        let handler = PinnedHostKey {
            pinned: target.host_keys.clone(),
            presented: presented.clone(),
        };
        let mut handle = match client::connect_stream(
            Arc::new(client_config()),
            tokio::io::BufReader::with_capacity(crate::net::READ_BUFFER, stream),
            handler,
        )
        .await
        {
            Ok(h) => h,
            Err(russh::Error::UnknownKey) => {
                let presented = presented
                    .lock()
                    .ok()
                    .and_then(|p| p.clone())
                    .unwrap_or_else(|| "a certificate".to_owned());
                return Err(UpstreamError::HostKeyMismatch {
                    target: name,
                    presented,
                });
            }
            Err(e) => return Err(ssh_err(e)),
        };
        let result = match &target.static_key {
            Some(path) => {
                let key = crate::secrets::load_key("", path).map_err(|source| {
                    UpstreamError::StaticKey {
                        target: name.clone(),
                        source,
                    }
                })?;
                let key = PrivateKeyWithHashAlg::new(Arc::new(key.expose().clone()), None);
                handle.authenticate_publickey(account.as_str(), key).await
            }
            None => {
                let mut seed: [u8; 32] = rand::random();
                let key = Arc::new(PrivateKey::from(Ed25519Keypair::from_seed(&seed)));
                seed.zeroize();
                let cert = sign_certificate(ca, key.public_key(), admin, session, account, pty)?;
                handle
                    .authenticate_openssh_cert(account.as_str(), key, cert)
                    .await
            }
        }
        .map_err(ssh_err)?;
        match result {
            AuthResult::Success => Ok(Connection { handle, socket }),
            AuthResult::Failure { .. } => Err(UpstreamError::AuthRefused {
                target: name,
                account: account.to_string(),
            }),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| UpstreamError::Timeout {
            target: target.name.to_string(),
        })?
}
