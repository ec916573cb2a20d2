//! End-to-end: another tool damages natpmpd's nftables table under the running daemon, which
//! notices within its drift-check period (2 s) and puts its table and every live mapping back.
//!
//! Damage: `nft flush ruleset` (which also removes the lab's own masquerade table; natpmpd
//! restores only its own, the test puts the lab's back), `nft delete table inet natpmpd`,
//! `nft flush map inet natpmpd inbound`, deleting one element, adding an unknown one.
//!
//! Flush-to-restored is measured and printed: until the mapping's element is back in
//! `nft list map` (polled every 20 ms) and until TCP passes again (polled every 20 ms).

use std::net::SocketAddrV4;
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

/// Applies `damage` (nft arguments, run in gw), then measures how long until the TCP
/// element is back in the kernel map and until TCP passes again; checks UDP too.
fn damage_and_measure(s: &Setup, what: &str, damage: &[&str]) {
    let lab = &s.lab;
    let tcp_ext = SocketAddrV4::new(GW_EXT, s.tcp);
    let t0 = Instant::now();
    nft_in(&lab.gw, damage).ok();
    // The damage really took effect (no forward right after it).
    let map_now = nft_in(&lab.gw, &["list", "map", "inet", "natpmpd", "inbound"]).stdout;
    assert!(
        !inbound_map_has(&map_now, "tcp", s.tcp, "192.168.88.10 . 8080"),
        "{what}: the element is still there right after the damage:\n{map_now}"
    );

    let gw = lab.gw.clone();
    let tcp_port = s.tcp;
    let element_back = thread::spawn(move || {
        let deadline = t0 + Duration::from_secs(8);
        loop {
            let out = nft_in(&gw, &["list", "map", "inet", "natpmpd", "inbound"]);
            if out.success()
                && inbound_map_has(&out.stdout, "tcp", tcp_port, "192.168.88.10 . 8080")
            {
                return Some(t0.elapsed());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let deadline = t0 + Duration::from_secs(8);
    let traffic = loop {
        if tcp_probe(&lab.inet, tcp_ext, "lan-tcp", Duration::from_millis(300)) {
            break Some(t0.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let element = element_back.join().unwrap();
    let element = element.unwrap_or_else(|| {
        panic!(
            "{what}: element not back in `nft list map` within 8 s:\n{}",
            nft_in(&lab.gw, &["list", "ruleset"]).stdout
        )
    });
    let traffic = traffic
        .unwrap_or_else(|| panic!("{what}: TCP through {tcp_ext} did not pass again within 8 s"));
    eprintln!(
        "MEASURE {what}: element back after {:.0} ms, traffic after {:.0} ms",
        element.as_secs_f64() * 1e3,
        traffic.as_secs_f64() * 1e3
    );
    // The drift check runs every 2 s; allow the rebuild on top.
    assert!(
        traffic < Duration::from_secs(4),
        "{what}: recovery took {traffic:?}"
    );

    // Every live mapping is back, UDP included, in both maps.
    let map = lab.inbound_map();
    assert!(
        inbound_map_has(&map, "udp", s.udp, "192.168.88.10 . 9000"),
        "{what}:\n{map}"
    );
    let outbound = nft_in(&lab.gw, &["list", "map", "inet", "natpmpd", "outbound"])
        .ok()
        .stdout;
    assert!(
        outbound.contains("192.168.88.10 . udp . 9000")
            && outbound.contains("192.168.88.10 . tcp . 8080"),
        "{what}: outbound map not restored:\n{outbound}"
    );
    let ok = (0..3).any(|i| {
        let msg = format!("u{i}");
        udp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, s.udp), &msg)
            .is_some_and(|(r, _)| r == format!("lan-udp:{msg}"))
    });
    assert!(
        ok,
        "{what}: UDP through {} did not pass after the repair",
        s.udp
    );
    assert_eq!(lab.mappings().len(), 2, "{what}: {:?}", lab.mappings());
}

/// The daemon said it repaired something (element-level repair or a table rebuild).
fn assert_repair_logged(lab: &Lab) {
    let log = lab.daemon_log();
    assert!(
        log.contains("drifted") || log.contains("natpmpd table rebuilt"),
        "no repair in the log:\n{log}"
    );
}

#[test]
fn nft_flush_ruleset_is_repaired() {
    let s = setup();
    damage_and_measure(&s, "nft flush ruleset", &["flush", "ruleset"]);
    let log = s.lab.daemon_log();
    assert!(
        log.contains("restoring it") && log.contains("natpmpd table rebuilt"),
        "log:\n{log}"
    );
    // natpmpd restores only its own table: the operator's is still gone until they reload it.
    assert!(
        !s.lab.gw_tables().contains("table inet lab"),
        "{}",
        s.lab.gw_tables()
    );
    s.lab.reload_lab_rules();
    // The hairpin sets came back too (the external address is in wan_addr).
    let t = nft_in(&s.lab.gw, &["list", "set", "inet", "natpmpd", "wan_addr"])
        .ok()
        .stdout;
    assert!(t.contains("203.0.113.1"), "wan_addr not restored:\n{t}");
}

#[test]
fn deleted_table_is_repaired() {
    let s = setup();
    damage_and_measure(
        &s,
        "nft delete table inet natpmpd",
        &["delete", "table", "inet", "natpmpd"],
    );
    let log = s.lab.daemon_log();
    assert!(
        log.contains("restoring it") && log.contains("natpmpd table rebuilt"),
        "log:\n{log}"
    );
    assert!(
        s.lab.gw_tables().contains("table inet lab"),
        "the operator's table was touched"
    );
}

#[test]
fn flushed_inbound_map_is_repaired() {
    let s = setup();
    damage_and_measure(
        &s,
        "nft flush map inet natpmpd inbound",
        &["flush", "map", "inet", "natpmpd", "inbound"],
    );
    assert_repair_logged(&s.lab);
}

#[test]
fn deleted_element_is_restored_and_unknown_element_removed() {
    let s = setup();
    let elem = format!("{{ tcp . {} }}", s.tcp);
    damage_and_measure(
        &s,
        "nft delete element (one mapping)",
        &["delete", "element", "inet", "natpmpd", "inbound", &elem],
    );
    assert_repair_logged(&s.lab);

    // The real mappings were left alone.
    let map = s.lab.inbound_map();
    assert!(
        inbound_map_has(&map, "tcp", s.tcp, "192.168.88.10 . 8080"),
        "{map}"
    );
}

/// A whole forward nobody asked for (inbound and outbound elements, as natpmpd itself writes
/// them) is removed by the drift check.
#[test]
fn unknown_whole_forward_is_removed() {
    let s = setup();
    let lab = &s.lab;
    nft_in(
        &lab.gw,
        &[
            "add",
            "element",
            "inet",
            "natpmpd",
            "inbound",
            "{ tcp . 45000 : 192.168.88.10 . 22 }",
        ],
    )
    .ok();
    nft_in(
        &lab.gw,
        &[
            "add",
            "element",
            "inet",
            "natpmpd",
            "outbound",
            "{ 192.168.88.10 . tcp . 22 : 203.0.113.1 . 45000 }",
        ],
    )
    .ok();
    assert!(inbound_map_has(
        &lab.inbound_map(),
        "tcp",
        45000,
        "192.168.88.10 . 22"
    ));
    assert!(
        Lab::eventually(Duration::from_secs(5), || !inbound_map_has(
            &lab.inbound_map(),
            "tcp",
            45000,
            "192.168.88.10 . 22"
        )),
        "an unknown forward stayed in the inbound map:\n{}",
        lab.inbound_map()
    );
    let map = lab.inbound_map();
    assert!(
        inbound_map_has(&map, "tcp", s.tcp, "192.168.88.10 . 8080"),
        "{map}"
    );
    assert_repair_logged(lab);
}

/// A stray inbound element without its outbound partner (someone's hand-made forward, or a
/// half-removed one) is also something nobody tracks: it must not stay in natpmpd's table
/// forwarding traffic, nor block a client that asks for that port.
#[test]
fn stray_inbound_only_element_is_removed() {
    let s = setup();
    let lab = &s.lab;
    nft_in(
        &lab.gw,
        &[
            "add",
            "element",
            "inet",
            "natpmpd",
            "inbound",
            "{ tcp . 45000 : 192.168.88.10 . 22 }",
        ],
    )
    .ok();
    assert!(inbound_map_has(
        &lab.inbound_map(),
        "tcp",
        45000,
        "192.168.88.10 . 22"
    ));
    // A client asks for exactly that port: it must get a working forward (either 45000, now
    // pointing at it, or another port), never a port whose kernel element points elsewhere.
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST_SECOND, 7070), "second");
    let m = map_raw(
        &lab.lan,
        LAN_HOST_SECOND,
        GW_LAN,
        Proto::Tcp,
        7070,
        45000,
        600,
    );
    eprintln!("map request for 45000 with a stray element there: {m:?}");
    if m.result == 0 {
        assert!(
            Lab::eventually(Duration::from_secs(5), || tcp_probe(
                &lab.inet,
                SocketAddrV4::new(GW_EXT, m.external),
                "second",
                Duration::from_millis(300)
            )),
            "granted port {} does not reach 192.168.88.11:7070:\n{}",
            m.external,
            lab.inbound_map()
        );
    }
    assert!(
        Lab::eventually(Duration::from_secs(5), || !inbound_map_has(
            &lab.inbound_map(),
            "tcp",
            45000,
            "192.168.88.10 . 22"
        )),
        "a stray inbound-only element stayed in natpmpd's inbound map (still forwarding):\n{}",
        lab.inbound_map()
    );
    assert_eq!(
        m.result, 0,
        "map request refused because of the stray element: {m:?}"
    );
}
