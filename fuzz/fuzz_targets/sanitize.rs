//! The replay sanitizer, a security boundary: whatever a recording holds, what it lets through
//! to a reviewer's terminal holds only allowed sequences (checked by a second parser pass), and
//! sanitizing that again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stapsteen::fuzzing::{check_sanitized, sanitize};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let out = sanitize(&input);
    if let Err(e) = check_sanitized(&out) {
        panic!("{input:?} -> {out:?}: {e}");
    }
    assert_eq!(sanitize(&out), out, "not idempotent for {input:?}");
});
