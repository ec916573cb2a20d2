//! The byte parsers: NAT-PMP requests (`wire::natpmp`) and the PCP header, MAP and PEER
//! opcode data and options (`wire::pcp`, with the option rules of `front::pcp_options`).
//!
//! Beyond "no panic", each parse is checked against the layout it claims to have read: a
//! parsed value emitted again and parsed again is the same value, and what the parser accepts
//! or drops follows the length and bit rules of the RFC.

use crate::front::pcp_options;
use crate::wire::natpmp::{self, Request};
use crate::wire::pcp::{self, header, option, MapData, PeerData, RequestHeader, ResponseHeader};

/// One datagram through the NAT-PMP request parser and the matching reply emitters.
pub fn natpmp_request(data: &[u8]) {
    let parsed = natpmp::parse(data);
    let dropped_by_rule = data.len() < 2
        || data[1] & natpmp::RESPONSE_BIT != 0
        || (data[0] == natpmp::VERSION
            && matches!(data[1], natpmp::OP_MAP_UDP | natpmp::OP_MAP_TCP)
            && data.len() < natpmp::MAP_REQUEST_LEN);
    assert_eq!(
        parsed.is_none(),
        dropped_by_rule,
        "drop decision for {data:02x?}: {parsed:?}"
    );
    let mut out = Vec::new();
    match parsed {
        None => {}
        Some(Request::UnsupportedVersion) => {
            assert_ne!(data[0], natpmp::VERSION);
            natpmp::emit_unsupported_version(&mut out, 7);
            assert_eq!(out.len(), natpmp::UNSUPPORTED_VERSION_LEN);
        }
        Some(Request::ExternalAddress) => {
            assert_eq!(data[..2], [0, 0]);
            natpmp::emit_external_address(
                &mut out,
                natpmp::ResultCode::Success,
                7,
                std::net::Ipv4Addr::new(203, 0, 113, 5),
            );
            assert_eq!(
                natpmp::parse_external_address_response(&out),
                Some((0, 7, std::net::Ipv4Addr::new(203, 0, 113, 5)))
            );
        }
        Some(Request::UnsupportedOpcode(echoed)) => {
            assert_eq!(echoed, data, "the echo must carry the whole request");
            natpmp::emit_unsupported_opcode(&mut out, echoed, 7);
            assert_eq!(
                out.len(),
                data.len()
                    .clamp(natpmp::UNSUPPORTED_VERSION_LEN, natpmp::MAX_REPLY_LEN)
            );
            assert_eq!(out[1], data[1] | natpmp::RESPONSE_BIT);
            assert_eq!(out[2..4], [0, natpmp::ResultCode::UnsupportedOpcode as u8]);
        }
        Some(Request::Map(m)) => {
            assert_eq!(m.opcode(), data[1]);
            let field = |r: std::ops::Range<usize>| &data[r];
            assert_eq!(m.internal_port.to_be_bytes(), field(4..6));
            assert_eq!(m.suggested_external_port.to_be_bytes(), field(6..8));
            assert_eq!(m.lifetime.to_be_bytes(), field(8..12));
            natpmp::emit_map(
                &mut out,
                m.protocol,
                natpmp::ResultCode::Success,
                7,
                m.internal_port,
                m.suggested_external_port,
                m.lifetime,
            );
            let back = natpmp::parse_map_response(&out).expect("our own P4 parses");
            assert_eq!(
                (
                    back.protocol,
                    back.internal_port,
                    back.external_port,
                    back.lifetime
                ),
                (
                    m.protocol,
                    m.internal_port,
                    m.suggested_external_port,
                    m.lifetime
                )
            );
        }
    }
}

/// One datagram through every PCP parser: request and response headers, the opcode data of
/// MAP and PEER, the option list and each option's data, and the error response built from
/// the request.
pub fn pcp_wire(data: &[u8]) {
    let mut out = Vec::new();
    if let Some(r) = ResponseHeader::parse(data) {
        assert!(data.len() >= pcp::HEADER_LEN && data[1] & pcp::RESPONSE_BIT != 0);
        assert_eq!(r.opcode, data[1] & !pcp::RESPONSE_BIT);
    }
    let Some(h) = RequestHeader::parse(data) else {
        assert!(data.len() < pcp::HEADER_LEN);
        return;
    };
    out.clear();
    h.emit(&mut out);
    assert_eq!(RequestHeader::parse(&out), Some(h), "header round trip");
    assert_eq!(out[8..24], data[8..24]);

    // Error responses copy the request: at most 1100 bytes, a multiple of 4, at least 24.
    header::emit_error(
        &mut out,
        data,
        h.opcode,
        pcp::ResultCode::MalformedRequest,
        pcp::LONG_ERROR_LIFETIME,
        7,
        false,
    );
    assert!(out.len() >= pcp::HEADER_LEN && out.len() <= pcp::MAX_LEN && out.len() % 4 == 0);
    let reply = ResponseHeader::parse(&out).expect("our own error response parses");
    assert_eq!(
        (reply.version, reply.opcode, reply.result, reply.epoch),
        (
            pcp::VERSION,
            h.opcode,
            pcp::ResultCode::MalformedRequest as u8,
            7
        )
    );

    let body = &data[pcp::HEADER_LEN..];
    let (opcode, options) = match h.opcode {
        pcp::OP_MAP => match MapData::parse(body) {
            Some(m) => {
                out.clear();
                m.emit(&mut out);
                assert_eq!(MapData::parse(&out), Some(m), "MAP data round trip");
                (pcp::OP_MAP, &body[pcp::opcode::MAP_DATA_LEN..])
            }
            None => {
                assert!(body.len() < pcp::opcode::MAP_DATA_LEN);
                (pcp::OP_MAP, &[][..])
            }
        },
        pcp::OP_PEER => match PeerData::parse(body) {
            Some(p) => {
                out.clear();
                p.emit(&mut out);
                assert_eq!(PeerData::parse(&out), Some(p), "PEER data round trip");
                (pcp::OP_PEER, &body[pcp::opcode::PEER_DATA_LEN..])
            }
            None => {
                assert!(body.len() < pcp::opcode::PEER_DATA_LEN);
                (pcp::OP_PEER, &[][..])
            }
        },
        pcp::OP_ANNOUNCE => (pcp::OP_ANNOUNCE, body),
        // Other opcodes carry no data we know: read the rest as options anyway, under MAP's
        // rules, so the option parser sees every byte string.
        _ => (pcp::OP_MAP, body),
    };
    options_round_trip(options);
    if let Ok(parsed) = pcp_options::parse(opcode, options) {
        assert!(opcode == pcp::OP_MAP || parsed.filters.is_empty());
        if let Some(d) = parsed.description {
            if let Some(text) = pcp_options::description_text(d) {
                assert!(text.len() <= pcp_options::DESCRIPTION_KEPT);
                assert!(d.starts_with(text.as_bytes()));
            }
        }
    }
}

/// The option list, split, emitted again and split again, is the same list.
fn options_round_trip(bytes: &[u8]) {
    let Some(raw) = option::split(bytes) else {
        return;
    };
    let mut again = Vec::new();
    for o in &raw {
        option::emit(&mut again, o.code, o.data);
        if o.code == option::FILTER {
            if let Some(f) = option::FilterOption::parse(o.data) {
                let mut one = Vec::new();
                f.emit(&mut one);
                let split = option::split(&one).expect("our own FILTER splits");
                assert_eq!(split.len(), 1);
                assert_eq!(option::FilterOption::parse(split[0].data), Some(f));
            } else {
                assert_ne!(o.data.len(), option::FILTER_LEN);
            }
        }
    }
    assert_eq!(again.len() % 4, 0);
    assert_eq!(option::split(&again), Some(raw), "option list round trip");
}
