//! Security keys: what each login's signature must show (a touch, the PIN), the counter kept per
//! key, and the attestation that proves at enrolment that a key lives in hardware.
//!
//! Invariants: flags and counter are read only from the signature russh has verified (our russh
//! patch hands it to the handler); a signature that shows less than the key's policy entry
//! demands is refused; a key's stored counter only ever rises, and is stored only after its
//! signature verified; an attestation is accepted only when its certificate chains to a root the
//! policy names, its enrolment signature verifies, and it attests this very key for the
//! application the policy expects.

mod attestation;
mod counter;
mod flags;

pub use attestation::{AttestationError, Attested, Roots, verify_attestation};
pub use counter::{CounterCheck, CounterError, CounterStore, CounterVerdict, judge};
pub use flags::{Assertion, FlagRefusal, Required, USER_PRESENT, USER_VERIFIED};
