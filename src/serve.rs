//! The daemon: loads everything, fails closed on any error, listens, reloads on SIGHUP.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{Code, Event};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::frontdoor::{Shared, accept_loop, server_config};
use crate::policy::load_policy;
use crate::secrets::load_key;

pub async fn serve(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    crate::audit::init(config.audit);
    let running = start(config).await.inspect_err(|e| {
        Event::new(Code::ServiceFailed)
            .reason(format!("{e:#}"))
            .emit();
    })?;
    running.wait().await
}

/// A started bastion: listeners bound, tasks running.
pub struct Running {
    pub shared: Arc<Shared>,
    pub addrs: Vec<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Loads policy and keys, binds the listeners and starts accepting.
pub async fn start(config: Config) -> Result<Running> {
    let policy = load_policy(&config.policy).inspect_err(|e| {
        Event::new(Code::PolicyReloadFailed)
            .reason(e.to_string())
            .emit();
    })?;
    let host_key = load_key("host_key", &config.host_key)?;
    let ca_key = load_key("ca_key", &config.ca_key)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(config.recordings_dir())
        .with_context(|| format!("cannot create {}", config.recordings_dir().display()))?;
    let server_config = Arc::new(server_config(&host_key, &config));
    let mut listeners = Vec::new();
    for addr in &config.listen {
        listeners.push(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        );
    }
    let fingerprint = host_key.expose().fingerprint(russh::keys::HashAlg::Sha256);
    let shared = Arc::new(Shared::new(config, policy, ca_key, Arc::new(SystemClock)));
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for l in listeners {
        addrs.push(l.local_addr()?);
        tasks.push(tokio::spawn(accept_loop(
            l,
            shared.clone(),
            server_config.clone(),
        )));
    }
    Event::new(Code::ServiceStart)
        .fingerprint(fingerprint)
        .detail(
            "listen",
            addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
        .emit();
    Ok(Running {
        shared,
        addrs,
        tasks,
    })
}

impl Running {
    /// Serves until SIGTERM or SIGINT; reloads the policy on SIGHUP.
    pub async fn wait(self) -> Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload(),
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        self.stop();
        Ok(())
    }

    pub fn reload(&self) {
        let path = &self.shared.config.policy;
        match load_policy(path) {
            Ok(p) => {
                self.shared.set_policy(p);
                Event::new(Code::PolicyLoaded)
                    .detail("file", path.display().to_string())
                    .emit();
                // Incident response: a revoked admin or key loses its running sessions at once.
                for (session, admin) in self.shared.sessions.revoke(&self.shared.policy()) {
                    Event::new(Code::SessionRevoked)
                        .admin(admin)
                        .session(session)
                        .reason("admin or key no longer in the policy")
                        .emit();
                }
            }
            Err(e) => Event::new(Code::PolicyReloadFailed)
                .reason("invalid policy; the previous one stays in force")
                .detail("errors", e.to_string())
                .emit(),
        }
    }

    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
