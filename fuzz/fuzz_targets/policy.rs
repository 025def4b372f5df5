//! The policy file parser: any text is a valid policy or a list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        stapsteen::fuzzing::policy(text);
    }
});
