//! Starting after a crash: what the lease file could not know (issue 9 item 6).
//!
//! The lease file is written at most once per `LEASE_SAVE_DELAY` and again at a clean
//! shutdown, which marks it `clean`. A mapping acknowledged after the last periodic save is
//! not in the file, but it is in the kernel: every change is committed to the kernel before
//! its reply is written, and the kernel's elements outlive the process. So after a crash the
//! kernel is the witness, and the rule is:
//!
//! - the kernel table is gone (a reboot, or someone removed it): what was acknowledged since
//!   the last save cannot be known, so the epoch restarts (RFC 6886 §3.6, RFC 6887 §8.5) and
//!   clients re-create their mappings; the leases still come back;
//! - a leased mapping none of whose elements the kernel still holds was deleted or expired
//!   after the save: it is dropped, not brought back;
//! - an open MAP the kernel holds whole (IPv4: its inbound and outbound elements; IPv6: its
//!   pinhole) that the leases lack, or hold with an earlier expiry (a renewal after the save),
//!   is adopted from the kernel: the expiry is the element's timeout less the kernel's grace,
//!   and the owner is NAT-PMP (no nonce: the kernel does not keep one). A PCP client that
//!   made it renews it with its nonce and takes it over (the rule for a host's own NAT-PMP
//!   mapping); what it loses is only that another app on the host could do the same;
//! - anything else the kernel holds that the leases do not explain (FILTER boxes, PEER
//!   elements, half a mapping) cannot be rebuilt from the kernel: the epoch restarts;
//! - otherwise the epoch continues.
//!
//! Nothing of this runs on the request path: a request costs no more than before. Limit: an
//! epoch restart is visible to a client only once the previous epoch was a few seconds old
//! (RFC 6886 §3.6 lets clients allow 2 s of slack), so a crash within seconds of a previous
//! epoch reset cannot be seen by clients; adoption makes such resets rare.

use super::{Gateway, Started};
use crate::engine::mapping::Owner;
use crate::engine::project::KERNEL_TIMEOUT_GRACE;
use crate::engine::records::{MappingRecord, RecordKind};
use crate::kernel::{Element, Forwarder, KernelError};
use crate::time::Timestamp;
use crate::Protocol;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use tracing::warn;

/// How much longer than the leases say a kernel element may live before it counts as a
/// renewal the leases missed: the two clocks (the file's wall-clock expiries, the kernel's
/// countdown) agree to within milliseconds; a renewal extends by at least this much unless
/// it came within this long of the one before.
pub const RENEWAL_TOLERANCE: Duration = Duration::from_secs(1);

/// What the reconciliation after an unclean stop found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Leased mappings dropped because the kernel no longer held them.
    pub dropped: usize,
    /// Open MAPs taken over from the kernel (made or renewed after the last save).
    pub adopted: usize,
    /// Why the epoch restarted, when it did.
    pub lost: Option<String>,
}

impl<F: Forwarder> Gateway<F> {
    /// Compare the leases just restored with `kernel`, the table's listing taken before the
    /// rebuild replaces it (see the module comment for the rule). The caller lists once: a
    /// listing of a large table is the costly part.
    pub(super) fn reconcile_after_crash(
        &mut self,
        now: Timestamp,
        kernel: Result<Vec<(Element, Duration)>, KernelError>,
        started: &mut Started,
    ) {
        let mut recovery = Recovery::default();
        match kernel {
            Err(e) => {
                recovery.lost = Some(format!(
                    "the last run did not stop cleanly and its kernel table is gone ({e})"
                ));
            }
            Ok(kernel) => {
                let held: HashSet<(IpAddr, Protocol, u16)> =
                    kernel.iter().map(|(e, _)| endpoint_of(e)).collect();
                let mut staged = Vec::new();
                recovery.dropped = self
                    .engine
                    .forget_where(
                        now,
                        |k| !held.contains(&(k.client, k.protocol, k.internal_port)),
                        &mut staged,
                    )
                    .len();
                let adoptable = open_maps_in(&kernel, self.engine.external_address());
                recovery.adopted = self.engine.adopt(now, &adoptable, &mut staged);
                let unknown = unacknowledged_by_leases(now, &self.engine.projection(), &kernel);
                if unknown > 0 {
                    recovery.lost = Some(format!(
                        "the last run did not stop cleanly and the kernel holds {unknown} element(s) made or renewed after the last lease save that cannot be rebuilt from the kernel"
                    ));
                }
            }
        }
        if let Some(why) = &recovery.lost {
            warn!("{why}: the epoch restarts so that clients re-create their mappings");
            self.engine.restart_epoch(now);
            started.epoch_continued = false;
        }
        started.recovery = Some(recovery);
    }
}

/// The endpoint an element serves: client address, protocol, internal port.
fn endpoint_of(e: &Element) -> (IpAddr, Protocol, u16) {
    (e.internal_ip(), e.protocol(), e.internal().port())
}

/// How many kernel elements the leases do not account for: absent from their projection, or
/// living longer than it says (beyond the kernel's grace and the tolerance).
pub fn unacknowledged_by_leases(
    now: Timestamp,
    wanted: &[(Element, Timestamp)],
    kernel: &[(Element, Duration)],
) -> usize {
    let mut expiry: HashMap<&Element, Timestamp> = HashMap::with_capacity(wanted.len());
    for (e, t) in wanted {
        let slot = expiry.entry(e).or_insert(*t);
        *slot = (*slot).max(*t);
    }
    kernel
        .iter()
        .filter(|(e, left)| match expiry.get(e) {
            None => true,
            Some(t) => *left > t.since(now) + KERNEL_TIMEOUT_GRACE + RENEWAL_TOLERANCE,
        })
        .count()
}

/// The open MAPs the kernel holds whole, as records the engine can adopt: an IPv4 inbound
/// element with its outbound twin on the current external address, or an IPv6 pinhole.
pub fn open_maps_in(
    kernel: &[(Element, Duration)],
    external: Option<Ipv4Addr>,
) -> Vec<MappingRecord> {
    let outbound: HashMap<(SocketAddrV4, Protocol), (SocketAddrV4, Duration)> = kernel
        .iter()
        .filter_map(|(e, left)| match e {
            Element::Outbound {
                internal,
                protocol,
                external,
            } => Some(((*internal, *protocol), (*external, *left))),
            _ => None,
        })
        .collect();
    let record = |client: IpAddr, protocol, internal_port, external_port, left: Duration| {
        let ms = left.saturating_sub(KERNEL_TIMEOUT_GRACE).as_millis() as u64;
        (ms > 0).then(|| MappingRecord {
            client,
            protocol,
            internal_port,
            external_port,
            lifetime: ms.div_ceil(1000) as u32,
            expires_in_ms: ms,
            kind: RecordKind::Map {
                owner: Owner::NatPmp,
                filters: Vec::new(),
            },
            description: None,
        })
    };
    kernel
        .iter()
        .filter_map(|(e, left)| match e {
            Element::Inbound {
                protocol,
                external_port,
                internal,
            } => {
                let (out_ext, out_left) = outbound.get(&(*internal, *protocol))?;
                if Some(*out_ext.ip()) != external || out_ext.port() != *external_port {
                    return None;
                }
                record(
                    IpAddr::V4(*internal.ip()),
                    *protocol,
                    internal.port(),
                    *external_port,
                    (*left).min(*out_left),
                )
            }
            Element::Pinhole { protocol, internal } => record(
                IpAddr::V6(*internal.ip()),
                *protocol,
                internal.port(),
                internal.port(),
                *left,
            ),
            _ => None,
        })
        .collect()
}
