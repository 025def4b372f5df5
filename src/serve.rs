//! The daemon: loads everything, fails closed on any error, listens, reloads on SIGHUP.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::app::Bastion;
use crate::audit::{AuditChain, Code, Event, NoteSigner};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::firewall::{Enforcer, FirewallError, Outcome, Plan};
use crate::frontdoor::{Shared, accept_loop, server_config};
use crate::offsite::{Offsite, run_uploader};
use crate::policy::{Policy, load_policy};
use crate::seckey::CounterStore;
use crate::secrets::load_key;

/// Sources whose refusals are counted apart in one audit window; more share one count, which
/// bounds the limiter's memory.
const AUDIT_FLOOD_SOURCES: usize = 1024;

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
    pub app: Arc<Bastion>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Loads policy and keys, binds the listeners and starts accepting.
pub async fn start(config: Config) -> Result<Running> {
    let policy = load_policy(&config.policy).inspect_err(|e| {
        Event::new(Code::PolicyReloadFailed)
            .reason(e.to_string())
            .emit();
    })?;
    policy_warnings(&policy);
    let firewall = match config.firewall.enabled {
        true => Some(start_firewall(&config, &policy).await?),
        false => None,
    };
    let host_key = load_key("host_key", &config.host_key)?;
    let ca_key = load_key("ca_key", &config.ca_key)?;
    let signer = NoteSigner::new(&load_key("signing_key", &config.signing_key)?)?;
    let console_dir = config.console.as_ref().map(|_| config.console_dir());
    for dir in [config.recordings_dir(), config.chain_dir()]
        .into_iter()
        .chain(console_dir)
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let clock = Arc::new(SystemClock);
    let audit = Arc::new(AuditChain::open_segmented(
        &config.chain_path(),
        signer,
        clock.clone(),
        config.recording.on_failure,
        config.recording.chain_segment_bytes.get(),
    )?);
    let offsite = config.offsite.as_ref().map(Offsite::new).transpose()?;
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
    let counters = CounterStore::open(&config.counters_path())?;
    let app = Arc::new(Bastion::new(config, policy, clock, firewall, audit));
    let shared = Arc::new(Shared::new(app.clone(), ca_key, counters));
    let mut addrs = Vec::new();
    let limits = &app.config.limits;
    let mut tasks = vec![tokio::spawn(crate::audit::flood::install(
        limits.audit_events_per_source,
        limits.audit_window,
        AUDIT_FLOOD_SOURCES,
        app.clock.clone(),
    ))];
    if app.firewall.is_some() {
        tasks.push(tokio::spawn(keep_firewall(app.clone())));
    }
    tasks.push(tokio::spawn(sweep_reloaded(app.clone())));
    if let Some(o) = offsite {
        tasks.push(tokio::spawn(run_uploader(
            o,
            app.audit.clone(),
            app.store.clone(),
        )));
    }
    if let Some(days) = app.config.recording.retention_days {
        tasks.push(tokio::spawn(crate::recording::run_retention(
            app.store.clone(),
            app.audit.clone(),
            app.clock.clone(),
            days.get(),
        )));
    }
    tasks.extend(crate::console::start(app.clone()).await?);
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
    Ok(Running { app, tasks })
}

/// Keys the policy lets in without a touch or without the PIN, as events for the SIEM.
fn policy_warnings(policy: &Policy) {
    for w in &policy.warnings {
        Event::new(Code::PolicyWarning).reason(w.to_string()).emit();
    }
}

/// Applies the ruleset for the first time; no firewall, no service.
async fn start_firewall(config: &Config, policy: &Policy) -> Result<Arc<Enforcer>> {
    let enforcer = Arc::new(Enforcer::for_config(config));
    let policy = policy.clone();
    let now = jiff::Timestamp::now();
    let plan = on_enforcer(&enforcer, move |e| e.apply(&policy, now))
        .await
        .inspect_err(|e| {
            Event::new(Code::FirewallFailed)
                .reason(e.to_string())
                .emit();
        })
        .context("cannot apply the firewall ruleset")?;
    firewall_applied(&plan, "start");
    Ok(enforcer)
}

/// Runs an enforcer call, which waits for `nft`, off the async workers.
async fn on_enforcer<T: Send + 'static>(
    enforcer: &Arc<Enforcer>,
    call: impl FnOnce(&Enforcer) -> Result<T, FirewallError> + Send + 'static,
) -> Result<T, FirewallError> {
    let enforcer = enforcer.clone();
    tokio::task::spawn_blocking(move || call(&enforcer))
        .await
        .unwrap_or_else(|e| Err(FirewallError::Nft(e.to_string())))
}

fn firewall_applied(plan: &Plan, why: &str) {
    Event::new(Code::FirewallApplied)
        .reason(why)
        .detail("grant_elements", plan.elements.len())
        .emit();
}

/// Ends sessions and forwards whose grant a reload made end earlier than their own deadline
/// ([`crate::app::LiveSessions::sweep`]).
async fn sweep_reloaded(app: Arc<Bastion>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        revoked_events(app.sessions.sweep(app.clock.now()));
    }
}

/// `SESSION_REVOKED` for each connection, session or forward a policy no longer allows.
fn revoked_events(ended: Vec<crate::app::Ended>) {
    for e in ended {
        let mut event = Event::new(Code::SessionRevoked)
            .admin(e.admin)
            .reason(e.revoked.to_string())
            .detail("removed", e.revoked.kind())
            .detail("ended", e.slot.as_str());
        if let Some(s) = e.session {
            event = event.session(s);
        }
        event.emit();
    }
}

/// Follows grant windows and validity, and puts the table back if it is changed from outside.
async fn keep_firewall(app: Arc<Bastion>) {
    let Some(enforcer) = app.firewall.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(crate::firewall::CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (policy, now) = (app.policy(), app.clock.now());
        match on_enforcer(&enforcer, move |e| e.check(&policy, now)).await {
            Ok(Outcome::Unchanged) => {}
            Ok(Outcome::Rescheduled) => Event::new(Code::FirewallApplied)
                .reason("a grant opened or closed")
                .emit(),
            Ok(Outcome::Repaired(what)) => Event::new(Code::FirewallDrift)
                .reason(format!("changed from outside ({what}); put back"))
                .emit(),
            Err(e) => Event::new(Code::FirewallFailed)
                .reason(e.to_string())
                .emit(),
        }
    }
}

impl Running {
    /// Serves until SIGTERM or SIGINT; reloads the policy on SIGHUP.
    pub async fn wait(self) -> Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload().await,
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        self.stop();
        Ok(())
    }

    pub async fn reload(&self) {
        let path = &self.app.config.policy;
        match load_policy(path) {
            Ok(p) => {
                if let Some(enforcer) = &self.app.firewall {
                    let (policy, now) = (p.clone(), self.app.clock.now());
                    match on_enforcer(enforcer, move |e| e.apply(&policy, now)).await {
                        Ok(plan) => firewall_applied(&plan, "policy reload"),
                        Err(e) => {
                            Event::new(Code::FirewallFailed)
                                .reason(e.to_string())
                                .emit();
                            Event::new(Code::PolicyReloadFailed)
                                .reason("the firewall could not be applied; the previous policy and ruleset stay in force")
                                .emit();
                            return;
                        }
                    }
                }
                policy_warnings(&p);
                // Incident response: what the new policy no longer allows (an admin, a key, a
                // grant) ends at once, connections included.
                let ended = self.app.set_policy(p);
                Event::new(Code::PolicyLoaded)
                    .detail("file", path.display().to_string())
                    .emit();
                revoked_events(ended);
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
        // What the audit flood limiter still holds is logged before the process ends.
        crate::audit::flood::flush();
    }
}
