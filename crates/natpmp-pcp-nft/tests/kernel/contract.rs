//! The firewall contract against the real kernel, with real packets: the operator's forward
//! chain drops by default and accepts `ct mark & MARK == MARK` (`lab::operator_firewall`), and
//! natpmpd marks exactly the connections it lets in, keeping the operator's own mark bits.
//! Root only, each test in namespaces of its own, as in `traffic.rs`.

use natpmp_pcp_core::kernel::{Forwarder, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::{ConntrackEntry, NftForwarder};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::support::elements::{
    add, filtered, host6, mapping, pinhole, remotes, INET6_HOST, LAN6_HOST, WAN,
};
use crate::support::lab::{
    operator_firewall, tcp_carries, tcp_connect, tcp_listen, udp_round_trip,
};
use crate::support::lab::{ANSWER, MARK, NO_ANSWER};
use crate::support::netns::{gateway_with_hosts, in_netns, nft_script, Host};

const EXT: &str = "wan0";
const INET_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const INET_OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);

/// The gateway with the operator's firewall and our table, and a second IPv4 internet host
/// address: (forwarder, lan, inet).
fn lab() -> (NftForwarder, Host, Host) {
    let (lan, inet) = gateway_with_hosts(EXT);
    inet.run(|| {
        crate::support::netns::run("ip", &["addr", "add", "203.0.113.10/24", "dev", "eth0"])
    });
    operator_firewall("lan0", EXT, MARK);
    let mut f = NftForwarder::new().expect("open netlink");
    f.prepare(&TableSpec::new(EXT)).expect("prepare");
    (f, lan, inet)
}

fn from(addr: Ipv4Addr) -> SocketAddr {
    (addr, 0).into()
}

/// The conntrack entry of the flow from `remote` to original destination port `port`.
fn flow(f: &mut NftForwarder, remote: impl Into<IpAddr>, port: u16) -> Option<ConntrackEntry> {
    let remote = remote.into();
    f.conntrack_entries()
        .unwrap()
        .into_iter()
        .find(|e| e.orig.src == remote && e.orig.dport == port)
}

/// (c) IPv4 port forwarding through natpmpd's maps passes a forward chain that drops by
/// default with the one contract rule alone, from outside and through the hairpin; what
/// natpmpd does not forward stays unmarked and is dropped, even when the operator's own DNAT
/// sends it to the same host.
#[test]
fn ipv4_forwards_pass_a_dropping_forward_chain_by_the_mark_alone() {
    in_netns(|| {
        let (mut f, lan, inet) = lab();
        // The operator's own port forwards, after ours (dstnat + 10): 9999, and 8082 for
        // whoever misses our filtered mapping of that port.
        nft_script(
            "table ip labnat {\n chain prerouting {\n  type nat hook prerouting priority dstnat + 10; policy accept;\n  iifname \"wan0\" udp dport { 8082, 9999 } dnat to 192.168.88.2\n }\n}\n",
        );
        let mut changes = mapping(Protocol::Udp, 8080, 2, 80, 600);
        changes.extend(mapping(Protocol::Tcp, 8080, 2, 80, 600));
        let only_inet_host = remotes([203, 0, 113, 9], [203, 0, 113, 9], (0, 65535));
        changes.push(add(
            filtered(Protocol::Udp, 8082, only_inet_host, 2, 82),
            600,
        ));
        f.apply(&changes).unwrap();
        f.set_hairpin(Some(WAN), &[(LAN_GATEWAY, 24)]).unwrap();

        let (seen, answer) = udp_round_trip(&inet, from(INET_HOST), &lan, 80, (WAN, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(INET_HOST.into()));
        assert_eq!(answer, Some((WAN, 8080).into()));
        assert_eq!(flow(&mut f, INET_HOST, 8080).map(|e| e.mark), Some(MARK));
        let listener = tcp_listen(&lan, (WAN, 80).into(), 80);
        let (mut client, mut server) =
            tcp_connect(&inet, &listener, (WAN, 8080).into(), ANSWER).expect("tcp forward");
        assert!(tcp_carries(&mut client, &mut server, b"hello"));
        assert!(tcp_carries(&mut server, &mut client, b"hi"));

        // The filtered mapping, from inside its box.
        let (seen, _) = udp_round_trip(&inet, from(INET_HOST), &lan, 82, (WAN, 8082), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(INET_HOST.into()));

        // Hairpin: forwarded LAN to LAN, marked too.
        let (seen, answer) = udp_round_trip(
            &lan,
            from(Ipv4Addr::UNSPECIFIED),
            &lan,
            80,
            (WAN, 8080),
            ANSWER,
        );
        assert_eq!(seen.map(|a| a.ip()), Some(LAN_GATEWAY.into()));
        assert_eq!(answer, Some((WAN, 8080).into()));

        // Unmapped by natpmpd, forwarded by the operator's DNAT: not marked, so dropped.
        let (seen, _) = udp_round_trip(&inet, from(INET_HOST), &lan, 9999, (WAN, 9999), NO_ANSWER);
        assert_eq!(seen, None);
        // Outside the filtered mapping's box: it misses our maps, the operator's DNAT takes
        // it, unmarked, and the forward chain drops it.
        let (seen, _) = udp_round_trip(&inet, from(INET_OTHER), &lan, 82, (WAN, 8082), NO_ANSWER);
        assert_eq!(seen, None);
        // (Dropped first packets leave no confirmed conntrack entry: nothing to inspect.)
        assert_eq!(flow(&mut f, INET_OTHER, 8082), None);

        // The mark is what let natpmpd's forwards through: without the contract rule they are
        // dropped too...
        nft_script("flush chain inet lab forward\nadd rule inet lab forward ct state established,related accept\n");
        let (seen, _) = udp_round_trip(&inet, from(INET_OTHER), &lan, 80, (WAN, 8080), NO_ANSWER);
        assert_eq!(seen, None);
        // ... and `ct status dnat accept`, the usual rule for IPv4 forwards, still lets them
        // through (their DNAT is unchanged), and the operator's own.
        nft_script("add rule inet lab forward ct status dnat accept\n");
        let (seen, _) = udp_round_trip(&inet, from(INET_OTHER), &lan, 80, (WAN, 8080), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(INET_OTHER.into()));
        let (seen, _) = udp_round_trip(&inet, from(INET_HOST), &lan, 9999, (WAN, 9999), ANSWER);
        assert_eq!(seen.map(|a| a.ip()), Some(INET_HOST.into()));
        assert_eq!(flow(&mut f, INET_HOST, 9999).map(|e| e.mark), Some(0));
    });
}

/// (d) natpmpd only adds its bit: a connection it lets in, IPv4 or IPv6, carries the
/// operator's own mark bit (set before ours by an operator rule) and natpmpd's; one it does
/// not let in carries the operator's alone.
#[test]
fn the_operators_own_mark_bits_survive() {
    in_netns(|| {
        let (mut f, lan, inet) = lab();
        const OPERATOR: u32 = 0x0000_0001;
        // After conntrack (-200), before both of our marking chains (-150 and -100).
        nft_script(
            "table inet labmark {\n chain prerouting {\n  type filter hook prerouting priority -180; policy accept;\n  ct state new ct mark set ct mark | 0x00000001\n }\n}\n",
        );
        let mut changes = mapping(Protocol::Udp, 8080, 2, 80, 600);
        changes.push(add(pinhole(Protocol::Udp, 8080), 600));
        f.apply(&changes).unwrap();

        let (seen, _) = udp_round_trip(&inet, from(INET_HOST), &lan, 80, (WAN, 8080), ANSWER);
        assert!(seen.is_some());
        let v4 = flow(&mut f, INET_HOST, 8080).expect("IPv4 flow");
        assert_eq!(v4.mark, MARK | OPERATOR, "{v4:?}");

        let to6: SocketAddr = host6(8080).into();
        let (seen, _) = udp_round_trip(&inet, (INET6_HOST, 0), &lan, 8080, to6, ANSWER);
        assert!(seen.is_some());
        let v6 = flow(&mut f, INET6_HOST, 8080).expect("IPv6 flow");
        assert_eq!(v6.mark, MARK | OPERATOR, "{v6:?}");

        // The LAN's own flow out: the operator's bit alone.
        let (seen, _) = udp_round_trip(&lan, (LAN6_HOST, 0), &inet, 53, (INET6_HOST, 53), ANSWER);
        assert!(seen.is_some());
        let out = flow(&mut f, LAN6_HOST, 53).expect("outbound flow");
        assert_eq!(out.mark, OPERATOR, "{out:?}");
    });
}
