//! End-to-end: where requests are accepted. Requests from the internet side get nothing; a
//! request to the gateway's second LAN address is answered from that address; every enabled
//! internal interface is served and a disabled one is not.

use std::net::{SocketAddr, SocketAddrV4};

use crate::lab::*;

fn ext_addr_reply(b: &[u8]) -> std::net::Ipv4Addr {
    assert_eq!(b.len(), 12, "external-address reply length: {b:02x?}");
    assert_eq!(
        &b[..4],
        &[0, 0x80, 0, 0],
        "external-address reply header: {b:02x?}"
    );
    std::net::Ipv4Addr::new(b[8], b[9], b[10], b[11])
}

#[test]
fn requests_from_the_internet_side_get_no_reply_and_create_nothing() {
    let mut lab = Lab::new();
    lab.start_default();

    let to = SocketAddrV4::new(GW_EXT, NATPMP_PORT);
    for (what, payload) in [
        ("external address", vec![0u8, 0]),
        (
            "tcp map",
            map_request(Proto::Tcp, 8080, 8080, 3600).to_vec(),
        ),
        (
            "udp map",
            map_request(Proto::Udp, 8080, 8080, 3600).to_vec(),
        ),
    ] {
        let r = udp_exchange(&lab.inet, INET_HOST, to, &payload);
        assert!(
            r.is_none(),
            "{what} request from the internet got a reply: {r:?}"
        );
    }
    assert!(
        lab.mappings().is_empty(),
        "requests from outside created mappings: {:?}",
        lab.mappings()
    );
    let map = lab.inbound_map();
    assert!(
        !map.contains("elements"),
        "requests from outside created kernel forwards:\n{map}"
    );
    lab.assert_daemon_running();
}

#[test]
fn request_to_the_second_lan_address_is_answered_from_that_address() {
    let mut lab = Lab::new();
    lab.start_default();
    for gw in [GW_LAN, GW_LAN_SECOND] {
        let to = SocketAddrV4::new(gw, NATPMP_PORT);
        let (b, from) = udp_exchange(&lab.lan, LAN_HOST, to, &[0, 0])
            .unwrap_or_else(|| panic!("no reply to a request sent to {to}"));
        assert_eq!(
            from,
            SocketAddr::V4(to),
            "reply must come from the address asked"
        );
        assert_eq!(ext_addr_reply(&b), GW_EXT);
    }
    // A map request to the second address as well, from the second client address.
    let m = map_raw(
        &lab.lan,
        LAN_HOST_SECOND,
        GW_LAN_SECOND,
        Proto::Udp,
        7100,
        0,
        60,
    );
    assert_eq!(m.result, 0, "{m:?}");
}

#[test]
fn every_enabled_internal_interface_is_served() {
    let mut lab = Lab::new();
    lab.start_default();
    for (ns, src, gw) in [
        (&lab.lan, LAN_HOST, GW_LAN),
        (&lab.lan2, LAN2_HOST, GW_LAN2),
    ] {
        let out = natpmpc(ns, gw, &[]);
        assert!(out.success(), "natpmpc from {src} via {gw}: {out}");
        assert!(
            out.stdout.contains("Public IP address : 203.0.113.1"),
            "{out}"
        );
        let m = natpmpc_map(ns, gw, 0, 7200, Proto::Udp, 60);
        assert_eq!(m.private_port, 7200);
        assert_ne!(m.public_port, 0);
    }
    let maps = lab.mappings();
    for client in ["192.168.88.10", "192.168.89.10"] {
        assert!(
            maps.iter().any(|e| e["client"] == client),
            "{client} missing: {maps:?}"
        );
    }
}

#[test]
fn disabled_internal_interface_gets_no_answers() {
    let mut lab = Lab::new();
    lab.start_daemon(&DaemonConfig {
        interfaces: vec![
            ("ether1", "external", false),
            ("ether2", "internal", false),
            ("ether3", "internal", true),
        ],
        ..DaemonConfig::default()
    });
    let r = udp_exchange(
        &lab.lan2,
        LAN2_HOST,
        SocketAddrV4::new(GW_LAN2, NATPMP_PORT),
        &[0, 0],
    );
    assert!(r.is_none(), "disabled interface ether3 answered: {r:?}");
    // A request crossing interfaces (from lan2 to ether2's address) is not accepted either.
    let r = udp_exchange(
        &lab.lan2,
        LAN2_HOST,
        SocketAddrV4::new(GW_LAN, NATPMP_PORT),
        &[0, 0],
    );
    assert!(
        r.is_none(),
        "request arriving on ether3 for ether2's address answered: {r:?}"
    );
    // ether2 still works.
    let r = udp_exchange(
        &lab.lan,
        LAN_HOST,
        SocketAddrV4::new(GW_LAN, NATPMP_PORT),
        &[0, 0],
    );
    assert!(r.is_some(), "enabled interface ether2 did not answer");
}
