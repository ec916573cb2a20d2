//! Unsolicited messages on a schedule: a [`Train`] of copies at fixed offsets from an event.
//!
//! - [`ANNOUNCEMENT_OFFSETS_MS`] (RFC 6886 §3.2.1): 10 copies, the first at once, the gap
//!   starting at 250 ms and doubling: 0, 0.25, 0.75, 1.75, ... 127.75 s after the event.
//!   NAT-PMP's address announcements and PCP's ANNOUNCE (RFC 6887 §14.1.3 allows up to 10
//!   copies with that spacing) each run one.
//! - [`UPDATE_OFFSETS_MS`] (RFC 6887 §14.2): PCP Mapping Updates, 3 copies at 0, 0.25 and
//!   0.75 s ("SHOULD send 3 copies; the first gap at least 250 ms, the next 500 ms").

use crate::time::Timestamp;
use std::time::Duration;

/// 250 * (2^i - 1) ms for i in 0..10.
pub const ANNOUNCEMENT_OFFSETS_MS: [u64; 10] =
    [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127750];

pub const UPDATE_OFFSETS_MS: [u64; 3] = [0, 250, 750];

/// Copies at `offsets` (milliseconds) after the event that started the train.
#[derive(Clone, Copy, Debug)]
pub struct Train {
    offsets: &'static [u64],
    started: Option<Timestamp>,
    sent: usize,
}

impl Train {
    /// The 10-copy announcement schedule, not running.
    pub fn announcements() -> Train {
        Train::new(&ANNOUNCEMENT_OFFSETS_MS)
    }

    /// The 3-copy Mapping Update schedule, not running.
    pub fn updates() -> Train {
        Train::new(&UPDATE_OFFSETS_MS)
    }

    fn new(offsets: &'static [u64]) -> Train {
        Train {
            offsets,
            started: None,
            sent: 0,
        }
    }

    /// Start (or restart: a new event while a train runs begins a new train, so the last thing
    /// clients hear about is the current one) at `now`.
    pub fn start(&mut self, now: Timestamp) {
        self.started = Some(now);
        self.sent = 0;
    }

    pub fn stop(&mut self) {
        self.started = None;
    }

    /// When the train started (Mapping Updates: mappings a client refreshed after it need
    /// none).
    pub fn started(&self) -> Option<Timestamp> {
        self.started
    }

    /// When the next copy is due, if the train still runs.
    pub fn next_due(&self) -> Option<Timestamp> {
        let start = self.started?;
        self.offsets
            .get(self.sent)
            .map(|ms| start + Duration::from_millis(*ms))
    }

    /// If a copy is due at `now`, count it as sent and return true.
    ///
    /// A copy that is late (the daemon was busy) is sent once, not once per missed slot: the
    /// train catches up by skipping the copies whose successor is due as well.
    pub fn take_due(&mut self, now: Timestamp) -> bool {
        match self.next_due() {
            Some(due) if due <= now => {
                self.sent += 1;
                while self.next_due().is_some_and(|d| d <= now) {
                    self.sent += 1;
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_offsets_match_rfc_6886_schedule() {
        let computed: Vec<u64> = (0..10).map(|i| 250 * ((1u64 << i) - 1)).collect();
        assert_eq!(computed, ANNOUNCEMENT_OFFSETS_MS);
        let mut a = Train::announcements();
        let t0 = Timestamp::from_secs(5);
        a.start(t0);
        for ms in ANNOUNCEMENT_OFFSETS_MS {
            assert_eq!(a.next_due(), Some(t0 + Duration::from_millis(ms)));
            assert!(a.take_due(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(a.next_due(), None);
    }

    #[test]
    fn update_train_sends_three_copies_and_collapses_late_ones() {
        let mut u = Train::updates();
        assert!(!u.take_due(Timestamp::from_secs(1)));
        let t0 = Timestamp::from_secs(10);
        u.start(t0);
        assert_eq!(u.started(), Some(t0));
        assert!(u.take_due(t0));
        assert!(!u.take_due(t0 + Duration::from_millis(249)));
        assert!(u.take_due(t0 + Duration::from_millis(2000)));
        assert_eq!(u.next_due(), None);
        u.stop();
        assert_eq!(u.started(), None);
    }
}
