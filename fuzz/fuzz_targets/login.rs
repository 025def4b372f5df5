//! SSH user names and exec commands: what the admin asks for. The first line is the user name,
//! the rest the command; a target that parses prints back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (user, command) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(user) = std::str::from_utf8(user) {
        stapsteen::fuzzing::login(user, command);
    }
});
