//! The SSH front door: where admins connect with a stock OpenSSH client and a security key.
//!
//! Invariants: only `publickey` authentication with a security-key type listed for the named
//! admin succeeds, and identity comes from the key whose signature russh verified; that
//! signature's flags must show what the key's policy entry demands (a touch, the PIN) and its
//! counter must rise (see [`crate::seckey`]); other methods, plain keys and certificates are
//! refused. The verified signature reaches `auth_publickey` through stapsteen's russh patch
//! (`nix/russh-0.65.1-verified-signature.patch`): the README's "The russh patch" says why and how
//! to drop it when upstream exposes the signature. Unauthenticated connections are limited in number and
//! in time. Every accepted channel request is bound to the authenticated admin.

#[cfg(debug_assertions)]
mod bypass;
mod handler;
mod request;
mod sessions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use russh::keys::PrivateKey;
use russh::server::{self, Config as ServerConfig};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::audit::{AuditChain, Code, Event};
use crate::clock::Clock;
use crate::config::Config;
use crate::firewall::Enforcer;
use crate::policy::{GrantName, Policy};
use crate::recording::RecordingStore;
use crate::seckey::CounterStore;
use crate::secrets::Secret;

pub use handler::Connection;
pub use request::{Action, Login, action};
pub use sessions::LiveSessions;

/// State shared by all connections.
pub struct Shared {
    pub config: Config,
    pub policy: RwLock<Arc<Policy>>,
    pub ca_key: Secret<PrivateKey>,
    pub clock: Arc<dyn Clock>,
    pub store: RecordingStore,
    pub audit: Arc<AuditChain>,
    pub sessions: Arc<LiveSessions>,
    /// Kernel enforcement, when the config enables it.
    pub firewall: Option<Arc<Enforcer>>,
    /// The last signature counter of each admin key.
    pub counters: Arc<CounterStore>,
    unauthenticated: Arc<Semaphore>,
}

impl Shared {
    pub fn new(
        config: Config,
        policy: Policy,
        ca_key: Secret<PrivateKey>,
        clock: Arc<dyn Clock>,
        firewall: Option<Arc<Enforcer>>,
        audit: Arc<AuditChain>,
        counters: CounterStore,
    ) -> Self {
        let store = RecordingStore::new(config.recordings_dir());
        let unauthenticated = Arc::new(Semaphore::new(config.limits.max_unauthenticated));
        let sessions: Arc<LiveSessions> = Arc::default();
        let live = sessions.clone();
        audit.on_storage_failure(Box::new(move |reason| live.stop_all(reason)));
        Self {
            config,
            policy: RwLock::new(Arc::new(policy)),
            ca_key,
            clock,
            store,
            audit,
            sessions,
            firewall,
            counters: Arc::new(counters),
            unauthenticated,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The socket mark for connections under `grant`; `Err` with a reason while the kernel
    /// rules are not in place, so that no session starts without them.
    pub fn mark_for(&self, grant: &GrantName) -> Result<Option<u32>, &'static str> {
        match &self.firewall {
            None => Ok(None),
            Some(fw) if fw.in_force() => Ok(Some(crate::firewall::mark(grant))),
            Some(_) => Err("the bastion's firewall is not in place; try again shortly"),
        }
    }

    /// Replaces the policy; running sessions keep the grant they started with.
    pub fn set_policy(&self, policy: Policy) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
        }
    }
}

/// The russh server configuration: our algorithms, publickey only, our limits.
pub fn server_config(host_key: &Secret<PrivateKey>, config: &Config) -> ServerConfig {
    let limits = &config.limits;
    ServerConfig {
        server_id: SshId::Standard("SSH-2.0-stapsteen".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: limits.auth_rejection_time,
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        keys: vec![host_key.expose().clone()],
        max_auth_attempts: limits.max_auth_attempts,
        inactivity_timeout: None,
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        preferred: crate::algorithms::front_door(),
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        ..Default::default()
    }
}

/// Accepts connections on `listener` until the task is dropped.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    server_config: Arc<ServerConfig>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.unauthenticated.clone().try_acquire_owned() else {
            Event::new(Code::ConnLimit)
                .source(Some(peer))
                .reason("too many unauthenticated connections")
                .emit();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            shared.clone(),
            server_config.clone(),
            permit,
        ));
    }
}

/// Read buffer under each SSH connection, front door and upstream.
pub const READ_BUFFER: usize = 128 * 1024;

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    config: Arc<ServerConfig>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let authenticated = Arc::new(AtomicBool::new(false));
    let grace = shared.config.limits.login_grace;
    let handler = Connection::new(shared, Some(peer), permit, authenticated.clone());
    let run = async move {
        // The SSH layer reads each packet in two exact reads; a buffer lets one system call
        // bring in several packets.
        let stream = tokio::io::BufReader::with_capacity(READ_BUFFER, stream);
        match server::run_stream(config, stream, handler).await {
            Ok(session) => {
                let _ = session.await;
            }
            Err(e) => tracing::debug!("handshake with {peer} failed: {e:?}"),
        }
    };
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => return,
        _ = tokio::time::sleep(grace) => {}
    }
    if !authenticated.load(Ordering::SeqCst) {
        Event::new(Code::LoginTimeout)
            .source(Some(peer))
            .reason(format!("not authenticated within {}s", grace.as_secs()))
            .emit();
        return;
    }
    run.await;
}
