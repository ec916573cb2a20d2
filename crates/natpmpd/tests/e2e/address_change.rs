//! End-to-end: the external address changes under the running daemon (netlink events).
//!
//! - 203.0.113.1 is replaced by 198.51.100.1 on ether1: a LAN listener on 224.0.0.1:5350 gets
//!   a new announcement train (new address, SSSoE back to 0, RFC spacing), the address request
//!   answers the new address, inbound TCP/UDP to the new address reaches the LAN host through
//!   the old mappings (same ports), and outbound UDP from a mapped port leaves from the new
//!   address and the mapped port.
//! - No address on ether1: address request -> result 3 and 0.0.0.0, map request -> result 3;
//!   when the address comes back, the old mapping forwards again.
//!
//! The time from `ip addr add` to the first announcement on the LAN is measured and printed.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

const NEW_EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const NEW_INET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

type Got = Vec<(Instant, Vec<u8>, SocketAddr)>;

/// Announcements (from 192.168.88.1:5351) that carry `addr`, as (arrival, SSSoE).
fn announcements_of(got: &Got, addr: Ipv4Addr) -> Vec<(Instant, u32)> {
    got.iter()
        .filter(|(_, b, from)| {
            b.len() == 12
                && b[..4] == [0, 0x80, 0, 0]
                && b[8..12] == addr.octets()
                && *from == SocketAddr::V4(SocketAddrV4::new(GW_LAN, NATPMP_PORT))
        })
        .map(|(t, b, _)| (*t, u32::from_be_bytes([b[4], b[5], b[6], b[7]])))
        .collect()
}

fn check_train_spacing(what: &str, train: &[(Instant, u32)]) {
    assert!(
        train.len() >= 4,
        "{what}: only {} copies within ~2.5 s: {train:?}",
        train.len()
    );
    let gap = |i: usize| (train[i + 1].0 - train[i].0).as_secs_f64();
    let (g1, g2, g3) = (gap(0), gap(1), gap(2));
    assert!(
        (0.15..=0.45).contains(&g1),
        "{what}: first gap {g1:.3}s, want ~0.25s"
    );
    assert!(
        (0.35..=0.8).contains(&g2),
        "{what}: second gap {g2:.3}s, want ~0.5s"
    );
    assert!(
        (0.8..=1.4).contains(&g3),
        "{what}: third gap {g3:.3}s, want ~1s"
    );
    for (t, sssoe) in train {
        let since = (*t - train[0].0).as_secs_f64();
        assert!(
            f64::from(*sssoe) <= since + 1.5,
            "{what}: SSSoE {sssoe} at {since:.2}s into the train: the epoch was not reset"
        );
    }
}

#[test]
fn address_change_announces_resets_epoch_and_moves_forwards() {
    let mut lab = Lab::new();
    lab.start_default();
    let _tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let _udp_srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    let udp = natpmpc_map(&lab.lan, GW_LAN, 40090, 9000, Proto::Udp, 3600);
    let out = natpmpc_map(&lab.lan, GW_LAN, 40100, 9100, Proto::Udp, 3600);
    assert_ne!(
        out.public_port, 9100,
        "pick an external port that differs from the internal one"
    );
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, tcp.public_port),
        "lan-tcp",
        Duration::from_secs(2)
    ));
    // The internet host gets an address in the new subnet too, so it can reach the new one.
    ip_n(
        &lab.inet,
        &["addr", "add", "198.51.100.2/24", "dev", "eth0"],
    );
    // Let the epoch grow, so its reset is visible.
    thread::sleep(Duration::from_millis(2500));
    let (_, epoch_before, _) = lab.address_request().unwrap();
    assert!(epoch_before >= 2, "epoch {epoch_before}");

    let listener = announcement_socket(&lab.lan, LAN_HOST);
    let collector = collect_datagrams(listener, Instant::now() + Duration::from_millis(3600));
    thread::sleep(Duration::from_millis(100));
    ip_n(&lab.gw, &["addr", "del", "203.0.113.1/24", "dev", "ether1"]);
    let t_add = Instant::now();
    ip_n(
        &lab.gw,
        &["addr", "add", "198.51.100.1/24", "dev", "ether1"],
    );
    let t_added = Instant::now();
    let got = collector.join().unwrap();
    let train = announcements_of(&got, NEW_EXT);
    assert!(
        !train.is_empty(),
        "no announcement of {NEW_EXT} on the LAN; got {got:?}\nlog:\n{}",
        lab.daemon_log()
    );
    let first = train[0].0.saturating_duration_since(t_add);
    eprintln!(
        "MEASURE address-change-to-first-announcement: {:.1} ms from spawning `ip addr add` (which itself took {:.1} ms to return)",
        first.as_secs_f64() * 1e3,
        (t_added - t_add).as_secs_f64() * 1e3
    );
    assert!(
        first < Duration::from_secs(2),
        "first announcement {first:?} after the change"
    );
    assert!(
        train[0].1 <= 1,
        "first announcement SSSoE {} (should restart at 0)",
        train[0].1
    );
    check_train_spacing("new-address train", &train);
    assert!(
        lab.daemon_log()
            .contains("external address is now 198.51.100.1"),
        "log:\n{}",
        lab.daemon_log()
    );

    // The address request answers the new address with a fresh epoch.
    let (res, epoch, addr) = lab
        .address_request()
        .expect("address request after the change");
    assert_eq!((res, addr), (0, NEW_EXT));
    assert!(
        epoch < epoch_before + 3 && epoch <= 5,
        "epoch {epoch} after the change (was {epoch_before})"
    );

    // natpmpctl shows the mapping on the new address, same port.
    let maps = lab.mappings();
    let t = maps
        .iter()
        .find(|e| e["dst-port"] == tcp.public_port && e["protocol"] == "tcp")
        .unwrap_or_else(|| panic!("tcp mapping lost on the address change: {maps:?}"));
    assert_eq!(t["dst-address"], "198.51.100.1", "{t}");

    // Inbound TCP and UDP to the new address reach the LAN host through the old ports.
    let new_tcp = SocketAddrV4::new(NEW_EXT, tcp.public_port);
    assert!(
        Lab::eventually(Duration::from_secs(3), || tcp_probe(
            &lab.inet,
            new_tcp,
            "lan-tcp",
            Duration::from_millis(500)
        )),
        "TCP to {new_tcp} did not reach the LAN host\n{}",
        nft_in(&lab.gw, &["list", "table", "inet", "natpmpd"]).stdout
    );
    let new_udp = SocketAddrV4::new(NEW_EXT, udp.public_port);
    let r = udp_roundtrip(&lab.inet, new_udp, "hello");
    assert!(
        matches!(&r, Some((m, from)) if m == "lan-udp:hello" && *from == SocketAddr::V4(new_udp)),
        "UDP to {new_udp}: {r:?}"
    );

    // Outbound UDP from the mapped internal port leaves from the new address and mapped port.
    let inet_sock = udp_socket(&lab.inet, SocketAddrV4::new(NEW_INET, 9999));
    let lan_sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 9100));
    lan_sock
        .send_to(b"outbound", SocketAddrV4::new(NEW_INET, 9999))
        .unwrap();
    let (b, from) = recv(&inet_sock).expect("outbound datagram did not arrive at 198.51.100.2");
    assert_eq!(b, b"outbound");
    assert_eq!(
        from,
        SocketAddr::V4(SocketAddrV4::new(NEW_EXT, out.public_port)),
        "outbound UDP should leave from the new address and the mapped port\n{}",
        nft_in(&lab.gw, &["list", "map", "inet", "natpmpd", "outbound"]).stdout
    );
    let outbound = nft_in(&lab.gw, &["list", "map", "inet", "natpmpd", "outbound"])
        .ok()
        .stdout;
    assert!(
        !outbound.contains("203.0.113.1"),
        "old address left in the outbound map:\n{outbound}"
    );
}

#[test]
fn no_external_address_gives_result_3_then_recovers() {
    let mut lab = Lab::new();
    lab.start_default();
    let _tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    let ext = SocketAddrV4::new(GW_EXT, tcp.public_port);
    assert!(tcp_probe(&lab.inet, ext, "lan-tcp", Duration::from_secs(2)));

    ip_n(&lab.gw, &["addr", "del", "203.0.113.1/24", "dev", "ether1"]);
    assert!(
        Lab::eventually(Duration::from_secs(3), || lab
            .address_request()
            .is_some_and(|r| r.0 == 3)),
        "address request did not turn to result 3 after the address was removed: {:?}",
        lab.address_request()
    );
    let (res, _, addr) = lab.address_request().unwrap();
    assert_eq!(
        (res, addr),
        (3, Ipv4Addr::UNSPECIFIED),
        "no address: result 3 and 0.0.0.0"
    );
    let m = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Tcp, 8081, 0, 600);
    assert_eq!(
        m.result, 3,
        "map request without an external address: {m:?}"
    );
    lab.assert_daemon_running();

    let listener = announcement_socket(&lab.lan, LAN_HOST);
    let collector = collect_datagrams(listener, Instant::now() + Duration::from_millis(1500));
    thread::sleep(Duration::from_millis(100));
    let t_add = Instant::now();
    ip_n(&lab.gw, &["addr", "add", "203.0.113.1/24", "dev", "ether1"]);
    let got = collector.join().unwrap();
    let train = announcements_of(&got, GW_EXT);
    assert!(
        !train.is_empty(),
        "no announcement when the address came back: {got:?}"
    );
    eprintln!(
        "MEASURE address-returns-to-first-announcement: {:.1} ms",
        train[0].0.saturating_duration_since(t_add).as_secs_f64() * 1e3
    );
    assert_eq!(lab.address_request().map(|r| (r.0, r.2)), Some((0, GW_EXT)));
    // The old mapping forwards again, same port.
    assert!(
        Lab::eventually(Duration::from_secs(3), || tcp_probe(
            &lab.inet,
            ext,
            "lan-tcp",
            Duration::from_millis(500)
        )),
        "the mapping did not forward again after the address returned\n{}",
        lab.inbound_map()
    );
    assert!(lab
        .mappings()
        .iter()
        .any(|e| e["dst-port"] == tcp.public_port));
    // New requests work again.
    let m = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Tcp, 8081, 0, 600);
    assert_eq!(m.result, 0, "{m:?}");
}
