//! Live sessions, so that a policy reload can end those whose admin or key was revoked.
//!
//! Invariant: a session is registered from its SESSION_START (before the target is dialled) until
//! it ends, so a revocation during dialling is not missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::keys::PublicKey;
use tokio_util::sync::CancellationToken;

use crate::policy::Policy;

struct Entry {
    admin: String,
    key: PublicKey,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

#[derive(Default)]
pub struct LiveSessions {
    inner: Mutex<HashMap<String, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LiveSessions {
    /// Registers a session until the returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        session: &str,
        admin: &str,
        key: &PublicKey,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    ) -> Registration {
        let entry = Entry {
            admin: admin.to_owned(),
            key: key.clone(),
            cancel,
            reason,
        };
        lock(&self.inner).insert(session.to_owned(), entry);
        Registration {
            sessions: self.clone(),
            session: session.to_owned(),
        }
    }

    /// Ends every session whose admin or key `policy` no longer lists; returns (session, admin).
    pub fn revoke(&self, policy: &Policy) -> Vec<(String, String)> {
        let mut ended = Vec::new();
        for (id, e) in lock(&self.inner).iter() {
            if policy.key_entry(&e.admin, &e.key).is_none() {
                *lock(&e.reason) = Some("access revoked by the policy, session ended".into());
                e.cancel.cancel();
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
