//! Saving and restoring mappings across a restart (the lease file), and live policy changes.

mod common;

use common::*;
use natpmp_pcp_core::engine::mapping::Owner;
use natpmp_pcp_core::engine::records::{MappingRecord, RecordKind};
use natpmp_pcp_core::gateway::{RestoredLeases, Started};
use natpmp_pcp_core::{EngineConfig, Protocol, Timestamp};
use std::net::Ipv4Addr;

/// Where the restarted gateway's clock starts (a new process: a new origin).
const RESTART: Timestamp = Timestamp::from_secs(5);

/// A second gateway, as after a restart: new origin, a fresh kernel, same external address,
/// started with the leases.
fn restarted(records: &[MappingRecord], epoch_seconds: u32) -> (Gw, Started) {
    restarted_with(records, epoch_seconds, Some(EXT))
}

/// The same, with leases saved while the external address was `saved_addr`.
fn restarted_with(
    records: &[MappingRecord],
    epoch_seconds: u32,
    saved_addr: Option<Ipv4Addr>,
) -> (Gw, Started) {
    Gw::started(
        gateway_config(EngineConfig::default()),
        RESTART,
        Some(EXT),
        Some(RestoredLeases {
            external_addr: saved_addr,
            epoch_seconds,
            records: records.to_vec(),
            clean: true,
        }),
    )
}

/// A NAT-PMP mapping's record.
fn record(
    client: Ipv4Addr,
    protocol: Protocol,
    internal_port: u16,
    external_port: u16,
    expires_in_ms: u64,
) -> MappingRecord {
    MappingRecord {
        client: v4(client),
        protocol,
        internal_port,
        external_port,
        lifetime: 60,
        expires_in_ms,
        kind: RecordKind::Map {
            owner: Owner::NatPmp,
            filters: Vec::new(),
        },
        description: None,
    }
}

#[test]
fn records_then_restore_bring_back_ports_lifetimes_and_forwards() {
    let mut gw = Gw::new();
    let tcp = gw.map_ok(A, TCP, 8080, 40000, 7200);
    let udp = gw.map_ok(B, UDP, 53, 0, 600);
    gw.advance_secs(100);
    // What the daemon would save now.
    let records = gw.gateway.shutdown(gw.now, true).records;
    assert_eq!(records.len(), 2);

    let (r, started) = restarted(&records, 100);
    assert_eq!(started.restored, 2);
    assert!(started.epoch_continued);
    let views = r.mappings();
    assert_eq!(views.len(), 2);
    let a = views.iter().find(|v| v.client == v4(A)).unwrap();
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
    let b = views.iter().find(|v| v.client == v4(B)).unwrap();
    assert_eq!((b.external_port, b.expires_in), (udp, 500));
    // Both elements of each restored mapping, installed in one transaction, carrying the
    // remaining lifetime plus the kernel grace.
    assert_eq!(started.installed, 4);
    assert_eq!(r.transactions.len(), 1, "{:?}", r.transactions);
    let mut want = created(TCP, EXT, tcp, A, 8080, 7100);
    want.extend(created(UDP, EXT, udp, B, 53, 500));
    assert_same_changes(&r.changes, &want);
    assert_eq!(r.elements(), r.elements_of_views());
    assert_eq!(r.elements().len(), 4);
}

#[test]
fn restore_continues_the_epoch_instead_of_resetting_it() {
    let (mut r, started) = restarted(&[], 1234);
    assert!(started.epoch_continued);
    assert_eq!(r.epoch(), 1234);
    r.advance_secs(10);
    assert_eq!(r.epoch(), 1244);
    assert_bytes(
        &r.reply(A, &addr_request()),
        &addr_reply(SUCCESS, 1244, EXT),
    );
}

#[test]
fn restore_with_another_external_address_resets_the_epoch() {
    // Leases saved under another address: the mappings come back, the epoch starts at 0 (an
    // address change resets it, RFC 6887 §8.5).
    let rec = record(A, Protocol::Tcp, 2, 40002, 30_000);
    let (r, started) = restarted_with(&[rec], 1234, Some(EXT2));
    assert!(!started.epoch_continued);
    assert_eq!(started.restored, 1);
    assert_eq!(r.epoch(), 0);
    assert_eq!(r.elements(), pair(TCP, EXT, 40002, A, 2));
}

#[test]
fn an_address_change_after_restore_resets_the_carried_epoch() {
    let (mut r, _) = restarted(&[], 1234);
    r.now = Timestamp::from_secs(6);
    r.set_address(Some(EXT2));
    assert_eq!(r.epoch(), 0);
}

#[test]
fn restore_skips_expired_and_clashing_records() {
    let expired = record(A, Protocol::Udp, 1, 40001, 0);
    let kept = record(A, Protocol::Tcp, 2, 40002, 30_000);
    // B cannot hold UDP 40002 while A holds TCP 40002 (companion reservation).
    let clash = record(B, Protocol::Udp, 3, 40002, 30_000);
    let (r, started) = restarted(&[expired, kept.clone(), clash, kept], 0);
    assert_eq!(started.restored, 1);
    assert_eq!(started.installed, 2);
    assert_same_changes(&r.changes, &created(TCP, EXT, 40002, A, 2, 30));
    let views = r.mappings();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].external_port, 40002);
    assert_eq!(r.elements(), pair(TCP, EXT, 40002, A, 2));
}

#[test]
fn a_restored_mapping_expires_when_its_saved_lifetime_ends() {
    let rec = record(A, Protocol::Tcp, 2, 40002, 30_000);
    let (mut r, _) = restarted(&[rec], 0);
    r.now = RESTART + secs(29);
    assert!(r.timeout().is_empty());
    r.now = RESTART + secs(30);
    assert_same_changes(&r.timeout(), &removed(TCP, EXT, 40002, A, 2));
    r.now = Timestamp::from_secs(40);
    assert!(r.mappings().is_empty());
    assert!(r.elements().is_empty());
}

#[test]
fn a_renewal_after_restore_keeps_the_restored_port() {
    let rec = record(A, Protocol::Tcp, 8080, 40002, 30_000);
    let (mut r, _) = restarted(&[rec], 0);
    r.now = Timestamp::from_secs(6);
    let reply = r.reply(A, &map_request(TCP, 8080, 0, 3600));
    assert_eq!(parse_map_reply(&reply).eport, 40002);
    assert_eq!(r.elements(), pair(TCP, EXT, 40002, A, 8080));
}

#[test]
fn set_config_applies_the_new_policy_to_new_requests_only() {
    let mut gw = Gw::new();
    let before = gw.map_ok(A, TCP, 80, 0, 7200);
    let mut config = gw.config().clone();
    config.engine = EngineConfig {
        port_range: 50000..=50010,
        max_lifetime: 100,
        ..EngineConfig::default()
    };
    gw.reconfigure(config).expect("a reload");
    // Nothing was reinstalled: the mapping and its elements stay as they were.
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    assert_eq!(gw.elements(), pair(TCP, EXT, before, A, 80));
    // The existing mapping keeps its port; a renewal is capped by the new maximum.
    let renewed = gw.map(A, TCP, 80, 0, 7200);
    assert_eq!(renewed.eport, before);
    assert_eq!(renewed.lifetime, 100);
    let fresh = gw.map_ok(A, UDP, 81, 0, 7200);
    assert!((50000..=50010).contains(&fresh));
}
