//! The bastion's shared state: the configuration, the policy in force, the clock, the
//! recordings, the audit chain, the live sessions and the kernel rules. The SSH front door and
//! the review console both work on it; neither reaches into the other.
//!
//! Invariants: the policy is replaced whole, so a reader sees the old or the new one, never a
//! mix, and what the new one no longer allows ends with the swap ([`LiveSessions`]); no session
//! starts while the kernel rules are not in place ([`Bastion::mark_for`]); a storage failure of
//! the audit chain ends every live session, a failure of one recording only its own session.

mod quota;
mod revocation;
mod sessions;

use std::sync::Arc;

use crate::audit::AuditChain;
use crate::clock::Clock;
use crate::config::Config;
use crate::firewall::Enforcer;
use crate::policy::{GrantName, Policy};
use crate::recording::RecordingStore;

pub use quota::{Charge, RecordingQuota};
pub use revocation::{Access, Under, revoked};
pub use sessions::{Ended, LiveSessions, Refused, Registration, Slot};

pub struct Bastion {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub store: RecordingStore,
    pub audit: Arc<AuditChain>,
    /// The policy in force and what lives under it.
    pub sessions: Arc<LiveSessions>,
    pub quota: Arc<RecordingQuota>,
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
        let sessions = Arc::new(LiveSessions::new(policy, config.limits.clone()));
        let live = sessions.clone();
        audit.on_storage_failure(Box::new(move |reason| live.stop_all(reason)));
        let quota = Arc::new(RecordingQuota::new(
            &config.recording,
            config.recordings_dir(),
            clock.clone(),
        ));
        Self {
            config,
            clock,
            store,
            audit,
            sessions,
            quota,
            firewall,
        }
    }

    /// A bastion in `dir` for unit tests: the example hospital's policy, no firewall, a chain
    /// with a fresh key, the system clock.
    #[cfg(test)]
    pub fn for_tests(dir: &std::path::Path) -> Self {
        #![allow(clippy::unwrap_used)]
        let config = crate::config::Config::parse(
            &dir.join("stapsteen.toml"),
            "listen = []\npolicy = \"p.toml\"\nstate_dir = \"state\"\nhost_key = \"h\"\nca_key = \"c\"\nsigning_key = \"s\"\n[firewall]\nenabled = false\n",
        )
        .unwrap();
        let policy = crate::policy::parse_policy(
            std::path::Path::new("p.toml"),
            include_str!("../../policies/example-hospital.toml"),
        )
        .unwrap();
        Self::new(
            config,
            policy,
            Arc::new(crate::clock::SystemClock),
            None,
            crate::audit::test_chain(dir),
        )
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.sessions.policy()
    }

    /// Replaces the policy and ends every connection, session and forward it no longer allows
    /// (admin, key or grant gone, or the grant no longer covering it); returns what was ended.
    pub fn set_policy(&self, policy: Policy) -> Vec<Ended> {
        self.sessions.replace_policy(policy, self.clock.now())
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
