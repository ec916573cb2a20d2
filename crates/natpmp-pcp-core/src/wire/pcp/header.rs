//! The PCP common header (RFC 6887 §7.1, §7.2) and error responses (§8.2).

use super::{addr128, be32, ResultCode, HEADER_LEN, MAX_LEN, RESPONSE_BIT, VERSION};
use std::net::Ipv6Addr;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const OPCODE: usize = 1;
    pub const RESULT: usize = 3;
    pub const LIFETIME: Range<usize> = 4..8;
    // Requests.
    pub const CLIENT_ADDR: Range<usize> = 8..24;
    // Responses.
    pub const RESERVED_BYTE: usize = 2;
    pub const EPOCH: Range<usize> = 8..12;
    pub const RESERVED_TAIL: Range<usize> = 12..24;
}

/// A request header: opcode, requested lifetime, the PCP client's IP address field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub opcode: u8,
    pub lifetime: u32,
    pub client_addr: Ipv6Addr,
}

impl RequestHeader {
    /// The header of a request, `None` if shorter than 24 bytes. Version and R bit are not
    /// checked here: dispatch does that first.
    pub fn parse(b: &[u8]) -> Option<RequestHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(RequestHeader {
            opcode: b[field::OPCODE] & !RESPONSE_BIT,
            lifetime: be32(&b[field::LIFETIME]),
            client_addr: addr128(&b[field::CLIENT_ADDR]),
        })
    }

    /// Append this header as a request (for clients and tests).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.opcode & !RESPONSE_BIT, 0, 0]);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.client_addr.octets());
    }
}

/// A response header as a client reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    pub version: u8,
    pub opcode: u8,
    pub result: u8,
    pub lifetime: u32,
    pub epoch: u32,
    pub reserved: [u8; 12],
}

impl ResponseHeader {
    /// `None` unless `b` holds at least a header with the R bit set.
    pub fn parse(b: &[u8]) -> Option<ResponseHeader> {
        if b.len() < HEADER_LEN || b[field::OPCODE] & RESPONSE_BIT == 0 {
            return None;
        }
        let mut reserved = [0u8; 12];
        reserved.copy_from_slice(&b[field::RESERVED_TAIL]);
        Some(ResponseHeader {
            version: b[field::VERSION],
            opcode: b[field::OPCODE] & !RESPONSE_BIT,
            result: b[field::RESULT],
            lifetime: be32(&b[field::LIFETIME]),
            epoch: be32(&b[field::EPOCH]),
            reserved,
        })
    }
}

/// Replace `out` with a 24-byte response header: version 2, R set, `result`, lifetime, epoch,
/// reserved zero (the request was parsed).
pub fn emit_response_header(
    out: &mut Vec<u8>,
    opcode: u8,
    result: ResultCode,
    lifetime: u32,
    epoch: u32,
) {
    out.clear();
    out.extend_from_slice(&[VERSION, RESPONSE_BIT | opcode, 0, result as u8]);
    out.extend_from_slice(&lifetime.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&[0; 12]);
}

/// Replace `out` with an error response (RFC 6887 §8.2): the whole request, cut to 1100 bytes
/// and padded with zeros to a multiple of 4 (and to at least 24), with version 2, R set, the
/// result code, lifetime and epoch filled in. All options are returned, as sent.
///
/// Bytes 12–23, the response's reserved field, lie where the request's client address field
/// ends. When the request could not be parsed (`parsed = false`: MALFORMED_REQUEST,
/// UNSUPP_VERSION, UNSUPP_OPCODE and the like) they keep the copy of its last 96 bits, as
/// §7.2 says; otherwise they are zeroed.
pub fn emit_error(
    out: &mut Vec<u8>,
    request: &[u8],
    opcode: u8,
    result: ResultCode,
    lifetime: u32,
    epoch: u32,
    parsed: bool,
) {
    out.clear();
    let copied = request.len().min(MAX_LEN);
    let len = copied.next_multiple_of(4).clamp(HEADER_LEN, MAX_LEN);
    out.extend_from_slice(&request[..copied]);
    out.resize(len, 0);
    out[field::VERSION] = VERSION;
    out[field::OPCODE] = RESPONSE_BIT | opcode;
    out[field::RESERVED_BYTE] = 0;
    out[field::RESULT] = result as u8;
    out[field::LIFETIME].copy_from_slice(&lifetime.to_be_bytes());
    out[field::EPOCH].copy_from_slice(&epoch.to_be_bytes());
    if parsed {
        out[field::RESERVED_TAIL].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(len: usize) -> Vec<u8> {
        let mut b: Vec<u8> = (0..len).map(|i| i as u8 | 0x40).collect();
        b[0] = 2;
        b[1] = 1;
        b
    }

    #[test]
    fn header_round_trip() {
        let h = RequestHeader {
            opcode: 1,
            lifetime: 7200,
            client_addr: "::ffff:192.168.88.10".parse().unwrap(),
        };
        let mut b = Vec::new();
        h.emit(&mut b);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &[2, 1, 0, 0, 0, 0, 0x1c, 0x20]);
        assert_eq!(RequestHeader::parse(&b), Some(h));
        assert_eq!(RequestHeader::parse(&b[..23]), None);
    }

    #[test]
    fn error_copies_pads_and_caps() {
        let mut out = Vec::new();
        // 62 bytes -> padded to 64, the client tail kept.
        let req = request(62);
        emit_error(
            &mut out,
            &req,
            1,
            ResultCode::MalformedRequest,
            1800,
            7,
            false,
        );
        assert_eq!(out.len(), 64);
        assert_eq!(&out[..12], &[2, 0x81, 0, 3, 0, 0, 0x07, 0x08, 0, 0, 0, 7]);
        assert_eq!(&out[12..62], &req[12..62]);
        assert_eq!(&out[62..], &[0, 0]);
        // 1104 bytes -> cut to 1100.
        emit_error(
            &mut out,
            &request(1104),
            1,
            ResultCode::MalformedRequest,
            1800,
            7,
            false,
        );
        assert_eq!(out.len(), 1100);
        // Parsed: the reserved tail is zero.
        emit_error(
            &mut out,
            &request(60),
            1,
            ResultCode::NotAuthorized,
            9,
            7,
            true,
        );
        assert_eq!(&out[12..24], &[0; 12]);
        assert_eq!(&out[24..60], &request(60)[24..60]);
        // A short request is padded to a whole header.
        emit_error(
            &mut out,
            &[3, 0],
            0,
            ResultCode::UnsuppVersion,
            1800,
            1,
            false,
        );
        assert_eq!(out.len(), 24);
        assert_eq!(out[0], 2);
        let h = ResponseHeader::parse(&out).unwrap();
        assert_eq!((h.result, h.lifetime, h.epoch), (1, 1800, 1));
    }
}
