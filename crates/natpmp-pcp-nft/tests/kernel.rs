//! Tests against the real kernel. They need root (CI runs as root) and fail, never skip,
//! without it.
//!
//! Isolation: every test runs its body in a fresh thread that first calls
//! `unshare(CLONE_NEWNET)`. That thread alone moves into a new, anonymous network namespace,
//! which the kernel discards when the thread ends; the netlink sockets it opens and the `nft`
//! and `ip` processes it spawns live there too. Nothing here touches the host's namespace.

use natpmp_pcp_core::forward::{Change, Forward, Protocol};
use natpmp_pcp_nft::{ForwardError, Forwarder, Health, NftForwarder};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

#[path = "support/netns.rs"]
mod netns;
use netns::{gateway_with_hosts, run, Host};

const EXT: &str = "wan0";

/// Run `body` in a thread of its own, in a new network namespace.
fn in_netns<F: FnOnce() + Send + 'static>(body: F) {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare only changes the calling thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed ({}): these tests must run as root",
            std::io::Error::last_os_error()
        );
        body();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn nft(args: &str) -> String {
    run("nft", &args.split_whitespace().collect::<Vec<_>>())
}

fn nft_script(script: &str) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed: {script}");
}

fn fwd(protocol: Protocol, ext_port: u16, host: u8, int_port: u16, secs: u64) -> Forward {
    Forward {
        protocol,
        external_addr: Ipv4Addr::new(203, 0, 113, 1),
        external_port: ext_port,
        internal_addr: Ipv4Addr::new(192, 168, 88, host),
        internal_port: int_port,
        timeout: Duration::from_secs(secs),
    }
}

fn sorted(mut v: Vec<Forward>) -> Vec<Forward> {
    v.sort_by_key(|f| (f.protocol, f.external_port));
    v
}

/// `list()` reports time left; compare everything but the timeout.
fn same_set(listed: &[Forward], expected: &[Forward]) -> bool {
    let l = sorted(listed.to_vec());
    let e = sorted(expected.to_vec());
    l.len() == e.len() && l.iter().zip(&e).all(|(a, b)| a.same_elements(b))
}

fn ready() -> NftForwarder {
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(EXT).expect("prepare");
    f
}

#[test]
fn prepare_loads_the_table() {
    in_netns(|| {
        let mut f = ready();
        let text = nft("list table ip natpmpd");
        assert!(text.contains("map inbound"), "{text}");
        assert!(text.contains("map outbound"), "{text}");
        assert!(
            text.contains("iifname \"wan0\" dnat ip to meta l4proto . th dport map @inbound"),
            "{text}"
        );
        assert!(
            text.contains(
                "oifname \"wan0\" snat ip to ip saddr . meta l4proto . th sport map @outbound"
            ),
            "{text}"
        );
        assert!(text.contains("priority srcnat - 1"), "{text}");
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

#[test]
fn prepare_refuses_an_unsafe_interface_name() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        let err = f.prepare("eth0\" accept").unwrap_err();
        assert!(matches!(err, ForwardError::InvalidInterface(_)), "{err}");
        // Nothing was loaded.
        assert!(!nft("list tables").contains("natpmpd"));
    });
}

#[test]
fn prepare_twice_replaces_the_table() {
    in_netns(|| {
        let mut f = ready();
        f.apply(&[Change::Add(fwd(Protocol::Udp, 4000, 2, 4000, 60))])
            .unwrap();
        assert_eq!(f.list().unwrap().len(), 1);
        f.prepare("wan1").unwrap();
        let text = nft("list ruleset");
        assert_eq!(text.matches("table ip natpmpd").count(), 1, "{text}");
        assert_eq!(text.matches("chain prerouting").count(), 1, "{text}");
        assert!(text.contains("iifname \"wan1\""), "{text}");
        assert!(!text.contains("wan0"), "{text}");
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

#[test]
fn apply_adds_elements_visible_to_nft_and_list() {
    in_netns(|| {
        let mut f = ready();
        let a = fwd(Protocol::Tcp, 8080, 2, 80, 600);
        let b = fwd(Protocol::Udp, 5353, 9, 53, 600);
        f.apply(&[Change::Add(a), Change::Add(b)]).unwrap();
        let inbound = nft("list map ip natpmpd inbound");
        assert!(inbound.contains("tcp . 8080"), "{inbound}");
        assert!(inbound.contains("192.168.88.2 . 80"), "{inbound}");
        assert!(inbound.contains("udp . 5353"), "{inbound}");
        assert!(inbound.contains("192.168.88.9 . 53"), "{inbound}");
        let outbound = nft("list map ip natpmpd outbound");
        assert!(
            outbound.contains("192.168.88.2 . tcp . 80") && outbound.contains("203.0.113.1 . 8080"),
            "{outbound}"
        );
        let listed = f.list().unwrap();
        assert!(same_set(&listed, &[a, b]), "{listed:?}");
        for l in &listed {
            assert!(
                l.timeout <= Duration::from_secs(600) && l.timeout > Duration::from_secs(590),
                "time left {:?}",
                l.timeout
            );
        }
    });
}

#[test]
fn renewal_updates_the_timeout() {
    in_netns(|| {
        let mut f = ready();
        let short = fwd(Protocol::Udp, 4000, 2, 4000, 30);
        f.apply(&[Change::Add(short)]).unwrap();
        let long = Forward {
            timeout: Duration::from_secs(3600),
            ..short
        };
        f.apply(&[Change::Remove(short), Change::Add(long)])
            .unwrap();
        let listed = f.list().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(
            listed[0].timeout > Duration::from_secs(3500),
            "{:?}",
            listed[0].timeout
        );
        let text = nft("list map ip natpmpd inbound");
        assert!(text.contains("timeout 1h"), "{text}");
    });
}

#[test]
fn a_bad_change_fails_the_whole_transaction() {
    in_netns(|| {
        let mut f = ready();
        let kept = fwd(Protocol::Udp, 4000, 2, 4000, 60);
        f.apply(&[Change::Add(kept)]).unwrap();
        let new = fwd(Protocol::Tcp, 8080, 3, 80, 60);
        let missing = fwd(Protocol::Udp, 9999, 4, 9999, 60);
        let err = f
            .apply(&[
                Change::Remove(kept),
                Change::Add(new),
                Change::Remove(missing),
            ])
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ForwardError::Kernel(_)), "{text}");
        assert!(text.contains("change #2"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        // Nothing changed: `kept` is still there, `new` never appeared.
        assert!(same_set(&f.list().unwrap(), &[kept]));
        // A duplicate add is refused the same way.
        let err = f.apply(&[Change::Add(kept)]).unwrap_err();
        assert!(err.to_string().contains("File exists"), "{err}");
        // And the forwarder still works afterwards.
        f.apply(&[Change::Add(new)]).unwrap();
        assert!(same_set(&f.list().unwrap(), &[kept, new]));
    });
}

#[test]
fn apply_without_the_table_fails_cleanly() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        let err = f
            .apply(&[Change::Add(fwd(Protocol::Udp, 1, 2, 1, 60))])
            .unwrap_err();
        assert!(matches!(err, ForwardError::Kernel(_)), "{err}");
        assert!(matches!(f.list(), Err(ForwardError::Kernel(_))));
    });
}

#[test]
fn teardown_removes_the_table_and_leaves_others_alone() {
    in_netns(|| {
        nft_script(
            "table ip operator {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"wan0\" masquerade\n }\n}\n",
        );
        let before = nft("list table ip operator");
        let mut f = ready();
        f.apply(&[Change::Add(fwd(Protocol::Tcp, 22, 2, 22, 60))])
            .unwrap();
        f.prepare(EXT).unwrap();
        assert_eq!(nft("list table ip operator"), before);
        f.teardown().unwrap();
        let tables = nft("list tables");
        assert!(!tables.contains("natpmpd"), "{tables}");
        assert!(tables.contains("table ip operator"), "{tables}");
        assert_eq!(nft("list table ip operator"), before);
        // Tearing down twice is fine.
        f.teardown().unwrap();
    });
}

#[test]
fn two_thousand_elements_in_one_apply() {
    in_netns(|| {
        let mut f = ready();
        let many: Vec<Forward> = (0..2000u16)
            .map(|i| {
                let mut x = fwd(Protocol::Udp, 10000 + i, 2, 20000 + i, 600);
                x.internal_addr = Ipv4Addr::new(192, 168, 88, 2 + (i % 200) as u8);
                x
            })
            .collect();
        let adds: Vec<Change> = many.iter().copied().map(Change::Add).collect();
        f.apply(&adds).unwrap();
        let listed = f.list().unwrap();
        assert!(same_set(&listed, &many), "listed {}", listed.len());
        let text = nft("list map ip natpmpd inbound");
        assert_eq!(text.matches("udp . ").count(), 2000);
        // And all of them go again in one transaction.
        let removes: Vec<Change> = many.iter().copied().map(Change::Remove).collect();
        f.apply(&removes).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

/// Whether conntrack has an entry for UDP flows with `port` as either port.
fn conntrack_has(f: &mut NftForwarder, port: u16) -> bool {
    f.conntrack_entries()
        .unwrap()
        .iter()
        .any(|e| e.orig.sport == port || e.orig.dport == port)
}

#[test]
fn removing_a_forward_deletes_its_conntrack_entries() {
    in_netns(|| {
        run("ip", &["link", "set", "lo", "up"]);
        // Our nat chains make the kernel track connections in this namespace.
        let mut f = ready();
        let lo = Ipv4Addr::LOCALHOST;
        // Over lo nothing is translated, so a flow "belongs" to a forward whose internal and
        // external ports are equal: outbound from 127.0.0.1:40000, inbound to 127.0.0.1:40001,
        // and an unrelated flow that must survive.
        let out_fwd = Forward {
            internal_addr: lo,
            external_addr: lo,
            ..fwd(Protocol::Udp, 40000, 0, 40000, 600)
        };
        let in_fwd = Forward {
            internal_addr: lo,
            external_addr: lo,
            ..fwd(Protocol::Udp, 40001, 0, 40001, 600)
        };
        f.apply(&[Change::Add(out_fwd), Change::Add(in_fwd)])
            .unwrap();

        let client = UdpSocket::bind((lo, 40000)).unwrap();
        client.send_to(b"x", (lo, 9)).unwrap();
        let server = UdpSocket::bind((lo, 40001)).unwrap();
        let remote = UdpSocket::bind((lo, 0)).unwrap();
        remote.send_to(b"y", (lo, 40001)).unwrap();
        let mut buf = [0u8; 8];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"z", from).unwrap();
        let bystander = UdpSocket::bind((lo, 40002)).unwrap();
        bystander.send_to(b"w", (lo, 9)).unwrap();

        assert!(
            conntrack_has(&mut f, 40000),
            "no entry for the outbound flow"
        );
        assert!(
            conntrack_has(&mut f, 40001),
            "no entry for the inbound flow"
        );
        assert!(conntrack_has(&mut f, 40002));

        // A renewal keeps the flows.
        f.apply(&[Change::Remove(out_fwd), Change::Add(out_fwd)])
            .unwrap();
        assert!(conntrack_has(&mut f, 40000), "a renewal ended a flow");

        f.apply(&[Change::Remove(out_fwd), Change::Remove(in_fwd)])
            .unwrap();
        assert!(!conntrack_has(&mut f, 40000), "outbound flow survived");
        assert!(!conntrack_has(&mut f, 40001), "inbound flow survived");
        assert!(
            conntrack_has(&mut f, 40002),
            "an unrelated flow was deleted"
        );
    });
}

#[test]
fn conntrack_dump_works_in_a_fresh_namespace() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        assert_eq!(f.conntrack_entries().unwrap(), vec![]);
        assert_eq!(
            f.clear_conntrack(&[fwd(Protocol::Tcp, 1, 2, 3, 4)])
                .unwrap(),
            0
        );
    });
}

#[test]
fn nft_runs_in_the_forwarders_namespace_from_another_thread() {
    in_netns(|| {
        let mut f = ready();
        // Hand the forwarder to a thread in yet another namespace: prepare must still load
        // the table where the socket is, not where the caller is.
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: only this thread's namespace changes.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
                f.prepare("wan9").unwrap();
                assert!(!nft("list tables").contains("natpmpd"));
            });
        });
        assert!(nft("list table ip natpmpd").contains("wan9"));
        f.apply(&[Change::Add(fwd(Protocol::Udp, 1, 2, 1, 60))])
            .unwrap();
        assert_eq!(f.list().unwrap().len(), 1);
    });
}

/// The elements of one of our plain sets, as `nft` lists them ("" when empty).
fn set_elements(set: &str) -> String {
    let text = nft(&format!("list set ip natpmpd {set}"));
    match text.split_once("elements = {") {
        Some((_, rest)) => rest
            .split('}')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        None => String::new(),
    }
}

#[test]
fn set_hairpin_fills_and_replaces_both_sets() {
    in_netns(|| {
        let mut f = ready();
        assert_eq!(set_elements("wan_addr"), "");
        assert_eq!(set_elements("lan_nets"), "");
        let wan = Ipv4Addr::new(203, 0, 113, 1);
        // Host bits set, an overlap and a neighbour: stored as nft would store them.
        f.set_hairpin(
            Some(wan),
            &[
                (Ipv4Addr::new(192, 168, 88, 1), 24),
                (Ipv4Addr::new(10, 1, 0, 0), 16),
                (Ipv4Addr::new(10, 0, 0, 0), 8),
                (Ipv4Addr::new(192, 168, 89, 1), 24),
            ],
        )
        .unwrap();
        assert_eq!(set_elements("wan_addr"), "203.0.113.1");
        assert_eq!(set_elements("lan_nets"), "10.0.0.0/8, 192.168.88.0/23");

        // Replaced, not added to.
        f.set_hairpin(
            Some(Ipv4Addr::new(198, 51, 100, 7)),
            &[(Ipv4Addr::new(172, 16, 5, 1), 24)],
        )
        .unwrap();
        assert_eq!(set_elements("wan_addr"), "198.51.100.7");
        assert_eq!(set_elements("lan_nets"), "172.16.5.0/24");
        // The same again (flush and re-add of equal elements in one batch) is fine.
        f.set_hairpin(
            Some(Ipv4Addr::new(198, 51, 100, 7)),
            &[(Ipv4Addr::new(172, 16, 5, 1), 24)],
        )
        .unwrap();
        assert_eq!(set_elements("lan_nets"), "172.16.5.0/24");

        // Edges: 0.0.0.0/8 needs no leading end element, 128.0.0.0/1 runs to the top.
        f.set_hairpin(
            Some(wan),
            &[
                (Ipv4Addr::new(0, 0, 0, 0), 8),
                (Ipv4Addr::new(128, 0, 0, 0), 1),
            ],
        )
        .unwrap();
        let lan = set_elements("lan_nets");
        assert!(lan.starts_with("0.0.0.0/8, "), "{lan}");

        // Off.
        f.set_hairpin(None, &[]).unwrap();
        assert_eq!(set_elements("wan_addr"), "");
        assert_eq!(set_elements("lan_nets"), "");

        // Refused before the kernel is asked.
        let err = f
            .set_hairpin(Some(wan), &[(Ipv4Addr::new(10, 0, 0, 0), 33)])
            .unwrap_err();
        assert!(matches!(err, ForwardError::InvalidNetwork(_, 33)), "{err}");

        // The maps are untouched by all this, and prepare empties the sets.
        let a = fwd(Protocol::Tcp, 8080, 2, 80, 600);
        f.apply(&[Change::Add(a)]).unwrap();
        f.set_hairpin(Some(wan), &[(Ipv4Addr::new(192, 168, 88, 0), 24)])
            .unwrap();
        assert!(same_set(&f.list().unwrap(), &[a]));
        f.prepare(EXT).unwrap();
        assert_eq!(set_elements("wan_addr"), "");
        assert_eq!(set_elements("lan_nets"), "");
    });
}

#[test]
fn set_hairpin_without_the_table_fails_cleanly() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        let err = f
            .set_hairpin(Some(Ipv4Addr::new(203, 0, 113, 1)), &[])
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ForwardError::Kernel(_)), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
    });
}

fn damaged(f: &mut NftForwarder) -> String {
    match f.check().unwrap() {
        Health::Damaged(why) => why,
        Health::Intact => panic!("check found the table intact:\n{}", nft("list ruleset")),
    }
}

#[test]
fn check_finds_the_table_intact_and_each_kind_of_damage() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        assert_eq!(damaged(&mut f), "table ip natpmpd is missing");
        f.prepare(EXT).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);
        // Elements do not matter to it.
        f.apply(&[Change::Add(fwd(Protocol::Udp, 4000, 2, 4000, 60))])
            .unwrap();
        f.set_hairpin(
            Some(Ipv4Addr::new(203, 0, 113, 1)),
            &[(Ipv4Addr::new(192, 168, 88, 0), 24)],
        )
        .unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        // Another table with chains, sets and rules of the same names is not ours.
        nft_script(
            "table ip natpmpd2 {\n set wan_addr { type ipv4_addr; }\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  counter\n }\n}\n",
        );
        assert_eq!(f.check().unwrap(), Health::Intact);

        nft("flush chain ip natpmpd prerouting");
        assert_eq!(damaged(&mut f), "chain prerouting has 0 of 2 rules");
        f.prepare(EXT).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        nft("add rule ip natpmpd postrouting counter");
        assert_eq!(damaged(&mut f), "chain postrouting has 3 of 2 rules");
        f.prepare(EXT).unwrap();

        // A set in use by a rule cannot be deleted; a set is named before a chain.
        nft_script("flush chain ip natpmpd postrouting\ndelete set ip natpmpd lan_nets\n");
        assert_eq!(damaged(&mut f), "set lan_nets is missing");
        f.prepare(EXT).unwrap();

        nft("delete table ip natpmpd");
        assert_eq!(damaged(&mut f), "table ip natpmpd is missing");
        f.prepare(EXT).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        nft("flush ruleset");
        assert_eq!(damaged(&mut f), "table ip natpmpd is missing");
        f.prepare(EXT).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        // `nft flush table` empties every chain but keeps the rest.
        nft("flush table ip natpmpd");
        assert_eq!(damaged(&mut f), "chain prerouting has 0 of 2 rules");
        f.prepare(EXT).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);
    });
}

/// Send one UDP datagram from `client_host` (port chosen by the kernel) to `to` while a
/// server on `server_host` listens on `server_port`. Returns where the server saw it come
/// from and where the answer came from, or `None` for either that did not arrive within
/// `wait` (generous where an answer is expected: the tests run in parallel on small
/// machines).
fn udp_round_trip(
    client_host: &Host,
    server_host: &Host,
    server_port: u16,
    to: (Ipv4Addr, u16),
    wait: Duration,
) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
    let server = server_host.run(move || {
        // The previous round's socket on this port may live on for a moment in a child that
        // another test thread forked (the fd is shared until that child's exec closes it), so
        // a bind can meet AddrInUse briefly: retry for up to 2 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let s = loop {
            match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, server_port)) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("bind udp port {server_port}: {e}"),
            }
        };
        s.set_read_timeout(Some(wait)).unwrap();
        s
    });
    let client = client_host.run(move || {
        let c = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        c.set_read_timeout(Some(wait)).unwrap();
        c.send_to(b"ping", to).unwrap();
        c
    });
    let mut buf = [0u8; 16];
    let seen = server.recv_from(&mut buf).ok().map(|(_, from)| from);
    if let Some(from) = seen {
        server.send_to(b"pong", from).unwrap();
    }
    let answer = client.recv_from(&mut buf).ok().map(|(_, from)| from);
    (seen, answer)
}

/// The whole path: a LAN host reaches its own mapped port through the external address (and
/// sees the answer come from that address), the internet's source address is kept, and with
/// hairpin off nothing is translated for the LAN.
#[test]
fn hairpin_traffic_reaches_the_mapped_host() {
    const ANSWER: Duration = Duration::from_secs(3);
    const NO_ANSWER: Duration = Duration::from_millis(500);
    in_netns(|| {
        // This thread's namespace is the gateway; two hosts hang off it on veth pairs.
        let (lan, inet) = gateway_with_hosts(EXT);

        let mut f = ready();
        let wan = Ipv4Addr::new(203, 0, 113, 1);
        f.apply(&[Change::Add(Forward {
            external_addr: wan,
            ..fwd(Protocol::Udp, 8080, 2, 80, 600)
        })])
        .unwrap();
        f.set_hairpin(Some(wan), &[(Ipv4Addr::new(192, 168, 88, 1), 24)])
            .unwrap();

        // From the internet: forwarded, source kept (not in lan_nets, so no masquerade).
        let (seen, answer) = udp_round_trip(&inet, &lan, 80, (wan, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(answer, Some((wan, 8080).into()));

        // Hairpin to itself: the server sees the gateway's LAN address (masquerade), so its
        // answer goes back through the gateway and arrives from the external address.
        let (seen, answer) = udp_round_trip(&lan, &lan, 80, (wan, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some("192.168.88.1".parse().unwrap()));
        assert_eq!(answer, Some((wan, 8080).into()));

        // Hairpin off: the datagram is for the gateway itself, where nothing listens.
        f.set_hairpin(None, &[]).unwrap();
        let (seen, _) = udp_round_trip(&lan, &lan, 80, (wan, 8080), NO_ANSWER);
        assert_eq!(seen, None);
    });
}
