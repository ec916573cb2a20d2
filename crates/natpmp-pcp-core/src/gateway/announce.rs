//! Unsolicited messages on a schedule.
//!
//! - [`AnnouncementTrain`] (RFC 6886 §3.2.1): 10 copies, the first at once, the gap starting at
//!   250 ms and doubling: 0, 0.25, 0.75, 1.75, ... 127.75 s after the event. NAT-PMP's
//!   address announcements and PCP's ANNOUNCE (RFC 6887 §14.1.3 allows up to 10 copies with
//!   that spacing) each run one.
//! - [`UpdateTrain`] (RFC 6887 §14.2): PCP Mapping Updates, 3 copies at 0, 0.25 and 0.75 s.

use crate::time::Timestamp;
use std::time::Duration;

pub const COPIES: usize = 10;

/// Offset of copy `i` from the event, in milliseconds: 250 * (2^i - 1).
fn offset_ms(i: usize) -> u64 {
    250 * ((1u64 << i) - 1)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AnnouncementTrain {
    started: Option<Timestamp>,
    sent: usize,
}

impl AnnouncementTrain {
    /// Start (or restart: a new event while a train runs begins a new train, so the last
    /// address clients hear about is the current one) at `now`.
    pub fn start(&mut self, now: Timestamp) {
        self.started = Some(now);
        self.sent = 0;
    }

    pub fn stop(&mut self) {
        self.started = None;
    }

    /// When the next copy is due, if the train still runs.
    pub fn next_due(&self) -> Option<Timestamp> {
        let start = self.started?;
        (self.sent < COPIES).then(|| start + Duration::from_millis(offset_ms(self.sent)))
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

/// Offsets of the Mapping Update copies (RFC 6887 §14.2: "SHOULD send 3 copies; the first gap
/// at least 250 ms, the next 500 ms").
pub const UPDATE_OFFSETS_MS: [u64; 3] = [0, 250, 750];

/// The Mapping Update schedule after one address change.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateTrain {
    started: Option<Timestamp>,
    sent: usize,
}

impl UpdateTrain {
    /// Start (or restart) at `now`: the latest change is the one worth telling.
    pub fn start(&mut self, now: Timestamp) {
        self.started = Some(now);
        self.sent = 0;
    }

    pub fn stop(&mut self) {
        self.started = None;
    }

    /// When the train started: mappings a client refreshed after it need no update.
    pub fn started(&self) -> Option<Timestamp> {
        self.started
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        let start = self.started?;
        UPDATE_OFFSETS_MS
            .get(self.sent)
            .map(|ms| start + Duration::from_millis(*ms))
    }

    /// If a copy is due at `now`, count it (late copies collapse into one) and return true.
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
    fn offsets_match_rfc_6886_schedule() {
        let expect = [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127750];
        let got: Vec<u64> = (0..COPIES).map(offset_ms).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn update_train_sends_three_copies_and_collapses_late_ones() {
        let mut u = UpdateTrain::default();
        assert!(!u.take_due(Timestamp::from_secs(1)));
        let t0 = Timestamp::from_secs(10);
        u.start(t0);
        assert!(u.take_due(t0));
        assert!(!u.take_due(t0 + Duration::from_millis(249)));
        assert!(u.take_due(t0 + Duration::from_millis(2000)));
        assert_eq!(u.next_due(), None);
    }
}
