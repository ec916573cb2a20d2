//! When the lease file is due, and what it should hold. The gateway decides; the daemon writes
//! the file (atomically, see its `leases.rs`) and reports how it went.
//!
//! A periodic snapshot is taken a slice at a time: [`LEASE_SLICE`] endpoints per call of
//! `take_lease_snapshot`, which the daemon makes once per turn of its loop, with requests
//! served in between. Copying 100 000 mappings at once held the loop for 15–45 ms once a
//! second for as long as the table kept changing.
//!
//! The slices are read at different moments, so the file is not a picture of one instant: a
//! port that moved from one endpoint to another while the snapshot was under way can be in
//! it twice, and a mapping made behind the slices already taken can be missing. That is the
//! file's nature anyway after a crash (it is up to `LEASE_SAVE_DELAY` old), and the rule
//! that covers it holds: restoring skips a record that clashes with one already restored,
//! and the kernel, as witness, adopts or restarts the epoch for the rest (`recovery`). The
//! snapshot taken at shutdown, marked clean, is whole and of one instant.

use super::{Gateway, LeaseSnapshot, LEASE_RETRY_DELAY, LEASE_SAVE_DELAY};
use crate::engine::mapping::EndpointKey;
use crate::engine::records::MappingRecord;
use crate::kernel::Forwarder;
use crate::time::Timestamp;
use tracing::{info, warn};

/// How many endpoints one slice of a periodic lease snapshot copies: 0.13 ms of the loop's
/// time, against 15 ms for 100 000 at once (benches/table_memory.rs prints both).
pub const LEASE_SLICE: usize = 4096;

/// A periodic snapshot under way.
pub(super) struct Partial {
    records: Vec<MappingRecord>,
    /// The last endpoint copied: the next slice starts after it.
    after: Option<EndpointKey>,
    /// The first slice's time; every slice counts its expiries from it.
    taken_at: Timestamp,
    /// The mapping state changed while the snapshot was under way: part of the change may be
    /// behind the slices already taken, so another save is due after this one.
    changed_since: bool,
}

impl<F: Forwarder> Gateway<F> {
    /// The mapping state changed: the lease file is due soon (at most once per
    /// `LEASE_SAVE_DELAY`, so a flood of requests costs one write per second, not one each).
    pub(super) fn leases_changed(&mut self, now: Timestamp) {
        if let Some(partial) = &mut self.lease_partial {
            partial.changed_since = true;
        } else if self.lease_due.is_none() {
            self.lease_due = Some(now + LEASE_SAVE_DELAY);
        }
    }

    /// The whole table at once (the shutdown snapshot).
    pub(super) fn lease_snapshot(&self, now: Timestamp) -> LeaseSnapshot {
        LeaseSnapshot {
            external_addr: self.engine.external_address(),
            epoch_seconds: self.engine.epoch_seconds(now),
            records: self.engine.records(now),
            taken_at: now,
            clean: false,
        }
    }

    /// If the lease file is due at `now`, take the next slice of its snapshot, and return the
    /// snapshot once it is whole. While one is under way the gateway's timeout is `now`, so
    /// the caller comes back on its next turn. Report the write with `lease_saved`.
    pub fn take_lease_snapshot(&mut self, now: Timestamp) -> Option<LeaseSnapshot> {
        if self.lease_due.is_none_or(|t| t > now) {
            return None;
        }
        let partial = self.lease_partial.get_or_insert_with(|| Partial {
            records: Vec::with_capacity(self.engine.len()),
            after: None,
            taken_at: now,
            changed_since: false,
        });
        partial.after = self.engine.records_after(
            partial.taken_at,
            partial.after.as_ref(),
            self.lease_slice,
            &mut partial.records,
        );
        if partial.after.is_some() {
            return None;
        }
        let done = self.lease_partial.take().expect("a snapshot under way");
        self.lease_due = done.changed_since.then_some(now + LEASE_SAVE_DELAY);
        Some(LeaseSnapshot {
            // Read now, with the last slice: an epoch read later than the records' time is
            // ahead of theirs by the snapshot's span, which a client never takes for a loss
            // (RFC 6886 §3.6 looks for an epoch that is behind).
            external_addr: self.engine.external_address(),
            epoch_seconds: self.engine.epoch_seconds(now),
            records: done.records,
            taken_at: done.taken_at,
            clean: false,
        })
    }

    /// How many endpoints one slice of a periodic lease snapshot copies (at least one);
    /// [`LEASE_SLICE`] unless changed. For tests and the fuzzer, so that small tables are
    /// taken over several slices too.
    #[doc(hidden)]
    pub fn set_lease_slice(&mut self, endpoints: usize) {
        self.lease_slice = endpoints.max(1);
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
