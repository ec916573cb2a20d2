//! Starting after a crash (`kill -9`): the lease file is up to `LEASE_SAVE_DELAY` old, and
//! the kernel's table, which outlives the process, is the witness of what was acknowledged
//! since. A mapping acknowledged to a client is either brought back or the epoch restarts
//! (RFC 6886 §3.6, RFC 6887 §8.5). The rule is in core `gateway/recovery.rs`.

mod common;

use common::*;
use natpmp_pcp_core::gateway::{LeaseSnapshot, RestoredLeases, Started};
use natpmp_pcp_core::kernel::FakeForwarder;
use natpmp_pcp_core::{EngineConfig, Timestamp};
use std::net::Ipv4Addr;

/// Where the restarted process's clock starts.
const RESTART: Timestamp = Timestamp::from_secs(7);

/// A remote peer on the internet side.
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

/// Let `s` seconds pass for the gateway and for its kernel's element timeouts alike.
fn pass(gw: &mut Gw, s: u64) {
    gw.advance_secs(s);
    gw.kernel.age(secs(s));
}

/// Run the timers until the periodic lease save happened; return that snapshot and when.
fn periodic_save(gw: &mut Gw) -> (LeaseSnapshot, Timestamp) {
    pass(gw, 1);
    gw.timeout();
    let snapshot = gw.leases.last().cloned().expect("a periodic lease save");
    assert!(!snapshot.clean, "a periodic save is never clean");
    (snapshot, gw.now)
}

/// `kill -9` at `before.now`, then a start on the same kernel with the last saved leases, as
/// the daemon reads them (expiries counted down by the time since the save).
fn crash_and_restart(before: &Gw, saved: &LeaseSnapshot, saved_at: Timestamp) -> (Gw, Started) {
    restart_on(before.kernel.clone(), before, saved, saved_at)
}

fn restart_on(
    kernel: FakeForwarder,
    before: &Gw,
    saved: &LeaseSnapshot,
    saved_at: Timestamp,
) -> (Gw, Started) {
    let down = before.now.since(saved_at);
    let down_ms = down.as_millis() as u64;
    let records = saved
        .records
        .iter()
        .filter(|r| r.expires_in_ms > down_ms)
        .map(|r| {
            let mut r = r.clone();
            r.expires_in_ms -= down_ms;
            r
        })
        .collect();
    Gw::started_on(
        kernel,
        gateway_config(EngineConfig::default()),
        RESTART,
        Some(EXT),
        Some(RestoredLeases {
            external_addr: saved.external_addr,
            epoch_seconds: saved.epoch_seconds + down.as_secs() as u32,
            records,
            clean: saved.clean,
        }),
    )
}

#[test]
fn a_mapping_acknowledged_after_the_last_save_is_adopted_from_the_kernel() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    pass(&mut before, 30);
    let (saved, saved_at) = periodic_save(&mut before);
    assert!(saved.epoch_seconds >= 31);
    // Acknowledged, in the kernel, not yet in the lease file: then the process dies.
    before.map_ok(B, UDP, 53, 40053, 600);
    pass(&mut before, 10);
    let (mut gw, started) = crash_and_restart(&before, &saved, saved_at);
    let recovery = started
        .recovery
        .clone()
        .expect("an unclean start is reconciled");
    assert_eq!(recovery.adopted, 1, "{started:?}");
    assert_eq!(recovery.lost, None);
    assert!(started.epoch_continued);
    assert_eq!(gw.epoch(), saved.epoch_seconds + 10);
    // Both forward; B's mapping lives as long as the kernel was told (600 s from its grant).
    let mut want = pair(TCP, EXT, 40080, A, 80);
    want.extend(pair(UDP, EXT, 40053, B, 53));
    want.sort();
    let mut got = gw.elements();
    got.sort();
    assert_eq!(got, want);
    let b = gw.mapping(B, UDP, 53).expect("B's mapping was adopted");
    assert!((589..=590).contains(&b.expires_in), "{b:?}");
    gw.assert_kernel_matches_engine();
    // B renews it and keeps its port.
    assert_eq!(gw.map_ok(B, UDP, 53, 0, 600), 40053);
}

#[test]
fn a_peer_acknowledged_after_the_last_save_restarts_the_epoch() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    let (saved, saved_at) = periodic_save(&mut before);
    // A PEER cannot be rebuilt from its kernel elements alone.
    let peer = pcp_peer_request(A, 600, [2; 12], 6, 9000, 9000, 443, REMOTE);
    before.pcp_ok(A, &peer);
    let (gw, started) = crash_and_restart(&before, &saved, saved_at);
    assert!(!started.epoch_continued);
    let lost = started.recovery.unwrap().lost.unwrap();
    assert!(lost.contains("cannot be rebuilt"), "{lost}");
    assert_eq!(
        gw.epoch(),
        0,
        "the epoch restarts, so the PEER's client re-creates it"
    );
    // What the leases hold is back and forwarding; the unknown elements are gone.
    assert_eq!(gw.elements(), pair(TCP, EXT, 40080, A, 80));
    gw.assert_kernel_matches_engine();
}

#[test]
fn a_kernel_that_agrees_with_the_leases_keeps_the_epoch() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    before.map_ok(B, UDP, 53, 0, 600);
    pass(&mut before, 20);
    let (saved, saved_at) = periodic_save(&mut before);
    pass(&mut before, 40);
    let (gw, started) = crash_and_restart(&before, &saved, saved_at);
    assert!(started.epoch_continued, "{started:?}");
    assert_eq!(started.recovery.unwrap().lost, None);
    assert_eq!(started.restored, 2);
    assert_eq!(gw.epoch(), saved.epoch_seconds + 40);
    assert_eq!(gw.mappings().len(), 2);
    gw.assert_kernel_matches_engine();
}

#[test]
fn a_renewal_after_the_last_save_keeps_the_kernels_later_expiry() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 120);
    pass(&mut before, 59);
    let (saved, saved_at) = periodic_save(&mut before);
    // Renewed 20 s after the save: the kernel now holds it 20 s longer than the leases say.
    pass(&mut before, 20);
    before.map_ok(A, TCP, 80, 40080, 120);
    let (gw, started) = crash_and_restart(&before, &saved, saved_at);
    assert!(started.epoch_continued, "{started:?}");
    assert_eq!(started.recovery.unwrap().adopted, 1);
    let m = gw.mapping(A, TCP, 80).unwrap();
    assert!(
        (119..=120).contains(&m.expires_in),
        "the renewal's expiry: {m:?}"
    );
}

#[test]
fn a_mapping_deleted_after_the_last_save_is_not_brought_back() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    before.map_ok(A, TCP, 81, 40081, 3600);
    let (saved, saved_at) = periodic_save(&mut before);
    assert_eq!(saved.records.len(), 2);
    // Deleted (lifetime 0) after the save: the kernel lost it, the leases did not.
    let m = before.map(A, TCP, 81, 0, 0);
    assert_eq!(m.result, SUCCESS);
    pass(&mut before, 5);
    let (gw, started) = crash_and_restart(&before, &saved, saved_at);
    let recovery = started.recovery.unwrap();
    assert_eq!(recovery.dropped, 1);
    assert_eq!(recovery.lost, None, "nothing acknowledged was lost");
    assert!(started.epoch_continued);
    assert_eq!(gw.elements(), pair(TCP, EXT, 40080, A, 80));
}

#[test]
fn a_crash_that_took_the_kernel_table_too_restarts_the_epoch_and_restores_the_leases() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    let (saved, saved_at) = periodic_save(&mut before);
    // A power cut: the kernel's table is gone with the process.
    let (gw, started) = restart_on(FakeForwarder::new(), &before, &saved, saved_at);
    assert!(!started.epoch_continued);
    assert!(started
        .recovery
        .unwrap()
        .lost
        .unwrap()
        .contains("table is gone"));
    assert_eq!(gw.epoch(), 0);
    assert_eq!(gw.elements(), pair(TCP, EXT, 40080, A, 80));
}

#[test]
fn after_a_clean_shutdown_the_kernel_is_not_asked() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    pass(&mut before, 10);
    let snapshot = before.gateway.shutdown(before.now, false);
    assert!(snapshot.clean);
    // The table was removed at shutdown (keep-forwards-on-exit = false): the epoch goes on.
    let (gw, started) = restart_on(before.kernel.clone(), &before, &snapshot, before.now);
    assert!(started.epoch_continued);
    assert_eq!(started.recovery, None);
    assert_eq!(gw.epoch(), snapshot.epoch_seconds);
    assert_eq!(gw.elements(), pair(TCP, EXT, 40080, A, 80));
}

#[test]
fn a_filtered_pcp_map_after_the_last_save_restarts_the_epoch_but_an_open_one_is_adopted() {
    let mut before = Gw::new();
    let (saved, saved_at) = periodic_save(&mut before);
    let open = pcp_map_request(A, 3600, [1; 12], 6, 8080, 8080, [0; 16]);
    before.pcp_ok(A, &open);
    let (gw, started) = crash_and_restart(&before, &saved, saved_at);
    assert!(started.epoch_continued);
    assert_eq!(gw.mappings().len(), 1, "the open PCP MAP is adopted");
    // The nonce's owner takes it back with a renewal.
    let mut gw = gw;
    gw.pcp_ok(A, &open);

    let mut before = Gw::new();
    let (saved, saved_at) = periodic_save(&mut before);
    let mut filtered = pcp_map_request(A, 3600, [1; 12], 6, 8080, 8080, [0; 16]);
    filtered.extend(pcp_filter(120, 443, REMOTE));
    before.pcp_ok(A, &filtered);
    let (gw, started) = crash_and_restart(&before, &saved, saved_at);
    assert!(!started.epoch_continued);
    assert_eq!(gw.epoch(), 0);
    assert!(gw.mappings().is_empty());
}

#[test]
fn a_shutdown_snapshot_after_a_crash_recovery_is_clean_again() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    let (saved, saved_at) = periodic_save(&mut before);
    let (mut gw, _) = crash_and_restart(&before, &saved, saved_at);
    pass(&mut gw, 3);
    let snapshot = gw.gateway.shutdown(gw.now, true);
    assert!(snapshot.clean);
    assert_eq!(snapshot.records.len(), 1);
}

#[test]
fn a_crash_before_the_first_lease_save_is_taken_over_from_the_kernel() {
    let mut before = Gw::new();
    before.map_ok(A, TCP, 80, 40080, 3600);
    // Killed before any lease file was written: the daemon starts with none.
    let (gw, started) = Gw::started_on(
        before.kernel.clone(),
        gateway_config(EngineConfig::default()),
        RESTART,
        Some(EXT),
        None,
    );
    assert_eq!(started.recovery.unwrap().adopted, 1);
    assert_eq!(gw.elements(), pair(TCP, EXT, 40080, A, 80));
}

#[test]
fn a_first_start_on_an_empty_kernel_is_not_a_recovery() {
    let (_, started) = Gw::started(
        gateway_config(EngineConfig::default()),
        RESTART,
        Some(EXT),
        None,
    );
    assert_eq!(started.recovery, None);
}

/// A periodic snapshot is taken a slice at a time (core `gateway/leases.rs`), so a port that
/// moves from one client to another between two slices is in the file twice. After a crash
/// the clash is settled by the kernel: the port's current holder forwards, nothing is lost.
#[test]
fn a_port_that_moved_between_two_slices_of_the_snapshot_comes_back_with_its_holder() {
    let mut before = Gw::new();
    before.gateway.set_lease_slice(1);
    before.map_ok(A, TCP, 80, 40080, 3600);
    before.map_ok(B, TCP, 8080, 40090, 3600);
    pass(&mut before, 1);
    // The first slice copies A's endpoint (A sorts before B).
    before.timeout();
    assert!(before.leases.is_empty());
    // A lets the port go and B takes it, before the slice that copies B's endpoint.
    before.map(A, TCP, 80, 0, 0);
    before.map(B, TCP, 8080, 0, 0);
    assert_eq!(before.map_ok(B, TCP, 8080, 40080, 3600), 40080);
    before.timeout();
    let saved = before
        .leases
        .last()
        .cloned()
        .expect("the snapshot is whole");
    let holders: Vec<_> = saved
        .records
        .iter()
        .map(|r| (r.client, r.external_port))
        .collect();
    assert_eq!(holders, [(v4(A), 40080), (v4(B), 40080)], "{saved:?}");
    pass(&mut before, 5);
    let (gw, started) = crash_and_restart(&before, &saved, saved.taken_at);
    // A's record is restored first and B's skipped as a clash; the kernel no longer holds
    // A's, and holds B's whole: A is dropped and B adopted, the epoch goes on.
    let recovery = started
        .recovery
        .clone()
        .expect("an unclean start is reconciled");
    assert_eq!((recovery.dropped, recovery.adopted), (1, 1), "{started:?}");
    assert_eq!(recovery.lost, None);
    assert!(started.epoch_continued);
    assert_eq!(gw.elements(), pair(TCP, EXT, 40080, B, 8080), "{started:?}");
    assert!(gw.mapping(A, TCP, 80).is_none());
    assert!(gw.mapping(B, TCP, 8080).is_some(), "{started:?}");
    gw.assert_kernel_matches_engine();
}
