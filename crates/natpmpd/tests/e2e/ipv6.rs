//! End-to-end: PCP over IPv6 opens firewall pinholes that carry real traffic through the
//! operator's forward chain (`policy drop` with the one contract rule), for as long as the
//! pinhole lives: crab_nat and raw PCP, FILTER and PEER, the ANNOUNCE on ff02::1, nothing
//! answered from the WAN side, `natpmpctl print`, restart and drift, prefixes that go away, and
//! IPv4 forwarding passing through the same contract rule.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::num::NonZeroU16;
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::pcp::{self, Request};
use crate::lab::*;
use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType, TimeoutConfig};

const NONCE: u8 = 0x6A;

fn sa6(a: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0))
}

/// A UDP round trip from `src` on inet to the LAN host's `port`: `true` when the LAN echo
/// server tagged `tag` answers.
fn udp6_from(lab: &Lab, src: Ipv6Addr, port: u16, tag: &str) -> bool {
    let sock = udp_socket(&lab.inet, sa6(src, 0));
    sock.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    sock.send_to(b"hi", sa6(LAN_HOST6, port)).unwrap();
    matches!(recv(&sock), Some((b, _)) if b == format!("{tag}:hi").as_bytes())
}

fn tcp6_from(lab: &Lab, src: Ipv6Addr, port: u16, tag: &str) -> bool {
    tcp_roundtrip_from(
        &lab.inet,
        src,
        sa6(LAN_HOST6, port),
        "hi",
        Duration::from_millis(600),
    )
    .is_ok_and(|r| r == format!("{tag}:hi"))
}

fn map6(lab: &Lab, request: &Request) -> pcp::Response {
    pcp::ok(&lab.lan, LAN_HOST6, GW_LAN6, request)
}

#[test]
fn crab_nat_maps_over_ipv6_and_traffic_passes_only_while_the_pinhole_lives() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = tcp_echo_server(&lab.lan, sa6(LAN_HOST6, 8080), "lan6-tcp");
    let _never = tcp_echo_server(&lab.lan, sa6(LAN_HOST6, 8081), "lan6-never");
    // Before any mapping the operator's forward chain drops new inbound connections.
    assert!(
        !tcp6_from(&lab, INET_HOST6, 8080, "lan6-tcp"),
        "open before any pinhole"
    );

    let m = in_ns_async(&lab.lan, move || async move {
        PortMapping::new(
            IpAddr::V6(GW_LAN6).into(),
            IpAddr::V6(LAN_HOST6),
            InternetProtocol::Tcp,
            NonZeroU16::new(8080).unwrap(),
            PortMappingOptions {
                external_port: None,
                lifetime_seconds: Some(600),
                timeout_config: Some(TimeoutConfig {
                    initial_timeout: Duration::from_millis(250),
                    max_retries: 3,
                    max_retry_timeout: Some(Duration::from_secs(1)),
                }),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("crab_nat over IPv6 failed: {e}"))
    });
    let PortMappingType::Pcp { external_ip, .. } = m.mapping_type() else {
        panic!("expected PCP, got {:?}", m.mapping_type());
    };
    // A pinhole: the host's own address and port.
    assert_eq!(external_ip, IpAddr::V6(LAN_HOST6));
    assert_eq!(m.external_port().get(), 8080);
    assert!(
        tcp6_from(&lab, INET_HOST6, 8080, "lan6-tcp"),
        "TCP through the pinhole"
    );
    // A port that was never mapped stays closed.
    assert!(
        !tcp6_from(&lab, INET_HOST6, 8081, "lan6-never"),
        "an unmapped port is open"
    );

    in_ns_async(&lab.lan, move || async move {
        m.try_drop().await.map_err(|(e, _)| format!("drop: {e}"))
    })
    .unwrap();
    assert!(
        Lab::eventually(Duration::from_secs(2), || lab.mappings().is_empty()),
        "still listed after the delete"
    );
    assert!(
        !tcp6_from(&lab, INET_HOST6, 8080, "lan6-tcp"),
        "TCP still passes after the pinhole was deleted"
    );
}

#[test]
fn udp_pinhole_ends_at_its_lifetime() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), "pcp-min-lifetime = 2\n");
    let _srv = udp_echo_server(&lab.lan, sa6(LAN_HOST6, 9000), "lan6-udp");
    let r = map6(&lab, &Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 2));
    assert_eq!((r.lifetime, r.external_port), (2, 9000));
    assert_eq!(r.external_addr, IpAddr::V6(LAN_HOST6));
    assert!(udp6_from(&lab, INET_HOST6, 9000, "lan6-udp"));
    thread::sleep(Duration::from_millis(2600));
    assert!(lab.mappings().is_empty(), "{:?}", lab.mappings());
    assert!(
        !udp6_from(&lab, INET_HOST6, 9000, "lan6-udp"),
        "UDP passes after the pinhole's lifetime"
    );
}

#[test]
fn removing_a_pinhole_cuts_its_open_tcp_connection() {
    use std::io::{BufRead, BufReader, Write};
    let mut lab = Lab::new();
    lab.start_default();
    let listener = tcp_listener(&lab.lan, sa6(LAN_HOST6, 8443));
    // The LAN host answers every line of one connection.
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if w.write_all(format!("echo:{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    map6(&lab, &Request::map(LAN_HOST6, NONCE, pcp::TCP, 8443, 600));
    let conn = in_ns(&lab.inet, || {
        let s = std::net::TcpStream::connect_timeout(
            &SocketAddr::V6(SocketAddrV6::new(LAN_HOST6, 8443, 0, 0)),
            Duration::from_secs(2),
        )
        .expect("connect through the pinhole");
        s.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        s
    });
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    let mut line = String::new();
    w.write_all(b"one\n").unwrap();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "echo:one\n");

    pcp::ok(
        &lab.lan,
        LAN_HOST6,
        GW_LAN6,
        &Request::map(LAN_HOST6, NONCE, pcp::TCP, 8443, 0),
    );
    thread::sleep(Duration::from_millis(300));
    // Its conntrack entry is gone: the next segment is a new, unmarked flow, and the
    // operator's forward chain drops it.
    line.clear();
    let _ = w.write_all(b"two\n");
    let got = reader.read_line(&mut line);
    assert!(
        !matches!(got, Ok(n) if n > 0),
        "the open connection still carried data after its pinhole was removed: {line:?}"
    );
    drop((w, reader));
    let _ = server.join();
}

#[test]
fn filter_admits_only_the_listed_remote_over_ipv6() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = udp_echo_server(&lab.lan, sa6(LAN_HOST6, 9000), "lan6-udp");
    map6(
        &lab,
        &Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 600).filter(INET_HOST6, 128, 0),
    );
    assert!(
        udp6_from(&lab, INET_HOST6, 9000, "lan6-udp"),
        "the allowed peer"
    );
    assert!(
        !udp6_from(&lab, INET_HOST6_SECOND, 9000, "lan6-udp"),
        "a remote outside the FILTER got through"
    );
    let listed = lab.mappings();
    assert_eq!(
        listed[0]["src-address"],
        serde_json::json!(["2001:db8:ff::2/128"])
    );
    // Prefix length 0 clears the filters: the other remote gets through too.
    let mut clear = Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 600);
    clear.options = vec![3, 0, 0, 20, 0, 0, 0, 0];
    clear.options.extend_from_slice(&[0; 16]);
    map6(&lab, &clear);
    assert!(
        Lab::eventually(Duration::from_secs(2), || udp6_from(
            &lab,
            INET_HOST6_SECOND,
            9000,
            "lan6-udp"
        )),
        "after clearing the filters the other remote cannot get through"
    );
}

#[test]
fn peer_over_ipv6_opens_the_pinhole_for_that_peer_only() {
    let mut lab = Lab::new();
    lab.start_default();
    let peer = SocketAddrV6::new(INET_HOST6, 4000, 0, 0);
    let r = map6(
        &lab,
        &Request::peer(LAN_HOST6, NONCE, pcp::UDP, 9100, peer, 600),
    );
    assert_eq!(
        (r.external_addr, r.external_port),
        (IpAddr::V6(LAN_HOST6), 9100)
    );
    assert_eq!(r.remote, Some(SocketAddr::V6(peer)));
    let lan_sock = udp_socket(&lab.lan, sa6(LAN_HOST6, 9100));
    let peer_sock = udp_socket(&lab.inet, SocketAddr::V6(peer));
    peer_sock
        .send_to(b"from-peer", sa6(LAN_HOST6, 9100))
        .unwrap();
    let (b, from) = recv(&lan_sock).expect("the peer's datagram did not arrive");
    assert_eq!(
        (b.as_slice(), from),
        (&b"from-peer"[..], SocketAddr::V6(peer))
    );
    let stranger = udp_socket(&lab.inet, sa6(INET_HOST6, 4001));
    stranger.send_to(b"stranger", sa6(LAN_HOST6, 9100)).unwrap();
    assert!(
        recv(&lan_sock).is_none(),
        "another remote port got through the PEER pinhole"
    );
    let other_host = udp_socket(&lab.inet, sa6(INET_HOST6_SECOND, 4000));
    other_host.send_to(b"other", sa6(LAN_HOST6, 9100)).unwrap();
    assert!(
        recv(&lan_sock).is_none(),
        "another remote host got through the PEER pinhole"
    );
}

/// A socket on lan's eth0 that hears [ff02::1]:5350.
fn all_nodes_listener(ns: &str) -> UdpSocket {
    in_ns(ns, || {
        let index = nix::net::if_::if_nametoindex("eth0").expect("eth0");
        let s = UdpSocket::bind("[::]:5350").expect("bind [::]:5350");
        let _ = s.join_multicast_v6(&"ff02::1".parse().unwrap(), index);
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    })
}

#[test]
fn startup_announce_is_heard_on_ff02_1_from_the_link_local_address() {
    let mut lab = Lab::new();
    let sock = all_nodes_listener(&lab.lan);
    let until = Instant::now() + Duration::from_millis(1400);
    let collector = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 200];
        while Instant::now() < until {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                got.push((Instant::now(), buf[..n].to_vec(), from));
            }
        }
        got
    });
    lab.spawn_daemon(&DaemonConfig::default());
    let got = collector.join().unwrap();
    assert!(
        got.len() >= 3,
        "want 3 copies in 1.4 s, got {got:?}\n{}",
        lab.daemon_log()
    );
    for (_, b, from) in &got {
        assert_eq!(b.len(), 24, "{b:02x?}");
        assert_eq!(&b[..8], &[2, 0x80, 0, 0, 0, 0, 0, 0], "{b:02x?}");
        let SocketAddr::V6(from) = from else {
            panic!("IPv4 source {from}")
        };
        assert_eq!(from.port(), NATPMP_PORT);
        assert_eq!(
            from.ip().segments()[0],
            0xfe80,
            "sent from the link-local address: {from}"
        );
    }
    let gap = (got[1].0 - got[0].0).as_secs_f64();
    assert!((0.15..=0.45).contains(&gap), "first gap {gap:.3}");
}

#[test]
fn requests_from_the_wan_side_get_nothing() {
    let mut lab = Lab::new();
    lab.start_default();
    for gw in [GW_EXT6, GW_LAN6] {
        let request = Request::map(INET_HOST6, NONCE, pcp::UDP, 9000, 600);
        let (r, _) = pcp::exchange(&lab.inet, INET_HOST6, gw, &request);
        assert!(
            r.is_none(),
            "a request from the WAN side to {gw} was answered: {r:?}"
        );
    }
    let v4 = Request::map(INET_HOST, NONCE, pcp::UDP, 9000, 600);
    let (r, _) = pcp::exchange(&lab.inet, INET_HOST, GW_EXT, &v4);
    assert!(
        r.is_none(),
        "an IPv4 request from the WAN side was answered: {r:?}"
    );
    assert!(lab.mappings().is_empty());
}

#[test]
fn link_local_clients_are_served_but_get_no_pinhole() {
    let mut lab = Lab::new();
    lab.start_default();
    let lan_ll = in_ns(&lab.lan, || link_local_of("eth0"));
    let gw_ll = in_ns(&lab.gw, || link_local_of("ether2"));
    let index = in_ns(&lab.lan, || nix::net::if_::if_nametoindex("eth0").unwrap());
    let sock = in_ns(&lab.lan, move || {
        let s = UdpSocket::bind(SocketAddrV6::new(lan_ll, 0, 0, index)).unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        s
    });
    let to = SocketAddr::V6(SocketAddrV6::new(gw_ll, NATPMP_PORT, 0, index));
    let mut announce = vec![2u8, 0, 0, 0, 0, 0, 0, 0];
    announce.extend_from_slice(&lan_ll.octets());
    sock.send_to(&announce, to).unwrap();
    let (b, from) = recv(&sock).expect("no reply to an ANNOUNCE over link-local");
    assert_eq!(
        from.ip(),
        IpAddr::V6(gw_ll),
        "the reply leaves from the address asked"
    );
    assert_eq!(&b[..4], &[2, 0x80, 0, 0], "{b:02x?}");
    let map = Request::map(lan_ll, NONCE, pcp::UDP, 9000, 600);
    sock.send_to(&map.bytes(), to).unwrap();
    let (b, _) = recv(&sock).expect("no reply to a MAP over link-local");
    assert_eq!(pcp::parse(&b).result, pcp::NOT_AUTHORIZED);
    assert!(lab.mappings().is_empty());
}

fn link_local_of(iface: &str) -> Ipv6Addr {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter(|i| i.interface_name == iface)
        .filter_map(|i| i.address.and_then(|a| a.as_sockaddr_in6().map(|a| a.ip())))
        .find(|a| a.segments()[0] == 0xfe80)
        .unwrap_or_else(|| panic!("{iface} has no link-local address"))
}

#[test]
fn pinholes_print_as_ipv6_forward_rules_and_survive_restart_and_flush() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = udp_echo_server(&lab.lan, sa6(LAN_HOST6, 9000), "lan6-udp");
    map6(
        &lab,
        &Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 600).description("game"),
    );
    let text = lab.natpmpctl(&["print"]).ok().stdout;
    assert!(
        text.contains(";;; nat-pmp 2001:db8:1::10: game\n"),
        "{text}"
    );
    assert!(
        text.contains("chain=forward action=accept protocol=udp dst-address=2001:db8:1::10 in-interface=ether1 dst-port=9000 "),
        "{text}"
    );
    assert_eq!(lab.mappings()[0]["family"], "ipv6");

    lab.stop_daemon(Duration::from_secs(5)).expect("stop");
    lab.respawn_daemon();
    lab.wait_ready();
    assert!(
        Lab::eventually(Duration::from_secs(3), || udp6_from(
            &lab, INET_HOST6, 9000, "lan6-udp"
        )),
        "the pinhole did not come back after a restart"
    );
    nft_in(&lab.gw, &["flush", "ruleset"]).ok();
    lab.reload_lab_rules();
    assert!(
        Lab::eventually(Duration::from_secs(4), || udp6_from(
            &lab, INET_HOST6, 9000, "lan6-udp"
        )),
        "the pinhole did not come back after `nft flush ruleset`\n{}",
        lab.daemon_log()
    );
}

#[test]
fn kill_9_then_start_restores_a_filtered_pinhole_from_the_lease_file_alone() {
    // A crash, then the table lost too (a firewall reload): the lease file alone brings the
    // pinhole back with its FILTER and its nonce.
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = udp_echo_server(&lab.lan, sa6(LAN_HOST6, 9000), "lan6-udp");
    let request = Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 3600).filter(INET_HOST6, 128, 0);
    map6(&lab, &request);
    assert!(udp6_from(&lab, INET_HOST6, 9000, "lan6-udp"));
    assert!(
        Lab::eventually(Duration::from_secs(3), || std::fs::read_to_string(
            lab.lease_path()
        )
        .is_ok_and(|t| t.contains("2001:db8:1::10"))),
        "the lease file did not get the pinhole"
    );
    lab.kill_daemon_hard().expect("kill -9");
    nft_in(&lab.gw, &["delete", "table", "inet", "natpmpd"]).ok();
    assert!(
        !udp6_from(&lab, INET_HOST6, 9000, "lan6-udp"),
        "traffic passed with natpmpd's table gone"
    );
    lab.respawn_daemon();
    lab.wait_ready();
    assert!(
        Lab::eventually(Duration::from_secs(3), || udp6_from(
            &lab, INET_HOST6, 9000, "lan6-udp"
        )),
        "the pinhole did not come back from the lease file\n{}",
        lab.daemon_log()
    );
    assert!(
        !udp6_from(&lab, INET_HOST6_SECOND, 9000, "lan6-udp"),
        "the restored pinhole lost its FILTER"
    );
    // The nonce still owns it: another nonce cannot delete it, the owner can.
    let other = Request::map(LAN_HOST6, NONCE ^ 0xFF, pcp::UDP, 9000, 0);
    let (r, _) = pcp::exchange(&lab.lan, LAN_HOST6, GW_LAN6, &other);
    assert_eq!(r.expect("a reply").result, pcp::NOT_AUTHORIZED);
    map6(&lab, &Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 0));
    assert!(
        Lab::eventually(Duration::from_secs(2), || !udp6_from(
            &lab, INET_HOST6, 9000, "lan6-udp"
        )),
        "traffic still passes after the owner's delete"
    );
}

#[test]
fn pinholes_of_a_prefix_that_goes_away_are_removed() {
    let mut lab = Lab::new();
    lab.start_default();
    map6(&lab, &Request::map(LAN_HOST6, NONCE, pcp::UDP, 9000, 600));
    assert_eq!(lab.mappings().len(), 1);
    ip_n(
        &lab.gw,
        &["-6", "addr", "del", "2001:db8:1::1/64", "dev", "ether2"],
    );
    assert!(
        Lab::eventually(Duration::from_secs(3), || lab.mappings().is_empty()),
        "the pinhole of a prefix no longer on-link is still listed"
    );
    assert!(
        lab.daemon_log()
            .contains("2001:db8:1::10 is no longer on-link"),
        "{}",
        lab.daemon_log()
    );
}

#[test]
fn ipv4_forwarding_passes_the_operators_drop_policy_with_the_contract_rule_alone() {
    let mut lab = Lab::new();
    lab.start_default();
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let m = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    let to = SocketAddrV4::new(GW_EXT, m.public_port);
    assert!(tcp_probe(&lab.inet, to, "lan-tcp", Duration::from_secs(2)));
    // Without the contract rule, the operator's drop policy stops the forward: the rule is
    // what lets natpmpd's connections in, and nothing else does.
    let without = operator_ruleset().replace(
        &format!("ct mark & {CONNECTION_MARK:#010x} == {CONNECTION_MARK:#010x} accept"),
        "",
    );
    assert_ne!(without, operator_ruleset());
    let file = lab.dir.join("no-contract.nft");
    std::fs::write(
        &file,
        format!("table inet lab {{}}\ndelete table inet lab\n{without}"),
    )
    .unwrap();
    nft_in(&lab.gw, &["-f", file.to_str().unwrap()]).ok();
    assert!(
        !tcp_probe(&lab.inet, to, "lan-tcp", Duration::from_secs(1)),
        "the forward passed the drop policy without the contract rule"
    );
    lab.reload_lab_rules();
    assert!(
        Lab::eventually(Duration::from_secs(2), || tcp_probe(
            &lab.inet,
            to,
            "lan-tcp",
            Duration::from_millis(500)
        )),
        "the forward does not pass with the contract rule back"
    );
}
