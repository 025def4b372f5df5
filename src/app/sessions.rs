//! The policy in force and everything live under it: authenticated connections, sessions and
//! port forwards, so that a reload ends what it no longer allows, a reviewer can end a session
//! from the console, and one admin cannot hold more than their share.
//!
//! Invariants: the policy is replaced, and what it no longer allows is ended, under the one lock
//! that every registration takes; a registration is checked against the policy in force under
//! that lock. So a reload between a session's decision and its registration cannot miss it: the
//! registration is refused. A session is registered from its SESSION_START (before the target is
//! dialled) until it ends, so a revocation during dialling is not missed either.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::revocation::{Access, Revoked, revoked};
use crate::audit::{Code, Event};
use crate::config::Limits;
use crate::policy::Policy;
use crate::proxy::SessionStop;
use crate::sync::lock;

/// What a registration holds a slot of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Connection,
    Session,
    Forward,
}

impl Slot {
    /// `connections`, `sessions` or `forwards`: the `limit` detail of `ADMIN_LIMIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Connection => "connections",
            Slot::Session => "sessions",
            Slot::Forward => "forwards",
        }
    }
}

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The policy in force no longer allows it (`SESSION_REVOKED`).
    Revoked(Revoked),
    /// The admin holds `max` of `slot` already (`ADMIN_LIMIT`).
    Limit { slot: Slot, max: usize },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Revoked(r) => write!(f, "access revoked ({r})"),
            Refused::Limit { slot, max } => write!(
                f,
                "you have {max} {} open, the most allowed at once; close one first",
                slot.as_str()
            ),
        }
    }
}

impl Refused {
    /// Audits the refusal on top of `event` (the request's fields): `SESSION_REVOKED` with what
    /// was removed, or `ADMIN_LIMIT` with which limit.
    pub fn emit(&self, event: Event) {
        let event = event.reason(self);
        match self {
            Refused::Revoked(r) => event
                .detail("removed", r.kind())
                .emit_as(Code::SessionRevoked),
            Refused::Limit { slot, max } => event
                .detail("limit", slot.as_str())
                .detail("max", *max)
                .emit_as(Code::AdminLimit),
        }
    }
}

/// Something the reload ended: a connection (no session id), a session or a forward.
#[derive(Debug)]
pub struct Ended {
    pub slot: Slot,
    pub session: Option<String>,
    pub admin: String,
    pub revoked: Revoked,
}

struct Entry {
    slot: Slot,
    access: Access,
    stop: SessionStop,
    /// The policy it was registered under (see [`LiveSessions::sweep`]).
    generation: u64,
}

struct Inner {
    policy: Arc<Policy>,
    /// Counts the policies put in force.
    generation: u64,
    live: HashMap<String, Entry>,
    /// Names connections, which have no session id.
    next_connection: u64,
}

/// How long after the grant's end the sweep waits, so that a session's own deadline, where it
/// is right, ends it first and with its own reason.
const SWEEP_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

pub struct LiveSessions {
    inner: Mutex<Inner>,
    limits: Limits,
}

/// Whether an admin holding `held` of a slot may take one more, under `max`.
fn over_limit(held: usize, slot: Slot, max: usize) -> Option<Refused> {
    (held >= max).then_some(Refused::Limit { slot, max })
}

impl LiveSessions {
    pub fn new(policy: Policy, limits: Limits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                policy: Arc::new(policy),
                generation: 0,
                live: HashMap::new(),
                next_connection: 0,
            }),
            limits,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        lock(&self.inner).policy.clone()
    }

    fn max(&self, slot: Slot) -> usize {
        match slot {
            Slot::Connection => self.limits.max_connections_per_admin,
            Slot::Session => self.limits.max_sessions_per_admin,
            Slot::Forward => self.limits.max_forwards_per_admin,
        }
    }

    fn check(&self, inner: &Inner, slot: Slot, access: &Access, now: Timestamp) -> Option<Refused> {
        if let Some(r) = revoked(&inner.policy, access, now) {
            return Some(Refused::Revoked(r));
        }
        let held = inner
            .live
            .values()
            .filter(|e| e.slot == slot && e.access.admin == access.admin)
            .count();
        over_limit(held, slot, self.max(slot))
    }

    /// Whether `access` could take a `slot` now; the registration checks again. Lets a request
    /// be refused before its recording is made.
    pub fn admits(&self, slot: Slot, access: &Access, now: Timestamp) -> Result<(), Refused> {
        let inner = lock(&self.inner);
        self.check(&inner, slot, access, now).map_or(Ok(()), Err)
    }

    /// Registers a session or forward (`session` is its id) or, with `None`, a connection, until
    /// the returned guard is dropped; refused when the policy in force does not allow `access`
    /// or the admin holds the most of `slot` already.
    pub fn register(
        self: &Arc<Self>,
        slot: Slot,
        session: Option<&str>,
        access: Access,
        stop: SessionStop,
        now: Timestamp,
    ) -> Result<Registration, Refused> {
        let mut inner = lock(&self.inner);
        if let Some(refused) = self.check(&inner, slot, &access, now) {
            return Err(refused);
        }
        let id = match session {
            Some(s) => s.to_owned(),
            None => {
                inner.next_connection += 1;
                format!("connection-{}", inner.next_connection)
            }
        };
        let generation = inner.generation;
        inner.live.insert(
            id.clone(),
            Entry {
                slot,
                access,
                stop,
                generation,
            },
        );
        Ok(Registration {
            sessions: self.clone(),
            session: id,
        })
    }

    /// Ends one live session with `reason`; returns its admin, or `None` if it is not live.
    pub fn kill(&self, session: &str, reason: &str) -> Option<String> {
        let inner = lock(&self.inner);
        let e = inner
            .live
            .get(session)
            .filter(|e| e.slot != Slot::Connection)?;
        e.stop.stop(reason);
        Some(e.access.admin.clone())
    }

    /// Whether `session` is running now.
    pub fn is_live(&self, session: &str) -> bool {
        lock(&self.inner)
            .live
            .get(session)
            .is_some_and(|e| e.slot != Slot::Connection)
    }

    /// The sessions running now.
    pub fn live_ids(&self) -> Vec<String> {
        lock(&self.inner)
            .live
            .iter()
            .filter(|(_, e)| e.slot != Slot::Connection)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ends every live session and forward with `reason` (the shared storage failed); the
    /// connections stay, so their admins are told and may try again.
    pub fn stop_all(&self, reason: &str) {
        for e in lock(&self.inner).live.values() {
            if e.slot != Slot::Connection {
                e.stop.stop(reason);
            }
        }
    }

    /// Puts `policy` in force and ends every connection, session and forward it no longer
    /// allows at `now`, saying what was removed.
    pub fn replace_policy(&self, policy: Policy, now: Timestamp) -> Vec<Ended> {
        let mut inner = lock(&self.inner);
        inner.policy = Arc::new(policy);
        inner.generation += 1;
        end_revoked(&inner, now, |_| true)
    }

    /// Ends what the policy in force no longer allows, among what was registered under an
    /// earlier one: their deadlines were computed from their grant as it was then, and a reload
    /// may have moved its end (`valid_until`, a window) earlier. Called every second or so; it
    /// acts [`SWEEP_GRACE`] after the grant's end, so a deadline that is right comes first.
    pub fn sweep(&self, now: Timestamp) -> Vec<Ended> {
        let inner = lock(&self.inner);
        let current = inner.generation;
        let then = now.checked_sub(SWEEP_GRACE).unwrap_or(now);
        // One already stopped is on its way out, and was reported.
        end_revoked(&inner, then, |e| {
            e.generation < current && e.stop.stopped().is_none()
        })
    }
}

/// Stops every entry `which` selects that the policy in force does not allow at `now`.
fn end_revoked(inner: &Inner, now: Timestamp, which: impl Fn(&Entry) -> bool) -> Vec<Ended> {
    let mut ended = Vec::new();
    for (id, e) in inner.live.iter().filter(|(_, e)| which(e)) {
        let Some(r) = revoked(&inner.policy, &e.access, now) else {
            continue;
        };
        e.stop.stop(format!("access revoked ({r}), session ended"));
        ended.push(Ended {
            slot: e.slot,
            session: (e.slot != Slot::Connection).then(|| id.clone()),
            admin: e.access.admin.clone(),
            revoked: r,
        });
    }
    ended
}

/// Keeps a session, forward or connection registered while it lives.
pub struct Registration {
    sessions: Arc<LiveSessions>,
    session: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.sessions.inner).live.remove(&self.session);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::app::revocation::Under;
    use crate::policy::{GrantName, Use, parse_policy};

    const EXAMPLE: &str = include_str!("../../policies/example-hospital.toml");

    fn now() -> Timestamp {
        "2026-03-03T10:00:00+01:00".parse().unwrap()
    }

    fn bed(max: usize) -> (Arc<LiveSessions>, Access, Access) {
        let p = parse_policy(Path::new("p.toml"), EXAMPLE).unwrap();
        let access = |admin: &str| Access {
            admin: admin.into(),
            key: p.admin(admin).unwrap().keys[0].key.clone(),
            under: Some(Under {
                grant: GrantName::new("radiologie-beheer").unwrap(),
                target: "pacs01".into(),
                what: Use::Account("beheer".into()),
            }),
        };
        let (jan, sanne) = (access("j.devries"), access("s.bakker"));
        let limits = Limits {
            max_sessions_per_admin: max,
            ..Limits::default()
        };
        (Arc::new(LiveSessions::new(p, limits)), jan, sanne)
    }

    #[test]
    fn an_admin_at_the_limit_is_refused_and_another_is_not() {
        let (live, jan, sanne) = bed(2);
        let reg = |id: &str, a: &Access| {
            live.register(
                Slot::Session,
                Some(id),
                a.clone(),
                SessionStop::default(),
                now(),
            )
        };
        let first = reg("s1", &jan).unwrap();
        let _second = reg("s2", &jan).unwrap();
        let refused = Refused::Limit {
            slot: Slot::Session,
            max: 2,
        };
        assert_eq!(reg("s3", &jan).err(), Some(refused.clone()));
        assert_eq!(live.admits(Slot::Session, &jan, now()), Err(refused));
        // Forwards and connections are counted apart; another admin is not affected.
        assert!(live.admits(Slot::Forward, &jan, now()).is_ok());
        let _sanne = reg("s4", &sanne).unwrap();
        // A slot comes free when its session ends.
        drop(first);
        assert!(reg("s5", &jan).is_ok());
    }

    #[test]
    fn a_storage_failure_ends_sessions_and_leaves_connections() {
        let (live, jan, _) = bed(4);
        let (session, connection) = (SessionStop::default(), SessionStop::default());
        let _s = live
            .register(
                Slot::Session,
                Some("s1"),
                jan.clone(),
                session.clone(),
                now(),
            )
            .unwrap();
        let conn = Access { under: None, ..jan };
        let _c = live
            .register(Slot::Connection, None, conn, connection.clone(), now())
            .unwrap();
        assert!(
            !live.is_live("connection-1"),
            "a connection is not a session"
        );
        live.stop_all("chain failed");
        assert_eq!(session.stopped().as_deref(), Some("chain failed"));
        assert_eq!(connection.stopped(), None);
    }

    /// A reload that moves a grant's end earlier, but not before now, ends its sessions at the
    /// new end: their own deadlines were computed from the grant as it was.
    #[test]
    fn a_grant_shortened_by_a_reload_ends_its_sessions_at_its_new_end() {
        let (live, jan, _) = bed(4);
        let stop = SessionStop::default();
        let _jan = live
            .register(Slot::Session, Some("s1"), jan.clone(), stop.clone(), now())
            .unwrap();
        let fresh = SessionStop::default();
        let q = EXAMPLE.replacen(
            "name = \"radiologie-beheer\"",
            "name = \"radiologie-beheer\"\nvalid_until = \"2026-03-03 10:30\"",
            1,
        );
        let ended = live.replace_policy(parse_policy(Path::new("p.toml"), &q).unwrap(), now());
        assert!(ended.is_empty(), "still open now: {ended:?}");
        // Registered under the new policy: its own deadline is right, the sweep leaves it.
        let _fresh = live
            .register(Slot::Session, Some("s2"), jan, fresh.clone(), now())
            .unwrap();
        let at = |m: i64| {
            now()
                .checked_add(jiff::SignedDuration::from_mins(m))
                .unwrap()
        };
        assert!(live.sweep(at(29)).is_empty());
        let ended = live.sweep(at(31));
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].session.as_deref(), Some("s1"));
        assert!(stop.stopped().unwrap().contains("radiologie-beheer"));
        assert_eq!(fresh.stopped(), None);
        assert!(live.sweep(at(32)).is_empty(), "reported once");
    }

    #[test]
    fn a_reload_ends_what_it_removes_and_refuses_late_registrations() {
        let (live, jan, sanne) = bed(4);
        let stop = SessionStop::default();
        let _jan = live
            .register(Slot::Session, Some("s1"), jan.clone(), stop.clone(), now())
            .unwrap();
        let sanne_stop = SessionStop::default();
        let _sanne = live
            .register(
                Slot::Session,
                Some("s2"),
                sanne.clone(),
                sanne_stop.clone(),
                now(),
            )
            .unwrap();
        // Jan leaves the group the grant names; Sanne stays in it.
        let q = EXAMPLE.replacen("groups = [\"radiologie-it\"]", "groups = []", 1);
        let ended = live.replace_policy(parse_policy(Path::new("p.toml"), &q).unwrap(), now());
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].session.as_deref(), Some("s1"));
        assert_eq!(ended[0].revoked, Revoked::Grant("radiologie-beheer".into()));
        assert!(stop.stopped().unwrap().contains("grant radiologie-beheer"));
        assert_eq!(sanne_stop.stopped(), None);
        // A session decided under the old policy and registered after the reload is refused.
        let late = live.register(
            Slot::Session,
            Some("s3"),
            jan,
            SessionStop::default(),
            now(),
        );
        assert!(
            matches!(late, Err(Refused::Revoked(Revoked::Grant(_)))),
            "{:?}",
            late.err()
        );
    }
}
