//! Bundles the review console's player (the npm package asciinema-player) into the binary.
//! `STAPSTEEN_PLAYER_DIR` names the package's `dist/bundle` directory (the Nix build sets it);
//! otherwise it is taken from `npm ci --prefix src/console/web`, which tests/setup.sh runs.

use std::path::PathBuf;

const FILES: [&str; 2] = ["asciinema-player.min.js", "asciinema-player.css"];

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=STAPSTEEN_PLAYER_DIR");
    let dir = match std::env::var_os("STAPSTEEN_PLAYER_DIR") {
        Some(d) => PathBuf::from(d),
        // Read when the script runs, not when it is compiled: a target directory shared by
        // two checkouts reuses the compiled script.
        None => {
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?)
                .join("src/console/web/node_modules/asciinema-player/dist/bundle")
        }
    };
    for f in FILES {
        let path = dir.join(f);
        println!("cargo:rerun-if-changed={}", path.display());
        if !path.is_file() {
            return Err(format!(
                "{} is missing: run `npm ci --prefix src/console/web` (tests/setup.sh does), \
                 or set STAPSTEEN_PLAYER_DIR to asciinema-player's dist/bundle directory",
                path.display()
            ));
        }
    }
    println!("cargo:rustc-env=STAPSTEEN_PLAYER_DIR={}", dir.display());
    Ok(())
}
