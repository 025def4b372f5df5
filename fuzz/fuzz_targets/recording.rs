//! The asciicast reader and the recording verifier: a fuzzed `.cast` in place of a sealed one.
//! Verification never panics, the unmodified recording verifies as sealed, and `recordings cat`
//! prints only allowed sequences.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stapsteen::fuzzing::RecordingFixture;

fn fixture() -> &'static RecordingFixture {
    static F: OnceLock<RecordingFixture> = OnceLock::new();
    F.get_or_init(|| {
        let f = RecordingFixture::new(b"$ ls\r\nREADME \x1b[1;34msrc\x1b[0m\r\n\x1b]0;title\x07$ ")
            .expect("a recording in a temporary directory");
        // The recording as written verifies as sealed (`check` asserts it).
        f.check(&f.cast.clone())
            .expect("the temporary directory stays writable");
        f
    })
}

fuzz_target!(|data: &[u8]| {
    fixture()
        .check(data)
        .expect("the temporary directory stays writable");
});
