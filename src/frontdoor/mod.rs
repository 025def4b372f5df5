//! The SSH front door: where admins connect with a stock OpenSSH client and a security key.
//!
//! Invariants: only `publickey` authentication with a security-key type listed for the named
//! admin succeeds, and identity comes from the key whose signature russh verified; that
//! signature's flags must show what the key's policy entry demands (a touch, the PIN) and its
//! counter must rise (see [`crate::seckey`]); other methods, plain keys and certificates are
//! refused. The verified signature reaches `auth_publickey` through stapsteen's russh patch
//! (`nix/russh-0.65.1-verified-signature.patch`): the README's "The russh patch" says why and how
//! to drop it when upstream exposes the signature. Unauthenticated connections are limited in
//! number (in total and per source) and in time, whatever they send (see [`preauth`]). Every
//! accepted channel request is bound to the authenticated admin.

mod budget;
#[cfg(debug_assertions)]
mod bypass;
mod handler;
mod preauth;
mod refusal;
pub(crate) mod request;
#[cfg(debug_assertions)]
mod seam;
mod setup;

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::PrivateKey;
use russh::server::{self, Config as ServerConfig};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;

use crate::app::Bastion;
use crate::audit::{Code, Event};
use crate::config::Config;
use crate::seckey::CounterStore;
use crate::secrets::Secret;

pub use handler::Connection;

/// What the front door adds to the application state: the CA that signs target
/// certificates, the key counters, and the slots for unauthenticated connections (in total and
/// per source).
pub struct Shared {
    pub app: Arc<Bastion>,
    ca_key: Secret<PrivateKey>,
    /// The last signature counter of each admin key.
    counters: Arc<CounterStore>,
    unauthenticated: crate::net::Slots,
}

impl Shared {
    pub fn new(app: Arc<Bastion>, ca_key: Secret<PrivateKey>, counters: CounterStore) -> Self {
        let limits = &app.config.limits;
        let unauthenticated = crate::net::Slots::new(
            limits.max_unauthenticated,
            limits.max_unauthenticated_per_source,
        );
        Self {
            app,
            ca_key,
            counters: Arc::new(counters),
            unauthenticated,
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
        let login = Arc::new(preauth::Login::default());
        let evict: crate::net::Evict = {
            let login = login.clone();
            Arc::new(move || {
                login.expire();
            })
        };
        let slot = match shared.unauthenticated.take_evicting(peer.ip(), evict) {
            Ok(taken) => {
                if let Some(busiest) = taken.evicted {
                    Event::new(Code::ConnLimit)
                        .source(Some(SocketAddr::new(busiest, 0)))
                        .reason(
                            "unauthenticated places full: this source's oldest closed for a newcomer \
                             (from a source that logged in before, or holding fewer)",
                        )
                        .emit();
                }
                taken.slot
            }
            Err(full) => {
                Event::new(Code::ConnLimit)
                    .source(Some(peer))
                    .reason(match full {
                        crate::net::Full::Total => "too many unauthenticated connections",
                        crate::net::Full::Source => {
                            "too many unauthenticated connections from this source"
                        }
                    })
                    .emit();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            shared.clone(),
            server_config.clone(),
            slot,
            login,
        ));
    }
}

/// Serves one connection; one that has not authenticated when the login grace ends is cut off
/// (see [`preauth`]), whatever state its key exchange or authentication is in.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    config: Arc<ServerConfig>,
    slot: crate::net::Slot,
    login: Arc<preauth::Login>,
) {
    let grace = shared.app.config.limits.login_grace;
    let handler = Connection::new(shared, Some(peer), slot, login.clone());
    let stream = preauth::Cut::new(stream, login.clone());
    let run = async move {
        let stream = tokio::io::BufReader::with_capacity(crate::net::READ_BUFFER, stream);
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
    if login.expire() {
        Event::new(Code::LoginTimeout)
            .source(Some(peer))
            .reason(format!("not authenticated within {}s", grace.as_secs()))
            .emit();
    }
    // Once expired, russh's session task fails its next read or write and ends, dropping the
    // handler and the socket.
    run.await;
}
