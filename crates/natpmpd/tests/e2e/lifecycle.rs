//! End-to-end: the daemon's kernel footprint over its life: its own table with the inbound
//! and outbound maps while running, the operator's table untouched, and a clean exit on
//! SIGTERM that removes its table.

use std::time::Duration;

use crate::lab::*;

#[test]
fn sigterm_exits_cleanly_and_removes_the_table() {
    let mut lab = Lab::new();
    lab.start_default();
    let _ = natpmpc_map(&lab.lan, GW_LAN, 46000, 8084, Proto::Tcp, 600);

    let table = nft_in(&lab.gw, &["list", "table", "inet", "natpmpd"])
        .ok()
        .stdout;
    for part in ["map inbound", "map outbound", "ether1"] {
        assert!(
            table.contains(part),
            "natpmpd table lacks `{part}`:\n{table}"
        );
    }
    let lab_table = nft_in(&lab.gw, &["list", "table", "inet", "lab"])
        .ok()
        .stdout;
    assert!(
        lab_table.contains("masquerade"),
        "operator table changed:\n{lab_table}"
    );

    let status = lab
        .stop_daemon(Duration::from_secs(5))
        .expect("natpmpd did not exit within 5 s of SIGTERM");
    assert!(
        status.success(),
        "natpmpd exited with {status} on SIGTERM:\n{}",
        lab.daemon_log()
    );
    let tables = lab.gw_tables();
    assert!(
        !tables.contains("natpmpd"),
        "table left behind after SIGTERM:\n{tables}"
    );
    assert!(
        tables.contains("table inet lab"),
        "the operator's table was removed:\n{tables}"
    );
}

#[test]
fn disabled_daemon_answers_nothing() {
    let mut lab = Lab::new();
    lab.spawn_daemon(&DaemonConfig {
        enabled: false,
        ..DaemonConfig::default()
    });
    std::thread::sleep(Duration::from_millis(500));
    let r = udp_exchange(
        &lab.lan,
        LAN_HOST,
        std::net::SocketAddrV4::new(GW_LAN, NATPMP_PORT),
        &[0, 0],
    );
    assert!(
        r.is_none(),
        "enabled = false but the daemon answered: {r:?}"
    );
}
