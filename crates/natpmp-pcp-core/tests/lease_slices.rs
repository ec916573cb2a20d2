//! A periodic lease snapshot is taken a slice of endpoints per turn of the loop, so that no
//! turn copies a table of 100 000 mappings at once (core `gateway/leases.rs`). Here the slice
//! is made small, so that a few mappings span several turns.

mod common;

use common::*;
use natpmp_pcp_core::gateway::LeaseSnapshot;
use natpmp_pcp_core::gateway::LEASE_SAVE_DELAY;

/// A gateway whose lease snapshots copy `slice` endpoints per turn, holding `n` TCP mappings
/// of A from internal port 1000 on, with its first save due.
fn sliced(slice: usize, n: u16) -> Gw {
    let mut gw = Gw::new();
    gw.gateway.set_lease_slice(slice);
    for i in 0..n {
        gw.map_ok(A, TCP, 1000 + i, 41000 + i, 3600);
    }
    gw.advance(LEASE_SAVE_DELAY);
    gw
}

/// Run the timers at the same instant until the snapshot is whole; return it and how many
/// turns it took.
fn turns_to_snapshot(gw: &mut Gw) -> (LeaseSnapshot, usize) {
    let saved = gw.leases.len();
    for turn in 1..=100 {
        gw.timeout();
        assert!(
            gw.leases.len() <= saved + 1,
            "one snapshot per save: {:?}",
            gw.leases
        );
        if gw.leases.len() > saved {
            return (gw.leases.last().cloned().unwrap(), turn);
        }
        assert!(
            gw.poll_timeout().is_some_and(|t| t <= gw.now),
            "while a snapshot is under way the gateway wants to run again at once"
        );
    }
    panic!("no snapshot after 100 turns");
}

#[test]
fn a_snapshot_of_ten_endpoints_by_three_takes_four_turns_and_holds_them_all() {
    let mut gw = sliced(3, 10);
    let (snapshot, turns) = turns_to_snapshot(&mut gw);
    assert_eq!(turns, 4);
    assert_eq!(snapshot.taken_at, gw.now);
    // The same as the whole table read at once, at the same instant.
    let now = gw.now;
    let whole = gw.gateway.shutdown(now, true);
    assert_eq!(snapshot.records, whole.records);
    assert_eq!(snapshot.records.len(), 10);
    assert!(!snapshot.clean);
}

#[test]
fn a_table_smaller_than_a_slice_is_taken_in_one_turn() {
    let mut gw = sliced(natpmp_pcp_core::gateway::LEASE_SLICE, 10);
    let (snapshot, turns) = turns_to_snapshot(&mut gw);
    assert_eq!(turns, 1);
    assert_eq!(snapshot.records.len(), 10);
}

#[test]
fn expiries_count_from_the_first_slice_and_the_epoch_is_read_with_the_last() {
    let mut gw = sliced(2, 6);
    let started = gw.now;
    gw.timeout();
    gw.advance_ms(300);
    gw.timeout();
    let (snapshot, _) = turns_to_snapshot(&mut gw);
    assert_eq!(snapshot.taken_at, started);
    // Each was granted 3600 s one LEASE_SAVE_DELAY before the first slice.
    let left = 3_600_000 - LEASE_SAVE_DELAY.as_millis() as u64;
    for r in &snapshot.records {
        assert_eq!(r.expires_in_ms, left, "{r:?}");
    }
    assert_eq!(snapshot.epoch_seconds, gw.epoch());
}

#[test]
fn a_change_behind_the_slices_taken_is_saved_by_the_next_snapshot() {
    let mut gw = sliced(2, 6);
    // The first slice: ports 1000 and 1001.
    gw.timeout();
    assert!(gw.leases.is_empty());
    // Requests are served between slices: one behind the cursor, one ahead of it.
    gw.map_ok(A, TCP, 999, 40999, 3600);
    gw.map(A, TCP, 1005, 0, 0);
    let (first, _) = turns_to_snapshot(&mut gw);
    let ports = |s: &LeaseSnapshot| {
        s.records
            .iter()
            .map(|r| r.internal_port)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ports(&first),
        [1000, 1001, 1002, 1003, 1004],
        "999 came behind the cursor, 1005 went ahead of it"
    );
    // Another save is due, one LEASE_SAVE_DELAY after this one, and it has 999.
    let delay = LEASE_SAVE_DELAY.as_millis() as u64;
    gw.advance_ms(delay - 1);
    gw.timeout();
    assert_eq!(gw.leases.len(), 1);
    gw.advance_ms(1);
    let (second, _) = turns_to_snapshot(&mut gw);
    assert_eq!(ports(&second), [999, 1000, 1001, 1002, 1003, 1004]);
    // And then no save is due: no change came during the second.
    gw.advance(LEASE_SAVE_DELAY * 2);
    gw.timeout();
    assert_eq!(gw.leases.len(), 2);
}

#[test]
fn shutdown_during_a_snapshot_takes_the_whole_table_at_once() {
    let mut gw = sliced(2, 6);
    gw.timeout();
    gw.map_ok(A, TCP, 999, 40999, 3600);
    let now = gw.now;
    let clean = gw.gateway.shutdown(now, true);
    assert!(clean.clean);
    assert_eq!(clean.records.len(), 7);
    assert_eq!(clean.taken_at, now);
}
