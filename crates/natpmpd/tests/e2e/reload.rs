//! End-to-end: the running daemon re-reads its configuration (SIGHUP or `natpmpctl reload`).
//!
//! - SIGHUP after adding an `[[interfaces]]` ether3 internal entry: lan2 gets answers (none
//!   before) and the existing mappings keep forwarding on the same ports.
//! - `natpmpctl reload` with `enabled = false`: no reply (ICMP port unreachable), our table is
//!   removed; back to `true`: answers and the table again.
//! - A configuration with an error: `natpmpctl reload` exits 1 naming the line, SIGHUP logs it,
//!   and the daemon keeps the old configuration and keeps answering.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use crate::lab::*;

/// Sends an address request from lan over a connected socket and returns the receive error
/// kind, or `None` if a reply came (a closed port yields `ConnectionRefused` through ICMP).
fn closed_port_error(lab: &Lab) -> Option<io::ErrorKind> {
    in_ns(&lab.lan, || {
        let s = UdpSocket::bind(SocketAddrV4::new(LAN_HOST, 0)).unwrap();
        s.connect(SocketAddrV4::new(GW_LAN, NATPMP_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        s.send(&[0, 0]).unwrap();
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Ok(_) => None,
            Err(e) => Some(e.kind()),
        }
    })
}

fn tcp_passes(lab: &Lab, port: u16, tag: &str) -> bool {
    tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, port),
        tag,
        Duration::from_secs(1),
    )
}

#[test]
fn sighup_adds_ether3_without_dropping_mappings() {
    let mut lab = Lab::new();
    lab.start_daemon(&DaemonConfig {
        interfaces: interfaces_without_ether3(),
        ..DaemonConfig::default()
    });
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    assert!(tcp_passes(&lab, tcp.public_port, "lan-tcp"));
    assert_eq!(
        address_request_from(&lab.lan2, LAN2_HOST, GW_LAN2),
        None,
        "lan2 answered before ether3 was configured"
    );
    let (_, epoch_before, _) = lab.address_request().unwrap();

    lab.write_config(&lab.config_text(&DaemonConfig::default()));
    lab.signal_daemon(libc::SIGHUP);
    assert!(
        lab.wait_log_count("configuration reloaded", 1, Duration::from_secs(3)),
        "no 'configuration reloaded' after SIGHUP:\n{}",
        lab.daemon_log()
    );
    let r = address_request_from(&lab.lan2, LAN2_HOST, GW_LAN2);
    assert_eq!(
        r.map(|r| (r.0, r.2)),
        Some((0, GW_EXT)),
        "lan2 after adding ether3: {r:?}"
    );

    // The existing mapping is untouched: listed, same port, forwarding; the epoch went on.
    let maps = lab.mappings();
    assert!(
        maps.iter()
            .any(|e| e["dst-port"] == tcp.public_port && e["protocol"] == "tcp"),
        "{maps:?}"
    );
    assert!(inbound_map_has(
        &lab.inbound_map(),
        "tcp",
        tcp.public_port,
        "192.168.88.10 . 8080"
    ));
    assert!(
        tcp_passes(&lab, tcp.public_port, "lan-tcp"),
        "the old mapping stopped forwarding after SIGHUP"
    );
    let (_, epoch_after, _) = lab.address_request().unwrap();
    assert!(
        epoch_after >= epoch_before,
        "epoch went back on reload: {epoch_before} -> {epoch_after}"
    );

    // lan2 can now map a port, and traffic reaches it.
    let _srv2 = tcp_echo_server(&lab.lan2, SocketAddrV4::new(LAN2_HOST, 8080), "lan2-tcp");
    let m = map_raw(&lab.lan2, LAN2_HOST, GW_LAN2, Proto::Tcp, 8080, 0, 600);
    assert_eq!(m.result, 0, "{m:?}");
    assert_ne!(m.external, tcp.public_port);
    assert!(
        tcp_passes(&lab, m.external, "lan2-tcp"),
        "lan2's mapping does not forward"
    );
    assert!(tcp_passes(&lab, tcp.public_port, "lan-tcp"));
}

#[test]
fn natpmpctl_reload_switches_off_and_on() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    assert!(tcp_passes(&lab, tcp.public_port, "lan-tcp"));

    // enabled = false
    lab.write_config(&lab.config_text(&DaemonConfig {
        enabled: false,
        ..DaemonConfig::default()
    }));
    let out = lab.natpmpctl(&["reload"]);
    assert!(
        out.success(),
        "natpmpctl reload (enabled = false) failed: {out}"
    );
    assert!(out.stdout.contains("configuration reloaded"), "{out}");
    assert_eq!(
        closed_port_error(&lab),
        Some(io::ErrorKind::ConnectionRefused),
        "switched off: port 5351 should be closed (ICMP port unreachable)"
    );
    assert!(lab.address_request().is_none(), "switched off but answered");
    assert!(
        !lab.gw_tables().contains("table inet natpmpd"),
        "switched off but the table stays:\n{}",
        lab.gw_tables()
    );
    assert!(
        !tcp_passes(&lab, tcp.public_port, "lan-tcp"),
        "switched off but the mapping still forwards"
    );
    assert!(lab.daemon_alive());
    // natpmpctl still works while switched off.
    assert!(lab.natpmpctl(&["print", "--json"]).success());

    // enabled = true
    lab.write_config(&lab.config_text(&DaemonConfig::default()));
    let out = lab.natpmpctl(&["reload"]);
    assert!(
        out.success(),
        "natpmpctl reload (enabled = true) failed: {out}"
    );
    assert!(
        Lab::eventually(Duration::from_secs(3), || lab
            .address_request()
            .is_some_and(|r| r.0 == 0 && r.2 == GW_EXT)),
        "switched on again but no answer"
    );
    assert!(
        lab.gw_tables().contains("table inet natpmpd"),
        "switched on but no table:\n{}",
        lab.gw_tables()
    );
    let m = natpmpc_map(&lab.lan, GW_LAN, 0, 8080, Proto::Tcp, 3600);
    assert!(
        tcp_passes(&lab, m.public_port, "lan-tcp"),
        "a mapping made after switching on does not forward"
    );
}

#[test]
fn bad_config_is_refused_and_the_old_one_stays() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);

    // Line 2 is wrong; it also drops ether3, which must therefore keep answering.
    let good = lab.config_text(&DaemonConfig {
        interfaces: interfaces_without_ether3(),
        ..DaemonConfig::default()
    });
    let (first, rest) = good.split_once('\n').unwrap();
    let bad = format!("{first}\nhairpin = \"sometimes\"\n{rest}");
    lab.write_config(&bad);
    let out = lab.natpmpctl(&["reload"]);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "natpmpctl reload of a bad config should exit 1: {out}"
    );
    let cfg = lab.config_path();
    let cfg = cfg.display().to_string();
    assert!(
        out.stderr.contains(&format!("{cfg}:2:")) || out.stderr.contains("line 2"),
        "the message should name line 2: {out}"
    );
    assert!(
        out.stderr.contains("hairpin"),
        "the message should name the key: {out}"
    );

    // Old configuration still in force: answers on both LANs, mapping forwards.
    assert!(lab.daemon_alive());
    assert_eq!(lab.address_request().map(|r| r.0), Some(0));
    assert!(
        address_request_from(&lab.lan2, LAN2_HOST, GW_LAN2).is_some(),
        "ether3 stopped answering after a refused reload"
    );
    assert!(tcp_passes(&lab, tcp.public_port, "lan-tcp"));

    // SIGHUP with the same bad file: logged, nothing changes, the daemon lives on.
    let before = lab
        .daemon_log()
        .matches("configuration not reloaded")
        .count();
    lab.signal_daemon(libc::SIGHUP);
    assert!(
        lab.wait_log_count(
            "configuration not reloaded",
            before + 1,
            Duration::from_secs(3)
        ),
        "SIGHUP with a bad config logged nothing:\n{}",
        lab.daemon_log()
    );
    assert!(
        lab.daemon_log().contains(&format!("{cfg}:2:")),
        "the log should name line 2:\n{}",
        lab.daemon_log()
    );
    assert!(
        lab.daemon_alive(),
        "natpmpd died on SIGHUP with a bad config:\n{}",
        lab.daemon_log()
    );
    assert!(address_request_from(&lab.lan2, LAN2_HOST, GW_LAN2).is_some());
    assert!(tcp_passes(&lab, tcp.public_port, "lan-tcp"));

    // The fixed file is taken: ether3 goes away, the mapping stays.
    lab.write_config(&good);
    let out = lab.natpmpctl(&["reload"]);
    assert!(out.success(), "{out}");
    assert_eq!(
        address_request_from(&lab.lan2, LAN2_HOST, GW_LAN2),
        None,
        "ether3 removed but still answering"
    );
    assert!(tcp_passes(&lab, tcp.public_port, "lan-tcp"));
}
