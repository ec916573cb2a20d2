//! The NAT-PMP front end (RFC 6886): opcodes 0, 1 and 2 as engine operations, outcomes as
//! result codes 0–5.

use super::{Handled, Pending, PendingReply as AnyPending};
use crate::addr::Protocol;
use crate::engine::mapping::EndpointKey;
use crate::engine::{
    Claim, DeleteOutcome, DescriptionUpdate, Engine, FilterUpdate, Lifetime, MapOutcome,
    MapRequest, Refusal, Undo,
};
use crate::kernel::Change;
use crate::time::Timestamp;
use crate::wire::natpmp::{self, Request, ResultCode};
use std::net::{IpAddr, Ipv4Addr};

/// The NAT-PMP result for an engine refusal.
pub fn result_code(refusal: Refusal) -> ResultCode {
    match refusal {
        Refusal::NoExternalAddress | Refusal::KernelRefused => ResultCode::NetworkFailure,
        Refusal::NotOwner { .. } | Refusal::AccessDenied => ResultCode::NotAuthorized,
        Refusal::QuotaExceeded
        | Refusal::NoPortAvailable
        | Refusal::CannotProvideExternal { .. }
        | Refusal::TooManyFilters => ResultCode::OutOfResources,
    }
}

/// A map reply (P4) waiting for the kernel.
#[derive(Debug)]
pub struct PendingReply {
    protocol: Protocol,
    result: ResultCode,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
}

impl PendingReply {
    pub(super) fn emit(self, sssoe: u32, committed: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(natpmp::MAP_RESPONSE_LEN);
        if committed {
            natpmp::emit_map(
                &mut out,
                self.protocol,
                self.result,
                sssoe,
                self.internal_port,
                self.external_port,
                self.lifetime,
            );
        } else {
            natpmp::emit_map(
                &mut out,
                self.protocol,
                result_code(Refusal::KernelRefused),
                sssoe,
                self.internal_port,
                0,
                0,
            );
        }
        out
    }
}

fn reply_now_or_pending(reply: PendingReply, undo: Undo, sssoe: u32) -> Handled {
    if undo.is_empty() {
        Handled::Reply(reply.emit(sssoe, true))
    } else {
        Handled::Pending(Pending {
            undo,
            reply: AnyPending::NatPmp(reply),
        })
    }
}

/// Answer one NAT-PMP datagram from `client` (an IPv4 address: NAT-PMP is IPv4-only). The
/// caller has dispatched on the version byte and checked where the datagram came from.
pub fn handle(
    engine: &mut Engine,
    now: Timestamp,
    client: Ipv4Addr,
    datagram: &[u8],
    changes: &mut Vec<Change>,
) -> Handled {
    let sssoe = engine.epoch_seconds(now);
    let mut out = Vec::new();
    match natpmp::parse(datagram) {
        None => return Handled::Drop,
        Some(Request::UnsupportedVersion) => natpmp::emit_unsupported_version(&mut out, sssoe),
        Some(Request::UnsupportedOpcode(req)) => {
            natpmp::emit_unsupported_opcode(&mut out, req, sssoe)
        }
        Some(Request::ExternalAddress) => {
            // No address (e.g. no DHCP lease yet): Network Failure (RFC 6886 §3.5).
            let (result, addr) = match engine.external_address() {
                Some(a) => (ResultCode::Success, a),
                None => (ResultCode::NetworkFailure, Ipv4Addr::UNSPECIFIED),
            };
            natpmp::emit_external_address(&mut out, result, sssoe, addr);
        }
        Some(Request::Map(m)) => return map(engine, now, client, &m, changes),
    }
    Handled::Reply(out)
}

fn map(
    engine: &mut Engine,
    now: Timestamp,
    client: Ipv4Addr,
    m: &natpmp::MapRequest,
    changes: &mut Vec<Change>,
) -> Handled {
    let sssoe = engine.epoch_seconds(now);
    let client_ip = IpAddr::V4(client);
    let key = EndpointKey {
        client: client_ip,
        protocol: m.protocol,
        internal_port: m.internal_port,
    };
    let reply = |result, external_port, lifetime| PendingReply {
        protocol: m.protocol,
        result,
        internal_port: m.internal_port,
        external_port,
        lifetime,
    };
    if m.lifetime == 0 {
        // Delete (RFC 6886 §3.4). The suggested port is ignored. Internal port 0 deletes all of
        // this client's mappings of this protocol only (§6 A6). Deleting what does not exist
        // succeeds, so a retransmitted delete gets the same answer.
        if m.internal_port == 0 {
            let (outcome, undo) = engine.delete_all(now, client_ip, m.protocol, changes);
            // Some could not be deleted (a nonce owns them): all others are, and the result is
            // non-zero, as §3.4 says for mappings that cannot be deleted.
            let result = if outcome.kept > 0 {
                ResultCode::NotAuthorized
            } else {
                ResultCode::Success
            };
            return reply_now_or_pending(reply(result, 0, 0), undo, sssoe);
        }
        let (outcome, undo) = engine.delete(now, key, Claim::NatPmp, changes);
        let r = match outcome {
            DeleteOutcome::Deleted | DeleteOutcome::NotFound => reply(ResultCode::Success, 0, 0),
            // A failed delete names the mapping that stays (§6 A7): its external port,
            // lifetime 0.
            DeleteOutcome::NotOwner { external_port, .. } => {
                reply(ResultCode::NotAuthorized, external_port, 0)
            }
        };
        return reply_now_or_pending(r, undo, sssoe);
    }
    if m.internal_port == 0 {
        // Internal port 0 with a lifetime is undefined (§6 A5): refuse, create nothing,
        // rather than read it as "delete all" as some servers do.
        return Handled::Reply(reply(ResultCode::NotAuthorized, 0, 0).emit(sssoe, true));
    }
    let (outcome, undo) = engine.map(
        now,
        MapRequest {
            key,
            lifetime: Lifetime::AtMost(m.lifetime),
            claim: Claim::NatPmp,
            suggested_port: m.suggested_external_port,
            suggested_addr: None,
            prefer_failure: false,
            filters: FilterUpdate::default(),
            description: DescriptionUpdate::Keep,
        },
        changes,
    );
    let r = match outcome {
        MapOutcome::Granted(g) => reply(ResultCode::Success, g.external.port(), g.lifetime),
        MapOutcome::Refused(why) => reply(result_code(why), 0, 0),
    };
    reply_now_or_pending(r, undo, sssoe)
}
