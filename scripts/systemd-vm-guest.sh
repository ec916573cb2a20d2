#!/usr/bin/env bash
# The guest half of scripts/systemd-vm.sh: runs as root inside the Debian VM that script boots,
# started by natpmpd-vm-test.service once the VM is up, with the package beside it in $1 (the
# payload disk). It follows the README's "Install on Debian" as a new user would (apt install
# the .deb, edit /etc/natpmpd/natpmpd.toml, systemctl enable --now natpmpd) on a small lab of
# its own inside the VM, and prints one PASS: or FAIL: line per check, then
# "systemd-vm: N passed, N failed". Its output goes to the VM's second serial port, which the
# host reads. Not meant to be run anywhere else: it changes interfaces and installs packages.
#
# The lab (all inside the VM):
#   ether1  203.0.113.1/24  the gateway's external interface, a veth to netns "inet"
#           (203.0.113.2/24, an internet host)
#   ether2  192.168.88.1/24 the gateway's internal interface, a veth to netns "lan"
#           (192.168.88.10/24, default route via 192.168.88.1)
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER='' SYSTEMD_COLORS=0 LC_ALL=C.UTF-8
payload="${1:?usage: $0 PAYLOAD_DIR}"
conf=/etc/natpmpd/natpmpd.toml

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check NAME COMMAND...: PASS or FAIL by the command's exit status.
check() {
    local name="$1"
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
step() { printf "\n=== %s (at %s s)\n" "$*" "$(cut -d. -f1 /proc/uptime)"; }
# run COMMAND...: echo it, run it with a time limit, and keep its exit status.
run() {
    echo "+ $*"
    timeout 90 "$@"
}
service_prop() { systemctl show -P "$1" natpmpd; }
prop_is() { [ "$(service_prop "$1")" = "$2" ]; }
is_active() { [ "$(systemctl is-active natpmpd)" = "$1" ]; }
# journal_has SINCE TEXT: natpmpd's journal since SINCE has a line with TEXT.
journal_has() { journalctl -u natpmpd --no-pager --since "$1" | grep -qF -- "$2"; }
# lacks TEXT STRING: STRING has no line with TEXT.
lacks() { ! grep -qF -- "$1" <<<"$2"; }
wait_for() { # wait_for SECONDS COMMAND...: until the command succeeds, once a second
    local limit="$1" i
    shift
    for ((i = 0; i < limit; i++)); do
        "$@" && return 0
        sleep 1
    done
    return 1
}
mapping_listed() { natpmpctl print 2>/dev/null | grep -q 'to-addresses=192.168.88.10 to-ports=8080 protocol=tcp'; }
# The inbound element: "tcp . 8080 timeout 1h2s expires ... : 192.168.88.10 . 8080".
mapping_in_kernel() {
    nft list table inet natpmpd 2>/dev/null | grep -Eq '(tcp|6) \. 8080 [^,}]*: 192\.168\.88\.10 \. 8080'
}
lan_listening() { ip netns exec lan ss -Htln 'sport = :8080' | grep -q .; }
# A TCP message from the internet host to 203.0.113.1:8080 arrives at the LAN host's 8080.
traffic_passes() {
    local msg="through natpmpd $RANDOM" got=/tmp/received
    rm -f "$got"
    ip netns exec lan timeout 15 socat -u TCP-LISTEN:8080,reuseaddr OPEN:"$got",creat &
    local listener=$!
    wait_for 5 lan_listening
    echo "$msg" | ip netns exec inet timeout 10 socat -u STDIN TCP:203.0.113.1:8080,connect-timeout=5
    wait "$listener"
    [ "$(cat "$got" 2>/dev/null)" = "$msg" ]
}

# Everything that needs natpmpd running: skipped (one FAIL) when the start failed.
running_checks() {
    step "the process: a dynamic user with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only"
    pid="$(service_prop MainPID)"
    echo "MainPID=$pid"
    grep -E '^(Name|Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs|Seccomp):' "/proc/$pid/status"
    uids="$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")"
    user="$(getent passwd "${uids%% *}" | cut -d: -f1)"
    echo "user: $user (uids $uids)"
    # 0x1400 = bit 10 (CAP_NET_BIND_SERVICE) | bit 12 (CAP_NET_ADMIN)
    for set in CapPrm CapEff CapBnd CapAmb; do
        mask="$(awk -v s="$set:" '$1 == s { print $2 }' "/proc/$pid/status")"
        echo "$set $mask = $(capsh --decode="$mask" | cut -d= -f2)"
    done
    dynamic_user() { # systemd's DynamicUser= range is 61184-65519
        local u
        for u in $uids; do [ "$u" -ge 61184 ] && [ "$u" -le 65519 ] || return 1; done
        [ "$user" = natpmpd ]
    }
    check "runs as a non-root dynamic user ($user, uid ${uids%% *})" dynamic_user
    two_caps() {
        local set
        for set in CapPrm CapEff CapBnd CapAmb; do
            grep -qx "$set:[[:space:]]*0000000000001400" "/proc/$pid/status" || return 1
        done
    }
    check "capabilities: only cap_net_admin,cap_net_bind_service (permitted, effective, bounding, ambient)" two_caps
    confined() { grep -qx 'NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" && grep -qx 'Seccomp:[[:space:]]*2' "/proc/$pid/status"; }
    check "no new privileges, seccomp filter on" confined

    step "a NAT-PMP mapping from the lan namespace"
    run ip netns exec lan natpmpc -g 192.168.88.1
    out="$(run ip netns exec lan natpmpc -g 192.168.88.1 -a 8080 8080 tcp 3600 2>&1)"
    echo "$out"
    check "natpmpc: mapped public port 8080" grep -q 'Mapped public port 8080 protocol TCP to local port 8080' <<<"$out"
    check "natpmpc: public address 203.0.113.1" grep -q 'Public IP address : 203.0.113.1' <<<"$out"
    run natpmpctl status
    run natpmpctl print
    run nft list table inet natpmpd
    status_counts() { natpmpctl status | grep -q '203\.0\.113\.1' && natpmpctl status | grep -qx 'mappings: 1'; }
    check "natpmpctl status: 203.0.113.1, 1 mapping" status_counts
    check "natpmpctl print lists the mapping" mapping_listed
    check "nft list table inet natpmpd holds the forward" mapping_in_kernel
    check "STATUS counts it (\"$(service_prop StatusText)\")" \
        grep -q 'external address 203\.0\.113\.1 on ether1; 1 mapping$' <<<"$(service_prop StatusText)"
    check "TCP from the internet host through the mapping reaches the LAN host" traffic_passes

    step "README: systemctl reload natpmpd"
    since="$(date '+%Y-%m-%d %H:%M:%S')"
    sleep 1
    check "systemctl reload natpmpd" run systemctl reload natpmpd
    check "same MainPID after reload" prop_is MainPID "$pid"
    journalctl -u natpmpd --no-pager --since "$since" -o cat
    check "the journal says the configuration was reloaded" \
        journal_has "$since" "configuration reloaded"
    check "the mapping survives the reload" mapping_listed
    # "a refused file fails the reload and names the line"
    cp "$conf" /root/natpmpd.toml.good
    sed -i 's/^enabled = true$/enabled = maybe/' "$conf"
    out="$(run systemctl reload natpmpd 2>&1)"
    rc=$?
    echo "$out (exit $rc)"
    journalctl -u natpmpd --no-pager --since "$since" -o cat | tail -3
    check "a broken file fails systemctl reload" [ "$rc" -ne 0 ]
    check "the refusal names the file and line" \
        journal_has "$since" "natpmpd.toml:1:"
    still_running() { is_active active && prop_is MainPID "$pid"; }
    check "still active with the same MainPID after the refused reload" still_running
    cp /root/natpmpd.toml.good "$conf"
    check "reload with the file put back" run systemctl reload natpmpd

    step "watchdog: kill -STOP the main process and wait past WatchdogSec"
    wd="$(service_prop WatchdogUSec)"
    restarts="$(service_prop NRestarts)"
    echo "WatchdogUSec=$wd NRestarts=$restarts MainPID=$pid"
    check "WatchdogSec=30s" [ "$wd" = 30s ]
    check "lease file under /var/lib/natpmpd" wait_for 5 test -s /var/lib/natpmpd/leases.json
    ls -la /var/lib/natpmpd/ /var/lib/private/
    since="$(date '+%Y-%m-%d %H:%M:%S')"
    started="$(date +%s)"
    kill -STOP "$pid"
    echo "kill -STOP $pid at $(date +%T)"
    restarted() {
        local now
        now="$(service_prop MainPID)"
        [ "$now" != 0 ] && [ "$now" != "$pid" ] && [ "$(systemctl is-active natpmpd)" = active ]
    }
    if wait_for 90 restarted; then
        newpid="$(service_prop MainPID)"
        pass "restarted by systemd after $(($(date +%s) - started)) s: MainPID $pid -> $newpid, NRestarts $(service_prop NRestarts)"
    else
        fail "not restarted within 90 s of kill -STOP (MainPID $(service_prop MainPID), $(systemctl is-active natpmpd))"
        kill -CONT "$pid" 2>/dev/null
        newpid="$(service_prop MainPID)"
    fi
    journalctl -u natpmpd --no-pager --since "$since"
    check "the journal shows the watchdog timeout" \
        journal_has "$since" "Watchdog timeout"
    check "the journal says it failed with result 'watchdog'" \
        journal_has "$since" "Failed with result 'watchdog'"
    check "NRestarts went up" [ "$(service_prop NRestarts)" -gt "$restarts" ]
    run natpmpctl print
    run nft list table inet natpmpd
    check "the mapping is back after the restart (natpmpctl print)" wait_for 10 mapping_listed
    check "and in the kernel (nft list table inet natpmpd)" wait_for 10 mapping_in_kernel
    check "and traffic passes through it again" traffic_passes
    check "STATUS after the restart: \"$(service_prop StatusText)\"" \
        grep -q 'external address 203\.0\.113\.1 on ether1; 1 mapping$' <<<"$(service_prop StatusText)"

    step "systemctl stop natpmpd"
    since="$(date '+%Y-%m-%d %H:%M:%S')"
    started="$(date +%s)"
    check "systemctl stop natpmpd" run systemctl stop natpmpd
    echo "stopped in $(($(date +%s) - started)) s"
    journalctl -u natpmpd --no-pager --since "$since"
    stopped_cleanly() { is_active inactive && prop_is Result success; }
    check "inactive (not failed) after stop, Result=success" stopped_cleanly
    check "the journal says it stopped cleanly" \
        journal_has "$since" "Deactivated successfully"
    no_table() { ! nft list table inet natpmpd >/dev/null 2>&1; }
    check "its table is gone from the kernel (keep-forwards-on-exit = false)" no_table
    check "the lease file keeps the mapping for the next start" grep -q 8080 /var/lib/natpmpd/leases.json

}

echo "systemd-vm guest: $(uname -srm); $(systemctl --version | head -1)"
step "boot"
state="$(timeout 120 systemctl is-system-running --wait)"
echo "system state: $state"
systemctl --failed --no-legend --plain

step "lab: ether1 (203.0.113.1/24, to netns inet) and ether2 (192.168.88.1/24, to netns lan)"
(
    set -e
    ip netns add lan
    ip netns add inet
    ip link add ether1 type veth peer name eth0 netns inet
    ip link add ether2 type veth peer name eth0 netns lan
    ip addr add 203.0.113.1/24 dev ether1
    ip addr add 192.168.88.1/24 dev ether2
    ip link set ether1 up
    ip link set ether2 up
    ip -n inet addr add 203.0.113.2/24 dev eth0
    ip -n inet link set eth0 up
    ip -n inet link set lo up
    ip -n lan addr add 192.168.88.10/24 dev eth0
    ip -n lan link set eth0 up
    ip -n lan link set lo up
    ip -n lan route add default via 192.168.88.1
    # The README's firewall section: forwarding is the router's to turn on.
    sysctl -qw net.ipv4.ip_forward=1
)
check "lab interfaces up" ip -br addr show ether1
ip -br addr show
# natpmpd's table looks maps up as sets (`meta l4proto . th dport @inbound`), which Linux
# accepts only since 6.5 ("netfilter: nf_tables: relax set/map validation checks").
probe="$(nft -f - 2>&1 <<'NFT'
table inet natpmpd_vm_probe {
	map m { type inet_proto . inet_service : ipv4_addr . inet_service; }
	chain c { meta l4proto . th dport @m accept; }
}
NFT
)" && probe=yes || probe="no: ${probe%%$'\n'*}"
nft delete table inet natpmpd_vm_probe 2>/dev/null
echo "this kernel ($(uname -r)) accepts a lookup of a map as a set: $probe"

step "README: apt install ./natpmpd_<version>_amd64.deb"
cp "$payload"/natpmpd_*.deb /root/
cd /root || exit 1
deb="$(ls natpmpd_*.deb)"
check "apt install ./$deb" run apt -q install -y "./$deb"
installed="$(dpkg-query -W -f='${Status} ${Version}' natpmpd)"
check "package installed ($installed)" [ "${installed% *}" = "install ok installed" ]
left_alone() { [ "$(systemctl is-enabled natpmpd)" = disabled ] && is_active inactive; }
check "not enabled or started by the install" left_alone
echo "is-enabled: $(systemctl is-enabled natpmpd); is-active: $(systemctl is-active natpmpd)"

step "README: edit $conf (enabled = true, and the [[interfaces]])"
# What a user does in sudoedit: flip the first line and uncomment the shipped example
# interfaces, naming ours (forced-ip and disabled stay commented).
cp "$conf" /root/natpmpd.toml.shipped
sed -i -e 's/^enabled = false$/enabled = true/' \
    -e 's/^# \[\[interfaces\]\]$/[[interfaces]]/' \
    -e 's/^# interface = "eth0".*/interface = "ether1"      # faces the internet/' \
    -e 's/^# interface = "eth1".*/interface = "ether2"      # the LAN/' \
    -e 's/^# type = "\(external\|internal\)"$/type = "\1"/' "$conf"
diff -u /root/natpmpd.toml.shipped "$conf"
check "natpmpd --check-config $conf" run natpmpd --check-config "$conf"

step "README: systemctl enable --now natpmpd"
check "systemctl enable --now natpmpd" run systemctl enable --now natpmpd
check "systemctl is-active natpmpd: active" is_active active
show="$(systemctl show -p Type,MainPID,StatusText,WatchdogUSec,NRestarts natpmpd)"
echo "$show"
status_text="$(service_prop StatusText)"
check "Type=notify" grep -qx 'Type=notify' <<<"$show"
check "STATUS names the external address (\"$status_text\")" \
    grep -q 'external address 203\.0\.113\.1 on ether1' <<<"$status_text"
systemctl status --no-pager --lines=20 natpmpd

if is_active active && [ "$(service_prop MainPID)" -gt 1 ]; then
    running_checks
else
    fail "natpmpd is not running after enable --now: the checks that need it are skipped"
fi

step "journalctl -u natpmpd (the whole boot)"
journalctl -u natpmpd --no-pager -b
echo "--- of which at priority warning or above (journalctl -p warning):"
warnings="$(journalctl -u natpmpd --no-pager -b -p warning -o cat)"
echo "$warnings"
# natpmpd prefixes each line with its syslog priority when stderr is the journal
# (crates/natpmpd/src/journal_log.rs): its warnings are filed as such, its info lines not.
check "journalctl -p warning has natpmpd's warning (the lab's TEST-NET external address)" \
    grep -qF "is private or reserved" <<<"$warnings"
check "journalctl -p warning has none of its info lines" lacks "listening on" "$warnings"

step "systemd-analyze security natpmpd"
security="$(timeout 60 systemd-analyze security --no-pager natpmpd 2>&1)"
echo "$security"
exposure="$(sed -n 's/.*Overall exposure level for natpmpd.service: \([0-9.]*\).*/\1/p' <<<"$security")"
check "systemd-analyze security: exposure ${exposure:-?} (below 2.0)" \
    awk -v e="${exposure:-99}" 'BEGIN { exit !(e < 2.0) }'

step "README: apt purge natpmpd"
check "apt purge natpmpd" run apt -q purge -y natpmpd
left=""
for f in /etc/natpmpd /lib/systemd/system/natpmpd.service /usr/sbin/natpmpd \
    /etc/systemd/system/multi-user.target.wants/natpmpd.service /var/lib/natpmpd \
    /var/lib/private/natpmpd; do
    if [ -e "$f" ] || [ -L "$f" ]; then left+="${left:+ }$f"; fi
done
echo "left after purge: ${left:-nothing}"
check "purge removes it all (left: ${left:-nothing})" [ -z "$left" ]

echo
echo "systemd-vm: $passed passed, $failed failed"
