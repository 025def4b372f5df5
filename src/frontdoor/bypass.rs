//! Test-only, and compiled into debug builds only: lets the daemon skip its own grant check
//! (`STAPSTEEN_TEST_SKIP_GRANT_CHECK`), so that a test can show the kernel refusing what the
//! daemon wrongly allowed. Release builds contain neither this code nor the switch.

use jiff::Timestamp;

use crate::app::Under;
use crate::policy::{Allowed, Policy, TargetSpec};

/// Any open grant of `admin`, pointed at the requested target: the daemon bug of checking the
/// wrong grant. The connection carries that grant's mark.
pub fn allowed_anyway(
    policy: &Policy,
    admin: &str,
    spec: &TargetSpec,
    now: Timestamp,
) -> Option<Allowed> {
    let target = policy.target(&spec.target)?.clone();
    let account = match &spec.account {
        Some(a) => target.accounts.iter().find(|x| x.as_str() == a)?.clone(),
        None => target.accounts.first()?.clone(),
    };
    let granted = policy.reachable(admin, now).into_iter().next()?;
    Some(Allowed {
        target,
        account,
        ..granted
    })
}

/// The grant a session registers under; none with the switch on, so that the registration does
/// not check the grant again: the same daemon bug, all the way to the dial.
pub fn registered_under(under: Under) -> Option<Under> {
    std::env::var_os("STAPSTEEN_TEST_SKIP_GRANT_CHECK")
        .is_none()
        .then_some(under)
}
