//! Security key attestations (`ssh-keygen -O write-attestation`): the blob parser, the CBOR
//! authenticator data and the certificate checks, for the key and roots in `fuzz/fixtures/`.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stapsteen::fuzzing::AttestationFixture;

/// The challenge the seed in the corpus was made with.
const CHALLENGE: &[u8] = b"stapsteen fuzz challenge";

fn fixture() -> &'static AttestationFixture {
    static F: OnceLock<AttestationFixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let key = std::fs::read_to_string(dir.join("attestation-key.pub")).expect("fixture key");
        AttestationFixture::load(&dir.join("attestation-root.pem"), key.trim())
            .expect("fixture root and key")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = fixture().verify(data, CHALLENGE);
});
