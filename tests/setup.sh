#!/usr/bin/env bash
# Installs what the demo and the tests need, if it is missing: OpenSSH server and client,
# iproute2 (network namespaces), nftables, ping, python3 (terminal driver) with its cryptography
# module (the hostile-input suite's raw SSH client), asciinema (replay check),
# Garage (an S3-compatible store, for the off-site copy tests) and cargo-fuzz (the fuzz targets),
# built from crates.io; for the review console: OpenSSL headers (webauthn-rs), Node.js and npm
# (the player is bundled from its npm package at build time; playwright-core drives the browser
# tests), chromium and curl.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
{ have sshd || [ -x /usr/sbin/sshd ]; } || missing+=(openssh-server)
have ssh && have scp && have sftp || missing+=(openssh-client)
have ip || missing+=(iproute2)
have nft || missing+=(nftables)
have python3 || missing+=(python3)
# The hostile-input suite's raw SSH client (tests/support/ssh_raw.py) does X25519 and AES-GCM.
python3 -c 'import cryptography' 2>/dev/null || missing+=(python3-cryptography)
have asciinema || missing+=(asciinema)
have setsid && have nsenter || missing+=(util-linux)
have cc || missing+=(gcc)
have c++ || missing+=(g++)  # libFuzzer, for the fuzz targets
have systemd-analyze || missing+=(systemd)
have ping || missing+=(iputils-ping)
have pkg-config || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
have node || missing+=(nodejs)
have npm || missing+=(npm)
have chromium || missing+=(chromium)
have curl || missing+=(curl)
have tar || missing+=(tar)
have patch || missing+=(patch)
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

# moto's S3 server: a store that honours If-None-Match, for the create-only off-site copy test.
if ! have moto_server; then
  echo "installing moto[server] (S3 store with conditional writes) from PyPI" >&2
  python3 -m pip install --quiet 'moto[server]==5.2.5' >&2
fi

# cargo-fuzz, for the fuzz targets in fuzz/ (fuzz/run, .ci/run).
if ! have cargo-fuzz && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
  echo "building cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked >&2
fi

# npm packages, exactly as the lock files pin them (integrity-checked): the console's player,
# which build.rs bundles into the binary, and playwright-core for the browser tests.
root="$(cd "$(dirname "$0")/.." && pwd)"
for dir in src/console/web tests/e2e; do
  if [ ! -d "$root/$dir/node_modules" ] || [ "$root/$dir/package-lock.json" -nt "$root/$dir/node_modules" ]; then
    npm ci --prefix "$root/$dir" --ignore-scripts --no-audit --no-fund >&2
  fi
done

# russh with our patch (Cargo.toml [package.metadata.patched.russh]): the pristine crate from the
# crates registry, fetched by cargo (which checks it against the index), checked against the pinned
# SHA-256 and against the version Cargo.lock names, patched into the directory that
# [patch.crates-io] points at. A stamp makes a second run instant.
meta() { sed -n '/^\[package.metadata.patched.russh\]/,/^\[/p' "$root/Cargo.toml" | sed -n "s/^$1 = \"\(.*\)\"$/\1/p"; }
russh_version=$(meta version)
russh_sha256=$(meta sha256)
russh_patch="$root/$(meta patch)"
locked=$(sed -n '/^name = "russh"$/{n;s/^version = "\(.*\)"$/\1/p}' "$root/Cargo.lock")
if [ "$locked" != "$russh_version" ]; then
  echo "Cargo.lock names russh $locked, the patch is for $russh_version" >&2
  exit 1
fi
dest="$root/target/run-tests-setup.sh/russh-$russh_version"
stamp="$russh_sha256 $(sha256sum "$russh_patch" | cut -d' ' -f1)"
if [ "$(cat "$dest/.stapsteen-patched" 2>/dev/null)" != "$stamp" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/fetch"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[lib]\npath = "lib.rs"\n[dependencies]\nrussh = { version = "=%s", default-features = false }\n' \
    "$russh_version" > "$work/fetch/Cargo.toml"
  touch "$work/fetch/lib.rs"
  cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"russh-$russh_version.crate" | head -n1)
  echo "$russh_sha256  $crate" | sha256sum --check --quiet
  mkdir -p "$work/crate"
  tar -xzf "$crate" -C "$work/crate" --strip-components=1
  patch --quiet --directory "$work/crate" --strip=1 < "$russh_patch"
  echo "$stamp" > "$work/crate/.stapsteen-patched"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$work/crate" "$dest"
  echo "patched russh $russh_version into $dest" >&2
fi

# OpenSSH's own software security key (regress/misc/sk-dummy), for tests/seckey.rs: a second
# authenticator implementation beside stapsteen's software key, built from Debian's openssh
# source by the workplace's shared tool into /var/tmp/sk-dummy (once).
sk_tool="$root/../shared/tools/build-sk-dummy.sh"
if [ -f "$sk_tool" ]; then
  bash "$sk_tool" >/dev/null
else
  echo "note: $sk_tool is not here; tests/seckey.rs needs sk-dummy.so (set SK_DUMMY to its path)" >&2
fi
