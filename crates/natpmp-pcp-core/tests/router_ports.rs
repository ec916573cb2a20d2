//! The router's own ports are never handed out (docs/protocol-choices.md "The router's own
//! ports"): a TCP listener or bound UDP socket on the external address or a wildcard, and
//! every port in `reserved-ports`. A suggestion of one gets another port (CANNOT_PROVIDE_EXTERNAL
//! under PREFER_FAILURE); a mapping that holds one when the socket appears, or when the port
//! is reserved by a reload, is removed.

mod common;
use common::*;
use natpmp_pcp_core::engine::access::PortRange;
use natpmp_pcp_core::gateway::router_ports::LocalSocket;
use natpmp_pcp_core::{EngineConfig, Protocol};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn socket(protocol: Protocol, addr: IpAddr, port: u16) -> LocalSocket {
    LocalSocket {
        protocol,
        addr,
        port,
    }
}

const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[test]
fn wireguards_udp_port_is_never_handed_out_but_tcp_of_the_same_number_is() {
    let mut gw = Gw::new();
    gw.set_local_sockets(vec![socket(Protocol::Udp, ANY4, 51820)]);
    for i in 0..10 {
        let p = gw.map_ok(A, UDP, 51820 + i, 51820, 3600);
        assert_ne!(p, 51820);
    }
    assert_eq!(gw.map_ok(B, TCP, 51820, 51820, 3600), 51820);
    let mut req = pcp_map_request(C, 600, NONCE, IP_UDP, 51820, 51820, ZERO4);
    req.extend(pcp_prefer_failure());
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 0, true);
    gw.assert_refused(C, &req, &expected);
}

#[test]
fn only_sockets_the_internet_reaches_on_the_external_address_count() {
    let mut gw = Gw::new();
    gw.set_local_sockets(vec![
        // The web UI on the external address, an SSH server on every address (IPv6 wildcard,
        // which takes IPv4 too), a DNS server only on the LAN.
        socket(Protocol::Tcp, v4(EXT), 8443),
        socket(Protocol::Tcp, ANY6, 2222),
        socket(Protocol::Udp, v4(GW_LAN), 5353),
        socket(Protocol::Tcp, IpAddr::V6(EXT.to_ipv6_mapped()), 8080),
    ]);
    for taken in [8443, 2222, 8080] {
        assert_ne!(gw.map_ok(A, TCP, taken, taken, 3600), taken, "TCP {taken}");
    }
    assert_eq!(gw.map_ok(A, UDP, 5353, 5353, 3600), 5353);
}

#[test]
fn a_socket_that_appears_on_a_mapped_port_takes_it_back() {
    let mut gw = Gw::new();
    let eport = gw.map_ok(A, UDP, 51820, 51820, 3600);
    let other = gw.map_ok(A, TCP, 8080, 8080, 3600);
    gw.run_for(secs(5));
    gw.leases.clear();
    gw.set_local_sockets(vec![socket(Protocol::Udp, ANY4, eport)]);
    let mut removed = removes(&gw.changes);
    removed.sort();
    let mut udp_pair = pair(UDP, EXT, eport, A, 51820);
    udp_pair.sort();
    assert_eq!(removed, udp_pair);
    assert!(!gw.elements().iter().any(|e| e.protocol() == Protocol::Udp));
    assert_eq!(gw.mappings().len(), 1);
    assert!(gw
        .mapping(A, TCP, 8080)
        .is_some_and(|v| v.external_port == other));
    gw.assert_kernel_matches_engine();
    gw.run_for(secs(5));
    assert!(!gw.leases.is_empty(), "the lease file is rewritten");
    // The client's renewal is a new mapping on another port.
    assert_ne!(gw.map_ok(A, UDP, 51820, 51820, 3600), eport);
    // The same report again changes nothing.
    gw.set_local_sockets(vec![socket(Protocol::Udp, ANY4, eport)]);
    assert!(gw.changes.is_empty());
}

#[test]
fn sockets_on_the_old_address_stop_counting_when_the_address_changes() {
    let mut gw = Gw::new();
    gw.set_local_sockets(vec![socket(Protocol::Tcp, v4(EXT2), 8443)]);
    assert_eq!(gw.map_ok(A, TCP, 80, 8443, 3600), 8443);
    // EXT2 becomes the external address: the socket bound to it now faces the internet.
    gw.set_address(Some(EXT2));
    assert!(gw.mapping(A, TCP, 80).is_none(), "{:?}", gw.mappings());
    assert_ne!(gw.map_ok(B, TCP, 80, 8443, 3600), 8443);
}

#[test]
fn reserved_ports_are_never_handed_out_and_a_reload_takes_them_back() {
    let mut gw = Gw::with_engine(EngineConfig {
        reserved_ports: vec![PortRange::new(1194, 1194), PortRange::new(9000, 9009)],
        ..EngineConfig::default()
    });
    for (op, port) in [(UDP, 1194), (TCP, 1194), (TCP, 9005)] {
        assert_ne!(gw.map_ok(A, op, port, port, 3600), port);
    }
    let held = gw.map_ok(B, TCP, 3000, 3000, 3600);
    assert_eq!(held, 3000);
    let mut config = gw.config().clone();
    config
        .engine
        .reserved_ports
        .push(PortRange::new(3000, 3000));
    gw.reconfigure(config).unwrap();
    assert!(gw.mapping(B, TCP, 3000).is_none());
    assert!(removes(&gw.changes).contains(&inbound(TCP, 3000, B, 3000)));
}

#[test]
fn the_allocator_skips_router_ports_until_none_is_left() {
    let mut gw = Gw::small_range(2000, 2002);
    gw.set_local_sockets(vec![socket(Protocol::Tcp, ANY4, 2001)]);
    let mut got = vec![gw.map_ok(A, TCP, 1, 0, 3600), gw.map_ok(A, TCP, 2, 0, 3600)];
    got.sort();
    assert_eq!(got, vec![2000, 2002]);
    let m = gw.map(B, TCP, 3, 0, 3600);
    assert_eq!(m.result, OUT_OF_RESOURCES);
}

#[test]
fn ipv6_pinholes_are_not_the_routers_ports() {
    // A pinhole is on the host's own address, not the router's.
    let mut gw = Gw::with_ipv6();
    gw.set_local_sockets(vec![socket(Protocol::Udp, ANY6, 51820)]);
    let req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_UDP, 51820, 0, ZERO6);
    let r = gw.send6(A6, 40000, &req).unwrap();
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 51820, wire6(A6), &[]));
}
