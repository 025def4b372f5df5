//! Grant evaluation: may this admin use this target and account at this moment, and until when.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::types::{Account, AdminName, Grant, GrantName, Policy, Target, TargetSpec};

/// A grant that allows the request now.
#[derive(Clone, Debug)]
pub struct Allowed {
    pub grant: GrantName,
    pub target: Target,
    pub account: Account,
    /// When access ends by the grant's validity or window; `None` if open-ended.
    pub until: Option<Timestamp>,
    pub max_session: Duration,
    pub record_input: bool,
    /// A shell under this grant needs a pty (`require_pty`).
    pub require_pty: bool,
}

impl Allowed {
    /// Whether a shell (`shell`) or another request (a command, a subsystem) may run with or
    /// without a pty: `require_pty` refuses only a shell without one. A command runs as
    /// asked (it may well be `bash -i`: its channel is recorded all the same).
    pub fn check_terminal(&self, shell: bool, pty: bool) -> Result<(), Denial> {
        if self.require_pty && shell && !pty {
            return Err(Denial::PtyRequired {
                target: self.target.name.to_string(),
                grant: self.grant.to_string(),
            });
        }
        Ok(())
    }
}

/// A port forward that a grant allows now.
#[derive(Clone, Debug)]
pub struct AllowedForward {
    pub grant: GrantName,
    pub target: Target,
    pub port: u16,
    pub until: Option<Timestamp>,
    pub max_session: Duration,
}

/// What a live session uses under its grant: an account (a login) or a port (a forward).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Use {
    Account(String),
    Port(u16),
}

/// Why a request was refused. `code` is stable and goes into audit events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    UnknownTarget(String),
    NoGrant(String),
    AccountNotAllowed {
        target: String,
        account: String,
    },
    /// Open grants give different default accounts: the admin must name one.
    AmbiguousAccount {
        target: String,
        accounts: Vec<String>,
    },
    NotYetValid {
        target: String,
        from: Timestamp,
    },
    Expired {
        target: String,
        until: Timestamp,
    },
    OutsideWindow {
        target: String,
        windows: String,
    },
    PortNotAllowed {
        target: String,
        port: u16,
    },
    UnrecordedTunnel {
        target: String,
        port: u16,
    },
    /// A shell without a pty under a grant with `require_pty`.
    PtyRequired {
        target: String,
        grant: String,
    },
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::UnknownTarget(_) => "unknown_target",
            Denial::NoGrant(_) => "no_grant",
            Denial::AccountNotAllowed { .. } => "account_not_allowed",
            Denial::AmbiguousAccount { .. } => "ambiguous_account",
            Denial::NotYetValid { .. } => "not_yet_valid",
            Denial::Expired { .. } => "expired",
            Denial::OutsideWindow { .. } => "outside_window",
            Denial::PortNotAllowed { .. } => "port_not_allowed",
            Denial::UnrecordedTunnel { .. } => "unrecorded_tunnel",
            Denial::PtyRequired { .. } => "pty_required",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::UnknownTarget(t) => write!(f, "unknown target {t:?}"),
            Denial::NoGrant(t) => write!(f, "no grant for target {t}"),
            Denial::AccountNotAllowed { target, account } => {
                write!(f, "account {account} on {target} is not in your grants")
            }
            Denial::AmbiguousAccount { target, accounts } => {
                let choices: Vec<String> =
                    accounts.iter().map(|a| format!("{a}@{target}")).collect();
                write!(
                    f,
                    "your grants for {target} give different accounts; name one: {}",
                    choices.join(" or ")
                )
            }
            Denial::NotYetValid { target, from } => {
                write!(f, "grant for {target} is not valid before {}", local(*from))
            }
            Denial::Expired { target, until } => {
                write!(f, "grant for {target} expired at {}", local(*until))
            }
            Denial::OutsideWindow { target, windows } => {
                write!(
                    f,
                    "outside the time window for {target} ({windows}, Europe/Amsterdam)"
                )
            }
            Denial::PortNotAllowed { target, port } => {
                write!(f, "port {port} on {target} is not in your grants")
            }
            Denial::UnrecordedTunnel { target, port } => write!(
                f,
                "port {port} on {target} is its SSH port; a tunnel there would not be recorded, log in through the bastion instead"
            ),
            Denial::PtyRequired { target, grant } => write!(
                f,
                "grant {grant} allows a shell on {target} only with a terminal; use ssh -t"
            ),
        }
    }
}

/// The time zone of all policy times.
pub fn policy_zone() -> TimeZone {
    // Compiled into the binary from jiff's bundled tz database: it cannot be missing from a
    // minimal image, and there is no fallback that would shift every window.
    jiff::tz::get!("Europe/Amsterdam")
}

/// A timestamp shown to people, in the policy zone.
pub fn local(t: Timestamp) -> String {
    t.to_zoned(policy_zone())
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether access open until `until` lasts longer than the best found so far (`None`: none yet;
/// an inner `None` is open-ended).
fn outlasts(best: Option<Option<Timestamp>>, until: Option<Timestamp>) -> bool {
    match (best, until) {
        (None, _) => true,
        (Some(b), Some(u)) => b.is_some_and(|b| u > b),
        (Some(b), None) => b.is_some(),
    }
}

enum GrantState {
    Open(Option<Timestamp>),
    NotYet(Timestamp),
    Expired(Timestamp),
    Closed,
}

impl Grant {
    fn covers(&self, admin: &AdminName, groups: &[super::types::GroupName], target: &str) -> bool {
        (self.admins.contains(admin) || self.groups.iter().any(|g| groups.contains(g)))
            && self.targets.iter().any(|t| t.as_str() == target)
    }

    /// `Some(until)` when the grant is open at `now`; `until` is `None` if open-ended.
    pub fn open_until(&self, now: Timestamp) -> Option<Option<Timestamp>> {
        match self.state(now) {
            GrantState::Open(until) => Some(until),
            _ => None,
        }
    }

    /// Ports on each of the grant's targets that the grant opens: SSH and the forward ports.
    pub fn ports(&self, target: &Target) -> Vec<u16> {
        let mut ports = vec![target.port];
        ports.extend(self.forward_ports.iter().filter(|p| **p != target.port));
        ports
    }

    fn state(&self, now: Timestamp) -> GrantState {
        if let Some(from) = self.valid_from.filter(|f| now < *f) {
            return GrantState::NotYet(from);
        }
        if let Some(until) = self.valid_until.filter(|u| now >= *u) {
            return GrantState::Expired(until);
        }
        if self.windows.is_empty() {
            return GrantState::Open(self.valid_until);
        }
        let zoned = now.to_zoned(policy_zone());
        self.windows
            .iter()
            .filter_map(|w| w.open_until(&zoned))
            .map(|z| z.timestamp())
            .max()
            .map_or(GrantState::Closed, |end| {
                GrantState::Open(min_opt(Some(end), self.valid_until))
            })
    }
}

impl Policy {
    /// Decides a request of `admin` for `spec` at `now`.
    pub fn decide(
        &self,
        admin: &str,
        spec: &TargetSpec,
        now: Timestamp,
    ) -> Result<Allowed, Denial> {
        let target = self
            .target(&spec.target)
            .ok_or_else(|| Denial::UnknownTarget(spec.target.clone()))?;
        let admin = self
            .admin(admin)
            .ok_or_else(|| Denial::NoGrant(spec.target.clone()))?;
        let covering: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| g.covers(&admin.name, &admin.groups, &spec.target))
            .collect();
        if covering.is_empty() {
            return Err(Denial::NoGrant(spec.target.clone()));
        }
        let with_account: Vec<(&Grant, Account)> = covering
            .iter()
            .filter_map(|g| {
                let account = match &spec.account {
                    Some(a) => g.accounts.iter().find(|x| x.as_str() == a)?.clone(),
                    None => g.accounts.first()?.clone(),
                };
                Some((*g, account))
            })
            .collect();
        if with_account.is_empty() {
            return Err(Denial::AccountNotAllowed {
                target: spec.target.clone(),
                account: spec.account.clone().unwrap_or_default(),
            });
        }
        let mut best: Option<Allowed> = None;
        // Without a named account, each open grant's default: they must agree, so that the
        // account used is never silently the more privileged one.
        let mut defaults: Vec<String> = Vec::new();
        let mut not_yet: Option<Timestamp> = None;
        let mut expired: Option<Timestamp> = None;
        let mut windows: Vec<String> = Vec::new();
        for (g, account) in with_account {
            match g.state(now) {
                GrantState::Open(until) => {
                    if spec.account.is_none() && !defaults.contains(&account.to_string()) {
                        defaults.push(account.to_string());
                    }
                    if outlasts(best.as_ref().map(|b| b.until), until) {
                        best = Some(Allowed {
                            grant: g.name.clone(),
                            target: target.clone(),
                            account,
                            until,
                            max_session: g.max_session,
                            record_input: g.record_input,
                            require_pty: g.require_pty,
                        });
                    }
                }
                GrantState::NotYet(f) => not_yet = Some(not_yet.map_or(f, |n| n.min(f))),
                GrantState::Expired(u) => expired = Some(expired.map_or(u, |e| e.max(u))),
                GrantState::Closed => windows.extend(g.windows.iter().map(|w| w.to_string())),
            }
        }
        let target_name = spec.target.clone();
        if defaults.len() > 1 {
            defaults.sort();
            return Err(Denial::AmbiguousAccount {
                target: target_name,
                accounts: defaults,
            });
        }
        match (best, windows.is_empty(), not_yet, expired) {
            (Some(a), ..) => Ok(a),
            (None, false, ..) => Err(Denial::OutsideWindow {
                target: target_name,
                windows: windows.join(", "),
            }),
            (None, true, Some(from), _) => Err(Denial::NotYetValid {
                target: target_name,
                from,
            }),
            (None, true, None, Some(until)) => Err(Denial::Expired {
                target: target_name,
                until,
            }),
            (None, true, None, None) => Err(Denial::NoGrant(target_name)),
        }
    }

    /// Decides a port forward (`ssh -L`, `-W`) of `admin` to `host` (a target's name or address)
    /// and `port` at `now`. A target's SSH port needs a grant that allows unrecorded tunnels.
    pub fn decide_forward(
        &self,
        admin: &str,
        host: &str,
        port: u16,
        now: Timestamp,
    ) -> Result<AllowedForward, Denial> {
        let target = self
            .targets
            .iter()
            .find(|t| t.name.as_str() == host || host.parse() == Ok(t.address))
            .ok_or_else(|| Denial::UnknownTarget(host.to_owned()))?;
        let name = target.name.to_string();
        let admin_entry = self
            .admin(admin)
            .ok_or_else(|| Denial::NoGrant(name.clone()))?;
        let ssh = port == target.port;
        let mut best: Option<AllowedForward> = None;
        let mut port_denied = false;
        for g in self
            .grants
            .iter()
            .filter(|g| g.covers(&admin_entry.name, &admin_entry.groups, &name))
        {
            let Some(until) = g.open_until(now) else {
                continue;
            };
            let allowed = if ssh {
                g.unrecorded_tunnels
            } else {
                g.forward_ports.contains(&port)
            };
            if !allowed {
                port_denied = true;
                continue;
            }
            if outlasts(best.as_ref().map(|b| b.until), until) {
                best = Some(AllowedForward {
                    grant: g.name.clone(),
                    target: target.clone(),
                    port,
                    until,
                    max_session: g.max_session,
                });
            }
        }
        match best {
            Some(a) => Ok(a),
            None if port_denied && ssh => Err(Denial::UnrecordedTunnel { target: name, port }),
            None if port_denied => Err(Denial::PortNotAllowed { target: name, port }),
            // No grant open now: the same reason a login would get.
            None => {
                let spec = TargetSpec {
                    target: name.clone(),
                    account: None,
                };
                Err(self
                    .decide(admin, &spec, now)
                    .err()
                    .unwrap_or(Denial::PortNotAllowed { target: name, port }))
            }
        }
    }

    /// Whether grant `grant` still lets `admin` use `target` as `what` at `now`: what a live
    /// session is checked against after a reload. The grant must still exist, name the admin
    /// (or a group of theirs) and the target, allow the account or port, and be open now.
    pub fn still_allows(
        &self,
        grant: &str,
        admin: &str,
        target: &str,
        what: &Use,
        now: Timestamp,
    ) -> bool {
        let (Some(admin), Some(t)) = (self.admin(admin), self.target(target)) else {
            return false;
        };
        self.grants.iter().any(|g| {
            g.name.as_str() == grant
                && g.covers(&admin.name, &admin.groups, target)
                && match what {
                    Use::Account(a) => g.accounts.iter().any(|x| x.as_str() == a),
                    Use::Port(p) if *p == t.port => g.unrecorded_tunnels,
                    Use::Port(p) => g.forward_ports.contains(p),
                }
                && g.open_until(now).is_some()
        })
    }

    /// Everything `admin` may reach at `now`: one entry per target and account.
    pub fn reachable(&self, admin: &str, now: Timestamp) -> Vec<Allowed> {
        let mut out = Vec::new();
        for target in &self.targets {
            for account in &target.accounts {
                let spec = TargetSpec {
                    target: target.name.to_string(),
                    account: Some(account.to_string()),
                };
                if let Ok(a) = self.decide(admin, &spec, now) {
                    out.push(a);
                }
            }
        }
        out
    }
}
