//! PCP dispatch, byte for byte through the gateway: where requests are accepted, version
//! negotiation (rfc-checklist §3.11), the request checks of RFC 6887 §8.2 in their order
//! (§3.2 steps 1–10), the shape of error responses (copy, pad to a multiple of 4, cut at 1100,
//! reserved bytes 12–23), the epoch in every reply (§4 case 69) and NAT-PMP over IPv6 (§4 case
//! 71). Cases 14–24 of §4.
//!
//! Every error is checked whole, against bytes built by hand in `common`, and must leave the
//! table and the fake kernel as they were.

mod common;
use common::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A gateway with something in it, so "changes nothing" means something: a NAT-PMP mapping,
/// a PCP MAP with a FILTER and a DESCRIPTION, a PEER.
fn populated() -> Gw {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    let mut m = pcp_map_request(A, 3600, NONCE, IP_UDP, 5000, 5000, ZERO4);
    m.extend(pcp_filter(96 + 24, 0, Ipv4Addr::new(198, 51, 100, 0)));
    m.extend(pcp_description(b"game"));
    gw.pcp_ok(A, &m);
    gw.pcp_ok(
        B,
        &pcp_peer_request(B, 600, NONCE2, IP_TCP, 6000, 0, 4000, EXT2),
    );
    gw.advance_secs(7);
    gw
}

// ---------------------------------------------------------------------------------------------
// §3.2 steps 1–3: where, how short, responses.

#[test]
fn pcp_requests_not_from_the_lan_to_the_gateway_are_dropped_unanswered() {
    // §3.2 step 1 (RFC 6887 §8.2: MUST be silently ignored), §4 case 60 for V2.
    let mut gw = populated();
    let before = gw.state();
    let from_a = SocketAddr::new(v4(A), 40000);
    let req = tcp_map(A, 9000, 600);
    let announce = pcp_header(PCP_ANNOUNCE, 0, mapped(A));
    for (source, destination, ifindex) in [
        (SocketAddr::new(v4(OFF_LAN), 40000), v4(GW_LAN), LAN_INDEX),
        (from_a, v4(EXT), WAN_INDEX),
        (from_a, v4(EXT), LAN_INDEX),
        (from_a, v4(GW_LAN), WAN_INDEX),
        (from_a, v4(Ipv4Addr::new(192, 168, 88, 255)), LAN_INDEX),
        (from_a, v4(Ipv4Addr::new(224, 0, 0, 1)), LAN_INDEX),
        (SocketAddr::new(v4(EXT2), 40000), v4(EXT), WAN_INDEX),
    ] {
        for r in [&req[..], &announce[..]] {
            let out = gw.deliver(&[(source, destination, ifindex, r)]);
            assert!(
                out.is_empty(),
                "answered {source} -> {destination}: {out:?}"
            );
            assert!(gw.changes.is_empty());
        }
    }
    assert_eq!(gw.state(), before);
}

#[test]
fn pcp_datagram_of_one_byte_is_dropped() {
    // §3.2 step 2.
    let mut gw = Gw::new();
    gw.assert_dropped(A, &[2]);
}

#[test]
fn pcp_datagrams_with_the_r_bit_set_are_dropped() {
    // §3.2 step 3: another server's responses, and our own unsolicited ANNOUNCE looped back,
    // are never answered, however malformed they are.
    let mut gw = populated();
    let before = gw.state();
    let mut map_response = tcp_map(A, 9000, 600);
    map_response[1] = 0x81;
    let mut peer_response = pcp_peer_request(A, 600, NONCE, IP_TCP, 9000, 0, 1, EXT2);
    peer_response[1] = 0x82;
    let mut mismatched = tcp_map(B, 9000, 600);
    mismatched[1] = 0x81;
    let mut long = vec![2u8, 0x81];
    long.resize(1104, 0);
    for r in [
        &map_response[..],
        &peer_response[..],
        &pcp_announce(5)[..],
        &mismatched[..],
        &long[..],
        &[2, 0x85, 0, 0][..],
        &[2, 0xFF][..],
    ] {
        gw.assert_dropped(A, r);
    }
    assert_eq!(gw.state(), before);
}

// ---------------------------------------------------------------------------------------------
// §3.2 step 4, §3.11: versions.

#[test]
fn version_0_goes_to_nat_pmp_and_is_not_held_to_the_pcp_24_byte_minimum() {
    // §3.2 step 4 (dual server): a 2-byte and a 12-byte version-0 request are NAT-PMP.
    let mut gw = Gw::new();
    gw.advance_secs(3);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 3, EXT));
    assert_bytes(
        &gw.reply(A, &map_request(TCP, 8080, 8080, 600)),
        &map_reply(TCP, SUCCESS, 3, 8080, 8080, 600),
    );
}

#[test]
fn version_1_gets_unsupp_version_naming_version_2() {
    // §4 case 14, §6 A2: PCP format, version 2, result 1, 1800 s, the request copied with the
    // client field's tail in bytes 12–23 (it was not understood).
    let mut gw = populated();
    let epoch = gw.sssoe();
    let mut req = tcp_map(A, 9000, 600);
    req[0] = 1;
    let mut expected = req.clone();
    expected[..12].copy_from_slice(&[2, 0x81, 0, 1, 0, 0, 0x07, 0x08, 0, 0, 0, epoch as u8]);
    assert_eq!(&expected[12..24], &mapped(A)[4..]);
    gw.assert_refused(A, &req, &expected);
    assert_bytes(
        &expected,
        &pcp_error_reply(&req, PCP_UNSUPP_VERSION, 1800, epoch, false),
    );
}

#[test]
fn version_3_map_gets_unsupp_version_with_the_long_error_lifetime_and_the_epoch() {
    // §4 case 15: byte 0 = 2, byte 3 = 1, lifetime 1800, the current epoch.
    let mut gw = populated();
    gw.advance_secs(60);
    let epoch = gw.sssoe();
    assert_eq!(epoch, 67);
    let mut req = tcp_map(A, 9000, 600);
    req[0] = 3;
    let expected = pcp_error_reply(&req, PCP_UNSUPP_VERSION, 1800, epoch, false);
    assert_bytes(&expected[..12], &[2, 0x81, 0, 1, 0, 0, 7, 8, 0, 0, 0, 67]);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn version_0xff_gets_unsupp_version() {
    // §4 case 16: `FF 00` -> result 1, padded to a whole header.
    let mut gw = Gw::new();
    let expected = pcp_error_reply(&[0xFF, 0x00], PCP_UNSUPP_VERSION, 1800, 0, false);
    assert_eq!(expected.len(), 24);
    gw.assert_refused(A, &[0xFF, 0x00], &expected);
}

#[test]
fn unsupported_versions_are_padded_to_a_multiple_of_4_and_cut_at_1100() {
    // §3.2 error responses, for UNSUPP_VERSION too: 62 -> 64, 1104 -> 1100, 5 -> 24.
    let mut gw = Gw::new();
    for len in [5usize, 62, 1101, 1104] {
        let mut req: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        req[0] = 3;
        req[1] = 1;
        let r = gw.reply(A, &req);
        let want = pcp_error_reply(&req, PCP_UNSUPP_VERSION, 1800, 0, false);
        assert_eq!(r.len(), len.next_multiple_of(4).clamp(24, 1100));
        assert_bytes(&r, &want);
    }
}

#[test]
fn with_pcp_off_a_pcp_request_gets_the_8_byte_nat_pmp_unsupported_version() {
    // §3.11, §4 case 12: a NAT-PMP-only server (`pcp = false`) answers every version-2
    // request, whatever its length, with `00 80 0001 SSSoE`, and changes nothing.
    let mut gw = Gw::natpmp_only();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.advance_secs(6);
    let before = gw.state();
    for req in [
        tcp_map(A, 9000, 600),
        pcp_peer_request(A, 600, NONCE, IP_TCP, 9000, 0, 4000, EXT2),
        pcp_header(PCP_ANNOUNCE, 0, mapped(A)),
        vec![2, 1],
    ] {
        assert_bytes(&gw.reply(A, &req), &unsupported_version_reply(6));
        assert!(gw.changes.is_empty());
    }
    assert_eq!(gw.state(), before);
}

#[test]
fn the_r_bit_is_checked_before_the_version() {
    // §4 case 17, §6 A13: `05 81 ...` gets nothing.
    let mut gw = Gw::new();
    let mut req = tcp_map(A, 9000, 600);
    req[0] = 5;
    req[1] = 0x81;
    gw.assert_dropped(A, &req);
}

// ---------------------------------------------------------------------------------------------
// §3.2 steps 5 and 7: lengths.

#[test]
fn version_2_shorter_than_24_bytes_is_dropped() {
    // §3.2 step 5, §4 case 18: every length 2..=23, whatever the opcode.
    let mut gw = populated();
    let before = gw.state();
    for op in [PCP_ANNOUNCE, PCP_MAP, PCP_PEER, 5, 0x7F] {
        let mut full = tcp_map(A, 9000, 600);
        full[1] = op;
        for len in 2..24 {
            gw.assert_dropped(A, &full[..len]);
        }
    }
    assert_eq!(gw.state(), before);
}

#[test]
fn map_of_only_the_24_byte_header_is_malformed_request_keeping_the_client_tail() {
    // §4 case 19: too short for MAP (60).
    let mut gw = populated();
    let req = pcp_header(PCP_MAP, 600, mapped(A));
    let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, gw.sssoe(), false);
    assert_eq!(&expected[12..24], &mapped(A)[4..]);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn map_and_peer_too_short_for_their_opcode_are_malformed_request() {
    // §3.2 step 7: a MAP of 56 bytes, PEERs of 60 and 76 bytes.
    let mut gw = populated();
    let epoch = gw.sssoe();
    let map = tcp_map(A, 9000, 600);
    let peer = pcp_peer_request(A, 600, NONCE, IP_TCP, 9000, 0, 4000, EXT2);
    for req in [&map[..56], &peer[..60], &peer[..76]] {
        let expected = pcp_error_reply(req, PCP_MALFORMED_REQUEST, 1800, epoch, false);
        gw.assert_refused(A, req, &expected);
    }
}

#[test]
fn request_not_a_multiple_of_4_is_malformed_request_padded_to_64() {
    // §4 case 20: 62 bytes -> 64, the last two zero.
    let mut gw = populated();
    let mut req = tcp_map(A, 9000, 600);
    req.extend([0xEE, 0xEE]);
    let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, gw.sssoe(), false);
    assert_eq!(expected.len(), 64);
    assert_eq!(&expected[60..], &[0xEE, 0xEE, 0, 0]);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn request_over_1100_bytes_is_malformed_request_cut_to_1100() {
    // §4 case 21: 1104 bytes (a multiple of 4) and 1101 bytes, both cut to 1100.
    let mut gw = populated();
    for len in [1101usize, 1104] {
        let mut req = tcp_map(A, 9000, 600);
        req.resize(len, 0x42);
        let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, gw.sssoe(), false);
        assert_eq!(expected.len(), 1100);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn a_map_of_exactly_1100_bytes_is_served() {
    // 1100 bytes is the limit, not over it: a MAP with one 1036-byte optional option is a
    // SUCCESS, and the ignored option is not in the response.
    let mut gw = Gw::new();
    let mut req = tcp_map(A, 9000, 600);
    req.extend(pcp_option(200, &[0x33; 1036]));
    assert_eq!(req.len(), 1100);
    let r = gw.pcp_ok(A, &req);
    let eport = pcp_eport(&r);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, eport, mapped(EXT), &[]),
    );
}

#[test]
fn the_length_is_checked_before_the_client_address() {
    // §3.2 order: step 7 before step 8. A 62-byte MAP from A naming B is MALFORMED_REQUEST.
    let mut gw = populated();
    let mut req = tcp_map(B, 9000, 600);
    req.extend([0, 0]);
    let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, gw.sssoe(), false);
    gw.assert_refused(A, &req, &expected);
}

// ---------------------------------------------------------------------------------------------
// §3.2 step 8: the client address.

#[test]
fn client_address_other_than_the_source_is_address_mismatch() {
    // §4 case 22: A sends a MAP naming B. ADDRESS_MISMATCH, 1800 s; natpmpd counts it as not
    // understood, so bytes 12–23 keep the copied client tail (B's).
    let mut gw = populated();
    for req in [
        tcp_map(B, 9000, 600),
        pcp_peer_request(B, 600, NONCE, IP_TCP, 9000, 0, 4000, EXT2),
        pcp_header(PCP_ANNOUNCE, 0, mapped(B)),
    ] {
        let expected = pcp_error_reply(&req, PCP_ADDRESS_MISMATCH, 1800, gw.sssoe(), false);
        assert_eq!(&expected[12..24], &mapped(B)[4..]);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn an_ipv4_client_field_not_ipv4_mapped_is_address_mismatch() {
    // §4 case 23 and §3.11 (all of the first 96 bits MUST be checked): A's address in bytes
    // 8–11 (plain), as `::a.b.c.d` (IPv4-compatible), behind `::fffe`, and behind a `::ffff`
    // whose earlier bits are not all zero: none of them is A.
    let mut gw = populated();
    let mut plain = [0u8; 16];
    plain[..4].copy_from_slice(&A.octets());
    let mut compatible = [0u8; 16];
    compatible[12..].copy_from_slice(&A.octets());
    let mut fffe = mapped(A);
    fffe[11] = 0xFE;
    let mut high_bit = mapped(A);
    high_bit[0] = 0x80;
    let mut bit_80 = mapped(A);
    bit_80[9] = 0x01;
    for field in [plain, compatible, fffe, high_bit, bit_80] {
        let req = pcp_map_request_field(field, 600, NONCE, IP_TCP, 9000, 0, ZERO4);
        let expected = pcp_error_reply(&req, PCP_ADDRESS_MISMATCH, 1800, gw.sssoe(), false);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn the_client_address_is_checked_before_the_opcode() {
    // §3.2 order: step 8 before step 9. Opcode 5 naming B, from A: ADDRESS_MISMATCH.
    let mut gw = Gw::new();
    let req = pcp_header(5, 0, mapped(B));
    let expected = pcp_error_reply(&req, PCP_ADDRESS_MISMATCH, 1800, 0, false);
    gw.assert_refused(A, &req, &expected);
}

// ---------------------------------------------------------------------------------------------
// §3.2 steps 9 and 10: opcodes, then options, then the opcode's data.

#[test]
fn unknown_opcode_is_unsupp_opcode_with_the_payload_copied_unread() {
    // §4 case 24 and §3.2 step 9: opcode 5 with 36 bytes that are not a valid option list
    // (so options were not read), copied unchanged; then every unassigned opcode 3..=127.
    let mut gw = populated();
    let epoch = gw.sssoe();
    let mut req = pcp_header(5, 12345, mapped(A));
    req.extend([0x63, 0, 0xFF, 0xFF]);
    req.extend([0xC3; 32]);
    let expected = pcp_error_reply(&req, PCP_UNSUPP_OPCODE, 1800, epoch, false);
    assert_eq!(&expected[24..], &req[24..]);
    gw.assert_refused(A, &req, &expected);
    for op in 3..=127u8 {
        let req = pcp_header(op, 0, mapped(A));
        let expected = pcp_error_reply(&req, PCP_UNSUPP_OPCODE, 1800, epoch, false);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn options_are_checked_before_the_opcode_data() {
    // §3.2 step 10: a MAP whose data is malformed (protocol 0, port 80) and which carries an
    // unknown mandatory option gets UNSUPP_OPTION; one for SCTP with a FILTER of the wrong
    // length gets MALFORMED_OPTION, not UNSUPP_PROTOCOL.
    let mut gw = populated();
    let epoch = gw.sssoe();
    let mut req = pcp_map_request(A, 600, NONCE, 0, 80, 0, ZERO4);
    req.extend(pcp_option(99, &[]));
    gw.assert_refused(
        A,
        &req,
        &pcp_error_reply(&req, PCP_UNSUPP_OPTION, 1800, epoch, false),
    );
    let mut req = pcp_map_request(A, 600, NONCE, 132, 80, 0, ZERO4);
    req.extend(pcp_option(OPT_FILTER, &[0; 16]));
    gw.assert_refused(
        A,
        &req,
        &pcp_error_reply(&req, PCP_MALFORMED_OPTION, 1800, epoch, false),
    );
}

#[test]
fn reserved_bytes_of_the_request_header_are_ignored() {
    // §3.1: bytes 2–3 of a request MUST be ignored; the response's byte 2 is sent as 0.
    let mut gw = Gw::new();
    let mut req = tcp_map(A, 9000, 600);
    req[2] = 0xFF;
    req[3] = 0xFF;
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, pcp_eport(&r), mapped(EXT), &[]),
    );
    assert_eq!((r[2], r[3]), (0, 0));
}

#[test]
fn every_reply_carries_the_request_opcode_with_r_set() {
    // §3.2: success and error, for ANNOUNCE, MAP and PEER.
    let mut gw = Gw::new();
    let announce = pcp_header(PCP_ANNOUNCE, 0, mapped(A));
    let map = tcp_map(A, 9000, 600);
    let peer = pcp_peer_request(A, 600, NONCE, IP_TCP, 9001, 0, 4000, EXT2);
    let mut bad_map = map.clone();
    bad_map[36] = 0;
    let mut bad_peer = peer.clone();
    bad_peer[36] = 0;
    let mut bad_announce = announce.clone();
    bad_announce.extend(pcp_option(99, &[]));
    for (req, op, result) in [
        (&announce, 0x80, PCP_SUCCESS),
        (&map, 0x81, PCP_SUCCESS),
        (&peer, 0x82, PCP_SUCCESS),
        (&bad_announce, 0x80, PCP_UNSUPP_OPTION),
        (&bad_map, 0x81, PCP_MALFORMED_REQUEST),
        (&bad_peer, 0x82, PCP_MALFORMED_REQUEST),
    ] {
        let r = gw.reply(A, req);
        assert_eq!((r[0], r[1], r[3]), (2, op, result), "{}", hex(&r));
    }
}

#[test]
fn error_replies_carry_the_current_epoch() {
    // §4 case 69, §3.8: every error carries the epoch of the moment, and the epoch restarts
    // with the external address.
    let mut gw = populated();
    gw.advance_secs(70);
    let mut version_3 = tcp_map(A, 9000, 600);
    version_3[0] = 3;
    let header_only = pcp_header(PCP_MAP, 600, mapped(A));
    let mismatch = tcp_map(B, 9000, 600);
    let unknown_op = pcp_header(9, 0, mapped(A));
    let other_nonce = pcp_map_request(A, 600, NONCE2, IP_UDP, 5000, 0, ZERO4);
    let sctp = pcp_map_request(A, 600, NONCE, 132, 80, 0, ZERO4);
    let requests = [
        version_3,
        header_only,
        mismatch,
        unknown_op,
        other_nonce,
        sctp,
    ];
    for expected_epoch in [77u32, 5] {
        if expected_epoch == 5 {
            gw.set_address(Some(EXT2));
            gw.advance_secs(5);
        }
        assert_eq!(gw.sssoe(), expected_epoch);
        for req in &requests {
            let r = gw.reply(A, req);
            assert_ne!(r[3], PCP_SUCCESS, "{}", hex(&r));
            assert_eq!(pcp_epoch(&r), expected_epoch, "{}", hex(&r));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IPv6: NAT-PMP is IPv4-only, PCP is not.

#[test]
fn nat_pmp_over_ipv6_gets_pcp_unsupp_version() {
    // §4 case 71: natpmpd's policy is the PCP-format UNSUPP_VERSION naming version 2 (the
    // only version spoken over IPv6), not a silent drop. Nothing changes.
    let mut gw = Gw::with_ipv6();
    gw.advance_secs(4);
    let before = gw.state();
    let m = map_request(TCP, 8080, 8080, 7200);
    for req in [&addr_request()[..], &m[..], &[0, 3][..]] {
        let r = gw
            .send6(A6, 40000, req)
            .unwrap_or_else(|| panic!("no reply to {}", hex(req)));
        assert_bytes(&r, &pcp_unsupported_version_reply(req, 4));
        assert!(gw.changes.is_empty());
    }
    assert_eq!(gw.state(), before);
    assert!(gw.mappings().is_empty());
}

#[test]
fn pcp_over_ipv6_is_served_and_maps_the_hosts_own_address() {
    // No NAT64: an IPv6 client's MAP is a pinhole on its own address and port, and the
    // kernel holds what the engine projects for it.
    let mut gw = Gw::with_ipv6();
    let req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 0, ZERO6);
    let r = gw.send6(A6, 40000, &req).expect("a reply");
    assert_bytes(&r, &pcp_success_reply(&req, 600, 0, 8443, wire6(A6), &[]));
    gw.assert_kernel_exact();
    let v = &gw.mappings()[0];
    assert_eq!(
        (v.client, v.external_addr, v.external_port),
        (IpAddr::V6(ip6(A6)), Some(IpAddr::V6(ip6(A6))), 8443)
    );
}

#[test]
fn ipv6_client_naming_another_address_is_address_mismatch() {
    // §3.2 step 8 over IPv6: an IPv4-mapped field, or another host's IPv6 address.
    let mut gw = Gw::with_ipv6();
    for field in [mapped(A), wire6(B6)] {
        let req = pcp_map_request_field(field, 600, NONCE, IP_TCP, 8443, 0, ZERO6);
        let r = gw.send6(A6, 40000, &req).expect("a reply");
        assert_bytes(
            &r,
            &pcp_error_reply(&req, PCP_ADDRESS_MISMATCH, 1800, 0, false),
        );
    }
    assert!(gw.mappings().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property: arbitrary PCP bytes.

/// A version-2 datagram: arbitrary bytes with the fields that steer processing drawn mostly
/// from values that matter (so requests get deep): usually the length of the opcode's data,
/// the client field right, MAP and PEER fields from the populated table's, and a tail that is
/// a valid option or arbitrary bytes.
fn pcp_datagram() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![6 => 0u8..3, 1 => any::<u8>()];
    let lifetime = prop_oneof![Just(0u32), Just(1), Just(600), Just(u32::MAX), any::<u32>()];
    let protocol = prop_oneof![3 => Just(IP_TCP), 3 => Just(IP_UDP), 1 => Just(0u8), 1 => Just(132), 1 => any::<u8>()];
    let port = prop_oneof![
        Just(0u16),
        Just(8080),
        Just(5000),
        Just(6000),
        Just(5351),
        any::<u16>()
    ];
    let nonce = prop_oneof![Just(NONCE), Just(NONCE2), any::<[u8; 12]>()];
    let client = prop_oneof![8 => Just(mapped(A)), 1 => Just(mapped(B)), 1 => any::<[u8; 16]>()];
    let remote = prop_oneof![3 => Just(mapped(EXT2)), 1 => any::<[u8; 16]>()];
    let tail = prop_oneof![
        3 => Just(Vec::new()),
        1 => Just(pcp_prefer_failure()),
        1 => Just(pcp_filter(120, 0, Ipv4Addr::new(198, 51, 100, 0))),
        1 => Just(pcp_filter(0, 0, Ipv4Addr::UNSPECIFIED)),
        1 => Just(pcp_description(b"d")),
        1 => Just(pcp_option(200, &[1])),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), 1030..1090),
    ];
    let cut = prop_oneof![8 => Just(None), 1 => (0usize..100).prop_map(Some)];
    (
        (opcode, lifetime, client),
        (protocol, port.clone(), port, nonce),
        (any::<u16>(), remote),
        any::<[u8; 56]>(),
        tail,
        cut,
    )
        .prop_map(
            |(
                (op, lifetime, client),
                (protocol, iport, eport, nonce),
                (rport, remote),
                raw,
                tail,
                cut,
            )| {
                let mut v = vec![2, op, raw[0], raw[1]];
                v.extend(lifetime.to_be_bytes());
                v.extend(client);
                let data_len = match op {
                    PCP_MAP => 36,
                    PCP_PEER => 56,
                    _ => 0,
                };
                let mut data = raw[..data_len].to_vec();
                if data_len > 0 {
                    data[..12].copy_from_slice(&nonce);
                    data[12] = protocol;
                    data[16..18].copy_from_slice(&iport.to_be_bytes());
                    data[18..20].copy_from_slice(&eport.to_be_bytes());
                    data[20..36].copy_from_slice(&ZERO4);
                }
                if data_len > 36 {
                    data[36..38].copy_from_slice(&rport.to_be_bytes());
                    data[40..56].copy_from_slice(&remote);
                }
                v.extend(data);
                v.extend(tail);
                if let Some(n) = cut {
                    v.truncate(n.max(2));
                }
                v
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Arbitrary PCP bytes never panic; every reply is a well-formed PCP response to the
    /// request's opcode; an error reply is the request copied (cut at 1100, zero-padded) and
    /// changes nothing; after a SUCCESS the kernel is the engine's projection.
    #[test]
    fn arbitrary_pcp_bytes_never_change_state_unless_the_reply_is_success(
        reqs in proptest::collection::vec(pcp_datagram(), 1..6),
    ) {
        let mut gw = populated();
        for req in &reqs {
            gw.advance_ms(300);
            let before = gw.state();
            let reply = gw.send(A, req);
            let Some(r) = reply else {
                prop_assert!(gw.changes.is_empty());
                prop_assert_eq!(gw.state(), before);
                continue;
            };
            prop_assert!(r.len() >= 24 && r.len() <= 1100 && r.len().is_multiple_of(4), "{}", hex(&r));
            prop_assert_eq!(r[0], 2);
            prop_assert_eq!(r[1], 0x80 | req[1]);
            prop_assert_eq!(r[2], 0);
            prop_assert_eq!(pcp_epoch(&r), gw.sssoe());
            if r[3] == PCP_SUCCESS {
                gw.assert_kernel_exact();
                continue;
            }
            prop_assert!(gw.changes.is_empty(), "{} asked the kernel for {:?}", hex(&r), gw.changes);
            prop_assert_eq!(gw.state(), before, "{} changed the state", hex(&r));
            // The copy: every byte after the header is the request's, then zero padding.
            let n = req.len().min(r.len());
            prop_assert_eq!(&r[24.min(n)..n], &req[24.min(n)..n]);
            prop_assert!(r[n.max(24)..].iter().all(|b| *b == 0));
        }
    }
}
