//! FILTER (RFC 6887 §13.3, rfc-checklist §3.4; §4 case 39) through the gateway, and what the
//! fake kernel holds for it: a FILTERed MAP is `inbound_filtered` boxes (no open `inbound`),
//! filters add up, prefix length 0 clears, prefix lengths and families are checked, the limit
//! is EXCESSIVE_REMOTE_PEERS, and one endpoint's filters and peers are cut into disjoint
//! boxes carrying the latest expiry of what they cover.

mod common;
use common::*;
use natpmp_pcp_core::kernel::RemoteRange;
use natpmp_pcp_core::{Element, EngineConfig};
use std::net::Ipv4Addr;
use std::time::Duration;

const NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
const NET_LAST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 255);
const HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// A's TCP 8080 MAP (suggesting 8080, nonce `NONCE`) with `options`.
fn map_with(lifetime: u32, options: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pcp_map_request(A, lifetime, NONCE, IP_TCP, 8080, 8080, ZERO4);
    for o in options {
        b.extend_from_slice(o);
    }
    b
}

/// The kernel's elements, sorted, with timeouts.
fn kernel(gw: &Gw) -> Vec<(Element, Duration)> {
    let mut k = gw.kernel_elements();
    k.sort();
    k
}

fn sorted(mut v: Vec<Element>) -> Vec<Element> {
    v.sort();
    v
}

#[track_caller]
fn assert_disjoint(gw: &Gw) {
    let boxes: Vec<(u16, RemoteRange)> = gw
        .elements()
        .into_iter()
        .filter_map(|e| match e {
            Element::FilteredInbound {
                external_port,
                remote,
                ..
            } => Some((external_port, remote)),
            _ => None,
        })
        .collect();
    for (i, (p, a)) in boxes.iter().enumerate() {
        for (q, b) in &boxes[i + 1..] {
            assert!(p != q || !a.overlaps(b), "{a} overlaps {b}");
        }
    }
}

#[test]
fn a_filtered_map_is_a_box_and_no_open_inbound() {
    // A FILTER 198.51.100.0/24 (prefix 96 + 24), any port: the outbound rewrite and one box,
    // each timing out 2 s after the mapping; the FILTER is echoed.
    let mut gw = Gw::new();
    let f = pcp_filter(120, 0, NET);
    let req = map_with(600, std::slice::from_ref(&f));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 8080, mapped(EXT), &f));
    let want = sorted(vec![
        outbound(TCP, EXT, 8080, A, 8080),
        filtered(TCP, 8080, remotes(NET, NET_LAST, 0, 65535), A, 8080),
    ]);
    assert_eq!(
        kernel(&gw),
        want.iter().map(|e| (*e, secs(602))).collect::<Vec<_>>()
    );
    assert_eq!(
        gw.mapping(A, TCP, 8080).unwrap().filters,
        vec!["198.51.100.0/24".to_owned()]
    );
}

#[test]
fn a_map_without_filter_admits_everyone() {
    // §3.5: endpoint-independent filtering unless FILTER is used: one open `inbound`.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[]));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
}

#[test]
fn a_filter_for_one_remote_port_is_a_box_of_that_port() {
    // Prefix 128: one address; remote port 443: that port only.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[pcp_filter(128, 443, HOST)]));
    assert_eq!(
        gw.elements(),
        sorted(vec![
            outbound(TCP, EXT, 8080, A, 8080),
            filtered(TCP, 8080, remotes(HOST, HOST, 443, 443), A, 8080),
        ])
    );
}

#[test]
fn a_filters_host_bits_are_ignored_and_it_is_echoed_as_sent() {
    let mut gw = Gw::new();
    let f = pcp_filter(120, 0, HOST);
    let req = map_with(600, std::slice::from_ref(&f));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 8080, mapped(EXT), &f));
    assert!(gw.elements().contains(&filtered(
        TCP,
        8080,
        remotes(NET, NET_LAST, 0, 65535),
        A,
        8080
    )));
}

#[test]
fn filters_are_added_to_those_the_mapping_has() {
    // §3.4: new filters are added; a renewal without FILTER keeps them (and echoes none).
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[pcp_filter(128, 443, HOST)]));
    let f2 = pcp_filter(128, 0, OTHER);
    let req = map_with(600, std::slice::from_ref(&f2));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 8080, mapped(EXT), &f2));
    let both = sorted(vec![
        outbound(TCP, EXT, 8080, A, 8080),
        filtered(TCP, 8080, remotes(HOST, HOST, 443, 443), A, 8080),
        filtered(TCP, 8080, remotes(OTHER, OTHER, 0, 65535), A, 8080),
    ]);
    assert_eq!(gw.elements(), both);
    gw.advance_secs(10);
    let req = map_with(600, &[]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 10, 8080, mapped(EXT), &[]),
    );
    assert_eq!(gw.elements(), both);
    assert_eq!(gw.mapping(A, TCP, 8080).unwrap().filters.len(), 2);
}

#[test]
fn prefix_length_0_clears_the_filters() {
    // §3.4: prefix length 0 removes all filters (its address and port are ignored); the
    // mapping is open again. It is processed, so echoed. In one request, a clear followed by
    // a FILTER leaves that FILTER; a FILTER followed by a clear leaves none.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[pcp_filter(128, 443, HOST)]));
    let clear = pcp_filter(0, 99, Ipv4Addr::new(1, 2, 3, 4));
    let req = map_with(600, std::slice::from_ref(&clear));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, 8080, mapped(EXT), &clear),
    );
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
    let f = pcp_filter(128, 0, OTHER);
    gw.pcp_ok(
        A,
        &map_with(600, &[pcp_filter(128, 443, HOST), clear.clone(), f]),
    );
    assert_eq!(
        gw.elements(),
        sorted(vec![
            outbound(TCP, EXT, 8080, A, 8080),
            filtered(TCP, 8080, remotes(OTHER, OTHER, 0, 65535), A, 8080),
        ])
    );
    gw.pcp_ok(A, &map_with(600, &[pcp_filter(128, 443, HOST), clear]));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
    assert!(gw.mapping(A, TCP, 8080).unwrap().filters.is_empty());
}

#[test]
fn a_filter_prefix_length_outside_96_to_128_for_an_ipv4_remote_is_malformed_option() {
    // §4 case 39: 95 with an IPv4-mapped remote; also 1, 64, 129, 255.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[]));
    for len in [95u8, 1, 64, 129, 255] {
        let req = map_with(600, &[pcp_filter(len, 0, NET)]);
        let expected = pcp_error_reply(&req, PCP_MALFORMED_OPTION, 1800, 0, false);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn a_filter_with_a_remote_of_the_other_family_is_malformed_option() {
    // The doc: an IPv6 remote for an IPv4 client.
    let mut gw = Gw::new();
    let mut data = vec![0, 64, 0, 0];
    data.extend(wire6("2001:db8::"));
    let req = map_with(600, &[pcp_option(OPT_FILTER, &data)]);
    let expected = pcp_error_reply(&req, PCP_MALFORMED_OPTION, 1800, 0, false);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn an_ipv6_clients_filters_take_prefix_lengths_0_to_128() {
    // IPv6 remotes for an IPv6 client: 0–128 (here 32 and 128); 129 or an IPv4-mapped remote
    // is MALFORMED_OPTION.
    let mut gw = Gw::with_ipv6();
    let filter6 = |len: u8, addr: [u8; 16]| {
        let mut d = vec![0, len, 0, 0];
        d.extend(addr);
        pcp_option(OPT_FILTER, &d)
    };
    let f = filter6(32, wire6("2001:db8::"));
    let mut req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 0, ZERO6);
    req.extend(&f);
    req.extend(filter6(128, wire6("2001:db8::7")));
    let r = gw.send6(A6, 40000, &req).unwrap();
    assert_eq!(pcp_result(&r), PCP_SUCCESS, "{}", hex(&r));
    assert_eq!(gw.mappings()[0].filters.len(), 2);
    for bad in [filter6(129, wire6("2001:db8::")), filter6(120, mapped(NET))] {
        let mut req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 0, ZERO6);
        req.extend(&bad);
        let before = gw.state();
        let r = gw.send6(A6, 40000, &req).unwrap();
        assert_bytes(
            &r,
            &pcp_error_reply(&req, PCP_MALFORMED_OPTION, 1800, 0, false),
        );
        assert_eq!(gw.state(), before);
    }
}

#[test]
fn more_filters_than_the_limit_is_excessive_remote_peers_and_changes_nothing() {
    // §3.4: over the server's limit (`pcp-max-filters`, 8 by default) -> EXCESSIVE_REMOTE_PEERS,
    // 1800 s, no state change; the count includes those the mapping holds already; sending a
    // held filter again does not count twice.
    let mut gw = Gw::new();
    let f = |i: u8| pcp_filter(128, 0, Ipv4Addr::new(198, 51, 100, i));
    let nine: Vec<Vec<u8>> = (1..=9).map(f).collect();
    let req = map_with(600, &nine);
    let expected = pcp_error_reply(&req, PCP_EXCESSIVE_REMOTE_PEERS, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
    gw.pcp_ok(A, &map_with(600, &nine[..8]));
    let req = map_with(600, &nine[8..]);
    let expected = pcp_error_reply(&req, PCP_EXCESSIVE_REMOTE_PEERS, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
    gw.pcp_ok(A, &map_with(600, &nine[..1]));
    assert_eq!(gw.mapping(A, TCP, 8080).unwrap().filters.len(), 8);
    // A smaller limit is honoured too.
    let mut gw = Gw::with_engine(EngineConfig {
        max_filters: 1,
        ..EngineConfig::default()
    });
    gw.pcp_ok(A, &map_with(600, &nine[..1]));
    let req = map_with(600, &nine[1..2]);
    let expected = pcp_error_reply(&req, PCP_EXCESSIVE_REMOTE_PEERS, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn nested_filters_collapse_into_the_outer_box() {
    // A /24 from any port and a host inside it on port 443: the /24 covers both, one box.
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &map_with(600, &[pcp_filter(128, 443, HOST), pcp_filter(120, 0, NET)]),
    );
    assert_eq!(
        gw.elements(),
        sorted(vec![
            outbound(TCP, EXT, 8080, A, 8080),
            filtered(TCP, 8080, remotes(NET, NET_LAST, 0, 65535), A, 8080),
        ])
    );
}

#[test]
fn a_filter_and_a_peer_inside_it_become_disjoint_boxes_with_the_latest_expiry() {
    // The doc: a /24 FILTER (600 s) and a PEER to a host in it on port 4000 (3000 s) of the
    // same endpoint are cut into three boxes; the one they share times out with the PEER.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[pcp_filter(120, 0, NET)]));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 3000, NONCE, IP_TCP, 8080, 0, 4000, HOST),
    );
    let mut want = vec![
        (outbound(TCP, EXT, 8080, A, 8080), secs(3002)),
        (
            filtered(TCP, 8080, remotes(NET, NET_LAST, 0, 3999), A, 8080),
            secs(602),
        ),
        (
            filtered(TCP, 8080, remotes(NET, NET_LAST, 4000, 4000), A, 8080),
            secs(3002),
        ),
        (
            filtered(TCP, 8080, remotes(NET, NET_LAST, 4001, 65535), A, 8080),
            secs(602),
        ),
    ];
    want.sort();
    assert_eq!(kernel(&gw), want);
    assert_disjoint(&gw);
    // When the MAP ends, only the PEER's remote is left.
    gw.run_for(secs(600));
    assert_eq!(
        gw.elements(),
        sorted(vec![
            outbound(TCP, EXT, 8080, A, 8080),
            filtered(TCP, 8080, remotes(HOST, HOST, 4000, 4000), A, 8080),
        ])
    );
    gw.assert_kernel_matches_engine();
}

#[test]
fn overlapping_filters_and_peers_are_always_disjoint_in_the_kernel() {
    // Several overlapping FILTERs and PEERs on one endpoint: the kernel (which refuses
    // overlaps) took them all, and holds exactly the projection.
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &map_with(
            600,
            &[
                pcp_filter(128, 4000, HOST),
                pcp_filter(120, 443, NET),
                pcp_filter(112, 0, Ipv4Addr::new(198, 51, 0, 0)),
                pcp_filter(128, 0, OTHER),
            ],
        ),
    );
    for (port, remote) in [
        (4000u16, HOST),
        (5000, HOST),
        (443, OTHER),
        (1, Ipv4Addr::new(192, 0, 2, 1)),
    ] {
        gw.pcp_ok(
            A,
            &pcp_peer_request(A, 900, NONCE, IP_TCP, 8080, 0, port, remote),
        );
        assert_disjoint(&gw);
    }
}

#[test]
fn a_filter_added_to_an_open_map_with_a_peer_replaces_the_open_inbound_by_boxes() {
    // Open MAP + PEER: one open `inbound` (the PEER adds nothing). A renewal with a FILTER
    // that does not cover the PEER's remote: the open element goes, the FILTER's box and the
    // PEER's box come, in one transaction the kernel accepts.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map_with(600, &[]));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 900, NONCE, IP_TCP, 8080, 0, 4000, OTHER),
    );
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
    gw.pcp_ok(A, &map_with(600, &[pcp_filter(120, 0, NET)]));
    assert_eq!(gw.transactions.len(), 1, "{:?}", gw.transactions);
    assert_eq!(
        gw.elements(),
        sorted(vec![
            outbound(TCP, EXT, 8080, A, 8080),
            filtered(TCP, 8080, remotes(NET, NET_LAST, 0, 65535), A, 8080),
            filtered(TCP, 8080, remotes(OTHER, OTHER, 4000, 4000), A, 8080),
        ])
    );
    assert_disjoint(&gw);
}

#[test]
fn a_filtered_map_expires_with_all_its_boxes() {
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &map_with(
            300,
            &[pcp_filter(128, 443, HOST), pcp_filter(128, 0, OTHER)],
        ),
    );
    assert_eq!(gw.elements().len(), 3);
    gw.run_for(secs(300));
    assert!(gw.elements().is_empty());
    assert!(gw.mappings().is_empty());
}

#[test]
fn a_delete_of_a_filtered_map_removes_every_box() {
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &map_with(
            600,
            &[pcp_filter(128, 443, HOST), pcp_filter(128, 0, OTHER)],
        ),
    );
    let before = gw.elements();
    let r = gw.pcp_ok(A, &pcp_map_request(A, 0, NONCE, IP_TCP, 8080, 0, ZERO4));
    assert_eq!(pcp_lifetime(&r), 0);
    assert_same_changes(
        &gw.changes,
        &before
            .into_iter()
            .map(natpmp_pcp_core::Change::Remove)
            .collect::<Vec<_>>(),
    );
    assert!(gw.elements().is_empty());
}
