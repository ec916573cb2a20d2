//! Tests against the real kernel: the IPv4 elements, their timeouts and refusals (the table as
//! a whole, the hairpin sets and the health check are in `table.rs`, pinholes in
//! `pinholes.rs`, traffic and conntrack in `traffic.rs`, `ipv6.rs` and `contract.rs`). They
//! need root (CI runs as root) and fail, never skip, without it.
//!
//! Isolation: every test runs its body in a fresh thread that first calls
//! `unshare(CLONE_NEWNET)`. That thread alone moves into a new, anonymous network namespace,
//! which the kernel discards when the thread ends; the netlink sockets it opens and the `nft`
//! and `ip` processes it spawns live there too. Nothing here touches the host's namespace.

use natpmp_pcp_core::kernel::{
    ApplyError, Change, ChangeRefused, Element, Errno, Forwarder, KernelError, RemoteRange,
    TableSpec,
};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::elements::{add, filtered, inbound, keys, mapping, outbound, remotes, sorted};
use crate::support::netns::{in_netns, nft};

const EXT: &str = "wan0";

fn ready() -> NftForwarder {
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(&TableSpec::new(EXT)).expect("prepare");
    f
}

/// Every element of `listed` has between `secs - 10` and `secs` seconds left.
fn assert_time_left(listed: &[(Element, Duration)], secs: u64) {
    for (e, left) in listed {
        assert!(
            *left <= Duration::from_secs(secs) && *left > Duration::from_secs(secs - 10),
            "{e}: time left {left:?}, added with {secs} s"
        );
    }
}

#[test]
fn apply_adds_elements_visible_to_nft_and_list() {
    in_netns(|| {
        let mut f = ready();
        let mut changes = mapping(Protocol::Tcp, 8080, 2, 80, 600);
        changes.extend(mapping(Protocol::Udp, 5353, 9, 53, 600));
        f.apply(&changes).unwrap();
        let inbound = nft("list map inet natpmpd inbound");
        assert!(inbound.contains("tcp . 8080"), "{inbound}");
        assert!(inbound.contains("192.168.88.2 . 80"), "{inbound}");
        assert!(inbound.contains("udp . 5353"), "{inbound}");
        assert!(inbound.contains("192.168.88.9 . 53"), "{inbound}");
        let outbound = nft("list map inet natpmpd outbound");
        assert!(
            outbound.contains("192.168.88.2 . tcp . 80") && outbound.contains("203.0.113.1 . 8080"),
            "{outbound}"
        );
        let listed = f.list().unwrap();
        assert_eq!(
            keys(&listed),
            crate::support::elements::elements_of(&changes)
        );
        assert_time_left(&listed, 600);
    });
}

#[test]
fn renewal_updates_the_timeout() {
    in_netns(|| {
        let mut f = ready();
        let e = inbound(Protocol::Udp, 4000, 2, 4000);
        f.apply(&[add(e, 30)]).unwrap();
        f.apply(&[Change::Remove(e), add(e, 3600)]).unwrap();
        let listed = f.list().unwrap();
        assert_eq!(keys(&listed), vec![e]);
        assert_time_left(&listed, 3600);
        let text = nft("list map inet natpmpd inbound");
        assert!(text.contains("timeout 1h"), "{text}");
    });
}

/// Boxes of remotes go in and out of the interval map with their timeouts; the kernel
/// expires them by itself.
#[test]
fn filtered_elements_round_trip_with_real_timeouts() {
    in_netns(|| {
        let mut f = ready();
        let net = filtered(
            Protocol::Tcp,
            8080,
            remotes([203, 0, 113, 0], [203, 0, 113, 255], (4000, 4999)),
            2,
            80,
        );
        let peer = filtered(
            Protocol::Tcp,
            8080,
            RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 4000),
            2,
            80,
        );
        let everyone = filtered(
            Protocol::Udp,
            5353,
            remotes([0, 0, 0, 0], [255, 255, 255, 255], (0, 65535)),
            9,
            53,
        );
        f.apply(&[add(net, 600), add(peer, 600), add(everyone, 600)])
            .unwrap();
        let text = nft("list map inet natpmpd inbound_filtered");
        for shown in [
            "tcp . 8080 . 203.0.113.0/24 . 4000-4999",
            "tcp . 8080 . 198.51.100.7 . 4000",
            "udp . 5353 . 0.0.0.0/0 . 0-65535",
            "192.168.88.9 . 53",
        ] {
            assert!(text.contains(shown), "{shown}\n{text}");
        }
        let listed = f.list().unwrap();
        assert_eq!(keys(&listed), sorted(vec![net, peer, everyone]));
        assert_time_left(&listed, 600);

        // A renewal gives the box a new timeout.
        f.apply(&[Change::Remove(peer), add(peer, 3600)]).unwrap();
        let listed = f.list().unwrap();
        let (_, left) = listed.iter().find(|(e, _)| *e == peer).unwrap();
        assert!(*left > Duration::from_secs(3590), "{left:?}");

        // The kernel expires a box by itself (the dump leaves out expired elements at once).
        let brief = filtered(
            Protocol::Udp,
            6000,
            RemoteRange::single(Ipv4Addr::new(198, 51, 100, 8), 6000),
            3,
            6000,
        );
        f.apply(&[Change::Add {
            element: brief,
            timeout: Duration::from_millis(300),
        }])
        .unwrap();
        assert!(keys(&f.list().unwrap()).contains(&brief));
        std::thread::sleep(Duration::from_millis(600));
        assert!(!keys(&f.list().unwrap()).contains(&brief));

        f.apply(&[Change::Remove(net), Change::Remove(everyone)])
            .unwrap();
        assert_eq!(keys(&f.list().unwrap()), vec![peer]);
        f.apply(&[Change::Remove(peer)]).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

/// A refused transaction names each refused change by index, with the kernel's errno, and
/// changes nothing.
#[test]
fn refusals_name_each_change_and_its_errno() {
    in_netns(|| {
        let mut f = ready();
        let kept = inbound(Protocol::Udp, 4000, 2, 4000);
        let net = filtered(
            Protocol::Tcp,
            8080,
            remotes([203, 0, 113, 0], [203, 0, 113, 255], (0, 65535)),
            2,
            80,
        );
        f.apply(&[add(kept, 60), add(net, 60)]).unwrap();
        let before = keys(&f.list().unwrap());

        let inside = RemoteRange::single(Ipv4Addr::new(203, 0, 113, 7), 4000);
        let elsewhere = RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 4000);
        let nowhere = RemoteRange::single(Ipv4Addr::new(10, 9, 9, 9), 1);
        let changes = [
            // 0: fine on its own
            add(inbound(Protocol::Tcp, 8080, 3, 80), 60),
            // 1: the key is taken (another internal host, same external port)
            add(inbound(Protocol::Udp, 4000, 5, 4000), 60),
            // 2: not there
            Change::Remove(outbound(Protocol::Udp, 9, 9999, 9999)),
            // 3: a box that overlaps `net`
            add(filtered(Protocol::Tcp, 8080, inside, 3, 80), 60),
            // 4: fine on its own: a box apart from `net`
            add(filtered(Protocol::Tcp, 8080, elsewhere, 2, 80), 60),
            // 5: a box that is not there, and whose first corner is in no box either
            Change::Remove(filtered(Protocol::Tcp, 8080, nowhere, 2, 80)),
        ];
        let err = f.apply(&changes).unwrap_err();
        assert!(matches!(err, ApplyError::Refused(_)), "{err}");
        let refusal = |index, errno| ChangeRefused { index, errno };
        assert_eq!(
            err.refused(),
            &[
                refusal(1, Errno::EEXIST),
                refusal(2, Errno::ENOENT),
                refusal(3, Errno::EEXIST),
                refusal(5, Errno::ENOENT),
            ],
            "{err}"
        );
        assert!(err.to_string().contains("change #1: File exists"), "{err}");
        // Nothing changed.
        assert_eq!(keys(&f.list().unwrap()), before);
        // A duplicate add alone, and the forwarder still works afterwards.
        let err = f.apply(&[add(kept, 60)]).unwrap_err();
        assert_eq!(err.refused(), &[refusal(0, Errno::EEXIST)]);
        // Only the last member is acked: an error before a last member that succeeds must
        // still arrive before that ack ends the exchange.
        let err = f
            .apply(&[add(kept, 60), changes[0], changes[4]])
            .unwrap_err();
        assert_eq!(err.refused(), &[refusal(0, Errno::EEXIST)], "{err}");
        assert_eq!(keys(&f.list().unwrap()), before);
        f.apply(&[changes[0], changes[4]]).unwrap();
        assert_eq!(f.list().unwrap().len(), 4);
    });
}

/// Measured on kernel 6.18: the interval map finds the element to delete by the first corner
/// of the box alone, and ignores the last. So removing a box that is not there, but whose
/// first corner lies in another box, removes that other box instead of failing with ENOENT.
/// The core only removes boxes it added, and its boxes never overlap, so a box that is there
/// is always removed exactly; this pins the behaviour so that a kernel that changes it is
/// noticed.
#[test]
fn removing_an_absent_box_removes_the_box_holding_its_first_corner() {
    in_netns(|| {
        let mut f = ready();
        let net = filtered(
            Protocol::Tcp,
            8080,
            remotes([203, 0, 113, 0], [203, 0, 113, 255], (0, 65535)),
            2,
            80,
        );
        f.apply(&[add(net, 60)]).unwrap();
        let inner = RemoteRange::single(Ipv4Addr::new(203, 0, 113, 7), 4000);
        f.apply(&[Change::Remove(filtered(Protocol::Tcp, 8080, inner, 2, 80))])
            .unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

#[test]
fn apply_without_the_table_fails_cleanly() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        let changes = mapping(Protocol::Udp, 1, 2, 1, 60);
        // Each message names the missing table: every change is refused with ENOENT.
        let err = f.apply(&changes).unwrap_err();
        let enoent = |index| ChangeRefused {
            index,
            errno: Errno::ENOENT,
        };
        assert_eq!(err.refused(), &[enoent(0), enoent(1)], "{err}");
        assert!(matches!(
            f.list(),
            Err(KernelError::Refused {
                errno: Errno::ENOENT,
                ..
            })
        ));
    });
}

/// Elements added behind natpmpd's back that it cannot read make `list` fail rather than be
/// left out; the gateway then rebuilds the table, which removes them.
#[test]
fn list_refuses_to_hide_elements_it_cannot_read() {
    in_netns(|| {
        let mut f = ready();
        let ours = mapping(Protocol::Tcp, 8080, 2, 80, 600);
        f.apply(&ours).unwrap();
        // Readable ones added or removed by hand are listed as they are.
        nft("add element inet natpmpd inbound { udp . 53 : 192.168.88.9 . 53 }");
        nft("delete element inet natpmpd outbound { 192.168.88.2 . tcp . 80 }");
        let by_hand = inbound(Protocol::Udp, 53, 9, 53);
        assert_eq!(
            keys(&f.list().unwrap()),
            sorted(vec![*ours[0].element(), by_hand])
        );
        // A protocol other than TCP or UDP is no Element.
        nft("add element inet natpmpd inbound { icmp . 80 : 192.168.88.2 . 80 }");
        let err = f.list().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KernelError::Protocol(_)), "{text}");
        assert!(text.contains("1 element(s)"), "{text}");
        assert!(
            text.contains("map inbound: key 0100000000500000 data c0a8580200500000"),
            "{text}"
        );
        // Nor is a catch-all (`*`), which would translate every port: it has no key at all.
        nft("add element inet natpmpd inbound_filtered { * : 192.168.88.2 . 80 }");
        let text = f.list().unwrap_err().to_string();
        assert!(text.contains("2 element(s)"), "{text}");
        f.prepare(&TableSpec::new(EXT)).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

#[test]
fn thousands_of_elements_in_one_apply() {
    in_netns(|| {
        let mut f = ready();
        let mut adds: Vec<Change> = (0..2000u16)
            .flat_map(|i| {
                mapping(
                    Protocol::Udp,
                    10000 + i,
                    2 + (i % 200) as u8,
                    20000 + i,
                    600,
                )
            })
            .collect();
        // And 500 PEERs, one box each.
        adds.extend((0..500u16).map(|i| {
            let peer = RemoteRange::single(Ipv4Addr::new(198, 51, 100, (i % 250) as u8), 1000 + i);
            add(filtered(Protocol::Tcp, 30000 + i, peer, 2, 30000 + i), 600)
        }));
        f.apply(&adds).unwrap();
        let listed = f.list().unwrap();
        assert_eq!(keys(&listed), crate::support::elements::elements_of(&adds));
        let text = nft("list map inet natpmpd inbound");
        assert_eq!(text.matches("udp . ").count(), 2000);
        // And all of them go again in one transaction.
        let removes: Vec<Change> = adds.iter().map(|c| Change::Remove(*c.element())).collect();
        f.apply(&removes).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}
