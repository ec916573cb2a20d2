#!/usr/bin/env bash
# Builds the Debian package natpmpd_<version>_<arch>.deb in the repository root, with nothing
# beyond Debian packages (dpkg-dev for dpkg-shlibdeps, binutils for strip) and cargo:
#   ./scripts/build-deb.sh            # one `cargo build --release --locked`, then dpkg-deb
#   ./scripts/build-deb.sh --no-build # package the binaries already in target/release
# The binaries are taken from $CARGO_TARGET_DIR/release when CARGO_TARGET_DIR is set (as cargo
# puts them there), from target/release otherwise.
# Contents: /usr/sbin/natpmpd and natpmpctl, the systemd unit, /etc/natpmpd/natpmpd.toml
# (a conffile, `enabled = false`), man pages natpmpd(8), natpmpctl(8), natpmpd.toml(5),
# copyright and changelog, and maintainer scripts that stop it on removal, restart it on
# upgrade and disable it on purge. Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
case "${1:-}" in
    "") ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

say() { echo "build-deb.sh: $*" >&2; }
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "\`$tool\` is missing: apt-get install dpkg-dev binutils gzip" >&2
        exit 1
    fi
done

# The workspace version, and a Debian revision: the packaging's first.
upstream="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
if [ -z "$upstream" ]; then
    say "no version in Cargo.toml's [workspace.package]" >&2
    exit 1
fi
version="$upstream-1"
arch="$(dpkg --print-architecture)"
if ! head -1 packaging/debian/changelog | grep -qF "natpmpd ($version)"; then
    say "packaging/debian/changelog's first entry is not for $version: add one" >&2
    exit 1
fi

release="${CARGO_TARGET_DIR:-target}/release"
if [ "$build" -eq 1 ]; then
    say "cargo build --release --locked"
    cargo build --release --locked -p natpmpd --bins
fi
for bin in natpmpd natpmpctl; do
    if [ ! -x "$release/$bin" ]; then
        say "$release/$bin is missing (run without --no-build)" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
# Debian bookworm's systemd and lintian still expect units under /lib (not yet /usr/lib).
install -d -m 755 "$root/DEBIAN" "$root/usr/sbin" "$root/lib/systemd/system" \
    "$root/etc/natpmpd" "$root/usr/share/doc/natpmpd" \
    "$root/usr/share/man/man5" "$root/usr/share/man/man8"
for bin in natpmpd natpmpctl; do
    install -m 755 "$release/$bin" "$root/usr/sbin/$bin"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/sbin/$bin"
done
install -m 644 packaging/natpmpd.service "$root/lib/systemd/system/natpmpd.service"
install -m 644 packaging/natpmpd.toml "$root/etc/natpmpd/natpmpd.toml"
install -m 644 packaging/debian/copyright "$root/usr/share/doc/natpmpd/copyright"
gzip -9n <packaging/debian/changelog >"$root/usr/share/doc/natpmpd/changelog.Debian.gz"
for page in natpmpd.8 natpmpctl.8 natpmpd.toml.5; do
    gzip -9n <"packaging/man/$page" >"$root/usr/share/man/man${page##*.}/$page.gz"
done
find "$root" -path "$root/DEBIAN" -prune -o -type f -exec chmod go-w {} +
chmod 644 "$root"/usr/share/doc/natpmpd/* "$root"/usr/share/man/man*/*

# Shared-library dependencies, as dpkg-shlibdeps works them out (it wants a debian/control).
mkdir -p "$work/src/debian"
printf 'Source: natpmpd\n\nPackage: natpmpd\nArchitecture: any\n' >"$work/src/debian/control"
shlibs="$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/sbin/natpmpd" "$root/usr/sbin/natpmpctl" \
    | sed -n 's/^shlibs:Depends=//p')"
if [ -z "$shlibs" ]; then
    say "dpkg-shlibdeps found no shared-library dependencies" >&2
    exit 1
fi
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" \
    packaging/debian/control.in >"$root/DEBIAN/control"
echo /etc/natpmpd/natpmpd.toml >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 644 "$root/DEBIAN/"*
for script in postinst prerm postrm; do
    install -m 755 "packaging/debian/$script" "$root/DEBIAN/$script"
done

deb="natpmpd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
say "built $deb"
echo "$PWD/$deb"
