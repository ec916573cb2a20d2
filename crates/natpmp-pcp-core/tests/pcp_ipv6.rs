//! PCP over IPv6 (docs/protocol-choices.md "IPv6"): pinholes on the host's own address and
//! port, byte for byte; FILTERs and PEERs as filtered boxes; nonces, lifetimes and quota as for
//! IPv4; which datagrams are accepted at all (on-link, link-local, off-link, the external
//! side, PCP off); ANNOUNCE to ff02::1; and pinholes leaving with their prefix.

mod common;
use common::*;
use natpmp_pcp_core::gateway::interfaces::{IfAddr, Interfaces};
use natpmp_pcp_core::gateway::RestoredLeases;
use natpmp_pcp_core::kernel::RemoteRange;
use natpmp_pcp_core::{Element, EngineConfig, Protocol, Timestamp};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// The gateway's link-local address on the LAN, and a host's.
const GW_LL: &str = "fe80::1";
const HOST_LL: &str = "fe80::10";
/// A second LAN prefix (a delegated global /64) and a host in it.
const GW_GLOBAL: &str = "2001:db8:1::1";
const G6: &str = "2001:db8:1::10";
/// The internet side: a WAN /64 and remotes.
const GW_WAN6: &str = "2001:db8:ff::1";
const REMOTE6: &str = "2001:db8:ff::7";
const REMOTE_NET6: &str = "2001:db8:ff::";

/// The interfaces of `interfaces_with_v6`, plus the LAN addresses `extra` (each /64) and, when
/// `wan6`, `GW_WAN6`/64 on the external interface.
fn machine(extra: &[&str], wan6: bool) -> Interfaces {
    let mut m = interfaces_with_v6(Some(EXT));
    for a in extra {
        m.get_mut(LAN_IF)
            .unwrap()
            .addrs
            .push(IfAddr::v6(ip6(a), 64));
    }
    if wan6 {
        m.get_mut(WAN_IF)
            .unwrap()
            .addrs
            .push(IfAddr::v6(ip6(GW_WAN6), 64));
    }
    m
}

fn gw_with(extra: &[&str]) -> Gw {
    let mut gw = Gw::new();
    gw.set_interfaces(machine(extra, false));
    gw
}

fn sock6(addr: &str, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip6(addr), port, 0, 0)
}

fn pinhole(addr: &str, protocol: Protocol, port: u16) -> Element {
    Element::Pinhole {
        protocol,
        internal: sock6(addr, port),
    }
}

fn filtered_pinhole(
    addr: &str,
    protocol: Protocol,
    port: u16,
    first: &str,
    last: &str,
    ports: (u16, u16),
) -> Element {
    Element::FilteredPinhole {
        protocol,
        internal: sock6(addr, port),
        remote: RemoteRange {
            first_addr: ip6(first),
            last_addr: ip6(last),
            first_port: ports.0,
            last_port: ports.1,
        },
    }
}

/// A MAP from `client` for its own address (TCP, `NONCE`, no suggestion).
fn map6(client: &str, iport: u16, lifetime: u32) -> Vec<u8> {
    pcp_map_request_field(wire6(client), lifetime, NONCE, IP_TCP, iport, 0, ZERO6)
}

/// A FILTER option with an IPv6 remote prefix.
fn filter6(prefix_len: u8, remote_port: u16, remote: &str) -> Vec<u8> {
    let mut d = vec![0, prefix_len];
    d.extend(remote_port.to_be_bytes());
    d.extend(wire6(remote));
    pcp_option(OPT_FILTER, &d)
}

impl Gw {
    /// Send `request` from `client` (to `GW_LAN6`), require exactly `expected` back and that
    /// nothing changed.
    #[track_caller]
    fn refused6(&mut self, client: &str, request: &[u8], expected: &[u8]) {
        let before = self.state();
        let r = self.send6(client, 40000, request).expect("a reply");
        assert_bytes(&r, expected);
        assert!(self.changes.is_empty(), "{:?}", self.changes);
        assert_eq!(self.state(), before, "a refused request changed the state");
    }

    /// Send `request` from `client` (to `GW_LAN6`) and require a SUCCESS after which the kernel
    /// is exactly the engine's projection.
    #[track_caller]
    fn ok6(&mut self, client: &str, request: &[u8]) -> Vec<u8> {
        let r = self.send6(client, 40000, request).expect("a reply");
        assert_eq!(pcp_result(&r), PCP_SUCCESS, "{}", hex(&r));
        self.assert_kernel_exact();
        r
    }

    /// One datagram `source` -> `destination` on `ifindex`; the replies.
    fn one(&mut self, source: SocketAddr, destination: &str, ifindex: u32, p: &[u8]) -> usize {
        let dest = IpAddr::V6(ip6(destination));
        self.deliver(&[(source, dest, ifindex, p)]).len()
    }
}

fn src(addr: &str) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip6(addr)), 40000)
}

// ---------------------------------------------------------------------------------------------
// MAP: a pinhole on the host's own address and port.

#[test]
fn a_map_opens_one_pinhole_with_the_mapping_lifetime_plus_grace_as_its_timeout() {
    let mut gw = Gw::with_ipv6();
    let req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_UDP, 5060, 0, ZERO6);
    let r = gw.ok6(A6, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 5060, wire6(A6), &[]));
    assert_eq!(
        adds(&gw.changes),
        vec![(pinhole(A6, Protocol::Udp, 5060), secs(600) + GRACE)]
    );
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Udp, 5060)]);
}

#[test]
fn a_suggested_port_or_address_that_is_not_the_hosts_own_is_ignored() {
    // There is no NAT: the external endpoint is the host's own, whatever it suggests.
    let mut gw = Gw::with_ipv6();
    for (eport, suggested) in [(9000, ZERO6), (0, wire6(B6)), (8443, wire6(REMOTE6))] {
        let req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, eport, suggested);
        let r = gw.ok6(A6, &req);
        assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 8443, wire6(A6), &[]));
    }
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Tcp, 8443)]);
}

#[test]
fn prefer_failure_for_another_port_is_cannot_provide_external_for_1800_s() {
    // It will never be given, so the long lifetime; the host's own port under PREFER_FAILURE
    // is a plain success.
    let mut gw = Gw::with_ipv6();
    let mut req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 9000, ZERO6);
    req.extend(pcp_prefer_failure());
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 0, true);
    gw.refused6(A6, &req, &expected);

    let mut own = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 8443, ZERO6);
    own.extend(pcp_prefer_failure());
    let r = gw.ok6(A6, &own);
    assert_bytes(
        &r,
        &pcp_success_reply(&own, 600, 0, 8443, wire6(A6), &pcp_prefer_failure()),
    );
}

#[test]
fn lifetimes_are_clamped_as_for_ipv4() {
    // 120 s at least (RFC 6887 §15), 86400 s at most (§6 A10).
    let mut gw = Gw::with_ipv6();
    assert_eq!(pcp_lifetime(&gw.ok6(A6, &map6(A6, 8443, 10))), 120);
    assert_eq!(pcp_lifetime(&gw.ok6(A6, &map6(A6, 8443, 1_000_000))), 86400);
}

#[test]
fn a_renewal_keeps_the_pinhole_and_moves_its_kernel_timeout() {
    let mut gw = Gw::with_ipv6();
    gw.ok6(A6, &map6(A6, 8443, 600));
    gw.advance_secs(400);
    gw.ok6(A6, &map6(A6, 8443, 600));
    assert_eq!(
        gw.kernel_elements(),
        vec![(pinhole(A6, Protocol::Tcp, 8443), secs(600) + GRACE)]
    );
    // It outlives the first grant's end...
    gw.run_for(secs(300));
    assert_eq!(gw.elements().len(), 1);
    // ...and goes when the renewed lifetime ends.
    gw.run_for(secs(301));
    assert!(gw.elements().is_empty(), "{:?}", gw.elements());
    assert!(gw.mappings().is_empty());
}

#[test]
fn another_nonce_can_neither_renew_nor_delete_a_pinhole() {
    // RFC 6887 §11.2: NOT_AUTHORIZED, its lifetime what is left of the mapping.
    let mut gw = Gw::with_ipv6();
    gw.ok6(A6, &map6(A6, 8443, 600));
    gw.advance_secs(100);
    for lifetime in [600, 0] {
        let req = pcp_map_request_field(wire6(A6), lifetime, NONCE2, IP_TCP, 8443, 0, ZERO6);
        let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 500, 100, true);
        gw.refused6(A6, &req, &expected);
    }
}

#[test]
fn a_delete_with_the_nonce_removes_the_pinhole() {
    let mut gw = Gw::with_ipv6();
    gw.ok6(A6, &map6(A6, 8443, 600));
    gw.ok6(A6, &map6(A6, 8444, 600));
    let del = map6(A6, 8443, 0);
    let r = gw.ok6(A6, &del);
    assert_bytes(&r, &pcp_delete_reply(&del, 0));
    assert_eq!(removes(&gw.changes), vec![pinhole(A6, Protocol::Tcp, 8443)]);
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Tcp, 8444)]);
}

#[test]
fn pinholes_take_no_external_port_from_the_ipv4_range() {
    // The one port of the range is A's (IPv4); IPv6 hosts still get their pinholes on the same
    // port number, and each host's pinhole is its own.
    let mut gw = Gw::small_range(2000, 2000);
    gw.set_interfaces(machine(&[GW_GLOBAL], false));
    assert_eq!(pcp_eport(&gw.pcp_ok(A, &tcp_map(A, 2000, 600))), 2000);
    gw.ok6(A6, &map6(A6, 2000, 600));
    gw.ok6(
        B6,
        &pcp_map_request_field(wire6(B6), 600, NONCE, IP_TCP, 2000, 0, ZERO6),
    );
    gw.ok6(G6, &map6(G6, 2000, 600));
    let mut v6: Vec<Element> = gw.elements().into_iter().filter(|e| e.is_ipv6()).collect();
    v6.sort();
    let mut want = vec![
        pinhole(A6, Protocol::Tcp, 2000),
        pinhole(B6, Protocol::Tcp, 2000),
        pinhole(G6, Protocol::Tcp, 2000),
    ];
    want.sort();
    assert_eq!(v6, want);
}

#[test]
fn the_per_client_quota_counts_an_ipv6_hosts_pinholes() {
    let mut gw = Gw::with_engine(EngineConfig {
        max_mappings_per_client: 2,
        ..EngineConfig::default()
    });
    gw.set_interfaces(interfaces_with_v6(Some(EXT)));
    gw.ok6(A6, &map6(A6, 1001, 600));
    gw.ok6(A6, &map6(A6, 1002, 600));
    let third = map6(A6, 1003, 600);
    let expected = pcp_error_reply(&third, PCP_USER_EX_QUOTA, 30, 0, true);
    gw.refused6(A6, &third, &expected);
    // Another host has its own quota.
    gw.ok6(
        B6,
        &pcp_map_request_field(wire6(B6), 600, NONCE, IP_TCP, 1003, 0, ZERO6),
    );
}

// ---------------------------------------------------------------------------------------------
// FILTER and PEER: filtered boxes.

#[test]
fn filters_of_every_prefix_length_become_the_boxes_they_name() {
    // /16 on one port, /64 a subnet on every port (remote port 0), /128 one host on one port.
    // (/0 clears the filters: below.)
    let all = "2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let cases: [(u8, u16, &str, Element); 3] = [
        (
            16,
            443,
            "2001::",
            filtered_pinhole(A6, Protocol::Tcp, 8443, "2001::", all, (443, 443)),
        ),
        (
            64,
            0,
            REMOTE_NET6,
            filtered_pinhole(
                A6,
                Protocol::Tcp,
                8443,
                REMOTE_NET6,
                "2001:db8:ff::ffff:ffff:ffff:ffff",
                (0, 65535),
            ),
        ),
        (
            128,
            443,
            REMOTE6,
            filtered_pinhole(A6, Protocol::Tcp, 8443, REMOTE6, REMOTE6, (443, 443)),
        ),
    ];
    for (len, port, remote, element) in cases {
        let mut gw = Gw::with_ipv6();
        let mut req = map6(A6, 8443, 600);
        req.extend(filter6(len, port, remote));
        let r = gw.ok6(A6, &req);
        // A FILTER is echoed in the response (RFC 6887 §13.3).
        assert_bytes(
            &r,
            &pcp_success_reply(&req, 600, 0, 8443, wire6(A6), &filter6(len, port, remote)),
        );
        assert_eq!(gw.elements(), vec![element], "FILTER /{len}");
    }
}

#[test]
fn filters_add_up_to_disjoint_boxes_until_a_prefix_length_0_clears_them() {
    // A renewal's FILTER is added to those the mapping has (RFC 6887 §13.3). /16 on port 443
    // and the /64 inside it on every port overlap on port 443, and the kernel's interval set
    // refuses overlaps: three disjoint boxes cover exactly the union.
    let mut gw = Gw::with_ipv6();
    let mut first = map6(A6, 8443, 600);
    first.extend(filter6(16, 443, "2001::"));
    gw.ok6(A6, &first);
    let mut second = map6(A6, 8443, 600);
    second.extend(filter6(64, 0, REMOTE_NET6));
    gw.ok6(A6, &second);
    assert_eq!(gw.mappings()[0].filters.len(), 2);
    let net_last = "2001:db8:ff::ffff:ffff:ffff:ffff";
    let mut want = vec![
        filtered_pinhole(
            A6,
            Protocol::Tcp,
            8443,
            "2001::",
            "2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            (443, 443),
        ),
        filtered_pinhole(A6, Protocol::Tcp, 8443, REMOTE_NET6, net_last, (0, 442)),
        filtered_pinhole(A6, Protocol::Tcp, 8443, REMOTE_NET6, net_last, (444, 65535)),
    ];
    want.sort();
    let mut got = gw.elements();
    got.sort();
    assert_eq!(got, want);
    // RFC 6887 §13.3: a FILTER of prefix length 0 removes every filter (its port and address
    // are ignored, docs/protocol-choices.md), which opens the pinhole to everyone.
    let mut clear = map6(A6, 8443, 600);
    clear.extend(filter6(0, 443, REMOTE6));
    gw.ok6(A6, &clear);
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Tcp, 8443)]);
    assert!(gw.mappings()[0].filters.is_empty());
}

#[test]
fn a_host_inside_a_filtered_subnet_is_one_box_with_the_subnet() {
    // Nested filters collapse to the outer one (the kernel refuses overlapping intervals).
    let mut gw = Gw::with_ipv6();
    let mut req = map6(A6, 8443, 600);
    req.extend(filter6(64, 0, REMOTE_NET6));
    req.extend(filter6(128, 443, REMOTE6));
    gw.ok6(A6, &req);
    assert_eq!(
        gw.elements(),
        vec![filtered_pinhole(
            A6,
            Protocol::Tcp,
            8443,
            REMOTE_NET6,
            "2001:db8:ff::ffff:ffff:ffff:ffff",
            (0, 65535)
        )]
    );
}

#[test]
fn a_peer_opens_the_pinhole_for_that_one_remote() {
    let mut gw = Gw::with_ipv6();
    let req = pcp_peer_request_field(
        wire6(A6),
        600,
        NONCE,
        IP_UDP,
        5000,
        0,
        ZERO6,
        4000,
        wire6(REMOTE6),
    );
    let r = gw.ok6(A6, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 5000, wire6(A6), &[]));
    assert_eq!(
        gw.elements(),
        vec![filtered_pinhole(
            A6,
            Protocol::Udp,
            5000,
            REMOTE6,
            REMOTE6,
            (4000, 4000)
        )]
    );
    // A MAP of the same endpoint opens it to everyone; deleting the MAP leaves the PEER's box.
    gw.ok6(
        A6,
        &pcp_map_request_field(wire6(A6), 600, NONCE, IP_UDP, 5000, 0, ZERO6),
    );
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Udp, 5000)]);
    gw.ok6(
        A6,
        &pcp_map_request_field(wire6(A6), 0, NONCE, IP_UDP, 5000, 0, ZERO6),
    );
    assert_eq!(gw.elements().len(), 1);
    assert!(matches!(gw.elements()[0], Element::FilteredPinhole { .. }));
}

#[test]
fn a_peer_suggesting_another_port_is_cannot_provide_external() {
    // RFC 6887 §12.3: a PEER cannot be given the endpoint it suggests.
    let mut gw = Gw::with_ipv6();
    let req = pcp_peer_request_field(
        wire6(A6),
        600,
        NONCE,
        IP_UDP,
        5000,
        6000,
        ZERO6,
        4000,
        wire6(REMOTE6),
    );
    let before = gw.state();
    let r = gw.send6(A6, 40000, &req).unwrap();
    assert_eq!(pcp_result(&r), PCP_CANNOT_PROVIDE_EXTERNAL, "{}", hex(&r));
    assert_eq!(gw.state(), before);
}

#[test]
fn a_peer_to_an_ipv4_remote_or_to_multicast_is_malformed() {
    let mut gw = Gw::with_ipv6();
    for remote in [mapped(EXT2), wire6("ff02::1"), wire6("::1"), ZERO6] {
        let req =
            pcp_peer_request_field(wire6(A6), 600, NONCE, IP_UDP, 5000, 0, ZERO6, 4000, remote);
        let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, 0, false);
        gw.refused6(A6, &req, &expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Which datagrams are answered.

#[test]
fn a_link_local_host_is_answered_but_gets_no_pinhole() {
    // It cannot be reached from the internet: MAP and PEER get NOT_AUTHORIZED, long-lived;
    // a delete is a SUCCESS (nothing exists). The reply goes back from the gateway's
    // link-local address.
    let mut gw = gw_with(&[GW_LL]);
    let source = src(HOST_LL);
    let map = pcp_map_request_field(wire6(HOST_LL), 600, NONCE, IP_TCP, 8443, 0, ZERO6);
    let peer = pcp_peer_request_field(
        wire6(HOST_LL),
        600,
        NONCE,
        IP_UDP,
        5000,
        0,
        ZERO6,
        4000,
        wire6(REMOTE6),
    );
    let before = gw.state();
    for req in [&map, &peer] {
        let out = gw.deliver(&[(source, IpAddr::V6(ip6(GW_LL)), LAN_INDEX, req)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].to, out[0].from, out[0].ifindex),
            (source, IpAddr::V6(ip6(GW_LL)), LAN_INDEX)
        );
        assert_bytes(
            &out[0].payload,
            &pcp_error_reply(req, PCP_NOT_AUTHORIZED, 1800, 0, true),
        );
    }
    let del = pcp_map_request_field(wire6(HOST_LL), 0, NONCE, IP_TCP, 8443, 0, ZERO6);
    let out = gw.deliver(&[(source, IpAddr::V6(ip6(GW_LL)), LAN_INDEX, &del)]);
    assert_bytes(&out[0].payload, &pcp_delete_reply(&del, 0));
    assert_eq!(gw.state(), before);
}

#[test]
fn a_link_local_source_is_dropped_when_the_interface_has_no_link_local_address() {
    // Only the interface's own ranges are on-link; here it has fd00:88::/64 only.
    let mut gw = Gw::with_ipv6();
    let n = gw.one(src(HOST_LL), GW_LAN6, LAN_INDEX, &map6(HOST_LL, 8443, 600));
    assert_eq!(n, 0);
}

#[test]
fn off_link_sources_wrong_destinations_and_the_external_side_are_not_answered() {
    let mut gw = Gw::new();
    gw.set_interfaces(machine(&[GW_LL], true));
    let before = gw.state();
    let cases: [(&str, &str, u32); 5] = [
        // From an address no internal interface has on-link.
        ("2001:db8:9::1", GW_LAN6, LAN_INDEX),
        // On-link, but to all nodes rather than to the gateway.
        (A6, "ff02::1", LAN_INDEX),
        // On-link, but to the gateway's WAN address.
        (A6, GW_WAN6, LAN_INDEX),
        // From the internet side, to the gateway's WAN address.
        (REMOTE6, GW_WAN6, WAN_INDEX),
        // From the internet side, claiming a LAN address.
        (A6, GW_LAN6, WAN_INDEX),
    ];
    for (from, to, ifindex) in cases {
        let req = map6(from, 8443, 600);
        assert_eq!(
            gw.one(src(from), to, ifindex, &req),
            0,
            "{from} -> {to} on {ifindex} was answered"
        );
    }
    assert_eq!(gw.state(), before);
    assert!(gw.mappings().is_empty());
}

#[test]
fn with_pcp_off_nothing_is_answered_over_ipv6() {
    // NAT-PMP is IPv4-only: no PCP, no NAT-PMP, no UNSUPP_VERSION over IPv6.
    let mut gw = Gw::natpmp_only();
    gw.set_interfaces(interfaces_with_v6(Some(EXT)));
    let m = map_request(TCP, 8080, 8080, 600);
    for req in [
        &map6(A6, 8443, 600)[..],
        &addr_request()[..],
        &m[..],
        &[3, 0][..],
    ] {
        assert_eq!(gw.send6(A6, 40000, req), None, "{}", hex(req));
    }
    assert!(gw.mappings().is_empty());
    // IPv4 is still served.
    assert_eq!(gw.reply(A, &addr_request())[3], 0);
}

// ---------------------------------------------------------------------------------------------
// ANNOUNCE on the IPv6 link.

/// The start-up announcements `gw` sends in its first 70 s, split into IPv6 and the rest.
fn startup_train(gw: &mut Gw) -> (Vec<Outgoing6>, usize) {
    let sent = gw.run_for(secs(70));
    let v6: Vec<Outgoing6> = sent
        .iter()
        .filter(|o| o.to.is_ipv6())
        .map(|o| (o.to, o.from, o.ifindex, o.payload.clone()))
        .collect();
    let pcp_v4 = pcp_announcements(&sent).len();
    (v6, pcp_v4)
}

type Outgoing6 = (SocketAddr, IpAddr, u32, Vec<u8>);

fn all_nodes() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ip6("ff02::1"), 5350, 0, 0))
}

#[test]
fn announce_goes_to_all_nodes_from_the_link_local_address_with_every_ipv4_one() {
    let mut gw = gw_with(&[GW_LL]);
    let (v6, pcp_v4) = startup_train(&mut gw);
    assert!(pcp_v4 >= 2, "the train has several announcements");
    assert_eq!(v6.len(), pcp_v4, "one IPv6 ANNOUNCE beside each IPv4 one");
    for (to, from, ifindex, payload) in &v6 {
        assert_eq!(
            (*to, *from, *ifindex),
            (all_nodes(), IpAddr::V6(ip6(GW_LL)), LAN_INDEX)
        );
        // PCP only: NAT-PMP is not spoken over IPv6.
        assert_eq!((payload.len(), payload[0], payload[1]), (24, 2, 0x80));
    }
    assert_bytes(&v6[0].3, &pcp_announce(0));
}

#[test]
fn without_a_link_local_address_the_announce_leaves_from_the_first_ipv6_address() {
    let mut gw = Gw::with_ipv6();
    let (v6, _) = startup_train(&mut gw);
    assert!(!v6.is_empty());
    assert!(v6
        .iter()
        .all(|o| (o.0, o.1) == (all_nodes(), IpAddr::V6(ip6(GW_LAN6)))));
}

#[test]
fn no_ipv6_announce_with_pcp_off_or_without_an_ipv6_address() {
    let mut off = Gw::natpmp_only();
    off.set_interfaces(machine(&[GW_LL], false));
    assert!(startup_train(&mut off).0.is_empty());
    let mut v4_only = Gw::new();
    let (v6, pcp_v4) = startup_train(&mut v4_only);
    assert!(v6.is_empty());
    assert!(pcp_v4 > 0);
}

// ---------------------------------------------------------------------------------------------
// Prefixes that come and go.

#[test]
fn a_vanished_prefix_takes_its_hosts_pinholes_and_nothing_else() {
    let mut gw = gw_with(&[GW_GLOBAL]);
    gw.pcp_ok(A, &tcp_map(A, 8080, 600));
    gw.ok6(A6, &map6(A6, 8443, 600));
    gw.ok6(G6, &map6(G6, 8443, 600));
    // Let the lease file catch up, so what is saved next is saved because of the prefix.
    gw.run_for(secs(10));
    gw.leases.clear();
    // The delegated prefix 2001:db8:1::/64 goes; fd00:88::/64 stays.
    gw.set_interfaces(interfaces_with_v6(Some(EXT)));
    assert_eq!(removes(&gw.changes), vec![pinhole(G6, Protocol::Tcp, 8443)]);
    assert!(gw.elements().contains(&pinhole(A6, Protocol::Tcp, 8443)));
    assert_eq!(gw.elements().iter().filter(|e| !e.is_ipv6()).count(), 2);
    assert!(gw
        .mappings()
        .iter()
        .all(|v| v.client != IpAddr::V6(ip6(G6))));
    gw.assert_kernel_matches_engine();
    gw.run_for(secs(10));
    let saved = gw.leases.last().expect("the lease file is rewritten");
    let clients: Vec<IpAddr> = saved.records.iter().map(|r| r.client).collect();
    assert!(clients.contains(&IpAddr::V6(ip6(A6))) && !clients.contains(&IpAddr::V6(ip6(G6))));
}

#[test]
fn pinholes_restored_before_their_prefix_arrives_are_kept_until_it_vanishes() {
    // At start-up the addresses may not be there yet (DHCPv6-PD, DAD): a prefix counts as gone
    // only once it was seen.
    let mut before = Gw::with_ipv6();
    before.ok6(A6, &map6(A6, 8443, 3600));
    let snapshot = before.gateway.shutdown(before.now, true);
    let restart = Timestamp::from_secs(5);
    let (mut gw, _) = Gw::started(
        gateway_config(EngineConfig::default()),
        restart,
        Some(EXT),
        Some(RestoredLeases {
            external_addr: Some(EXT),
            epoch_seconds: snapshot.epoch_seconds,
            records: snapshot.records,
            clean: true,
        }),
    );
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Tcp, 8443)]);
    gw.set_interfaces(interfaces_with_v6(Some(EXT)));
    assert_eq!(gw.elements(), vec![pinhole(A6, Protocol::Tcp, 8443)]);
    gw.set_interfaces(interfaces(Some(EXT)));
    assert!(gw.elements().is_empty(), "{:?}", gw.elements());
    assert!(gw.mappings().is_empty());
}

#[test]
fn an_ipv6_address_field_from_an_ipv4_client_is_address_mismatch() {
    // §3.2 step 8 the other way round.
    let mut gw = Gw::with_ipv6();
    let req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 0, ZERO6);
    let expected = pcp_error_reply(&req, PCP_ADDRESS_MISMATCH, 1800, 0, false);
    gw.assert_refused(A, &req, &expected);
}
