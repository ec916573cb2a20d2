//! PCP PEER through the gateway (rfc-checklist §3.6, RFC 6887 §12; §4 cases 40–42): the
//! 80-byte layout, the fields that must not be 0, remotes no flow can go to, the nonce,
//! refresh that never shortens, suggestions for a new flow, endpoints shared with a MAP, the
//! kernel's filtered boxes, expiry, and the switch.

mod common;
use common::*;
use natpmp_pcp_core::front::pcp::PcpPolicy;
use natpmp_pcp_core::{EngineConfig, GatewayConfig};
use std::net::{Ipv4Addr, SocketAddr};

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const REMOTE2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

/// A's PEER for TCP `iport` towards REMOTE:4000, nonce `NONCE`.
fn peer(lifetime: u32, iport: u16, eport: u16) -> Vec<u8> {
    pcp_peer_request(A, lifetime, NONCE, IP_TCP, iport, eport, 4000, REMOTE)
}

#[test]
fn a_new_peer_gets_an_80_byte_success_and_one_filtered_box() {
    // §3.6: protocol, internal port, remote port and address and nonce copied, the assigned
    // port and address in 42–59. In the kernel: the endpoint's outbound rewrite, and one
    // `inbound_filtered` box holding exactly REMOTE:4000; each times out 2 s after the PEER.
    let mut gw = Gw::new();
    gw.advance_secs(2);
    let req = peer(600, 8080, 0);
    let r = gw.pcp_ok(A, &req);
    let eport = pcp_eport(&r);
    let mut expected = vec![2, 0x82, 0, 0, 0, 0, 0x02, 0x58, 0, 0, 0, 2];
    expected.extend([0; 12]);
    expected.extend(NONCE);
    expected.extend([6, 0, 0, 0, 0x1F, 0x90]);
    expected.extend(eport.to_be_bytes());
    expected.extend(mapped(EXT));
    expected.extend([0x0F, 0xA0, 0, 0]);
    expected.extend(mapped(REMOTE));
    assert_bytes(&r, &expected);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 2, eport, mapped(EXT), &[]),
    );
    let box_ = filtered(TCP, eport, remotes(REMOTE, REMOTE, 4000, 4000), A, 8080);
    let mut want = vec![outbound(TCP, EXT, eport, A, 8080), box_];
    want.sort();
    assert_eq!(gw.elements(), want);
    let mut kernel = gw.kernel_elements();
    kernel.sort();
    assert_eq!(kernel, {
        let mut k: Vec<_> = want.iter().map(|e| (*e, secs(602))).collect();
        k.sort();
        k
    });
}

#[test]
fn a_peer_success_sends_the_reserved_fields_as_zero() {
    // RFC 6887 §12.1: the 24 reserved bits after the protocol and the 16 after the remote
    // port are sent as 0 and ignored on receipt.
    let mut gw = Gw::new();
    let mut req = peer(600, 8080, 0);
    req[37..40].copy_from_slice(&[0xAA, 0xBB, 0xCC]);
    req[62..64].copy_from_slice(&[0xDD, 0xEE]);
    let r = gw.pcp_ok(A, &req);
    assert_eq!(
        (&r[37..40], &r[62..64]),
        (&[0u8, 0, 0][..], &[0u8, 0][..]),
        "{}",
        hex(&r)
    );
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, pcp_eport(&r), mapped(EXT), &[]),
    );
}

#[test]
fn protocol_internal_port_or_remote_port_0_is_malformed_request() {
    // §3.6: MUST NOT be 0; the RFC names no code, natpmpd says MALFORMED_REQUEST.
    let mut gw = Gw::new();
    for req in [
        pcp_peer_request(A, 600, NONCE, 0, 8080, 0, 4000, REMOTE),
        pcp_peer_request(A, 600, NONCE, IP_TCP, 0, 0, 4000, REMOTE),
        pcp_peer_request(A, 600, NONCE, IP_TCP, 8080, 0, 0, REMOTE),
    ] {
        let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, 0, false);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn a_remote_no_flow_can_go_to_is_malformed_request() {
    // §3.6 (as implicit mappings would refuse it): unspecified, loopback, multicast,
    // broadcast, and a remote of the other family (IPv6 for an IPv4 client). Nothing made.
    let mut gw = Gw::new();
    let v4s = [
        mapped(Ipv4Addr::UNSPECIFIED),
        mapped(Ipv4Addr::LOCALHOST),
        mapped(Ipv4Addr::new(224, 0, 0, 5)),
        mapped(Ipv4Addr::BROADCAST),
        wire6("2001:db8::1"),
        ZERO6,
    ];
    for remote in v4s {
        let req =
            pcp_peer_request_field(mapped(A), 600, NONCE, IP_TCP, 8080, 0, ZERO4, 4000, remote);
        let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, 0, false);
        gw.assert_refused(A, &req, &expected);
    }
}

#[test]
fn a_peer_for_another_protocol_is_unsupp_protocol() {
    let mut gw = Gw::new();
    let req = pcp_peer_request(A, 600, NONCE, 132, 8080, 0, 4000, REMOTE);
    let expected = pcp_error_reply(&req, PCP_UNSUPP_PROTOCOL, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn prefer_failure_in_a_peer_is_malformed_request() {
    // §4 case 40, §3.6 MUST; with a free suggestion too.
    let mut gw = Gw::new();
    let mut req = peer(600, 8080, 45000);
    req.extend(pcp_prefer_failure());
    let expected = pcp_error_reply(&req, PCP_MALFORMED_REQUEST, 1800, 0, false);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn a_peer_refresh_with_the_nonce_extends_and_ignores_the_suggestion() {
    // §3.6 "found": the suggestion is ignored, the lifetime adjusted, the details returned.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &peer(600, 8080, 0)));
    gw.advance_secs(100);
    let req = peer(3000, 8080, 12345);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 3000, 100, eport, mapped(EXT), &[]),
    );
    let v = &gw.mappings()[0];
    assert_eq!(
        (v.external_port, v.lifetime, v.expires_in),
        (eport, 3000, 3000)
    );
}

#[test]
fn a_peer_never_shortens_and_lifetime_0_returns_what_is_left() {
    // §4 case 41, §3.6: lifetime 0 is not a delete; a shorter lifetime only asks what is left.
    // The kernel is not touched.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &peer(600, 8080, 0)));
    gw.advance_secs(100);
    for lifetime in [0u32, 1, 200] {
        let req = peer(lifetime, 8080, 0);
        let r = gw.pcp_ok(A, &req);
        assert_bytes(
            &r,
            &pcp_success_reply(&req, 500, 100, eport, mapped(EXT), &[]),
        );
        assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    }
    assert_eq!(gw.mappings()[0].expires_in, 500);
}

#[test]
fn a_peer_with_another_nonce_is_not_authorized_with_the_remaining_lifetime() {
    // §3.6: "an earlier PEER set a different nonce": NOT_AUTHORIZED, lifetime = what is left.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &peer(600, 8080, 0));
    gw.advance_secs(100);
    let req = pcp_peer_request(A, 600, NONCE2, IP_TCP, 8080, 0, 4000, REMOTE);
    let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 500, 100, true);
    gw.assert_refused(A, &req, &expected);
    // Another remote is another mapping: that nonce is welcome there.
    let other = pcp_peer_request(A, 600, NONCE2, IP_TCP, 8080, 0, 4000, REMOTE2);
    gw.pcp_ok(A, &other);
}

#[test]
fn a_new_peer_whose_suggested_port_is_taken_is_cannot_provide_external() {
    // §4 case 42: B holds TCP 9000 for 1000 s; A's new PEER suggesting it fails, for as long
    // as B holds it, and nothing is created. Suggesting UDP/TCP 5351 or another address fails
    // for good (1800 s).
    let mut gw = Gw::new();
    gw.map_ok(B, TCP, 9000, 9000, 1000);
    gw.advance_secs(300);
    let req = peer(600, 8080, 9000);
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 700, 300, true);
    gw.assert_refused(A, &req, &expected);
    let reserved = peer(600, 8080, 5351);
    let expected = pcp_error_reply(&reserved, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 300, true);
    gw.assert_refused(A, &reserved, &expected);
    let elsewhere = pcp_peer_request_field(
        mapped(A),
        600,
        NONCE,
        IP_TCP,
        8080,
        45000,
        mapped(EXT2),
        4000,
        mapped(REMOTE),
    );
    let expected = pcp_error_reply(&elsewhere, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 300, true);
    gw.assert_refused(A, &elsewhere, &expected);
    assert!(gw.mapping(A, TCP, 8080).is_none());
}

#[test]
fn a_new_peer_with_a_free_suggestion_gets_it() {
    let mut gw = Gw::new();
    let req = peer(600, 8080, 45000);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, 45000, mapped(EXT), &[]),
    );
}

#[test]
fn a_peer_on_an_endpoint_with_a_map_uses_the_maps_port() {
    // The doc: the endpoint already leaves from its port, so the peer sees that port
    // whatever was suggested; the open MAP already admits everyone, so no filtered box.
    let mut gw = Gw::new();
    let map = pcp_map_request(A, 900, NONCE2, IP_TCP, 8080, 0, ZERO4);
    let eport = pcp_eport(&gw.pcp_ok(A, &map));
    let req = peer(600, 8080, 45000);
    let r = gw.pcp_ok(A, &req);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, 600, 0, eport, mapped(EXT), &[]),
    );
    assert_eq!(gw.elements(), pair(TCP, EXT, eport, A, 8080));
}

#[test]
fn two_peers_of_one_endpoint_share_its_port_and_get_disjoint_boxes() {
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &peer(600, 8080, 0)));
    let req = pcp_peer_request(A, 900, NONCE, IP_TCP, 8080, 0, 5000, REMOTE2);
    let r = gw.pcp_ok(A, &req);
    assert_eq!(pcp_eport(&r), eport);
    let mut want = vec![
        outbound(TCP, EXT, eport, A, 8080),
        filtered(TCP, eport, remotes(REMOTE, REMOTE, 4000, 4000), A, 8080),
        filtered(TCP, eport, remotes(REMOTE2, REMOTE2, 5000, 5000), A, 8080),
    ];
    want.sort();
    assert_eq!(gw.elements(), want);
}

#[test]
fn a_peer_that_is_not_renewed_ends_with_its_elements_and_flows() {
    // §3.6: not renewed, it goes (natpmpd removes its elements and their flows at expiry).
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &peer(600, 8080, 0)));
    let elements = gw.elements();
    gw.run_for(secs(599));
    assert_eq!(gw.elements(), elements);
    gw.run_for(secs(1));
    assert!(gw.elements().is_empty());
    assert!(gw.mappings().is_empty());
    let cleared = gw.kernel.cleared_flows();
    assert!(cleared.contains(&outbound(TCP, EXT, eport, A, 8080)));
    assert!(cleared.contains(&filtered(
        TCP,
        eport,
        remotes(REMOTE, REMOTE, 4000, 4000),
        A,
        8080
    )));
}

#[test]
fn peer_switched_off_is_not_authorized() {
    // §3.6 "SHOULD offer a setting to switch PEER off": `pcp-peer = false`.
    let config = GatewayConfig {
        pcp_policy: PcpPolicy { peer: false },
        ..gateway_config(EngineConfig::default())
    };
    let mut gw = Gw::with_config(config);
    let req = peer(600, 8080, 0);
    let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
    // MAP still works.
    gw.pcp_ok(A, &tcp_map(A, 8080, 600));
}

#[test]
fn a_peer_reply_path_is_the_last_request_source() {
    // The PEER is remembered with the port the client used, for its Mapping Updates: after a
    // refresh from another port, that port.
    let mut gw = Gw::new();
    gw.pcp_ok_from(SocketAddr::new(v4(A), 40001), &peer(600, 8080, 0));
    gw.pcp_ok_from(SocketAddr::new(v4(A), 40002), &peer(600, 8080, 0));
    let rec = &gw.state().records[0];
    match &rec.kind {
        natpmp_pcp_core::engine::records::RecordKind::Peer { owner, .. } => {
            assert_eq!(owner.reply_path.client_port, 40002);
            assert_eq!(owner.reply_path.server, v4(GW_LAN));
        }
        k => panic!("not a PEER record: {k:?}"),
    }
}
