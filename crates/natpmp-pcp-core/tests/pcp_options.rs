//! PCP options through the gateway (rfc-checklist §3.4, RFC 6887 §7.3 and §13, RFC 7220;
//! §4 cases 32–38; §6 A14, A15): structure, duplicates, the order of processing, the options
//! each opcode accepts, what success and error responses carry, and DESCRIPTION.
//!
//! FILTER's own contents (prefix lengths, families, limits, the kernel) are in `pcp_filter.rs`;
//! PREFER_FAILURE's effect on a MAP is in `pcp_map.rs`, in a PEER in `pcp_peer.rs`.

mod common;
use common::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const PEER_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

/// A gateway where A holds TCP 8080 by PCP (nonce `NONCE`, external port 8080) and B holds
/// UDP 53 by NAT-PMP on external port 5300, 5 s in.
fn gw_with_mappings() -> Gw {
    let mut gw = Gw::new();
    gw.pcp_ok(
        A,
        &pcp_map_request(A, 3600, NONCE, IP_TCP, 8080, 8080, ZERO4),
    );
    gw.map_ok(B, UDP, 53, 5300, 3600);
    gw.advance_secs(5);
    gw
}

/// A MAP from A for TCP 9000 suggesting 9000, then `options`.
fn map_with(options: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pcp_map_request(A, 600, NONCE, IP_TCP, 9000, 9000, ZERO4);
    for o in options {
        b.extend_from_slice(o);
    }
    b
}

/// The same as a PEER (TCP 9000 towards PEER_HOST:4000).
fn peer_with(options: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pcp_peer_request(A, 600, NONCE, IP_TCP, 9000, 0, 4000, PEER_HOST);
    for o in options {
        b.extend_from_slice(o);
    }
    b
}

fn announce_with(options: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pcp_header(PCP_ANNOUNCE, 0, mapped(A));
    for o in options {
        b.extend_from_slice(o);
    }
    b
}

/// An error that was "not understood" (bytes 12–23 keep the client tail), 1800 s.
#[track_caller]
fn assert_long_error(gw: &mut Gw, req: &[u8], result: u8) {
    let expected = pcp_error_reply(req, result, 1800, gw.sssoe(), false);
    gw.assert_refused(A, req, &expected);
}

fn filter_ok() -> Vec<u8> {
    pcp_filter(128, 4000, PEER_HOST)
}

// ---------------------------------------------------------------------------------------------
// Structure.

#[test]
fn an_option_running_past_the_end_is_malformed_option() {
    // §4 case 38, §3.4: the option structure cannot be parsed. A DESCRIPTION of length 9 with
    // 8 bytes (12 needed with padding), a FILTER of 20 with 16, a length of 0xFFFF; in MAP,
    // PEER and ANNOUNCE.
    let mut gw = gw_with_mappings();
    let short_description = [vec![OPT_DESCRIPTION, 0, 0, 9], vec![b'x'; 8]].concat();
    let short_filter = [vec![OPT_FILTER, 0, 0, 20], vec![0; 16]].concat();
    let huge = [vec![200, 0, 0xFF, 0xFF], vec![0; 4]].concat();
    let after_a_good_one = [filter_ok(), vec![OPT_PREFER_FAILURE, 0, 0, 4]].concat();
    for bad in [short_description, short_filter, huge, after_a_good_one] {
        for req in [
            map_with(std::slice::from_ref(&bad)),
            peer_with(std::slice::from_ref(&bad)),
            announce_with(&[bad]),
        ] {
            assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
        }
    }
}

#[test]
fn an_option_allowed_once_appearing_twice_is_malformed_option() {
    // §4 case 34: two PREFER_FAILURE, two THIRD_PARTY, two DESCRIPTION.
    let mut gw = gw_with_mappings();
    let pf = pcp_prefer_failure();
    let tp = pcp_third_party(mapped(A));
    let d = pcp_description(b"x");
    for (a, b) in [(&pf, &pf), (&tp, &tp), (&d, &d)] {
        let req = map_with(&[a.clone(), filter_ok(), b.clone()]);
        assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
    }
    let req = peer_with(&[d.clone(), d]);
    assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
}

#[test]
fn a_duplicate_is_found_before_any_options_meaning() {
    // The doc's first pass: an unknown mandatory option before two PREFER_FAILUREs, and two
    // THIRD_PARTYs (each alone UNSUPP_OPTION), are MALFORMED_OPTION.
    let mut gw = gw_with_mappings();
    let pf = pcp_prefer_failure();
    let req = map_with(&[pcp_option(99, &[]), pf.clone(), pf]);
    assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
    let tp = pcp_third_party(mapped(B));
    let req = peer_with(&[tp.clone(), tp]);
    assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
}

#[test]
fn two_filters_are_not_duplicates() {
    // FILTER may appear "as many as fit" (§3.4).
    let mut gw = gw_with_mappings();
    let f1 = pcp_filter(128, 4000, PEER_HOST);
    let f2 = pcp_filter(120, 0, Ipv4Addr::new(203, 0, 113, 0));
    let req = map_with(&[f1.clone(), f2.clone()]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &[f1, f2].concat()),
    );
}

// ---------------------------------------------------------------------------------------------
// Meaning, in order.

#[test]
fn third_party_is_unsupp_option_even_naming_the_sender() {
    // §4 case 35 (first half), §6 A15: THIRD_PARTY is not implemented; naming another host or
    // the sender itself, in MAP or PEER, it is UNSUPP_OPTION; in ANNOUNCE too.
    let mut gw = gw_with_mappings();
    for who in [mapped(B), mapped(A)] {
        let tp = pcp_third_party(who);
        assert_long_error(
            &mut gw,
            &map_with(std::slice::from_ref(&tp)),
            PCP_UNSUPP_OPTION,
        );
        assert_long_error(
            &mut gw,
            &peer_with(std::slice::from_ref(&tp)),
            PCP_UNSUPP_OPTION,
        );
        assert_long_error(&mut gw, &announce_with(&[tp]), PCP_UNSUPP_OPTION);
    }
}

#[test]
fn prefer_failure_with_data_is_malformed_option() {
    let mut gw = gw_with_mappings();
    let req = map_with(&[pcp_option(OPT_PREFER_FAILURE, &[1, 2, 3, 4])]);
    assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
}

#[test]
fn filter_of_the_wrong_length_is_malformed_option() {
    let mut gw = gw_with_mappings();
    for len in [0usize, 16, 19, 21, 24] {
        let req = map_with(&[pcp_option(OPT_FILTER, &vec![0; len])]);
        assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
    }
}

#[test]
fn an_unknown_mandatory_option_is_unsupp_option_and_creates_nothing() {
    // §4 case 37: codes 99, 4 and 127 (mandatory range), in MAP, PEER and ANNOUNCE; the full
    // request comes back, options included.
    let mut gw = gw_with_mappings();
    for code in [99u8, 4, 127] {
        let o = pcp_option(code, &[9, 9, 9]);
        let req = map_with(&[filter_ok(), o.clone()]);
        let expected = pcp_error_reply(&req, PCP_UNSUPP_OPTION, 1800, gw.sssoe(), false);
        assert_eq!(&expected[60..], &req[60..]);
        gw.assert_refused(A, &req, &expected);
        assert_long_error(
            &mut gw,
            &peer_with(std::slice::from_ref(&o)),
            PCP_UNSUPP_OPTION,
        );
        assert_long_error(&mut gw, &announce_with(&[o]), PCP_UNSUPP_OPTION);
    }
    assert!(gw.mapping(A, TCP, 9000).is_none());
}

#[test]
fn an_unknown_optional_option_is_ignored_and_left_out_of_the_success() {
    // §4 case 36: codes 200, 129 and 255 are ignored; the response holds no option.
    let mut gw = gw_with_mappings();
    let req = map_with(&[
        pcp_option(200, &[1, 2, 3]),
        pcp_option(129, &[]),
        pcp_option(255, &[0; 40]),
    ]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &[]));
    let req = peer_with(&[pcp_option(200, &[1])]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &[]));
}

#[test]
fn options_are_processed_in_order_and_the_first_error_wins() {
    // §3.4 "MUST process options in the order they appear".
    let mut gw = gw_with_mappings();
    let unknown = pcp_option(99, &[]);
    let bad_pf = pcp_option(OPT_PREFER_FAILURE, &[0; 4]);
    let bad_filter = pcp_option(OPT_FILTER, &[0; 4]);
    let tp = pcp_third_party(mapped(B));
    for (options, result) in [
        ([unknown.clone(), bad_pf.clone()], PCP_UNSUPP_OPTION),
        ([bad_pf, unknown], PCP_MALFORMED_OPTION),
        ([bad_filter.clone(), tp.clone()], PCP_MALFORMED_OPTION),
        ([tp, bad_filter], PCP_UNSUPP_OPTION),
    ] {
        assert_long_error(&mut gw, &map_with(&options), result);
    }
}

#[test]
fn prefer_failure_with_suggested_port_0_is_malformed_option() {
    // §4 case 32.
    let mut gw = gw_with_mappings();
    let mut req = pcp_map_request(A, 600, NONCE, IP_TCP, 9000, 0, ZERO4);
    req.extend(pcp_prefer_failure());
    assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
}

#[test]
fn prefer_failure_or_filter_on_a_delete_is_malformed_option() {
    // §4 case 33: a delete of A's TCP 8080 with PREFER_FAILURE, or with a FILTER (a clearing
    // one too), is MALFORMED_OPTION, and the mapping stays.
    let mut gw = gw_with_mappings();
    for o in [
        pcp_prefer_failure(),
        filter_ok(),
        pcp_filter(0, 0, Ipv4Addr::UNSPECIFIED),
    ] {
        let mut req = pcp_map_request(A, 0, NONCE, IP_TCP, 8080, 8080, ZERO4);
        req.extend(o);
        assert_long_error(&mut gw, &req, PCP_MALFORMED_OPTION);
    }
    assert!(gw.mapping(A, TCP, 8080).is_some());
}

#[test]
fn a_mandatory_option_the_opcode_does_not_define_is_unsupp_option() {
    // §6 A14: FILTER in PEER, PREFER_FAILURE and FILTER in ANNOUNCE: UNSUPP_OPTION.
    let mut gw = gw_with_mappings();
    assert_long_error(&mut gw, &peer_with(&[filter_ok()]), PCP_UNSUPP_OPTION);
    assert_long_error(
        &mut gw,
        &announce_with(&[pcp_prefer_failure()]),
        PCP_UNSUPP_OPTION,
    );
    assert_long_error(&mut gw, &announce_with(&[filter_ok()]), PCP_UNSUPP_OPTION);
}

#[test]
fn an_optional_option_the_opcode_does_not_define_is_ignored() {
    // §6 A14: DESCRIPTION in ANNOUNCE is ignored: a 24-byte SUCCESS, lifetime 0.
    let mut gw = gw_with_mappings();
    let before = gw.state();
    let req = announce_with(&[pcp_description(b"hello")]);
    let r = gw.reply(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 0, 5, 0, ZERO6, &[]));
    assert_eq!(gw.state(), before);
}

// ---------------------------------------------------------------------------------------------
// What responses carry.

#[test]
fn an_error_response_returns_every_option_as_sent() {
    // §3.2: "All options are returned in an error response". B's NAT-PMP port 5300 suggested
    // with PREFER_FAILURE (CANNOT_PROVIDE_EXTERNAL, understood: bytes 12–23 zero), and A's
    // MAP with another nonce (NOT_AUTHORIZED): FILTER, DESCRIPTION and an ignored optional
    // option are all there, unchanged.
    let mut gw = gw_with_mappings();
    let options = [
        pcp_option(200, &[7; 5]),
        filter_ok(),
        pcp_description(b"app"),
        pcp_prefer_failure(),
    ];
    let mut req = pcp_map_request(A, 600, NONCE, IP_UDP, 9000, 5300, ZERO4);
    for o in &options {
        req.extend_from_slice(o);
    }
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 3595, gw.sssoe(), true);
    assert_eq!(&expected[60..], &req[60..]);
    gw.assert_refused(A, &req, &expected);
    let mut req = pcp_map_request(A, 600, NONCE2, IP_TCP, 8080, 8080, ZERO4);
    for o in &options {
        req.extend_from_slice(o);
    }
    let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 3595, gw.sssoe(), true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn a_success_returns_only_the_processed_options() {
    // §3.2: an ignored optional option is left out; PREFER_FAILURE, FILTER and DESCRIPTION
    // are processed and returned. natpmpd writes them PREFER_FAILURE first, then the FILTERs
    // in request order, then DESCRIPTION, whatever order they came in.
    let mut gw = gw_with_mappings();
    let f1 = pcp_filter(128, 4000, PEER_HOST);
    let f2 = pcp_filter(120, 0, Ipv4Addr::new(203, 0, 113, 0));
    let d = pcp_description(b"my game");
    let pf = pcp_prefer_failure();
    let req = map_with(&[
        d.clone(),
        pcp_option(200, &[1]),
        f1.clone(),
        pf.clone(),
        f2.clone(),
    ]);
    let r = gw.pcp_ok(A, &req);
    let echoed = [pf, f1, f2, d].concat();
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &echoed),
    );
}

// ---------------------------------------------------------------------------------------------
// DESCRIPTION (RFC 7220).

#[test]
fn description_is_stored_and_echoed_for_map_and_peer() {
    let mut gw = gw_with_mappings();
    let d = pcp_description(b"ApplicationX");
    let req = map_with(std::slice::from_ref(&d));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &d));
    let v = gw.mapping(A, TCP, 9000).unwrap();
    assert_eq!(v.description.as_deref(), Some("ApplicationX"));
    let pd = pcp_description(b"peer-app");
    let req = peer_with(std::slice::from_ref(&pd));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &pd));
    let peer = gw
        .mappings()
        .into_iter()
        .find(|m| m.remote.is_some())
        .unwrap();
    assert_eq!(peer.description.as_deref(), Some("peer-app"));
}

#[test]
fn description_is_cut_to_255_bytes_at_a_character_boundary() {
    // RFC 7220: at least 128 bytes kept (here 255), and what is stored is what is echoed:
    // 300 'é' (600 bytes) keep 127 of them (254 bytes).
    let mut gw = gw_with_mappings();
    let text = "é".repeat(300);
    let req = map_with(&[pcp_description(text.as_bytes())]);
    let r = gw.pcp_ok(A, &req);
    let kept = "é".repeat(127);
    assert_bytes(
        &r,
        &pcp_success_reply(
            &req,
            600,
            5,
            9000,
            mapped(EXT),
            &pcp_description(kept.as_bytes()),
        ),
    );
    assert_eq!(
        gw.mapping(A, TCP, 9000).unwrap().description.as_deref(),
        Some(kept.as_str())
    );
}

#[test]
fn description_is_cut_at_a_nul() {
    let mut gw = gw_with_mappings();
    let req = map_with(&[pcp_description(b"ab\0cd")]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &pcp_description(b"ab")),
    );
}

#[test]
fn invalid_utf8_description_is_neither_stored_nor_echoed() {
    // RFC 7220: not UTF-8, not echoed; what was stored stays.
    let mut gw = gw_with_mappings();
    gw.pcp_ok(A, &map_with(&[pcp_description(b"first")]));
    let req = map_with(&[pcp_description(&[0xFF, 0xFE, 0x41])]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &[]));
    assert_eq!(
        gw.mapping(A, TCP, 9000).unwrap().description.as_deref(),
        Some("first")
    );
}

#[test]
fn an_empty_description_clears_it() {
    // RFC 7220: length 0 clears; the (empty) stored value is what is echoed.
    let mut gw = gw_with_mappings();
    gw.pcp_ok(A, &map_with(&[pcp_description(b"first")]));
    let empty = pcp_description(b"");
    let req = map_with(std::slice::from_ref(&empty));
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &empty),
    );
    assert_eq!(gw.mapping(A, TCP, 9000).unwrap().description, None);
}

#[test]
fn description_is_never_put_in_a_response_whose_request_had_none() {
    // RFC 7220: a renewal without DESCRIPTION keeps the stored one and echoes nothing.
    let mut gw = gw_with_mappings();
    gw.pcp_ok(A, &map_with(&[pcp_description(b"kept")]));
    let req = map_with(&[]);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(&r, &pcp_success_reply(&req, 600, 5, 9000, mapped(EXT), &[]));
    assert_eq!(
        gw.mapping(A, TCP, 9000).unwrap().description.as_deref(),
        Some("kept")
    );
}

// ---------------------------------------------------------------------------------------------
// Property: arbitrary option lists.

/// One option: a known code with valid or broken data, or any code with any data; sometimes
/// with a lying length field.
fn option() -> impl Strategy<Value = Vec<u8>> {
    let data = proptest::collection::vec(any::<u8>(), 0..48);
    prop_oneof![
        Just(pcp_prefer_failure()),
        Just(filter_ok()),
        Just(pcp_filter(0, 0, Ipv4Addr::UNSPECIFIED)),
        (90u8..=130, any::<u16>(), any::<[u8; 4]>()).prop_map(|(len, port, a)| pcp_filter(
            len,
            port,
            Ipv4Addr::from(a)
        )),
        data.clone().prop_map(|d| pcp_description(&d)),
        Just(pcp_third_party(mapped(A))),
        (any::<u8>(), data.clone()).prop_map(|(code, d)| pcp_option(code, &d)),
        (any::<u8>(), any::<u16>(), data).prop_map(|(code, len, d)| {
            let mut o = vec![code, 0];
            o.extend(len.to_be_bytes());
            o.extend(d);
            o.resize(o.len().next_multiple_of(4), 0);
            o
        }),
    ]
}

fn base_request() -> impl Strategy<Value = Vec<u8>> {
    let lifetime = prop_oneof![Just(0u32), Just(600), Just(u32::MAX)];
    let eport = prop_oneof![Just(0u16), Just(8080), Just(9000), Just(5300)];
    let nonce = prop_oneof![Just(NONCE), Just(NONCE2)];
    (
        0u8..3,
        lifetime,
        eport,
        nonce,
        prop_oneof![Just(8080u16), Just(9000)],
    )
        .prop_map(|(op, lifetime, eport, nonce, iport)| match op {
            PCP_ANNOUNCE => pcp_header(PCP_ANNOUNCE, lifetime, mapped(A)),
            PCP_MAP => pcp_map_request(A, lifetime, nonce, IP_TCP, iport, eport, ZERO4),
            _ => pcp_peer_request(A, lifetime, nonce, IP_TCP, iport, eport, 4000, PEER_HOST),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any list of options on ANNOUNCE, MAP or PEER: never a panic; an error is the request
    /// copied and changes nothing; a SUCCESS leaves the kernel the engine's projection and
    /// echoes no option code the request did not carry, nor any optional code but DESCRIPTION.
    #[test]
    fn arbitrary_option_lists_never_change_state_unless_the_reply_is_success(
        base in base_request(),
        options in proptest::collection::vec(option(), 0..6),
    ) {
        let mut gw = gw_with_mappings();
        let mut req = base;
        for o in &options {
            req.extend_from_slice(o);
        }
        let before = gw.state();
        let r = gw.reply(A, &req);
        prop_assert!(r.len() >= 24 && r.len() <= 1100 && r.len().is_multiple_of(4));
        prop_assert_eq!((r[0], r[1], r[2]), (2, 0x80 | req[1], 0));
        if r[3] == PCP_SUCCESS {
            gw.assert_kernel_exact();
            let data_end = [24usize, 60, 80][usize::from(req[1])];
            let mut rest = &r[data_end..];
            while rest.len() >= 4 {
                let code = rest[0];
                let allowed = match req[1] {
                    PCP_MAP => matches!(code, OPT_PREFER_FAILURE | OPT_FILTER | OPT_DESCRIPTION),
                    PCP_PEER => code == OPT_DESCRIPTION,
                    _ => false,
                };
                prop_assert!(allowed, "echoed option {} in {}", code, hex(&r));
                let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                rest = &rest[4 + len.next_multiple_of(4)..];
            }
            prop_assert!(rest.is_empty());
        } else {
            prop_assert!(gw.changes.is_empty());
            prop_assert_eq!(gw.state(), before);
            let n = req.len().min(1100);
            prop_assert_eq!(&r[24..n], &req[24..n]);
        }
    }
}
