//! Companion port reservation (RFC 6886 §3.3; rfc-checklist §2 F item 28, §4 case 47).

mod common;
use common::*;

#[test]
fn other_client_suggesting_udp_companion_of_held_tcp_port_gets_another_port() {
    // §4 case 47, first half.
    let mut gw = Gw::new();
    assert_eq!(gw.map_ok(A, TCP, 8080, 30000, 600), 30000);
    let m = gw.map(B, UDP, 8080, 30000, 600);
    assert_eq!(m.result, SUCCESS);
    assert!(
        m.eport != 30000 && m.eport != 0,
        "B got A's companion port {}",
        m.eport
    );
}

#[test]
fn other_client_suggesting_tcp_companion_of_held_udp_port_gets_another_port() {
    let mut gw = Gw::new();
    assert_eq!(gw.map_ok(A, UDP, 5000, 30001, 600), 30001);
    let m = gw.map(B, TCP, 5000, 30001, 600);
    assert_eq!(m.result, SUCCESS);
    assert!(m.eport != 30001 && m.eport != 0);
}

#[test]
fn holder_gets_the_companion_port_when_it_suggests_it() {
    // §4 case 47, second half: the reservation is for A, and "free for this client" means A
    // gets the suggested port.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 30000, 600);
    let r = gw.reply(A, &map_request(UDP, 8080, 30000, 600));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 8080, 30000, 600));
    // Also from a different internal port of the same client.
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 30002, 600);
    assert_eq!(gw.map_ok(A, TCP, 2, 30002, 600), 30002);
}

#[test]
fn companion_reservation_ends_when_the_mapping_is_deleted() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 30000, 600);
    gw.reply(A, &map_request(TCP, 8080, 0, 0));
    assert_eq!(gw.map_ok(B, UDP, 8080, 30000, 600), 30000);
}

#[test]
fn companion_reservation_ends_when_the_mapping_expires() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 8080, 30000, 10);
    gw.advance_secs(10);
    gw.timeout();
    assert_eq!(gw.map_ok(B, TCP, 8080, 30000, 600), 30000);
}

#[test]
fn companion_reservation_ends_when_the_holder_deletes_all() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 30000, 600);
    gw.reply(A, &map_request(TCP, 0, 0, 0));
    assert_eq!(gw.map_ok(B, UDP, 1, 30000, 600), 30000);
}

#[test]
fn port_chosen_for_suggestion_zero_avoids_companion_reservations() {
    // Range of two ports: A holds TCP 40000, so B's UDP mapping must take 40001.
    let mut gw = Gw::small_range(40000, 40001);
    gw.map_ok(A, TCP, 1, 40000, 600);
    for _ in 0..3 {
        // Several tries, in case the allocator's start point is random.
        let m = gw.map(B, UDP, 1, 0, 600);
        assert_eq!(m.result, SUCCESS);
        assert_eq!(m.eport, 40001);
    }
}

#[test]
fn ports_reserved_for_another_client_count_as_taken() {
    // A holds every TCP port of the range: B gets result 4 for UDP, A still gets UDP ports.
    let mut gw = Gw::small_range(40000, 40002);
    for iport in 1..=3u16 {
        gw.map_ok(A, TCP, iport, 0, 600);
    }
    gw.advance_secs(1);
    let r = gw.reply(B, &map_request(UDP, 53, 40000, 600));
    assert_bytes(&r, &map_reply(UDP, OUT_OF_RESOURCES, 1, 53, 0, 0));
    assert!(gw.changes.is_empty());
    let r = gw.reply(B, &map_request(UDP, 53, 0, 600));
    assert_bytes(&r, &map_reply(UDP, OUT_OF_RESOURCES, 1, 53, 0, 0));
    for iport in 1..=3u16 {
        let p = gw.map_ok(A, UDP, iport, 0, 600);
        assert!((40000..=40002).contains(&p));
    }
}

#[test]
fn renewal_keeps_companion_port_of_another_client_reserved() {
    // A renews its TCP mapping; meanwhile B must still not get the UDP companion.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 30000, 60);
    gw.advance_secs(30);
    gw.map_ok(A, TCP, 8080, 30000, 60);
    gw.advance_secs(40);
    gw.timeout();
    let m = gw.map(B, UDP, 8080, 30000, 60);
    assert_ne!(m.eport, 30000);
}
