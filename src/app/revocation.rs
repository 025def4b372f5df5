//! What a live connection, session or forward holds under the policy, and whether a policy still
//! gives it: the decision a reload (and every registration) makes.
//!
//! Invariant: the admin is checked first, then the key, then the grant, so the reason names the
//! widest thing removed.

use std::fmt;

use jiff::Timestamp;
use russh::keys::{HashAlg, PublicKey};

use crate::policy::{GrantName, Policy, Use};

/// What one connection, session or forward holds: the admin and the key that logged in, and for
/// a session or forward the grant it runs under.
#[derive(Clone, Debug)]
pub struct Access {
    pub admin: String,
    pub key: PublicKey,
    pub under: Option<Under>,
}

/// The grant a session or forward runs under, and what it uses of it.
#[derive(Clone, Debug)]
pub struct Under {
    pub grant: GrantName,
    pub target: String,
    pub what: Use,
}

/// What the policy no longer gives; named in `SESSION_REVOKED` and told to the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    Admin(String),
    /// The key's SHA-256 fingerprint.
    Key(String),
    Grant(String),
}

impl Revoked {
    /// `admin`, `key` or `grant`: the `removed` detail of `SESSION_REVOKED`.
    pub fn kind(&self) -> &'static str {
        match self {
            Revoked::Admin(_) => "admin",
            Revoked::Key(_) => "key",
            Revoked::Grant(_) => "grant",
        }
    }
}

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revoked::Admin(a) => write!(f, "admin {a} removed from the policy"),
            Revoked::Key(k) => write!(f, "key {k} removed from the policy"),
            Revoked::Grant(g) => write!(f, "grant {g} no longer allows this"),
        }
    }
}

/// What `policy` no longer gives `access` at `now`, if anything.
pub fn revoked(policy: &Policy, access: &Access, now: Timestamp) -> Option<Revoked> {
    if policy.admin(&access.admin).is_none() {
        return Some(Revoked::Admin(access.admin.clone()));
    }
    if policy.key_entry(&access.admin, &access.key).is_none() {
        return Some(Revoked::Key(
            access.key.fingerprint(HashAlg::Sha256).to_string(),
        ));
    }
    let u = access.under.as_ref()?;
    (!policy.still_allows(u.grant.as_str(), &access.admin, &u.target, &u.what, now))
        .then(|| Revoked::Grant(u.grant.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::parse_policy;

    const EXAMPLE: &str = include_str!("../../policies/example-hospital.toml");

    fn jan_key(p: &Policy) -> PublicKey {
        p.admin("j.devries").unwrap().keys[0].key.clone()
    }

    fn session(p: &Policy, grant: &str, target: &str, what: Use) -> Access {
        Access {
            admin: "j.devries".into(),
            key: jan_key(p),
            under: Some(Under {
                grant: GrantName::new(grant).unwrap(),
                target: target.into(),
                what,
            }),
        }
    }

    fn now() -> Timestamp {
        "2026-03-03T10:00:00+01:00".parse().unwrap()
    }

    #[test]
    fn a_policy_that_still_gives_access_revokes_nothing() {
        let p = parse_policy(Path::new("p.toml"), EXAMPLE).unwrap();
        let login = session(
            &p,
            "radiologie-beheer",
            "pacs01",
            Use::Account("beheer".into()),
        );
        assert_eq!(revoked(&p, &login, now()), None);
        let fwd = session(&p, "radiologie-beheer", "pacs01", Use::Port(443));
        assert_eq!(revoked(&p, &fwd, now()), None);
        let conn = Access {
            under: None,
            ..login
        };
        assert_eq!(revoked(&p, &conn, now()), None);
    }

    #[test]
    fn names_the_admin_the_key_or_the_grant_removed() {
        let p = parse_policy(Path::new("p.toml"), EXAMPLE).unwrap();
        let login = session(
            &p,
            "radiologie-beheer",
            "pacs01",
            Use::Account("beheer".into()),
        );

        let key_line = EXAMPLE
            .lines()
            .find(|l| l.contains("jan@yubikey-5c"))
            .unwrap();
        // Jan keeps a key, another one.
        let other = "  \"sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAID4MVQqqP8yl+rCR6Kbvgt7O8/l5LGf3Bkr4sj6CGcWnAAAABHNzaDo= jan@spare\",";
        let without_key = EXAMPLE.replace(key_line, other);
        let q = parse_policy(Path::new("p.toml"), &without_key).unwrap();
        let fp = jan_key(&p).fingerprint(HashAlg::Sha256).to_string();
        assert_eq!(revoked(&q, &login, now()), Some(Revoked::Key(fp)));

        let renamed = EXAMPLE.replace("name = \"j.devries\"", "name = \"j.jansen\"");
        let q = parse_policy(Path::new("p.toml"), &renamed).unwrap();
        assert_eq!(
            revoked(&q, &login, now()),
            Some(Revoked::Admin("j.devries".into()))
        );

        let gone = EXAMPLE.replace("name = \"radiologie-beheer\"", "name = \"other\"");
        let q = parse_policy(Path::new("p.toml"), &gone).unwrap();
        let grant = Some(Revoked::Grant("radiologie-beheer".into()));
        assert_eq!(revoked(&q, &login, now()), grant);
    }

    #[test]
    fn a_changed_grant_that_no_longer_covers_the_use_revokes_it() {
        let p = parse_policy(Path::new("p.toml"), EXAMPLE).unwrap();
        let grant = Some(Revoked::Grant("radiologie-beheer".into()));
        // Not an account the grant lists.
        let other = session(
            &p,
            "radiologie-beheer",
            "pacs01",
            Use::Account("service".into()),
        );
        assert_eq!(revoked(&p, &other, now()), grant);
        // A target dropped from the grant.
        let q = parse_policy(
            Path::new("p.toml"),
            &EXAMPLE.replace(
                "targets = [\"pacs01\", \"import01\"]",
                "targets = [\"import01\"]",
            ),
        )
        .unwrap();
        let login = session(
            &p,
            "radiologie-beheer",
            "pacs01",
            Use::Account("beheer".into()),
        );
        assert_eq!(revoked(&q, &login, now()), grant);
        // A port dropped, and the SSH port without unrecorded tunnels.
        let q = parse_policy(
            Path::new("p.toml"),
            &EXAMPLE.replace("[443, 104, 11112]", "[104]"),
        )
        .unwrap();
        let fwd = session(&p, "radiologie-beheer", "pacs01", Use::Port(443));
        assert_eq!(revoked(&q, &fwd, now()), grant);
        let ssh = session(&p, "radiologie-beheer", "pacs01", Use::Port(22));
        assert_eq!(revoked(&p, &ssh, now()), grant);
    }
}
