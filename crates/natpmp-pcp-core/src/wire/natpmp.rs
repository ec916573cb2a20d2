//! NAT-PMP (RFC 6886) messages: request classification and response emission.
//!
//! Layouts (rfc-checklist §1.1): requests P1 (2 bytes) and P3 (12 bytes); responses P2 (12),
//! P4 (16), P5 (8) and the unsupported-opcode echo P6. Parsing never panics: every field is
//! read only after the length has been checked.

use crate::addr::Protocol;
use std::net::Ipv4Addr;

/// The only NAT-PMP version.
pub const VERSION: u8 = 0;
/// Set in byte 1 of every response (response opcode = 128 + request opcode).
pub const RESPONSE_BIT: u8 = 0x80;
pub const OP_EXTERNAL_ADDRESS: u8 = 0;
pub const OP_MAP_UDP: u8 = 1;
pub const OP_MAP_TCP: u8 = 2;
/// Server port (requests) and client port (announcements).
pub const SERVER_PORT: u16 = 5351;
pub const CLIENT_PORT: u16 = 5350;
/// Announcements go to the all-hosts group (RFC 6886 §3.2.1).
pub const ANNOUNCE_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// Longest reply we ever send; PCP's message limit, applied to the opcode echo too (§6 A3).
pub const MAX_REPLY_LEN: usize = 1100;

pub const EXTERNAL_ADDRESS_REQUEST_LEN: usize = 2;
pub const MAP_REQUEST_LEN: usize = 12;
pub const EXTERNAL_ADDRESS_RESPONSE_LEN: usize = 12;
pub const MAP_RESPONSE_LEN: usize = 16;
pub const UNSUPPORTED_VERSION_LEN: usize = 8;

/// Byte ranges of each field.
mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const OPCODE: usize = 1;
    // Requests (P3).
    pub const REQ_INTERNAL_PORT: Range<usize> = 4..6;
    pub const REQ_SUGGESTED_PORT: Range<usize> = 6..8;
    pub const REQ_LIFETIME: Range<usize> = 8..12;
    // Responses.
    pub const RESULT: Range<usize> = 2..4;
    pub const SSSOE: Range<usize> = 4..8;
    pub const EXTERNAL_ADDRESS: Range<usize> = 8..12;
    pub const RESP_INTERNAL_PORT: Range<usize> = 8..10;
    pub const RESP_EXTERNAL_PORT: Range<usize> = 10..12;
    pub const RESP_LIFETIME: Range<usize> = 12..16;
}

/// NAT-PMP result codes (RFC 6886 §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ResultCode {
    Success = 0,
    UnsupportedVersion = 1,
    NotAuthorized = 2,
    NetworkFailure = 3,
    OutOfResources = 4,
    UnsupportedOpcode = 5,
}

/// A map request (opcode 1 or 2). Reserved bytes 2–3 are ignored (RFC 6886 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    pub protocol: Protocol,
    pub internal_port: u16,
    pub suggested_external_port: u16,
    pub lifetime: u32,
}

impl MapRequest {
    pub fn opcode(&self) -> u8 {
        opcode_of(self.protocol)
    }
}

/// The request opcode for a protocol.
pub fn opcode_of(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Udp => OP_MAP_UDP,
        Protocol::Tcp => OP_MAP_TCP,
    }
}

/// What a datagram arriving on port 5351 asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    ExternalAddress,
    Map(MapRequest),
    /// Version other than 0: answer with P5.
    UnsupportedVersion,
    /// Version 0, opcode 3–127: answer with the echo (P6); carries the whole request.
    UnsupportedOpcode(&'a [u8]),
}

/// Classify a datagram. `None` means drop it silently.
///
/// Order of checks (rfc-checklist §6 A13): first anything under 2 bytes (nothing to read) and
/// anything with the response bit set, whatever its version, so we never answer another
/// server's replies or announcements (no reflection loops); then the version; then the opcode.
/// Map requests under 12 bytes are dropped; extra bytes after any supported request are ignored
/// and the request is answered normally (§6 A4, as miniupnpd does), because tolerant parsing
/// costs nothing here and a client that pads should still work.
pub fn parse(datagram: &[u8]) -> Option<Request<'_>> {
    if datagram.len() < EXTERNAL_ADDRESS_REQUEST_LEN {
        return None;
    }
    let opcode = datagram[field::OPCODE];
    if opcode & RESPONSE_BIT != 0 {
        return None;
    }
    if datagram[field::VERSION] != VERSION {
        return Some(Request::UnsupportedVersion);
    }
    let protocol = match opcode {
        OP_EXTERNAL_ADDRESS => return Some(Request::ExternalAddress),
        OP_MAP_UDP => Protocol::Udp,
        OP_MAP_TCP => Protocol::Tcp,
        _ => return Some(Request::UnsupportedOpcode(datagram)),
    };
    if datagram.len() < MAP_REQUEST_LEN {
        return None;
    }
    Some(Request::Map(MapRequest {
        protocol,
        internal_port: be16(&datagram[field::REQ_INTERNAL_PORT]),
        suggested_external_port: be16(&datagram[field::REQ_SUGGESTED_PORT]),
        lifetime: be32(&datagram[field::REQ_LIFETIME]),
    }))
}

/// P2 (and the P7 announcement): result, SSSoE and the external address. A non-zero result
/// always carries 0.0.0.0 (RFC 6886 §3.2), whatever `addr` says.
pub fn emit_external_address(out: &mut Vec<u8>, result: ResultCode, sssoe: u32, addr: Ipv4Addr) {
    let addr = if result == ResultCode::Success {
        addr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    emit_header(out, OP_EXTERNAL_ADDRESS, result, sssoe);
    out.extend_from_slice(&addr.octets());
}

/// P4: the answer to a map request.
pub fn emit_map(
    out: &mut Vec<u8>,
    protocol: Protocol,
    result: ResultCode,
    sssoe: u32,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
) {
    emit_header(out, opcode_of(protocol), result, sssoe);
    out.extend_from_slice(&internal_port.to_be_bytes());
    out.extend_from_slice(&external_port.to_be_bytes());
    out.extend_from_slice(&lifetime.to_be_bytes());
}

/// P5: version 0 (the highest we speak) and opcode 0x80, as errata 3618 corrects the RFC's
/// figure (rfc-checklist §6 A1).
pub fn emit_unsupported_version(out: &mut Vec<u8>, sssoe: u32) {
    emit_header(
        out,
        OP_EXTERNAL_ADDRESS,
        ResultCode::UnsupportedVersion,
        sssoe,
    );
}

/// P6: the request echoed with the response bit set and result 5 (RFC 6886 §3.5). A strict
/// echo of a 2-byte request would carry neither result nor SSSoE, which every response must
/// (§3.6), so the reply is at least 8 bytes and at most 1100 (rfc-checklist §6 A3).
pub fn emit_unsupported_opcode(out: &mut Vec<u8>, request: &[u8], sssoe: u32) {
    out.clear();
    let len = request.len().clamp(UNSUPPORTED_VERSION_LEN, MAX_REPLY_LEN);
    out.resize(len, 0);
    let echoed = request.len().min(len);
    out[..echoed].copy_from_slice(&request[..echoed]);
    out[field::OPCODE] |= RESPONSE_BIT;
    out[field::RESULT].copy_from_slice(&(ResultCode::UnsupportedOpcode as u16).to_be_bytes());
    out[field::SSSOE].copy_from_slice(&sssoe.to_be_bytes());
}

/// A parsed P4, for tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapResponse {
    pub protocol: Protocol,
    pub result: u16,
    pub sssoe: u32,
    pub internal_port: u16,
    pub external_port: u16,
    pub lifetime: u32,
}

/// Parse a P4; `None` unless it is exactly one.
pub fn parse_map_response(bytes: &[u8]) -> Option<MapResponse> {
    if bytes.len() < MAP_RESPONSE_LEN || bytes[field::VERSION] != VERSION {
        return None;
    }
    let protocol = match bytes[field::OPCODE] {
        0x81 => Protocol::Udp,
        0x82 => Protocol::Tcp,
        _ => return None,
    };
    Some(MapResponse {
        protocol,
        result: be16(&bytes[field::RESULT]),
        sssoe: be32(&bytes[field::SSSOE]),
        internal_port: be16(&bytes[field::RESP_INTERNAL_PORT]),
        external_port: be16(&bytes[field::RESP_EXTERNAL_PORT]),
        lifetime: be32(&bytes[field::RESP_LIFETIME]),
    })
}

/// A parsed P2, for tests and tools: (result, SSSoE, address).
pub fn parse_external_address_response(bytes: &[u8]) -> Option<(u16, u32, Ipv4Addr)> {
    if bytes.len() < EXTERNAL_ADDRESS_RESPONSE_LEN
        || bytes[field::VERSION] != VERSION
        || bytes[field::OPCODE] != RESPONSE_BIT
    {
        return None;
    }
    let a = &bytes[field::EXTERNAL_ADDRESS];
    Some((
        be16(&bytes[field::RESULT]),
        be32(&bytes[field::SSSOE]),
        Ipv4Addr::new(a[0], a[1], a[2], a[3]),
    ))
}

fn emit_header(out: &mut Vec<u8>, request_opcode: u8, result: ResultCode, sssoe: u32) {
    out.clear();
    out.push(VERSION);
    out.push(RESPONSE_BIT | request_opcode);
    out.extend_from_slice(&(result as u16).to_be_bytes());
    out.extend_from_slice(&sssoe.to_be_bytes());
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_checklist_tcp_map_example() {
        // rfc-checklist §1.1: TCP, internal 8080, suggested 8080, lifetime 7200.
        let req = [
            0x00, 0x02, 0x00, 0x00, 0x1F, 0x90, 0x1F, 0x90, 0x00, 0x00, 0x1C, 0x20,
        ];
        assert_eq!(
            parse(&req),
            Some(Request::Map(MapRequest {
                protocol: Protocol::Tcp,
                internal_port: 8080,
                suggested_external_port: 8080,
                lifetime: 7200
            }))
        );
    }

    #[test]
    fn emits_the_checklist_external_address_example() {
        let mut out = Vec::new();
        emit_external_address(
            &mut out,
            ResultCode::Success,
            0x0102_0304,
            Ipv4Addr::new(203, 0, 113, 5),
        );
        assert_eq!(out, [0, 0x80, 0, 0, 1, 2, 3, 4, 0xCB, 0x00, 0x71, 0x05]);
    }

    #[test]
    fn error_external_address_reply_carries_zero_address() {
        let mut out = Vec::new();
        let addr = Ipv4Addr::new(203, 0, 113, 5);
        emit_external_address(&mut out, ResultCode::NetworkFailure, 7, addr);
        assert_eq!(out, [0, 0x80, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0]);
    }

    #[test]
    fn unsupported_opcode_echo_of_two_bytes_is_padded_to_eight() {
        let mut out = Vec::new();
        emit_unsupported_opcode(&mut out, &[0, 3], 9);
        assert_eq!(out, [0, 0x83, 0, 5, 0, 0, 0, 9]);
    }

    #[test]
    fn unsupported_opcode_echo_keeps_the_tail_and_caps_at_1100() {
        let mut out = Vec::new();
        let mut req = vec![0u8; 1500];
        req[1] = 0x7f;
        req[10] = 0xAA;
        emit_unsupported_opcode(&mut out, &req, 1);
        assert_eq!(out.len(), MAX_REPLY_LEN);
        assert_eq!(out[1], 0xff);
        assert_eq!(out[10], 0xAA);
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0]), None);
        assert_eq!(parse(&[0, 0x80]), None);
        assert_eq!(parse(&[2, 0x81, 0, 0]), None);
        assert_eq!(parse(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
