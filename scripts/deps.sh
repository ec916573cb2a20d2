#!/usr/bin/env bash
# Installs the system packages natpmpd's tests and lab need, on Debian/Ubuntu, as root:
#   nftables (nft), iproute2 (ip netns), natpmpc (a real NAT-PMP client for the end-to-end
#   tests), conntrack, socat (scripts/lab.sh), procps, and a C linker for Rust if missing.
# Rust itself is expected to be installed already (rustup or distro).
# Safe to run repeatedly: it installs only what is missing.
set -euo pipefail

PACKAGES=(nftables iproute2 natpmpc conntrack socat procps ca-certificates)
# The Debian package and its checks (scripts/build-deb.sh, scripts/check-package.sh):
# dpkg-shlibdeps, strip, lintian, systemd-analyze, man (for verify's man-page check).
PACKAGES+=(dpkg-dev binutils lintian systemd man-db)
# The Rust toolchain links through `cc`; install one only if there is none.
if ! command -v cc >/dev/null 2>&1; then
    PACKAGES+=(gcc libc6-dev)
fi

say() { echo "deps.sh: $*"; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "this is not a Debian/Ubuntu system (no apt-get/dpkg)." >&2
    say "install these packages (or your distribution's equivalents) by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    say "all system packages present: ${PACKAGES[*]}"
else
    if [ "$(id -u)" -ne 0 ]; then
        say "missing packages: ${missing[*]}; run as root: sudo $0" >&2
        exit 1
    fi
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The tools the tests call by name must now be there.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
for tool in ip nft natpmpc conntrack socat; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "\`$tool\` is still missing after installing packages" >&2
        exit 1
    fi
done
say "ok"
