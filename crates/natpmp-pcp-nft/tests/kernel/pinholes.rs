//! Tests against the real kernel: IPv6 pinholes, plain and filtered, as elements of our two
//! sets, beside the IPv4 maps in the same transactions (their traffic is in `ipv6.rs`). Root
//! only, each test in a namespace of its own, as in `kernel.rs`.

use natpmp_pcp_core::kernel::{ApplyError, Change, ChangeRefused, Element, Errno, Forwarder};
use natpmp_pcp_core::kernel::{KernelError, RemoteRange, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::time::Duration;

use crate::support::elements::{
    add, filtered_pinhole, keys, mapping, pinhole, remotes6, sorted, INET6_HOST,
};
use crate::support::netns::{in_netns, nft};

fn ready() -> NftForwarder {
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(&TableSpec::new("wan0")).expect("prepare");
    f
}

/// The time left of `e` in a listing.
fn left(listed: &[(Element, Duration)], e: &Element) -> Duration {
    listed
        .iter()
        .find(|(l, _)| l == e)
        .unwrap_or_else(|| panic!("{e} not listed"))
        .1
}

/// Pinholes and boxes go in and out of the sets with their timeouts; the kernel expires them
/// by itself.
#[test]
fn pinholes_round_trip_with_real_timeouts() {
    in_netns(|| {
        let mut f = ready();
        let tcp = pinhole(Protocol::Tcp, 8080);
        let udp = pinhole(Protocol::Udp, 8080);
        let net = filtered_pinhole(
            Protocol::Tcp,
            22,
            remotes6(
                "2001:db8:ff::",
                "2001:db8:ff:0:ffff:ffff:ffff:ffff",
                (4000, 4999),
            ),
        );
        let peer = filtered_pinhole(Protocol::Tcp, 22, RemoteRange::single(INET6_HOST, 5000));
        let everyone = filtered_pinhole(
            Protocol::Udp,
            5353,
            remotes6("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", (0, 65535)),
        );
        let all = [tcp, udp, net, peer, everyone];
        f.apply(&all.map(|e| add(e, 600))).unwrap();
        let text = nft("list set inet natpmpd pinholes");
        for shown in [
            "2001:db8:1::10 . tcp . 8080 timeout 10m",
            "2001:db8:1::10 . udp . 8080 timeout 10m",
        ] {
            assert!(text.contains(shown), "{shown}\n{text}");
        }
        let text = nft("list set inet natpmpd pinholes_filtered");
        for shown in [
            "2001:db8:1::10 . tcp . 22 . 2001:db8:ff::/64 . 4000-4999",
            "2001:db8:1::10 . tcp . 22 . 2001:db8:ff::2 . 5000",
            "2001:db8:1::10 . udp . 5353 . ::/0 . 0-65535",
        ] {
            assert!(text.contains(shown), "{shown}\n{text}");
        }
        let listed = f.list().unwrap();
        assert_eq!(keys(&listed), sorted(all.to_vec()));
        for e in &all {
            let t = left(&listed, e);
            assert!(
                t <= Duration::from_secs(600) && t > Duration::from_secs(590),
                "{e}: {t:?}"
            );
        }

        // A renewal gives the pinhole and the box a new timeout.
        f.apply(&[
            Change::Remove(tcp),
            add(tcp, 3600),
            Change::Remove(peer),
            add(peer, 3600),
        ])
        .unwrap();
        let listed = f.list().unwrap();
        assert!(left(&listed, &tcp) > Duration::from_secs(3590));
        assert!(left(&listed, &peer) > Duration::from_secs(3590));
        assert!(left(&listed, &udp) <= Duration::from_secs(600));

        // The kernel expires them by itself.
        let brief = [
            pinhole(Protocol::Udp, 6000),
            filtered_pinhole(Protocol::Udp, 6001, RemoteRange::single(INET6_HOST, 1)),
        ];
        f.apply(&brief.map(|element| Change::Add {
            element,
            timeout: Duration::from_millis(300),
        }))
        .unwrap();
        assert!(brief.iter().all(|b| keys(&f.list().unwrap()).contains(b)));
        std::thread::sleep(Duration::from_millis(600));
        let now = keys(&f.list().unwrap());
        assert!(brief.iter().all(|b| !now.contains(b)), "{now:?}");

        f.apply(&all.map(Change::Remove)).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

/// IPv4 forwards and IPv6 pinholes change in one transaction: all or nothing, with every
/// refusal named by index.
#[test]
fn both_families_share_one_transaction() {
    in_netns(|| {
        let mut f = ready();
        let kept = pinhole(Protocol::Tcp, 80);
        let net = filtered_pinhole(
            Protocol::Udp,
            53,
            remotes6("2001:db8:ff::", "2001:db8:ff::ff", (0, 65535)),
        );
        f.apply(&[add(kept, 60), add(net, 60)]).unwrap();
        let before = keys(&f.list().unwrap());

        let mut changes = mapping(Protocol::Tcp, 8080, 2, 80, 60); // 0, 1: fine
        changes.extend([
            // 2: the key is taken
            add(kept, 60),
            // 3: a box that overlaps `net`
            add(
                filtered_pinhole(Protocol::Udp, 53, RemoteRange::single(INET6_HOST, 9)),
                60,
            ),
            // 4: fine: another port
            add(pinhole(Protocol::Tcp, 81), 60),
            // 5: not there
            Change::Remove(pinhole(Protocol::Udp, 80)),
            // 6: a box that is not there, whose first corner is in no box either
            Change::Remove(filtered_pinhole(
                Protocol::Udp,
                53,
                RemoteRange::single("2001:db8:fe::1".parse().unwrap(), 1),
            )),
        ]);
        let err = f.apply(&changes).unwrap_err();
        assert!(matches!(err, ApplyError::Refused(_)), "{err}");
        let refusal = |index, errno| ChangeRefused { index, errno };
        assert_eq!(
            err.refused(),
            &[
                refusal(2, Errno::EEXIST),
                refusal(3, Errno::EEXIST),
                refusal(5, Errno::ENOENT),
                refusal(6, Errno::ENOENT),
            ],
            "{err}"
        );
        assert_eq!(keys(&f.list().unwrap()), before);
        // Without the refused ones, all of it goes in at once.
        let fine = [changes[0], changes[1], changes[4]];
        f.apply(&fine).unwrap();
        assert_eq!(f.list().unwrap().len(), 5);
    });
}

/// As with `inbound_filtered` (see `kernel.rs`), the kernel finds the box to remove by its
/// first corner alone: removing a box that is not there, whose first corner is inside a box
/// that is, removes that box. Pinned so that a kernel that changes it is noticed.
#[test]
fn removing_an_absent_pinhole_box_removes_the_box_holding_its_first_corner() {
    in_netns(|| {
        let mut f = ready();
        let net = filtered_pinhole(
            Protocol::Tcp,
            22,
            remotes6(
                "2001:db8:ff::",
                "2001:db8:ff:0:ffff:ffff:ffff:ffff",
                (0, 65535),
            ),
        );
        f.apply(&[add(net, 60)]).unwrap();
        let inner = filtered_pinhole(Protocol::Tcp, 22, RemoteRange::single(INET6_HOST, 4000));
        f.apply(&[Change::Remove(inner)]).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

/// Pinholes added behind natpmpd's back that it cannot read make `list` fail, as in the maps.
#[test]
fn list_refuses_to_hide_pinholes_it_cannot_read() {
    in_netns(|| {
        let mut f = ready();
        nft("add element inet natpmpd pinholes { 2001:db8:1::10 . tcp . 22 }");
        assert_eq!(keys(&f.list().unwrap()), vec![pinhole(Protocol::Tcp, 22)]);
        nft("add element inet natpmpd pinholes { 2001:db8:1::10 . sctp . 22 }");
        let err = f.list().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KernelError::Protocol(_)), "{text}");
        assert!(text.contains("1 element(s)"), "{text}");
        // sctp is 132 (0x84).
        assert!(
            text.contains("set pinholes: key 20010db8000100000000000000000010840000000016"),
            "{text}"
        );
        // A box whose corners are two hosts is no pinhole's either.
        nft("add element inet natpmpd pinholes_filtered { 2001:db8:1::10-2001:db8:1::11 . tcp . 22 . ::/0 . 0-65535 }");
        let text = f.list().unwrap_err().to_string();
        assert!(text.contains("2 element(s)"), "{text}");
        f.prepare(&TableSpec::new("wan0")).unwrap();
        assert_eq!(f.list().unwrap(), vec![]);
    });
}
