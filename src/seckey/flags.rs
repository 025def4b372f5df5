//! The authenticator's flags and counter in a security-key signature, and the decision on flags.

use russh::keys::ssh_key::{Algorithm, Signature};

/// FIDO flag: the user touched the key.
pub const USER_PRESENT: u8 = 0x01;
/// FIDO flag: the key verified the user (PIN or biometrics).
pub const USER_VERIFIED: u8 = 0x04;

/// What the authenticator said in one signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assertion {
    pub flags: u8,
    pub counter: u32,
}

impl Assertion {
    /// The flags and counter of a security-key signature: ssh-key keeps them as the last five
    /// bytes (flags, then the counter big-endian) after the raw signature. `None` for any other
    /// kind of signature.
    pub fn from_signature(sig: &Signature) -> Option<Self> {
        if !matches!(
            sig.algorithm(),
            Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256
        ) {
            return None;
        }
        let bytes = sig.as_bytes();
        let tail = bytes.get(bytes.len().checked_sub(5)?..)?;
        let (&flags, counter) = tail.split_first()?;
        Some(Self {
            flags,
            counter: u32::from_be_bytes(counter.try_into().ok()?),
        })
    }

    pub fn user_present(&self) -> bool {
        self.flags & USER_PRESENT != 0
    }

    pub fn user_verified(&self) -> bool {
        self.flags & USER_VERIFIED != 0
    }

    /// `up,uv`, `up`, `uv` or `none`, for audit events and the chain.
    pub fn flag_names(&self) -> &'static str {
        match (self.user_present(), self.user_verified()) {
            (true, true) => "up,uv",
            (true, false) => "up",
            (false, true) => "uv",
            (false, false) => "none",
        }
    }
}

/// What a key's signatures must show, from its policy entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Required {
    /// A touch on every login (off only with `no-touch-required`).
    pub presence: bool,
    /// The PIN on every login (the default; off with `presence-only`).
    pub verification: bool,
}

/// Why a signature's flags are not enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagRefusal {
    #[error("no user presence: the security key signed without being touched")]
    NoPresence,
    #[error("no user verification: the security key signed without asking for its PIN")]
    NoVerification,
}

impl FlagRefusal {
    /// Stable code, the `reason` of `AUTH_DENIED`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoPresence => "no_user_presence",
            Self::NoVerification => "no_user_verification",
        }
    }

    /// Shown to the admin in the SSH banner: why, and what to do.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::NoPresence => {
                "stapsteen: login refused: your security key signed without a touch.\r\n\
                 Make a key that asks for a touch (no -O no-touch-required):\r\n  \
                 ssh-keygen -t ed25519-sk -O verify-required\r\n\
                 and give the new .pub line to whoever keeps the policy.\r\n"
            }
            Self::NoVerification => {
                "stapsteen: login refused: your security key did not ask for its PIN.\r\n\
                 Set a PIN on the key if it has none, then make a key that asks for it:\r\n  \
                 ssh-keygen -t ed25519-sk -O verify-required\r\n\
                 and give the new .pub line to whoever keeps the policy.\r\n"
            }
        }
    }
}

impl Required {
    /// Whether `assertion` shows what is required; presence is checked first.
    pub fn check(self, assertion: Assertion) -> Result<(), FlagRefusal> {
        if self.presence && !assertion.user_present() {
            return Err(FlagRefusal::NoPresence);
        }
        if self.verification && !assertion.user_verified() {
            return Err(FlagRefusal::NoVerification);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Required = Required {
        presence: true,
        verification: true,
    };

    fn a(flags: u8) -> Assertion {
        Assertion { flags, counter: 1 }
    }

    #[test]
    fn flag_decisions() {
        assert_eq!(BOTH.check(a(0x05)), Ok(()));
        assert_eq!(BOTH.check(a(0x01)), Err(FlagRefusal::NoVerification));
        assert_eq!(BOTH.check(a(0x04)), Err(FlagRefusal::NoPresence));
        assert_eq!(BOTH.check(a(0x00)), Err(FlagRefusal::NoPresence));
        let presence_only = Required {
            presence: true,
            verification: false,
        };
        assert_eq!(presence_only.check(a(0x01)), Ok(()));
        assert_eq!(presence_only.check(a(0x04)), Err(FlagRefusal::NoPresence));
        let no_touch = Required {
            presence: false,
            verification: true,
        };
        assert_eq!(no_touch.check(a(0x04)), Ok(()));
        assert_eq!(no_touch.check(a(0x00)), Err(FlagRefusal::NoVerification));
        let nothing = Required {
            presence: false,
            verification: false,
        };
        assert_eq!(nothing.check(a(0x00)), Ok(()));
        // Other flag bits (AT, ED, backup) neither help nor hurt.
        assert_eq!(BOTH.check(a(0xc5)), Ok(()));
        assert_eq!(BOTH.check(a(0xc0)), Err(FlagRefusal::NoPresence));
    }

    #[test]
    fn flags_and_counter_from_signature() {
        let mut data = vec![7u8; 64];
        data.extend([0x05, 0, 0, 1, 2]);
        let sig = Signature::new(Algorithm::SkEd25519, data).unwrap();
        assert_eq!(
            Assertion::from_signature(&sig),
            Some(Assertion {
                flags: 0x05,
                counter: 258
            })
        );
        let plain = Signature::new(Algorithm::Ed25519, vec![7u8; 64]).unwrap();
        assert_eq!(Assertion::from_signature(&plain), None);
    }
}
