//! Saving and restoring mappings across a restart (the lease file), and live policy changes.

mod common;

use common::*;
use natpmp_pcp_core::{Change, MappingRecord, Protocol, Server, ServerConfig, Timestamp};

/// A second engine, as after a restart: new origin, same external address.
fn restarted(records: &[MappingRecord], epoch_seconds: u32) -> (Server, Vec<Change>, usize) {
    let now = Timestamp::from_secs(5);
    let mut s = Server::new(ServerConfig::default(), now);
    let mut changes = Vec::new();
    s.set_external_address(now, Some(EXT), &mut changes);
    let n = s.restore(now, epoch_seconds, records, &mut changes);
    (s, changes, n)
}

#[test]
fn records_then_restore_bring_back_ports_lifetimes_and_forwards() {
    let mut gw = Gw::new();
    let tcp = gw.map_ok(A, TCP, 8080, 40000, 7200);
    let udp = gw.map_ok(B, UDP, 53, 0, 600);
    gw.advance_secs(100);
    let records = gw.server.records(gw.now);
    assert_eq!(records.len(), 2);

    let (s, changes, n) = restarted(&records, 100);
    assert_eq!(n, 2);
    let now = Timestamp::from_secs(5);
    let views = s.mappings(now);
    assert_eq!(views.len(), 2);
    let a = views.iter().find(|v| v.client == A).unwrap();
    assert_eq!(
        (
            a.protocol,
            a.internal_port,
            a.external_port,
            a.lifetime,
            a.expires_in
        ),
        (Protocol::Tcp, 8080, tcp, 7200, 7100)
    );
    let b = views.iter().find(|v| v.client == B).unwrap();
    assert_eq!((b.external_port, b.expires_in), (udp, 500));
    // One Add per restored mapping, carrying the remaining lifetime plus the kernel grace.
    let added = adds(&changes);
    assert_eq!(added.len(), 2);
    assert_eq!(s.forwards(now).len(), 2);
}

#[test]
fn restore_continues_the_epoch_instead_of_resetting_it() {
    let (s, _, _) = restarted(&[], 1234);
    let now = Timestamp::from_secs(5);
    assert_eq!(s.epoch_seconds(now), 1234);
    assert_eq!(s.epoch_seconds(now + secs(10)), 1244);
}

#[test]
fn an_address_change_after_restore_resets_the_carried_epoch() {
    let (mut s, _, _) = restarted(&[], 1234);
    let now = Timestamp::from_secs(6);
    let mut changes = Vec::new();
    s.set_external_address(now, Some(EXT2), &mut changes);
    assert_eq!(s.epoch_seconds(now), 0);
}

#[test]
fn restore_skips_expired_and_clashing_records() {
    let expired = MappingRecord {
        client: A,
        protocol: Protocol::Udp,
        internal_port: 1,
        external_port: 40001,
        lifetime: 60,
        expires_in_ms: 0,
    };
    let kept = MappingRecord {
        client: A,
        protocol: Protocol::Tcp,
        internal_port: 2,
        external_port: 40002,
        lifetime: 60,
        expires_in_ms: 30_000,
    };
    // B cannot hold UDP 40002 while A holds TCP 40002 (companion reservation).
    let clash = MappingRecord {
        client: B,
        protocol: Protocol::Udp,
        internal_port: 3,
        external_port: 40002,
        lifetime: 60,
        expires_in_ms: 30_000,
    };
    let (s, changes, n) = restarted(&[expired, kept, clash, kept], 0);
    assert_eq!(n, 1);
    assert_eq!(changes.len(), 1);
    let views = s.mappings(Timestamp::from_secs(5));
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].external_port, 40002);
}

#[test]
fn a_restored_mapping_expires_when_its_saved_lifetime_ends() {
    let rec = MappingRecord {
        client: A,
        protocol: Protocol::Tcp,
        internal_port: 2,
        external_port: 40002,
        lifetime: 60,
        expires_in_ms: 30_000,
    };
    let (mut s, _, _) = restarted(&[rec], 0);
    let mut changes = Vec::new();
    s.handle_timeout(Timestamp::from_secs(5) + secs(29), &mut changes);
    assert!(changes.is_empty());
    s.handle_timeout(Timestamp::from_secs(5) + secs(30), &mut changes);
    assert_eq!(removes(&changes).len(), 1);
    assert!(s.mappings(Timestamp::from_secs(40)).is_empty());
}

#[test]
fn a_renewal_after_restore_keeps_the_restored_port() {
    let rec = MappingRecord {
        client: A,
        protocol: Protocol::Tcp,
        internal_port: 8080,
        external_port: 40002,
        lifetime: 60,
        expires_in_ms: 30_000,
    };
    let (mut s, _, _) = restarted(&[rec], 0);
    let mut reply = Vec::new();
    let mut changes = Vec::new();
    s.handle(
        Timestamp::from_secs(6),
        A,
        &map_request(TCP, 8080, 0, 3600),
        &mut reply,
        &mut changes,
    );
    assert_eq!(parse_map_reply(&reply).eport, 40002);
}

#[test]
fn set_config_applies_the_new_policy_to_new_requests_only() {
    let mut gw = Gw::new();
    let before = gw.map_ok(A, TCP, 80, 0, 7200);
    gw.server.set_config(ServerConfig {
        port_range: 50000..=50010,
        max_lifetime: 100,
        ..ServerConfig::default()
    });
    // The existing mapping keeps its port; a renewal is capped by the new maximum.
    let renewed = gw.map(A, TCP, 80, 0, 7200);
    assert_eq!(renewed.eport, before);
    assert_eq!(renewed.lifetime, 100);
    let fresh = gw.map_ok(A, UDP, 81, 0, 7200);
    assert!((50000..=50010).contains(&fresh));
}
