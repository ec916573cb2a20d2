//! End-to-end: `backend = "none"` grants mappings without touching the kernel.

use crate::lab::*;

#[test]
fn backend_none_grants_mappings_and_creates_no_nft_table() {
    let mut lab = Lab::new();
    lab.start_daemon(&DaemonConfig {
        backend: "none",
        ..DaemonConfig::default()
    });

    let m = natpmpc_map(&lab.lan, GW_LAN, 42000, 8082, Proto::Tcp, 600);
    assert_eq!(m.private_port, 8082);
    assert_ne!(m.public_port, 0);
    let u = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Udp, 8083, 0, 600);
    assert_eq!(u.result, 0, "{u:?}");

    let maps = lab.mappings();
    assert!(
        maps.iter().any(|e| e["dst-port"] == m.public_port),
        "{maps:?}"
    );
    let tables = lab.gw_tables();
    assert!(
        tables.contains("table inet lab"),
        "the operator's table vanished:\n{tables}"
    );
    assert!(
        !tables.contains("natpmpd"),
        "backend none created a kernel table:\n{tables}"
    );
}
