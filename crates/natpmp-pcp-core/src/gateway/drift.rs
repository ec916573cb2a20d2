//! Keeping the kernel an exact projection of the engine (design.md §7 item 1).
//!
//! - the engine is the truth; the lease file keeps it across restarts;
//! - every `DRIFT_CHECK` the table's shape is checked over netlink, and its elements are
//!   compared with the engine's projection at `element_check_interval` (every `DRIFT_CHECK`
//!   too, up to a few thousand mappings); what another tool flushed or deleted is put back, and what
//!   nobody tracks is removed, element by element;
//! - a damaged table (missing, or a chain or map gone) is rebuilt whole.

use super::{Gateway, DRIFT_CHECK};
use crate::engine::project::stage_all;
use crate::kernel::{Change, Element, Forwarder, Health, KernelError, TableSpec};
use crate::time::Timestamp;
use std::collections::HashSet;
use std::time::Duration;
use tracing::{info, warn};

/// How often the kernel's elements are listed and compared. The kernel's dump of a set walks
/// it from the start again for every message it fills, so a listing costs the square of the
/// table: 21.7 ms for 20 000 elements, 720 ms for 100 000 (docs/benchmarks.md), and it runs on
/// the loop that answers requests. So it runs at `DRIFT_CHECK` up to 5 000 mappings and then
/// less often with the square of the size, keeping it near 0.5 % of the time; at most every
/// 10 minutes. The table's shape (a flushed table, a deleted chain: the common drift) is still
/// checked every `DRIFT_CHECK`, at a cost that does not grow with the table.
///
/// The interval is judged at the size the table has when the listing falls due: one scheduled
/// while it was small is put off when it has grown into a longer interval since (a fill from
/// empty would otherwise list tens of thousands of elements in the middle of it).
pub fn element_check_interval(mappings: usize) -> Duration {
    let scale = (mappings / 5_000).max(1) as u64;
    (DRIFT_CHECK * scale.saturating_mul(scale).min(u32::MAX as u64) as u32)
        .min(Duration::from_secs(600))
}

/// The changes that turn the kernel's elements into the wanted ones: remove what nobody
/// tracks (first), add what is missing. Timeouts are not compared (the kernel's count down).
pub fn drift_repair(
    now: Timestamp,
    wanted: &[(Element, Timestamp)],
    kernel: &[(Element, Duration)],
) -> Vec<Change> {
    let have: HashSet<&Element> = kernel.iter().map(|(e, _)| e).collect();
    let want: HashSet<&Element> = wanted.iter().map(|(e, _)| e).collect();
    let mut out: Vec<Change> = kernel
        .iter()
        .filter(|(e, _)| !want.contains(e))
        .map(|(e, _)| Change::Remove(*e))
        .collect();
    let missing: Vec<(Element, Timestamp)> = wanted
        .iter()
        .filter(|(e, _)| !have.contains(e))
        .copied()
        .collect();
    stage_all(now, &missing, &mut out);
    out
}

impl<F: Forwarder> Gateway<F> {
    /// Reload our table, install every element the engine projects in one transaction, and
    /// fill the hairpin sets (which the reload emptied). Returns how many elements it
    /// installed.
    pub(super) fn rebuild(&mut self, now: Timestamp) -> Result<usize, KernelError> {
        let Some(external) = self.config.external.clone() else {
            return Err(KernelError::InvalidInterface(
                "no external interface is configured".into(),
            ));
        };
        let mut adds = Vec::new();
        stage_all(now, &self.engine.projection(), &mut adds);
        self.kernel_prepare(&TableSpec {
            external_interface: external.name,
            connection_mark: self.config.connection_mark,
        })?;
        self.hairpin_applied = None;
        self.kernel_apply(&adds).map_err(|e| match e {
            crate::kernel::ApplyError::Failed(k) | crate::kernel::ApplyError::Unknown(k) => k,
            refused => KernelError::Protocol(refused.to_string()),
        })?;
        self.sync_hairpin();
        Ok(adds.len())
    }

    /// Compare the kernel with the engine; put back what another tool removed, remove what
    /// nobody tracks.
    pub(super) fn check_drift(&mut self, now: Timestamp) {
        let damage = match self.forwarder.check() {
            Ok(Health::Intact) => None,
            Ok(Health::Damaged(why)) => Some(format!("changed by someone else ({why})")),
            Err(e) => Some(format!("cannot be checked ({e})")),
        };
        if damage.is_none() && now < self.next_element_check {
            self.stats.drift_checked(now, super::DriftFinding::Intact);
            return;
        }
        let size = self.engine.len();
        if damage.is_none()
            && element_check_interval(size) > element_check_interval(self.element_check_size)
        {
            // The table has grown into a longer interval since this listing was scheduled (a
            // fill): space it by the size it has now instead of paying for the listing in the
            // middle of the growth. Every element added meanwhile was acknowledged by the
            // kernel; the shape check above still ran.
            self.element_check_size = size;
            self.next_element_check = now + element_check_interval(size);
            self.stats.drift_checked(now, super::DriftFinding::Intact);
            return;
        }
        self.element_check_size = size;
        self.next_element_check = now + element_check_interval(size);
        let kernel = match damage {
            None => match self.forwarder.list() {
                Ok(k) => Ok(k),
                Err(e) => Err(format!("cannot be listed ({e})")),
            },
            Some(why) => Err(why),
        };
        let kernel = match kernel {
            Ok(k) => k,
            Err(why) => {
                warn!("natpmpd's nftables table {why}; restoring it");
                self.stats
                    .drift_checked(now, super::DriftFinding::Rebuilt { why });
                match self.rebuild(now) {
                    Ok(n) => info!("natpmpd table rebuilt with {n} element(s)"),
                    Err(e) => warn!("cannot rebuild the natpmpd table: {e}"),
                }
                return;
            }
        };
        let repair = drift_repair(now, &self.engine.projection(), &kernel);
        let added = repair.iter().filter(|c| c.is_add()).count();
        let finding = match repair.len() {
            0 => super::DriftFinding::Intact,
            n => super::DriftFinding::Repaired {
                added,
                removed: n - added,
            },
        };
        self.stats.drift_checked(now, finding);
        if repair.is_empty() {
            return;
        }
        warn!(
            "natpmpd's elements drifted from its table: restoring {added} missing, removing {} unknown",
            repair.len() - added
        );
        self.apply_or_rebuild(now, &repair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Protocol;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn inbound(port: u16) -> Element {
        Element::Inbound {
            protocol: Protocol::Tcp,
            external_port: port,
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 10), port),
        }
    }

    #[test]
    fn elements_are_listed_less_often_as_the_table_grows() {
        assert_eq!(element_check_interval(0), DRIFT_CHECK);
        assert_eq!(element_check_interval(9_999), DRIFT_CHECK);
        assert_eq!(element_check_interval(10_000), DRIFT_CHECK * 4);
        assert_eq!(element_check_interval(50_000), DRIFT_CHECK * 100);
        assert_eq!(element_check_interval(100_000), Duration::from_secs(600));
        assert_eq!(element_check_interval(usize::MAX), Duration::from_secs(600));
    }

    #[test]
    fn repair_adds_missing_and_removes_unknown_ignoring_timeouts() {
        let now = Timestamp::from_secs(10);
        let wanted = [
            (inbound(1), Timestamp::from_secs(100)),
            (inbound(2), Timestamp::from_secs(100)),
        ];
        let kernel = [
            (inbound(2), Duration::from_secs(3)),
            (inbound(3), Duration::from_secs(50)),
        ];
        assert_eq!(
            drift_repair(now, &wanted, &kernel),
            vec![
                Change::Remove(inbound(3)),
                Change::Add {
                    element: inbound(1),
                    timeout: Duration::from_secs(92)
                }
            ]
        );
        assert!(drift_repair(now, &wanted[..1], &[(inbound(1), Duration::ZERO)]).is_empty());
    }
}
