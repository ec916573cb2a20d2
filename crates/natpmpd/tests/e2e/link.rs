//! End-to-end: the external link goes away and comes back under the running daemon, and the
//! mappings forward again by themselves.
//!
//! - `ip link set ether1 down` / `up` (a cable pulled and put back);
//! - `ip link del ether1`, then a new veth with the same name and address (like a PPP link
//!   that is torn down and dialled again: a new interface index).
//!
//! Recovery time (from the link being back to the first TCP connect through the old
//! mapping, polled every 20 ms) is measured and printed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

fn wait_forwarding(s: &Setup, what: &str, t0: Instant) -> Duration {
    let ext = SocketAddrV4::new(GW_EXT, s.tcp);
    let deadline = t0 + Duration::from_secs(10);
    loop {
        if tcp_probe(&s.lab.inet, ext, "lan-tcp", Duration::from_millis(300)) {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: TCP through {ext} did not pass within 10 s\n{}",
            nft_in(&s.lab.gw, &["list", "ruleset"]).stdout
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// After recovery: the same mappings, the right address, UDP too, and new requests work.
fn check_recovered(s: &Setup, what: &str) {
    let lab = &s.lab;
    assert!(lab.daemon_alive(), "natpmpd exited:\n{}", lab.daemon_log());
    assert_eq!(
        lab.address_request().map(|r| (r.0, r.2)),
        Some((0, GW_EXT)),
        "{what}"
    );
    let maps = lab.mappings();
    for (proto, port) in [("tcp", s.tcp), ("udp", s.udp)] {
        assert!(
            maps.iter()
                .any(|e| e["dst-port"] == port && e["protocol"] == proto),
            "{what}: {proto} mapping on {port} lost: {maps:?}"
        );
    }
    let map = lab.inbound_map();
    assert!(
        inbound_map_has(&map, "tcp", s.tcp, "192.168.88.10 . 8080"),
        "{what}:\n{map}"
    );
    assert!(
        inbound_map_has(&map, "udp", s.udp, "192.168.88.10 . 9000"),
        "{what}:\n{map}"
    );
    let ok = (0..3).any(|i| {
        let msg = format!("u{i}");
        udp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, s.udp), &msg)
            .is_some_and(|(r, _)| r == format!("lan-udp:{msg}"))
    });
    assert!(ok, "{what}: UDP through {} did not pass", s.udp);
    let again = natpmpc_map(&lab.lan, GW_LAN, 0, 8080, Proto::Tcp, 3600);
    assert_eq!(again.public_port, s.tcp, "{what}: renewal moved the port");
    assert_eq!(again.public_ip, Some(GW_EXT), "{what}");
    let fresh = natpmpc_map(&lab.lan, GW_LAN, 0, 8082, Proto::Tcp, 600);
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8082), "fresh");
    assert!(
        tcp_probe(
            &lab.inet,
            SocketAddrV4::new(GW_EXT, fresh.public_port),
            "fresh",
            Duration::from_secs(2)
        ),
        "{what}: a new mapping made after recovery does not forward"
    );
}

#[test]
fn external_link_down_and_up_recovers() {
    let s = setup();
    let lab = &s.lab;
    ip_n(&lab.gw, &["link", "set", "ether1", "down"]);
    thread::sleep(Duration::from_millis(1500));
    assert!(lab.daemon_alive(), "natpmpd exited:\n{}", lab.daemon_log());
    // While the link is down the LAN side keeps getting answers.
    assert!(
        lab.address_request().is_some(),
        "no answer while ether1 is down"
    );
    let t0 = Instant::now();
    ip_n(&lab.gw, &["link", "set", "ether1", "up"]);
    let took = wait_forwarding(&s, "link down/up", t0);
    eprintln!(
        "MEASURE link up -> forwarding: {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    check_recovered(&s, "link down/up");
}

#[test]
fn external_veth_deleted_and_recreated_recovers() {
    let s = setup();
    let lab = &s.lab;
    ip_n(&lab.gw, &["link", "del", "ether1"]);
    assert!(
        Lab::eventually(Duration::from_secs(3), || lab
            .address_request()
            .is_some_and(|r| r.0 == 3)),
        "with ether1 gone the address request should answer result 3: {:?}",
        lab.address_request()
    );
    assert_eq!(
        lab.address_request().map(|r| r.2),
        Some(Ipv4Addr::UNSPECIFIED)
    );
    thread::sleep(Duration::from_millis(500));
    assert!(lab.daemon_alive(), "natpmpd exited:\n{}", lab.daemon_log());

    // Same name, same address, a new interface index (a PPP link dialled again).
    let t0 = Instant::now();
    ip_n(
        &lab.gw,
        &[
            "link", "add", "ether1", "type", "veth", "peer", "name", "eth0", "netns", &lab.inet,
        ],
    );
    ip_n(&lab.gw, &["addr", "add", "203.0.113.1/24", "dev", "ether1"]);
    ip_n(&lab.gw, &["link", "set", "ether1", "up"]);
    ip_n(&lab.inet, &["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
    ip_n(&lab.inet, &["link", "set", "eth0", "up"]);
    let took = wait_forwarding(&s, "veth recreated", t0);
    eprintln!(
        "MEASURE veth recreated -> forwarding: {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    check_recovered(&s, "veth recreated");
}
