//! Creating and renewing mappings, opcodes 1 and 2 (rfc-checklist §2 F items 27–35, §2 I 49,
//! §4 cases 45, 46, 48, 49, 58, 62), the mapping view and the kernel elements.

mod common;
use common::*;
use natpmp_pcp_core::view::{MappingKind, Via};
use natpmp_pcp_core::{Element, EngineConfig, MappingView, Protocol};
use std::net::IpAddr;

#[test]
fn tcp_map_request_example_from_checklist_is_granted_as_asked() {
    // §1.1: `00 02 0000 1F90 1F90 00001C20` -> `00 82 0000 ssssssss 1F90 1F90 00001C20`.
    let mut gw = Gw::new();
    gw.advance_secs(0x21);
    let req = [
        0x00, 0x02, 0x00, 0x00, 0x1F, 0x90, 0x1F, 0x90, 0x00, 0x00, 0x1C, 0x20,
    ];
    let r = gw.reply(A, &req);
    assert_bytes(
        &r,
        &[
            0x00, 0x82, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x1F, 0x90, 0x1F, 0x90, 0x00, 0x00,
            0x1C, 0x20,
        ],
    );
}

#[test]
fn create_stages_one_add_with_timeout_two_seconds_past_the_lifetime() {
    // One transaction adding the mapping's two elements (outbound rewrite and inbound
    // translation), each with timeout = lifetime + 2 s.
    let mut gw = Gw::new();
    let mut held = Vec::new();
    for (op, iport, eport, life) in [(UDP, 5000u16, 40000u16, 3600u32), (TCP, 6000, 41000, 120)] {
        let r = gw.reply(B, &map_request(op, iport, eport, life));
        assert_bytes(&r, &map_reply(op, SUCCESS, 0, iport, eport, life));
        assert_eq!(gw.transactions.len(), 1, "{:?}", gw.transactions);
        assert_same_changes(&gw.changes, &created(op, EXT, eport, B, iport, life));
        held.extend(pair(op, EXT, eport, B, iport));
        held.sort();
        assert_eq!(gw.elements(), held);
    }
}

#[test]
fn mapping_internal_address_is_the_request_source() {
    // §2 A item 2: the source IP becomes the internal address.
    let mut gw = Gw::new();
    gw.map_ok(C, UDP, 7000, 7000, 60);
    let f = adds(&gw.changes);
    assert_eq!(f.len(), 2);
    assert!(
        f.iter()
            .all(|(e, _)| e.internal_ip() == std::net::IpAddr::from(C)),
        "{f:?}"
    );
    assert_eq!(gw.mapping(C, UDP, 7000).expect("mapping").client, v4(C));
}

#[test]
fn udp_mapping_creates_no_tcp_mapping() {
    // §2 F item 27, §4 case 48.
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 4000, 4000, 600);
    assert!(gw
        .changes
        .iter()
        .all(|c| c.element().protocol() == Protocol::Udp));
    assert!(gw.mapping(A, TCP, 4000).is_none());
    assert!(gw.elements().iter().all(|e| e.protocol() == Protocol::Udp));
}

#[test]
fn tcp_mapping_creates_no_udp_mapping() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 4000, 4000, 600);
    assert!(gw
        .changes
        .iter()
        .all(|c| c.element().protocol() == Protocol::Tcp));
    assert!(gw.mapping(A, UDP, 4000).is_none());
    assert!(gw.elements().iter().all(|e| e.protocol() == Protocol::Tcp));
}

#[test]
fn udp_and_tcp_mappings_of_one_internal_port_are_independent() {
    let mut gw = Gw::new();
    let u = gw.map_ok(A, UDP, 9000, 9000, 600);
    let t = gw.map_ok(A, TCP, 9000, 9000, 300);
    assert_eq!(
        (u, t),
        (9000, 9000),
        "the same client may hold both protocols of a port"
    );
    assert_eq!(gw.mapping(A, UDP, 9000).unwrap().lifetime, 600);
    assert_eq!(gw.mapping(A, TCP, 9000).unwrap().lifetime, 300);
}

#[test]
fn suggested_port_held_by_another_client_gets_a_different_nonzero_port() {
    // §2 F item 29, §4 case 45.
    for op in [UDP, TCP] {
        let mut gw = Gw::new();
        assert_eq!(gw.map_ok(A, op, 8080, 8080, 7200), 8080);
        let m = gw.map(B, op, 8080, 8080, 7200);
        assert_eq!(m.result, SUCCESS);
        assert_ne!(m.eport, 0);
        assert_ne!(m.eport, 8080);
        assert!(gw.config().engine.port_range.contains(&m.eport));
        assert_eq!(m.iport, 8080);
        assert_same_changes(&gw.changes, &created(op, EXT, m.eport, B, 8080, 7200));
        // A's mapping untouched.
        assert_eq!(gw.mapping(A, op, 8080).unwrap().external_port, 8080);
    }
}

#[test]
fn suggested_port_zero_gets_a_high_nonzero_port() {
    // §2 F item 30, §4 case 49, §6 A9.
    let mut gw = Gw::new();
    for (i, op) in [UDP, TCP, UDP, TCP].into_iter().enumerate() {
        let iport = 100 + i as u16;
        let m = gw.map(A, op, iport, 0, 3600);
        assert_eq!(m.result, SUCCESS);
        assert!(m.eport >= 1024, "port {} below 1024", m.eport);
        assert!(m.eport != 5350 && m.eport != 5351);
        assert_bytes(
            &gw.reply(A, &map_request(op, iport, 0, 3600)),
            &map_reply(op, SUCCESS, 0, iport, m.eport, 3600),
        );
    }
}

#[test]
fn suggested_port_zero_gets_a_port_from_the_configured_range() {
    let mut gw = Gw::small_range(50000, 50009);
    let mut seen = Vec::new();
    for iport in 1..=10u16 {
        let p = gw.map_ok(A, TCP, iport, 0, 60);
        assert!(
            (50000..=50009).contains(&p),
            "port {p} outside 50000..=50009"
        );
        assert!(!seen.contains(&p), "port {p} handed out twice");
        seen.push(p);
    }
}

#[test]
fn suggested_port_outside_the_range_is_replaced_by_one_inside() {
    // §6 A9: suggested ports outside port_range are replaced, never refused.
    let mut gw = Gw::new();
    for (iport, suggested) in [(80u16, 80u16), (22, 22), (1, 1), (1023, 1023)] {
        let m = gw.map(A, TCP, iport, suggested, 600);
        assert_eq!(m.result, SUCCESS);
        assert!(m.eport >= 1024, "{suggested} -> {}", m.eport);
    }
    let mut gw = Gw::small_range(40000, 40009);
    let m = gw.map(A, UDP, 8080, 8080, 600);
    assert_eq!(m.result, SUCCESS);
    assert!((40000..=40009).contains(&m.eport));
}

#[test]
fn suggested_ports_5350_and_5351_are_never_granted() {
    // §2 F item 34: UDP (PCP MUST) and, by this engine's choice, TCP too.
    let mut gw = Gw::new();
    for op in [UDP, TCP] {
        for suggested in [5350u16, 5351] {
            let m = gw.map(A, op, suggested, suggested, 600);
            assert_eq!(m.result, SUCCESS);
            assert!(
                m.eport != 5350 && m.eport != 5351 && m.eport != 0,
                "{op} {suggested} -> {}",
                m.eport
            );
        }
    }
}

#[test]
fn range_containing_5350_and_5351_never_hands_them_out() {
    let mut gw = Gw::small_range(5349, 5352);
    for op in [UDP, TCP] {
        let mut got = Vec::new();
        for (client, iport) in [(A, 1u16), (B, 2)] {
            got.push(gw.map_ok(client, op, iport, 5351, 60));
        }
        got.sort();
        assert_eq!(got, vec![5349, 5352], "{op}");
    }
}

#[test]
fn same_client_same_internal_port_gets_the_existing_port_whatever_it_suggests() {
    // §2 F item 31, §4 case 46: Remove(old) then Add(new), lifetime refreshed.
    let mut gw = Gw::new();
    assert_eq!(gw.map_ok(A, TCP, 8080, 8080, 7200), 8080);
    gw.advance_secs(100);
    let r = gw.reply(A, &map_request(TCP, 8080, 9999, 3600));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 100, 8080, 8080, 3600));
    // One transaction: both elements removed, then added again with the new timeout.
    assert_eq!(gw.transactions.len(), 1, "{:?}", gw.transactions);
    assert_eq!(gw.changes.len(), 4, "{:?}", gw.changes);
    let mut want = removed(TCP, EXT, 8080, A, 8080);
    want.extend(created(TCP, EXT, 8080, A, 8080, 3600));
    assert_same_changes(&gw.changes, &want);
    assert_removes_before_adds(&gw.changes);
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
    assert!(gw
        .kernel_elements()
        .iter()
        .all(|(_, t)| *t == secs(3600) + GRACE));
    assert_eq!(gw.mappings().len(), 1);
    let v = gw.mapping(A, TCP, 8080).unwrap();
    assert_eq!((v.lifetime, v.expires_in), (3600, 3600));
}

#[test]
fn retransmitted_request_gets_an_identical_reply() {
    // §2 F item 31: a retransmission after a lost reply.
    let mut gw = Gw::new();
    let first = gw.reply(A, &map_request(UDP, 5060, 0, 7200));
    let second = gw.reply(A, &map_request(UDP, 5060, 0, 7200));
    assert_bytes(&second, &first);
    assert_eq!(gw.mappings().len(), 1);
}

#[test]
fn suggested_zero_on_renewal_keeps_the_existing_port() {
    let mut gw = Gw::new();
    let p = gw.map_ok(A, UDP, 5060, 12345, 7200);
    gw.advance_secs(3600);
    assert_eq!(gw.map_ok(A, UDP, 5060, 0, 7200), p);
}

#[test]
fn different_internal_port_suggesting_own_held_port_gets_a_different_port() {
    let mut gw = Gw::new();
    assert_eq!(gw.map_ok(A, UDP, 1000, 30000, 600), 30000);
    let m = gw.map(A, UDP, 1001, 30000, 600);
    assert_eq!(m.result, SUCCESS);
    assert!(m.eport != 30000 && m.eport != 0);
    assert_eq!(gw.mappings().len(), 2);
}

#[test]
fn renewal_after_table_reset_gets_the_suggested_old_port() {
    // §2 F item 32: after state loss the old suggestion is normally free and granted.
    let mut gw = Gw::new();
    let p = gw.map_ok(A, TCP, 8080, 0, 7200);
    gw.advance_secs(10);
    gw.reset();
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
    gw.advance_secs(3);
    let r = gw.reply(A, &map_request(TCP, 8080, p, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 3, 8080, p, 7200));
    assert_same_changes(&gw.changes, &created(TCP, EXT, p, A, 8080, 7200));
}

#[test]
fn internal_port_zero_with_nonzero_lifetime_is_refused_with_result_2() {
    // §2 F item 35, §4 case 58, §6 A5.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 80, 8080, 600);
    gw.advance_secs(11);
    for op in [UDP, TCP] {
        for (eport, life) in [(0u16, 7200u32), (8080, 7200), (0, 1), (1234, u32::MAX)] {
            let r = gw.reply(A, &map_request(op, 0, eport, life));
            assert_bytes(&r, &map_reply(op, REFUSED, 11, 0, 0, 0));
            assert!(gw.changes.is_empty());
        }
    }
    assert_eq!(
        gw.mappings().len(),
        1,
        "internal port 0 must neither create nor delete"
    );
}

#[test]
fn map_without_external_address_is_result_3_with_port_echoed() {
    // §4 case 62: result 3, internal port echoed, external port 0, lifetime 0, no changes.
    let mut gw = Gw::without_address();
    gw.advance_secs(6);
    for op in [UDP, TCP] {
        for (iport, eport, life) in [
            (8080u16, 8080u16, 7200u32),
            (1, 0, 1),
            (65535, 65535, u32::MAX),
        ] {
            let r = gw.reply(A, &map_request(op, iport, eport, life));
            assert_bytes(&r, &map_reply(op, NETWORK_FAILURE, 6, iport, 0, 0));
            assert!(gw.changes.is_empty());
        }
    }
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
}

#[test]
fn mapping_view_shows_what_was_granted() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8081, 7200);
    gw.map_ok(B, UDP, 53, 40053, 60);
    assert_eq!(
        gw.mapping(A, TCP, 8080).unwrap(),
        MappingView {
            client: v4(A),
            protocol: Protocol::Tcp,
            internal_port: 8080,
            external_addr: Some(v4(EXT)),
            external_port: 8081,
            lifetime: 7200,
            expires_in: 7200,
            via: Via::NatPmp,
            kind: MappingKind::Map,
            nonce_owned: false,
            remote: None,
            filters: Vec::new(),
            description: None,
        }
    );
    assert_eq!(
        gw.mapping(A, TCP, 8080).unwrap().comment_text(),
        "NAT-PMP tcp 8080"
    );
    assert_eq!(
        gw.mapping(B, UDP, 53).unwrap().comment_text(),
        "NAT-PMP udp 53"
    );
}

#[test]
fn mapping_view_expires_in_counts_down() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1234, 1234, 100);
    gw.advance_secs(30);
    let v = gw.mapping(A, UDP, 1234).unwrap();
    assert_eq!((v.lifetime, v.expires_in), (100, 70));
    gw.advance_secs(69);
    assert_eq!(gw.mapping(A, UDP, 1234).unwrap().expires_in, 1);
}

#[test]
fn mappings_are_sorted_by_client_protocol_and_internal_port() {
    let mut gw = Gw::new();
    // Inserted out of order; C (…88.9) sorts before A (…88.10) numerically.
    let order = [
        (B, TCP, 5u16),
        (A, TCP, 300),
        (C, UDP, 7),
        (A, UDP, 20),
        (A, TCP, 40),
        (A, UDP, 3),
        (B, UDP, 1),
    ];
    for (client, op, iport) in order {
        gw.map_ok(client, op, iport, 0, 600);
    }
    let got: Vec<(IpAddr, Protocol, u16)> = gw
        .mappings()
        .iter()
        .map(|m| (m.client, m.protocol, m.internal_port))
        .collect();
    let mut expected: Vec<(IpAddr, Protocol, u16)> = order
        .iter()
        .map(|&(c, op, p)| (v4(c), proto(op), p))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(got[0].0, v4(C));
}

#[test]
fn forwards_agree_with_mappings() {
    // The kernel holds exactly the outbound and inbound element of every mapping the views
    // show, and nothing else.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.map_ok(A, UDP, 8080, 8080, 7200);
    gw.map_ok(B, UDP, 9, 0, 60);
    assert_eq!(gw.mappings().len(), 3);
    assert_eq!(gw.elements(), gw.elements_of_views());
    assert_eq!(gw.elements().len(), 6);
    let outbound = gw
        .elements()
        .iter()
        .filter(|e| matches!(e, Element::Outbound { .. }))
        .count();
    assert_eq!(outbound, 3);
    gw.assert_kernel_matches_engine();
}

#[test]
fn two_clients_may_map_the_same_internal_port() {
    let mut gw = Gw::new();
    let a = gw.map_ok(A, TCP, 22, 0, 600);
    let b = gw.map_ok(B, TCP, 22, 0, 600);
    assert_ne!(a, b);
    assert_eq!(gw.mappings().len(), 2);
}

#[test]
fn map_replies_carry_the_current_sssoe() {
    // §2 F item 33.
    let mut gw = Gw::new();
    gw.advance_secs(1234);
    let m = gw.map(A, UDP, 1, 0, 60);
    assert_eq!(m.sssoe, 1234);
}

#[test]
fn allocation_is_deterministic_for_a_given_seed() {
    // Same seed, same inputs -> same ports (the engine is deterministic).
    let run = |seed: u64| {
        let mut gw = Gw::with_engine(EngineConfig {
            seed,
            ..EngineConfig::default()
        });
        (1..=5u16)
            .map(|i| gw.map_ok(A, UDP, i, 0, 60))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_eq!(run(0xDEAD_BEEF), run(0xDEAD_BEEF));
}

#[test]
fn nat_pmp_request_for_a_pcp_owned_mapping_is_read_only() {
    // rfc-checklist §3.13: a NAT-PMP request for a mapping PCP made (with a nonce) gets its
    // external port and changes nothing: the lifetime is what is left, never more than asked,
    // and a NAT-PMP delete of it is refused with result 2 and the port it keeps.
    let mut gw = Gw::new();
    let nonce = [7u8; 12];
    let r = gw.reply(A, &pcp_map_request(A, 3600, nonce, 6, 8080, 0, [0; 16]));
    assert_eq!((r[0], r[1], r[3]), (2, 0x81, PCP_SUCCESS), "{}", hex(&r));
    let eport = u16::from_be_bytes([r[42], r[43]]);
    let elements = gw.elements();
    assert_eq!(elements, pair(TCP, EXT, eport, A, 8080));
    gw.advance_secs(100);
    // Renewal asking for more: the port, what is left (3500), no change in the kernel.
    let r = gw.reply(A, &map_request(TCP, 8080, 1234, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 100, 8080, eport, 3500));
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    // Asking for less: never more than asked.
    let r = gw.reply(A, &map_request(TCP, 8080, 0, 60));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 100, 8080, eport, 60));
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    // Delete: refused, the mapping stays.
    let r = gw.reply(A, &map_request(TCP, 8080, 0, 0));
    assert_bytes(&r, &map_reply(TCP, REFUSED, 100, 8080, eport, 0));
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    // Delete-all: the PCP mapping stays, so the result is 2 as well.
    let r = gw.reply(A, &map_request(TCP, 0, 0, 0));
    assert_bytes(&r, &map_reply(TCP, REFUSED, 100, 0, 0, 0));
    let v = gw.mapping(A, TCP, 8080).unwrap();
    assert_eq!((v.via, v.lifetime, v.expires_in), (Via::Pcp, 3600, 3500));
    assert_eq!(gw.elements(), elements);
}
