//! End-to-end: hairpin (RFC 6886 §4.3.4). With a TCP mapping for 192.168.88.10:8080 on
//! external port P, a LAN host connecting to 203.0.113.1:P (from 192.168.88.11 on the same
//! LAN, or from lan2) reaches the listener and data round-trips; with `hairpin = false` it does
//! not; a reload switches it live.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::lab::*;

const EXTRA_OFF: &str = "hairpin = false\n";

/// From 192.168.88.11 (same LAN as the mapped host) to 203.0.113.1:P.
fn from_same_lan(s: &Setup, msg: &str) -> Result<String, String> {
    tcp_roundtrip_from(
        &s.lab.lan,
        LAN_HOST_SECOND,
        SocketAddrV4::new(GW_EXT, s.tcp),
        msg,
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())
}

/// From lan2 (192.168.89.10, another internal interface) to 203.0.113.1:P.
fn from_lan2(s: &Setup, msg: &str) -> Result<String, String> {
    tcp_roundtrip_from(
        &s.lab.lan2,
        LAN2_HOST,
        SocketAddrV4::new(GW_EXT, s.tcp),
        msg,
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())
}

fn assert_hairpin_works(s: &Setup, what: &str) {
    let r = from_same_lan(s, "same-lan");
    assert_eq!(
        r.as_deref(),
        Ok("lan-tcp:same-lan"),
        "{what}: hairpin from 192.168.88.11 to 203.0.113.1:{}",
        s.tcp
    );
    let r = from_lan2(s, "other-lan");
    assert_eq!(
        r.as_deref(),
        Ok("lan-tcp:other-lan"),
        "{what}: hairpin from lan2 to 203.0.113.1:{}",
        s.tcp
    );
    // UDP from lan2: the reply comes back from the external address and port.
    let to = SocketAddrV4::new(GW_EXT, s.udp);
    let r = udp_roundtrip(&s.lab.lan2, to, "udp-hairpin");
    assert!(
        matches!(&r, Some((m, from)) if m == "lan-udp:udp-hairpin" && *from == to.into()),
        "{what}: UDP hairpin from lan2: {r:?}"
    );
}

fn assert_hairpin_blocked(s: &Setup, what: &str) {
    let before = s.tcp_srv.peers().len();
    let r = from_same_lan(s, "same-lan");
    assert!(
        !matches!(r.as_deref(), Ok(l) if l.starts_with("lan-tcp:")),
        "{what}: hairpin from 192.168.88.11 passed: {r:?}"
    );
    let r = from_lan2(s, "other-lan");
    assert!(
        !matches!(r.as_deref(), Ok(l) if l.starts_with("lan-tcp:")),
        "{what}: hairpin from lan2 passed: {r:?}"
    );
    assert_eq!(
        s.tcp_srv.peers().len(),
        before,
        "{what}: the mapped host got a hairpinned connection"
    );
}

#[test]
fn hairpin_on_by_default_from_the_same_lan_and_from_lan2() {
    let s = setup();
    assert_hairpin_works(&s, "hairpin = true (default)");
    let peers = s.tcp_srv.peers();
    // Hairpinned flows arrive from the gateway (masqueraded), so the reply goes back through it.
    assert!(
        peers.iter().skip(1).all(|p| p.ip() != std::net::IpAddr::V4(LAN_HOST_SECOND)),
        "a same-LAN hairpin flow reached the host with its own LAN source (reply would bypass the NAT): {peers:?}"
    );
    // Traffic from the internet keeps its real source.
    assert_eq!(peers[0].ip(), std::net::IpAddr::V4(INET_HOST), "{peers:?}");
}

#[test]
fn hairpin_off_does_not_reach_the_mapped_host() {
    let s = setup_with(EXTRA_OFF);
    assert_hairpin_blocked(&s, "hairpin = false");
    // The mapping itself still works from the internet.
    assert!(tcp_probe(
        &s.lab.inet,
        SocketAddrV4::new(GW_EXT, s.tcp),
        "lan-tcp",
        Duration::from_secs(2)
    ));
}

#[test]
fn hairpin_follows_a_reload() {
    let s = setup_with(EXTRA_OFF);
    assert_hairpin_blocked(&s, "hairpin = false at start");
    let lab = &s.lab;
    lab.write_config(&lab.config_text_with(&DaemonConfig::default(), "hairpin = true\n"));
    let out = lab.natpmpctl(&["reload"]);
    assert!(out.success(), "{out}");
    assert_hairpin_works(&s, "after reload to hairpin = true");
    lab.write_config(&lab.config_text_with(&DaemonConfig::default(), EXTRA_OFF));
    let out = lab.natpmpctl(&["reload"]);
    assert!(out.success(), "{out}");
    assert_hairpin_blocked(&s, "after reload back to hairpin = false");
}
