//! Validated policy types. Constructors enforce the syntax rules; cross references are checked
//! by the parser.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use russh::keys::PublicKey;

use super::window::WeeklyWindow;

/// Error for a name that does not follow the naming rule.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid {kind} {value:?}: use 1-32 characters of a-z, 0-9, '-', '_' and '.', starting with a letter"
)]
pub struct NameError {
    kind: &'static str,
    value: String,
}

fn check_name(kind: &'static str, value: &str) -> Result<(), NameError> {
    let ok = (1..=32).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            value: value.to_owned(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(value: &str) -> Result<Self, NameError> {
                check_name($kind, value).map(|()| Self(value.to_owned()))
            }
            // One accessor for every name type; group names are only compared and shown.
            #[allow(dead_code)]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A named person. Never a shared account.
    AdminName,
    "admin name"
);
name_type!(
    /// A target host on the management network.
    TargetName,
    "target name"
);
name_type!(
    /// A login account on a target.
    Account,
    "account"
);
name_type!(
    /// A grant, referred to in audit events.
    GrantName,
    "grant name"
);
name_type!(
    /// A group of admins.
    GroupName,
    "group name"
);
name_type!(
    /// A named security reviewer, who may use the review console.
    ReviewerName,
    "reviewer name"
);

/// One security-key public key of an admin.
#[derive(Clone, Debug)]
pub struct AdminKey {
    pub key: PublicKey,
    pub comment: String,
    /// What every login's signature must show (touch, PIN).
    pub required: crate::seckey::Required,
    pub counter: crate::seckey::CounterCheck,
    /// The enrolment attestation, verified when the policy was loaded.
    pub attested: Option<crate::seckey::Attested>,
}

#[derive(Clone, Debug)]
pub struct Admin {
    pub name: AdminName,
    pub full_name: Option<String>,
    pub groups: Vec<GroupName>,
    pub keys: Vec<AdminKey>,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: TargetName,
    pub address: IpAddr,
    pub port: u16,
    /// Pinned host keys; the target must present one of them.
    pub host_keys: Vec<PublicKey>,
    pub accounts: Vec<Account>,
    /// For a target that cannot take certificates: the bastion's private key file for it. Such a
    /// target's own log cannot name the person; stapsteen's audit trail still does.
    pub static_key: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Grant {
    pub name: GrantName,
    pub admins: Vec<AdminName>,
    pub groups: Vec<GroupName>,
    pub targets: Vec<TargetName>,
    /// Accounts this grant allows; the first is the default account.
    pub accounts: Vec<Account>,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    /// Empty means: any time within the validity period.
    pub windows: Vec<WeeklyWindow>,
    pub max_session: Duration,
    pub record_input: bool,
    /// Ports on the grant's targets that `ssh -L`/`-W` may reach, e.g. 443 or 104.
    pub forward_ports: Vec<u16>,
    /// Whether a forward may reach the target's SSH port: an end-to-end tunnel that the bastion
    /// cannot record.
    pub unrecorded_tunnels: bool,
    /// A shell needs a pty (`ssh -t`); commands and subsystems are not affected.
    pub require_pty: bool,
}

/// A security reviewer: logs in to the review console with a WebAuthn security key.
#[derive(Clone, Debug)]
pub struct Reviewer {
    pub name: ReviewerName,
    pub full_name: Option<String>,
    /// A one-time enrolment code carried by the policy, for an appliance without a shell.
    pub enrolment: Option<EnrolmentCode>,
}

/// The hash of a one-time enrolment code (`stapsteen console enrol NAME --for-policy`) and
/// when it expires. The code itself is never in the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolmentCode {
    /// Lowercase hex SHA-256 of the code.
    pub sha256: String,
    pub until: Timestamp,
}

/// A whole validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub admins: Vec<Admin>,
    pub targets: Vec<Target>,
    pub grants: Vec<Grant>,
    pub reviewers: Vec<Reviewer>,
    /// What `check` warns about: keys that log in without a touch or without the PIN.
    pub warnings: Vec<super::parse::Problem>,
}

impl Policy {
    pub fn admin(&self, name: &str) -> Option<&Admin> {
        self.admins.iter().find(|a| a.name.as_str() == name)
    }

    pub fn reviewer(&self, name: &str) -> Option<&Reviewer> {
        self.reviewers.iter().find(|r| r.name.as_str() == name)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name.as_str() == name)
    }

    /// The admin whose listed keys include `key` (key data compared, comment ignored).
    pub fn key_entry(&self, admin: &str, key: &PublicKey) -> Option<&AdminKey> {
        self.admin(admin)?
            .keys
            .iter()
            .find(|k| k.key.key_data() == key.key_data())
    }
}

/// What the admin asked for: a target, optionally with an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub target: String,
    pub account: Option<String>,
}

impl TargetSpec {
    /// `pacs01` or `beheer@pacs01`.
    pub fn parse(s: &str) -> Option<Self> {
        let (account, target) = match s.split_once('@') {
            Some((a, t)) => (Some(a), t),
            None => (None, s),
        };
        let valid = |v: &str| check_name("", v).is_ok();
        if !valid(target) || account.is_some_and(|a| !valid(a)) {
            return None;
        }
        Some(Self {
            target: target.to_owned(),
            account: account.map(str::to_owned),
        })
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.account {
            Some(a) => write!(f, "{a}@{}", self.target),
            None => f.write_str(&self.target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(AdminName::new("alice").is_ok());
        assert!(AdminName::new("a.de-vries_2").is_ok());
        for bad in ["", "Alice", "1x", "root ", "a:b", "a@b", &"x".repeat(33)] {
            assert!(AdminName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn target_spec() {
        assert_eq!(
            TargetSpec::parse("beheer@pacs01"),
            Some(TargetSpec {
                target: "pacs01".into(),
                account: Some("beheer".into())
            })
        );
        assert_eq!(TargetSpec::parse("pacs01").map(|t| t.account), Some(None));
        assert_eq!(TargetSpec::parse("x@"), None);
        assert_eq!(TargetSpec::parse("../etc"), None);
    }
}
