//! Result 4, Out of resources: per-client quota and port exhaustion (rfc-checklist §2 F item 29,
//! §4 cases 63, 73).

mod common;
use common::*;
use natpmp_pcp_core::EngineConfig;

fn quota(n: usize) -> Gw {
    Gw::with_engine(EngineConfig {
        max_mappings_per_client: n,
        ..EngineConfig::default()
    })
}

#[test]
fn mapping_beyond_the_client_quota_gets_result_4() {
    let mut gw = quota(2);
    gw.map_ok(A, UDP, 1, 0, 600);
    gw.map_ok(A, TCP, 2, 0, 600);
    gw.advance_secs(7);
    for op in [UDP, TCP] {
        let r = gw.reply(A, &map_request(op, 3, 3000, 600));
        assert_bytes(&r, &map_reply(op, OUT_OF_RESOURCES, 7, 3, 0, 0));
        assert!(gw.changes.is_empty());
    }
    assert_eq!(gw.mappings().len(), 2);
    assert_eq!(gw.elements().len(), 4);
}

#[test]
fn renewal_at_the_quota_still_succeeds() {
    let mut gw = quota(2);
    let p1 = gw.map_ok(A, UDP, 1, 0, 600);
    gw.map_ok(A, UDP, 2, 0, 600);
    gw.advance_secs(100);
    let r = gw.reply(A, &map_request(UDP, 1, p1, 600));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 100, 1, p1, 600));
}

#[test]
fn quota_is_per_client() {
    let mut gw = quota(1);
    gw.map_ok(A, TCP, 1, 0, 600);
    assert_eq!(gw.map(A, TCP, 2, 0, 600).result, OUT_OF_RESOURCES);
    gw.map_ok(B, TCP, 1, 0, 600);
    gw.map_ok(C, UDP, 1, 0, 600);
}

#[test]
fn deleting_a_mapping_frees_a_quota_slot() {
    let mut gw = quota(1);
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.reply(A, &map_request(TCP, 1, 0, 0));
    gw.map_ok(A, TCP, 2, 0, 600);
}

#[test]
fn expiry_frees_a_quota_slot() {
    let mut gw = quota(1);
    gw.map_ok(A, UDP, 1, 0, 5);
    gw.advance_secs(5);
    gw.timeout();
    gw.map_ok(A, UDP, 2, 0, 5);
}

#[test]
fn deletes_are_answered_at_the_quota() {
    let mut gw = quota(1);
    gw.map_ok(A, UDP, 1, 0, 600);
    assert_bytes(
        &gw.reply(A, &map_request(UDP, 9, 0, 0)),
        &map_reply(UDP, SUCCESS, 0, 9, 0, 0),
    );
    assert_bytes(
        &gw.reply(A, &map_request(TCP, 0, 0, 0)),
        &map_reply(TCP, SUCCESS, 0, 0, 0, 0),
    );
}

#[test]
fn default_quota_is_256_mappings_per_client() {
    let mut gw = Gw::new();
    for iport in 1..=256u16 {
        gw.map_ok(A, if iport % 2 == 0 { TCP } else { UDP }, iport, 0, 600);
    }
    let m = gw.map(A, UDP, 1000, 0, 600);
    assert_eq!((m.result, m.eport, m.lifetime), (OUT_OF_RESOURCES, 0, 0));
    gw.map_ok(B, UDP, 1000, 0, 600);
}

#[test]
fn no_free_port_in_the_range_gets_result_4() {
    // §4 case 63.
    let mut gw = Gw::small_range(40000, 40002);
    let mut got: Vec<u16> = [A, B, C]
        .iter()
        .map(|&c| gw.map_ok(c, UDP, 7, 40000, 600))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![40000, 40001, 40002],
        "never an error while a port is free"
    );
    let d = std::net::Ipv4Addr::new(192, 168, 88, 30);
    gw.advance_secs(2);
    for suggested in [0u16, 40000, 50000] {
        let r = gw.reply(d, &map_request(UDP, 7, suggested, 600));
        assert_bytes(&r, &map_reply(UDP, OUT_OF_RESOURCES, 2, 7, 0, 0));
        assert!(gw.changes.is_empty());
    }
    // The other protocol's ports are taken too (companions of other clients' mappings).
    assert_eq!(gw.map(d, TCP, 7, 0, 600).result, OUT_OF_RESOURCES);
}

#[test]
fn exhausted_range_frees_up_after_a_delete() {
    let mut gw = Gw::small_range(40000, 40000);
    gw.map_ok(A, TCP, 1, 0, 600);
    assert_eq!(gw.map(B, TCP, 1, 0, 600).result, OUT_OF_RESOURCES);
    gw.reply(A, &map_request(TCP, 1, 0, 0));
    assert_eq!(gw.map_ok(B, TCP, 1, 0, 600), 40000);
}

#[test]
fn many_back_to_back_requests_from_one_host_are_all_answered() {
    // §4 case 73: a flood from one host; the engine stays consistent (result 4 past the quota).
    let mut gw = Gw::new();
    let mut ok = 0;
    let mut full = 0;
    for i in 0..5000u32 {
        let iport = (i % 600) as u16 + 1;
        let op = if i % 3 == 0 { TCP } else { UDP };
        let m = gw.map(A, op, iport, 0, 3600);
        match m.result {
            SUCCESS => ok += 1,
            OUT_OF_RESOURCES => full += 1,
            other => panic!("unexpected result {other}"),
        }
        if i % 10 == 0 {
            gw.advance_ms(1);
        }
    }
    assert!(ok > 0 && full > 0);
    assert_eq!(gw.mappings().len(), 256);
    assert_eq!(gw.elements().len(), 512);
    gw.assert_kernel_matches_engine();
}

#[test]
#[allow(clippy::reversed_empty_ranges)]
fn empty_port_range_gives_result_4() {
    // A range with no port in it (start > end): "no free port in port_range -> result 4",
    // never a port outside the range.
    let mut gw = Gw::with_engine(EngineConfig {
        port_range: 40005..=40000,
        ..EngineConfig::default()
    });
    for suggested in [0u16, 40000, 40005, 40002] {
        let r = gw.reply(A, &map_request(TCP, 1, suggested, 60));
        assert_bytes(&r, &map_reply(TCP, OUT_OF_RESOURCES, 0, 1, 0, 0));
    }
    assert!(gw.mappings().is_empty());
}

#[test]
fn range_of_only_port_zero_gives_result_4() {
    let mut gw = Gw::with_engine(EngineConfig {
        port_range: 0..=0,
        ..EngineConfig::default()
    });
    let r = gw.reply(A, &map_request(UDP, 1, 0, 60));
    assert_bytes(&r, &map_reply(UDP, OUT_OF_RESOURCES, 0, 1, 0, 0));
}

#[test]
fn zero_quota_refuses_every_creation() {
    let mut gw = quota(0);
    let r = gw.reply(A, &map_request(UDP, 1, 0, 60));
    assert_bytes(&r, &map_reply(UDP, OUT_OF_RESOURCES, 0, 1, 0, 0));
    // Deletes are still answered.
    assert_bytes(
        &gw.reply(A, &map_request(UDP, 1, 0, 0)),
        &map_reply(UDP, SUCCESS, 0, 1, 0, 0),
    );
}
