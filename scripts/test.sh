#!/usr/bin/env bash
# Runs the whole test suite: unit, engine, conformance and the end-to-end tests that start the
# real natpmpd in network namespaces with real nftables and real NAT-PMP clients.
#   sudo ./scripts/test.sh [extra cargo test arguments]
# Needs root (namespaces, nftables); installs missing system packages via scripts/deps.sh.
# The exit code is the test result.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the end-to-end tests create network namespaces and nftables tables and need root:" >&2
    echo "    sudo ./scripts/test.sh" >&2
    exit 1
fi

./scripts/deps.sh

# Under sudo, cargo may not be on PATH: use the invoking user's rustup installation.
if ! command -v cargo >/dev/null 2>&1; then
    if [ -n "${SUDO_USER:-}" ]; then
        user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
        export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}"
        export RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    fi
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
echo "test.sh: cargo test --workspace --locked $*"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's own last line is the doc-test binary's).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
