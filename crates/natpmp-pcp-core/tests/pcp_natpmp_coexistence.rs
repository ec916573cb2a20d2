//! NAT-PMP and PCP in one table (rfc-checklist §3.13, §6 A11; §4 case 72; the doc's "Both
//! protocols in one table"): take-over, read-only NAT-PMP access to nonce-owned mappings,
//! NAT-PMP delete and delete-all refused on them, PCP deletes of NAT-PMP mappings, PEER-only
//! endpoints, one quota, one companion reservation and one epoch across both protocols.

mod common;
use common::*;
use natpmp_pcp_core::engine::mapping::Owner;
use natpmp_pcp_core::engine::records::RecordKind;
use natpmp_pcp_core::view::{MappingKind, Via};
use natpmp_pcp_core::{EngineConfig, Outgoing};
use std::net::{Ipv4Addr, SocketAddr};

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn owner_of(gw: &Gw, client: Ipv4Addr, op: u8, iport: u16) -> Owner {
    gw.state()
        .records
        .into_iter()
        .find_map(|r| match r.kind {
            RecordKind::Map { owner, .. }
                if r.client == v4(client)
                    && r.protocol == proto(op)
                    && r.internal_port == iport =>
            {
                Some(owner)
            }
            _ => None,
        })
        .expect("the MAP record")
}

#[test]
fn a_pcp_map_takes_over_a_nat_pmp_mapping_of_the_same_host_keeping_its_port() {
    // §4 case 72: the same external port, whatever the PCP request suggests; the nonce is
    // stored; the kernel keeps the same elements, re-added with the new lifetime.
    let mut gw = Gw::new();
    let eport = gw.map_ok(A, TCP, 8080, 0, 3600);
    assert_eq!(owner_of(&gw, A, TCP, 8080), Owner::NatPmp);
    gw.advance_secs(60);
    let req = pcp_map_request(A, 600, NONCE, IP_TCP, 8080, 12345, ZERO4);
    let r = gw.pcp_ok_from(SocketAddr::new(v4(A), 40001), &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 60, eport, mapped(EXT), &[]),
    );
    let mut want = removed(TCP, EXT, eport, A, 8080);
    want.extend(created(TCP, EXT, eport, A, 8080, 600));
    assert_same_changes(&gw.changes, &want);
    match owner_of(&gw, A, TCP, 8080) {
        Owner::Pcp(c) => {
            assert_eq!(c.nonce.0, NONCE);
            assert_eq!(c.reply_path.client_port, 40001);
        }
        o => panic!("not taken over: {o:?}"),
    }
    let v = gw.mapping(A, TCP, 8080).unwrap();
    assert_eq!((v.via, v.nonce_owned), (Via::Pcp, true));
    // From now on the nonce owns it.
    let other = pcp_map_request(A, 600, NONCE2, IP_TCP, 8080, 0, ZERO4);
    let expected = pcp_error_reply(&other, PCP_NOT_AUTHORIZED, 600, 60, true);
    gw.assert_refused(A, &other, &expected);
}

#[test]
fn nat_pmp_gets_the_port_of_a_nonce_owned_mapping_and_changes_nothing() {
    // The doc: read-only. Its lifetime is what is left, never more than NAT-PMP asked; the
    // table and the kernel stay as they are.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &pcp_map_request(A, 3600, NONCE, IP_TCP, 8080, 0, ZERO4)));
    gw.advance_secs(600);
    let before = gw.state();
    for (asked, granted) in [(7200u32, 3000u32), (100, 100), (1, 1)] {
        let r = gw.reply(A, &map_request(TCP, 8080, 0, asked));
        assert_bytes(&r, &map_reply(TCP, SUCCESS, 600, 8080, eport, granted));
        assert!(gw.changes.is_empty());
    }
    assert_eq!(gw.state(), before);
}

#[test]
fn a_nat_pmp_delete_of_a_nonce_owned_mapping_is_refused_with_result_2() {
    // §6 A7: result 2, the internal port, that mapping's external port, lifetime 0; the
    // mapping stays.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &pcp_map_request(A, 3600, NONCE, IP_TCP, 8080, 0, ZERO4)));
    gw.advance_secs(5);
    let before = gw.state();
    let r = gw.reply(A, &map_request(TCP, 8080, 0, 0));
    assert_bytes(&r, &map_reply(TCP, REFUSED, 5, 8080, eport, 0));
    assert!(gw.changes.is_empty());
    assert_eq!(gw.state(), before);
}

#[test]
fn a_nat_pmp_delete_all_leaves_nonce_owned_mappings_and_answers_2() {
    // §6 A6: A's NAT-PMP TCP 1 goes, its PCP TCP 2 stays (result 2), its UDP 3 and B's TCP
    // are untouched. Without nonce-owned ones left, result 0.
    let mut gw = Gw::new();
    let e1 = gw.map_ok(A, TCP, 1, 0, 3600);
    let e2 = pcp_eport(&gw.pcp_ok(A, &pcp_map_request(A, 3600, NONCE, IP_TCP, 2, 0, ZERO4)));
    let e3 = gw.map_ok(A, UDP, 3, 0, 3600);
    let eb = gw.map_ok(B, TCP, 1, 0, 3600);
    let r = gw.reply(A, &map_request(TCP, 0, 0, 0));
    assert_bytes(&r, &map_reply(TCP, REFUSED, 0, 0, 0, 0));
    assert_same_changes(&gw.changes, &removed(TCP, EXT, e1, A, 1));
    let mut want = [
        pair(TCP, EXT, e2, A, 2),
        pair(UDP, EXT, e3, A, 3),
        pair(TCP, EXT, eb, B, 1),
    ]
    .concat();
    want.sort();
    assert_eq!(gw.elements(), want);
    gw.assert_kernel_matches_engine();
    let r = gw.reply(A, &map_request(UDP, 0, 0, 0));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 0, 0, 0));
    assert!(gw.mapping(A, UDP, 3).is_none());
}

#[test]
fn a_pcp_delete_of_a_nat_pmp_mapping_of_the_same_host_deletes_it() {
    // A PCP MAP for a NAT-PMP mapping takes it over; a delete is a MAP with lifetime 0.
    let mut gw = Gw::new();
    let eport = gw.map_ok(A, UDP, 5000, 0, 3600);
    let req = pcp_map_request(A, 0, NONCE, IP_UDP, 5000, 0, ZERO4);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 0));
    assert_same_changes(&gw.changes, &removed(UDP, EXT, eport, A, 5000));
    assert!(gw.mappings().is_empty());
}

#[test]
fn another_hosts_pcp_map_cannot_take_a_nat_pmp_port() {
    // One allocator: B's PCP MAP suggesting A's NAT-PMP port gets another; with
    // PREFER_FAILURE, CANNOT_PROVIDE_EXTERNAL for as long as A holds it.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 45000, 1000);
    let r = gw.pcp_ok(
        B,
        &pcp_map_request(B, 600, NONCE, IP_TCP, 8080, 45000, ZERO4),
    );
    assert_ne!(pcp_eport(&r), 45000);
    gw.advance_secs(100);
    let mut req = pcp_map_request(B, 600, NONCE, IP_TCP, 8081, 45000, ZERO4);
    req.extend(pcp_prefer_failure());
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 900, 100, true);
    gw.assert_refused(B, &req, &expected);
}

#[test]
fn companion_ports_are_reserved_across_the_protocols() {
    // §3.13: A's NAT-PMP TCP P keeps UDP P for A, against B's PCP; A's PCP UDP may have it.
    // And the other way: A's PCP TCP Q keeps UDP Q against B's NAT-PMP.
    let mut gw = Gw::new();
    let p = gw.map_ok(A, TCP, 8080, 45000, 3600);
    assert_eq!(p, 45000);
    let r = gw.pcp_ok(B, &pcp_map_request(B, 600, NONCE, IP_UDP, 8080, p, ZERO4));
    assert_ne!(pcp_eport(&r), p);
    let r = gw.pcp_ok(A, &pcp_map_request(A, 600, NONCE, IP_UDP, 8080, p, ZERO4));
    assert_eq!(pcp_eport(&r), p);
    let q = pcp_eport(&gw.pcp_ok(
        A,
        &pcp_map_request(A, 600, NONCE, IP_TCP, 9090, 46000, ZERO4),
    ));
    assert_eq!(q, 46000);
    let m = gw.map(B, UDP, 9090, q, 600);
    assert_eq!(m.result, SUCCESS);
    assert_ne!(m.eport, q);
    assert_eq!(gw.map_ok(A, UDP, 9090, q, 600), q);
}

#[test]
fn one_quota_counts_nat_pmp_maps_pcp_maps_and_peers() {
    // The doc: `max-mappings-per-client` counts all three. With 3: a NAT-PMP mapping, a PCP
    // MAP and a PEER fill it; then PCP gets USER_EX_QUOTA and NAT-PMP result 4.
    let mut gw = Gw::with_engine(EngineConfig {
        max_mappings_per_client: 3,
        ..EngineConfig::default()
    });
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.pcp_ok(A, &pcp_map_request(A, 600, NONCE, IP_TCP, 2, 0, ZERO4));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 600, NONCE, IP_TCP, 3, 0, 4000, REMOTE),
    );
    let req = pcp_map_request(A, 600, NONCE, IP_UDP, 4, 0, ZERO4);
    gw.assert_refused(
        A,
        &req,
        &pcp_error_reply(&req, PCP_USER_EX_QUOTA, 30, 0, true),
    );
    let req = pcp_peer_request(A, 600, NONCE, IP_TCP, 3, 0, 4001, REMOTE);
    gw.assert_refused(
        A,
        &req,
        &pcp_error_reply(&req, PCP_USER_EX_QUOTA, 30, 0, true),
    );
    let before = gw.state();
    let m = gw.map(A, UDP, 5, 0, 600);
    assert_eq!((m.result, m.eport, m.lifetime), (OUT_OF_RESOURCES, 0, 0));
    assert_eq!(gw.state(), before);
}

#[test]
fn one_epoch_for_both_protocols() {
    // §3.13, §6 A8: NAT-PMP's SSSoE and PCP's epoch are one clock, reset together by an
    // external address change.
    let mut gw = Gw::new();
    gw.advance_secs(321);
    let pmp = gw.reply(A, &addr_request());
    let pcp = gw.reply(A, &pcp_header(PCP_ANNOUNCE, 0, mapped(A)));
    assert_eq!(u32::from_be_bytes(pmp[4..8].try_into().unwrap()), 321);
    assert_eq!(pcp_epoch(&pcp), 321);
    gw.set_address(Some(EXT2));
    gw.advance_secs(9);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 9, EXT2));
    assert_bytes(
        &gw.reply(A, &pcp_header(PCP_ANNOUNCE, 0, mapped(A))),
        &pcp_announce(9),
    );
}

#[test]
fn nat_pmp_on_an_endpoint_with_only_peers_maps_on_the_endpoints_port() {
    // The doc: NAT-PMP never sees PEER mappings; its MAP takes the endpoint's port, and the
    // open MAP makes the PEER's box unnecessary in the kernel.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(
        A,
        &pcp_peer_request(A, 900, NONCE, IP_UDP, 5000, 0, 4000, REMOTE),
    ));
    assert_eq!(gw.map_ok(A, UDP, 5000, 0, 600), eport);
    assert_eq!(gw.elements(), pair(UDP, EXT, eport, A, 5000));
    gw.assert_kernel_matches_engine();
    let kinds: Vec<(Via, MappingKind)> = gw.mappings().iter().map(|m| (m.via, m.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (Via::NatPmp, MappingKind::Map),
            (Via::Pcp, MappingKind::Peer)
        ]
    );
}

#[test]
fn a_nat_pmp_delete_of_an_endpoint_with_only_peers_deletes_nothing() {
    // There is no MAP to delete: success, as for a mapping that does not exist; the PEER
    // stays. Delete-all leaves it too.
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 900, NONCE, IP_UDP, 5000, 0, 4000, REMOTE),
    );
    let before = gw.state();
    let r = gw.reply(A, &map_request(UDP, 5000, 0, 0));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 5000, 0, 0));
    let r = gw.reply(A, &map_request(UDP, 0, 0, 0));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 0, 0, 0));
    assert_eq!(gw.state(), before);
}

#[test]
fn a_taken_over_mapping_gets_mapping_updates_and_nat_pmp_ones_do_not() {
    // After take-over the mapping is PCP's: an address change sends it 3 Mapping Updates, to
    // the port its PCP request came from; B's NAT-PMP mapping gets none.
    let mut gw = Gw::new();
    gw.run_for(secs(200));
    let eport = gw.map_ok(A, TCP, 8080, 0, 3600);
    gw.map_ok(B, TCP, 8080, 0, 3600);
    let req = tcp_map(A, 8080, 600);
    let source = SocketAddr::new(v4(A), 40001);
    gw.pcp_ok_from(source, &req);
    gw.set_address(Some(EXT2));
    let sent: Vec<Outgoing> = gw
        .run_for(secs(5))
        .into_iter()
        .filter(|o| o.to != ANNOUNCE_TO)
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for o in &sent {
        assert_eq!(o.to, source);
    }
    assert_bytes(
        &sent[0].payload,
        &pcp_success_reply(&req, 600, 0, eport, mapped(EXT2), &[]),
    );
}
