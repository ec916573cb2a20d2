//! Tests against the real kernel: the table as a whole (prepare, the legacy table, teardown),
//! the hairpin sets and the health check. Root only, each test in a namespace of its own, as
//! in `kernel.rs`.

use natpmp_pcp_core::kernel::{Errno, Forwarder, Health, KernelError, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::net::Ipv4Addr;

use crate::support::elements::{add, keys, mapping, pinhole};
use crate::support::netns::{in_netns, nft, nft_script};

const EXT: &str = "wan0";

fn spec(ext: &str) -> TableSpec {
    TableSpec::new(ext)
}

fn ready() -> NftForwarder {
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(&spec(EXT)).expect("prepare");
    f
}

/// The rules of `chain` in our table as `nft` lists them, trimmed.
fn rules(chain: &str) -> Vec<String> {
    nft(&format!("list chain inet natpmpd {chain}"))
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("iifname") || l.starts_with("oifname") || l.starts_with("ct "))
        .map(String::from)
        .collect()
}

#[test]
fn prepare_loads_the_table() {
    in_netns(|| {
        let mut f = ready();
        let text = nft("list table inet natpmpd");
        for part in [
            "map inbound {",
            "map inbound_filtered {",
            "map outbound {",
            "set pinholes {",
            "set pinholes_filtered {",
            "type ipv6_addr . inet_proto . inet_service . ipv6_addr . inet_service",
            "priority srcnat - 1",
            "type filter hook prerouting priority mangle; policy accept;",
        ] {
            assert!(text.contains(part), "{part}\n{text}");
        }
        assert_eq!(text.matches("flags interval,timeout").count(), 2, "{text}");
        // nft lists the rules as written: the lookup, the mark, then the translation. (It
        // leaves out the `meta nfproto ipv4` that `ip saddr` implies, and keeps ours.)
        let mark = "ct mark set ct mark | 0x00100000";
        let fkey = "meta l4proto . th dport . ip saddr . th sport";
        let pkey = "meta l4proto . th dport";
        assert_eq!(
            rules("prerouting"),
            [
                format!("iifname \"wan0\" meta l4proto {{ tcp, udp }} {fkey} @inbound_filtered {mark} dnat ip to {fkey} map @inbound_filtered"),
                format!("iifname \"wan0\" meta nfproto ipv4 {pkey} @inbound {mark} dnat ip to {pkey} map @inbound"),
                format!("iifname != \"wan0\" ip daddr @wan_addr meta l4proto {{ tcp, udp }} {fkey} @inbound_filtered {mark} dnat ip to {fkey} map @inbound_filtered"),
                format!("iifname != \"wan0\" ip daddr @wan_addr {pkey} @inbound {mark} dnat ip to {pkey} map @inbound"),
            ]
        );
        let key6 = "ip6 daddr . meta l4proto . th dport";
        assert_eq!(
            rules("mark_pinholes"),
            [
                format!("ct state new iifname \"wan0\" {key6} @pinholes {mark}"),
                format!("ct state new iifname \"wan0\" {key6} . ip6 saddr . th sport @pinholes_filtered {mark}"),
            ]
        );
        assert_eq!(rules("postrouting").len(), 2);
        assert_eq!(f.list().unwrap(), vec![]);
        assert_eq!(f.check().unwrap(), Health::Intact);
    });
}

#[test]
fn the_connection_mark_is_configurable() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        let table = TableSpec {
            external_interface: EXT.into(),
            connection_mark: 0x4000_0000,
        };
        f.prepare(&table).unwrap();
        let text = nft("list table inet natpmpd");
        assert_eq!(
            text.matches("ct mark set ct mark | 0x40000000").count(),
            6,
            "{text}"
        );
        assert!(!text.contains("0x00100000"), "{text}");
        assert_eq!(f.check().unwrap(), Health::Intact);
    });
}

#[test]
fn prepare_refuses_an_unsafe_interface_name_or_no_mark() {
    in_netns(|| {
        let mut f = NftForwarder::new().unwrap();
        let err = f.prepare(&spec("eth0\" accept")).unwrap_err();
        assert!(matches!(err, KernelError::InvalidInterface(_)), "{err}");
        let no_mark = TableSpec {
            connection_mark: 0,
            ..spec(EXT)
        };
        let err = f.prepare(&no_mark).unwrap_err();
        assert!(matches!(err, KernelError::Load(_)), "{err}");
        // Nothing was loaded.
        assert!(!nft("list tables").contains("natpmpd"));
    });
}

#[test]
fn prepare_twice_replaces_the_table() {
    in_netns(|| {
        let mut f = ready();
        f.apply(&mapping(Protocol::Udp, 4000, 2, 4000, 60)).unwrap();
        f.apply(&[add(pinhole(Protocol::Tcp, 22), 60)]).unwrap();
        assert_eq!(f.list().unwrap().len(), 3);
        f.prepare(&spec("wan1")).unwrap();
        let text = nft("list ruleset");
        assert_eq!(text.matches("table inet natpmpd").count(), 1, "{text}");
        assert_eq!(text.matches("chain prerouting").count(), 1, "{text}");
        assert!(text.contains("iifname \"wan1\""), "{text}");
        assert!(!text.contains("wan0"), "{text}");
        assert_eq!(f.list().unwrap(), vec![]);
    });
}

/// What an older natpmpd left: `table ip natpmpd`, with a forward in it.
const LEGACY: &str = "table ip natpmpd {
	map inbound {
		type inet_proto . inet_service : ipv4_addr . inet_service
		flags timeout
		elements = { tcp . 22 : 192.168.88.2 . 22 }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname \"wan0\" dnat ip to meta l4proto . th dport map @inbound
	}
}
";

/// Tables of the operator's, some with our name in another family: never ours to touch.
const OTHERS: &str = "table ip operator {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"wan0\" masquerade
	}
}
table ip6 natpmpd {
	set pinholes {
		type ipv6_addr
	}
}
table inet lab {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct mark & 0x00100000 == 0x00100000 accept
	}
}
";

#[test]
fn prepare_removes_the_legacy_table_and_nothing_else() {
    in_netns(|| {
        nft_script(LEGACY);
        nft_script(OTHERS);
        let others = ["ip operator", "ip6 natpmpd", "inet lab"];
        let before: Vec<String> = others
            .iter()
            .map(|t| nft(&format!("list table {t}")))
            .collect();
        let mut f = ready();
        let tables = nft("list tables");
        assert!(!tables.contains("table ip natpmpd"), "{tables}");
        assert!(tables.contains("table inet natpmpd"), "{tables}");
        // The legacy table is not looked at by the health check or listed from.
        assert_eq!(f.check().unwrap(), Health::Intact);
        assert_eq!(f.list().unwrap(), vec![]);
        // A legacy table that comes back (an older natpmpd still running) goes again.
        nft_script(LEGACY);
        assert_eq!(f.check().unwrap(), Health::Intact);
        f.prepare(&spec(EXT)).unwrap();
        assert!(!nft("list tables").contains("table ip natpmpd"));
        for (t, before) in others.iter().zip(&before) {
            assert_eq!(&nft(&format!("list table {t}")), before, "{t}");
        }
    });
}

#[test]
fn teardown_removes_the_table_and_leaves_others_alone() {
    in_netns(|| {
        nft_script(OTHERS);
        let before = nft("list ruleset");
        let mut f = ready();
        f.apply(&mapping(Protocol::Tcp, 22, 2, 22, 60)).unwrap();
        f.teardown().unwrap();
        let tables = nft("list tables");
        assert!(!tables.contains("table inet natpmpd"), "{tables}");
        assert_eq!(nft("list ruleset"), before);
        // Tearing down twice is fine.
        f.teardown().unwrap();
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
                f.prepare(&spec("wan9")).unwrap();
                assert!(!nft("list tables").contains("natpmpd"));
            });
        });
        assert!(nft("list table inet natpmpd").contains("wan9"));
        f.apply(&mapping(Protocol::Udp, 1, 2, 1, 60)).unwrap();
        assert_eq!(f.list().unwrap().len(), 2);
    });
}

/// The elements of one of our plain sets, as `nft` lists them ("" when empty).
fn set_elements(set: &str) -> String {
    let text = nft(&format!("list set inet natpmpd {set}"));
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
        assert!(matches!(err, KernelError::InvalidNetwork(_, 33)), "{err}");

        // The maps are untouched by all this, and prepare empties the sets.
        let a = mapping(Protocol::Tcp, 8080, 2, 80, 600);
        f.apply(&a).unwrap();
        f.set_hairpin(Some(wan), &[(Ipv4Addr::new(192, 168, 88, 0), 24)])
            .unwrap();
        assert_eq!(
            keys(&f.list().unwrap()),
            crate::support::elements::elements_of(&a)
        );
        f.prepare(&spec(EXT)).unwrap();
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
        assert!(
            matches!(
                err,
                KernelError::Refused {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{text}"
        );
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
        assert_eq!(damaged(&mut f), "table inet natpmpd is missing");
        f.prepare(&spec(EXT)).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);
        // Elements do not matter to it.
        f.apply(&mapping(Protocol::Udp, 4000, 2, 4000, 60)).unwrap();
        f.set_hairpin(
            Some(Ipv4Addr::new(203, 0, 113, 1)),
            &[(Ipv4Addr::new(192, 168, 88, 0), 24)],
        )
        .unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        // Another table with chains, sets and rules of the same names is not ours, in our
        // family or another.
        for family in ["inet", "ip"] {
            nft_script(&format!(
                "table {family} natpmpd2 {{\n set wan_addr {{ type ipv4_addr; }}\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  counter\n }}\n}}\n",
            ));
        }
        nft_script(LEGACY);
        assert_eq!(f.check().unwrap(), Health::Intact);

        nft("flush chain inet natpmpd prerouting");
        assert_eq!(damaged(&mut f), "chain prerouting has 0 of 4 rules");
        f.prepare(&spec(EXT)).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        nft("add rule inet natpmpd postrouting counter");
        assert_eq!(damaged(&mut f), "chain postrouting has 3 of 2 rules");
        f.prepare(&spec(EXT)).unwrap();

        // A map or set in use by a rule cannot be deleted; maps and sets are named before
        // chains.
        nft_script(
            "flush chain inet natpmpd prerouting\ndelete map inet natpmpd inbound_filtered\n",
        );
        assert_eq!(damaged(&mut f), "map inbound_filtered is missing");
        f.prepare(&spec(EXT)).unwrap();
        nft_script("flush chain inet natpmpd postrouting\ndelete set inet natpmpd lan_nets\n");
        assert_eq!(damaged(&mut f), "set lan_nets is missing");
        f.prepare(&spec(EXT)).unwrap();
        nft("flush chain inet natpmpd mark_pinholes");
        assert_eq!(damaged(&mut f), "chain mark_pinholes has 0 of 2 rules");
        nft("delete set inet natpmpd pinholes_filtered");
        assert_eq!(damaged(&mut f), "set pinholes_filtered is missing");
        f.prepare(&spec(EXT)).unwrap();
        nft_script(
            "flush chain inet natpmpd mark_pinholes\ndelete chain inet natpmpd mark_pinholes\n",
        );
        assert_eq!(damaged(&mut f), "chain mark_pinholes is missing");
        f.prepare(&spec(EXT)).unwrap();

        nft("delete table inet natpmpd");
        // A legacy table of our name is not ours.
        nft_script(LEGACY);
        assert_eq!(damaged(&mut f), "table inet natpmpd is missing");
        f.prepare(&spec(EXT)).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        nft("flush ruleset");
        assert_eq!(damaged(&mut f), "table inet natpmpd is missing");
        f.prepare(&spec(EXT)).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);

        // `nft flush table` empties every chain but keeps the rest.
        nft("flush table inet natpmpd");
        assert_eq!(damaged(&mut f), "chain prerouting has 0 of 4 rules");
        f.prepare(&spec(EXT)).unwrap();
        assert_eq!(f.check().unwrap(), Health::Intact);
    });
}
