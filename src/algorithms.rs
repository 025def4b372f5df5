//! The only algorithms stapsteen speaks, on both legs: hybrid post-quantum or curve25519 key
//! exchange with strict kex, Ed25519 host keys, AEAD ciphers, EtM MACs, no compression.

use std::borrow::Cow;

use russh::keys::Algorithm;
use russh::keys::ssh_key::EcdsaCurve;
use russh::{Preferred, cipher, compression, kex, mac};

const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
];
/// Towards targets the bastion is the client and its order decides: AES-GCM first, because on
/// x86-64 with AES-NI and carry-less multiply (every server CPU the appliance runs on) aws-lc
/// seals AES-256-GCM in well under half the cycles of ChaCha20-Poly1305 (the bulk benchmark's
/// profile had the upstream's ChaCha20 and Poly1305 at 12% of the bastion's time). The admins'
/// clients choose their own on the front door.
const UPSTREAM_CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_128_GCM,
];
const MACS: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];
const NO_COMPRESSION: &[compression::Name] = &[compression::NONE];

/// Algorithms offered to admins' clients.
pub fn front_door() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(&[
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: Cow::Borrowed(&[Algorithm::Ed25519]),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(NO_COMPRESSION),
    }
}

/// Algorithms used towards targets. Targets may have ECDSA host keys (pinned in policy).
pub fn upstream() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(&[
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::EXTENSION_SUPPORT_AS_CLIENT,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
        ]),
        key: Cow::Borrowed(&[
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ]),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(UPSTREAM_CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(NO_COMPRESSION),
    }
}
