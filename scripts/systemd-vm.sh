#!/usr/bin/env bash
# Proves on a real systemd that the README's "Install on Debian" works on a fresh Debian 12:
# boots a bookworm VM with qemu and, inside it, installs the package as a new user would
# (apt install ./natpmpd_*.deb, edit /etc/natpmpd/natpmpd.toml, systemctl enable --now natpmpd),
# then checks the unit (Type=notify and STATUS=, the dynamic user and its two capabilities, a
# NAT-PMP mapping from a LAN namespace and traffic through it, reload, a watchdog restart of a
# stopped process with the mapping kept, a clean stop, systemd-analyze security, apt purge).
#
#   ./scripts/systemd-vm.sh              # build the .deb, boot the VM, exit 0 only if all PASS
#   ./scripts/systemd-vm.sh --no-build   # package the binaries already built (build-deb.sh --no-build)
#   ./scripts/systemd-vm.sh --rebuild    # build the VM image again even if one is cached
#
# As root (it installs packages with apt-get: qemu-system-x86, mmdebstrap, e2fsprogs, and the
# README's dpkg-dev and binutils). It changes nothing on the host's network: the VM has no
# network device, and its lab (a LAN namespace 192.168.88.10, the gateway's ether2
# 192.168.88.1 and ether1 203.0.113.1, an internet namespace 203.0.113.2) lives inside it.
#
# The image: mmdebstrap builds a minbase bookworm with systemd, the kernel, nftables,
# iproute2, natpmpc, socat and the package's dependencies into a scratch directory, and
# `mkfs.ext4 -d` turns it into a raw image (no loop mounts). It is cached in
# $NATPMPD_VM_CACHE (default /var/tmp/natpmpd-systemd-vm) under a hash of its recipe, and
# booted with snapshot=on so it is never changed. The .deb and scripts/systemd-vm-guest.sh
# go in on a second, small disk made the same way; a unit in the image runs the guest script
# from it, its output on the VM's second serial port, and powers off.
#
# Output: the guest's log as it runs, then its PASS:/FAIL: lines again. console.log (the VM's
# serial console) and results.log (the guest's output) of the last run stay in
# $NATPMPD_VM_CACHE/logs. The VM gets $NATPMPD_VM_TIMEOUT seconds (default 600).
#
# NATPMPD_VM_KERNEL=backports (default) boots the bookworm-backports kernel, as the README's
# "Install on Debian" says to on Debian 12; NATPMPD_VM_KERNEL=stock bookworm's own 6.1, which
# refuses natpmpd's table (it needs Linux 6.5, crates/natpmp-pcp-nft/src/kernel_support.rs):
# there the run fails, with natpmpd's message naming the kernel and the fix in the journal. Each recipe has its own cached
# image; `rm -rf $NATPMPD_VM_CACHE` drops them all. NATPMPD_VM_ACCEL=auto (default) uses KVM
# when /dev/kvm opens and the kernel's banner shows on the console within 30 s, TCG (slower,
# ~4 minutes for the guest here) otherwise; kvm or tcg force one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

build_args=()
rebuild=0
for arg in "$@"; do
    case "$arg" in
        --no-build) build_args=(--no-build) ;;
        --rebuild) rebuild=1 ;;
        *) echo "usage: $0 [--no-build] [--rebuild]" >&2; exit 2 ;;
    esac
done

cache="${NATPMPD_VM_CACHE:-/var/tmp/natpmpd-systemd-vm}"
vm_timeout="${NATPMPD_VM_TIMEOUT:-600}"
suite=bookworm
mirror="${NATPMPD_VM_MIRROR:-http://deb.debian.org/debian}"
# What the guest needs beyond minbase: systemd as init, a kernel and its initramfs, the
# package's dependency (nftables; libc6 and libgcc-s1 are in minbase) so that apt needs only
# the local .deb, what every installed Debian has beyond minbase and natpmpd's output relies
# on (netbase: /etc/protocols, so nft prints tcp, not 6; libnss-systemd: the dynamic user's
# name), and the lab's tools (ip and ss, natpmpc, socat, capsh).
packages=systemd,systemd-sysv,udev,dbus,netbase,libnss-systemd,nftables,iproute2,natpmpc,socat,libcap2-bin,procps
mirrors=("$mirror")
# The guest's kernel: bookworm's own (6.1, what a fresh Debian 12 runs) or bookworm-backports'.
case "${NATPMPD_VM_KERNEL:=backports}" in
    stock) packages+=,linux-image-amd64 ;;
    backports)
        packages+=,linux-image-amd64/$suite-backports
        mirrors+=("deb $mirror $suite-backports main")
        ;;
    *) echo "NATPMPD_VM_KERNEL must be stock or backports (got $NATPMPD_VM_KERNEL)" >&2; exit 2 ;;
esac

began="$(date +%s)"
say() { echo "systemd-vm.sh: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
elapsed() { echo "$(($(date +%s) - began)) s"; }

if [ "$(id -u)" -ne 0 ]; then
    die "run as root (it installs packages, builds a chroot with mmdebstrap and runs qemu)"
fi

work=""
qemu_pid=""
tail_pid=""
mmdebstrap_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; fi
    if [ -n "$mmdebstrap_pid" ] && kill -0 "$mmdebstrap_pid" 2>/dev/null; then
        # timeout passes the signal on; mmdebstrap then unmounts what it mounted.
        say "stopping mmdebstrap (pid $mmdebstrap_pid)"
        kill "$mmdebstrap_pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$mmdebstrap_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$mmdebstrap_pid" 2>/dev/null || true
        wait "$mmdebstrap_pid" 2>/dev/null || true
    fi
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        say "stopping qemu (pid $qemu_pid)"
        kill "$qemu_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$work" ] && [ -d "$work" ]; then
        # mmdebstrap mounts /proc, /sys and /dev in its chroot: never delete through a mount
        # it may have left behind when it was interrupted.
        findmnt -rn -o TARGET | grep -F "$work/" | sort -r | xargs -r umount -l 2>/dev/null || true
        rm -rf --one-file-system "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$cache"
work="$(mktemp -d "$cache/run.XXXXXX")"

# 1. What the host needs: qemu, mmdebstrap, mkfs.ext4, and the README's build tools.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need qemu-system-x86_64 qemu-system-x86
need mmdebstrap mmdebstrap
need mkfs.ext4 e2fsprogs
need dpkg-shlibdeps dpkg-dev
need strip binutils
need flock util-linux
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The package, with the README's own command (cargo runs under the project's build lock).
say "./scripts/build-deb.sh ${build_args[*]}"
deb="$(flock /tmp/natpmpd-cargo.lock ./scripts/build-deb.sh "${build_args[@]}" | tail -1)"
[ -f "$deb" ] || die "build-deb.sh printed no package path (got: $deb)"
say "package: $deb ($(elapsed))"

# 3. The VM image: built once per recipe, then reused.
# customize_rootfs ROOT: what scripts/systemd-vm.sh adds to the bootstrapped bookworm.
customize_rootfs() {
    local root="$1"
    echo natpmpd-vm >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tnatpmpd-vm\n' >"$root/etc/hosts"
    mkdir -p "$root/mnt/payload"
    cat >"$root/usr/local/sbin/natpmpd-vm-runner" <<'RUNNER'
#!/bin/sh
# Runs the host's test from the payload disk (label natpmpd-vm), its output on the second
# serial port (the host reads it), then powers the VM off.
out=/dev/ttyS1
stty -F "$out" raw -echo 2>/dev/null
if mount -o ro LABEL=natpmpd-vm /mnt/payload; then
    timeout 900 /mnt/payload/systemd-vm-guest.sh /mnt/payload >"$out" 2>&1
    echo "systemd-vm: guest script exited with $?" >"$out"
else
    echo "systemd-vm: no payload disk (LABEL=natpmpd-vm)" >"$out"
fi
systemctl --no-block poweroff
RUNNER
    chmod 755 "$root/usr/local/sbin/natpmpd-vm-runner"
    cat >"$root/etc/systemd/system/natpmpd-vm-test.service" <<'UNIT'
[Unit]
Description=natpmpd systemd-vm test (from scripts/systemd-vm.sh)

[Service]
Type=exec
ExecStart=/usr/local/sbin/natpmpd-vm-runner

[Install]
WantedBy=multi-user.target
UNIT
    ln -sf /etc/systemd/system/natpmpd-vm-test.service \
        "$root/etc/systemd/system/multi-user.target.wants/natpmpd-vm-test.service"
}
recipe="$(printf '%s\n' "$suite" "${mirrors[@]}" "$packages"; declare -f customize_rootfs)"
image="$cache/image-$(sha256sum <<<"$recipe" | cut -c1-16)"
if [ "$rebuild" -eq 1 ] || [ ! -f "$image/complete" ]; then
    rm -rf "$image"
    say "mmdebstrap $suite into a scratch directory (a few minutes)"
    root="$work/root"
    # In the background, so that a signal reaches cleanup at once (which stops it).
    timeout 900 mmdebstrap --variant=minbase --include="$packages" \
        "$suite" "$root" "${mirrors[@]}" >"$work/mmdebstrap.log" 2>&1 &
    mmdebstrap_pid=$!
    mmdebstrap_rc=0
    wait "$mmdebstrap_pid" || mmdebstrap_rc=$?
    mmdebstrap_pid=""
    if [ "$mmdebstrap_rc" -ne 0 ]; then
        cat "$work/mmdebstrap.log" >&2
        die "mmdebstrap (exit $mmdebstrap_rc)"
    fi
    customize_rootfs "$root"
    mkdir -p "$work/image"
    kernels=("$root"/boot/vmlinuz-*)
    initrds=("$root"/boot/initrd.img-*)
    if [ "${#kernels[@]}" -ne 1 ] || [ ! -f "${kernels[0]}" ] || [ ! -f "${initrds[0]}" ]; then
        die "no single kernel and initrd in the rootfs's /boot"
    fi
    cp "${kernels[0]}" "$work/image/vmlinuz"
    cp "${initrds[0]}" "$work/image/initrd.img"
    say "mkfs.ext4 -d rootfs ($(du -sh "$root" | cut -f1))"
    mkfs.ext4 -q -L natpmpd-root -d "$root" "$work/image/rootfs.img" 2G >/dev/null
    rm -rf --one-file-system "$root"
    printf '%s\n' "$recipe" >"$work/image/recipe"
    touch "$work/image/complete"
    mv "$work/image" "$image"
    say "image: $image ($(elapsed))"
else
    say "image: $image (cached)"
fi

# 4. The payload disk: the package and the guest script.
mkdir -p "$work/payload"
cp "$deb" scripts/systemd-vm-guest.sh "$work/payload/"
mkfs.ext4 -q -L natpmpd-vm -d "$work/payload" "$work/payload.img" 64M >/dev/null

# 5. Boot it and follow the guest's output.
console="$work/console.log"
results="$work/results.log"
# boot ACCEL...: start qemu in the background with these accelerator options.
boot() {
    : >"$console"
    : >"$results"
    qemu-system-x86_64 "$@" -machine q35 -m 1024 -smp 2 \
        -nodefaults -no-user-config -display none -no-reboot -nic none \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=false" \
        -drive "file=$image/rootfs.img,format=raw,if=virtio,snapshot=on" \
        -drive "file=$work/payload.img,format=raw,if=virtio,readonly=on" \
        -chardev "file,id=console,path=$console" -serial chardev:console \
        -chardev "file,id=results,path=$results" -serial chardev:results \
        </dev/null >"$work/qemu.log" 2>&1 &
    qemu_pid=$!
}
stop_qemu() {
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
}
accel="${NATPMPD_VM_ACCEL:-auto}"
if [ "$accel" = auto ]; then
    if { : <>/dev/kvm; } 2>/dev/null; then accel=kvm; else accel=tcg; fi
    # A /dev/kvm that opens is not always one that runs a stock kernel (a nested or
    # paravirtual KVM may stall it, or qemu may refuse the host CPU): the Debian kernel
    # prints its banner within a second under a working KVM; without it in 30 s, use TCG.
    if [ "$accel" = kvm ]; then
        say "booting the VM with KVM (at most $vm_timeout s)"
        boot -enable-kvm -cpu host
        for _ in $(seq 30); do
            grep -q 'Linux version' "$console" && break
            kill -0 "$qemu_pid" 2>/dev/null || break
            sleep 1
        done
        if ! grep -q 'Linux version' "$console"; then
            if kill -0 "$qemu_pid" 2>/dev/null; then
                why="no kernel banner on the console within 30 s"
            else
                why="qemu exited: $(tail -1 "$work/qemu.log")"
            fi
            stop_qemu
            say "KVM did not start the kernel ($why): falling back to TCG"
            accel=tcg
        fi
    fi
fi
case "$accel" in
    kvm) [ -n "$qemu_pid" ] || { say "booting the VM with KVM (at most $vm_timeout s)"; boot -enable-kvm -cpu host; } ;;
    tcg) say "booting the VM with TCG emulation (at most $vm_timeout s)"; boot -accel tcg,thread=multi -cpu max ;;
    *) die "NATPMPD_VM_ACCEL must be auto, kvm or tcg (got $accel)" ;;
esac
tail -n +1 -f "$results" &
tail_pid=$!
deadline=$(($(date +%s) + vm_timeout))
timed_out=0
while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        timed_out=1
        break
    fi
    sleep 1
done
if [ "$timed_out" -eq 0 ]; then
    qemu_rc=0
    wait "$qemu_pid" || qemu_rc=$?
    qemu_pid=""
fi
sleep 1
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=""

mkdir -p "$cache/logs"
tr -d '\r' <"$console" >"$cache/logs/console.log"
tr -d '\r' <"$results" >"$cache/logs/results.log"

# 6. The verdict.
echo
echo "=== systemd-vm.sh: results"
grep -E '^(PASS|FAIL): ' "$cache/logs/results.log" || true
summary="$(grep -E '^systemd-vm: [0-9]+ passed, [0-9]+ failed$' "$cache/logs/results.log" || true)"
echo "${summary:-systemd-vm: no summary line from the guest}"
say "logs: $cache/logs/console.log, $cache/logs/results.log"
say "wall time $(elapsed) (accelerator: $accel)"
if [ "$timed_out" -eq 1 ]; then
    tail -30 "$cache/logs/console.log" >&2
    die "the VM did not finish within $vm_timeout s"
fi
if [ "${qemu_rc:-0}" -ne 0 ]; then
    cat "$work/qemu.log" >&2
    die "qemu exited with $qemu_rc"
fi
if [ -z "$summary" ]; then
    tail -30 "$cache/logs/console.log" >&2
    die "the guest did not finish its checks"
fi
if grep -q '^FAIL: ' "$cache/logs/results.log" || ! grep -q ' 0 failed$' <<<"$summary"; then
    die "some checks failed"
fi
say "ok"
