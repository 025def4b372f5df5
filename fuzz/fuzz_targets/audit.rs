//! The audit chain: signed-note parsing, the entry text parser, and chain verification, over
//! fuzzed lines and over fuzzed entry texts signed with the fixture's key (NUL separates them).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stapsteen::fuzzing::AuditFixture;

fn fixture() -> &'static AuditFixture {
    static F: OnceLock<AuditFixture> = OnceLock::new();
    F.get_or_init(|| AuditFixture::new().expect("a signing key"))
}

fuzz_target!(|data: &[u8]| {
    fixture().check(data);
});
