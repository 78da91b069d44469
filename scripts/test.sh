#!/usr/bin/env bash
# The one command that runs Courier's whole test suite on a fresh Debian 12 machine:
# installs what is missing (bubblewrap for the function sandbox), builds the binaries the
# end-to-end tests start, and runs every test with cargo-nextest.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(auth)'   # extra arguments go to cargo nextest run
#
# Missing infrastructure is a failure, never a skip: COURIER_TEST_REQUIRE_SANDBOX=1 makes the
# sandbox tests fail when bubblewrap cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v bwrap >/dev/null; then
  log "Installing bubblewrap (function sandbox)"
  apt_install bubblewrap
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "Installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

export COURIER_TEST_REQUIRE_SANDBOX=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "Building the courier binary for the end-to-end tests"
cargo build --workspace --bins

log "Running the tests"
cargo nextest run --workspace --no-fail-fast "$@"
