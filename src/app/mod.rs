//! The bastion's shared state: the configuration, the policy in force, the clock, the
//! recordings, the audit chain, the live sessions and the kernel rules. The SSH front door and
//! the review console both work on it; neither reaches into the other.
//!
//! Invariants: the policy is replaced whole, so a reader sees the old or the new one, never a
//! mix; no session starts while the kernel rules are not in place ([`Bastion::mark_for`]); a storage
//! failure of the audit chain ends every live session.

mod sessions;

use std::sync::{Arc, RwLock};

use crate::audit::AuditChain;
use crate::clock::Clock;
use crate::config::Config;
use crate::firewall::Enforcer;
use crate::policy::{GrantName, Policy};
use crate::recording::RecordingStore;

pub use sessions::{LiveSessions, Registration};

pub struct Bastion {
    pub config: Config,
    policy: RwLock<Arc<Policy>>,
    pub clock: Arc<dyn Clock>,
    pub store: RecordingStore,
    pub audit: Arc<AuditChain>,
    pub sessions: Arc<LiveSessions>,
    /// Kernel enforcement, when the config enables it.
    pub firewall: Option<Arc<Enforcer>>,
}

impl Bastion {
    pub fn new(
        config: Config,
        policy: Policy,
        clock: Arc<dyn Clock>,
        firewall: Option<Arc<Enforcer>>,
        audit: Arc<AuditChain>,
    ) -> Self {
        let store = RecordingStore::new(config.recordings_dir());
        let sessions: Arc<LiveSessions> = Arc::default();
        let live = sessions.clone();
        audit.on_storage_failure(Box::new(move |reason| live.stop_all(reason)));
        Self {
            config,
            policy: RwLock::new(Arc::new(policy)),
            clock,
            store,
            audit,
            sessions,
            firewall,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the policy; running sessions keep the grant they started with.
    pub fn set_policy(&self, policy: Policy) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
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
}
