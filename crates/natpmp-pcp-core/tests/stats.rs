//! The gateway's counters (`Gateway::stats`), the protocol facts behind the daemon's
//! metrics: requests by protocol, opcode and result, drops, kernel transactions and errors,
//! drift repairs, announcements. Virtual time and the fake kernel.

mod common;
use common::*;
use natpmp_pcp_core::gateway::{DriftFinding, DRIFT_CHECK};
use natpmp_pcp_core::kernel::Errno;
use natpmp_pcp_core::{EngineConfig, GatewayConfig};

#[test]
fn each_answered_request_is_counted_once_by_what_the_client_was_told() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.map_ok(A, UDP, 5000, 5000, 600);
    gw.map_ok(B, UDP, 5000, 0, 600);
    gw.reply(A, &addr_request());
    gw.pcp_ok(C, &tcp_map(C, 9000, 600));
    // An unknown NAT-PMP opcode and a PCP request with an unknown opcode.
    gw.reply(A, &[0, 9]);
    let mut bad = tcp_map(C, 9001, 600);
    bad[1] = 0x7e;
    gw.reply(C, &bad);
    let s = gw.gateway.stats();
    assert_eq!(s.requests_with("nat-pmp", "map-tcp", "success"), 1);
    assert_eq!(s.requests_with("nat-pmp", "map-udp", "success"), 2);
    assert_eq!(s.requests_with("nat-pmp", "external-address", "success"), 1);
    assert_eq!(s.requests_with("nat-pmp", "other", "unsupported-opcode"), 1);
    assert_eq!(s.requests_with("pcp", "map", "success"), 1);
    assert_eq!(s.requests_with("pcp", "other", "unsupp-opcode"), 1);
    assert_eq!(s.requests_total(), 7);
    assert_eq!(s.dropped, 0);
}

#[test]
fn drops_are_counted_apart_from_answers() {
    let mut gw = Gw::new();
    gw.assert_dropped(A, &[0]);
    // A response arriving as a request.
    gw.assert_dropped(A, &[0, 0x80, 0, 0]);
    // From off the LAN: not admitted.
    let out = gw.deliver(&[(
        std::net::SocketAddr::new(v4(OFF_LAN), 40000),
        v4(GW_LAN),
        LAN_INDEX,
        &addr_request(),
    )]);
    assert!(out.is_empty());
    assert_eq!(gw.gateway.stats().dropped, 3);
    assert_eq!(gw.gateway.stats().requests_total(), 0);
}

#[test]
fn a_refused_request_counts_as_the_failure_it_was_answered_with() {
    let mut gw = Gw::new();
    gw.break_rebuilds();
    let before = gw.gateway.stats().clone();
    // Every apply fails while the table is gone, and the rebuild that would repair it fails
    // too: the batch, then the request alone, then the client is told.
    gw.kernel.wipe();
    let m = gw.map(A, TCP, 8080, 8080, 600);
    assert_eq!(m.result, NETWORK_FAILURE);
    let s = gw.gateway.stats();
    assert_eq!(s.requests_with("nat-pmp", "map-tcp", "network-failure"), 1);
    assert_eq!(s.requests_with("nat-pmp", "map-tcp", "success"), 0);
    assert!(s.kernel_errors >= before.kernel_errors + 2, "{s:?}");
    assert!(s.kernel_transactions > before.kernel_transactions);
}

#[test]
fn kernel_transactions_count_every_apply_and_load() {
    let mut gw = Gw::new();
    // The start loaded the table and installed (nothing): two transactions, no error.
    let start = gw.gateway.stats().clone();
    assert_eq!(start.kernel_transactions, 2, "{start:?}");
    assert_eq!(start.kernel_errors, 0);
    gw.map_ok(A, TCP, 8080, 8080, 600);
    assert_eq!(gw.gateway.stats().kernel_transactions, 3);
    // A request that changes nothing asks nothing of the kernel.
    gw.reply(A, &addr_request());
    assert_eq!(gw.gateway.stats().kernel_transactions, 3);
    // One whole-batch failure, then the request alone succeeds.
    gw.kernel.fail_next_apply(Errno::ENOMEM);
    gw.map_ok(A, UDP, 5000, 5000, 600);
    let s = gw.gateway.stats();
    assert_eq!(s.kernel_transactions, 5);
    assert_eq!(s.kernel_errors, 1);
}

fn drift_checked() -> Gw {
    Gw::with_config(GatewayConfig {
        drift_check: true,
        ..gateway_config(EngineConfig::default())
    })
}

#[test]
fn drift_repairs_are_counted_with_what_the_check_found() {
    let mut gw = drift_checked();
    gw.map_ok(A, TCP, 8080, 8080, 3600);
    gw.run_for(DRIFT_CHECK);
    let s = gw.gateway.stats();
    assert_eq!(s.drift_repairs, 0);
    assert!(matches!(
        s.last_drift_check,
        Some((_, DriftFinding::Intact))
    ));
    assert_eq!(s.last_drift_repair, None);

    // Someone deletes one of our elements: put back one by one.
    let element = inbound(TCP, 8080, A, 8080);
    gw.kernel.remove_by_hand(&element);
    gw.run_for(DRIFT_CHECK);
    let s = gw.gateway.stats().clone();
    assert_eq!(s.drift_repairs, 1);
    assert_eq!(
        s.last_drift_check.as_ref().map(|(_, f)| f.clone()),
        Some(DriftFinding::Repaired {
            added: 1,
            removed: 0
        })
    );
    let first_repair = s.last_drift_repair.expect("a repair time");
    gw.assert_kernel_matches_engine();

    // Someone flushes the table: rebuilt whole.
    gw.kernel.wipe();
    gw.run_for(DRIFT_CHECK);
    let s = gw.gateway.stats();
    assert_eq!(s.drift_repairs, 2);
    assert!(matches!(
        s.last_drift_check,
        Some((_, DriftFinding::Rebuilt { .. }))
    ));
    assert!(s.last_drift_repair.unwrap() > first_repair);
    gw.assert_kernel_matches_engine();
}

#[test]
fn announcements_count_each_datagram_sent_unasked() {
    let mut gw = Gw::new();
    assert_eq!(gw.gateway.stats().announcements, 0);
    let sent = gw.run_for(secs(120));
    let unasked = natpmp_announcements(&sent).len() + pcp_announcements(&sent).len();
    assert!(unasked >= 2, "{sent:?}");
    assert_eq!(gw.gateway.stats().announcements, unasked as u64);
}
