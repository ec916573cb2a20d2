//! End-to-end: mappings survive a restart of the real daemon through the lease file.
//!
//! - SIGTERM then start: live TCP and UDP mappings come back with the same external ports,
//!   into natpmpctl and the kernel, and real traffic passes before and after; the epoch goes
//!   on; a short-lived mapping that expired while the daemon was down stays gone; the table is
//!   removed during the stop (keep-forwards-on-exit defaults to false).
//! - `kill -9` then start: the lease file written within ~1 s of the change brings the
//!   mappings back; with the kernel table gone too, the epoch restarts (core
//!   gateway/recovery.rs), with the table still there it goes on.
//! - a corrupt or truncated lease file: one log line and a clean start.
//! - keep-forwards-on-exit = true: the table and its elements stay while the daemon is down,
//!   with kernel timeouts equal to the remaining lifetimes (+2 s).
//!
//! Restart-to-forwarding (spawn of the new daemon -> first TCP connect through a restored
//! mapping, polled every 20 ms) is measured and printed.

use std::net::SocketAddrV4;
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

/// Polls a TCP connect through `ext` every 20 ms from inet until it round-trips; returns the
/// time since `t0`.
fn time_to_forwarding(lab: &Lab, t0: Instant, ext: u16, tag: &str) -> Duration {
    let deadline = t0 + Duration::from_secs(10);
    loop {
        if tcp_probe(
            &lab.inet,
            SocketAddrV4::new(GW_EXT, ext),
            tag,
            Duration::from_millis(300),
        ) {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "TCP through restored port {ext} did not pass within 10 s of the restart"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn mapping<'a>(
    maps: &'a [serde_json::Value],
    proto: &str,
    ext: u16,
) -> Option<&'a serde_json::Value> {
    maps.iter()
        .find(|e| e["dst-port"] == ext && e["protocol"] == proto)
}

fn lease_file_mappings(lab: &Lab) -> Option<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(lab.lease_path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("mappings")?.as_array().cloned()
}

fn table_present(lab: &Lab) -> bool {
    lab.gw_tables().contains("table inet natpmpd")
}

/// Parses an nft duration such as `9m58s`, `1h`, `59m59s880ms`, `2d3h`.
fn nft_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'd' => 86400.0,
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += n * unit;
        any = true;
    }
    (any && num.is_empty()).then(|| Duration::from_secs_f64(total))
}

/// `(timeout, expires)` of the inbound element for `proto . ext`, from `nft list map`.
fn element_timeouts(map: &str, proto: &str, ext: u16) -> Option<(Duration, Duration)> {
    let e = map
        .split([',', '{', '}', '\n'])
        .map(str::trim)
        .find(|e| e.starts_with(&format!("{proto} . {ext} ")))?;
    let w: Vec<&str> = e.split_whitespace().collect();
    let after = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .and_then(|d| nft_duration(d))
    };
    Some((after("timeout")?, after("expires")?))
}

#[test]
fn nft_duration_parses() {
    assert_eq!(nft_duration("9m58s"), Some(Duration::from_secs(598)));
    assert_eq!(nft_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(
        nft_duration("1d2h3m4s500ms"),
        Some(Duration::from_millis(93_784_500))
    );
    assert_eq!(nft_duration("x"), None);
}

#[test]
fn sigterm_then_start_restores_ports_lifetimes_epoch_and_traffic() {
    let mut lab = Lab::new();
    lab.start_default();
    let _tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let _udp_srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");

    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600);
    let udp = natpmpc_map(&lab.lan, GW_LAN, 40090, 9000, Proto::Udp, 3600);
    let short = natpmpc_map(&lab.lan, GW_LAN, 40091, 9001, Proto::Udp, 3);
    assert!(
        tcp_probe(
            &lab.inet,
            SocketAddrV4::new(GW_EXT, tcp.public_port),
            "lan-tcp",
            Duration::from_secs(2)
        ),
        "TCP through {} did not pass before the restart",
        tcp.public_port
    );
    assert!(
        udp_passes(&lab, udp.public_port, "lan-udp"),
        "UDP through {} did not pass before the restart",
        udp.public_port
    );

    // Let the epoch grow so "continues" and "restarted at 0" can be told apart.
    thread::sleep(Duration::from_millis(2500));
    let (res, epoch_before, addr) = lab.address_request().expect("address request before stop");
    assert_eq!((res, addr), (0, GW_EXT));
    let stopped_at = Instant::now();
    let st = lab
        .stop_daemon(Duration::from_secs(5))
        .expect("natpmpd did not exit within 5 s of SIGTERM");
    assert!(st.success(), "natpmpd exited with {st} on SIGTERM");
    assert!(
        !table_present(&lab),
        "table inet natpmpd left behind after SIGTERM:\n{}",
        lab.gw_tables()
    );
    let saved = lease_file_mappings(&lab).expect("no readable lease file after SIGTERM");
    assert!(
        saved.iter().any(|m| m["external_port"] == tcp.public_port)
            && saved.iter().any(|m| m["external_port"] == udp.public_port),
        "the lease file lacks the live mappings: {saved:?}"
    );

    // Stay down long enough for the 3 s mapping to expire.
    thread::sleep(Duration::from_millis(3500));
    let down = stopped_at.elapsed();
    let t0 = lab.respawn_daemon();
    let took = time_to_forwarding(&lab, t0, tcp.public_port, "lan-tcp");
    eprintln!(
        "MEASURE restart-to-forwarding (SIGTERM, table removed): {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    lab.wait_ready();

    // Same ports, in the engine, natpmpctl and the kernel; the expired one is gone.
    let maps = lab.mappings();
    let t = mapping(&maps, "tcp", tcp.public_port)
        .unwrap_or_else(|| panic!("tcp mapping not restored: {maps:?}"));
    assert_eq!(t["to-addresses"], "192.168.88.10", "{t}");
    assert_eq!(t["to-ports"], 8080, "{t}");
    let left = t["lifetime-left"].as_u64().unwrap();
    assert!(
        left <= 3600 - down.as_secs() && left >= 3600 - down.as_secs() - 15,
        "lifetime-left {left} after {down:?} down"
    );
    assert!(
        mapping(&maps, "udp", udp.public_port).is_some(),
        "udp mapping not restored: {maps:?}"
    );
    assert!(
        mapping(&maps, "udp", short.public_port).is_none(),
        "the 3 s mapping came back: {maps:?}"
    );
    let map = lab.inbound_map();
    assert!(
        inbound_map_has(&map, "tcp", tcp.public_port, "192.168.88.10 . 8080"),
        "{map}"
    );
    assert!(
        inbound_map_has(&map, "udp", udp.public_port, "192.168.88.10 . 9000"),
        "{map}"
    );
    assert!(
        !inbound_map_has(&map, "udp", short.public_port, "192.168.88.10 . 9001"),
        "{map}"
    );
    assert!(
        lab.daemon_log().contains("1 expired while stopped"),
        "log:\n{}",
        lab.daemon_log()
    );

    // Epoch continues: saved value + downtime (RFC 6886 §3.6 lets clients see no reset).
    let (res, epoch_after, addr) = lab
        .address_request()
        .expect("address request after restart");
    assert_eq!((res, addr), (0, GW_EXT));
    let expect_min = epoch_before + down.as_secs() as u32;
    assert!(
        epoch_after + 1 >= expect_min && epoch_after <= expect_min + 4,
        "epoch after restart {epoch_after}, before stop {epoch_before}, down {down:?}: should continue"
    );

    // Traffic both ways after the restart; renewals keep the same port.
    assert!(
        udp_passes(&lab, udp.public_port, "lan-udp"),
        "UDP through {} did not pass after restart",
        udp.public_port
    );
    let renewed = natpmpc_map(&lab.lan, GW_LAN, 0, 8080, Proto::Tcp, 3600);
    assert_eq!(
        renewed.public_port, tcp.public_port,
        "renewal after restart moved the port"
    );
}

#[test]
fn kill_9_then_start_restores_from_the_lease_file() {
    let mut lab = Lab::new();
    lab.start_default();
    let _tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let _udp_srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40180, 8080, Proto::Tcp, 3600);
    let udp = natpmpc_map(&lab.lan, GW_LAN, 40190, 9000, Proto::Udp, 3600);
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, tcp.public_port),
        "lan-tcp",
        Duration::from_secs(2)
    ));
    assert!(udp_passes(&lab, udp.public_port, "lan-udp"));

    // The file follows within ~1 s of the change.
    let written = Instant::now();
    assert!(
        Lab::eventually(Duration::from_secs(3), || lease_file_mappings(&lab)
            .is_some_and(|m| m.len() == 2)),
        "the lease file did not hold both mappings within 3 s: {:?}",
        std::fs::read_to_string(lab.lease_path())
    );
    eprintln!(
        "MEASURE lease file written within {:.0} ms of the last mapping (poll 100 ms)",
        written.elapsed().as_secs_f64() * 1e3
    );
    let (_, epoch_before, _) = lab.address_request().unwrap();
    let killed_at = Instant::now();
    lab.kill_daemon_hard().expect("kill -9");
    // A crash leaves the kernel table; a reboot or firewall reload would lose it. Remove it so
    // the restart has to rebuild everything from the lease file alone.
    assert!(
        table_present(&lab),
        "after kill -9 the table should still be there"
    );
    nft_in(&lab.gw, &["delete", "table", "inet", "natpmpd"]).ok();
    thread::sleep(Duration::from_millis(1000));

    let t0 = lab.respawn_daemon();
    let took = time_to_forwarding(&lab, t0, tcp.public_port, "lan-tcp");
    eprintln!(
        "MEASURE restart-to-forwarding (kill -9, table lost): {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    lab.wait_ready();
    let maps = lab.mappings();
    assert!(mapping(&maps, "tcp", tcp.public_port).is_some(), "{maps:?}");
    assert!(mapping(&maps, "udp", udp.public_port).is_some(), "{maps:?}");
    assert!(
        udp_passes(&lab, udp.public_port, "lan-udp"),
        "UDP did not pass after kill -9 + start"
    );
    // A crash that also lost the kernel table: what was acknowledged since the last lease
    // save cannot be known, so the epoch restarts (core gateway/recovery.rs) and clients
    // re-create their mappings; the leased ones are back already.
    let (_, epoch_after, _) = lab.address_request().unwrap();
    let down = killed_at.elapsed().as_secs() as u32;
    assert!(
        epoch_after < epoch_before + down && epoch_after <= 3,
        "epoch after crash+restart {epoch_after}, before {epoch_before}, down ~{down}s: it should restart"
    );
    assert!(
        lab.daemon_log().contains("kernel table is gone"),
        "{}",
        lab.daemon_log()
    );
}

#[test]
fn kill_9_then_start_on_top_of_the_surviving_table() {
    let mut lab = Lab::new();
    lab.start_default();
    let _tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40280, 8080, Proto::Tcp, 3600);
    assert!(Lab::eventually(Duration::from_secs(3), || {
        lease_file_mappings(&lab).is_some_and(|m| m.len() == 1)
    }));
    lab.kill_daemon_hard().expect("kill -9");
    let t0 = lab.respawn_daemon();
    let took = time_to_forwarding(&lab, t0, tcp.public_port, "lan-tcp");
    eprintln!(
        "MEASURE restart-to-forwarding (kill -9, table survived): {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    lab.wait_ready();
    // Once the new daemon has loaded its table, the forward is still there (exactly once).
    let map = lab.inbound_map();
    assert_eq!(
        map.matches(&format!("tcp . {} ", tcp.public_port)).count(),
        1,
        "{map}"
    );
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, tcp.public_port),
        "lan-tcp",
        Duration::from_secs(2)
    ));
}

#[test]
fn corrupt_or_truncated_lease_file_gives_a_clean_start() {
    let mut lab = Lab::new();
    lab.start_default();
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40380, 8080, Proto::Tcp, 3600);
    thread::sleep(Duration::from_millis(2200));
    lab.stop_daemon(Duration::from_secs(5)).expect("stop");
    let whole = std::fs::read(lab.lease_path()).expect("lease file after SIGTERM");

    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("garbage", b"\xff\x00 not json at all".to_vec()),
    ] {
        std::fs::write(lab.lease_path(), &bytes).unwrap();
        let before = lab
            .daemon_log()
            .matches("not a valid natpmpd lease file")
            .count();
        lab.respawn_daemon();
        lab.wait_ready();
        assert!(
            lab.wait_log_count(
                "not a valid natpmpd lease file",
                before + 1,
                Duration::from_secs(3)
            ),
            "{what}: no 'not a valid natpmpd lease file' log line:\n{}",
            lab.daemon_log()
        );
        lab.assert_daemon_running();
        assert!(
            lab.mappings().is_empty(),
            "{what}: mappings from a corrupt file: {:?}",
            lab.mappings()
        );
        let map = lab.inbound_map();
        assert!(
            !map.contains(&format!("tcp . {} ", tcp.public_port)),
            "{what}: {map}"
        );
        let (res, epoch, addr) = lab.address_request().unwrap();
        assert_eq!((res, addr), (0, GW_EXT), "{what}");
        assert!(
            epoch <= 3,
            "{what}: epoch {epoch} should restart at 0 when state was lost"
        );
        // And it works normally.
        let m = natpmpc_map(&lab.lan, GW_LAN, 0, 8081, Proto::Tcp, 600);
        let srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8081), "fresh");
        assert!(
            tcp_probe(
                &lab.inet,
                SocketAddrV4::new(GW_EXT, m.public_port),
                "fresh",
                Duration::from_secs(2)
            ),
            "{what}"
        );
        drop(srv);
        lab.stop_daemon(Duration::from_secs(5)).expect("stop");
    }
}

#[test]
fn keep_forwards_on_exit_keeps_table_and_elements_while_stopped() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), "keep-forwards-on-exit = true\n");
    let _tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40480, 8080, Proto::Tcp, 600);
    let st = lab
        .stop_daemon(Duration::from_secs(5))
        .expect("natpmpd did not exit on SIGTERM");
    assert!(st.success(), "{st}");
    assert!(
        table_present(&lab),
        "keep-forwards-on-exit: the table was removed:\n{}",
        lab.gw_tables()
    );
    let map = lab.inbound_map();
    assert!(
        inbound_map_has(&map, "tcp", tcp.public_port, "192.168.88.10 . 8080"),
        "{map}"
    );
    let (timeout, expires) = element_timeouts(&map, "tcp", tcp.public_port)
        .unwrap_or_else(|| panic!("no timeout/expires on the kept element:\n{map}"));
    // Remaining lifetime (~600 s) + 2 s.
    assert!(
        (Duration::from_secs(595)..=Duration::from_secs(603)).contains(&timeout)
            && expires <= timeout
            && expires >= Duration::from_secs(594),
        "kept element timeout {timeout:?} expires {expires:?}, want ~602 s:\n{map}"
    );
    // Traffic still passes while no daemon runs.
    assert!(
        tcp_probe(
            &lab.inet,
            SocketAddrV4::new(GW_EXT, tcp.public_port),
            "lan-tcp",
            Duration::from_secs(2)
        ),
        "the kept forward does not pass traffic while natpmpd is stopped"
    );
    thread::sleep(Duration::from_millis(500));
    let t0 = lab.respawn_daemon();
    let took = time_to_forwarding(&lab, t0, tcp.public_port, "lan-tcp");
    eprintln!(
        "MEASURE restart-to-forwarding (keep-forwards-on-exit): {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    lab.wait_ready();
    let maps = lab.mappings();
    assert!(mapping(&maps, "tcp", tcp.public_port).is_some(), "{maps:?}");
    let map = lab.inbound_map();
    assert_eq!(
        map.matches(&format!("tcp . {} ", tcp.public_port)).count(),
        1,
        "{map}"
    );
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, tcp.public_port),
        "lan-tcp",
        Duration::from_secs(2)
    ));
}
