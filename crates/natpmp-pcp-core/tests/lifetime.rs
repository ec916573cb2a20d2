//! Lifetimes, renewal and expiry with virtual time (rfc-checklist §2 G items 36–39, §4 cases
//! 50, 51, 68, §6 A10).

mod common;
use common::*;
use natpmp_pcp_core::{Change, EngineConfig, FakeForwarder, Gateway, Timestamp};

/// Run past the announcement trains (and the lease save after start) so `poll_timeout` only
/// reflects mappings.
fn gw_after_announcements(config: EngineConfig) -> Gw {
    let mut gw = Gw::with_engine(config);
    gw.advance_secs(200);
    while gw.announcement().is_some() {}
    gw
}

#[test]
fn granted_lifetime_is_the_requested_one_up_to_the_maximum() {
    // §2 G item 36, §6 A10: never more than asked, capped at max_lifetime (86400 by default).
    let mut gw = Gw::new();
    for (iport, asked, granted) in [
        (1u16, 7200u32, 7200u32),
        (2, 86400, 86400),
        (3, 86401, 86400),
        (4, 1_000_000, 86400),
        (5, 60, 60),
    ] {
        let r = gw.reply(A, &map_request(UDP, iport, 0, asked));
        let m = parse_map_reply(&r);
        assert_eq!(m.lifetime, granted, "asked {asked}");
        let a = adds(&gw.changes);
        assert_eq!(a.len(), 2);
        assert!(
            a.iter().all(|(_, t)| *t == secs(u64::from(granted) + 2)),
            "{a:?}"
        );
    }
}

#[test]
fn configured_max_lifetime_caps_the_grant() {
    let mut gw = Gw::with_engine(EngineConfig {
        max_lifetime: 3600,
        ..EngineConfig::default()
    });
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 8080, 8080, 3600));
    assert_same_changes(&gw.changes, &created(TCP, EXT, 8080, A, 8080, 3600));
}

#[test]
fn lifetime_1_is_granted_1_and_expires_one_second_later() {
    // §4 case 51: no PCP-style minimum for NAT-PMP.
    let mut gw = Gw::new();
    let r = gw.reply(A, &map_request(UDP, 4000, 4000, 1));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 4000, 4000, 1));
    gw.advance_ms(999);
    assert!(gw.timeout().is_empty());
    assert!(gw.mapping(A, UDP, 4000).is_some());
    gw.advance_ms(1);
    let c = gw.timeout();
    assert_same_changes(&c, &removed(UDP, EXT, 4000, A, 4000));
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
}

#[test]
fn lifetime_0xffffffff_is_capped_and_expires_when_the_reply_said() {
    // §2 G item 38, §4 case 50: no overflow; the mapping ends after the granted 86400 s.
    let mut gw = Gw::new();
    let r = gw.reply(A, &map_request(TCP, 22, 2222, u32::MAX));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 22, 2222, 86400));
    let start = gw.now;
    gw.now = Timestamp::from_millis(start.as_millis() + 86_400_000 - 1);
    assert!(gw.timeout().is_empty());
    // 1 ms left: whole seconds rounded up, so a live mapping never shows 0 s left.
    assert_eq!(gw.mapping(A, TCP, 22).unwrap().expires_in, 1);
    assert_eq!(gw.elements(), pair(TCP, EXT, 2222, A, 22));
    gw.now = start + secs(86400);
    assert_same_changes(&gw.timeout(), &removed(TCP, EXT, 2222, A, 22));
    assert!(gw.mappings().is_empty());
}

#[test]
fn lifetime_0xffffffff_with_unlimited_maximum_does_not_overflow() {
    let mut gw = Gw::with_engine(EngineConfig {
        max_lifetime: u32::MAX,
        ..EngineConfig::default()
    });
    let r = gw.reply(A, &map_request(UDP, 9, 9999, u32::MAX));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 9, 9999, u32::MAX));
    assert_same_changes(&gw.changes, &created(UDP, EXT, 9999, A, 9, u32::MAX));
    let pt = gw.poll_timeout().expect("something is pending");
    assert!(pt <= T0 + secs(u64::from(u32::MAX)));
    gw.advance_secs(365 * 24 * 3600);
    assert!(gw.timeout().is_empty());
    assert_eq!(gw.mapping(A, UDP, 9).unwrap().lifetime, u32::MAX);
    gw.now = T0 + secs(u64::from(u32::MAX));
    assert_same_changes(&gw.timeout(), &removed(UDP, EXT, 9999, A, 9));
}

#[test]
fn mapping_expires_exactly_at_the_end_of_its_lifetime_not_before() {
    // §2 G item 39, §4 case 68.
    let mut gw = Gw::new();
    gw.advance_ms(123);
    let t = gw.now;
    gw.map_ok(A, TCP, 8080, 8080, 60);
    gw.now = Timestamp::from_millis(t.as_millis() + 59_999);
    assert!(gw.timeout().is_empty());
    assert_eq!(gw.mappings().len(), 1);
    gw.now = t + secs(60);
    let c = gw.timeout();
    assert_same_changes(&c, &removed(TCP, EXT, 8080, A, 8080));
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
    // Nothing is removed twice.
    gw.advance_secs(1);
    assert!(gw.timeout().is_empty());
}

#[test]
fn late_handle_timeout_expires_everything_due() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 0, 10);
    gw.map_ok(B, TCP, 2, 0, 20);
    gw.map_ok(C, UDP, 3, 0, 30);
    gw.advance_secs(25);
    let c = gw.timeout();
    assert_eq!(c.len(), 4, "{c:?}");
    assert!(c.iter().all(|c| matches!(c, Change::Remove(_))));
    let left: Vec<_> = gw
        .mappings()
        .iter()
        .map(|m| (m.client, m.internal_port))
        .collect();
    assert_eq!(left, vec![(v4(C), 3)]);
    assert_eq!(gw.elements(), gw.elements_of_views());
}

#[test]
fn only_expired_mappings_are_removed() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1000, 31000, 10);
    gw.map_ok(A, UDP, 1001, 31001, 20);
    gw.advance_secs(10);
    let c = gw.timeout();
    assert_same_changes(&c, &removed(UDP, EXT, 31000, A, 1000));
    assert_eq!(gw.elements(), pair(UDP, EXT, 31001, A, 1001));
    let v = gw.mapping(A, UDP, 1001).unwrap();
    assert_eq!(v.expires_in, 10);
}

#[test]
fn poll_timeout_is_never_later_than_the_next_expiry() {
    let mut gw = gw_after_announcements(EngineConfig::default());
    assert_eq!(gw.poll_timeout(), None, "nothing pending");
    let t = gw.now;
    gw.map_ok(A, TCP, 1, 0, 300);
    gw.map_ok(A, TCP, 2, 0, 100);
    let pt = gw.poll_timeout().expect("a mapping is pending");
    assert!(
        pt <= t + secs(100),
        "poll_timeout {pt:?} after expiry {:?}",
        t + secs(100)
    );
    assert!(pt >= t, "poll_timeout in the past");
}

#[test]
fn driving_by_poll_timeout_expires_each_mapping_on_time() {
    // The daemon's loop: sleep until poll_timeout, call handle_timeout.
    let mut gw = gw_after_announcements(EngineConfig::default());
    let t = gw.now;
    let lifetimes = [5u32, 17, 17, 60, 3600];
    for (i, l) in lifetimes.iter().enumerate() {
        gw.map_ok(A, UDP, 100 + i as u16, 0, *l);
    }
    let mut removed_at = Vec::new();
    for _ in 0..1000 {
        let Some(next) = gw.poll_timeout() else {
            break;
        };
        // A deadline already past means "now" (the daemon would not sleep).
        gw.now = next.max(gw.now);
        let c = gw.timeout();
        for ch in &c {
            let iport = ch.element().internal().port();
            let l = lifetimes[(iport - 100) as usize];
            if matches!(ch, Change::Remove(natpmp_pcp_core::Element::Inbound { .. })) {
                removed_at.push((iport, gw.now));
            }
            assert!(!ch.is_add(), "expiry added {ch}");
            assert_eq!(
                gw.now,
                t + secs(u64::from(l)),
                "port {iport} removed at the wrong time"
            );
        }
        if c.is_empty() && gw.poll_timeout().is_some_and(|p| p <= gw.now) {
            panic!(
                "poll_timeout {:?} reports work that handle_timeout does not do",
                gw.now
            );
        }
    }
    assert_eq!(removed_at.len(), lifetimes.len());
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
}

#[test]
fn renewal_extends_the_expiry() {
    let mut gw = Gw::new();
    let t = gw.now;
    gw.map_ok(A, UDP, 5060, 5060, 60);
    gw.advance_secs(50);
    gw.map_ok(A, UDP, 5060, 5060, 60);
    gw.now = t + secs(60);
    assert!(
        gw.timeout().is_empty(),
        "the old lifetime must not remove a renewed mapping"
    );
    assert_eq!(gw.mapping(A, UDP, 5060).unwrap().expires_in, 50);
    gw.now = t + secs(110);
    assert_same_changes(&gw.timeout(), &removed(UDP, EXT, 5060, A, 5060));
}

#[test]
fn renewal_with_a_shorter_lifetime_shortens_the_expiry() {
    // Brief: the lifetime is refreshed to the newly granted value, up or down.
    let mut gw = Gw::new();
    let t = gw.now;
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.advance_secs(5);
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 10));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 5, 8080, 8080, 10));
    gw.now = t + secs(15);
    assert_same_changes(&gw.timeout(), &removed(TCP, EXT, 8080, A, 8080));
    assert!(gw.mappings().is_empty());
}

#[test]
fn expired_port_is_free_for_another_client() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 80, 8080, 10);
    gw.advance_secs(10);
    gw.timeout();
    assert_eq!(gw.map_ok(B, TCP, 80, 8080, 10), 8080);
}

#[test]
fn request_after_expiry_creates_a_fresh_mapping() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 4500, 4500, 10);
    gw.advance_secs(11);
    gw.timeout();
    let r = gw.reply(A, &map_request(UDP, 4500, 4500, 20));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 11, 4500, 4500, 20));
    assert_same_changes(&gw.changes, &created(UDP, EXT, 4500, A, 4500, 20));
}

#[test]
fn fresh_server_has_nothing_pending() {
    // A gateway not started yet has no timer and no mapping, and touched no kernel.
    let kernel = FakeForwarder::new();
    let gateway = Gateway::new(gateway_config(EngineConfig::default()), kernel.clone(), T0);
    assert_eq!(gateway.poll_timeout(), None);
    assert!(gateway.mappings(T0).is_empty());
    assert!(kernel.elements().is_empty());
    assert!(kernel.applied().is_empty());
    // Started, once its start-up announcements and lease save are done, the same.
    let mut gw = gw_after_announcements(EngineConfig::default());
    assert_eq!(gw.poll_timeout(), None);
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
    gw.advance_secs(100_000);
    assert!(gw.timeout().is_empty());
    assert!(gw.out.is_empty());
}
