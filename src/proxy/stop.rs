//! Ending a running session from outside its pump, with a reason for the admin and the audit
//! trail: a failed recording write, a closed target channel, a revocation, a lost connection.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// Shared by everything that may end one session; the pump waits on it.
#[derive(Clone, Default)]
pub struct SessionStop {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl SessionStop {
    /// Ends the session, telling the admin why.
    pub fn stop(&self, reason: impl Into<String>) {
        *lock(&self.reason) = Some(reason.into());
        self.token.cancel();
    }

    /// Ends the session because the admin's side is gone; there is nobody left to tell.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// The reason, if the session has been stopped.
    pub fn stopped(&self) -> Option<String> {
        self.token
            .is_cancelled()
            .then(|| lock(&self.reason).clone().unwrap_or_default())
    }

    /// Runs `work` unless the session is stopped first; then `Err` with the reason for the
    /// admin ("admin disconnected" when none was given).
    pub async fn unless_stopped<T>(&self, work: impl Future<Output = T>) -> Result<T, String> {
        tokio::select! {
            out = work => Ok(out),
            reason = self.wait() => Err(reason.unwrap_or_else(|| "admin disconnected".into())),
        }
    }

    /// Waits until the session is stopped; `None` when no reason was given.
    pub async fn wait(&self) -> Option<String> {
        self.token.cancelled().await;
        lock(&self.reason).clone()
    }
}
