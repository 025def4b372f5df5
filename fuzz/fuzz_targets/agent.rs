//! The software security key's agent protocol: every request gets an answer, failure or not.
//! An input starting with 0xff becomes a sign request for the key's own blob over the rest, so
//! the signing path is reached too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stapsteen::fuzzing::AgentFixture;

fn fixture() -> &'static AgentFixture {
    static F: OnceLock<AgentFixture> = OnceLock::new();
    F.get_or_init(|| AgentFixture::new().expect("a software key in a temporary directory"))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    f.answer(&f.request(data));
});
