//! The audit chain: signed-note parsing, the entry text parser, and chain verification over
//! fuzzed lines.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stapsteen::audit::NoteVerifier;

fn verifier() -> &'static NoteVerifier {
    static V: OnceLock<NoteVerifier> = OnceLock::new();
    V.get_or_init(|| stapsteen::fuzzing::audit_verifier().expect("a verifier for a fresh key"))
}

fuzz_target!(|data: &[u8]| {
    stapsteen::fuzzing::audit(data, verifier());
});
