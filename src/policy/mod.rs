//! Policy: who (named admins) may reach what (targets, accounts), and when (grants).
//!
//! Invariants: a [`Policy`] only exists when every admin, target and grant in the file validated;
//! names are unique; every grant refers to admins, groups, targets and accounts that exist; every
//! admin key is a FIDO security-key type. Evaluation ([`Policy::decide`]) is pure: it takes the
//! time as an argument, so the clock is a seam for tests.

mod decide;
mod parse;
mod types;
mod window;

pub use decide::{Allowed, Denial, Use, local, policy_zone};
pub use parse::{load_policy, parse_policy, parse_time};
pub use types::{
    Account, AdminName, EnrolmentCode, GrantName, Policy, Reviewer, ReviewerName, Target,
    TargetSpec,
};
