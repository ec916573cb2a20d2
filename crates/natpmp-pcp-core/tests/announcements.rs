//! Address-change announcements (rfc-checklist §2 D items 15–18, §4 cases 65, 66).

mod common;
use common::*;
use natpmp_pcp_core::Timestamp;

/// Check a whole train of 10 copies for `addr`, starting at `event` (the epoch also restarted at
/// `event`): nothing 1 ms before each copy, the copy at its exact time, one copy per call, and
/// `poll_timeout` naming the next copy.
fn assert_full_train(gw: &mut Gw, event: Timestamp, addr: std::net::Ipv4Addr) {
    for (i, off) in ANNOUNCE_OFFSETS_MS.iter().enumerate() {
        let due = event + ms(*off);
        if *off > 0 {
            gw.now = Timestamp::from_millis(due.as_millis() - 1);
            assert_eq!(gw.announcement(), None, "copy {} sent early", i + 1);
        }
        gw.now = due;
        let a = gw
            .announcement()
            .unwrap_or_else(|| panic!("copy {} not sent at +{off} ms", i + 1));
        assert_bytes(&a, &addr_reply(SUCCESS, gw.sssoe(), addr));
        assert_eq!(gw.announcement(), None, "two copies at +{off} ms");
        if let Some(next) = ANNOUNCE_OFFSETS_MS.get(i + 1) {
            assert_eq!(
                gw.server.poll_timeout(),
                Some(event + ms(*next)),
                "poll_timeout after copy {}",
                i + 1
            );
        }
    }
}

#[test]
fn announcement_is_the_12_byte_p7_packet() {
    // §1.1 P7: same layout as P2, result 0.
    let mut gw = Gw::new();
    let a = gw.announcement().expect("first copy at once");
    assert_bytes(
        &a,
        &[0x00, 0x80, 0x00, 0x00, 0, 0, 0, 0, 0xCB, 0x00, 0x71, 0x05],
    );
}

#[test]
fn no_announcements_without_an_external_address() {
    // §2 D item 18 (miniupnpd), brief: only while there is an address.
    let mut gw = Gw::without_address();
    for off in [0u64, 250, 750, 1750, 127_750, 1_000_000] {
        gw.now = T0 + ms(off);
        assert_eq!(gw.announcement(), None);
    }
    assert_eq!(gw.server.poll_timeout(), None);
}

#[test]
fn getting_an_address_starts_a_train_of_ten_copies_at_the_rfc_times() {
    // §2 D items 15–17: 0, 0.25, 0.75, …, 127.75 s; each copy carries the SSSoE at send time.
    let mut gw = Gw::without_address();
    gw.advance_ms(5_500);
    let event = gw.now;
    gw.set_address(Some(EXT));
    assert_eq!(
        gw.server.poll_timeout(),
        Some(event),
        "the first copy is due at once"
    );
    assert_full_train(&mut gw, event, EXT);
    // SSSoE of the copies: 0, 0, 0, 1, 3, 7, 15, 31, 63, 127 (checked inside via gw.sssoe()).
    for t in [event + secs(128), event + secs(10_000)] {
        gw.now = t;
        assert_eq!(gw.announcement(), None, "an 11th copy");
    }
    assert_eq!(gw.server.poll_timeout(), None);
}

#[test]
fn announcement_sssoe_is_updated_to_the_time_of_sending() {
    // §2 D item 17: checked with literal values rather than the harness's helper.
    let mut gw = Gw::new();
    let mut got = Vec::new();
    for off in ANNOUNCE_OFFSETS_MS {
        gw.now = T0 + ms(off);
        let a = gw.announcement().expect("copy due");
        got.push(u32::from_be_bytes(a[4..8].try_into().unwrap()));
    }
    assert_eq!(got, vec![0, 0, 0, 1, 3, 7, 15, 31, 63, 127]);
}

#[test]
fn address_change_restarts_the_train_with_the_new_address() {
    // §2 D item 18 (restart on a new event), §2 J item 51, §4 case 66.
    let mut gw = Gw::new();
    for off in &ANNOUNCE_OFFSETS_MS[..3] {
        gw.now = T0 + ms(*off);
        assert!(gw.announcement().is_some());
    }
    gw.now = T0 + ms(1_000);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    assert_full_train(&mut gw, event, EXT2);
    gw.now = event + secs(500);
    assert_eq!(gw.announcement(), None);
}

#[test]
fn address_change_after_a_finished_train_starts_a_new_one() {
    let mut gw = Gw::new();
    assert_full_train(&mut gw, T0, EXT);
    gw.now = T0 + secs(3600);
    assert_eq!(gw.announcement(), None);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    assert_full_train(&mut gw, event, EXT2);
}

#[test]
fn setting_the_same_address_again_does_not_restart_the_train() {
    let mut gw = Gw::new();
    assert_full_train(&mut gw, T0, EXT);
    gw.now = T0 + secs(1000);
    let mut changes = Vec::new();
    gw.server
        .set_external_address(gw.now, Some(EXT), &mut changes);
    assert_eq!(gw.announcement(), None);
    assert_eq!(gw.server.poll_timeout(), None);
}

#[test]
fn losing_the_address_stops_the_train() {
    let mut gw = Gw::new();
    assert!(gw.announcement().is_some());
    gw.now = T0 + ms(100);
    gw.set_address(None);
    for off in ANNOUNCE_OFFSETS_MS {
        gw.now = T0 + ms(off + 100);
        assert_eq!(
            gw.announcement(),
            None,
            "announced with no address at +{off} ms"
        );
    }
}

#[test]
fn reset_restarts_the_train() {
    // §2 E item 22, §2 J item 53, §4 case 65: reset the epoch and announce again, 10 copies.
    let mut gw = Gw::new();
    assert_full_train(&mut gw, T0, EXT);
    gw.now = T0 + secs(400);
    let event = gw.now;
    gw.changes.clear();
    gw.server.reset(gw.now, &mut gw.changes);
    gw.epoch_start = event;
    assert_full_train(&mut gw, event, EXT);
}

#[test]
fn reset_mid_train_restarts_it() {
    let mut gw = Gw::new();
    for off in &ANNOUNCE_OFFSETS_MS[..5] {
        gw.now = T0 + ms(*off);
        assert!(gw.announcement().is_some());
    }
    gw.now = T0 + ms(5_000);
    let event = gw.now;
    gw.changes.clear();
    gw.server.reset(gw.now, &mut gw.changes);
    gw.epoch_start = event;
    assert_full_train(&mut gw, event, EXT);
}

#[test]
fn poll_timeout_is_the_earlier_of_next_copy_and_next_expiry() {
    let mut gw = Gw::new();
    assert!(gw.announcement().is_some());
    gw.map_ok(A, UDP, 1, 0, 1);
    // Next copy at +250 ms, expiry at +1 s.
    assert_eq!(gw.server.poll_timeout(), Some(T0 + ms(250)));
    gw.now = T0 + ms(250);
    assert!(gw.announcement().is_some());
    let pt = gw.server.poll_timeout().unwrap();
    assert!(pt <= T0 + ms(750), "{pt:?}");
    // After the copy at 750 ms the next copy (1750) is later than the expiry (1000).
    gw.now = T0 + ms(750);
    assert!(gw.announcement().is_some());
    let pt = gw.server.poll_timeout().unwrap();
    assert!(pt <= T0 + secs(1), "{pt:?} is after the expiry");
}

#[test]
fn announcements_are_not_sent_early_when_polled_often() {
    // A busy daemon polls on every wake-up: polling every 10 ms yields exactly 10 copies at the
    // scheduled times.
    let mut gw = Gw::new();
    let mut sent = Vec::new();
    let mut t = 0u64;
    while t <= 130_000 {
        gw.now = T0 + ms(t);
        if gw.announcement().is_some() {
            sent.push(t);
        }
        t += 10;
    }
    assert_eq!(sent, ANNOUNCE_OFFSETS_MS.to_vec());
}
