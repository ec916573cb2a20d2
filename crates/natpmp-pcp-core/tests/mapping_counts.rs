//! The mapping counts behind the `natpmpd_mappings` gauges are kept by the table as endpoints
//! change (core `view.rs` `MappingCounts`), not counted from a view of every mapping: they
//! must agree with such a count after every kind of change. (The gateway fuzz target checks
//! the same after every step of arbitrary histories.)

mod common;

use common::*;
use natpmp_pcp_core::view::{MappingCounts, Via};
use natpmp_pcp_core::Protocol;

/// The counts as `Gateway::mappings` shows the mappings.
fn counted(gw: &Gw) -> Vec<(Protocol, bool, Via, usize)> {
    let views = gw.mappings();
    MappingCounts::default()
        .iter()
        .map(|(protocol, ipv6, via, _)| {
            let n = views
                .iter()
                .filter(|m| m.protocol == protocol && m.client.is_ipv6() == ipv6 && m.via == via)
                .count();
            (protocol, ipv6, via, n)
        })
        .collect()
}

#[track_caller]
fn assert_counts(gw: &Gw, total: usize) {
    let kept = gw.gateway.mapping_counts();
    assert_eq!(kept.iter().collect::<Vec<_>>(), counted(gw));
    assert_eq!(kept.total(), total);
}

const PCP_TCP: u8 = 6;
const PCP_UDP: u8 = 17;

#[test]
fn the_kept_counts_follow_maps_peers_takeovers_deletes_and_expiry() {
    let mut gw = Gw::new();
    assert_counts(&gw, 0);
    gw.map_ok(A, TCP, 80, 40080, 3600);
    gw.map_ok(A, UDP, 53, 40053, 60);
    assert_counts(&gw, 2);
    assert_eq!(
        gw.gateway
            .mapping_counts()
            .get(Protocol::Tcp, false, Via::NatPmp),
        1
    );
    // A PCP MAP of another host, and a PEER beside it.
    gw.pcp_ok(
        B,
        &pcp_map_request(B, 600, [1; 12], PCP_TCP, 22, 40022, [0; 16]),
    );
    let remote = std::net::Ipv4Addr::new(198, 51, 100, 9);
    gw.pcp_ok(
        B,
        &pcp_peer_request(B, 600, [2; 12], PCP_UDP, 5000, 0, 443, remote),
    );
    assert_counts(&gw, 4);
    assert_eq!(
        gw.gateway
            .mapping_counts()
            .get(Protocol::Udp, false, Via::Pcp),
        1
    );
    // A PCP MAP takes over A's NAT-PMP mapping: it moves from NAT-PMP to PCP.
    gw.pcp_ok(
        A,
        &pcp_map_request(A, 600, [3; 12], PCP_TCP, 80, 40080, [0; 16]),
    );
    assert_counts(&gw, 4);
    assert_eq!(
        gw.gateway
            .mapping_counts()
            .get(Protocol::Tcp, false, Via::NatPmp),
        0
    );
    assert_eq!(
        gw.gateway
            .mapping_counts()
            .get(Protocol::Tcp, false, Via::Pcp),
        2
    );
    // A delete, then expiry of A's 60 s UDP mapping.
    gw.pcp_ok(
        B,
        &pcp_map_request(B, 0, [1; 12], PCP_TCP, 22, 40022, [0; 16]),
    );
    assert_counts(&gw, 3);
    gw.advance_secs(61 + 2);
    gw.timeout();
    assert_counts(&gw, 2);
}
