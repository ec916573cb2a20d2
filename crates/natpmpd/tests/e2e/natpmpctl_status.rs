//! End-to-end: `natpmpctl status` (text and --json) and `natpmpctl remove` (by number,
//! --client, --all) against the real daemon, with mappings made by real requests: a removed
//! mapping is gone from `print`, from the kernel's map, and its traffic stops; the daemon
//! logs who removed it. And the error messages when the socket is missing, stale (daemon not
//! running) or not ours to open (natpmpctl as nobody against the root-only socket).

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::lab::*;

#[test]
fn status_shows_address_epoch_mappings_and_the_table() {
    let s = setup();
    let lab = &s.lab;
    // Let a drift check run (every 2 s) so the table state is known.
    std::thread::sleep(Duration::from_millis(2500));
    let out = lab.natpmpctl(&["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"));
    assert_eq!(v["serving"], true, "{v}");
    assert_eq!(v["external_interface"], "ether1", "{v}");
    assert_eq!(
        v["external_addresses"],
        serde_json::json!(["203.0.113.1"]),
        "{v}"
    );
    assert_eq!(v["mappings_total"], 2, "{v}");
    assert_eq!(
        v["mappings"],
        serde_json::json!([
            {"protocol": "tcp", "family": "ipv4", "count": 1},
            {"protocol": "udp", "family": "ipv4", "count": 1},
        ]),
        "{v}"
    );
    assert_eq!(v["kernel_table"], "intact", "{v}");
    assert!(v["epoch"].as_u64().is_some_and(|e| e >= 2), "{v}");
    assert!(v["uptime"].as_u64().is_some_and(|u| u >= 2), "{v}");
    assert_eq!(v["last_drift_repair"], serde_json::Value::Null, "{v}");

    // Someone deletes our table: the status says it was repaired.
    nft_in(&lab.gw, &["delete", "table", "inet", "natpmpd"]).ok();
    std::thread::sleep(Duration::from_millis(2500));
    let text = lab.natpmpctl(&["status"]).ok().stdout;
    for line in [
        "serving: yes\n",
        "external-interface: ether1\n",
        "external-address: 203.0.113.1\n",
        "mappings: 2\n",
        "  ipv4 tcp: 1\n",
        "  ipv4 udp: 1\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(text.contains("kernel-table: "), "{text}");
    assert!(
        text.contains("last-drift-repair: ") && !text.contains("last-drift-repair: never"),
        "{text}"
    );
}

/// The number `print` shows for the mapping of `protocol` and internal port `port`.
fn number_of(lab: &Lab, protocol: &str, port: u64) -> String {
    lab.mappings()
        .iter()
        .find(|m| m["protocol"] == protocol && m["to-ports"] == port)
        .unwrap_or_else(|| panic!("no {protocol} mapping to port {port}: {:?}", lab.mappings()))
        ["number"]
        .to_string()
}

#[test]
fn remove_by_number_takes_the_mapping_out_of_print_the_kernel_and_the_traffic() {
    let s = setup();
    let lab = &s.lab;
    let tcp_ext = SocketAddrV4::new(GW_EXT, s.tcp);
    // A connection through the mapping now: its conntrack entry is cleared too.
    assert!(tcp_probe(
        &lab.inet,
        tcp_ext,
        "lan-tcp",
        Duration::from_secs(2)
    ));
    let number = number_of(lab, "tcp", 8080);
    let out = lab.natpmpctl(&["remove", &number]).ok();
    assert!(
        out.stdout.starts_with(&format!(
            "removed tcp 203.0.113.1:{} -> 192.168.88.10:8080",
            s.tcp
        )),
        "{out}"
    );
    let left = lab.mappings();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["protocol"], "udp");
    let map = lab.inbound_map();
    assert!(
        !inbound_map_has(&map, "tcp", s.tcp, "192.168.88.10 . 8080"),
        "still in the kernel:\n{map}"
    );
    assert!(
        !tcp_probe(&lab.inet, tcp_ext, "lan-tcp", Duration::from_millis(700)),
        "TCP still passes through the removed mapping"
    );
    // The UDP mapping is untouched.
    let udp = udp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, s.udp), "still");
    assert!(
        matches!(&udp, Some((m, _)) if m == "lan-udp:still"),
        "{udp:?}"
    );
    // Logged with who did it.
    assert!(
        lab.wait_log_count("natpmpctl remove by uid 0 pid ", 1, Duration::from_secs(2)),
        "{}",
        lab.daemon_log()
    );
    // The same number again now names nothing (or the UDP one, which stays 0): a number
    // past the end is an error that says what the numbers are.
    let out = lab.natpmpctl(&["remove", "5"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(out.stderr.contains("there is no mapping 5"), "{out}");
}

#[test]
fn remove_by_client_and_all() {
    let s = setup();
    let lab = &s.lab;
    map_raw(
        &lab.lan,
        LAN_HOST_SECOND,
        GW_LAN,
        Proto::Tcp,
        7002,
        7002,
        600,
    );
    assert_eq!(lab.mappings().len(), 3);
    let out = lab.natpmpctl(&["remove", "--client", "192.168.88.10"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
    let left = lab.mappings();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["client"], "192.168.88.11");
    assert!(!tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, s.tcp),
        "lan-tcp",
        Duration::from_millis(700)
    ));
    let out = lab.natpmpctl(&["remove", "--client", "192.168.88.10"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(
        out.stderr.contains("192.168.88.10 has no mappings"),
        "{out}"
    );

    lab.natpmpctl(&["remove", "--all"]).ok();
    assert!(lab.mappings().is_empty());
    let map = lab.inbound_map();
    assert!(!map.contains("192.168.88."), "elements left:\n{map}");
    let out = lab.natpmpctl(&["remove", "--all"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(out.stderr.contains("no mappings to remove"), "{out}");
}

#[test]
fn errors_say_what_to_do() {
    let mut lab = Lab::new();
    lab.start_daemon(&DaemonConfig::default());
    let socket = lab.control_socket();

    // Permission denied: the socket is root's, 0600; natpmpctl runs as nobody.
    let out = run_timeout(
        ns_command(
            &lab.gw,
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_natpmpctl"),
                "--socket",
                socket.to_str().unwrap(),
                "status",
            ],
        ),
        CMD_TIMEOUT,
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out}");
    assert!(out.stderr.contains("Permission denied"), "{out}");
    assert!(
        out.stderr.contains("run natpmpctl as root (sudo)")
            && out.stderr.contains("control-socket-group"),
        "{out}"
    );

    // Daemon killed: the socket stays behind, nobody answers.
    lab.kill_daemon_hard();
    assert!(socket.exists(), "kill -9 leaves the socket");
    let out = lab.natpmpctl(&["status"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out}");
    assert!(out.stderr.contains("Connection refused"), "{out}");
    assert!(
        out.stderr
            .contains("natpmpd is not running: the socket is left over"),
        "{out}"
    );

    // No socket at all.
    std::fs::remove_file(&socket).unwrap();
    let out = lab.natpmpctl(&["status"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out}");
    assert!(out.stderr.contains("No such file or directory"), "{out}");
    assert!(
        out.stderr
            .contains("natpmpd is not running, or uses another socket")
            && out.stderr.contains("--socket PATH"),
        "{out}"
    );
}
