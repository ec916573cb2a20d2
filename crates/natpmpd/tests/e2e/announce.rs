//! End-to-end: start-up announcements. LAN listeners bound to 224.0.0.1:5350 receive the
//! gratuitous NAT-PMP external-address replies and the 24-byte PCP ANNOUNCE from each internal
//! interface's address, port 5351, both with the RFC's 0.25 s / 0.5 s / 1 s spacing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);

fn announcement_listener(ns: &str, iface_addr: Ipv4Addr) -> UdpSocket {
    in_ns(ns, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(GROUP, 5350)).expect("bind 224.0.0.1:5350");
        // Every multicast-capable interface is in the all-hosts group already; joining
        // explicitly is what RFC 6886 §3.2.1 tells clients to do, and harmless.
        let _ = s.join_multicast_v4(&GROUP, &iface_addr);
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    })
}

/// Everything `sock` receives until `until`, with arrival times.
fn collect(
    sock: UdpSocket,
    until: Instant,
) -> thread::JoinHandle<Vec<(Instant, Vec<u8>, SocketAddr)>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                got.push((Instant::now(), buf[..n].to_vec(), from));
            }
        }
        got
    })
}

type Received = (Instant, Vec<u8>, SocketAddr);

/// Both trains in what a listener heard: NAT-PMP's (version 0) and PCP's (version 2).
fn check_trains(what: &str, got: &[Received], allowed: &[Ipv4Addr]) {
    let (natpmp, pcp): (Vec<Received>, Vec<Received>) =
        got.iter().cloned().partition(|(_, b, _)| b[0] == 0);
    for (_, b, _) in &natpmp {
        assert_eq!(b.len(), 12, "{what}: NAT-PMP announcement length {b:02x?}");
        assert_eq!(&b[..4], &[0, 0x80, 0, 0], "{what}: header {b:02x?}");
        assert_eq!(&b[8..12], &[203, 0, 113, 1], "{what}: address {b:02x?}");
    }
    for (_, b, _) in &pcp {
        // RFC 6887 §14.1.3: `02 80 00 00`, lifetime 0, the epoch, 12 zero bytes.
        assert_eq!(b.len(), 24, "{what}: PCP ANNOUNCE length {b:02x?}");
        assert_eq!(
            &b[..8],
            &[2, 0x80, 0, 0, 0, 0, 0, 0],
            "{what}: header {b:02x?}"
        );
        assert_eq!(&b[12..], &[0; 12], "{what}: reserved {b:02x?}");
    }
    check_train(&format!("{what}, NAT-PMP"), &natpmp, allowed);
    check_train(&format!("{what}, PCP"), &pcp, allowed);
}

fn check_train(what: &str, got: &[Received], allowed: &[Ipv4Addr]) {
    assert!(!got.is_empty(), "{what}: no announcement received");
    for (_, b, from) in got {
        let SocketAddr::V4(from) = from else {
            panic!("{what}: IPv6 source {from}")
        };
        assert!(
            allowed.contains(from.ip()),
            "{what}: announcement from {from}, expected one of {allowed:?}"
        );
        assert_eq!(from.port(), NATPMP_PORT, "{what}: source port");
        // NAT-PMP's SSSoE is at byte 4, PCP's epoch at byte 8.
        let at = if b[0] == 2 { 8 } else { 4 };
        let epoch = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        assert!(epoch <= 4, "{what}: epoch {epoch} right after start");
    }
    // Judge the spacing per source address (the daemon may announce from each address).
    for src in allowed {
        let times: Vec<Instant> = got
            .iter()
            .filter(|(_, _, f)| *f == SocketAddr::V4(SocketAddrV4::new(*src, NATPMP_PORT)))
            .map(|(t, _, _)| *t)
            .collect();
        if times.is_empty() {
            continue;
        }
        assert!(
            times.len() >= 3,
            "{what}: only {} copies from {src} within ~2.5 s",
            times.len()
        );
        let g1 = (times[1] - times[0]).as_secs_f64();
        let g2 = (times[2] - times[1]).as_secs_f64();
        assert!(
            (0.15..=0.45).contains(&g1),
            "{what}: first gap {g1:.3}s, want ~0.25s"
        );
        assert!(
            (0.35..=0.8).contains(&g2),
            "{what}: second gap {g2:.3}s, want ~0.5s"
        );
        if times.len() >= 4 {
            let g3 = (times[3] - times[2]).as_secs_f64();
            assert!(
                (0.8..=1.4).contains(&g3),
                "{what}: third gap {g3:.3}s, want ~1s"
            );
        }
    }
}

#[test]
fn startup_announcements_reach_every_lan_with_rfc_spacing() {
    let mut lab = Lab::new();
    let lan = announcement_listener(&lab.lan, LAN_HOST);
    let lan2 = announcement_listener(&lab.lan2, LAN2_HOST);
    let until = Instant::now() + Duration::from_millis(2600);
    let lan_t = collect(lan, until);
    let lan2_t = collect(lan2, until);
    lab.spawn_daemon(&DaemonConfig::default());
    let lan_got = lan_t.join().unwrap();
    let lan2_got = lan2_t.join().unwrap();
    lab.assert_daemon_running();
    check_trains("lan (ether2)", &lan_got, &[GW_LAN, GW_LAN_SECOND]);
    check_trains("lan2 (ether3)", &lan2_got, &[GW_LAN2]);
}

#[test]
fn no_announcements_on_the_external_side() {
    let mut lab = Lab::new();
    let inet = announcement_listener(&lab.inet, INET_HOST);
    let until = Instant::now() + Duration::from_millis(1200);
    let t = collect(inet, until);
    lab.spawn_daemon(&DaemonConfig::default());
    let got = t.join().unwrap();
    assert!(
        got.is_empty(),
        "announcements leaked to the internet side: {got:?}"
    );
}
