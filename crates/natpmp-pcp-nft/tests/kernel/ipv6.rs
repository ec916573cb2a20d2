//! Tests against the real kernel with real IPv6 packets: pinholes through the operator's
//! forward chain that drops by default (`lab::operator_firewall`, the firewall contract of
//! `template.rs`). Root only, each test in namespaces of its own, as in `traffic.rs`: the test
//! thread is the gateway, the LAN host is 2001:db8:1::10, the internet host 2001:db8:ff::2
//! and ::3.

use natpmp_pcp_core::kernel::{removed_for_good, Change, Forwarder, RemoteRange, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::support::elements::{add, filtered_pinhole, host6, inbound, pinhole, remotes6};
use crate::support::elements::{INET6_HOST, INET6_OTHER, LAN6_HOST};
use crate::support::lab::{
    operator_firewall, tcp_carries, tcp_connect, tcp_listen, udp_round_trip,
};
use crate::support::lab::{ANSWER, MARK, NO_ANSWER};
use crate::support::netns::{gateway_with_hosts, in_netns, Host};

const EXT: &str = "wan0";

/// The gateway with the operator's firewall and our table: (forwarder, lan, inet).
fn lab() -> (NftForwarder, Host, Host) {
    let (lan, inet) = gateway_with_hosts(EXT);
    operator_firewall("lan0", EXT, MARK);
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(&TableSpec::new(EXT)).expect("prepare");
    (f, lan, inet)
}

fn at(addr: Ipv6Addr, port: u16) -> SocketAddr {
    (addr, port).into()
}

/// A UDP datagram from `from` (port 0: any) to the LAN host's `port`: (seen from, answered
/// from).
fn udp_in(
    inet: &Host,
    lan: &Host,
    from: Ipv6Addr,
    port: u16,
    wait: std::time::Duration,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    udp_round_trip(inet, at(from, 0), lan, port, host6(port), wait)
}

/// Whether a TCP connection from the internet host (from ::2) to the LAN host's `port` is made.
fn tcp_in(inet: &Host, lan: &Host, port: u16) -> bool {
    let listener = tcp_listen(lan, host6(port).into(), port);
    let to = host6(port).into();
    match tcp_connect(inet, &listener, to, NO_ANSWER) {
        None => false,
        Some((mut client, mut server)) => {
            assert!(tcp_carries(&mut client, &mut server, b"hello"));
            assert!(tcp_carries(&mut server, &mut client, b"hi"));
            true
        }
    }
}

/// The conntrack mark of the flows from `remote` to the LAN host's `port`.
fn marks(f: &mut NftForwarder, remote: Ipv6Addr, port: u16) -> Vec<u32> {
    f.conntrack_entries()
        .unwrap()
        .iter()
        .filter(|e| e.orig.src == IpAddr::V6(remote) && e.orig.dport == port)
        .map(|e| e.mark)
        .collect()
}

#[test]
fn pinholes_let_tcp_and_udp_in_and_nothing_else() {
    in_netns(|| {
        let (mut f, lan, inet) = lab();
        // The LAN reaches out (the operator's own rule), and its answers come back.
        let (seen, answer) = udp_round_trip(
            &lan,
            at(LAN6_HOST, 0),
            &inet,
            53,
            at(INET6_HOST, 53),
            ANSWER,
        );
        assert_eq!(seen.map(|a| a.ip()), Some(IpAddr::V6(LAN6_HOST)));
        assert_eq!(answer, Some(at(INET6_HOST, 53)));

        // No pinhole: the forward chain drops it. Nor does an IPv4 forward of the same port
        // mark IPv6 flows to it.
        f.apply(&[
            add(inbound(Protocol::Udp, 8080, 2, 8080), 600),
            add(inbound(Protocol::Tcp, 8080, 2, 8080), 600),
        ])
        .unwrap();
        assert_eq!(
            udp_in(&inet, &lan, INET6_HOST, 8080, NO_ANSWER),
            (None, None)
        );
        assert!(!tcp_in(&inet, &lan, 8080));

        f.apply(&[
            add(pinhole(Protocol::Udp, 8080), 600),
            add(pinhole(Protocol::Tcp, 8080), 600),
        ])
        .unwrap();
        let (seen, answer) = udp_in(&inet, &lan, INET6_HOST, 8080, ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(IpAddr::V6(INET6_HOST)));
        assert_eq!(answer, Some(host6(8080).into()));
        assert!(tcp_in(&inet, &lan, 8080));
        // Both flows carry our mark.
        let m = marks(&mut f, INET6_HOST, 8080);
        assert!(m.len() >= 2 && m.iter().all(|m| m & MARK == MARK), "{m:x?}");

        // A port never mapped stays closed, for both protocols and from any remote.
        assert_eq!(
            udp_in(&inet, &lan, INET6_HOST, 8081, NO_ANSWER),
            (None, None)
        );
        assert_eq!(
            udp_in(&inet, &lan, INET6_OTHER, 8081, NO_ANSWER),
            (None, None)
        );
        assert!(!tcp_in(&inet, &lan, 8081));
        // A pinhole of one protocol does not open the other.
        f.apply(&[Change::Remove(pinhole(Protocol::Tcp, 8080))])
            .unwrap();
        assert!(!tcp_in(&inet, &lan, 8080));
    });
}

#[test]
fn filtered_pinholes_let_in_only_remotes_in_the_box() {
    in_netns(|| {
        let (mut f, lan, inet) = lab();
        let only_host = RemoteRange {
            first_addr: INET6_HOST,
            last_addr: INET6_HOST,
            first_port: 0,
            last_port: 65535,
        };
        f.apply(&[add(filtered_pinhole(Protocol::Udp, 5353, only_host), 600)])
            .unwrap();
        let (seen, answer) = udp_in(&inet, &lan, INET6_HOST, 5353, ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(IpAddr::V6(INET6_HOST)));
        assert_eq!(answer, Some(host6(5353).into()));
        assert_eq!(
            udp_in(&inet, &lan, INET6_OTHER, 5353, NO_ANSWER),
            (None, None)
        );
        // Dropped by the forward chain, its first packet never had its conntrack entry
        // confirmed: no flow, marked or not.
        assert_eq!(marks(&mut f, INET6_OTHER, 5353), Vec::<u32>::new());

        // TCP: the internet host connects from ::2, outside a box of ::3 alone, inside a box
        // of ::0 to ::2 (boxes of one pinhole never overlap).
        let other_only = remotes6("2001:db8:ff::3", "2001:db8:ff::3", (0, 65535));
        f.apply(&[add(filtered_pinhole(Protocol::Tcp, 22, other_only), 600)])
            .unwrap();
        assert!(!tcp_in(&inet, &lan, 22));
        let below = remotes6("2001:db8:ff::", "2001:db8:ff::2", (0, 65535));
        f.apply(&[add(filtered_pinhole(Protocol::Tcp, 22, below), 600)])
            .unwrap();
        assert!(tcp_in(&inet, &lan, 22));
    });
}

#[test]
fn removing_a_pinhole_and_clearing_its_flows_cuts_open_connections() {
    in_netns(|| {
        let (mut f, lan, inet) = lab();
        let tcp = pinhole(Protocol::Tcp, 8080);
        let udp = pinhole(Protocol::Udp, 9000);
        let box_a = filtered_pinhole(Protocol::Udp, 9001, RemoteRange::single(INET6_HOST, 5000));
        let box_b = filtered_pinhole(Protocol::Udp, 9001, RemoteRange::single(INET6_HOST, 6000));
        f.apply(&[tcp, udp, box_a, box_b].map(|e| add(e, 600)))
            .unwrap();

        let listener = tcp_listen(&lan, host6(8080).into(), 8080);
        let (mut client, mut server) =
            tcp_connect(&inet, &listener, host6(8080).into(), ANSWER).expect("connect");
        assert!(tcp_carries(&mut client, &mut server, b"before"));
        // Fixed source ports, so the same flows are tried again after the removal.
        let flow = |port: u16, server_port: u16, wait| {
            udp_round_trip(
                &inet,
                at(INET6_HOST, port),
                &lan,
                server_port,
                host6(server_port),
                wait,
            )
        };
        for (port, server) in [(4000, 9000), (5000, 9001), (6000, 9001)] {
            assert_eq!(
                flow(port, server, ANSWER).0,
                Some(at(INET6_HOST, port)),
                "{port}"
            );
        }

        let removal = [
            Change::Remove(tcp),
            Change::Remove(udp),
            Change::Remove(box_a),
        ];
        f.apply(&removal).unwrap();
        // `apply` leaves conntrack alone: the open connection still carries.
        assert!(tcp_carries(&mut client, &mut server, b"still"));
        let gone = removed_for_good(&removal);
        assert_eq!(f.clear_conntrack(&gone).unwrap(), 3);
        // Cut: the remote's next segment starts a new, unmarked flow, which the forward chain
        // drops.
        server.set_read_timeout(Some(NO_ANSWER)).unwrap();
        assert!(!tcp_carries(&mut client, &mut server, b"after"));
        assert_eq!(flow(4000, 9000, NO_ANSWER), (None, None));
        assert_eq!(flow(5000, 9001, NO_ANSWER), (None, None));
        // The other box of the same host and port keeps its flow.
        assert_eq!(flow(6000, 9001, ANSWER).0, Some(at(INET6_HOST, 6000)));
        // And no new connection gets in.
        drop(listener);
        assert!(!tcp_in(&inet, &lan, 8080));
    });
}
