//! PCP MAP deletes (lifetime 0) through the gateway (rfc-checklist §3.5 "Deleting", RFC 6887
//! §15.1 with errata 3621; §4 cases 26, 43, 44): the response layout, the nonce, what there is
//! nothing to delete, PEER-only endpoints, and what the kernel is told.
//!
//! Deletes with PREFER_FAILURE or FILTER (§4 case 33) are in `pcp_options.rs`; NAT-PMP deletes
//! of PCP mappings in `pcp_natpmp_coexistence.rs`.

mod common;
use common::*;
use std::net::Ipv4Addr;

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

/// A's delete of TCP `iport` with `nonce`: suggested port 0, suggested address ::ffff:0:0, as
/// RFC 6887 §15.1 and errata 3621 ask of clients.
fn delete(nonce: [u8; 12], protocol: u8, iport: u16) -> Vec<u8> {
    pcp_map_request(A, 0, nonce, protocol, iport, 0, ZERO4)
}

/// A gateway where A holds TCP 8080 by PCP (nonce `NONCE`) on external port 8080, 3600 s,
/// and TCP 8081 by PCP on 8081; 10 s in.
fn gw_with_map() -> Gw {
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &pcp_map_request(A, 3600, NONCE, IP_TCP, 8080, 8080, ZERO4),
    );
    gw.pcp_ok(
        A,
        &pcp_map_request(A, 3600, NONCE, IP_TCP, 8081, 8081, ZERO4),
    );
    gw.advance_secs(10);
    gw
}

#[test]
fn a_delete_with_the_nonce_removes_the_mapping_and_its_elements() {
    // §3.5: protocol and port non-zero, nonce matching: deleted now. SUCCESS, lifetime 0,
    // protocol and internal port copied; the kernel loses both elements and their flows end.
    let mut gw = gw_with_map();
    let req = delete(NONCE, IP_TCP, 8080);
    let r = gw.pcp_ok(A, &req);
    let mut expected = vec![2, 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10];
    expected.extend([0; 12]);
    expected.extend(NONCE);
    expected.extend([6, 0, 0, 0, 0x1F, 0x90, 0, 0]);
    expected.extend(ZERO4);
    assert_bytes(&r, &expected);
    assert_same_changes(&gw.changes, &removed(TCP, EXT, 8080, A, 8080));
    assert!(gw.mapping(A, TCP, 8080).is_none());
    assert_eq!(gw.elements(), pair(TCP, EXT, 8081, A, 8081));
    let cleared = gw.kernel.cleared_flows();
    for e in pair(TCP, EXT, 8080, A, 8080) {
        assert!(cleared.contains(&e), "flows of {e} not ended: {cleared:?}");
    }
}

#[test]
fn a_delete_reply_copies_the_suggested_port_and_address_into_the_assigned_fields() {
    // §4 case 44, errata 3621: whatever the client suggested (the port MUST be 0 and is
    // ignored) comes back in bytes 42–59; `::` for an IPv4 delete still deletes (the source
    // decides the family). Reserved bits are sent as 0.
    let mut gw = gw_with_map();
    let mut req = pcp_map_request(A, 0, NONCE, IP_TCP, 8080, 4321, ZERO6);
    req[37..40].copy_from_slice(&[1, 2, 3]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 10));
    assert_eq!(&r[42..60], &[&[0x10, 0xE1][..], &ZERO6].concat()[..]);
    assert!(gw.mapping(A, TCP, 8080).is_none());
    let req = pcp_map_request(A, 0, NONCE, IP_TCP, 8081, 0, mapped(EXT));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 10));
    assert!(gw.mappings().is_empty());
}

#[test]
fn a_delete_of_a_mapping_that_does_not_exist_succeeds_and_a_retransmission_gets_the_same() {
    // §4 case 43 (second half): SUCCESS, lifetime 0; the same again after the real delete.
    let mut gw = gw_with_map();
    let before = gw.state();
    let req = delete(NONCE, IP_UDP, 8080);
    let r = gw.reply(A, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 10));
    assert!(gw.changes.is_empty());
    assert_eq!(gw.state(), before);
    let req = delete(NONCE, IP_TCP, 8080);
    let first = gw.pcp_ok(A, &req);
    let again = gw.pcp_ok(A, &req);
    assert_bytes(&again, &first);
    assert!(gw.changes.is_empty());
}

#[test]
fn a_delete_with_another_nonce_is_not_authorized_with_the_remaining_lifetime() {
    // §3.10: the nonce is compared on deletes too; nothing changes.
    let mut gw = gw_with_map();
    let req = delete(NONCE2, IP_TCP, 8080);
    let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 3590, 10, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn a_delete_of_all_ports_or_all_protocols_or_another_protocol_deletes_nothing() {
    // The doc: a wildcard (protocol non-zero with port 0, or protocol 0 with port 0), or a
    // protocol natpmpd does not map, names nothing that exists: SUCCESS, and A's TCP mappings
    // all stay (it is not a delete-all).
    let mut gw = gw_with_map();
    let before = gw.state();
    for req in [
        delete(NONCE, IP_TCP, 0),
        delete(NONCE, 0, 0),
        delete(NONCE, 132, 8080),
        delete(NONCE2, IP_UDP, 0),
    ] {
        let r = gw.reply(A, &req);
        assert_bytes(&r, &pcp_delete_reply(&req, 10));
        assert!(gw.changes.is_empty());
    }
    assert_eq!(gw.state(), before);
}

#[test]
fn a_delete_with_protocol_0_and_a_port_is_malformed_request() {
    // §4 case 26 (lifetime 0).
    let mut gw = gw_with_map();
    let req = delete(NONCE, 0, 8080);
    let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, 10, false);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn a_map_delete_of_an_endpoint_with_only_peer_mappings_is_not_authorized() {
    // §3.5: "Deleting a static or outbound (implicit or PEER-made) mapping MUST answer
    // NOT_AUTHORIZED"; the error lifetime is what is left of the PEER. With the PEER's own
    // nonce too.
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 900, NONCE, IP_UDP, 5000, 0, 4000, REMOTE),
    );
    gw.advance_secs(100);
    for nonce in [NONCE, NONCE2] {
        let req = delete(nonce, IP_UDP, 5000);
        let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 800, 100, true);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn a_map_delete_keeps_the_endpoints_peers() {
    // A PEER is never deleted by request: deleting the MAP of an endpoint that also has a
    // PEER leaves the PEER, which now needs its own filtered element.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &pcp_map_request(A, 600, NONCE, IP_UDP, 5000, 0, ZERO4)));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 900, NONCE, IP_UDP, 5000, 0, 4000, REMOTE),
    );
    assert_eq!(gw.elements(), pair(UDP, EXT, eport, A, 5000));
    gw.pcp_ok(A, &delete(NONCE, IP_UDP, 5000));
    let mut want = vec![
        outbound(UDP, EXT, eport, A, 5000),
        filtered(UDP, eport, remotes(REMOTE, REMOTE, 4000, 4000), A, 5000),
    ];
    want.sort();
    assert_eq!(gw.elements(), want);
    let views = gw.mappings();
    assert_eq!(views.len(), 1);
    assert_eq!(
        views[0].remote,
        Some(std::net::SocketAddr::new(v4(REMOTE), 4000))
    );
}

#[test]
fn a_delete_still_works_without_an_external_address() {
    // The doc: "deleting still works" with no address; the kernel held nothing for it.
    let mut gw = gw_with_map();
    gw.set_address(None);
    let req = delete(NONCE, IP_TCP, 8080);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 0));
    assert!(gw.changes.is_empty());
    assert!(gw.mapping(A, TCP, 8080).is_none());
    gw.set_address(Some(EXT));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8081, A, 8081));
}

#[test]
fn a_delete_never_touches_another_clients_mapping() {
    // B names A's internal port with A's nonce: B has no such mapping, SUCCESS, A's stays.
    let mut gw = gw_with_map();
    let before = gw.state();
    let req = pcp_map_request(B, 0, NONCE, IP_TCP, 8080, 0, ZERO4);
    let r = gw.reply(B, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 10));
    assert_eq!(gw.state(), before);
}

#[test]
fn a_delete_echoes_no_option() {
    // Only processed options are returned: a DESCRIPTION or an optional option on a delete
    // is not.
    let mut gw = gw_with_map();
    let mut req = delete(NONCE, IP_TCP, 8080);
    req.extend(pcp_description(b"bye"));
    req.extend(pcp_option(200, &[1, 2]));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_delete_reply(&req, 10));
    assert_eq!(r.len(), 60);
    assert!(gw.mapping(A, TCP, 8080).is_none());
}
