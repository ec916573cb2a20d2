//! Address-change announcements (rfc-checklist §2 D items 15–18, §4 cases 65, 66), sent as
//! `Outgoing` datagrams by `handle_timeout`, and the PCP ANNOUNCE that rides the same
//! schedule at start-up (RFC 6887 §14.1.3).

mod common;
use common::*;
use natpmp_pcp_core::Timestamp;

/// After a copy: a daemon that sleeps until `poll_timeout` is awake at `next` for the next copy.
/// Every wake-up before it is for other work (a PCP ANNOUNCE copy on its own schedule, the lease
/// save), sends no NAT-PMP copy, and moves `poll_timeout` on.
#[track_caller]
fn assert_wakes_up_for(gw: &mut Gw, next: Timestamp, copy: usize) {
    loop {
        let pt = gw
            .poll_timeout()
            .unwrap_or_else(|| panic!("nothing pending before copy {copy}"));
        assert!(
            pt > gw.now,
            "poll_timeout {pt:?} not after now {:?}",
            gw.now
        );
        assert!(
            pt <= next,
            "poll_timeout {pt:?} is after copy {copy}, due at {next:?}"
        );
        if pt == next {
            return;
        }
        gw.now = pt;
        assert_eq!(
            gw.announcement(),
            None,
            "a NAT-PMP copy at {pt:?}, before copy {copy} was due"
        );
    }
}

/// Check a whole train of 10 copies for `addr`, starting at `event` (the epoch also restarted at
/// `event`): nothing 1 ms before each copy, the copy at its exact time, one copy per wake-up,
/// and `poll_timeout` waking the daemon up for the next copy.
#[track_caller]
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
            assert_wakes_up_for(gw, event + ms(*next), i + 2);
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
    assert_eq!(gw.poll_timeout(), None);
}

#[test]
fn getting_an_address_starts_a_train_of_ten_copies_at_the_rfc_times() {
    // §2 D items 15–17: 0, 0.25, 0.75, …, 127.75 s; each copy carries the SSSoE at send time.
    let mut gw = Gw::without_address();
    // The daemon runs its timers meanwhile (the start-up PCP ANNOUNCE, the lease save).
    gw.run_for(ms(5_500));
    assert!(natpmp_announcements(&gw.out).is_empty(), "{:?}", gw.out);
    let event = gw.now;
    gw.set_address(Some(EXT));
    assert_eq!(
        gw.poll_timeout(),
        Some(event),
        "the first copy is due at once"
    );
    assert_full_train(&mut gw, event, EXT);
    // SSSoE of the copies: 0, 0, 0, 1, 3, 7, 15, 31, 63, 127 (checked inside via gw.sssoe()).
    for t in [event + secs(128), event + secs(10_000)] {
        gw.now = t;
        assert_eq!(gw.announcement(), None, "an 11th copy");
    }
    assert_eq!(gw.poll_timeout(), None);
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
    gw.set_interfaces(interfaces(Some(EXT)));
    assert_eq!(gw.announcement(), None);
    assert_eq!(gw.poll_timeout(), None);
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
    gw.reset();
    assert_eq!(gw.epoch_start, event);
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
    gw.reset();
    assert_eq!(gw.epoch_start, event);
    assert_full_train(&mut gw, event, EXT);
}

#[test]
fn poll_timeout_is_the_earlier_of_next_copy_and_next_expiry() {
    let mut gw = Gw::new();
    assert!(gw.announcement().is_some());
    gw.map_ok(A, UDP, 1, 0, 1);
    // Next copy at +250 ms, expiry at +1 s.
    assert_eq!(gw.poll_timeout(), Some(T0 + ms(250)));
    gw.now = T0 + ms(250);
    assert!(gw.announcement().is_some());
    let pt = gw.poll_timeout().unwrap();
    assert!(pt <= T0 + ms(750), "{pt:?}");
    // After the copy at 750 ms the next copy (1750) is later than the expiry (1000).
    gw.now = T0 + ms(750);
    assert!(gw.announcement().is_some());
    let pt = gw.poll_timeout().unwrap();
    assert!(pt <= T0 + secs(1), "{pt:?} is after the expiry");
    // And waking up then expires the mapping.
    let port = gw.mapping(A, UDP, 1).expect("the mapping").external_port;
    gw.now = pt;
    assert_same_changes(&gw.timeout(), &removed(UDP, EXT, port, A, 1));
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

#[test]
fn pcp_announce_rides_the_start_up_train() {
    // RFC 6887 §14.1.3: at start-up, PCP's unsolicited ANNOUNCE (24 bytes: `02 80 00 00`,
    // lifetime 0, the epoch, 12 zero bytes) goes to 224.0.0.1:5350 with every NAT-PMP copy,
    // from the LAN address, on the same schedule, with the epoch at the time of sending.
    let mut gw = Gw::new();
    for (i, off) in ANNOUNCE_OFFSETS_MS.iter().enumerate() {
        let due = T0 + ms(*off);
        if *off > 0 {
            gw.now = Timestamp::from_millis(due.as_millis() - 1);
            gw.timeout();
            assert!(
                pcp_announcements(&gw.out).is_empty(),
                "copy {} early",
                i + 1
            );
        }
        gw.now = due;
        gw.timeout();
        let pcp = pcp_announcements(&gw.out);
        assert_eq!(pcp.len(), 1, "copy {} at +{off} ms: {:?}", i + 1, gw.out);
        assert_bytes(&pcp[0].payload, &pcp_announce(gw.sssoe()));
        assert_sent_on_lan(pcp[0]);
        let pmp = natpmp_announcements(&gw.out);
        assert_eq!(pmp.len(), 1);
        assert_bytes(&pmp[0].payload, &addr_reply(SUCCESS, gw.sssoe(), EXT));
        assert_eq!(gw.out.len(), 2, "{:?}", gw.out);
    }
    gw.now = T0 + secs(1000);
    gw.timeout();
    assert!(gw.out.is_empty(), "an 11th copy: {:?}", gw.out);
    // A reset (state lost) restarts both.
    gw.reset();
    gw.timeout();
    assert_eq!(pcp_announcements(&gw.out).len(), 1);
    assert_bytes(&pcp_announcements(&gw.out)[0].payload, &pcp_announce(0));
    assert_eq!(natpmp_announcements(&gw.out).len(), 1);
}

#[test]
fn pcp_announce_is_sent_at_start_up_without_an_external_address() {
    // It tells PCP clients the server restarted; it names no address, so it needs none.
    let mut gw = Gw::without_address();
    let sent = gw.run_for(secs(200));
    let pcp: Vec<_> = pcp_announcements(&sent);
    assert_eq!(pcp.len(), ANNOUNCE_OFFSETS_MS.len(), "{sent:?}");
    assert!(natpmp_announcements(&sent).is_empty());
}

#[test]
fn no_pcp_announce_when_pcp_is_off() {
    let mut gw = Gw::natpmp_only();
    let sent = gw.run_for(secs(200));
    assert!(pcp_announcements(&sent).is_empty(), "{sent:?}");
    let pmp = natpmp_announcements(&sent);
    assert_eq!(pmp.len(), ANNOUNCE_OFFSETS_MS.len());
    assert_eq!(sent.len(), pmp.len());
}
