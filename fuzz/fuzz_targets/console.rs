//! Console requests: the first line is a query string for the sessions page (also tried as a
//! session id), the rest recording events for the player markers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, events) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(query) = std::str::from_utf8(query) {
        stapsteen::fuzzing::console(query, events);
    }
});
