#!/usr/bin/env bash
# Runs the whole test suite in two steps: first everything that needs no root (unit, engine,
# conformance, config; what a normal user's `cargo test` runs), then the root suites: the real
# kernel over netlink, and the end-to-end tests that start the real natpmpd in network
# namespaces with real nftables, real NAT-PMP and PCP clients and real traffic.
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
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# Step 1: everything that needs no root (what a normal user's `cargo test` runs).
echo "test.sh: step 1 of 2, no root needed: cargo test --workspace --locked $*"
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
unprivileged=${PIPESTATUS[0]}
# Step 2: the root suites, built only with their `root-tests` features: the real kernel
# (natpmp-pcp-nft's `kernel` binary) and the namespace lab (natpmpd's `e2e` binary).
root_suites=(-p natpmp-pcp-nft -p natpmpd --features natpmp-pcp-nft/root-tests,natpmpd/root-tests --test kernel --test e2e)
echo "test.sh: step 2 of 2, as root: cargo test --locked ${root_suites[*]} $*"
cargo test --locked "${root_suites[@]}" "$@" 2>&1 | tee -a "$log"
root=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's own last line is one binary's).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
[ "$unprivileged" -eq 0 ] && [ "$root" -eq 0 ]
