//! End-to-end: the router's own ports are never handed out. Real sockets in the gateway
//! namespace (a WireGuard-like UDP socket on the wildcard, a web UI listening on the external
//! address, a LAN-only service) and `reserved-ports`; natpmpc and raw PCP ask for them; the
//! router keeps its traffic. A socket that appears on a mapped port takes the port back.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::lab::pcp::{self, Request};
use crate::lab::*;

/// A datagram from the internet host to the gateway's external `port` reaches `router`.
fn reaches_router(lab: &Lab, router: &std::net::UdpSocket, port: u16) -> bool {
    let inet = udp_socket(&lab.inet, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    (0..3).any(|i| {
        let msg = format!("to-router-{i}");
        inet.send_to(msg.as_bytes(), SocketAddrV4::new(GW_EXT, port))
            .unwrap();
        matches!(recv(router), Some((b, _)) if b == msg.as_bytes())
    })
}

#[test]
fn the_routers_sockets_and_reserved_ports_are_never_handed_out() {
    let mut lab = Lab::new();
    let wireguard = udp_socket(&lab.gw, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 51820));
    let _web_ui = tcp_listener(&lab.gw, SocketAddrV4::new(GW_EXT, 8443));
    let _lan_only = tcp_listener(&lab.gw, SocketAddrV4::new(GW_LAN, 9443));
    lab.start_daemon_with(&DaemonConfig::default(), "reserved-ports = [1194]\n");

    let udp = natpmpc_map(&lab.lan, GW_LAN, 51820, 51820, Proto::Udp, 3600);
    assert_ne!(
        udp.public_port, 51820,
        "the router's WireGuard port was handed out"
    );
    assert!(
        reaches_router(&lab, &wireguard, 51820),
        "the router's own UDP 51820 no longer gets its traffic"
    );
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 8443, 8443, Proto::Tcp, 3600);
    assert_ne!(tcp.public_port, 8443, "the web UI's port was handed out");
    let reserved = natpmpc_map(&lab.lan, GW_LAN, 1194, 1194, Proto::Udp, 3600);
    assert_ne!(reserved.public_port, 1194, "a reserved port was handed out");
    // A socket only on the LAN address is not the internet's business.
    let lan = natpmpc_map(&lab.lan, GW_LAN, 9443, 9443, Proto::Tcp, 3600);
    assert_eq!(lan.public_port, 9443);
    // PCP with PREFER_FAILURE: CANNOT_PROVIDE_EXTERNAL.
    let request = Request::map(LAN_HOST, 0x51, pcp::UDP, 5000, 600)
        .suggest(51820)
        .prefer_failure();
    let (r, _) = pcp::exchange(&lab.lan, LAN_HOST, GW_LAN, &request);
    assert_eq!(r.expect("a reply").result, pcp::CANNOT_PROVIDE_EXTERNAL);
}

#[test]
fn a_socket_that_appears_on_a_mapped_port_takes_it_back() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let m = natpmpc_map(&lab.lan, GW_LAN, 40123, 9000, Proto::Udp, 3600);
    assert_eq!(m.public_port, 40123);
    assert!(udp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, 40123), "x").is_some());
    // The router starts a service on that port.
    let service = udp_socket(&lab.gw, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 40123));
    assert!(
        Lab::eventually(Duration::from_secs(5), || lab.mappings().is_empty()),
        "the mapping on the router's new port is still listed: {:?}",
        lab.mappings()
    );
    assert!(
        lab.daemon_log().contains("port 40123 is the router's own"),
        "{}",
        lab.daemon_log()
    );
    assert!(
        reaches_router(&lab, &service, 40123),
        "the router's new service does not get its traffic"
    );
}
