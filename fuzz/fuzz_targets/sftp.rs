//! The SFTP file audit, which watches what admins and targets send over the sftp subsystem:
//! whatever the bytes, it never panics, holds bounded memory, and stops at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stapsteen::fuzzing::sftp(data);
});
