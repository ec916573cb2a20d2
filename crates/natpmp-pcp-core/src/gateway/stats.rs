//! What the gateway counts: the protocol facts behind the daemon's metrics and `natpmpctl
//! status`. Plain numbers the gateway bumps as it works; the daemon reads them through
//! [`Gateway::stats`] and turns them into Prometheus metrics (it owns no counting of its own
//! for these, so tests in core see exactly what a scrape would).
//!
//! A request is labelled from the bytes actually exchanged: the protocol and opcode from the
//! reply's header, the result from the reply's result code. That way every answered
//! datagram is counted once, by what the client was told, whichever path produced it
//! (immediate answer, committed or reverted request, Unsupported Version).

use super::Gateway;
use crate::kernel::{ApplyError, Change, Forwarder, KernelError, TableSpec};
use crate::time::Timestamp;
use crate::wire;
use std::collections::BTreeMap;

/// The labels of one answered request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestLabels {
    /// `nat-pmp` or `pcp`: the format of the reply.
    pub protocol: &'static str,
    /// `external-address`, `map-udp`, `map-tcp` (NAT-PMP); `announce`, `map`, `peer` (PCP);
    /// `other` for an opcode neither knows.
    pub opcode: &'static str,
    /// The result code by name, lower case (`success`, `not-authorized`, `no-resources`...).
    pub result: &'static str,
}

/// What the last drift check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriftFinding {
    /// The table was whole and held exactly the engine's elements.
    Intact,
    /// Elements were put back or removed one by one.
    Repaired { added: usize, removed: usize },
    /// The table was damaged or could not be read: it was rebuilt whole.
    Rebuilt { why: String },
}

/// The gateway's counters. Every `u64` only grows (they are Prometheus counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Answered requests by protocol, opcode and result.
    pub requests: BTreeMap<RequestLabels, u64>,
    /// Datagrams not answered: not admitted (wrong interface, address or source), too short,
    /// or a response arriving as a request.
    pub dropped: u64,
    /// Transactions sent to the kernel (table loads and element batches).
    pub kernel_transactions: u64,
    /// Of those, the ones the kernel refused or that failed.
    pub kernel_errors: u64,
    /// Drift checks that found the kernel changed behind our back and put it right.
    pub drift_repairs: u64,
    /// When the last repair happened.
    pub last_drift_repair: Option<Timestamp>,
    /// The last drift check: when and what it found (`None` before the first).
    pub last_drift_check: Option<(Timestamp, DriftFinding)>,
    /// Unsolicited announcements sent (NAT-PMP external address, PCP ANNOUNCE) and PCP
    /// Mapping Updates, each datagram once.
    pub announcements: u64,
    /// Mappings removed by hand (`natpmpctl remove`).
    pub removed_by_hand: u64,
}

impl GatewayStats {
    /// How many requests were answered with these labels.
    pub fn requests_with(&self, protocol: &str, opcode: &str, result: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(l, _)| l.protocol == protocol && l.opcode == opcode && l.result == result)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every answered request.
    pub fn requests_total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Count one reply.
    pub(super) fn count_reply(&mut self, reply: &[u8]) {
        match request_labels(reply) {
            Some(labels) => *self.requests.entry(labels).or_insert(0) += 1,
            // Our own replies always have a header; never panic over it anyway.
            None => self.dropped += 1,
        }
    }

    pub(super) fn drift_checked(&mut self, now: Timestamp, finding: DriftFinding) {
        if finding != DriftFinding::Intact {
            self.drift_repairs += 1;
            self.last_drift_repair = Some(now);
        }
        self.last_drift_check = Some((now, finding));
    }
}

/// The labels of a reply we emit, read back from its header (NAT-PMP RFC 6886 §3.5, PCP RFC
/// 6887 §7.2). `None` for bytes too short to be a reply.
pub fn request_labels(reply: &[u8]) -> Option<RequestLabels> {
    let (&version, &opcode) = (reply.first()?, reply.get(1)?);
    let opcode = opcode & !wire::natpmp::RESPONSE_BIT;
    match version {
        wire::natpmp::VERSION => {
            let code = u16::from_be_bytes([*reply.get(2)?, *reply.get(3)?]);
            Some(RequestLabels {
                protocol: "nat-pmp",
                opcode: match opcode {
                    wire::natpmp::OP_EXTERNAL_ADDRESS => "external-address",
                    wire::natpmp::OP_MAP_UDP => "map-udp",
                    wire::natpmp::OP_MAP_TCP => "map-tcp",
                    _ => "other",
                },
                result: natpmp_result_name(code),
            })
        }
        wire::pcp::VERSION => Some(RequestLabels {
            protocol: "pcp",
            opcode: match opcode {
                0 => "announce",
                1 => "map",
                2 => "peer",
                _ => "other",
            },
            result: pcp_result_name(*reply.get(3)?),
        }),
        _ => None,
    }
}

/// NAT-PMP result codes (RFC 6886 §3.5).
fn natpmp_result_name(code: u16) -> &'static str {
    match code {
        0 => "success",
        1 => "unsupported-version",
        2 => "not-authorized",
        3 => "network-failure",
        4 => "out-of-resources",
        5 => "unsupported-opcode",
        _ => "other",
    }
}

/// PCP result codes (RFC 6887 §7.4), lower case with dashes.
fn pcp_result_name(code: u8) -> &'static str {
    match code {
        0 => "success",
        1 => "unsupp-version",
        2 => "not-authorized",
        3 => "malformed-request",
        4 => "unsupp-opcode",
        5 => "unsupp-option",
        6 => "malformed-option",
        7 => "network-failure",
        8 => "no-resources",
        9 => "unsupp-protocol",
        10 => "user-ex-quota",
        11 => "cannot-provide-external",
        12 => "address-mismatch",
        13 => "excessive-remote-peers",
        _ => "other",
    }
}

impl<F: Forwarder> Gateway<F> {
    /// The counters so far.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// `forwarder.apply`, counted.
    pub(super) fn kernel_apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        self.stats.kernel_transactions += 1;
        let result = self.forwarder.apply(changes);
        if result.is_err() {
            self.stats.kernel_errors += 1;
        }
        result
    }

    /// `forwarder.prepare` (a table load), counted.
    pub(super) fn kernel_prepare(&mut self, spec: &TableSpec) -> Result<(), KernelError> {
        self.stats.kernel_transactions += 1;
        let result = self.forwarder.prepare(spec);
        if result.is_err() {
            self.stats.kernel_errors += 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_reply_header() {
        let pmp = request_labels(&[0, 0x82, 0, 2, 0, 0, 0, 9]).unwrap();
        assert_eq!(
            (pmp.protocol, pmp.opcode, pmp.result),
            ("nat-pmp", "map-tcp", "not-authorized")
        );
        let pcp = request_labels(&[2, 0x81, 0, 8]).unwrap();
        assert_eq!(
            (pcp.protocol, pcp.opcode, pcp.result),
            ("pcp", "map", "no-resources")
        );
        assert_eq!(request_labels(&[2]), None);
        assert_eq!(request_labels(&[7, 0x80, 0, 0]), None);
    }
}
