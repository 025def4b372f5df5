//! Why an authentication is refused, each reason with the stable code that `AUTH_DENIED`
//! carries.

use crate::seckey::FlagRefusal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AuthRefusal {
    MethodPassword,
    MethodKeyboardInteractive,
    Certificate,
    NotSecurityKey,
    InvalidUser,
    UnknownAdmin,
    KeyNotListed,
    NotSecurityKeySignature,
    Flags(FlagRefusal),
    CounterRegression,
    KeyQuarantined,
    CounterStoreFailed,
}

impl AuthRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::MethodPassword => "method_password",
            Self::MethodKeyboardInteractive => "method_keyboard_interactive",
            Self::Certificate => "certificate",
            Self::NotSecurityKey => "not_security_key",
            Self::InvalidUser => "invalid_user",
            Self::UnknownAdmin => "unknown_admin",
            Self::KeyNotListed => "key_not_listed",
            Self::NotSecurityKeySignature => "not_security_key_signature",
            Self::Flags(f) => f.code(),
            Self::CounterRegression => "counter_regression",
            Self::KeyQuarantined => "key_quarantined",
            Self::CounterStoreFailed => "counter_store_failed",
        }
    }
}
