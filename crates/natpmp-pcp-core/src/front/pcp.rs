//! The PCP front end (RFC 6887): the request checks of §8.2 in their order, then ANNOUNCE,
//! MAP and PEER as engine operations, and the engine's outcomes as result codes.
//!
//! Order (rfc-checklist §3.2), after dispatch has dropped short and R-bit packets and sent
//! versions it does not speak to `unsupported_version`:
//! 1. under 24 bytes: dropped;
//! 2. over 1100 bytes, not a multiple of 4, or too short for a known opcode:
//!    MALFORMED_REQUEST (the reply copies at most 1100 bytes, padded);
//! 3. client address field not the source address (IPv4 must be IPv4-mapped, all 96 bits
//!    checked): ADDRESS_MISMATCH;
//! 4. unknown opcode: UNSUPP_OPCODE, the payload copied unread;
//! 5. options (`pcp_options`), then the opcode's own checks and the engine.
//!
//! Error responses copy the whole request (options included) with the error lifetime RFC
//! 6887 §7.4 recommends: 30 s for the short-lived errors, 30 min for the long-lived ones;
//! NOT_AUTHORIZED for a nonce mismatch carries the mapping's remaining lifetime instead.

use super::pcp_options::{self, description_text, Options};
use super::{Handled, Pending, PendingReply as AnyPending};
use crate::addr::{from_wire, pinhole_capable, to_wire, Prefix, Protocol};
use crate::engine::mapping::{EndpointKey, Filter, Nonce, PcpClient, ReplyPath};
use crate::engine::records::PcpMappingInfo;
use crate::engine::{
    Claim, DeleteOutcome, DescriptionUpdate, Engine, FilterUpdate, Granted, Lifetime, MapOutcome,
    MapRequest, PeerRequest, Refusal, Undo,
};
use crate::kernel::Change;
use crate::time::Timestamp;
use crate::wire::pcp::option::{self, FilterOption};
use crate::wire::pcp::{
    emit_error, emit_response_header, MapData, PeerData, RequestHeader, ResultCode, HEADER_LEN,
    LONG_ERROR_LIFETIME, MAP_LEN, MAX_LEN, OP_ANNOUNCE, OP_MAP, OP_PEER, PEER_LEN,
    SHORT_ERROR_LIFETIME,
};
use std::net::{IpAddr, SocketAddr};

/// PCP policy that is not the engine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpPolicy {
    /// Whether PEER is served (RFC 6887 §12: the server SHOULD have a switch). Off: PEER
    /// requests get NOT_AUTHORIZED, as a feature the operator turned off.
    pub peer: bool,
}

impl Default for PcpPolicy {
    fn default() -> Self {
        PcpPolicy { peer: true }
    }
}

/// The result code and error lifetime for an engine refusal.
pub fn refusal_code(refusal: Refusal) -> (ResultCode, u32) {
    match refusal {
        Refusal::NoExternalAddress | Refusal::KernelRefused => {
            (ResultCode::NetworkFailure, SHORT_ERROR_LIFETIME)
        }
        Refusal::NotOwner { remaining } => (ResultCode::NotAuthorized, remaining),
        Refusal::QuotaExceeded => (ResultCode::UserExQuota, SHORT_ERROR_LIFETIME),
        Refusal::NoPortAvailable => (ResultCode::NoResources, SHORT_ERROR_LIFETIME),
        // "The error lifetime MAY be the conflicting mapping's remaining lifetime" (§13.2); a
        // suggestion that can never be had (reserved, outside the range, not our address) is a
        // long-lived error.
        Refusal::CannotProvideExternal { retry_after } => (
            ResultCode::CannotProvideExternal,
            retry_after.unwrap_or(LONG_ERROR_LIFETIME),
        ),
        Refusal::TooManyFilters => (ResultCode::ExcessiveRemotePeers, LONG_ERROR_LIFETIME),
        // Asking again will not help until the operator changes the rules.
        Refusal::AccessDenied => (ResultCode::NotAuthorized, LONG_ERROR_LIFETIME),
    }
}

/// A PCP reply waiting for the kernel: the success response; a failure copies the request.
#[derive(Debug)]
pub struct PendingReply {
    opcode: u8,
    success: Vec<u8>,
}

impl PendingReply {
    pub(super) fn emit(self, epoch: u32, committed: bool, request: &[u8]) -> Vec<u8> {
        let mut out = self.success;
        if committed {
            // The header was written before the epoch was known at reply time.
            out[8..12].copy_from_slice(&epoch.to_be_bytes());
        } else {
            let (code, lifetime) = refusal_code(Refusal::KernelRefused);
            emit_error(&mut out, request, self.opcode, code, lifetime, epoch, true);
        }
        out
    }
}

/// The request being answered, for building replies.
struct Request<'a> {
    bytes: &'a [u8],
    header: RequestHeader,
    epoch: u32,
}

impl Request<'_> {
    /// An error response; `parsed` says whether the request was understood (see
    /// `wire::pcp::emit_error`).
    fn error(&self, code: ResultCode, lifetime: u32, parsed: bool) -> Handled {
        let mut out = Vec::new();
        emit_error(
            &mut out,
            self.bytes,
            self.header.opcode,
            code,
            lifetime,
            self.epoch,
            parsed,
        );
        Handled::Reply(out)
    }

    /// A malformed request or option: long-lived, not parsed.
    fn malformed(&self, code: ResultCode) -> Handled {
        self.error(code, LONG_ERROR_LIFETIME, false)
    }

    fn refused(&self, refusal: Refusal) -> Handled {
        let (code, lifetime) = refusal_code(refusal);
        self.error(code, lifetime, true)
    }
}

/// Answer one PCP datagram. `source` is the client's address and port, `server` the gateway
/// address it was sent to (where Mapping Updates will come from). The caller has dispatched
/// on the version byte and checked where the datagram came from.
pub fn handle(
    engine: &mut Engine,
    now: Timestamp,
    source: SocketAddr,
    server: IpAddr,
    datagram: &[u8],
    policy: PcpPolicy,
    changes: &mut Vec<Change>,
) -> Handled {
    let Some(header) = RequestHeader::parse(datagram) else {
        return Handled::Drop;
    };
    let req = Request {
        bytes: datagram,
        header,
        epoch: engine.epoch_seconds(now),
    };
    let needed = match header.opcode {
        OP_MAP => MAP_LEN,
        OP_PEER => PEER_LEN,
        _ => HEADER_LEN,
    };
    if datagram.len() > MAX_LEN || !datagram.len().is_multiple_of(4) || datagram.len() < needed {
        return req.malformed(ResultCode::MalformedRequest);
    }
    if from_wire(header.client_addr) != source.ip() {
        return req.error(ResultCode::AddressMismatch, LONG_ERROR_LIFETIME, false);
    }
    if !matches!(header.opcode, OP_ANNOUNCE | OP_MAP | OP_PEER) {
        return req.malformed(ResultCode::UnsuppOpcode);
    }
    let options = match pcp_options::parse(header.opcode, &datagram[needed..]) {
        Ok(o) => o,
        Err(code) => return req.malformed(code),
    };
    let path = ReplyPath {
        client_port: source.port(),
        server,
    };
    match header.opcode {
        OP_ANNOUNCE => {
            // SUCCESS, lifetime 0, no state change (RFC 6887 §14.1.1).
            let mut out = Vec::new();
            emit_response_header(&mut out, OP_ANNOUNCE, ResultCode::Success, 0, req.epoch);
            Handled::Reply(out)
        }
        OP_MAP => map(engine, now, &req, options, path, changes),
        _ if !policy.peer => req.error(ResultCode::NotAuthorized, LONG_ERROR_LIFETIME, true),
        _ => peer(engine, now, &req, options, path, changes),
    }
}

/// Turn FILTER options into filters for a mapping of `client`'s family (RFC 6887 §13.3).
/// Prefix length 0 clears; an IPv4-mapped address takes 96–128 (so /0–/32), IPv6 0–128; a
/// remote of the other family than the client is MALFORMED_OPTION.
fn filter_update(client: IpAddr, options: &[FilterOption]) -> Result<FilterUpdate, ResultCode> {
    let mut update = FilterUpdate::default();
    for f in options {
        if f.prefix_len == 0 {
            update.clear = true;
            update.add.clear();
            continue;
        }
        let remote = from_wire(f.remote_addr);
        let len = match remote {
            IpAddr::V4(_) if (96..=128).contains(&f.prefix_len) => f.prefix_len - 96,
            IpAddr::V6(_) if f.prefix_len <= 128 => f.prefix_len,
            _ => return Err(ResultCode::MalformedOption),
        };
        if remote.is_ipv4() != client.is_ipv4() {
            return Err(ResultCode::MalformedOption);
        }
        let prefix = Prefix::new(remote, len).ok_or(ResultCode::MalformedOption)?;
        update.add.push(Filter {
            prefix,
            port: f.remote_port,
        });
    }
    Ok(update)
}

fn description_update(options: &Options) -> (DescriptionUpdate, bool) {
    match options.description.map(description_text) {
        Some(Some(text)) => (DescriptionUpdate::Set(text), true),
        // Absent, or not UTF-8: keep what is stored and echo nothing.
        _ => (DescriptionUpdate::Keep, false),
    }
}

/// The success response of a MAP or PEER: header, opcode data with the assigned external
/// address and port, then the processed options.
fn success(
    req: &Request,
    data_len: usize,
    granted: &Granted,
    options: &Options,
    echo_description: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.bytes.len());
    emit_response_header(
        &mut out,
        req.header.opcode,
        ResultCode::Success,
        granted.lifetime,
        req.epoch,
    );
    copy_opcode_data(&mut out, &req.bytes[HEADER_LEN..HEADER_LEN + data_len]);
    out[42..44].copy_from_slice(&granted.external.port().to_be_bytes());
    out[44..60].copy_from_slice(&to_wire(granted.external.ip()).octets());
    if options.prefer_failure {
        option::emit(&mut out, option::PREFER_FAILURE, &[]);
    }
    for f in &options.filters {
        f.emit(&mut out);
    }
    if echo_description {
        // What was stored, as RFC 7220 asks, not necessarily what was sent.
        let stored = granted.description.as_deref().unwrap_or("");
        option::emit(&mut out, option::DESCRIPTION, stored.as_bytes());
    }
    out
}

/// Append a MAP's or PEER's opcode data, copied from the request, to a success response
/// header, with the reserved bits sent as 0 (RFC 6887 §11.1, §12.1: "MUST be sent as 0 and
/// MUST be ignored when received"): bytes 37–39, and a PEER's 62–63.
fn copy_opcode_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out[37..40].fill(0);
    if out.len() >= PEER_LEN {
        out[62..64].fill(0);
    }
}

/// The reply to a MAP or PEER the engine has handled: the success response (waiting for the
/// kernel when the table changed), or the refusal's error response.
fn answer(
    req: &Request,
    data_len: usize,
    outcome: MapOutcome,
    undo: Undo,
    options: &Options,
    echo_description: bool,
) -> Handled {
    match outcome {
        MapOutcome::Granted(g) => {
            let out = success(req, data_len, &g, options, echo_description);
            pending(req, undo, out)
        }
        MapOutcome::Refused(r) => req.refused(r),
    }
}

fn pending(req: &Request, undo: Undo, success: Vec<u8>) -> Handled {
    if undo.is_empty() {
        return Handled::Reply(success);
    }
    Handled::Pending(Pending {
        undo,
        reply: AnyPending::Pcp(PendingReply {
            opcode: req.header.opcode,
            success,
        }),
    })
}

fn map(
    engine: &mut Engine,
    now: Timestamp,
    req: &Request,
    options: Options,
    path: ReplyPath,
    changes: &mut Vec<Change>,
) -> Handled {
    let Some(data) = MapData::parse(&req.bytes[HEADER_LEN..]) else {
        return req.malformed(ResultCode::MalformedRequest);
    };
    let client = from_wire(req.header.client_addr);
    let claim = Claim::Pcp(PcpClient {
        nonce: Nonce(data.nonce),
        reply_path: path,
    });
    let lifetime = req.header.lifetime;
    if lifetime == 0 && (options.prefer_failure || !options.filters.is_empty()) {
        // §11.3: PREFER_FAILURE and FILTER make no sense on a delete.
        return req.malformed(ResultCode::MalformedOption);
    }
    if data.protocol == 0 && data.internal_port != 0 {
        return req.malformed(ResultCode::MalformedRequest);
    }
    let filters = match filter_update(client, &options.filters) {
        Ok(f) => f,
        Err(code) => return req.malformed(code),
    };
    let protocol = Protocol::from_number(data.protocol);
    if lifetime == 0 {
        // Delete (§15.1, errata 3621). The family of the suggested address would say which
        // mapping to delete; here a client's mappings are all of its own family (no NAT64), so
        // the source decides, and clients that send :: for an IPv4 delete still work. What
        // does not exist (a wildcard, an unsupported protocol, a mapping never made) is
        // deleted already: SUCCESS.
        let mut out = Vec::with_capacity(MAP_LEN);
        emit_response_header(&mut out, OP_MAP, ResultCode::Success, 0, req.epoch);
        // The suggested port and address are copied into the assigned fields.
        copy_opcode_data(&mut out, &req.bytes[HEADER_LEN..MAP_LEN]);
        let (Some(protocol), true) = (protocol, data.internal_port != 0) else {
            return Handled::Reply(out);
        };
        let key = EndpointKey {
            client,
            protocol,
            internal_port: data.internal_port,
        };
        let (outcome, undo) = engine.delete(now, key, claim, changes);
        return match outcome {
            DeleteOutcome::Deleted | DeleteOutcome::NotFound => pending(req, undo, out),
            DeleteOutcome::NotOwner { remaining, .. } => {
                req.refused(Refusal::NotOwner { remaining })
            }
        };
    }
    if let Some(refused) = no_pinhole(req, client) {
        return refused;
    }
    // All protocols (DMZ), all ports of one protocol, or another protocol than TCP and UDP:
    // the NAT cannot do them in full, which is UNSUPP_PROTOCOL (§11.3).
    let Some(protocol) = protocol.filter(|_| data.internal_port != 0) else {
        return req.error(ResultCode::UnsuppProtocol, LONG_ERROR_LIFETIME, true);
    };
    if options.prefer_failure && data.external_port == 0 {
        return req.malformed(ResultCode::MalformedOption);
    }
    let (description, echo_description) = description_update(&options);
    let key = EndpointKey {
        client,
        protocol,
        internal_port: data.internal_port,
    };
    let (outcome, undo) = engine.map(
        now,
        MapRequest {
            key,
            lifetime: Lifetime::Clamped(lifetime),
            claim,
            suggested_port: data.external_port,
            suggested_addr: Some(from_wire(data.external_addr)),
            prefer_failure: options.prefer_failure,
            filters,
            description,
        },
        changes,
    );
    answer(
        req,
        MAP_LEN - HEADER_LEN,
        outcome,
        undo,
        &options,
        echo_description,
    )
}

/// An IPv6 client that speaks from an address the internet cannot send to (its link-local
/// address, typically) cannot have a pinhole on it: NOT_AUTHORIZED, long-lived, since asking
/// again from the same address will not help. (A client that wants one speaks from its global
/// or ULA address.)
fn no_pinhole(req: &Request, client: IpAddr) -> Option<Handled> {
    match client {
        IpAddr::V6(a) if !pinhole_capable(a) => {
            Some(req.error(ResultCode::NotAuthorized, LONG_ERROR_LIFETIME, true))
        }
        _ => None,
    }
}

/// Whether a PEER's remote is one a flow could really go to.
fn usable_remote(addr: IpAddr) -> bool {
    let multicast_or_local = match addr {
        IpAddr::V4(a) => a.is_broadcast() || a.is_loopback() || a.is_multicast(),
        IpAddr::V6(a) => a.is_loopback() || a.is_multicast(),
    };
    !addr.is_unspecified() && !multicast_or_local
}

fn peer(
    engine: &mut Engine,
    now: Timestamp,
    req: &Request,
    options: Options,
    path: ReplyPath,
    changes: &mut Vec<Change>,
) -> Handled {
    let Some(data) = PeerData::parse(&req.bytes[HEADER_LEN..]) else {
        return req.malformed(ResultCode::MalformedRequest);
    };
    let client = from_wire(req.header.client_addr);
    let remote = from_wire(data.remote_addr);
    // §12.1: protocol, internal port and remote port must not be 0; the RFC names no code,
    // MALFORMED_REQUEST says it. A remote of the other family, or one no flow can go to, is
    // refused the same way (§12.3: as implicit mappings would be).
    if data.map.protocol == 0
        || data.map.internal_port == 0
        || data.remote_port == 0
        || remote.is_ipv4() != client.is_ipv4()
        || !usable_remote(remote)
    {
        return req.malformed(ResultCode::MalformedRequest);
    }
    if let Some(refused) = no_pinhole(req, client) {
        return refused;
    }
    let Some(protocol) = Protocol::from_number(data.map.protocol) else {
        return req.error(ResultCode::UnsuppProtocol, LONG_ERROR_LIFETIME, true);
    };
    let (description, echo_description) = description_update(&options);
    let (outcome, undo) = engine.peer(
        now,
        PeerRequest {
            key: EndpointKey {
                client,
                protocol,
                internal_port: data.map.internal_port,
            },
            remote: SocketAddr::new(remote, data.remote_port),
            lifetime: req.header.lifetime,
            client: PcpClient {
                nonce: Nonce(data.map.nonce),
                reply_path: path,
            },
            suggested_port: data.map.external_port,
            suggested_addr: Some(from_wire(data.map.external_addr)),
            description,
        },
        changes,
    );
    answer(
        req,
        PEER_LEN - HEADER_LEN,
        outcome,
        undo,
        &options,
        echo_description,
    )
}

/// An unsolicited MAP or PEER response telling the client its mapping's new external address
/// (a Mapping Update, RFC 6887 §14.2): SUCCESS, the remaining lifetime, the current epoch, the
/// mapping's nonce, protocol, ports and its FILTERs. No DESCRIPTION: it is never put in a
/// response the request did not carry one in. THIRD_PARTY is never held (it is refused), and
/// PREFER_FAILURE needs no CANNOT_PROVIDE_EXTERNAL here: mappings keep their external port
/// across an address change.
pub fn mapping_update(info: &PcpMappingInfo, epoch: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(PEER_LEN);
    let opcode = if info.remote.is_some() {
        OP_PEER
    } else {
        OP_MAP
    };
    emit_response_header(
        &mut out,
        opcode,
        ResultCode::Success,
        info.lifetime_left,
        epoch,
    );
    let map = MapData {
        nonce: info.client.nonce.0,
        protocol: info.key.protocol.number(),
        internal_port: info.key.internal_port,
        external_port: info.external.port(),
        external_addr: to_wire(info.external.ip()),
    };
    match info.remote {
        Some(remote) => PeerData {
            map,
            remote_port: remote.port(),
            remote_addr: to_wire(remote.ip()),
        }
        .emit(&mut out),
        None => map.emit(&mut out),
    }
    for f in &info.filters {
        let addr = f.prefix.addr();
        let prefix_len = match addr {
            IpAddr::V4(_) => f.prefix.prefix_len() + 96,
            IpAddr::V6(_) => f.prefix.prefix_len(),
        };
        FilterOption {
            prefix_len,
            remote_port: f.port,
            remote_addr: to_wire(addr),
        }
        .emit(&mut out);
    }
    out
}
