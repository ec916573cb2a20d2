//! End-to-end: the Debian `natpmpc` client maps a TCP port through the real daemon; real TCP
//! traffic from the internet host reaches the LAN host; after natpmpc deletes the mapping the
//! forward is gone from the kernel and new connections fail.

use std::net::{IpAddr, SocketAddrV4};
use std::time::Duration;

use crate::lab::*;

/// Whether `nft list map inet natpmpd inbound` output holds `proto . ext : ip . port`.
fn inbound_has(map: &str, proto: &str, ext: u16, to: &str) -> bool {
    map.split([',', '{', '}', '\n'])
        .map(str::trim)
        .any(|e| e.starts_with(&format!("{proto} . {ext} ")) && e.ends_with(to))
}

#[test]
fn natpmpc_tcp_mapping_forwards_traffic_and_delete_removes_it() {
    let mut lab = Lab::new();
    lab.start_default();

    let m = natpmpc_map(&lab.lan, GW_LAN, 40000, 8080, Proto::Tcp, 3600);
    assert_eq!(m.public_ip, Some(GW_EXT), "natpmpc's public address");
    assert_eq!(m.protocol, "TCP");
    assert_eq!(m.private_port, 8080);
    assert!(m.public_port != 0, "external port 0 granted");
    assert!(
        m.lifetime > 0 && m.lifetime <= 3600,
        "lifetime {} not in 1..=3600",
        m.lifetime
    );
    let ext = m.public_port;

    // Real TCP from the internet host reaches the LAN host's listener and round-trips.
    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080));
    let server = serve_tcp_once(listener, "lan", Duration::from_secs(5));
    let reply = tcp_roundtrip(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, ext),
        "hello through nat-pmp",
    )
    .unwrap_or_else(|e| panic!("TCP to 203.0.113.1:{ext} failed: {e}"));
    assert_eq!(reply, "lan:hello through nat-pmp");
    let peer = server
        .join()
        .unwrap()
        .expect("the LAN listener saw no connection");
    assert_eq!(
        peer.ip(),
        IpAddr::V4(INET_HOST),
        "the LAN host should see the real peer"
    );

    // The operator view.
    let maps = lab.mappings();
    let entry = maps
        .iter()
        .find(|e| e["dst-port"] == ext && e["protocol"] == "tcp")
        .unwrap_or_else(|| panic!("no tcp mapping for port {ext} in natpmpctl print: {maps:?}"));
    assert_eq!(entry["to-addresses"], "192.168.88.10", "{entry}");
    assert_eq!(entry["to-ports"], 8080, "{entry}");
    assert_eq!(entry["client"], "192.168.88.10", "{entry}");
    assert_eq!(entry["in-interface"], "ether1", "{entry}");
    assert_eq!(entry["dst-address"], "203.0.113.1", "{entry}");
    assert_eq!(entry["chain"], "dstnat", "{entry}");
    assert_eq!(entry["action"], "dst-nat", "{entry}");
    let left = entry["lifetime-left"].as_u64().expect("lifetime-left");
    assert!(left > 0 && left <= 3600, "{entry}");
    assert!(
        entry["comment"]
            .as_str()
            .unwrap_or("")
            .starts_with("nat-pmp 192.168.88.10"),
        "{entry}"
    );
    let map = lab.inbound_map();
    assert!(
        inbound_has(&map, "tcp", ext, "192.168.88.10 . 8080"),
        "kernel map lacks the forward:\n{map}"
    );

    // Delete with natpmpc (lifetime 0).
    let out = natpmpc(
        &lab.lan,
        GW_LAN,
        &["-a", &ext.to_string(), "8080", "tcp", "0"],
    );
    assert!(out.success(), "natpmpc delete failed: {out}");

    assert!(
        Lab::eventually(Duration::from_secs(2), || !inbound_has(
            &lab.inbound_map(),
            "tcp",
            ext,
            "192.168.88.10 . 8080"
        )),
        "the element is still in the inbound map after delete:\n{}",
        lab.inbound_map()
    );
    assert!(
        !lab.mappings().iter().any(|e| e["dst-port"] == ext),
        "natpmpctl still lists the deleted mapping: {:?}",
        lab.mappings()
    );

    // The listener is still there, but nothing may reach it any more.
    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080));
    let server = serve_tcp_once(listener, "lan", Duration::from_secs(3));
    let r = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, ext), "after delete");
    assert!(
        matches!(r.as_deref(), Err(_) | Ok("")),
        "connection still forwarded after delete: {r:?}"
    );
    assert!(
        server.join().unwrap().is_none(),
        "the LAN host got a connection after delete"
    );
}

#[test]
fn natpmpc_udp_mapping_is_udp_only() {
    let mut lab = Lab::new();
    lab.start_default();
    let m = natpmpc_map(&lab.lan, GW_LAN, 41000, 8081, Proto::Udp, 600);
    assert_eq!(m.protocol, "UDP");
    let map = lab.inbound_map();
    assert!(
        inbound_has(&map, "udp", m.public_port, "192.168.88.10 . 8081"),
        "{map}"
    );
    assert!(
        !inbound_has(&map, "tcp", m.public_port, "192.168.88.10 . 8081"),
        "a UDP request created a TCP forward:\n{map}"
    );
    // A TCP SYN to that port is not forwarded.
    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 8081));
    let server = serve_tcp_once(listener, "lan", Duration::from_secs(3));
    let r = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, m.public_port), "tcp?");
    assert!(
        matches!(r.as_deref(), Err(_) | Ok("")),
        "TCP forwarded through a UDP mapping: {r:?}"
    );
    assert!(
        server.join().unwrap().is_none(),
        "TCP reached the LAN via a UDP mapping"
    );
}
