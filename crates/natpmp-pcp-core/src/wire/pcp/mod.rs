//! PCP (RFC 6887) messages: the common header, the MAP and PEER opcode data, and options.
//!
//! As with NAT-PMP, parsing never panics: every field is read only after the length has been
//! checked, and a view over too few bytes is `None`, never a panic. Layouts: rfc-checklist
//! §3.1 (header), §3.4 (options), §3.5 (MAP), §3.6 (PEER).

pub mod header;
pub mod opcode;
pub mod option;

pub use header::{emit_error, emit_response_header, RequestHeader, ResponseHeader};
pub use opcode::{MapData, PeerData};
pub use option::{FilterOption, RawOption};

pub const VERSION: u8 = 2;
/// Every request and response starts with this many bytes of header.
pub const HEADER_LEN: usize = 24;
/// No PCP message is longer (RFC 6887 §7).
pub const MAX_LEN: usize = 1100;
/// Header plus MAP opcode data.
pub const MAP_LEN: usize = HEADER_LEN + opcode::MAP_DATA_LEN;
/// Header plus PEER opcode data.
pub const PEER_LEN: usize = HEADER_LEN + opcode::PEER_DATA_LEN;
/// Set in byte 1 of every response.
pub const RESPONSE_BIT: u8 = 0x80;

pub const OP_ANNOUNCE: u8 = 0;
pub const OP_MAP: u8 = 1;
pub const OP_PEER: u8 = 2;

/// The recommended error lifetimes (RFC 6887 §7.4): how long a client should wait before it
/// sends the same request again.
pub const SHORT_ERROR_LIFETIME: u32 = 30;
pub const LONG_ERROR_LIFETIME: u32 = 1800;

/// PCP result codes (RFC 6887 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResultCode {
    Success = 0,
    UnsuppVersion = 1,
    NotAuthorized = 2,
    MalformedRequest = 3,
    UnsuppOpcode = 4,
    UnsuppOption = 5,
    MalformedOption = 6,
    NetworkFailure = 7,
    NoResources = 8,
    UnsuppProtocol = 9,
    UserExQuota = 10,
    CannotProvideExternal = 11,
    AddressMismatch = 12,
    ExcessiveRemotePeers = 13,
}

impl ResultCode {
    /// The error lifetime RFC 6887 §7.4 recommends for this code. CANNOT_PROVIDE_EXTERNAL
    /// "depends on the cause"; the caller decides it, this gives the short one.
    pub fn error_lifetime(self) -> u32 {
        match self {
            ResultCode::Success => 0,
            ResultCode::NetworkFailure
            | ResultCode::NoResources
            | ResultCode::UserExQuota
            | ResultCode::CannotProvideExternal => SHORT_ERROR_LIFETIME,
            _ => LONG_ERROR_LIFETIME,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResultCode::Success => "SUCCESS",
            ResultCode::UnsuppVersion => "UNSUPP_VERSION",
            ResultCode::NotAuthorized => "NOT_AUTHORIZED",
            ResultCode::MalformedRequest => "MALFORMED_REQUEST",
            ResultCode::UnsuppOpcode => "UNSUPP_OPCODE",
            ResultCode::UnsuppOption => "UNSUPP_OPTION",
            ResultCode::MalformedOption => "MALFORMED_OPTION",
            ResultCode::NetworkFailure => "NETWORK_FAILURE",
            ResultCode::NoResources => "NO_RESOURCES",
            ResultCode::UnsuppProtocol => "UNSUPP_PROTOCOL",
            ResultCode::UserExQuota => "USER_EX_QUOTA",
            ResultCode::CannotProvideExternal => "CANNOT_PROVIDE_EXTERNAL",
            ResultCode::AddressMismatch => "ADDRESS_MISMATCH",
            ResultCode::ExcessiveRemotePeers => "EXCESSIVE_REMOTE_PEERS",
        }
    }
}

/// The 24-byte unsolicited ANNOUNCE (RFC 6887 §14.1.3): `02 80 00 00`, lifetime 0, the epoch,
/// 12 zero bytes.
pub fn emit_announce(out: &mut Vec<u8>, epoch: u32) {
    emit_response_header(out, OP_ANNOUNCE, ResultCode::Success, 0, epoch);
}

pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn addr128(b: &[u8]) -> std::net::Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    std::net::Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lifetimes_follow_the_rfc_classes() {
        assert_eq!(ResultCode::NoResources.error_lifetime(), 30);
        assert_eq!(ResultCode::UserExQuota.error_lifetime(), 30);
        assert_eq!(ResultCode::NetworkFailure.error_lifetime(), 30);
        assert_eq!(ResultCode::MalformedRequest.error_lifetime(), 1800);
        assert_eq!(ResultCode::UnsuppVersion.error_lifetime(), 1800);
        assert_eq!(ResultCode::AddressMismatch.error_lifetime(), 1800);
        assert_eq!(ResultCode::ExcessiveRemotePeers as u8, 13);
    }

    #[test]
    fn unsolicited_announce_is_24_bytes() {
        let mut out = vec![0xEE; 3];
        emit_announce(&mut out, 0x0102_0304);
        let mut expected = vec![2, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        expected.extend([0; 12]);
        assert_eq!(out, expected);
    }
}
