//! The epoch, SSSoE (rfc-checklist §2 E items 20–26, §4 cases 64, 65, 69, §6 A8).

mod common;
use common::*;
use natpmp_pcp_core::{EngineConfig, FakeForwarder, Gateway, Timestamp};
use std::net::Ipv4Addr;

fn fresh_gateway(origin: Timestamp) -> Gateway<FakeForwarder> {
    Gateway::new(
        gateway_config(EngineConfig::default()),
        FakeForwarder::new(),
        origin,
    )
}

#[test]
fn epoch_starts_at_server_creation() {
    let origin = Timestamp::from_secs(777_777);
    let gateway = fresh_gateway(origin);
    let engine = gateway.engine();
    assert_eq!(engine.epoch_seconds(origin), 0);
    assert_eq!(engine.epoch_seconds(origin + secs(10)), 10);
    assert_eq!(
        engine.epoch_seconds(origin + secs(86_400 * 30)),
        86_400 * 30
    );
    // And so does the epoch of a gateway started there, with its address.
    let (gw, _) = Gw::started(
        gateway_config(EngineConfig::default()),
        origin,
        Some(EXT),
        None,
    );
    assert_eq!(gw.gateway.engine().epoch_seconds(origin + secs(10)), 10);
}

#[test]
fn epoch_counts_whole_seconds_elapsed() {
    let gateway = fresh_gateway(T0);
    let engine = gateway.engine();
    assert_eq!(engine.epoch_seconds(T0 + ms(999)), 0);
    assert_eq!(engine.epoch_seconds(T0 + ms(1000)), 1);
    assert_eq!(engine.epoch_seconds(T0 + ms(10_999)), 10);
}

#[test]
fn epoch_does_not_depend_on_the_time_origin() {
    // The daemon's monotonic clock origin is arbitrary (§2 E item 25).
    for origin in [
        Timestamp::ZERO,
        Timestamp::from_millis(1),
        Timestamp::from_secs(4_000_000_000),
    ] {
        let (mut gw, _) = Gw::started(
            gateway_config(EngineConfig::default()),
            origin,
            Some(EXT),
            None,
        );
        gw.advance_secs(3);
        assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 3, EXT));
    }
}

#[test]
fn two_requests_10_seconds_apart_differ_by_10() {
    // §4 case 64.
    let mut gw = Gw::new();
    gw.advance_ms(2_345);
    let first = gw.reply(A, &addr_request());
    gw.advance_secs(10);
    let second = gw.reply(A, &addr_request());
    let s1 = u32::from_be_bytes(first[4..8].try_into().unwrap());
    let s2 = u32::from_be_bytes(second[4..8].try_into().unwrap());
    assert_eq!(s2 - s1, 10);
    assert_eq!(s1, 2);
}

#[test]
fn error_replies_carry_the_current_sssoe() {
    // §2 E item 24, §2 I item 49, §4 case 69: every reply, errors included.
    let mut gw = Gw::with_engine(EngineConfig {
        max_mappings_per_client: 1,
        ..EngineConfig::default()
    });
    gw.advance_secs(123);
    gw.map_ok(A, UDP, 1, 0, 60);
    // Unsupported version: PCP's format (PCP is on), the epoch in bytes 8–11.
    assert_bytes(
        &gw.reply(A, &[0x01, 0x00]),
        &pcp_unsupported_version_reply(&[0x01, 0x00], 123),
    );
    // And P5 from a NAT-PMP-only server.
    let mut pmp = Gw::natpmp_only();
    pmp.advance_secs(123);
    assert_bytes(
        &pmp.reply(A, &[0x01, 0x00]),
        &unsupported_version_reply(123),
    );
    // Unsupported opcode.
    assert_bytes(
        &gw.reply(A, &[0x00, 0x09]),
        &[0x00, 0x89, 0x00, 0x05, 0, 0, 0, 123],
    );
    // Refused (internal port 0, lifetime > 0).
    assert_bytes(
        &gw.reply(A, &map_request(TCP, 0, 0, 60)),
        &map_reply(TCP, REFUSED, 123, 0, 0, 0),
    );
    // Out of resources (quota of 1).
    assert_bytes(
        &gw.reply(A, &map_request(TCP, 2, 0, 60)),
        &map_reply(TCP, OUT_OF_RESOURCES, 123, 2, 0, 0),
    );
    // Network failure (no address). Losing the address is a change: the epoch restarts.
    gw.set_address(None);
    gw.advance_secs(45);
    assert_bytes(
        &gw.reply(A, &addr_request()),
        &addr_reply(NETWORK_FAILURE, 45, Ipv4Addr::UNSPECIFIED),
    );
    assert_bytes(
        &gw.reply(A, &map_request(UDP, 5, 5, 60)),
        &map_reply(UDP, NETWORK_FAILURE, 45, 5, 0, 0),
    );
}

#[test]
fn epoch_runs_before_any_external_address() {
    let mut gw = Gw::without_address();
    gw.advance_secs(50);
    assert_bytes(
        &gw.reply(A, &addr_request()),
        &addr_reply(NETWORK_FAILURE, 50, Ipv4Addr::UNSPECIFIED),
    );
}

#[test]
fn getting_an_external_address_resets_the_epoch() {
    // §6 A8: None -> Some is a change.
    let mut gw = Gw::without_address();
    gw.advance_secs(100);
    gw.set_address(Some(EXT));
    assert_eq!(gw.epoch(), 0);
    gw.advance_secs(5);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 5, EXT));
}

#[test]
fn changing_the_external_address_resets_the_epoch() {
    // §2 E item 26, §6 A8.
    let mut gw = Gw::new();
    gw.advance_secs(1000);
    gw.set_address(Some(EXT2));
    gw.advance_secs(3);
    assert_eq!(gw.epoch(), 3);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 3, EXT2));
}

#[test]
fn losing_the_external_address_resets_the_epoch() {
    let mut gw = Gw::new();
    gw.advance_secs(1000);
    gw.set_address(None);
    gw.advance_secs(2);
    assert_eq!(gw.epoch(), 2);
}

#[test]
fn setting_the_same_address_again_does_not_reset_the_epoch() {
    let mut gw = Gw::new();
    gw.advance_secs(500);
    gw.set_interfaces(interfaces(Some(EXT)));
    assert!(
        gw.changes.is_empty(),
        "no change, nothing to stage: {:?}",
        gw.changes
    );
    assert_eq!(gw.epoch(), 500);
    gw.advance_secs(1);
    assert_bytes(
        &gw.reply(A, &addr_request()),
        &addr_reply(SUCCESS, 501, EXT),
    );
}

#[test]
fn reset_restarts_the_epoch_at_zero() {
    // §2 E item 21–22, §4 case 65.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.advance_secs(400);
    gw.reset();
    assert_eq!(gw.epoch(), 0);
    gw.advance_secs(2);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 2, EXT));
}

#[test]
fn mapping_activity_does_not_touch_the_epoch() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 5);
    gw.advance_secs(3);
    gw.reply(A, &map_request(TCP, 1, 0, 0));
    gw.map_ok(A, UDP, 2, 0, 1);
    gw.advance_secs(4);
    gw.timeout();
    assert_eq!(gw.epoch(), 7);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 7, EXT));
}

#[test]
fn new_server_restarts_the_epoch() {
    // §4 case 65 (restart): a new engine starts at 0 whatever the old one had reached.
    let mut gw = Gw::new();
    gw.advance_secs(10_000);
    let (mut restarted, _) = Gw::started(
        gateway_config(EngineConfig::default()),
        gw.now,
        Some(EXT),
        None,
    );
    assert_eq!(restarted.epoch(), 0);
    assert_bytes(
        &restarted.reply(A, &addr_request()),
        &addr_reply(SUCCESS, 0, EXT),
    );
    assert_eq!(gw.epoch(), 10_000);
}
