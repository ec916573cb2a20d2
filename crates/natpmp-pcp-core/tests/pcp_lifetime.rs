//! PCP lifetimes (rfc-checklist §3.9, RFC 6887 §15; §6 A10) and error lifetimes (§3.3, RFC
//! 6887 §7.4): MAP and PEER lifetimes clamped into [pcp-min-lifetime, max-lifetime] (default
//! [120 s, 86400 s]), NAT-PMP's no-minimum beside it, the kernel timeouts that follow, expiry;
//! 30 s for the short-lived errors, 1800 s for the long-lived ones, the remaining lifetime for
//! a nonce mismatch, the holder's remaining lifetime for CANNOT_PROVIDE_EXTERNAL.

mod common;
use common::*;
use natpmp_pcp_core::front::pcp::PcpPolicy;
use natpmp_pcp_core::{EngineConfig, GatewayConfig};
use std::net::Ipv4Addr;

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn map(lifetime: u32, iport: u16) -> Vec<u8> {
    pcp_map_request(A, lifetime, NONCE, IP_TCP, iport, 0, ZERO4)
}

/// Grant `asked` through a MAP and check the reply, the view and the kernel timeouts.
#[track_caller]
fn assert_granted(gw: &mut Gw, iport: u16, asked: u32, granted: u32) {
    let req = map(asked, iport);
    let r = gw.pcp_ok(A, &req);
    let eport = pcp_eport(&r);
    assert_bytes(
        &r,
        &pcp_success_reply(&req, granted, gw.sssoe(), eport, mapped(EXT), &[]),
    );
    let v = gw.mapping(A, TCP, iport).unwrap();
    assert_eq!(
        (v.lifetime, v.expires_in),
        (granted, granted),
        "asked {asked}"
    );
    for (_, timeout) in adds(&gw.changes) {
        assert_eq!(timeout, secs(u64::from(granted)) + GRACE);
    }
}

#[test]
fn a_map_lifetime_below_the_minimum_is_raised_to_120_s() {
    // §3.9: the minimum SHOULD be 120 s.
    let mut gw = Gw::new();
    for (i, asked) in [1u32, 60, 119].into_iter().enumerate() {
        assert_granted(&mut gw, 1000 + i as u16, asked, 120);
    }
}

#[test]
fn a_map_lifetime_above_the_maximum_is_cut_to_86400_s() {
    // §3.9: at most 24 h; 0xFFFFFFFF does not overflow.
    let mut gw = Gw::new();
    for (i, asked) in [86401u32, 1_000_000, u32::MAX].into_iter().enumerate() {
        assert_granted(&mut gw, 1000 + i as u16, asked, 86400);
    }
}

#[test]
fn a_map_lifetime_inside_the_bounds_is_granted_as_asked() {
    let mut gw = Gw::new();
    for (i, asked) in [120u32, 121, 7200, 86400].into_iter().enumerate() {
        assert_granted(&mut gw, 1000 + i as u16, asked, asked);
    }
}

#[test]
fn the_lifetime_bounds_are_configurable() {
    // §3.9 SHOULD be configurable: [300, 3600]; and a minimum above the maximum yields the
    // maximum.
    let mut gw = Gw::with_engine(EngineConfig {
        pcp_min_lifetime: 300,
        max_lifetime: 3600,
        ..EngineConfig::default()
    });
    assert_granted(&mut gw, 1, 10, 300);
    assert_granted(&mut gw, 2, 1000, 1000);
    assert_granted(&mut gw, 3, 5000, 3600);
    let mut gw = Gw::with_engine(EngineConfig {
        pcp_min_lifetime: 5000,
        max_lifetime: 1000,
        ..EngineConfig::default()
    });
    assert_granted(&mut gw, 1, 10, 1000);
    assert_granted(&mut gw, 2, u32::MAX, 1000);
}

#[test]
fn a_peer_lifetime_is_clamped_the_same_way() {
    let mut gw = Gw::new();
    for (iport, asked, granted) in [(1u16, 1u32, 120u32), (2, u32::MAX, 86400), (3, 600, 600)] {
        let req = pcp_peer_request(A, asked, NONCE, IP_UDP, iport, 0, 4000, REMOTE);
        let r = gw.pcp_ok(A, &req);
        assert_bytes(
            &r,
            &pcp_success_reply(&req, granted, 0, pcp_eport(&r), mapped(EXT), &[]),
        );
        for (_, timeout) in adds(&gw.changes) {
            assert_eq!(timeout, secs(u64::from(granted)) + GRACE);
        }
    }
}

#[test]
fn nat_pmp_keeps_no_minimum_while_pcp_does() {
    // §6 A10: NAT-PMP never grants more than asked (1 s stays 1 s); PCP raises it to 120 s.
    let mut gw = Gw::new();
    let m = gw.map(A, TCP, 1, 0, 1);
    assert_eq!((m.result, m.lifetime), (SUCCESS, 1));
    assert_granted(&mut gw, 2, 1, 120);
}

#[test]
fn lifetime_0_on_a_map_is_a_delete_not_a_clamped_lifetime() {
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map(600, 1));
    let req = pcp_map_request(A, 0, NONCE, IP_TCP, 1, 0, ZERO4);
    let r = gw.pcp_ok(A, &req);
    assert_eq!(pcp_lifetime(&r), 0);
    assert!(gw.mappings().is_empty());
}

#[test]
fn a_pcp_mapping_expires_when_its_granted_lifetime_ends() {
    // Asked 30 s, granted 120 s: present until then, gone at 120 s, elements and flows too.
    let mut gw = Gw::new();
    let eport = pcp_eport(&gw.pcp_ok(A, &map(30, 8080)));
    gw.run_until(T0 + ms(119_999));
    assert!(gw.mapping(A, TCP, 8080).is_some());
    assert_eq!(gw.elements(), pair(TCP, EXT, eport, A, 8080));
    gw.run_until(T0 + secs(120));
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
    assert_same_changes(&gw.changes, &removed(TCP, EXT, eport, A, 8080));
}

// ---------------------------------------------------------------------------------------------
// Error lifetimes.

#[test]
fn short_lived_errors_carry_30_s() {
    // §3.3: NETWORK_FAILURE, NO_RESOURCES, USER_EX_QUOTA.
    let mut gw = Gw::without_address();
    assert_eq!(pcp_lifetime(&gw.reply(A, &map(600, 1))), 30);
    assert_eq!(pcp_result(&gw.reply(A, &map(600, 1))), PCP_NETWORK_FAILURE);
    let mut gw = Gw::small_range(40000, 40000);
    gw.map_ok(B, TCP, 1, 40000, 600);
    let r = gw.reply(A, &map(600, 1));
    assert_eq!((pcp_result(&r), pcp_lifetime(&r)), (PCP_NO_RESOURCES, 30));
    let mut gw = Gw::with_engine(EngineConfig {
        max_mappings_per_client: 0,
        ..EngineConfig::default()
    });
    let r = gw.reply(A, &map(600, 1));
    assert_eq!((pcp_result(&r), pcp_lifetime(&r)), (PCP_USER_EX_QUOTA, 30));
}

#[test]
fn long_lived_errors_carry_1800_s() {
    // §3.3: every other error, each produced once here.
    let mut gw = Gw::with_config(GatewayConfig {
        pcp_policy: PcpPolicy { peer: false },
        ..gateway_config(EngineConfig::default())
    });
    let mut v3 = map(600, 1);
    v3[0] = 3;
    let mut odd = map(600, 1);
    odd.extend([0, 0]);
    let mut unknown_option = map(600, 1);
    unknown_option.extend(pcp_option(99, &[]));
    let mut bad_option = map(600, 1);
    bad_option.extend(pcp_option(OPT_FILTER, &[0; 4]));
    let mut too_many = map(600, 1);
    for i in 1..=9 {
        too_many.extend(pcp_filter(128, 0, Ipv4Addr::new(198, 51, 100, i)));
    }
    let mut reserved = pcp_map_request(A, 600, NONCE, IP_UDP, 1, 5351, ZERO4);
    reserved.extend(pcp_prefer_failure());
    let cases = [
        (v3, PCP_UNSUPP_VERSION),
        (
            pcp_peer_request(A, 600, NONCE, IP_TCP, 1, 0, 4000, REMOTE),
            PCP_NOT_AUTHORIZED,
        ),
        (odd, PCP_MALFORMED_REQUEST),
        (pcp_header(7, 0, mapped(A)), PCP_UNSUPP_OPCODE),
        (unknown_option, PCP_UNSUPP_OPTION),
        (bad_option, PCP_MALFORMED_OPTION),
        (
            pcp_map_request(A, 600, NONCE, 132, 1, 0, ZERO4),
            PCP_UNSUPP_PROTOCOL,
        ),
        (tcp_map(B, 1, 600), PCP_ADDRESS_MISMATCH),
        (too_many, PCP_EXCESSIVE_REMOTE_PEERS),
        (reserved, PCP_CANNOT_PROVIDE_EXTERNAL),
    ];
    for (req, code) in cases {
        let r = gw.reply(A, &req);
        assert_eq!(
            (pcp_result(&r), pcp_lifetime(&r)),
            (code, 1800),
            "{}",
            hex(&r)
        );
    }
}

#[test]
fn not_authorized_for_another_nonce_carries_the_remaining_lifetime() {
    // §3.5, §3.6: MAP, PEER and delete, as time passes; never more than was granted.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &map(u32::MAX, 1));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 1000, NONCE, IP_UDP, 2, 0, 4000, REMOTE),
    );
    for (elapsed, map_left, peer_left) in [
        (0u64, 86400u32, 1000u32),
        (400, 86000, 600),
        (999, 85401, 1),
    ] {
        gw.now = T0 + secs(elapsed);
        for req in [
            pcp_map_request(A, 600, NONCE2, IP_TCP, 1, 0, ZERO4),
            pcp_map_request(A, 0, NONCE2, IP_TCP, 1, 0, ZERO4),
        ] {
            let r = gw.reply(A, &req);
            assert_eq!(
                (pcp_result(&r), pcp_lifetime(&r)),
                (PCP_NOT_AUTHORIZED, map_left)
            );
        }
        let req = pcp_peer_request(A, 600, NONCE2, IP_UDP, 2, 0, 4000, REMOTE);
        let r = gw.reply(A, &req);
        assert_eq!(
            (pcp_result(&r), pcp_lifetime(&r)),
            (PCP_NOT_AUTHORIZED, peer_left)
        );
    }
}

#[test]
fn cannot_provide_external_carries_the_holders_remaining_lifetime() {
    // §3.3 "depends on the cause": a port another mapping holds is free again when it ends;
    // a reserved port never is (1800 s, above).
    let mut gw = Gw::new();
    gw.map_ok(B, UDP, 1, 45000, 500);
    gw.advance_secs(123);
    let mut req = pcp_map_request(A, 600, NONCE, IP_UDP, 1, 45000, ZERO4);
    req.extend(pcp_prefer_failure());
    let r = gw.reply(A, &req);
    assert_eq!(
        (pcp_result(&r), pcp_lifetime(&r)),
        (PCP_CANNOT_PROVIDE_EXTERNAL, 377)
    );
}
