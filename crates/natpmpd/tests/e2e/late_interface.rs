//! End-to-end: a configured internal interface that does not exist when natpmpd starts is
//! logged, and used as soon as it appears (no restart, no reload): the interface monitor sees
//! the new link and its address.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::lab::*;

#[test]
fn internal_interface_created_after_start_is_picked_up() {
    let mut lab = Lab::new();
    // Take lan2's link away before the daemon starts (deleting one end of a veth removes both).
    ip_n(&lab.gw, &["link", "del", "ether3"]);
    lab.start_daemon(&DaemonConfig::default());
    assert!(
        lab.wait_log_count(
            "internal interface ether3 does not exist (yet)",
            1,
            Duration::from_secs(3)
        ),
        "the missing interface was not reported:\n{}",
        lab.daemon_log()
    );
    // lan (ether2) is served meanwhile.
    assert_eq!(lab.address_request().map(|r| (r.0, r.2)), Some((0, GW_EXT)));

    // The link appears: same name, a new interface index, its address added afterwards.
    ip_n(
        &lab.gw,
        &[
            "link", "add", "ether3", "type", "veth", "peer", "name", "eth0", "netns", &lab.lan2,
        ],
    );
    ip_n(
        &lab.gw,
        &["addr", "add", "192.168.89.1/24", "dev", "ether3"],
    );
    ip_n(&lab.gw, &["link", "set", "ether3", "up"]);
    ip_n(
        &lab.lan2,
        &["addr", "add", "192.168.89.10/24", "dev", "eth0"],
    );
    ip_n(&lab.lan2, &["link", "set", "eth0", "up"]);
    ip_n(
        &lab.lan2,
        &["route", "add", "default", "via", "192.168.89.1"],
    );

    assert!(
        Lab::eventually(Duration::from_secs(5), || address_request_from(
            &lab.lan2, LAN2_HOST, GW_LAN2
        )
        .is_some_and(|r| r.0 == 0 && r.2 == GW_EXT)),
        "lan2 got no answer after ether3 appeared:\n{}",
        lab.daemon_log()
    );
    assert!(
        lab.daemon_log()
            .contains("internal interface ether3 appeared"),
        "{}",
        lab.daemon_log()
    );

    // And a mapping made from lan2 forwards real traffic.
    let _srv = tcp_echo_server(&lab.lan2, SocketAddrV4::new(LAN2_HOST, 9000), "lan2-tcp");
    let m = natpmpc_map(&lab.lan2, GW_LAN2, 0, 9000, Proto::Tcp, 600);
    assert!(
        tcp_probe(
            &lab.inet,
            SocketAddrV4::new(GW_EXT, m.public_port),
            "lan2-tcp",
            Duration::from_secs(2)
        ),
        "no TCP through the mapping made on the late interface:\n{}",
        lab.daemon_log()
    );
}
