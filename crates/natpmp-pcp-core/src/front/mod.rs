//! The front ends: one per protocol, each turning wire messages into engine operations and
//! engine outcomes into that protocol's result codes.
//!
//! A request that changes nothing is answered at once ([`Handled::Reply`]). One that changes
//! the table comes back as [`Handled::Pending`]: its kernel changes are staged, and its reply
//! is written by [`Pending::finish`] only once the caller knows whether the kernel took them.
//! On a refusal the change is undone first, so no client is ever told of a mapping the kernel
//! does not hold, and no reply bytes are patched afterwards.

pub mod natpmp;
pub mod pcp;
pub mod pcp_options;
pub mod scope;

use crate::engine::mapping::EndpointKey;
use crate::engine::{Engine, Undo};
use crate::time::Timestamp;
use crate::wire;

/// What to do with one datagram.
#[derive(Debug)]
pub enum Handled {
    /// Send nothing (too short, a response arriving as a request, PCP under 24 bytes).
    Drop,
    /// Send these bytes back; the table did not change.
    Reply(Vec<u8>),
    /// The table changed and kernel changes were staged: apply them, then `finish`.
    Pending(Pending),
}

/// A reply waiting for the kernel's verdict on its request's changes.
#[derive(Debug)]
pub struct Pending {
    undo: Undo,
    reply: PendingReply,
}

#[derive(Debug)]
enum PendingReply {
    NatPmp(natpmp::PendingReply),
    Pcp(pcp::PendingReply),
}

impl Pending {
    /// The endpoints the request changed.
    pub fn touched(&self) -> impl Iterator<Item = &EndpointKey> {
        self.undo.keys()
    }

    /// Write the reply to `request` (the datagram this came from). `committed`: the kernel
    /// took the changes. If it did not, the engine first puts the table back as it was, and
    /// the client is told the request failed (NAT-PMP result 3, PCP NETWORK_FAILURE).
    pub fn finish(
        self,
        engine: &mut Engine,
        now: Timestamp,
        committed: bool,
        request: &[u8],
    ) -> Vec<u8> {
        if !committed {
            engine.revert(self.undo);
        }
        let epoch = engine.epoch_seconds(now);
        match self.reply {
            PendingReply::NatPmp(r) => r.emit(epoch, committed),
            PendingReply::Pcp(r) => r.emit(epoch, committed, request),
        }
    }
}

/// Which protocol a datagram on port 5351 speaks (rfc-checklist §3.2 steps 2–4, §6 A13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Under 2 bytes, or the response bit set whatever the version: another server's reply
    /// or announcement, never answered (no reflection loops).
    Drop,
    NatPmp,
    Pcp,
    /// Any other version: answer Unsupported Version.
    UnsupportedVersion,
}

/// Classify by byte 0, after the two checks that come before any version (rfc-checklist §6
/// A13). With PCP switched off, version 2 is an unsupported version too.
pub fn dispatch(datagram: &[u8], pcp_enabled: bool) -> Dispatch {
    match datagram {
        [] | [_] => Dispatch::Drop,
        [_, op, ..] if op & wire::natpmp::RESPONSE_BIT != 0 => Dispatch::Drop,
        [wire::natpmp::VERSION, ..] => Dispatch::NatPmp,
        [wire::pcp::VERSION, ..] if pcp_enabled => Dispatch::Pcp,
        _ => Dispatch::UnsupportedVersion,
    }
}

/// The Unsupported Version answer (RFC 6887 §9, RFC 6886 §3.5). With PCP on, the PCP-format
/// UNSUPP_VERSION carrying the supported version nearest to the request: 2 for anything
/// above 0, including 1. Version 1 is closer to neither 0 nor 2 (rfc-checklist §6 A2);
/// natpmpd says 2, because version 1 was the version of the PCP drafts, so whoever sends it
/// is a PCP client. Its 24+ bytes read as "Unsupported Version" to a NAT-PMP client too (the
/// result code lines up, RFC 6887 Appendix A). With PCP off, natpmpd is a NAT-PMP-only
/// server and sends the 8-byte NAT-PMP reply, version 0.
pub fn unsupported_version(datagram: &[u8], epoch: u32, pcp_enabled: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if pcp_enabled {
        let opcode = datagram.get(1).copied().unwrap_or(0) & !wire::pcp::RESPONSE_BIT;
        wire::pcp::emit_error(
            &mut out,
            datagram,
            opcode,
            wire::pcp::ResultCode::UnsuppVersion,
            wire::pcp::LONG_ERROR_LIFETIME,
            epoch,
            false,
        );
    } else {
        wire::natpmp::emit_unsupported_version(&mut out, epoch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_drops_short_and_response_packets_before_the_version() {
        assert_eq!(dispatch(&[], true), Dispatch::Drop);
        assert_eq!(dispatch(&[2], true), Dispatch::Drop);
        assert_eq!(dispatch(&[5, 0x81, 0, 0], true), Dispatch::Drop);
        assert_eq!(dispatch(&[0, 0], true), Dispatch::NatPmp);
        assert_eq!(dispatch(&[2, 1], true), Dispatch::Pcp);
        assert_eq!(dispatch(&[2, 1], false), Dispatch::UnsupportedVersion);
        assert_eq!(dispatch(&[1, 0], true), Dispatch::UnsupportedVersion);
        assert_eq!(dispatch(&[0xff, 0], true), Dispatch::UnsupportedVersion);
    }

    #[test]
    fn unsupported_version_names_the_nearest_version() {
        let v3 = unsupported_version(&[3, 1, 0, 0], 5, true);
        assert_eq!(v3.len(), 24);
        assert_eq!(&v3[..12], &[2, 0x81, 0, 1, 0, 0, 0x07, 0x08, 0, 0, 0, 5]);
        let v1 = unsupported_version(&[1, 0], 5, true);
        assert_eq!(v1[0], 2);
        let pmp_only = unsupported_version(&[2, 1], 5, false);
        assert_eq!(pmp_only, [0, 0x80, 0, 1, 0, 0, 0, 5]);
    }
}
