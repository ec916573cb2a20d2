//! The announcement train (RFC 6886 §3.2.1): 10 copies, the first at once, the gap starting at
//! 250 ms and doubling: 0, 0.25, 0.75, 1.75, ... 127.75 s after the event.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_rfc_6886_schedule() {
        let expect = [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127750];
        let got: Vec<u64> = (0..COPIES).map(offset_ms).collect();
        assert_eq!(got, expect);
    }
}
