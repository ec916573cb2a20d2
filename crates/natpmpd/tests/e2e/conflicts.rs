//! End-to-end: two hosts want the same external port. The second gets another port, and
//! traffic to each port reaches the right host.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::lab::*;

#[test]
fn second_host_asking_for_a_taken_port_gets_another_and_traffic_goes_to_the_right_host() {
    let mut lab = Lab::new();
    lab.start_default();

    // lan (192.168.88.10) takes 45000 via natpmpc.
    let first = natpmpc_map(&lab.lan, GW_LAN, 45000, 7001, Proto::Tcp, 600);
    let p = first.public_port;
    // lan2 (another LAN, ether3) asks for the same external port with natpmpc.
    let second = natpmpc_map(&lab.lan2, GW_LAN2, p, 7002, Proto::Tcp, 600);
    let q = second.public_port;
    assert_ne!(q, p, "lan2 was given the port lan holds");
    assert_ne!(q, 0);
    // The LAN host's second address (a different client IP) asks for it too, with our own
    // client bound to 192.168.88.11 (natpmpc cannot choose its source).
    let third = map_raw(&lab.lan, LAN_HOST_SECOND, GW_LAN, Proto::Tcp, 7003, p, 600);
    assert_eq!(third.result, 0, "{third:?}");
    let r = third.external;
    assert!(
        r != p && r != q && r != 0,
        "192.168.88.11 got port {r} (others: {p}, {q})"
    );
    // Companion port: the UDP twin of p stays reserved for its TCP owner.
    let udp = map_raw(&lab.lan, LAN_HOST_SECOND, GW_LAN, Proto::Udp, 7004, p, 600);
    assert!(
        udp.result != 0 || udp.external != p,
        "UDP {p} given to another client: {udp:?}"
    );

    let servers = [
        (
            tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 7001)),
            "lan-10",
            p,
        ),
        (
            tcp_listener(&lab.lan2, SocketAddrV4::new(LAN2_HOST, 7002)),
            "lan2",
            q,
        ),
        (
            tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST_SECOND, 7003)),
            "lan-11",
            r,
        ),
    ];
    for (listener, tag, port) in servers {
        let server = serve_tcp_once(listener, tag, Duration::from_secs(5));
        let reply = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, port), "who")
            .unwrap_or_else(|e| panic!("TCP to external port {port} ({tag}) failed: {e}"));
        assert_eq!(
            reply,
            format!("{tag}:who"),
            "external port {port} reached the wrong host"
        );
        assert!(server.join().unwrap().is_some());
    }

    let maps = lab.mappings();
    for (client, port) in [
        ("192.168.88.10", p),
        ("192.168.89.10", q),
        ("192.168.88.11", r),
    ] {
        assert!(
            maps.iter()
                .any(|e| e["client"] == client && e["dst-port"] == port),
            "natpmpctl lacks {client} -> {port}: {maps:?}"
        );
    }
}
