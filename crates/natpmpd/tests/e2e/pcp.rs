//! End-to-end: PCP (RFC 6887) rules that need a raw client, checked with real traffic
//! through the real daemon and kernel: nonce ownership, FILTER enforced in the kernel,
//! PREFER_FAILURE, DESCRIPTION in `natpmpctl print`, the Mapping Update after the WAN address
//! changes, NAT-PMP and PCP sharing one mapping, and PCP mappings surviving restarts and drift.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::pcp::{self, Request};
use crate::lab::*;

const NONCE_A: u8 = 0xA1;
const NONCE_B: u8 = 0xB2;
const NEW_EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A UDP round trip from `src` (inet) to the gateway's external `port`: `true` when the LAN
/// echo server tagged `tag` answers.
fn udp_from(lab: &Lab, src: Ipv4Addr, port: u16, tag: &str) -> bool {
    let sock = udp_socket(&lab.inet, SocketAddrV4::new(src, 0));
    sock.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    sock.send_to(b"hi", SocketAddrV4::new(GW_EXT, port))
        .unwrap();
    matches!(recv(&sock), Some((b, _)) if b == format!("{tag}:hi").as_bytes())
}

fn tcp_from(lab: &Lab, src: Ipv4Addr, port: u16, tag: &str) -> bool {
    tcp_roundtrip_from(
        &lab.inet,
        src,
        SocketAddrV4::new(GW_EXT, port),
        "hi",
        Duration::from_millis(600),
    )
    .is_ok_and(|r| r == format!("{tag}:hi"))
}

fn refused(lab: &Lab, request: &Request) -> pcp::Response {
    let (r, _) = pcp::exchange(&lab.lan, LAN_HOST, GW_LAN, request);
    r.unwrap_or_else(|| panic!("no PCP reply to {request:?}"))
}

#[test]
fn a_second_nonce_can_neither_renew_nor_delete_and_the_owner_can() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let owner = Request::map(LAN_HOST, NONCE_A, pcp::TCP, 8080, 600);
    let r = pcp::ok(&lab.lan, LAN_HOST, GW_LAN, &owner);
    assert_eq!(r.nonce, [NONCE_A; 12]);
    assert_eq!(r.external_addr, GW_EXT);
    let ext = r.external_port;
    assert!(tcp_from(&lab, INET_HOST, ext, "lan-tcp"));

    // Another nonce (another application, or a spoofer) cannot renew it...
    let thief = Request::map(LAN_HOST, NONCE_B, pcp::TCP, 8080, 600);
    let r = refused(&lab, &thief);
    assert_eq!(r.result, pcp::NOT_AUTHORIZED, "{r:?}");
    assert!(
        (590..=600).contains(&r.lifetime),
        "the error lifetime is the mapping's remaining lifetime, got {}",
        r.lifetime
    );
    // ...nor delete it, over PCP or NAT-PMP.
    let r = refused(&lab, &Request::map(LAN_HOST, NONCE_B, pcp::TCP, 8080, 0));
    assert_eq!(r.result, pcp::NOT_AUTHORIZED, "{r:?}");
    let natpmp = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Tcp, 8080, 0, 0);
    assert_eq!(
        natpmp.result, 2,
        "NAT-PMP delete of a nonce-owned mapping: {natpmp:?}"
    );
    assert_eq!(natpmp.external, ext);
    assert!(
        tcp_from(&lab, INET_HOST, ext, "lan-tcp"),
        "the mapping must stay"
    );
    let listed = lab.mappings();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["nonce-owned"], true);
    assert_eq!(listed[0]["dst-port"], ext);

    // The owner renews (same port) and deletes.
    let r = pcp::ok(&lab.lan, LAN_HOST, GW_LAN, &owner.clone().suggest(ext + 1));
    assert_eq!(
        r.external_port, ext,
        "a renewal keeps the port whatever is suggested"
    );
    let r = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::TCP, 8080, 0),
    );
    assert_eq!(r.lifetime, 0);
    assert!(lab.mappings().is_empty(), "{:?}", lab.mappings());
    assert!(
        !tcp_from(&lab, INET_HOST, ext, "lan-tcp"),
        "TCP still passes after the owner deleted the mapping"
    );
}

#[test]
fn filter_admits_only_the_listed_remote_in_the_kernel() {
    let mut lab = Lab::new();
    lab.start_default();
    let _udp = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let _tcp = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-tcp");
    let r = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::UDP, 9000, 600).filter(INET_HOST, 32, 0),
    );
    assert!(
        r.options.iter().any(|(code, _)| *code == 3),
        "the processed FILTER is echoed: {r:?}"
    );
    let udp = r.external_port;
    let r = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::TCP, 9000, 600).filter(INET_HOST, 32, 0),
    );
    let tcp = r.external_port;

    assert!(
        udp_from(&lab, INET_HOST, udp, "lan-udp"),
        "the allowed peer's UDP"
    );
    assert!(
        tcp_from(&lab, INET_HOST, tcp, "lan-tcp"),
        "the allowed peer's TCP"
    );
    assert!(
        !udp_from(&lab, INET_HOST_SECOND, udp, "lan-udp"),
        "UDP from a host outside the FILTER got through"
    );
    assert!(
        !tcp_from(&lab, INET_HOST_SECOND, tcp, "lan-tcp"),
        "TCP from a host outside the FILTER got through"
    );
    let listed = lab.mappings();
    assert!(
        listed
            .iter()
            .all(|m| m["src-address"] == serde_json::json!(["203.0.113.2/32"])),
        "{listed:?}"
    );

    // A FILTER with prefix length 0 (on the wire: 0, not 96) clears the filters: everyone may
    // connect again.
    let mut clear = Request::map(LAN_HOST, NONCE_A, pcp::UDP, 9000, 600);
    clear.options = vec![3, 0, 0, 20, 0, 0, 0, 0];
    clear.options.extend_from_slice(&[0; 16]);
    pcp::ok(&lab.lan, LAN_HOST, GW_LAN, &clear);
    assert!(
        Lab::eventually(Duration::from_secs(2), || udp_from(
            &lab,
            INET_HOST_SECOND,
            udp,
            "lan-udp"
        )),
        "after clearing the filters, the other host still cannot reach the mapping\n{}",
        nft_in(&lab.gw, &["list", "table", "inet", "natpmpd"]).stdout
    );
    assert!(
        !tcp_from(&lab, INET_HOST_SECOND, tcp, "lan-tcp"),
        "TCP keeps its filter"
    );
}

#[test]
fn prefer_failure_gets_the_exact_port_or_cannot_provide_external() {
    let mut lab = Lab::new();
    lab.start_default();
    let want = 40123;
    let r = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::TCP, 8080, 600)
            .suggest(want)
            .prefer_failure(),
    );
    assert_eq!(r.external_port, want);
    assert!(r.options.iter().any(|(code, _)| *code == 2), "{r:?}");

    // Another host wanting that exact port: CANNOT_PROVIDE_EXTERNAL until the holder's
    // mapping ends, and no state.
    let other = Request::map(LAN_HOST_SECOND, NONCE_B, pcp::TCP, 8080, 600)
        .suggest(want)
        .prefer_failure();
    let (r, _) = pcp::exchange(&lab.lan, LAN_HOST_SECOND, GW_LAN, &other);
    let r = r.expect("no reply");
    assert_eq!(r.result, pcp::CANNOT_PROVIDE_EXTERNAL, "{r:?}");
    assert!(
        (1..=600).contains(&r.lifetime),
        "error lifetime {}",
        r.lifetime
    );
    assert_eq!(lab.mappings().len(), 1);
    // Without PREFER_FAILURE it gets another port.
    let mut plain = other.clone();
    plain.options.clear();
    let r = pcp::ok(&lab.lan, LAN_HOST_SECOND, GW_LAN, &plain);
    assert_ne!(r.external_port, want);
    // A port that is never handed out (PCP's own): a long-lived refusal.
    let own = Request::map(LAN_HOST, NONCE_A, pcp::UDP, 5000, 600)
        .suggest(5351)
        .prefer_failure();
    let r = refused(&lab, &own);
    assert_eq!(
        (r.result, r.lifetime),
        (pcp::CANNOT_PROVIDE_EXTERNAL, 1800),
        "{r:?}"
    );
    // PREFER_FAILURE with suggested port 0 is malformed.
    let zero = Request::map(LAN_HOST, NONCE_A, pcp::UDP, 5001, 600).prefer_failure();
    assert_eq!(refused(&lab, &zero).result, pcp::MALFORMED_OPTION);
}

#[test]
fn description_is_echoed_and_shown_by_natpmpctl_print() {
    let mut lab = Lab::new();
    lab.start_default();
    let r = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::UDP, 27015, 600).description("ApplicationX"),
    );
    assert_eq!(
        r.options,
        vec![(128, b"ApplicationX".to_vec())],
        "the stored description is echoed"
    );
    let out = lab.natpmpctl(&["print"]).ok();
    assert!(
        out.stdout
            .contains(";;; nat-pmp 192.168.88.10: ApplicationX\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(" via=pcp nonce-owned=yes"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.mappings()[0]["description"], "ApplicationX");
}

#[test]
fn mapping_update_reaches_the_client_after_the_wan_address_changes() {
    let mut lab = Lab::new();
    lab.start_default();
    let request = Request::map(LAN_HOST, NONCE_A, pcp::UDP, 9000, 600).filter(INET_HOST, 32, 0);
    let (r, sock) = pcp::exchange(&lab.lan, LAN_HOST, GW_LAN, &request);
    let r = r.expect("no reply to the MAP");
    assert_eq!(r.result, pcp::SUCCESS);
    let ext = r.external_port;
    thread::sleep(Duration::from_millis(1200));

    // The client keeps listening on the port it sent from.
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    ip_n(&lab.gw, &["addr", "del", "203.0.113.1/24", "dev", "ether1"]);
    ip_n(
        &lab.gw,
        &["addr", "add", "198.51.100.1/24", "dev", "ether1"],
    );
    let changed = Instant::now();
    let mut updates: Vec<(Duration, pcp::Response)> = Vec::new();
    while changed.elapsed() < Duration::from_millis(1800) {
        if let Some((b, from)) = recv(&sock) {
            assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(GW_LAN, NATPMP_PORT)));
            updates.push((changed.elapsed(), pcp::parse(&b)));
        }
    }
    assert!(
        updates.len() >= 3,
        "want 3 copies of the Mapping Update within 1.8 s, got {updates:?}\nlog:\n{}",
        lab.daemon_log()
    );
    for (_, u) in &updates {
        assert_eq!((u.opcode, u.result), (pcp::MAP, pcp::SUCCESS), "{u:?}");
        assert_eq!(u.nonce, [NONCE_A; 12]);
        assert_eq!(u.internal_port, 9000);
        assert_eq!(u.external_port, ext, "the port is kept");
        assert_eq!(u.external_addr, NEW_EXT, "the new address");
        assert!(
            u.epoch <= 1,
            "the epoch restarts on an address change: {}",
            u.epoch
        );
        assert!((590..=600).contains(&u.lifetime), "lifetime {}", u.lifetime);
        assert!(
            u.options.iter().any(|(c, _)| *c == 3),
            "FILTER included: {u:?}"
        );
    }
    let gap = |i: usize| (updates[i + 1].0 - updates[i].0).as_secs_f64();
    assert!((0.15..=0.45).contains(&gap(0)), "first gap {:.3}", gap(0));
    assert!((0.35..=0.8).contains(&gap(1)), "second gap {:.3}", gap(1));
}

#[test]
fn natpmp_and_pcp_share_one_mapping() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let n = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    assert_eq!(lab.mappings()[0]["via"], "nat-pmp");

    // A PCP MAP from the same host for the same port takes it over and keeps the port.
    let r = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::TCP, 8080, 600),
    );
    assert_eq!(r.external_port, n.public_port);
    let listed = lab.mappings();
    assert_eq!(listed.len(), 1, "one mapping, not two: {listed:?}");
    assert_eq!(listed[0]["via"], "pcp");
    assert_eq!(listed[0]["nonce-owned"], true);

    // A NAT-PMP request for it gets the existing port and changes nothing.
    let again = natpmpc_map(&lab.lan, GW_LAN, 0, 8080, Proto::Tcp, 3600);
    assert_eq!(again.public_port, n.public_port);
    assert!(
        again.lifetime <= 600,
        "NAT-PMP cannot extend a nonce-owned mapping: {again:?}"
    );
    assert_eq!(lab.mappings()[0]["via"], "pcp");
    assert!(tcp_from(&lab, INET_HOST, n.public_port, "lan-tcp"));
}

#[test]
fn pcp_mappings_survive_restart_and_kill_9_with_nonce_and_filter() {
    let mut lab = Lab::new();
    lab.start_default();
    let _udp = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let request = Request::map(LAN_HOST, NONCE_A, pcp::UDP, 9000, 600)
        .filter(INET_HOST, 32, 0)
        .description("survivor");
    let ext = pcp::ok(&lab.lan, LAN_HOST, GW_LAN, &request).external_port;
    let check = |lab: &Lab, when: &str| {
        let listed = lab.mappings();
        assert_eq!(listed.len(), 1, "{when}: {listed:?}");
        let m = &listed[0];
        assert_eq!(m["dst-port"], ext, "{when}");
        assert_eq!(m["nonce-owned"], true, "{when}");
        assert_eq!(m["description"], "survivor", "{when}");
        assert_eq!(
            m["src-address"],
            serde_json::json!(["203.0.113.2/32"]),
            "{when}"
        );
        assert!(
            Lab::eventually(Duration::from_secs(3), || udp_from(
                lab, INET_HOST, ext, "lan-udp"
            )),
            "{when}: the allowed peer cannot reach the mapping"
        );
        assert!(
            !udp_from(lab, INET_HOST_SECOND, ext, "lan-udp"),
            "{when}: the filter was lost"
        );
        let r = refused(lab, &Request::map(LAN_HOST, NONCE_B, pcp::UDP, 9000, 600));
        assert_eq!(
            r.result,
            pcp::NOT_AUTHORIZED,
            "{when}: the nonce was lost: {r:?}"
        );
        let r = pcp::ok(&lab.lan, LAN_HOST, GW_LAN, &request);
        assert_eq!(r.external_port, ext, "{when}: the owner's renewal");
    };
    check(&lab, "before");

    lab.stop_daemon(Duration::from_secs(5))
        .expect("natpmpd did not stop on SIGTERM");
    lab.respawn_daemon();
    lab.wait_ready();
    check(&lab, "after SIGTERM and a start");

    // The lease file is written within ~1 s of a change; then kill -9.
    thread::sleep(Duration::from_millis(1500));
    lab.kill_daemon_hard();
    lab.respawn_daemon();
    lab.wait_ready();
    check(&lab, "after kill -9 and a start");
}

#[test]
fn drift_repair_restores_filtered_and_peer_elements() {
    let mut lab = Lab::new();
    lab.start_default();
    let _udp = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let filtered = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::map(LAN_HOST, NONCE_A, pcp::UDP, 9000, 600).filter(INET_HOST, 32, 0),
    )
    .external_port;
    let peer_port = 9100;
    let _peer_srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, peer_port), "lan-peer");
    let peer = pcp::ok(
        &lab.lan,
        LAN_HOST,
        GW_LAN,
        &Request::peer(
            LAN_HOST,
            NONCE_B,
            pcp::UDP,
            peer_port,
            SocketAddrV4::new(INET_HOST_SECOND, 4000),
            600,
        ),
    )
    .external_port;
    let peer_passes = |lab: &Lab| {
        let s = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST_SECOND, 4000));
        s.set_read_timeout(Some(Duration::from_millis(600)))
            .unwrap();
        s.send_to(b"hi", SocketAddrV4::new(GW_EXT, peer)).unwrap();
        matches!(recv(&s), Some((b, _)) if b == b"lan-peer:hi")
    };
    assert!(udp_from(&lab, INET_HOST, filtered, "lan-udp"));
    assert!(peer_passes(&lab));

    nft_in(&lab.gw, &["flush", "ruleset"]).ok();
    lab.reload_lab_rules();
    assert!(
        Lab::eventually(Duration::from_secs(4), || udp_from(
            &lab, INET_HOST, filtered, "lan-udp"
        )),
        "the filtered mapping did not come back after `nft flush ruleset`\nlog:\n{}",
        lab.daemon_log()
    );
    assert!(peer_passes(&lab), "the PEER mapping did not come back");
    assert!(
        !udp_from(&lab, INET_HOST_SECOND, filtered, "lan-udp"),
        "the filter did not come back with the mapping"
    );
}
