#!/usr/bin/env bash
# Installs what the demo and the tests need, if it is missing: OpenSSH server and client,
# iproute2 (network namespaces), nftables, ping, python3 (terminal driver), asciinema (replay check),
# Garage (an S3-compatible store, for the off-site copy tests), built from crates.io; for the
# review console: OpenSSL headers (webauthn-rs), Node.js and npm (the player is bundled from its
# npm package at build time; playwright-core drives the browser tests), chromium and curl.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
have ssh && have scp && have sftp || missing+=(openssh-client)
have ip || missing+=(iproute2)
have nft || missing+=(nftables)
have python3 || missing+=(python3)
have asciinema || missing+=(asciinema)
have setsid && have nsenter || missing+=(util-linux)
have cc || missing+=(gcc)
have systemd-analyze || missing+=(systemd)
have ping || missing+=(iputils-ping)
have pkg-config || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
have node || missing+=(nodejs)
have npm || missing+=(npm)
have chromium || missing+=(chromium)
have curl || missing+=(curl)
have tar || missing+=(tar)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Garage has no Debian package; the tests find it on PATH or in ~/.cargo/bin.
if ! have garage && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
  echo "building Garage (S3 store for the tests) from crates.io; this takes several minutes" >&2
  cargo install garage --version 2.5.0 --locked --debug \
    --no-default-features --features bundled-libs,sqlite >&2
fi

# npm packages, exactly as the lock files pin them (integrity-checked): the console's player,
# which build.rs bundles into the binary, and playwright-core for the browser tests.
root="$(cd "$(dirname "$0")/.." && pwd)"
for dir in src/console/web tests/e2e; do
  if [ ! -d "$root/$dir/node_modules" ] || [ "$root/$dir/package-lock.json" -nt "$root/$dir/node_modules" ]; then
    npm ci --prefix "$root/$dir" --ignore-scripts --no-audit --no-fund >&2
  fi
done
