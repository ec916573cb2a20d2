//! Dispatch: what the gateway does with each datagram before any opcode-specific work
//! (rfc-checklist §1.2, §2 B items 7–10, §4 edge cases 1–17, §6 A1, A2, A3, A4, A13).
//!
//! Versions other than 0: with PCP on (the default) they get PCP's UNSUPP_VERSION (version
//! byte 2, result 1 in byte 3, at least 24 bytes) and version 2 is PCP; with `pcp: false` the
//! gateway is a NAT-PMP-only server and answers the 8-byte P5. Both are tested.

mod common;
use common::*;
use natpmp_pcp_core::{Datagram, Outgoing};
use std::net::{IpAddr, SocketAddr};

#[test]
fn empty_datagram_is_dropped() {
    // §4 case 1.
    let mut gw = Gw::new();
    gw.assert_dropped(A, &[]);
}

#[test]
fn one_byte_datagrams_are_dropped() {
    // §4 case 2: `00` and `02` (and anything else) of one byte get no reply.
    let mut gw = Gw::new();
    for b in [0x00u8, 0x01, 0x02, 0x80, 0xFF] {
        gw.assert_dropped(A, &[b]);
    }
}

#[test]
fn external_address_request_gets_12_byte_reply() {
    // §4 case 3: `00 00` -> `00 80 0000 SSSoE extIP`.
    let mut gw = Gw::new();
    gw.advance_secs(42);
    let r = gw.reply(A, &[0x00, 0x00]);
    assert_bytes(&r, &addr_reply(SUCCESS, 42, EXT));
    assert!(gw.changes.is_empty());
}

#[test]
fn external_address_request_with_10_trailing_bytes_is_answered_normally() {
    // §4 case 4, §6 A4: extra bytes after a supported request are ignored.
    let mut gw = Gw::new();
    gw.advance_secs(3);
    let mut req = vec![0x00, 0x00];
    req.extend_from_slice(&[0xAB; 10]);
    let r = gw.reply(A, &req);
    assert_bytes(&r, &addr_reply(SUCCESS, 3, EXT));
}

#[test]
fn external_address_request_of_5_bytes_gets_12_byte_reply() {
    // Brief: "opcode 0 with 5 bytes is answered with 12 bytes".
    let mut gw = Gw::new();
    let r = gw.reply(A, &[0x00, 0x00, 0x01, 0x02, 0x03]);
    assert_bytes(&r, &addr_reply(SUCCESS, 0, EXT));
}

#[test]
fn map_request_shorter_than_12_bytes_is_dropped() {
    // §4 case 5, §6 A4: every length 2..=11 for opcodes 1 and 2, with a valid-looking prefix.
    let mut gw = Gw::new();
    for op in [UDP, TCP] {
        let full = map_request(op, 8080, 8080, 7200);
        for len in 2..12 {
            gw.assert_dropped(A, &full[..len]);
        }
    }
    assert!(
        gw.mappings().is_empty(),
        "a dropped short request created a mapping"
    );
}

#[test]
fn map_request_with_reserved_ffff_is_handled_normally() {
    // §4 case 6, §1.2: Reserved bytes 2–3 are ignored on receipt.
    let mut gw = Gw::new();
    gw.advance_secs(9);
    let mut req = map_request(TCP, 8080, 8080, 7200);
    req[2] = 0xFF;
    req[3] = 0xFF;
    let r = gw.reply(A, &req);
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 9, 8080, 8080, 7200));
    assert_same_changes(&gw.changes, &created(TCP, EXT, 8080, A, 8080, 7200));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
}

#[test]
fn map_request_longer_than_12_bytes_is_answered_normally() {
    // §1.2 "Opcode 1/2 longer than 12 bytes", §6 A4: extra bytes ignored.
    let mut gw = Gw::new();
    for (op, iport) in [(UDP, 5000u16), (TCP, 6000u16)] {
        let mut req = map_request(op, iport, iport, 600).to_vec();
        req.extend_from_slice(&[0x5A; 20]);
        let r = gw.reply(A, &req);
        assert_bytes(&r, &map_reply(op, SUCCESS, 0, iport, iport, 600));
    }
    assert_eq!(gw.mappings().len(), 2);
}

#[test]
fn response_opcode_0x80_arriving_as_request_is_dropped() {
    // §4 case 7.
    let mut gw = Gw::new();
    gw.assert_dropped(A, &[0x00, 0x80]);
}

#[test]
fn response_opcodes_with_payload_are_dropped() {
    // §4 case 8: `00 81` / `00 82` plus 14 bytes, and opcode FF, get no reply.
    let mut gw = Gw::new();
    for op in [0x81u8, 0x82, 0xFF] {
        let mut req = vec![0x00, op];
        req.extend_from_slice(&[0u8; 14]);
        gw.assert_dropped(A, &req);
        gw.assert_dropped(A, &[0x00, op]);
    }
    assert!(gw.mappings().is_empty());
}

#[test]
fn legacy_announcement_from_another_gateway_is_dropped() {
    // §4 case 9: a 12-byte `00 80 0000 ...` at our port must not be answered (no reply loop).
    let mut gw = Gw::new();
    let ann = addr_reply(SUCCESS, 77, EXT2);
    gw.assert_dropped(B, &ann);
}

#[test]
fn opcode_with_top_bit_set_is_dropped_whatever_the_version() {
    // §6 A13: the R/top bit is checked before the version, so no version gets a P5 for it.
    let mut gw = Gw::new();
    for version in 0..=255u8 {
        for op in 128..=255u8 {
            let req = [version, op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let r = gw.send(A, &req);
            assert!(
                r.is_none(),
                "replied to {}: {}",
                hex(&req),
                hex(r.as_deref().unwrap_or(&[]))
            );
        }
    }
    assert!(gw.changes.is_empty());
}

#[test]
fn unknown_opcode_3_of_two_bytes_gets_8_byte_reply_with_result_5() {
    // §4 case 10, §6 A3: `00 03` -> `00 83 0005 SSSoE`.
    let mut gw = Gw::new();
    gw.advance_secs(17);
    let r = gw.reply(A, &[0x00, 0x03]);
    assert_bytes(&r, &[0x00, 0x83, 0x00, 0x05, 0x00, 0x00, 0x00, 17]);
}

#[test]
fn unknown_opcode_0x7f_of_12_bytes_is_echoed_with_top_bit_and_result_5() {
    // §4 case 11: 12-byte echo, byte 1 = 0xFF, bytes 2–3 = 0005, bytes 4–7 = SSSoE, 8–11 echoed.
    let mut gw = Gw::new();
    gw.advance_secs(300);
    let req = [
        0x00, 0x7F, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0, 0x11, 0x22,
    ];
    let r = gw.reply(A, &req);
    assert_bytes(
        &r,
        &[
            0x00, 0xFF, 0x00, 0x05, 0x00, 0x00, 0x01, 0x2C, 0xDE, 0xF0, 0x11, 0x22,
        ],
    );
}

#[test]
fn unknown_opcode_reply_length_is_max_of_request_length_and_8() {
    // §6 A3 for every length from 2 to 40 and every unknown opcode 3..=127.
    let mut gw = Gw::new();
    gw.advance_secs(5);
    for op in 3..=127u8 {
        for len in 2..=40usize {
            let mut req: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(37).wrapping_add(op))
                .collect();
            req[0] = 0;
            req[1] = op;
            let r = gw.reply(A, &req);
            assert_bytes(&r, &unsupported_opcode_reply(&req, 5));
        }
    }
    assert!(gw.changes.is_empty());
    assert!(gw.mappings().is_empty());
}

#[test]
fn unknown_opcode_reply_is_capped_at_1100_bytes() {
    // §6 A3: a 1104-byte request gets the first 1100 bytes echoed.
    let mut gw = Gw::new();
    let mut req: Vec<u8> = (0..1104u32).map(|i| (i % 251) as u8).collect();
    req[0] = 0;
    req[1] = 0x10;
    let r = gw.reply(A, &req);
    assert_eq!(r.len(), 1100);
    assert_bytes(&r, &unsupported_opcode_reply(&req, 0));
}

#[test]
fn unknown_opcode_is_answered_without_an_external_address() {
    let mut gw = Gw::without_address();
    gw.advance_secs(2);
    let r = gw.reply(A, &[0x00, 0x04, 0xAA, 0xBB]);
    assert_bytes(&r, &[0x00, 0x84, 0x00, 0x05, 0x00, 0x00, 0x00, 0x02]);
}

#[test]
fn unsupported_version_reply_is_8_bytes_with_opcode_0x80() {
    // §2 B item 7, §6 A1 (errata 3618): `00 80 0001 SSSoE`, whatever the request's opcode, from
    // a NAT-PMP-only server.
    let mut gw = Gw::natpmp_only();
    gw.advance_secs(65);
    for version in 1..=255u8 {
        for op in [0u8, 1, 2, 3, 0x7F] {
            let mut req = vec![version, op];
            req.extend_from_slice(&[0x11; 10]);
            let r = gw.reply(A, &req);
            assert_bytes(&r, &unsupported_version_reply(65));
            assert!(gw.changes.is_empty());
        }
    }
}

#[test]
fn unsupported_version_reply_is_pcp_format_when_pcp_is_on() {
    // §2 B item 7, §6 A2, RFC 6887 §9: with PCP on, every version but 0 and 2 gets PCP's
    // UNSUPP_VERSION: version 2 (the nearest one spoken), result 1, lifetime 1800, the epoch,
    // the request copied and padded to at least 24 bytes. Version 2 itself is PCP, and a PCP
    // request under 24 bytes is dropped (§4 case 18).
    let mut gw = Gw::new();
    gw.advance_secs(65);
    for version in 1..=255u8 {
        for op in [0u8, 1, 2, 3, 0x7F] {
            let mut req = vec![version, op];
            req.extend_from_slice(&[0x11; 10]);
            if version == 2 {
                gw.assert_dropped(A, &req);
                continue;
            }
            let r = gw.reply(A, &req);
            assert_eq!(r.len(), 24, "{}", hex(&r));
            assert_eq!((r[0], r[1], r[3]), (2, 0x80 | op, 1), "{}", hex(&r));
            assert_bytes(&r, &pcp_unsupported_version_reply(&req, 65));
            assert!(gw.changes.is_empty());
        }
    }
    assert!(gw.mappings().is_empty());
}

/// §4 cases 12 and 13: a valid 60-byte V2 MAP from A, TCP, internal port 8080, lifetime
/// 7200, nonce 0, no suggestion.
fn v2_map_from_a() -> Vec<u8> {
    let mut req = vec![0u8; 60];
    req[0] = 2;
    req[1] = 1;
    req[4..8].copy_from_slice(&7200u32.to_be_bytes());
    req[18..20].copy_from_slice(&[0xFF, 0xFF]);
    req[20..24].copy_from_slice(&A.octets());
    req[36] = 6;
    req[40..42].copy_from_slice(&8080u16.to_be_bytes());
    req
}

#[test]
fn pcp_map_request_gets_8_byte_unsupported_version_reply() {
    // §4 case 12 (a NAT-PMP-only configuration): a 60-byte V2 MAP -> P5.
    let mut gw = Gw::natpmp_only();
    gw.advance_secs(1);
    let r = gw.reply(A, &v2_map_from_a());
    assert_bytes(&r, &[0x00, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01]);
    assert!(gw.mappings().is_empty(), "a PCP request created a mapping");
    assert!(gw.elements().is_empty());
}

#[test]
fn pcp_map_request_is_served_when_pcp_is_on() {
    // §4 case 13 (a dual server): the same V2 MAP gets a 60-byte PCP reply, version 2, byte 1
    // = 0x81, SUCCESS, and the mapping exists, in the kernel too.
    let mut gw = Gw::new();
    gw.advance_secs(1);
    let r = gw.reply(A, &v2_map_from_a());
    assert_eq!(r.len(), 60, "{}", hex(&r));
    assert_eq!((r[0], r[1], r[3]), (2, 0x81, PCP_SUCCESS), "{}", hex(&r));
    assert_eq!(pcp_epoch(&r), 1);
    let m = gw
        .mapping(A, TCP, 8080)
        .expect("the PCP MAP made a mapping");
    let eport = u16::from_be_bytes([r[42], r[43]]);
    assert_eq!(m.external_port, eport);
    assert_eq!(&r[44..60], &mapped(EXT));
    assert_eq!(gw.elements(), pair(TCP, EXT, eport, A, 8080));
}

const VERSION_1_REQUESTS: [&[u8]; 3] = [
    &[0x01u8, 0x00],
    &[0x01, 0x01, 0, 0, 0x1F, 0x90, 0x1F, 0x90, 0, 0, 0x1C, 0x20],
    &[0x01, 0x05, 9, 9, 9],
];

#[test]
fn version_1_gets_unsupported_version_reply() {
    // §4 case 14 on a NAT-PMP-only server (§6 A2 does not arise): any opcode, several lengths.
    let mut gw = Gw::natpmp_only();
    for req in VERSION_1_REQUESTS {
        let r = gw.reply(A, req);
        assert_bytes(&r, &unsupported_version_reply(0));
    }
}

#[test]
fn version_1_gets_pcp_unsupported_version_reply_when_pcp_is_on() {
    // §4 case 14, §6 A2: version 1 (the PCP drafts' version) is answered in PCP's format,
    // naming version 2; its result byte still reads "Unsupported Version" to a NAT-PMP client.
    let mut gw = Gw::new();
    gw.advance_secs(3);
    for req in VERSION_1_REQUESTS {
        let r = gw.reply(A, req);
        assert_bytes(&r, &pcp_unsupported_version_reply(req, 3));
        assert_eq!(r[0], 2);
    }
}

#[test]
fn version_3_map_gets_nat_pmp_unsupported_version_reply() {
    // §4 case 15 on a NAT-PMP-only server: P5 (version 0, the only version it speaks).
    let mut gw = Gw::natpmp_only();
    gw.advance_secs(4);
    let mut req = vec![0u8; 60];
    req[0] = 3;
    req[1] = 1;
    let r = gw.reply(A, &req);
    assert_bytes(&r, &unsupported_version_reply(4));
}

#[test]
fn version_3_map_gets_pcp_unsupported_version_reply_when_pcp_is_on() {
    // §4 case 15 (a dual server): byte 0 = 2, byte 3 = 1, lifetime 1800, the current epoch, the
    // 60-byte request copied.
    let mut gw = Gw::new();
    gw.advance_secs(4);
    let mut req = vec![0u8; 60];
    req[0] = 3;
    req[1] = 1;
    let r = gw.reply(A, &req);
    assert_eq!(r.len(), 60);
    assert_bytes(&r[..12], &[2, 0x81, 0, 1, 0, 0, 0x07, 0x08, 0, 0, 0, 4]);
    assert_bytes(&r, &pcp_unsupported_version_reply(&req, 4));
}

#[test]
fn version_0xff_gets_unsupported_version_reply() {
    // §4 case 16: `FF 00` -> result 1, NAT-PMP-only.
    let mut gw = Gw::natpmp_only();
    let r = gw.reply(A, &[0xFF, 0x00]);
    assert_bytes(&r, &unsupported_version_reply(0));
}

#[test]
fn version_0xff_gets_pcp_unsupported_version_reply_when_pcp_is_on() {
    // §4 case 16 with PCP on: result 1 in byte 3, 24 bytes.
    let mut gw = Gw::new();
    let r = gw.reply(A, &[0xFF, 0x00]);
    assert_bytes(&r, &pcp_unsupported_version_reply(&[0xFF, 0x00], 0));
    assert_eq!((r.len(), r[3]), (24, 1));
}

#[test]
fn unsupported_version_with_top_bit_set_is_dropped() {
    // §4 case 17: `05 81 ...` -> no reply (top bit checked first).
    let mut gw = Gw::new();
    gw.assert_dropped(A, &[0x05, 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    gw.assert_dropped(A, &[0x02, 0x80]);
    gw.assert_dropped(A, &[0x01, 0xFF, 1, 2, 3]);
}

#[test]
fn unsupported_version_is_answered_without_an_external_address() {
    let config = natpmp_pcp_core::GatewayConfig {
        pcp: false,
        ..gateway_config(Default::default())
    };
    let mut gw = Gw::without_address_config(config);
    gw.advance_secs(8);
    let r = gw.reply(A, &[0x02, 0x01]);
    assert_bytes(&r, &unsupported_version_reply(8));
}

#[test]
fn unsupported_version_is_answered_without_an_external_address_when_pcp_is_on() {
    // With PCP on, `02 01` is a PCP request too short to answer (§4 case 18); version 1 gets
    // UNSUPP_VERSION with the epoch, address or not.
    let mut gw = Gw::without_address();
    gw.advance_secs(8);
    gw.assert_dropped(A, &[0x02, 0x01]);
    let r = gw.reply(A, &[0x01, 0x01]);
    assert_bytes(&r, &pcp_unsupported_version_reply(&[0x01, 0x01], 8));
}

#[test]
fn reply_buffer_is_cleared_before_the_reply_is_written() {
    // `handle_datagrams` appends to a caller-owned vector: what is already there stays as it
    // was, and leftovers from a previous, longer reply never leak into a shorter one, within
    // one batch or across batches.
    let mut gw = Gw::natpmp_only();
    let junk = Outgoing {
        payload: vec![0xEE; 2000],
        from: v4(GW_LAN),
        ifindex: 9,
        to: SocketAddr::new(v4(B), 1),
    };
    let mut out = vec![junk.clone()];
    let mut long = vec![0u8; 1100];
    long[1] = 0x33;
    let source = SocketAddr::new(v4(A), 40000);
    let datagram = |payload| Datagram {
        source,
        destination: IpAddr::V4(GW_LAN),
        ifindex: LAN_INDEX,
        payload,
    };
    let requests: [&[u8]; 3] = [&[0x00, 0x00], &long, &[0x07, 0x00]];
    gw.gateway
        .handle_datagrams(T0, requests.iter().map(|r| datagram(r)), &mut out);
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], junk);
    assert_bytes(&out[1].payload, &addr_reply(SUCCESS, 0, EXT));
    assert_eq!(out[2].payload.len(), 1100);
    assert_bytes(&out[3].payload, &unsupported_version_reply(0));
    // Again in separate batches, longest first, into the same vector.
    for r in [&long[..], &[0x07, 0x00], &[0x00, 0x00]] {
        gw.gateway.handle_datagrams(T0, [datagram(r)], &mut out);
    }
    assert_eq!(out.len(), 7);
    assert_eq!(out[4].payload.len(), 1100);
    assert_bytes(&out[5].payload, &unsupported_version_reply(0));
    assert_bytes(&out[6].payload, &addr_reply(SUCCESS, 0, EXT));
    for o in &out[1..] {
        assert_eq!((o.to, o.from, o.ifindex), (source, v4(GW_LAN), LAN_INDEX));
    }
}

#[test]
fn supported_opcodes_reply_with_128_plus_opcode() {
    // §2 B item 10.
    let mut gw = Gw::new();
    assert_eq!(gw.reply(A, &[0, 0])[1], 0x80);
    assert_eq!(gw.reply(A, &map_request(UDP, 1000, 0, 60))[1], 0x81);
    assert_eq!(gw.reply(A, &map_request(TCP, 1000, 0, 60))[1], 0x82);
    // Error replies too.
    assert_eq!(gw.reply(A, &map_request(UDP, 0, 0, 60))[1], 0x81);
    assert_eq!(gw.reply(A, &map_request(TCP, 0, 0, 60))[1], 0x82);
}

#[test]
fn requests_not_from_the_lan_to_the_gateway_are_dropped_unanswered() {
    // rfc-checklist §2 A, RFC 6886 §3.3, RFC 6887 §8.2: only datagrams that came in on an
    // internal interface, addressed to one of its own addresses, from a host on its subnets,
    // are answered. The rest (the external side included) get no reply and change nothing.
    let mut gw = Gw::new();
    let create = map_request(TCP, 8080, 8080, 7200);
    let from_a = SocketAddr::new(v4(A), 40000);
    let broadcast = v4(std::net::Ipv4Addr::new(192, 168, 88, 255));
    let multicast = v4(std::net::Ipv4Addr::new(224, 0, 0, 1));
    for (source, destination, ifindex) in [
        (SocketAddr::new(v4(OFF_LAN), 40000), v4(GW_LAN), LAN_INDEX),
        (from_a, v4(EXT), WAN_INDEX),
        (from_a, v4(GW_LAN), WAN_INDEX),
        (from_a, broadcast, LAN_INDEX),
        (from_a, multicast, LAN_INDEX),
        (SocketAddr::new(v4(EXT2), 40000), v4(EXT), WAN_INDEX),
    ] {
        for req in [&create[..], &addr_request()[..]] {
            let out = gw.deliver(&[(source, destination, ifindex, req)]);
            assert!(
                out.is_empty(),
                "answered {source} -> {destination} on {ifindex}: {out:?}"
            );
            assert!(gw.changes.is_empty());
        }
    }
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
    // The same request from the LAN, to the gateway, is answered, from the address it went to.
    let out = gw.deliver(&[(from_a, v4(GW_LAN), LAN_INDEX, &create)]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, out[0].from, out[0].ifindex),
        (from_a, v4(GW_LAN), LAN_INDEX)
    );
    assert_bytes(
        &out[0].payload,
        &map_reply(TCP, SUCCESS, 0, 8080, 8080, 7200),
    );
}
