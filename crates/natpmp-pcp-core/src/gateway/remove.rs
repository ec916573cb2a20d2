//! Mappings removed by hand (`natpmpctl remove`), handled like a request: the engine stages
//! the kernel changes, they go to the kernel in one transaction (removals of elements another
//! tool already deleted are tolerated, as for a client's request), and the removal is
//! committed or, if the kernel refuses, reverted whole. The flows of what was removed end
//! with the next `clear_flows`, so traffic through a removed mapping stops at once.

use super::Gateway;
use crate::kernel::{removed_for_good, Forwarder};
use crate::time::Timestamp;
use crate::view::MappingView;
use tracing::{debug, warn};

pub use crate::engine::remove::Removal;

/// What a removal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// These mappings are gone, from the engine and the kernel.
    Done(Vec<MappingView>),
    /// Nothing matched: nothing changed.
    NothingMatched,
    /// The kernel refused the changes: everything is as it was.
    Refused,
    /// Not serving (switched off): there are no mappings.
    NotServing,
}

impl<F: Forwarder> Gateway<F> {
    /// Remove the mappings `removal` picks. Call `clear_flows` after answering.
    pub fn remove(&mut self, now: Timestamp, removal: &Removal) -> Removed {
        if !self.serving {
            return Removed::NotServing;
        }
        let mut changes = Vec::new();
        let (removed, undo) = self.engine.remove_by_hand(now, removal, &mut changes);
        if removed.is_empty() {
            return Removed::NothingMatched;
        }
        if !self.apply_tolerant(&changes) {
            warn!(
                "removing {} mapping(s) by hand: the kernel refused the changes; nothing removed",
                removed.len()
            );
            self.engine.revert(undo);
            return Removed::Refused;
        }
        for c in &changes {
            debug!("{c}");
        }
        self.flows_to_clear.extend(removed_for_good(&changes));
        self.stats.removed_by_hand += removed.len() as u64;
        self.leases_changed(now);
        Removed::Done(removed)
    }
}
