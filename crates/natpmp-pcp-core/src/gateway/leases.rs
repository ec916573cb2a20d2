//! When the lease file is due, and what it should hold. The gateway decides; the daemon writes
//! the file (atomically, see its `leases.rs`) and reports how it went.

use super::{Gateway, LeaseSnapshot, LEASE_RETRY_DELAY, LEASE_SAVE_DELAY};
use crate::kernel::Forwarder;
use crate::time::Timestamp;
use tracing::{info, warn};

impl<F: Forwarder> Gateway<F> {
    /// The mapping state changed: the lease file is due soon (at most once per
    /// `LEASE_SAVE_DELAY`, so a flood of requests costs one write per second, not one each).
    pub(super) fn leases_changed(&mut self, now: Timestamp) {
        if self.lease_due.is_none() {
            self.lease_due = Some(now + LEASE_SAVE_DELAY);
        }
    }

    pub(super) fn lease_snapshot(&self, now: Timestamp) -> LeaseSnapshot {
        LeaseSnapshot {
            external_addr: self.engine.external_address(),
            epoch_seconds: self.engine.epoch_seconds(now),
            records: self.engine.records(now),
            clean: false,
        }
    }

    /// If the lease file is due at `now`, what it should hold. Report the write with
    /// `lease_saved`.
    pub fn take_lease_snapshot(&mut self, now: Timestamp) -> Option<LeaseSnapshot> {
        if self.lease_due.is_none_or(|t| t > now) {
            return None;
        }
        self.lease_due = None;
        Some(self.lease_snapshot(now))
    }

    /// How writing the lease file went; a failure is retried after `LEASE_RETRY_DELAY`, and
    /// logged once until it works again.
    pub fn lease_saved(&mut self, now: Timestamp, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.lease_failing {
                    info!("lease file written again");
                }
                self.lease_failing = false;
            }
            Err(e) => {
                if !self.lease_failing {
                    warn!("cannot write the lease file: {e}; mappings will not survive a restart until it works (retrying)");
                }
                self.lease_failing = true;
                self.lease_due = Some(self.lease_due.unwrap_or(now + LEASE_RETRY_DELAY));
            }
        }
    }
}
