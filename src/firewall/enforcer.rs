//! Keeps the kernel's table equal to the plan: applies it, follows grant windows and validity as
//! time passes, and puts it back when it was changed from outside.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::{Backend, FirewallError, Plan, Ports};
use crate::config::FirewallConfig;
use crate::policy::Policy;
use crate::sync::lock;

type Key = (u32, IpAddr, u16);

/// What a periodic check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The table matched the plan.
    Unchanged,
    /// A grant opened or closed, so the table was rebuilt.
    Rescheduled,
    /// The table had been changed from outside (what was found), and was put back.
    Repaired(String),
}

struct Applied {
    plan: Plan,
    at: Timestamp,
    /// The table as listed right after applying, without handles and grant elements.
    shape: Value,
}

pub struct Enforcer {
    backend: Box<dyn Backend>,
    config: FirewallConfig,
    ports: Ports,
    applied: Mutex<Option<Applied>>,
    in_force: AtomicBool,
}

impl Enforcer {
    pub fn new(backend: Box<dyn Backend>, config: FirewallConfig, ports: Ports) -> Self {
        Self {
            backend,
            config,
            ports,
            applied: Mutex::new(None),
            in_force: AtomicBool::new(false),
        }
    }

    /// The enforcer for the daemon's config, on the real kernel: the front door's and the
    /// console's ports, `nft`.
    pub fn for_config(config: &crate::config::Config) -> Self {
        let ports = Ports {
            ssh: config.listen.iter().map(|a| a.port()).collect(),
            console: config
                .console
                .iter()
                .flat_map(|c| c.listen.iter().map(|a| a.port()))
                .collect(),
        };
        Self::new(Box::new(super::Nft), config.firewall.clone(), ports)
    }

    /// Whether the table is known to be in place; sessions do not start while it is not.
    pub fn in_force(&self) -> bool {
        self.in_force.load(Ordering::SeqCst)
    }

    pub fn plan(&self, policy: &Policy, now: Timestamp) -> Result<Plan, FirewallError> {
        Plan::build(&self.config, &self.ports, policy, now)
    }

    /// Builds and applies the plan for `policy`. On failure the kernel keeps the previous table.
    pub fn apply(&self, policy: &Policy, now: Timestamp) -> Result<Plan, FirewallError> {
        let plan = self.plan(policy, now)?;
        self.install(plan.clone(), now)?;
        Ok(plan)
    }

    fn install(&self, plan: Plan, now: Timestamp) -> Result<(), FirewallError> {
        let result = self.backend.apply(&plan.to_nftables()).and_then(|()| {
            self.backend
                .list()?
                .ok_or_else(|| FirewallError::Nft("table missing right after applying".into()))
        });
        match result {
            Ok(listed) => {
                *lock(&self.applied) = Some(Applied {
                    shape: shape(&listed),
                    plan,
                    at: now,
                });
                self.in_force.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                // The old table may still stand; whether it does is for the next check to see.
                if self.backend.list().ok().flatten().is_none() {
                    self.in_force.store(false, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }

    /// Re-evaluates the grants at `now` and compares the kernel's table with what was applied.
    pub fn check(&self, policy: &Policy, now: Timestamp) -> Result<Outcome, FirewallError> {
        let desired = self.plan(policy, now)?;
        let drift = {
            let applied = lock(&self.applied);
            match applied.as_ref() {
                None => Some("never applied".to_owned()),
                Some(a) if a.plan.keys() != desired.keys() => {
                    drop(applied);
                    self.install(desired, now)?;
                    return Ok(Outcome::Rescheduled);
                }
                Some(a) => match self.backend.list() {
                    Ok(None) => Some("table deleted".to_owned()),
                    Ok(Some(listed)) => a.difference(&listed, now),
                    Err(e) => Some(format!("table unreadable ({e})")),
                },
            }
        };
        let Some(what) = drift else {
            return Ok(Outcome::Unchanged);
        };
        self.in_force.store(false, Ordering::SeqCst);
        self.install(desired, now)?;
        Ok(Outcome::Repaired(what))
    }
}

impl Applied {
    /// How the listed table differs from what was applied, if it does. Grant elements that the
    /// kernel has let expire (or is about to) are not a difference.
    fn difference(&self, listed: &Value, now: Timestamp) -> Option<String> {
        if shape(listed) != self.shape {
            return Some("chains, rules or sets changed".into());
        }
        let present = grant_keys(listed);
        let applied = self.plan.keys();
        if let Some(extra) = present.iter().find(|k| !applied.contains(k)) {
            return Some(format!("element added: {}", show(extra)));
        }
        let margin = SignedDuration::from_secs(3);
        let missing = self.plan.elements.iter().find(|e| {
            let live = e
                .timeout
                .is_none_or(|t| self.at + SignedDuration::from_secs(i64::from(t)) > now + margin);
            live && !present.contains(&e.key())
        });
        missing.map(|e| format!("element removed: {}", show(&e.key())))
    }
}

fn show((mark, addr, port): &Key) -> String {
    format!("0x{mark:08x} . {addr} . {port}")
}

fn is_grants_set(obj: &Value) -> bool {
    obj.get("set")
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with("grants"))
}

/// The listed table without what changes by itself: handles, metainfo, counter values, grant
/// elements.
fn shape(listed: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "handle" | "packets" | "bytes"))
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let objects = listed
        .get("nftables")
        .and_then(Value::as_array)
        .map(|objs| {
            objs.iter()
                .filter(|o| o.get("metainfo").is_none())
                .map(|o| {
                    let mut o = strip(o);
                    if is_grants_set(&o)
                        && let Some(set) = o.get_mut("set").and_then(Value::as_object_mut)
                    {
                        set.remove("elem");
                    }
                    o
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(objects)
}

/// The (mark, address, port) of every element in the grant sets. An element that cannot be
/// read counts as a foreign one.
fn grant_keys(listed: &Value) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    let objects = listed.get("nftables").and_then(Value::as_array);
    for set in objects.into_iter().flatten().filter(|o| is_grants_set(o)) {
        let elems = set
            .get("set")
            .and_then(|s| s.get("elem"))
            .and_then(Value::as_array);
        for elem in elems.into_iter().flatten() {
            let val = elem.get("elem").and_then(|e| e.get("val")).unwrap_or(elem);
            let parts = val.get("concat").and_then(Value::as_array);
            let key = parts.and_then(|p| match p.as_slice() {
                [m, a, port] => Some((
                    number(m)?,
                    a.as_str()?.parse().ok()?,
                    u16::try_from(number(port)?).ok()?,
                )),
                _ => None,
            });
            // Unreadable: a key no plan has, so it shows as an addition.
            keys.insert(key.unwrap_or((0, IpAddr::from([0, 0, 0, 0]), 0)));
        }
    }
    keys
}

fn number(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;
    use nftables::schema::Nftables;
    use std::sync::Arc;

    /// Lists what was applied last, the way nft lists a table, unless a test changed it.
    #[derive(Default)]
    struct Fake {
        listing: Arc<Mutex<Option<Value>>>,
        applied: Arc<Mutex<usize>>,
    }

    impl Backend for Fake {
        fn apply(&self, rules: &Nftables<'_>) -> Result<(), FirewallError> {
            let batch = serde_json::to_value(rules).unwrap();
            let cmds = batch["nftables"].as_array().unwrap();
            let after_delete = cmds
                .iter()
                .rposition(|c| c.get("delete").is_some())
                .unwrap();
            let objects: Vec<Value> = cmds[after_delete + 1..]
                .iter()
                .map(|c| c["add"].clone())
                .collect();
            *lock(&self.listing) = Some(serde_json::json!({ "nftables": objects }));
            *lock(&self.applied) += 1;
            Ok(())
        }
        fn list(&self) -> Result<Option<Value>, FirewallError> {
            Ok(lock(&self.listing).clone())
        }
    }

    const POLICY: &str = r#"
[[admin]]
name = "vendor"
keys = ["sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIDy3w1u+XDVGBoEW2HoQkViCo0YuiZeIjUXW6sR0dJj+AAAABHNzaDo="]

[[target]]
name = "pacs01"
address = "10.20.0.11"
host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG52D/nkw5+01RweRRSrQ3j0OIxGU9SUIZwL+wkcM0WE"]
accounts = ["service"]

[[grant]]
name = "vendor-window"
admins = ["vendor"]
targets = ["pacs01"]
accounts = ["service"]
windows = ["Tue 09:00-12:00"]
forward_ports = [443]
"#;

    type Setup = (
        Enforcer,
        Arc<Mutex<Option<Value>>>,
        Arc<Mutex<usize>>,
        Policy,
    );

    fn setup() -> Setup {
        let fake = Fake::default();
        let (listing, applied) = (fake.listing.clone(), fake.applied.clone());
        let config = FirewallConfig {
            enabled: true,
            admin_networks: vec!["10.10.0.0/24".parse().unwrap()],
            management_networks: vec!["10.20.0.0/24".parse().unwrap()],
            reviewer_networks: vec!["10.30.0.0/24".parse().unwrap()],
        };
        let policy = parse_policy(std::path::Path::new("p.toml"), POLICY).unwrap();
        (
            Enforcer::new(
                Box::new(fake),
                config,
                Ports {
                    ssh: vec![22],
                    console: vec![8443],
                },
            ),
            listing,
            applied,
            policy,
        )
    }

    fn at(t: &str) -> Timestamp {
        crate::policy::parse_time(t).unwrap()
    }

    #[test]
    fn window_opens_and_closes_the_elements_with_a_kernel_timeout() {
        let (fw, _, applied, policy) = setup();
        let plan = fw.apply(&policy, at("2026-03-03 08:59")).unwrap();
        assert!(plan.elements.is_empty());
        assert_eq!(
            fw.check(&policy, at("2026-03-03 08:59:30")).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(
            fw.check(&policy, at("2026-03-03 09:00")).unwrap(),
            Outcome::Rescheduled
        );
        let plan = fw.plan(&policy, at("2026-03-03 09:00")).unwrap();
        let ports: Vec<u16> = plan.elements.iter().map(|e| e.port).collect();
        assert_eq!(ports, [22, 443]);
        assert!(plan.elements.iter().all(|e| e.timeout == Some(3 * 3600)));
        assert_eq!(
            fw.check(&policy, at("2026-03-03 12:00")).unwrap(),
            Outcome::Rescheduled
        );
        assert_eq!(*lock(&applied), 3);
        assert!(fw.in_force());
    }

    #[test]
    fn deleted_table_and_added_element_are_put_back() {
        let (fw, listing, applied, policy) = setup();
        let now = at("2026-03-03 10:00");
        fw.apply(&policy, now).unwrap();
        *lock(&listing) = None;
        assert_eq!(
            fw.check(&policy, now).unwrap(),
            Outcome::Repaired("table deleted".into())
        );
        // Someone opens the SSH port of another host to the vendor's mark.
        let mut widened = lock(&listing).clone().unwrap();
        for o in widened["nftables"].as_array_mut().unwrap() {
            if o["set"]["name"] == "grants4" {
                let extra = serde_json::json!({"concat": [1, "10.20.0.99", 22]});
                o["set"]["elem"].as_array_mut().unwrap().push(extra);
            }
        }
        *lock(&listing) = Some(widened);
        let Outcome::Repaired(what) = fw.check(&policy, now).unwrap() else {
            panic!("not repaired");
        };
        assert!(what.contains("10.20.0.99"), "{what}");
        assert_eq!(*lock(&applied), 3);
        assert_eq!(fw.check(&policy, now).unwrap(), Outcome::Unchanged);
    }

    #[test]
    fn a_target_outside_the_management_networks_is_refused() {
        let (fw, _, _, _) = setup();
        let outside = POLICY.replace("10.20.0.11", "192.168.1.5");
        let policy = parse_policy(std::path::Path::new("p.toml"), &outside).unwrap();
        let e = fw.apply(&policy, at("2026-03-03 10:00")).unwrap_err();
        assert!(
            e.to_string()
                .contains("pacs01 (192.168.1.5) is in no management network"),
            "{e}"
        );
        assert!(!fw.in_force());
    }
}
