#!/usr/bin/env bash
# Runs the real gateway in a throwaway network-namespace lab and shows a mapping at work:
#
#   lan  192.168.88.10 ── ether2 [gw: natpmpd] ether1 ── inet 203.0.113.2
#                         192.168.88.1        203.0.113.1
#
#   sudo ./scripts/lab.sh          # build, map a port with natpmpc, send TCP through it, tear down
#   sudo ./scripts/lab.sh --keep   # the same, then keep the lab running until Ctrl-C
#
# Everything happens inside namespaces named npdlab-<pid>-*; the host's interfaces, routes and
# firewall are never touched, and everything is removed on exit (also on Ctrl-C or errors).
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
case "${1:-}" in
    --keep) KEEP=1 ;;
    "") ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    echo "lab.sh: needs root (network namespaces, nftables): sudo $0 $*" >&2
    exit 1
fi
./scripts/deps.sh
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [ -n "${SUDO_USER:-}" ]; then
    user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
    export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    export PATH="$CARGO_HOME/bin:$PATH"
fi

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building natpmpd (release)"
cargo build --release --locked -p natpmpd
BIN="$(pwd)/target/release"

# Remove labs left by earlier runs that were killed hard (their pid is gone).
for ns in $(ip netns list | awk '{print $1}' | grep '^npdlab-' || true); do
    pid="${ns#npdlab-}"; pid="${pid%%-*}"
    if [ ! -d "/proc/$pid" ]; then ip netns del "$ns" 2>/dev/null || true; fi
done

ID="npdlab-$$"
GW="$ID-gw"; LAN="$ID-lan"; INET="$ID-inet"
WORK="$(mktemp -d "/tmp/$ID.XXXXXX")"
DAEMON_PID=""
LISTENER_PID=""

cleanup() {
    set +e
    [ -n "$LISTENER_PID" ] && kill "$LISTENER_PID" 2>/dev/null
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 30); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
    fi
    for ns in "$GW" "$LAN" "$INET"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
    echo "lab.sh: lab removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "creating namespaces $GW, $LAN, $INET"
for ns in "$GW" "$LAN" "$INET"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip -n "$GW" link add ether1 type veth peer name eth0 netns "$INET"
ip -n "$GW" link add ether2 type veth peer name eth0 netns "$LAN"
ip -n "$GW" addr add 203.0.113.1/24 dev ether1
ip -n "$GW" addr add 192.168.88.1/24 dev ether2
ip -n "$INET" addr add 203.0.113.2/24 dev eth0
ip -n "$LAN" addr add 192.168.88.10/24 dev eth0
for l in "$GW ether1" "$GW ether2" "$INET eth0" "$LAN eth0"; do
    set -- $l; ip -n "$1" link set "$2" up
done
ip -n "$LAN" route add default via 192.168.88.1
# IPv6 too (no NAT: the internet host routes the LAN prefix to the gateway).
ip -n "$GW" -6 addr add 2001:db8:ff::1/64 dev ether1 nodad
ip -n "$GW" -6 addr add 2001:db8:1::1/64 dev ether2 nodad
ip -n "$INET" -6 addr add 2001:db8:ff::2/64 dev eth0 nodad
ip -n "$LAN" -6 addr add 2001:db8:1::10/64 dev eth0 nodad
ip -n "$LAN" -6 route add default via 2001:db8:1::1
ip -n "$INET" -6 route add 2001:db8:1::/64 via 2001:db8:ff::1
# The operator's part: forwarding, their own masquerade, and a forward chain that drops by
# default and lets natpmpd's connections in by their mark (the README's firewall contract).
ip netns exec "$GW" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding'
ip netns exec "$GW" nft -f - <<'NFT'
table inet lab {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    meta nfproto ipv4 oifname "ether1" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct mark & 0x00100000 == 0x00100000 accept
    iifname "ether2" oifname "ether1" accept
  }
}
NFT

step "starting natpmpd in $GW"
cat > "$WORK/natpmpd.toml" <<CFG
enabled = true
lease-file = "$WORK/leases.json"
control-socket = "$WORK/natpmpd.sock"
backend = "nftables"
port-range = "1024-65535"
max-lifetime = 86400
max-mappings-per-client = 256

[[interfaces]]
interface = "ether1"
type = "external"

[[interfaces]]
interface = "ether2"
type = "internal"
CFG
cat "$WORK/natpmpd.toml"
RUST_LOG="${RUST_LOG:-info}" ip netns exec "$GW" "$BIN/natpmpd" --config "$WORK/natpmpd.toml" \
    2> "$WORK/natpmpd.log" &
DAEMON_PID=$!

ready=0
for _ in $(seq 20); do
    if ip netns exec "$LAN" timeout 2 natpmpc -g 192.168.88.1 >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "lab.sh: natpmpd exited:" >&2; cat "$WORK/natpmpd.log" >&2; exit 1; }
    sleep 0.5
done
[ "$ready" = 1 ] || { echo "lab.sh: natpmpd does not answer:" >&2; cat "$WORK/natpmpd.log" >&2; exit 1; }

step "natpmpc (from the LAN host): map TCP 8080"
out="$(ip netns exec "$LAN" timeout 10 natpmpc -g 192.168.88.1 -a 8080 8080 tcp 3600)"
echo "$out"
PORT="$(echo "$out" | awk '/^Mapped public port/ {print $4}')"
[ -n "$PORT" ] || { echo "lab.sh: natpmpc reported no mapping" >&2; exit 1; }

step "natpmpctl print"
ip netns exec "$GW" "$BIN/natpmpctl" --socket "$WORK/natpmpd.sock" print \
    || ip netns exec "$GW" "$BIN/natpmpctl" --socket "$WORK/natpmpd.sock" print --json

step "nft list table inet natpmpd"
ip netns exec "$GW" nft list table inet natpmpd

step "TCP from the internet host to 203.0.113.1:$PORT"
ip netns exec "$LAN" socat -u TCP-LISTEN:8080,bind=192.168.88.10,reuseaddr OPEN:"$WORK/received",creat,trunc &
LISTENER_PID=$!
sleep 0.3
MSG="hello from 203.0.113.2 through natpmpd at $(date +%T)"
echo "$MSG" | ip netns exec "$INET" socat -u - TCP:203.0.113.1:"$PORT",connect-timeout=3
for _ in $(seq 30); do kill -0 "$LISTENER_PID" 2>/dev/null || break; sleep 0.1; done
LISTENER_PID=""
if [ "$(cat "$WORK/received" 2>/dev/null)" = "$MSG" ]; then
    echo "arrived at the LAN host 192.168.88.10:8080: $(cat "$WORK/received")"
else
    echo "lab.sh: the data did not arrive at the LAN host" >&2
    exit 1
fi

step "natpmpd's log so far"
sed 's/^/  /' "$WORK/natpmpd.log"

if [ "$KEEP" = 1 ]; then
    step "lab kept running; Ctrl-C removes it"
    cat <<EOT
  daemon log:     tail -f $WORK/natpmpd.log
  LAN host:       ip netns exec $LAN bash        (natpmpc -g 192.168.88.1 -a 0 9000 udp 600;
                  PCP over IPv6 from 2001:db8:1::10 to 2001:db8:1::1 port 5351)
  internet host:  ip netns exec $INET bash
  gateway:        ip netns exec $GW nft list ruleset
  mappings:       $BIN/natpmpctl --socket $WORK/natpmpd.sock print
EOT
    wait "$DAEMON_PID" || true
else
    step "done; tearing down"
fi
