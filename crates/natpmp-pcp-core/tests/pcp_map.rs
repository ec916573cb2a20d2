//! PCP MAP through the gateway (rfc-checklist §3.5, RFC 6887 §11; §4 cases 13, 26–31, 63):
//! the success layout, suggestions and why they cannot be had, PREFER_FAILURE, protocols,
//! renewal and the nonce, quota and port exhaustion, no external address, kernel refusal.
//! Deletes (lifetime 0) are in `pcp_delete.rs`, FILTER in `pcp_filter.rs`, lifetimes in
//! `pcp_lifetime.rs`.
//!
//! Every success is checked whole and must leave the kernel exactly the engine's projection;
//! every error is checked whole and must change nothing.

mod common;
use common::*;
use natpmp_pcp_core::view::Via;
use natpmp_pcp_core::{Element, EngineConfig};
use std::net::Ipv4Addr;

/// A's MAP for `protocol` `iport`, suggesting `eport`, nonce `NONCE`, lifetime 600.
fn map(protocol: u8, iport: u16, eport: u16) -> Vec<u8> {
    pcp_map_request(A, 600, NONCE, protocol, iport, eport, ZERO4)
}

fn with_prefer_failure(mut req: Vec<u8>) -> Vec<u8> {
    req.extend(pcp_prefer_failure());
    req
}

#[test]
fn a_valid_map_gets_a_60_byte_success_with_the_assigned_port_and_address() {
    // §4 case 13: `02 81 00 00`, lifetime, epoch, 12 zero bytes, nonce, protocol, internal
    // port, the assigned port (the free suggestion, "SHOULD use it") and EXT as ::ffff:EXT.
    let mut gw = Gw::new();
    gw.advance_secs(3);
    let req = pcp_map_request(A, 7200, NONCE, IP_TCP, 8080, 8080, ZERO4);
    let r = gw.pcp_ok(A, &req);
    let mut expected = vec![2, 0x81, 0, 0, 0, 0, 0x1C, 0x20, 0, 0, 0, 3];
    expected.extend([0; 12]);
    expected.extend(NONCE);
    expected.extend([6, 0, 0, 0, 0x1F, 0x90, 0x1F, 0x90]);
    expected.extend(mapped(EXT));
    assert_bytes(&r, &expected);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 7200, 3, 8080, mapped(EXT), &[]),
    );
    assert_same_changes(&gw.changes, &created(TCP, EXT, 8080, A, 8080, 7200));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
    let v = gw.mapping(A, TCP, 8080).unwrap();
    assert_eq!((v.via, v.nonce_owned, v.lifetime), (Via::Pcp, true, 7200));
}

#[test]
fn a_map_success_sends_the_reserved_fields_as_zero() {
    // RFC 6887 §11.1: the 24 reserved bits after the protocol "MUST be sent as 0 and MUST be
    // ignored when received". A request with them set is served, and the response has them 0.
    let mut gw = Gw::new();
    let mut req = map(IP_TCP, 8080, 8080);
    req[37..40].copy_from_slice(&[0xFF, 0xEE, 0xDD]);
    let r = gw.pcp_ok(A, &req);
    assert_eq!(&r[37..40], &[0, 0, 0], "{}", hex(&r));
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 8080, mapped(EXT), &[]));
}

#[test]
fn the_internal_address_is_the_source_address() {
    // §3.5 (no THIRD_PARTY): the mapping is A's, reaching A.
    let mut gw = Gw::new();
    let r = gw.pcp_ok(A, &map(IP_UDP, 5000, 0));
    let eport = pcp_eport(&r);
    assert_eq!(gw.elements(), pair(UDP, EXT, eport, A, 5000));
    assert_eq!(gw.mappings()[0].client, v4(A));
}

#[test]
fn suggested_port_0_gets_a_high_port_from_the_range() {
    let mut gw = Gw::new();
    let req = map(IP_TCP, 8080, 0);
    let r = gw.pcp_ok(A, &req);
    let eport = pcp_eport(&r);
    assert!(eport >= 1024 && eport != 5350 && eport != 5351, "{eport}");
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, eport, mapped(EXT), &[]),
    );
}

#[test]
fn a_suggested_port_another_client_holds_gets_another_port() {
    // §3.5: without PREFER_FAILURE a suggestion that cannot be had gives another port, never
    // an error. B holds TCP 9000.
    let mut gw = Gw::new();
    gw.map_ok(B, TCP, 9000, 9000, 3600);
    let req = map(IP_TCP, 8080, 9000);
    let r = gw.pcp_ok(A, &req);
    let eport = pcp_eport(&r);
    assert_ne!(eport, 9000);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, eport, mapped(EXT), &[]),
    );
}

#[test]
fn a_suggested_port_whose_companion_another_client_holds_gets_another_port() {
    // The companion reservation applies to PCP too: B holds UDP 9000, so TCP 9000 is B's.
    let mut gw = Gw::new();
    gw.map_ok(B, UDP, 9000, 9000, 3600);
    let r = gw.pcp_ok(A, &map(IP_TCP, 8080, 9000));
    assert_ne!(pcp_eport(&r), 9000);
    // With PREFER_FAILURE: CANNOT_PROVIDE_EXTERNAL for as long as B holds it.
    gw.advance_secs(10);
    let req = with_prefer_failure(map(IP_TCP, 8081, 9000));
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 3590, 10, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn udp_5351_is_never_mapped() {
    // §4 case 31: UDP (and, natpmpd's choice, TCP) 5350 and 5351 get another port; with
    // PREFER_FAILURE, CANNOT_PROVIDE_EXTERNAL with the long lifetime (it will never be given).
    let mut gw = Gw::new();
    for (i, (protocol, port)) in [(IP_UDP, 5351u16), (IP_UDP, 5350), (IP_TCP, 5351)]
        .into_iter()
        .enumerate()
    {
        let iport = 7000 + i as u16;
        let r = gw.pcp_ok(A, &map(protocol, iport, port));
        assert!(![0, 5350, 5351].contains(&pcp_eport(&r)), "{}", hex(&r));
        let req = with_prefer_failure(map(protocol, iport + 100, port));
        let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 0, true);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn a_suggestion_outside_the_port_range_gets_a_port_inside_it() {
    // §6 A9: with PREFER_FAILURE it is CANNOT_PROVIDE_EXTERNAL, 1800 s.
    let mut gw = Gw::small_range(40000, 40010);
    let r = gw.pcp_ok(A, &map(IP_TCP, 8080, 8080));
    assert!((40000..=40010).contains(&pcp_eport(&r)));
    let req = with_prefer_failure(map(IP_TCP, 8081, 8081));
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn a_suggested_address_that_is_not_ours_is_replaced_by_ours() {
    // §3.5: "the address is not the gateway's" is a suggestion that cannot be used: EXT is
    // given. With PREFER_FAILURE: CANNOT_PROVIDE_EXTERNAL, 1800 s. Our own address, ::ffff:0:0
    // and :: are no preference.
    let mut gw = Gw::new();
    let other = pcp_map_request(A, 600, NONCE, IP_TCP, 8080, 8080, mapped(EXT2));
    let r = gw.pcp_ok(A, &other);
    assert_bytes(
        &r,
        &pcp_success_reply(&other, 600, 0, 8080, mapped(EXT), &[]),
    );
    let req = with_prefer_failure(pcp_map_request(
        A,
        600,
        NONCE,
        IP_TCP,
        8081,
        8081,
        mapped(EXT2),
    ));
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
    for (iport, addr) in [(8082u16, mapped(EXT)), (8083, ZERO4), (8084, ZERO6)] {
        let req = with_prefer_failure(pcp_map_request(A, 600, NONCE, IP_TCP, iport, iport, addr));
        let r = gw.pcp_ok(A, &req);
        assert_bytes(
            &r,
            &pcp_success_reply(&req, 600, 0, iport, mapped(EXT), &pcp_prefer_failure()),
        );
    }
}

#[test]
fn prefer_failure_with_a_free_suggestion_gets_exactly_it() {
    // §3.4 PREFER_FAILURE: processed, so echoed.
    let mut gw = Gw::new();
    let req = with_prefer_failure(map(IP_UDP, 5000, 45000));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, 45000, mapped(EXT), &pcp_prefer_failure()),
    );
}

#[test]
fn prefer_failure_with_a_held_suggestion_is_cannot_provide_external_for_the_holders_time() {
    // §3.3 code 11 "depends on the cause": the holder's remaining lifetime (RFC 6887 §13.2
    // MAY); nothing changes.
    let mut gw = Gw::new();
    gw.map_ok(B, TCP, 9000, 9000, 1000);
    gw.advance_secs(400);
    let req = with_prefer_failure(map(IP_TCP, 8080, 9000));
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 600, 400, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn protocol_0_with_a_port_is_malformed_request() {
    // §4 case 26 (non-zero lifetime); the delete form is in pcp_delete.rs.
    let mut gw = Gw::new();
    let req = map(0, 80, 0);
    let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, 0, false);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn a_protocol_other_than_tcp_and_udp_is_unsupp_protocol() {
    // §4 case 27: SCTP (132), and ICMP (1), DCCP (33), 255: UNSUPP_PROTOCOL, 1800 s, the
    // request understood (bytes 12–23 zero).
    let mut gw = Gw::new();
    for protocol in [132u8, 1, 33, 255] {
        let req = map(protocol, 80, 0);
        let expected = pcp_error_reply(&req, PCP_UNSUPP_PROTOCOL, 1800, 0, true);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn all_ports_or_all_protocols_is_unsupp_protocol() {
    // §4 case 28: TCP or UDP with internal port 0 (all ports), and protocol 0 with port 0 (a
    // DMZ host): the NAT cannot do them in full.
    let mut gw = Gw::new();
    for protocol in [IP_TCP, IP_UDP, 0] {
        let req = map(protocol, 0, 0);
        let expected = pcp_error_reply(&req, PCP_UNSUPP_PROTOCOL, 1800, 0, true);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn the_same_nonce_renews_with_the_same_port_and_the_new_lifetime() {
    // §4 case 29, §3.5 (3): the existing port whatever is suggested; the lifetime updated;
    // the kernel's elements re-added with the new timeout.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &map(IP_TCP, 8080, 0)));
    gw.advance_secs(100);
    let req = pcp_map_request(A, 3000, NONCE, IP_TCP, 8080, 12345, ZERO4);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 3000, 100, eport, mapped(EXT), &[]),
    );
    let mut want = removed(TCP, EXT, eport, A, 8080);
    want.extend(created(TCP, EXT, eport, A, 8080, 3000));
    assert_same_changes(&gw.changes, &want);
    assert_removes_before_adds(&gw.changes);
    let v = gw.mapping(A, TCP, 8080).unwrap();
    assert_eq!((v.lifetime, v.expires_in), (3000, 3000));
}

#[test]
fn a_renewal_may_shorten_the_lifetime() {
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &pcp_map_request(A, 7200, NONCE, IP_TCP, 8080, 8080, ZERO4),
    );
    let req = pcp_map_request(A, 300, NONCE, IP_TCP, 8080, 8080, ZERO4);
    let r = gw.pcp_ok(A, &req);
    assert_eq!(pcp_lifetime(&r), 300);
    assert_eq!(gw.mapping(A, TCP, 8080).unwrap().expires_in, 300);
}

#[test]
fn a_retransmission_gets_the_same_reply() {
    // RFC 6887 §8.1.1: retransmissions reuse the nonce; the answer is the same (apart from
    // the epoch and the lifetime, which are those of the moment).
    let mut gw = Gw::new();
    let req = map(IP_UDP, 5000, 0);
    let first = gw.pcp_ok(A, &req);
    let again = gw.pcp_ok(A, &req);
    assert_bytes(&again, &first);
}

#[test]
fn a_different_nonce_is_not_authorized_with_the_remaining_lifetime() {
    // §4 case 30, §3.10: NOT_AUTHORIZED, error lifetime = what is left of the mapping, nothing
    // changes, whatever the other nonce suggests or asks.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map(IP_TCP, 8080, 8080));
    gw.advance_secs(250);
    for (lifetime, eport) in [(600u32, 8080u16), (7200, 0), (1, 9999)] {
        let req = pcp_map_request(A, lifetime, NONCE2, IP_TCP, 8080, eport, ZERO4);
        let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 350, 250, true);
        gw.assert_refused(A, &req, &expected);
    }
    // The remaining lifetime is rounded up, never 0 while the mapping lives.
    gw.advance_ms(349_500);
    let req = pcp_map_request(A, 600, NONCE2, IP_TCP, 8080, 0, ZERO4);
    let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 1, gw.sssoe(), true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn zero_is_a_legal_nonce() {
    // §3.10.
    let mut gw = Gw::new();
    let req = pcp_map_request(A, 600, [0; 12], IP_TCP, 8080, 8080, ZERO4);
    gw.pcp_ok(A, &req);
    gw.pcp_ok(A, &req);
    let other = pcp_map_request(A, 600, NONCE, IP_TCP, 8080, 8080, ZERO4);
    assert_eq!(pcp_result(&gw.reply(A, &other)), PCP_NOT_AUTHORIZED);
}

#[test]
fn prefer_failure_on_an_existing_mapping_with_another_port_is_cannot_provide_external() {
    // §3.5 (1): the mapping exists on 8080; PREFER_FAILURE suggesting 9000 fails, for as long
    // as the mapping lives; suggesting 8080 renews it.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map(IP_TCP, 8080, 8080));
    gw.advance_secs(100);
    let req = with_prefer_failure(map(IP_TCP, 8080, 9000));
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 500, 100, true);
    gw.assert_refused(A, &req, &expected);
    let req = with_prefer_failure(map(IP_TCP, 8080, 8080));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 100, 8080, mapped(EXT), &pcp_prefer_failure()),
    );
}

#[test]
fn a_udp_map_creates_no_tcp_mapping() {
    // §3.5: MUST NOT create a mapping for another protocol than the one requested.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &map(IP_UDP, 5000, 0)));
    assert_eq!(gw.elements(), pair(UDP, EXT, eport, A, 5000));
    assert!(gw.mapping(A, TCP, 5000).is_none());
}

#[test]
fn over_the_per_client_quota_is_user_ex_quota_with_30_s() {
    // §4 case 63, §3.5 quota: two mappings allowed; the third gets USER_EX_QUOTA, 30 s; a
    // renewal of one held is not a new mapping; another client is not affected.
    let mut gw = Gw::with_engine(EngineConfig {
        max_mappings_per_client: 2,
        ..EngineConfig::default()
    });
    gw.pcp_ok(A, &map(IP_TCP, 1, 0));
    gw.pcp_ok(A, &map(IP_UDP, 2, 0));
    let req = map(IP_TCP, 3, 0);
    let expected = pcp_error_reply(&req, PCP_USER_EX_QUOTA, 30, 0, true);
    gw.assert_refused(A, &req, &expected);
    gw.pcp_ok(A, &map(IP_TCP, 1, 0));
    gw.pcp_ok(B, &pcp_map_request(B, 600, NONCE, IP_TCP, 3, 0, ZERO4));
}

#[test]
fn no_free_port_is_no_resources_with_30_s() {
    // §4 case 63: B holds every port of the range in TCP (and so their UDP companions).
    let mut gw = Gw::small_range(40000, 40001);
    gw.map_ok(B, TCP, 1, 40000, 3600);
    gw.map_ok(B, TCP, 2, 40001, 3600);
    for protocol in [IP_TCP, IP_UDP] {
        let req = map(protocol, 8080, 0);
        let expected = pcp_error_reply(&req, PCP_NO_RESOURCES, 30, 0, true);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn no_external_address_is_network_failure_with_30_s() {
    // §3.3 code 7: no DHCP lease yet. A create and a renewal both fail and change nothing;
    // the mapping stays in the table and returns with the address.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &map(IP_TCP, 8080, 0)));
    gw.set_address(None);
    assert!(gw.elements().is_empty());
    for req in [map(IP_TCP, 8080, 0), map(IP_UDP, 5000, 0)] {
        let expected = pcp_error_reply(&req, PCP_NETWORK_FAILURE, 30, 0, true);
        gw.assert_refused(A, &req, &expected);
    }
    gw.set_address(Some(EXT2));
    assert_eq!(gw.elements(), pair(TCP, EXT2, eport, A, 8080));
    gw.assert_kernel_matches_engine();
}

#[test]
fn a_kernel_refusal_that_cannot_be_repaired_is_network_failure_and_leaves_nothing() {
    // The doc's kernel refusal rule: an element added by hand holds TCP 9000 in `inbound`,
    // and rebuilds fail, so A's MAP for 9000 is reverted and told NETWORK_FAILURE (30 s,
    // understood); the table and the kernel are as they were.
    let mut gw = Gw::new();
    gw.break_rebuilds();
    let stranger = Element::Inbound {
        protocol: natpmp_pcp_core::Protocol::Tcp,
        external_port: 9000,
        internal: std::net::SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 99), 9),
    };
    gw.kernel.insert_by_hand(stranger, secs(100));
    let before = gw.state();
    let req = map(IP_TCP, 8080, 9000);
    let r = gw.reply(A, &req);
    assert_bytes(&r, &pcp_error_reply(&req, PCP_NETWORK_FAILURE, 30, 0, true));
    assert_eq!(gw.state(), before);
    assert!(gw.mappings().is_empty());
    assert_eq!(gw.elements(), vec![stranger]);
}

#[test]
fn requests_of_one_client_in_one_batch_are_answered_in_order() {
    // A create, the same mapping with another nonce, and a delete with the first nonce, in one
    // batch: each sees the one before it committed (SUCCESS, NOT_AUTHORIZED, SUCCESS), the
    // replies come in request order, and the kernel ends empty.
    let mut gw = Gw::new();
    let src = std::net::SocketAddr::new(v4(A), 40000);
    let create = map(IP_TCP, 8080, 8080);
    let other = pcp_map_request(A, 600, NONCE2, IP_TCP, 8080, 8080, ZERO4);
    let delete = pcp_map_request(A, 0, NONCE, IP_TCP, 8080, 0, ZERO4);
    let out = gw.send_batch(&[(src, &create), (src, &other), (src, &delete)]);
    let replies: Vec<Vec<u8>> = out.into_iter().map(|o| o.payload).collect();
    assert_eq!(replies.len(), 3);
    assert_bytes(
        &replies[0],
        &pcp_success_reply(&create, 600, 0, 8080, mapped(EXT), &[]),
    );
    assert_bytes(
        &replies[1],
        &pcp_error_reply(&other, PCP_NOT_AUTHORIZED, 600, 0, true),
    );
    assert_bytes(&replies[2], &pcp_delete_reply(&delete, 0));
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
}
