//! Test-only, and compiled into debug builds only: holds a session's setup between its grant
//! decision and its registration, so that a test can reload the policy exactly there
//! (`STAPSTEEN_TEST_SETUP_PAUSE=DIR`). Release builds contain neither this code nor the switch.
//!
//! While `DIR/hold` exists, a session that reaches the point creates `DIR/reached` and waits
//! (at most a minute) until the test removes `DIR/hold`.

use std::time::Duration;

pub async fn before_registration() {
    let Some(dir) = std::env::var_os("STAPSTEEN_TEST_SETUP_PAUSE").map(std::path::PathBuf::from)
    else {
        return;
    };
    let hold = dir.join("hold");
    if !hold.exists() {
        return;
    }
    let _ = std::fs::write(dir.join("reached"), b"");
    for _ in 0..1200 {
        if !hold.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
