//! One admin connection: authentication, then the channels it opens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use russh::keys::ssh_key::Fingerprint;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Certificate, HashAlg};
use russh::server::{Auth, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelWriteHalf, Pty, Sig, client};
use tokio::sync::Semaphore;

use super::Shared;
use super::refusal::AuthRefusal;
use super::request::{Action, Login, action};
use super::setup::{Dialer, Recorded};
use crate::app::{Access, Refused, Registration, Slot, Under};
use crate::audit::{Code, Event};
use crate::ids::SessionId;
use crate::policy::{AdminName, Allowed, Denial, TargetSpec, Use};
use crate::proxy::{
    ForwardContext, PtyRequest, PumpContext, Run, SessionStop, Transcript, deadline, env_allowed,
    open_target_channel, spawn_forward, spawn_pump,
};
use crate::recording::{Cadence, Meta, Recorder};
use crate::seckey::{Assertion, CounterVerdict};
use crate::sync::lock;
use crate::upstream::Dial;

/// Dials a target over SSH and logs in with a certificate naming the admin.
struct UpstreamDialer<'a> {
    dial: Dial<'a>,
    ca: &'a crate::secrets::Secret<russh::keys::PrivateKey>,
    timeout: std::time::Duration,
}

impl Dialer for UpstreamDialer<'_> {
    type Conn = crate::upstream::Connection;
    async fn dial(&self) -> Result<Self::Conn, crate::upstream::UpstreamError> {
        crate::upstream::connect(self.dial.clone(), self.ca, self.timeout).await
    }
}

/// A live channel: input goes to `writer`, and is logged in `transcript`.
struct Live {
    writer: ChannelWriteHalf<client::Msg>,
    transcript: Arc<Mutex<Transcript>>,
    stop: SessionStop,
}

impl Live {
    /// Passes something on to the target unless the session is stopped first. russh waits here
    /// on the target's window (a command that reads no input) or on a target loop held by a
    /// pump that waits on the admin; this handler's wait holds the admin's whole connection (its
    /// disconnect, its cut, every other channel), so a stop must end it.
    async fn to_target<T>(&self, send: impl Future<Output = T>) -> Option<T> {
        self.stop.unless_stopped(send).await.ok()
    }
}

#[derive(Default)]
struct ChannelState {
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    live: Option<Live>,
    /// A shell, exec or subsystem was requested already: one per channel.
    started: bool,
}

struct Admin {
    login: Login,
    name: AdminName,
    key: russh::keys::PublicKey,
    fingerprint: Fingerprint,
    /// The flags and counter of the signature that logged in.
    assertion: Assertion,
}

pub struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    unauth_slot: Option<crate::net::Slot>,
    login: Arc<super::preauth::Login>,
    admin: Option<Admin>,
    channels: HashMap<ChannelId, ChannelState>,
    /// Port forwards this connection may hold at once.
    forwards: Arc<Semaphore>,
    /// Why the last verified key was refused, for the admin's SSH banner.
    rejection: Option<&'static str>,
    /// Requests and window changes this connection may still make (see [`super::budget`]).
    requests: super::budget::Bucket,
    window_changes: super::budget::Bucket,
    /// Ends the whole connection, with a reason, when a reload revokes its admin or key.
    stop: SessionStop,
    /// The authenticated connection, registered for revocation and the admin's limit.
    registration: Option<Registration>,
}

type HResult<T = ()> = Result<T, russh::Error>;

/// Told to the admin whose key's counter went back, then and at every later try.
const QUARANTINE_BANNER: &str = "stapsteen: login refused: this security key's signature counter went back, as a copy of the key would.\r\nReport this to the security team; the key stays refused until they replace it or mark it in the policy.\r\n";

/// Told to an admin who holds the most connections allowed at once.
const CONNECTION_LIMIT_BANNER: &str = "stapsteen: login refused: you have the most connections to the bastion allowed at once; close one first.\r\n";

/// Told to an admin whose access a reload removed while they logged in.
const REVOKED_BANNER: &str = "stapsteen: login refused: your access was revoked by the policy.\r\n";

/// Session channels, and port forwards, one connection may hold at once; each one dials a target.
const MAX_CHANNELS: usize = 8;

fn is_security_key(key: &KeyData) -> bool {
    matches!(key, KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_))
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: Option<SocketAddr>,
        slot: crate::net::Slot,
        login: Arc<super::preauth::Login>,
    ) -> Self {
        Self {
            shared,
            peer,
            unauth_slot: Some(slot),
            login,
            admin: None,
            channels: HashMap::new(),
            forwards: Arc::new(Semaphore::new(MAX_CHANNELS)),
            rejection: None,
            requests: super::budget::requests(),
            window_changes: super::budget::window_changes(),
            stop: SessionStop::default(),
            registration: None,
        }
    }

    /// Takes one of the connection's requests; a connection that floods is closed.
    fn spend(&mut self, what: &str) -> HResult {
        if self.requests.take(self.shared.app.clock.now()) {
            return Ok(());
        }
        // Its own code, never limited: one per closed connection, and the signal a reviewer
        // needs among the refusals that are summed up.
        self.request_event(Code::RequestFlood)
            .reason(format!("request flood ({what}): connection closed"))
            .emit();
        Err(russh::Error::Disconnect)
    }

    fn denied(&self, user: &str, fingerprint: Option<Fingerprint>, reason: AuthRefusal) {
        self.denial(user, fingerprint, reason).emit();
    }

    fn denial(&self, user: &str, fingerprint: Option<Fingerprint>, reason: AuthRefusal) -> Event {
        Event::new(Code::AuthDenied)
            .admin(user)
            .source(self.peer)
            .fingerprint(fingerprint.map(|f| f.to_string()).unwrap_or_default())
            .reason(reason.code())
    }

    /// Why `key` may not log in as `user`, if it may not.
    fn key_refusal(&self, user: &str, key: &russh::keys::PublicKey) -> Option<AuthRefusal> {
        if !is_security_key(key.key_data()) {
            return Some(AuthRefusal::NotSecurityKey);
        }
        let Some(login) = Login::parse(user) else {
            return Some(AuthRefusal::InvalidUser);
        };
        let policy = self.shared.app.policy();
        if policy.admin(&login.admin).is_none() {
            return Some(AuthRefusal::UnknownAdmin);
        }
        if policy.key_entry(&login.admin, key).is_none() {
            return Some(AuthRefusal::KeyNotListed);
        }
        None
    }

    /// A verified key refused for what its signature showed: `AUTH_DENIED` with the flags and
    /// counter, and `banner` for the admin. Only the key's holder can cause it (a stolen key
    /// without its PIN, a copy with a lower counter), so it is never limited as a flood.
    fn refused(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        assertion: Assertion,
        reason: AuthRefusal,
        message: &str,
        banner: &'static str,
    ) {
        Event::new(Code::AuthDenied)
            .admin(user)
            .source(self.peer)
            .fingerprint(fingerprint)
            .reason(reason.code())
            .detail("message", message)
            .detail("flags", assertion.flag_names())
            .detail("counter", assertion.counter)
            .never_limited()
            .emit();
        self.rejection = Some(banner);
    }

    /// Whether this connection's admin and key are still in the policy in force and the
    /// connection was not ended: asked again at every new channel.
    fn allowed_now(&self) -> bool {
        let Some(admin) = &self.admin else {
            return false;
        };
        let access = Access {
            admin: admin.name.to_string(),
            key: admin.key.clone(),
            under: None,
        };
        let policy = self.shared.app.policy();
        let revoked = crate::app::revoked(&policy, &access, self.shared.app.clock.now());
        if let Some(r) = &revoked {
            self.request_denied(&format!("access revoked ({r})"));
        }
        revoked.is_none() && self.stop.stopped().is_none()
    }

    fn request_denied(&self, what: &str) {
        self.request_event(Code::RequestDenied).reason(what).emit();
    }

    /// An event about a request on this connection: its admin and source.
    fn request_event(&self, code: Code) -> Event {
        let admin = self.admin.as_ref().map(|a| a.name.to_string());
        Event::new(code)
            .admin(admin.unwrap_or_default())
            .source(self.peer)
    }

    fn event(&self, code: Code) -> Event {
        let mut e = Event::new(code).source(self.peer);
        if let Some(a) = &self.admin {
            e = e.admin(&a.name).fingerprint(a.fingerprint);
        }
        e
    }

    /// Answers a request with a one-line refusal on stderr and exit status 1.
    fn refuse(&self, id: ChannelId, pty: bool, message: &str, session: &mut Session) -> HResult {
        let nl = if pty { "\r\n" } else { "\n" };
        session.channel_success(id)?;
        session.extended_data(id, 1, format!("stapsteen: {message}{nl}").into_bytes())?;
        session.exit_status_request(id, 1)?;
        session.eof(id)?;
        session.close(id)
    }

    fn list(&self, admin: &str, id: ChannelId, pty: bool, session: &mut Session) -> HResult {
        let policy = self.shared.app.policy();
        let nl = if pty { "\r\n" } else { "\n" };
        let reachable = policy.reachable(admin, self.shared.app.clock.now());
        let mut text = if reachable.is_empty() {
            format!("stapsteen: {admin}, no target is open to you right now.{nl}")
        } else {
            format!("stapsteen: {admin}, you may reach now (times in Europe/Amsterdam):{nl}")
        };
        for a in &reachable {
            let until = a.until.map_or("no end".to_owned(), crate::policy::local);
            text.push_str(&format!(
                "  {:<16} {:<12} until {}  (grant {}){nl}",
                a.target.name, a.account, until, a.grant
            ));
        }
        if let Some(first) = reachable.first() {
            text.push_str(&format!(
                "{nl}  ssh -t {admin}@BASTION {}    shell{nl}  ssh {admin}@BASTION {} COMMAND    command{nl}  sftp {admin}+{}@BASTION    file transfer{nl}",
                first.target.name, first.target.name, first.target.name
            ));
        }
        session.channel_success(id)?;
        session.data(id, text.into_bytes())?;
        session.exit_status_request(id, 0)?;
        session.eof(id)?;
        session.close(id)
    }

    async fn start(&mut self, id: ChannelId, request: Run, session: &mut Session) -> HResult {
        let Some(admin) = &self.admin else {
            return session.channel_failure(id);
        };
        let (login, name, fingerprint, key, assertion) = (
            admin.login.clone(),
            admin.name.clone(),
            admin.fingerprint,
            admin.key.clone(),
            admin.assertion,
        );
        let state = self.channels.entry(id).or_default();
        if std::mem::replace(&mut state.started, true) {
            return session.channel_failure(id);
        }
        let pty = state.pty.clone();
        let env = state.env.clone();
        let is_pty = pty.is_some();
        let (spec, run) = match action(&login, request) {
            Action::List => return self.list(name.as_str(), id, is_pty, session),
            Action::Refuse(msg) => {
                self.event(Code::TargetDenied).reason(&msg).emit();
                return self.refuse(id, is_pty, &msg, session);
            }
            Action::Open { spec, run } => (spec, run),
        };
        let now = self.shared.app.clock.now();
        let allowed = match self.decide(name.as_str(), &spec, now) {
            Ok(a) => a,
            Err(denial) => return self.deny_target(id, is_pty, &spec, &denial, session),
        };
        if let Err(denial) = allowed.check_terminal(run == Run::Shell, is_pty) {
            return self.deny_target(id, is_pty, &spec, &denial, session);
        }
        let under = Under {
            grant: allowed.grant.clone(),
            target: allowed.target.name.to_string(),
            what: Use::Account(allowed.account.to_string()),
        };
        #[cfg(debug_assertions)]
        let under = super::bypass::registered_under(under);
        #[cfg(not(debug_assertions))]
        let under = Some(under);
        let access = Access {
            admin: name.to_string(),
            key: key.clone(),
            under,
        };
        if let Err(refused) = self.shared.app.sessions.admits(Slot::Session, &access, now) {
            refused.emit(
                self.event(Code::SessionStart)
                    .target(&allowed.target.name)
                    .account(&allowed.account),
            );
            return self.refuse(id, is_pty, &format!("session refused: {refused}"), session);
        }
        // Every session is recorded, so every one takes recording space.
        if let Err(e) = self.shared.app.quota.admit(name.as_str()) {
            self.event(Code::RecordingQuota)
                .target(&allowed.target.name)
                .account(&allowed.account)
                .reason(&e)
                .detail("limit", e.limit())
                .emit();
            return self.refuse(id, is_pty, &format!("session refused: {e}"), session);
        }
        let mark = match self.shared.app.mark_for(&allowed.grant) {
            Ok(m) => m,
            Err(msg) => {
                self.event(Code::TargetFailed)
                    .target(&allowed.target.name)
                    .reason(msg)
                    .emit();
                return self.refuse(id, is_pty, msg, session);
            }
        };
        let session_id = SessionId::generate(now);
        let what = run.describe();
        let event = self
            .event(Code::SessionStart)
            .target(&allowed.target.name)
            .account(&allowed.account)
            .session(&session_id)
            .detail("grant", allowed.grant.as_str())
            .detail("request", what.as_str())
            .detail("pty", is_pty);

        // The recording and the chain's start entry exist before the target is dialled: no
        // recording, no session (unless on_failure = "alert-and-continue"). Every channel is
        // recorded; one without a pty as an 80x24 terminal.
        let audit = &self.shared.app.audit;
        let term = env
            .iter()
            .find(|(k, _)| k == "TERM")
            .map_or("", |(_, v)| v.as_str());
        let screen = pty
            .as_ref()
            .map_or((80, 24, term), |p| (p.cols, p.rows, p.term.as_str()));
        let (recorder, meta) =
            match self.open_recording(&session_id, &name, &allowed, screen, is_pty, now) {
                Ok((r, m)) => (Some(r), Some(m)),
                Err(e) => {
                    // This session's failure (a full directory, no file descriptors): it ends
                    // this session only.
                    event.clone().reason(&e).emit_as(Code::RecordingFailed);
                    if audit.fail_closed() {
                        return self.refuse(
                            id,
                            is_pty,
                            "session refused: the recording cannot be written",
                            session,
                        );
                    }
                    (None, None)
                }
            };
        let fields = [
            ("admin", name.to_string()),
            ("target", allowed.target.name.to_string()),
            ("account", allowed.account.to_string()),
            ("grant", allowed.grant.to_string()),
            ("key", fingerprint.to_string()),
            ("key_flags", assertion.flag_names().to_owned()),
            ("key_counter", assertion.counter.to_string()),
        ];
        let mut transcript = match Transcript::start(
            &session_id,
            audit.clone(),
            recorder,
            allowed.record_input,
            is_pty,
            &fields,
        )
        .await
        {
            Ok(t) if run == Run::Subsystem("sftp".into()) => t.sftp(
                event.clone(),
                self.shared.app.config.recording.max_channel_bytes,
            ),
            Ok(t) => t.limit(self.shared.app.config.recording.max_channel_bytes),
            Err(e) => {
                event.clone().reason(&e).emit_as(Code::RecordingFailed);
                return self.refuse(
                    id,
                    is_pty,
                    "session refused: the audit trail cannot be written",
                    session,
                );
            }
        };
        transcript.set_charge(self.shared.app.quota.charge(name.as_str()));
        event.clone().emit();
        #[cfg(debug_assertions)]
        super::seam::before_registration().await;
        // Registered before dialling, against the policy in force now (a reload since the
        // decision refuses it here): a revocation from here on ends this session.
        let recorded = Recorded::new(
            &self.shared.app,
            &session_id,
            transcript,
            meta,
            event,
            access,
        );
        let limits = &self.shared.app.config.limits;
        let dialer = UpstreamDialer {
            dial: Dial {
                target: &allowed.target,
                account: &allowed.account,
                admin: &name,
                session: &session_id,
                pty: is_pty,
                mark,
            },
            ca: &self.shared.ca_key,
            timeout: limits.connect_timeout,
        };
        let mut dialled = match recorded.dial(&dialer, allowed.target.name.as_str()).await {
            Ok(d) => d,
            Err(msg) => return self.refuse(id, is_pty, &msg, session),
        };
        let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| env_allowed(k)).collect();
        // Bounded too, and ended by a revocation: the kernel may already drop this grant's packets.
        let stop = dialled.stop().clone();
        let opened = stop
            .unless_stopped(tokio::time::timeout(
                limits.connect_timeout,
                open_target_channel(&dialled.conn, pty.as_ref(), &env, &run),
            ))
            .await
            .and_then(|o| {
                o.unwrap_or_else(|_| {
                    Err(format!(
                        "{}: no answer from the target",
                        allowed.target.name
                    ))
                })
            });
        let channel = match opened {
            Ok(c) => c,
            Err(msg) => return self.refuse(id, is_pty, &dialled.abandon(msg), session),
        };
        if let Some(msg) = stop.stopped() {
            return self.refuse(id, is_pty, &dialled.abandon(msg), session);
        }
        let marked = dialled.transcript().map(|t| {
            t.marker(&format!(
                "target: connected to {} ({what})",
                allowed.target.name
            ))
        });
        if let Some(Err(e)) = marked {
            dialled
                .event()
                .clone()
                .reason(e.to_string())
                .emit_as(Code::RecordingFailed);
            let msg = "session ended: the recording cannot be written";
            return self.refuse(id, is_pty, &dialled.abandon(msg), session);
        }
        let Some(running) = dialled.into_running() else {
            return self.refuse(id, is_pty, "session setup failed", session);
        };
        let transcript = Arc::new(Mutex::new(running.transcript));
        let (read, writer) = channel.split();
        let (deadline, deadline_reason) =
            deadline(now, allowed.until, allowed.max_session, &allowed.grant);
        session.channel_success(id)?;
        let registration = running.registration;
        let login = self.login.clone();
        spawn_pump(
            PumpContext {
                front: session.handle(),
                front_channel: id,
                conn: running.conn,
                transcript: transcript.clone(),
                stop: running.stop.clone(),
                deadline,
                deadline_reason,
                idle_timeout: limits.idle_timeout,
                pty: is_pty,
                event: running.event.with_code(Code::SessionEnd),
                store: self.shared.app.store.clone(),
                meta: running.meta,
                source: self.peer,
                fingerprint: Some(fingerprint),
                on_end: Box::new(move || drop(registration)),
            },
            read,
            move || login.cut(),
        );
        if let Some(state) = self.channels.get_mut(&id) {
            state.live = Some(Live {
                writer,
                transcript,
                stop: running.stop,
            });
        }
        Ok(())
    }

    /// The recording of a session and its metadata, both written before the target is
    /// dialled; `screen` is the terminal's columns, rows and TERM.
    fn open_recording(
        &self,
        session_id: &SessionId,
        name: &AdminName,
        allowed: &Allowed,
        screen: (u32, u32, &str),
        pty: bool,
        now: jiff::Timestamp,
    ) -> Result<(Recorder, Meta), String> {
        let store = &self.shared.app.store;
        let m = Meta {
            id: session_id.clone(),
            admin: name.to_string(),
            target: allowed.target.name.to_string(),
            account: allowed.account.to_string(),
            grant: allowed.grant.to_string(),
            source: self.peer.map(|p| p.to_string()).unwrap_or_default(),
            start: now,
            end: None,
            exit_status: None,
            end_reason: None,
            pty,
        };
        let title = format!(
            "{name} → {}@{} ({session_id})",
            allowed.account, allowed.target.name
        );
        let rc = &self.shared.app.config.recording;
        let mut r = Recorder::create(
            store,
            session_id,
            self.shared.app.audit.clone(),
            Cadence {
                interval: rc.checkpoint_interval,
                bytes: rc.checkpoint_bytes,
            },
            (screen.0, screen.1),
            screen.2,
            &title,
        )
        .map_err(|e| e.to_string())?;
        r.marker(&format!(
            "start: {name} → {}@{}",
            allowed.account, allowed.target.name
        ))
        .map_err(|e| e.to_string())?;
        store.write_meta(&m).map_err(|e| e.to_string())?;
        Ok((r, m))
    }

    /// The policy's decision; in debug builds only, the test switch
    /// `STAPSTEEN_TEST_SKIP_GRANT_CHECK=1` turns a refusal into an allowance under another of the
    /// admin's open grants, so tests can show that the kernel still refuses.
    fn decide(
        &self,
        admin: &str,
        spec: &TargetSpec,
        now: jiff::Timestamp,
    ) -> Result<Allowed, Denial> {
        let decided = self.shared.app.policy().decide(admin, spec, now);
        #[cfg(debug_assertions)]
        if let Err(denial) = &decided
            && std::env::var_os("STAPSTEEN_TEST_SKIP_GRANT_CHECK").is_some()
        {
            return super::bypass::allowed_anyway(&self.shared.app.policy(), admin, spec, now)
                .ok_or_else(|| denial.clone());
        }
        decided
    }

    fn deny_target(
        &self,
        id: ChannelId,
        pty: bool,
        spec: &TargetSpec,
        denial: &Denial,
        session: &mut Session,
    ) -> HResult {
        self.event(Code::TargetDenied)
            .target(&spec.target)
            .account(spec.account.as_deref().unwrap_or(""))
            .reason(denial.code())
            .detail("message", denial.to_string())
            .emit();
        self.refuse(id, pty, &format!("access refused: {denial}"), session)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
        for state in self.channels.values() {
            if let Some(live) = &state.live {
                live.stop.cancel();
            }
        }
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> HResult<Auth> {
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> HResult<Auth> {
        self.denied(user, None, AuthRefusal::MethodPassword);
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> HResult<Auth> {
        self.denied(user, None, AuthRefusal::MethodKeyboardInteractive);
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> HResult<Auth> {
        match self.key_refusal(user, offer.public_key) {
            None => Ok(Auth::Accept),
            Some(reason) => {
                self.denied(
                    user,
                    Some(offer.public_key.fingerprint(HashAlg::Sha256)),
                    reason,
                );
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> HResult<Auth> {
        // Identity comes from the key whose signature was verified, checked again here.
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256);
        if let Some(reason) = self.key_refusal(user, key.public_key) {
            self.denied(user, Some(fingerprint), reason);
            return Ok(Auth::reject());
        }
        let Some(login) = Login::parse(user) else {
            return Ok(Auth::reject());
        };
        let Ok(name) = AdminName::new(&login.admin) else {
            return Ok(Auth::reject());
        };
        let policy = self.shared.app.policy();
        let Some(entry) = policy.key_entry(name.as_str(), key.public_key) else {
            return Ok(Auth::reject());
        };
        let Some(assertion) = Assertion::from_signature(key.signature) else {
            // A verified signature of an enrolled key: only its holder can cause this.
            self.denial(
                user,
                Some(fingerprint),
                AuthRefusal::NotSecurityKeySignature,
            )
            .never_limited()
            .emit();
            return Ok(Auth::reject());
        };
        let (required, check) = (entry.required, entry.counter);
        let full_name = policy
            .admin(name.as_str())
            .and_then(|a| a.full_name.clone());
        let comment = entry.comment.clone();
        let attested = entry.attested.as_ref().map(|a| a.aaguid.clone());
        drop(policy);

        // The counter is stored for every verified signature, whatever the flags say: it is the
        // key's own, and a clone that comes later must find it higher.
        let counters = self.shared.counters.clone();
        let fp = fingerprint.to_string();
        let now = self.shared.app.clock.now().as_second();
        let counted = tokio::task::spawn_blocking(move || {
            counters.record(&fp, assertion.counter, check, now)
        })
        .await;
        let counted = match counted {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let verdict = match counted {
            Ok(v) => v,
            Err(why) => {
                self.refused(
                    user,
                    fingerprint,
                    assertion,
                    AuthRefusal::CounterStoreFailed,
                    &why,
                    "stapsteen: login refused: the bastion cannot store key counters now; try again later.\r\n",
                );
                return Ok(Auth::reject());
            }
        };
        match verdict {
            CounterVerdict::Rose | CounterVerdict::Late { .. } => {}
            CounterVerdict::Zero => Event::new(Code::KeyCounterZero)
                .admin(&name)
                .source(self.peer)
                .fingerprint(fingerprint)
                .reason("the key reports signature counter 0: it keeps no counter, so a copy of it would not show")
                .emit(),
            CounterVerdict::Regression { last, refuse } => {
                Event::new(Code::KeyCounterRegression)
                    .admin(&name)
                    .source(self.peer)
                    .fingerprint(fingerprint)
                    .reason(if refuse {
                        "the signature counter did not rise: possibly a copy of the key; login refused"
                    } else {
                        "the signature counter did not rise; allowed, the key is counter-unchecked in policy"
                    })
                    .detail("counter", assertion.counter)
                    .detail("last_counter", last)
                    .detail("refused", refuse)
                    .emit();
                if refuse {
                    self.refused(
                        user,
                        fingerprint,
                        assertion,
                        AuthRefusal::CounterRegression,
                        &format!("counter {} is not above {last}", assertion.counter),
                        QUARANTINE_BANNER,
                    );
                    return Ok(Auth::reject());
                }
            }
            CounterVerdict::Quarantined { last } => {
                self.refused(
                    user,
                    fingerprint,
                    assertion,
                    AuthRefusal::KeyQuarantined,
                    &format!("the key's counter went back before (highest seen {last}); it stays refused until the policy marks it counter-unchecked or it is replaced"),
                    QUARANTINE_BANNER,
                );
                return Ok(Auth::reject());
            }
        }
        if let Err(refusal) = required.check(assertion) {
            self.refused(
                user,
                fingerprint,
                assertion,
                AuthRefusal::Flags(refusal),
                &refusal.to_string(),
                refusal.advice(),
            );
            return Ok(Auth::reject());
        }
        // Registered before it is accepted: a reload from here on reaches this connection.
        let access = Access {
            admin: name.to_string(),
            key: key.public_key.clone(),
            under: None,
        };
        let now = self.shared.app.clock.now();
        let registered = self.shared.app.sessions.register(
            Slot::Connection,
            None,
            access,
            self.stop.clone(),
            now,
        );
        match registered {
            Ok(r) => self.registration = Some(r),
            Err(refused) => {
                refused.emit(
                    Event::new(Code::AdminLimit)
                        .admin(&name)
                        .source(self.peer)
                        .fingerprint(fingerprint),
                );
                self.rejection = Some(match refused {
                    Refused::Limit { .. } => CONNECTION_LIMIT_BANNER,
                    Refused::Revoked(_) => REVOKED_BANNER,
                });
                return Ok(Auth::reject());
            }
        }
        Event::new(Code::AuthOk)
            .admin(&name)
            .source(self.peer)
            .fingerprint(fingerprint)
            .detail("key_type", key.public_key.algorithm().as_str())
            .detail("full_name", full_name.unwrap_or_default())
            .detail("key_comment", comment)
            .detail("flags", assertion.flag_names())
            .detail("user_present", assertion.user_present())
            .detail("user_verified", assertion.user_verified())
            .detail("counter", assertion.counter)
            .detail(
                "counter_late",
                matches!(verdict, CounterVerdict::Late { .. }),
            )
            .detail("attested_aaguid", attested.unwrap_or_default())
            .emit();
        self.admin = Some(Admin {
            login,
            name,
            key: key.public_key.clone(),
            fingerprint,
            assertion,
        });
        Ok(Auth::Accept)
    }

    async fn auth_publickey_rejection_banner(&mut self) -> HResult<Option<String>> {
        Ok(self.rejection.take().map(str::to_owned))
    }

    async fn auth_openssh_certificate(&mut self, user: &str, cert: &Certificate) -> HResult<Auth> {
        self.denied(
            user,
            Some(cert.public_key().fingerprint(HashAlg::Sha256)),
            AuthRefusal::Certificate,
        );
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> HResult {
        if !self.login.authenticate() {
            // The grace ran out first, or the place went to a newcomer: the connection is
            // being cut off, after AUTH_OK, so the audit says so.
            self.event(Code::LoginTimeout)
                .reason("logged in after the login grace ended or the place was taken; closed")
                .emit();
            return Err(russh::Error::Disconnect);
        }
        self.unauth_slot = None;
        if let Some(peer) = self.peer {
            self.shared.unauthenticated.trust(peer.ip());
        }
        // A revocation ends the whole connection: every channel, every forward and the TCP
        // connection, with the reason in the SSH disconnect message. russh sends that only once
        // the admin's window has room; an admin who keeps it shut is cut off after the grace.
        let (stop, handle, login) = (self.stop.clone(), session.handle(), self.login.clone());
        tokio::spawn(async move {
            if let Some(reason) = stop.wait().await {
                let cut_at = tokio::time::Instant::now() + crate::proxy::CUTOFF_GRACE;
                let told = handle.disconnect(
                    russh::Disconnect::ByApplication,
                    format!("stapsteen: {reason}"),
                    String::new(),
                );
                let _ = tokio::time::timeout_at(cut_at, told).await;
                tokio::time::sleep_until(cut_at).await;
                login.cut();
            }
        });
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> HResult {
        // The handler methods carry the channel's traffic; the Channel object is not needed.
        let id = channel.id();
        drop(channel);
        // Every opening, refused or not, draws on the budget: a client opening channels in a
        // loop is closed instead of being answered (and audited) at wire speed.
        self.spend("session_channel")?;
        if !self.allowed_now() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        if self.channels.len() >= MAX_CHANNELS {
            self.request_denied("too_many_channels");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(id, ChannelState::default());
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _addr: &str,
        _port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> HResult {
        self.spend("x11_channel")?;
        self.request_denied("x11_channel");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _orig: &str,
        _orig_port: u32,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> HResult {
        self.spend("direct_tcpip_channel")?;
        let Some(admin) = &self.admin else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let (name, key) = (admin.name.clone(), admin.key.clone());
        if !self.allowed_now() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let now = self.shared.app.clock.now();
        let event = self
            .event(Code::ForwardStart)
            .target(host)
            .detail("port", port);
        let decided = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(Denial::PortNotAllowed {
                target: host.to_owned(),
                port: 0,
            })
            .and_then(|p| {
                self.shared
                    .app
                    .policy()
                    .decide_forward(name.as_str(), host, p, now)
            });
        let allowed = match decided {
            Ok(a) => a,
            Err(denial) => {
                event
                    .reason(denial.code())
                    .detail("message", denial.to_string())
                    .emit_as(Code::ForwardDenied);
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
        };
        let event = event
            .target(&allowed.target.name)
            .detail("grant", allowed.grant.as_str());
        let access = Access {
            admin: name.to_string(),
            key,
            under: Some(Under {
                grant: allowed.grant.clone(),
                target: allowed.target.name.to_string(),
                what: Use::Port(allowed.port),
            }),
        };
        let sessions = self.shared.app.sessions.clone();
        if let Err(refused) = sessions.admits(Slot::Forward, &access, now) {
            refused.emit(event);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let (mark, permit) = match (
            self.shared.app.mark_for(&allowed.grant),
            self.forwards.clone().try_acquire_owned(),
        ) {
            (Ok(m), Ok(p)) => (m, p),
            (Err(msg), _) => {
                event.reason(msg).emit_as(Code::ForwardDenied);
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
            (_, Err(_)) => {
                event
                    .reason("too_many_forwards")
                    .emit_as(Code::ForwardDenied);
                reply.reject(ChannelOpenFailure::ResourceShortage).await;
                return Ok(());
            }
        };
        let stream = match crate::upstream::connect_tcp(
            allowed.target.name.as_str(),
            std::net::SocketAddr::from((allowed.target.address, allowed.port)),
            mark,
            self.shared.app.config.limits.connect_timeout,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                event.reason(e.to_string()).emit_as(Code::TargetFailed);
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        let session_id = SessionId::generate(now);
        let event = event.session(&session_id);
        let stop = SessionStop::default();
        // Registered against the policy in force now, before it is audited as started.
        let registration = match sessions.register(
            Slot::Forward,
            Some(session_id.as_str()),
            access,
            stop.clone(),
            now,
        ) {
            Ok(r) => r,
            Err(refused) => {
                refused.emit(event);
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
        };
        event.clone().emit();
        let (deadline, deadline_reason) =
            deadline(now, allowed.until, allowed.max_session, &allowed.grant);
        reply.accept().await;
        spawn_forward(ForwardContext {
            front: session.handle(),
            channel,
            stream,
            stop,
            deadline,
            deadline_reason,
            event,
            on_end: Box::new(move || {
                drop(registration);
                drop(permit);
            }),
        });
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _path: &str,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> HResult {
        self.spend("streamlocal_forwarding")?;
        self.request_denied("streamlocal_forwarding");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> HResult<bool> {
        self.spend("remote_forwarding")?;
        self.request_denied("remote_forwarding");
        Ok(false)
    }

    async fn streamlocal_forward(&mut self, _path: &str, _session: &mut Session) -> HResult<bool> {
        self.spend("remote_streamlocal_forwarding")?;
        self.request_denied("remote_streamlocal_forwarding");
        Ok(false)
    }

    async fn agent_request(&mut self, _id: ChannelId, _session: &mut Session) -> HResult<bool> {
        self.spend("agent_forwarding")?;
        self.request_denied("agent_forwarding");
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> HResult {
        self.spend("x11_forwarding")?;
        self.request_denied("x11_forwarding");
        session.channel_failure(id)
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> HResult {
        self.spend("pty")?;
        let (cols, rows) = super::budget::clamp_pty(cols, rows);
        match self.channels.get_mut(&id) {
            Some(state) if !state.started && term.len() <= super::budget::MAX_ENV_BYTES => {
                state.pty = Some(PtyRequest {
                    term: term.to_owned(),
                    cols,
                    rows,
                    pix_width,
                    pix_height,
                    modes: modes.to_vec(),
                });
                session.channel_success(id)
            }
            _ => session.channel_failure(id),
        }
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> HResult {
        self.spend("env")?;
        match self.channels.get_mut(&id) {
            Some(state)
                if !state.started
                    && env_allowed(name)
                    && value.len() <= super::budget::MAX_ENV_BYTES
                    && state.env.len() < 32 =>
            {
                state.env.push((name.to_owned(), value.to_owned()));
                session.channel_success(id)
            }
            _ => session.channel_failure(id),
        }
    }

    async fn shell_request(&mut self, id: ChannelId, session: &mut Session) -> HResult {
        self.start(id, Run::Shell, session).await
    }

    async fn exec_request(&mut self, id: ChannelId, data: &[u8], session: &mut Session) -> HResult {
        self.start(id, Run::Exec(data.to_vec()), session).await
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> HResult {
        self.start(id, Run::Subsystem(name.to_owned()), session)
            .await
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> HResult {
        if !self.window_changes.take(self.shared.app.clock.now()) {
            return Ok(());
        }
        let (cols, rows) = super::budget::clamp_pty(cols, rows);
        if let Some(live) = self.channels.get(&id).and_then(|s| s.live.as_ref()) {
            if let Err(e) = lock(&live.transcript).resize(cols, rows) {
                live.stop.stop(e.session_ended());
            }
            let _ = live
                .to_target(live.writer.window_change(cols, rows, pix_width, pix_height))
                .await;
        }
        Ok(())
    }

    async fn signal(&mut self, id: ChannelId, signal: Sig, _session: &mut Session) -> HResult {
        self.spend("signal")?;
        if let Some(live) = self.channels.get(&id).and_then(|s| s.live.as_ref()) {
            let _ = live.to_target(live.writer.signal(signal)).await;
        }
        Ok(())
    }

    async fn data(&mut self, id: ChannelId, data: &[u8], _session: &mut Session) -> HResult {
        if let Some(live) = self.channels.get(&id).and_then(|s| s.live.as_ref()) {
            // A stopped session (revoked, past its end) passes nothing on, even while its
            // connection lingers (an admin who keeps the window shut delays russh's disconnect).
            if live.stop.stopped().is_some() {
                return Ok(());
            }
            if let Err(e) = lock(&live.transcript).input(data) {
                live.stop.stop(e.session_ended());
                return Ok(());
            }
            // The admin's input waits for a lagging recording as the target's output does, unless
            // the session is stopped (revoked, ended) meanwhile; then nothing more is passed on.
            let backlog = lock(&live.transcript).backlog();
            if let Some(b) = backlog {
                match live.stop.unless_stopped(b.wait()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        if let Err(e) = lock(&live.transcript).lagged(e) {
                            live.stop.stop(e.session_ended());
                            return Ok(());
                        }
                    }
                    Err(_) => return Ok(()),
                }
                if live.stop.stopped().is_some() {
                    return Ok(());
                }
            }
            let sent = live
                .to_target(
                    live.writer
                        .data_bytes(tokio_util::bytes::Bytes::copy_from_slice(data)),
                )
                .await;
            if let Some(Err(_)) = sent {
                live.stop.stop("target channel closed".to_owned());
            }
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        id: ChannelId,
        _code: u32,
        data: &[u8],
        session: &mut Session,
    ) -> HResult {
        self.data(id, data, session).await
    }

    async fn channel_eof(&mut self, id: ChannelId, _session: &mut Session) -> HResult {
        if let Some(live) = self.channels.get(&id).and_then(|s| s.live.as_ref()) {
            let _ = live.to_target(live.writer.eof()).await;
        }
        Ok(())
    }

    async fn channel_close(&mut self, id: ChannelId, _session: &mut Session) -> HResult {
        if let Some(state) = self.channels.remove(&id)
            && let Some(live) = state.live
        {
            let _ = live.to_target(live.writer.close()).await;
        }
        Ok(())
    }
}
