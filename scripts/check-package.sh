#!/usr/bin/env bash
# Builds the Debian package and checks what it ships, as CI does (`.ci/run` calls this):
#   1. scripts/build-deb.sh (one `cargo build --release --locked`);
#   2. unpacks the .deb into a scratch directory (`dpkg-deb -x`) and checks the files are there;
#   3. runs the shipped natpmpd --check-config on the shipped /etc/natpmpd/natpmpd.toml;
#   4. lintian: no errors (its whole output is printed);
#   5. systemd-analyze verify on the shipped unit (its programs and man pages from the
#      package), and systemd-analyze security --offline=yes: exposure below 2.0.
# Needs: dpkg-dev, binutils, lintian, systemd (for systemd-analyze), man-db; scripts/deps.sh
# installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
say() { echo "check-package.sh: $*"; }
fail() { echo "check-package.sh: FAILED: $*" >&2; exit 1; }

deb="$(./scripts/build-deb.sh "$@" | tail -1)"
say "package: $deb"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
dpkg-deb -x "$deb" "$scratch/root"
root="$scratch/root"
unit=lib/systemd/system/natpmpd.service

for f in usr/sbin/natpmpd usr/sbin/natpmpctl "$unit" etc/natpmpd/natpmpd.toml \
    usr/share/man/man8/natpmpd.8.gz usr/share/man/man8/natpmpctl.8.gz \
    usr/share/man/man5/natpmpd.toml.5.gz usr/share/doc/natpmpd/copyright \
    usr/share/doc/natpmpd/changelog.Debian.gz; do
    [ -f "$root/$f" ] || fail "/$f is not in the package"
done
dpkg-deb -f "$deb" Depends | grep -q '\bnftables\b' || fail "Depends lacks nftables"
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)" = /etc/natpmpd/natpmpd.toml ] \
    || fail "/etc/natpmpd/natpmpd.toml is not the conffile"
[ "$(grep -v '^#' "$root/etc/natpmpd/natpmpd.toml" | grep -m1 .)" = "enabled = false" ] \
    || fail "the shipped configuration does not start with enabled = false"
say "files, Depends and conffiles: ok"

"$root/usr/sbin/natpmpd" --check-config "$root/etc/natpmpd/natpmpd.toml" \
    || fail "the shipped natpmpd refuses the shipped configuration"
"$root/usr/sbin/natpmpctl" --version

say "lintian:"
lintian_out="$scratch/lintian.txt"
set +e
lintian --fail-on error "$deb" >"$lintian_out" 2>&1
lintian_rc=$?
set -e
cat "$lintian_out"
[ "$lintian_rc" -eq 0 ] || fail "lintian reports errors (exit $lintian_rc)"
say "lintian: no errors"

# verify resolves the unit's programs and man pages inside the unpacked package; the
# targets it names come from this machine's systemd.
cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" natpmpd.service \
    || fail "systemd-analyze verify"
say "systemd-analyze verify: ok"
security="$(systemd-analyze security --offline=yes --root="$root" natpmpd.service 2>&1)" \
    || fail "systemd-analyze security: $security"
exposure="$(sed -n 's/.*Overall exposure level for natpmpd.service: \([0-9.]*\).*/\1/p' <<<"$security")"
[ -n "$exposure" ] || fail "no exposure figure in: $security"
say "systemd-analyze security --offline=yes: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e < 2.0) }' || fail "exposure $exposure is not below 2.0"
say "ok"
