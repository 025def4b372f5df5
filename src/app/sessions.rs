//! Live sessions, so that a policy reload can end those whose admin or key was revoked and a
//! reviewer can end one from the console.
//!
//! Invariant: a session is registered from its SESSION_START (before the target is dialled) until
//! it ends, so a revocation during dialling is not missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::keys::PublicKey;

use crate::policy::Policy;
use crate::proxy::SessionStop;
use crate::sync::lock;

struct Entry {
    admin: String,
    key: PublicKey,
    stop: SessionStop,
}

#[derive(Default)]
pub struct LiveSessions {
    inner: Mutex<HashMap<String, Entry>>,
}

impl LiveSessions {
    /// Registers a session until the returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        session: &str,
        admin: &str,
        key: &PublicKey,
        stop: SessionStop,
    ) -> Registration {
        let entry = Entry {
            admin: admin.to_owned(),
            key: key.clone(),
            stop,
        };
        lock(&self.inner).insert(session.to_owned(), entry);
        Registration {
            sessions: self.clone(),
            session: session.to_owned(),
        }
    }

    /// Ends one live session with `reason`; returns its admin, or `None` if it is not live.
    pub fn kill(&self, session: &str, reason: &str) -> Option<String> {
        let sessions = lock(&self.inner);
        let e = sessions.get(session)?;
        e.stop.stop(reason);
        Some(e.admin.clone())
    }

    /// Whether `session` is running now.
    pub fn is_live(&self, session: &str) -> bool {
        lock(&self.inner).contains_key(session)
    }

    /// Ends every live session with `reason`.
    pub fn stop_all(&self, reason: &str) {
        for e in lock(&self.inner).values() {
            e.stop.stop(reason);
        }
    }

    /// Ends every session whose admin or key `policy` no longer lists; returns (session, admin).
    pub fn revoke(&self, policy: &Policy) -> Vec<(String, String)> {
        let mut ended = Vec::new();
        for (id, e) in lock(&self.inner).iter() {
            if policy.key_entry(&e.admin, &e.key).is_none() {
                e.stop.stop("access revoked by the policy, session ended");
                ended.push((id.clone(), e.admin.clone()));
            }
        }
        ended
    }
}

/// Keeps a session registered while it lives.
pub struct Registration {
    sessions: Arc<LiveSessions>,
    session: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.sessions.inner).remove(&self.session);
    }
}
