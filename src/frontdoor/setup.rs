//! Opening a session, step by step. The request is authorized (policy and firewall mark), then
//! recorded: the recording and the chain's start entry exist and the session is registered, so
//! a revocation reaches it from here on ([`Recorded`]); then the target is dialled
//! ([`Recorded::dial`], giving a [`Dialled`]); then the handler opens the target's channel and
//! hands everything to the pump ([`Dialled::into_running`]).
//!
//! Invariant: each step's value owns what a failure must undo. A [`Recorded`] or [`Dialled`]
//! that is dropped before it runs writes the chain's end entry, closes the recording's metadata
//! and audits `SESSION_END` with the reason, and its registration goes with it: no path can
//! leave a session half set up. Port forwards have no recording: their registration and slot are
//! guards dropped when they end.

use std::future::Future;
use std::sync::Arc;

use crate::app::{Access, Bastion, Registration, Slot};
use crate::audit::{Code, Event};
use crate::clock::Clock;
use crate::ids::SessionId;
use crate::proxy::{SessionStop, Transcript};
use crate::recording::{Meta, RecordingStore};
use crate::upstream::UpstreamError;

/// Dials a target; the real one logs in over SSH, the tests' one answers as told.
pub(super) trait Dialer {
    type Conn;
    fn dial(&self) -> impl Future<Output = Result<Self::Conn, UpstreamError>> + Send;
}

/// A session whose recording and start entry exist and which is registered as live.
pub(super) struct Recorded {
    transcript: Option<Transcript>,
    meta: Option<Meta>,
    /// `SESSION_START` as audited, the template of `SESSION_END`.
    event: Event,
    stop: SessionStop,
    registration: Option<Registration>,
    store: RecordingStore,
    clock: Arc<dyn Clock>,
    /// Why the setup ended, if it ends before the pump takes over.
    ending: String,
}

impl Recorded {
    /// Registers the session of `transcript` for `access`, checked against the policy in force
    /// now and the admin's session limit. A refusal is audited (`SESSION_REVOKED` or
    /// `ADMIN_LIMIT`) and stops the session, so that [`Recorded::dial`] dials nothing.
    pub fn new(
        bastion: &Bastion,
        id: &SessionId,
        transcript: Transcript,
        meta: Option<Meta>,
        event: Event,
        access: Access,
    ) -> Self {
        let stop = SessionStop::default();
        let registration = match bastion.sessions.register(
            Slot::Session,
            Some(id.as_str()),
            access,
            stop.clone(),
            bastion.clock.now(),
        ) {
            Ok(r) => Some(r),
            Err(refused) => {
                refused.emit(event.clone());
                stop.stop(format!("session refused: {refused}"));
                None
            }
        };
        Self {
            transcript: Some(transcript),
            meta,
            event,
            stop,
            registration,
            store: bastion.store.clone(),
            clock: bastion.clock.clone(),
            ending: "setup abandoned".into(),
        }
    }

    /// Ends the setup; returns `reason`, for the admin.
    pub fn abandon(mut self, reason: impl Into<String>) -> String {
        self.ending = reason.into();
        self.ending.clone()
    }

    /// Dials with `dialer`. A revocation while dialling ends the attempt with its own reason;
    /// a failure is audited (`HOSTKEY_MISMATCH` or `TARGET_FAILED`). On `Err` the setup is
    /// over and the message is for the admin.
    pub async fn dial<D: Dialer>(
        self,
        dialer: &D,
        target: &str,
    ) -> Result<Dialled<D::Conn>, String> {
        let stop = self.stop.clone();
        if let Some(reason) = stop.stopped() {
            return Err(self.end(reason).await);
        }
        let dialled = match stop.unless_stopped(dialer.dial()).await {
            Ok(d) => d,
            Err(reason) => return Err(self.end(reason).await),
        };
        match dialled {
            Ok(conn) => Ok(Dialled {
                recorded: self,
                conn,
            }),
            Err(e) => {
                let (code, msg) = match &e {
                    UpstreamError::HostKeyMismatch { .. } => (
                        Code::HostKeyMismatch,
                        format!("{target}: host key changed or unknown; refused"),
                    ),
                    _ => (Code::TargetFailed, e.to_string()),
                };
                self.event.clone().reason(e.to_string()).emit_as(code);
                Err(self.end(msg).await)
            }
        }
    }
}

impl Recorded {
    /// Ends the setup and waits until its end entry is stored; returns `reason`, for the admin.
    async fn end(mut self, reason: String) -> String {
        self.ending = reason.clone();
        if let Some(done) = self.ended() {
            done.await;
        }
        reason
    }

    /// What ending the setup takes: the end entry, then the metadata, then `SESSION_END`;
    /// `None` once done. The entry is handed to the writer here, so it is stored even if nobody
    /// awaits the rest.
    fn ended(&mut self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut transcript = self.transcript.take()?;
        let msg = self.ending.clone();
        let finishing = transcript.finish(&format!("end: {msg}"), &msg);
        let meta = self.meta.take().map(|mut m| {
            m.end = Some(self.clock.now());
            m.end_reason = Some(msg.clone());
            m
        });
        let store = self.store.clone();
        let event = self.event.clone().reason(msg);
        Some(async move {
            let _ = finishing.wait().await;
            if let Some(m) = meta {
                let _ = tokio::task::spawn_blocking(move || store.write_meta(&m)).await;
            }
            event.emit_as(Code::SessionEnd);
        })
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // A setup is only dropped inside the daemon's runtime; nothing waits here.
        if let Some(done) = self.ended()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(done);
        }
    }
}

/// A recorded session whose target connection is up.
pub(super) struct Dialled<C> {
    recorded: Recorded,
    pub conn: C,
}

/// What the pump takes over once the session runs.
pub(super) struct Running<C> {
    pub conn: C,
    pub transcript: Transcript,
    pub meta: Option<Meta>,
    pub event: Event,
    pub stop: SessionStop,
    pub registration: Registration,
}

impl<C> Dialled<C> {
    pub fn stop(&self) -> &SessionStop {
        &self.recorded.stop
    }

    /// `SESSION_START` as audited, for events about this session.
    pub fn event(&self) -> &Event {
        &self.recorded.event
    }

    pub fn transcript(&mut self) -> Option<&mut Transcript> {
        self.recorded.transcript.as_mut()
    }

    /// Ends the setup; returns `reason`, for the admin.
    pub fn abandon(self, reason: impl Into<String>) -> String {
        self.recorded.abandon(reason)
    }

    /// Hands everything to the pump; from here on, the pump ends the session.
    pub fn into_running(mut self) -> Option<Running<C>> {
        let r = &mut self.recorded;
        let (transcript, registration) = (r.transcript.take()?, r.registration.take()?);
        Some(Running {
            conn: self.conn,
            transcript,
            meta: r.meta.take(),
            event: r.event.clone(),
            stop: r.stop.clone(),
            registration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Kind, read_lines, verify_chain};

    struct Fake(Result<(), &'static str>);

    impl Dialer for Fake {
        type Conn = ();
        async fn dial(&self) -> Result<(), UpstreamError> {
            match self.0 {
                Ok(()) => Ok(()),
                Err("hang") => std::future::pending().await,
                Err(reason) => Err(UpstreamError::Connect {
                    target: "pacs01".into(),
                    source: std::io::Error::other(reason),
                }),
            }
        }
    }

    struct Bed {
        _dir: tempfile::TempDir,
        bastion: Bastion,
        key: russh::keys::PublicKey,
    }

    impl Bed {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let bastion = Bastion::for_tests(dir.path());
            let key = bastion.policy().admin("j.devries").unwrap().keys[0]
                .key
                .clone();
            Self {
                _dir: dir,
                bastion,
                key,
            }
        }

        async fn recorded(&self) -> (SessionId, Recorded) {
            let id = SessionId::generate(jiff::Timestamp::now());
            let t = Transcript::start(&id, self.bastion.audit.clone(), None, true, false, &[])
                .await
                .unwrap();
            let event = Event::new(Code::SessionStart).session(&id);
            let access = Access {
                admin: "j.devries".into(),
                key: self.key.clone(),
                under: None,
            };
            let r = Recorded::new(&self.bastion, &id, t, None, event, access);
            (id, r)
        }

        /// The `reason` of the chain's end entry for `id`, if there is one.
        fn ended(&self, id: &SessionId) -> Option<String> {
            let audit = &self.bastion.audit;
            let report = verify_chain(&read_lines(audit.path()).unwrap(), audit.verifier());
            report
                .notes(id)
                .into_iter()
                .find(|(e, _)| e.kind == Kind::End)
                .and_then(|(e, _)| e.field("reason").map(str::to_owned))
        }
    }

    #[tokio::test]
    async fn a_failed_dial_undoes_the_setup() {
        let bed = Bed::new();
        let (id, r) = bed.recorded().await;
        assert!(bed.bastion.sessions.is_live(id.as_str()));
        let msg = r.dial(&Fake(Err("refused")), "pacs01").await.err().unwrap();
        assert!(msg.contains("refused"), "{msg}");
        assert!(!bed.bastion.sessions.is_live(id.as_str()));
        assert_eq!(bed.ended(&id).as_deref(), Some(msg.as_str()));
    }

    #[tokio::test]
    async fn a_revocation_while_dialling_ends_it_with_its_reason() {
        let bed = Bed::new();
        let (id, r) = bed.recorded().await;
        let stop = r.stop.clone();
        let dialling = r.dial(&Fake(Err("hang")), "pacs01");
        stop.stop("key revoked");
        let msg = dialling.await.err().unwrap();
        assert_eq!(msg, "key revoked");
        assert!(!bed.bastion.sessions.is_live(id.as_str()));
        assert_eq!(bed.ended(&id).as_deref(), Some("key revoked"));
    }

    #[tokio::test]
    async fn a_session_the_policy_in_force_refuses_is_never_dialled() {
        let bed = Bed::new();
        // The decision was made under the old policy; the reload removed the admin before the
        // session was registered.
        let without = include_str!("../../policies/example-hospital.toml")
            .replace("name = \"j.devries\"", "name = \"j.jansen\"");
        let ended = bed.bastion.set_policy(
            crate::policy::parse_policy(std::path::Path::new("p.toml"), &without).unwrap(),
        );
        assert!(ended.is_empty());
        let (id, r) = bed.recorded().await;
        assert!(!bed.bastion.sessions.is_live(id.as_str()));
        // A dialler that would hang: the refusal must come before it.
        let msg = r.dial(&Fake(Err("hang")), "pacs01").await.err().unwrap();
        assert!(msg.contains("admin j.devries removed"), "{msg}");
        assert_eq!(bed.ended(&id).as_deref(), Some(msg.as_str()));
    }

    #[tokio::test]
    async fn a_dialled_session_is_undone_unless_it_runs() {
        let bed = Bed::new();
        let (id, r) = bed.recorded().await;
        let dialled = r.dial(&Fake(Ok(())), "pacs01").await.ok().unwrap();
        assert!(bed.bastion.sessions.is_live(id.as_str()));
        assert_eq!(bed.ended(&id), None);
        drop(dialled);
        assert!(!bed.bastion.sessions.is_live(id.as_str()));
        // A drop hands the end entry to the writer without waiting for it.
        let waited = std::time::Instant::now();
        while bed.ended(&id).is_none() && waited.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(bed.ended(&id).as_deref(), Some("setup abandoned"));

        let (id, r) = bed.recorded().await;
        let dialled = r.dial(&Fake(Ok(())), "pacs01").await.ok().unwrap();
        let running = dialled.into_running().unwrap();
        assert!(bed.bastion.sessions.is_live(id.as_str()));
        assert_eq!(bed.ended(&id), None, "the pump ends a running session");
        drop(running.registration);
        assert!(!bed.bastion.sessions.is_live(id.as_str()));
    }
}
