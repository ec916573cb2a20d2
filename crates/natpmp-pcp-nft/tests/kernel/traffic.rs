//! Tests against the real kernel with real IPv4 packets: conntrack clearing, and traffic
//! through the plain, filtered and hairpin paths (IPv6 is in `ipv6.rs`, the firewall contract
//! in `contract.rs`). Root only, each test in namespaces of its own, as in `kernel.rs`: the
//! test thread is the gateway, `Host`s are other namespaces on veth pairs.

use natpmp_pcp_core::kernel::{
    removed_for_good, Change, Element, Forwarder, RemoteRange, TableSpec,
};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::{ConntrackEntry, NftForwarder};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use crate::support::elements::{add, filtered, inbound, mapping, outbound, remotes, WAN};
use crate::support::lab::{udp_round_trip, ANSWER, NO_ANSWER};
use crate::support::netns::{gateway_with_hosts, in_netns, run};

const EXT: &str = "wan0";
const INET_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

fn ready() -> NftForwarder {
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(&TableSpec::new(EXT)).expect("prepare");
    f
}

/// Whether conntrack has an entry for UDP flows with `port` as either original port.
fn conntrack_has(f: &mut NftForwarder, port: u16) -> bool {
    f.conntrack_entries()
        .unwrap()
        .iter()
        .any(|e: &ConntrackEntry| e.orig.sport == port || e.orig.dport == port)
}

const ANY: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

fn from(addr: Ipv4Addr, port: u16) -> SocketAddr {
    (addr, port).into()
}

#[test]
fn clear_flows_ends_the_flows_of_removed_elements_and_apply_does_not() {
    in_netns(|| {
        run("ip", &["link", "set", "lo", "up"]);
        // Our nat chains make the kernel track connections in this namespace.
        let mut f = ready();
        let lo = Ipv4Addr::LOCALHOST;
        // Over lo nothing is translated, so a flow "belongs" to elements whose internal and
        // external ports are equal: outbound from 127.0.0.1:40000, inbound to 127.0.0.1:40001,
        // and an unrelated flow that must survive.
        let out_el = Element::Outbound {
            internal: SocketAddrV4::new(lo, 40000),
            protocol: Protocol::Udp,
            external: SocketAddrV4::new(lo, 40000),
        };
        let in_el = Element::Inbound {
            protocol: Protocol::Udp,
            external_port: 40001,
            internal: SocketAddrV4::new(lo, 40001),
        };
        f.apply(&[add(out_el, 600), add(in_el, 600)]).unwrap();

        let client = UdpSocket::bind((lo, 40000)).unwrap();
        client.send_to(b"x", (lo, 9)).unwrap();
        let server = UdpSocket::bind((lo, 40001)).unwrap();
        let remote = UdpSocket::bind((lo, 0)).unwrap();
        remote.send_to(b"y", (lo, 40001)).unwrap();
        let mut buf = [0u8; 8];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"z", from).unwrap();
        let bystander = UdpSocket::bind((lo, 40002)).unwrap();
        bystander.send_to(b"w", (lo, 9)).unwrap();

        assert!(
            conntrack_has(&mut f, 40000),
            "no entry for the outbound flow"
        );
        assert!(
            conntrack_has(&mut f, 40001),
            "no entry for the inbound flow"
        );
        assert!(conntrack_has(&mut f, 40002));

        // A renewal removes nothing for good.
        let renewal = [Change::Remove(out_el), add(out_el, 600)];
        f.apply(&renewal).unwrap();
        assert_eq!(removed_for_good(&renewal), vec![]);

        let removal = [Change::Remove(out_el), Change::Remove(in_el)];
        f.apply(&removal).unwrap();
        // `apply` leaves conntrack alone...
        assert!(conntrack_has(&mut f, 40000), "apply ended a flow");
        // ... `clear_flows` ends the flows, and only those.
        f.clear_flows(&removed_for_good(&removal));
        f.wait_for_flow_clearing();
        assert!(!conntrack_has(&mut f, 40000), "outbound flow survived");
        assert!(!conntrack_has(&mut f, 40001), "inbound flow survived");
        assert!(
            conntrack_has(&mut f, 40002),
            "an unrelated flow was deleted"
        );
    });
}

#[test]
fn conntrack_dump_works_in_a_fresh_namespace() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        assert_eq!(f.conntrack_entries().unwrap(), vec![]);
        assert_eq!(
            f.clear_conntrack(&[inbound(Protocol::Tcp, 1, 2, 3)])
                .unwrap(),
            0
        );
        // Failures are logged, not returned; nothing to clear is no failure.
        f.clear_flows(&[outbound(Protocol::Udp, 2, 3, 4)]);
        f.wait_for_flow_clearing();
    });
}

/// The whole path: a LAN host reaches its own mapped port through the external address (and
/// sees the answer come from that address), the internet's source address is kept, and with
/// hairpin off nothing is translated for the LAN.
#[test]
fn hairpin_traffic_reaches_the_mapped_host() {
    in_netns(|| {
        // This thread's namespace is the gateway; two hosts hang off it on veth pairs.
        let (lan, inet) = gateway_with_hosts(EXT);

        let mut f = ready();
        f.apply(&mapping(Protocol::Udp, 8080, 2, 80, 600)).unwrap();
        f.set_hairpin(Some(WAN), &[(Ipv4Addr::new(192, 168, 88, 1), 24)])
            .unwrap();

        // From the internet: forwarded, source kept (not in lan_nets, so no masquerade).
        let (seen, answer) = udp_round_trip(&inet, ANY, &lan, 80, (WAN, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(INET_HOST.into()));
        assert_eq!(answer, Some((WAN, 8080).into()));

        // Hairpin to itself: the server sees the gateway's LAN address (masquerade), so its
        // answer goes back through the gateway and arrives from the external address.
        let (seen, answer) = udp_round_trip(&lan, ANY, &lan, 80, (WAN, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some("192.168.88.1".parse().unwrap()));
        assert_eq!(answer, Some((WAN, 8080).into()));

        // Hairpin off: the datagram is for the gateway itself, where nothing listens.
        f.set_hairpin(None, &[]).unwrap();
        let (seen, _) = udp_round_trip(&lan, ANY, &lan, 80, (WAN, 8080), NO_ANSWER);
        assert_eq!(seen, None);
    });
}

/// (b) A filtered mapping: a remote inside its box reaches the internal host, a remote
/// outside it reaches nothing, and the plain map still serves other ports, from outside and
/// through the hairpin.
#[test]
fn filtered_traffic_reaches_only_remotes_in_the_box() {
    in_netns(|| {
        let (lan, inet) = gateway_with_hosts(EXT);
        // A second internet host, outside the box: another address on the same link.
        let other = Ipv4Addr::new(203, 0, 113, 10);
        inet.run(move || run("ip", &["addr", "add", "203.0.113.10/24", "dev", "eth0"]));

        let mut f = ready();
        let only_inet_host = remotes([203, 0, 113, 9], [203, 0, 113, 9], (0, 65535));
        let lan_box = remotes([192, 168, 88, 0], [192, 168, 88, 255], (0, 65535));
        f.apply(&[
            add(filtered(Protocol::Udp, 8080, only_inet_host, 2, 80), 600),
            add(filtered(Protocol::Udp, 8080, lan_box, 2, 80), 600),
            add(outbound(Protocol::Udp, 2, 80, 8080), 600),
            add(inbound(Protocol::Udp, 8081, 2, 81), 600),
        ])
        .unwrap();
        f.set_hairpin(Some(WAN), &[(Ipv4Addr::new(192, 168, 88, 1), 24)])
            .unwrap();

        // Inside the box: forwarded, source kept, answered from the mapped port.
        let (seen, answer) =
            udp_round_trip(&inet, from(INET_HOST, 0), &lan, 80, (WAN, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(INET_HOST.into()));
        assert_eq!(answer, Some((WAN, 8080).into()));

        // Outside it: the datagram misses both maps and is for the gateway, which has nothing
        // on that port.
        let (seen, answer) =
            udp_round_trip(&inet, from(other, 0), &lan, 80, (WAN, 8080), NO_ANSWER);
        assert_eq!((seen, answer), (None, None));

        // The plain map, after the filtered one, still serves anyone.
        let (seen, answer) = udp_round_trip(&inet, from(other, 0), &lan, 81, (WAN, 8081), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(other.into()));
        assert_eq!(answer, Some((WAN, 8081).into()));

        // Hairpin through the filtered map: the LAN is in a box of its own.
        let (seen, answer) = udp_round_trip(&lan, ANY, &lan, 80, (WAN, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some("192.168.88.1".parse().unwrap()));
        assert_eq!(answer, Some((WAN, 8080).into()));

        // Without the LAN's box, the hairpin misses too.
        f.apply(&[Change::Remove(filtered(
            Protocol::Udp,
            8080,
            lan_box,
            2,
            80,
        ))])
        .unwrap();
        let (seen, _) = udp_round_trip(&lan, ANY, &lan, 80, (WAN, 8080), NO_ANSWER);
        assert_eq!(seen, None);
    });
}

/// (d) Clearing a box's flows ends the flows of remotes inside it and no others, even to the
/// same internal host and external port.
#[test]
fn clear_flows_of_a_filtered_element_ends_only_its_box() {
    in_netns(|| {
        let (lan, inet) = gateway_with_hosts(EXT);
        let mut f = ready();
        let box_a = RemoteRange::single(INET_HOST, 5000);
        let box_b = RemoteRange::single(INET_HOST, 6000);
        let a = filtered(Protocol::Udp, 8080, box_a, 2, 80);
        let b = filtered(Protocol::Udp, 8080, box_b, 2, 80);
        let plain = inbound(Protocol::Udp, 8081, 2, 81);
        f.apply(&[add(a, 600), add(b, 600), add(plain, 600)])
            .unwrap();

        for (port, server, to) in [(5000, 80, 8080), (6000, 80, 8080), (7000, 81, 8081)] {
            let (seen, answer) = udp_round_trip(
                &inet,
                from(INET_HOST, port),
                &lan,
                server,
                (WAN, to),
                ANSWER,
            );
            assert_eq!(seen, Some((INET_HOST, port).into()), "from port {port}");
            assert_eq!(answer, Some((WAN, to).into()), "from port {port}");
        }
        let from = |f: &mut NftForwarder, port: u16| {
            f.conntrack_entries()
                .unwrap()
                .iter()
                .any(|e| e.orig.src == IpAddr::from(INET_HOST) && e.orig.sport == port)
        };
        assert!(from(&mut f, 5000) && from(&mut f, 6000) && from(&mut f, 7000));

        let removal = [Change::Remove(a)];
        f.apply(&removal).unwrap();
        assert!(from(&mut f, 5000), "apply ended a flow");
        assert_eq!(f.clear_conntrack(&removed_for_good(&removal)).unwrap(), 1);
        assert!(!from(&mut f, 5000), "the box's flow survived");
        assert!(from(&mut f, 6000), "another box's flow was ended");
        assert!(from(&mut f, 7000), "a plain mapping's flow was ended");
    });
}
