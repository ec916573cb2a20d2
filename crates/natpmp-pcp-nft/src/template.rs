//! The ruleset of our own table, `table inet natpmpd`, as `nft -f` input.
//!
//! The table is written once per start (and on an external interface change) by spawning `nft`,
//! because a readable template is easier to review and to compare with `nft list ruleset` than
//! hand-encoded rule expressions. Mappings then change only the elements of the three maps and
//! the two pinhole sets, and hairpin only the two hairpin sets' elements, over netlink, never
//! through `nft`.
//!
//! Why one `inet` table for both families, rather than `table ip` beside `table ip6`: one
//! firewall contract in one place (the same mark on IPv4 forwards and IPv6 pinholes, set by
//! rules that sit side by side), one `prepare`, one health check and one teardown, and the
//! elements of both families in one batch, so a mapping's IPv4 and IPv6 changes are one atomic
//! transaction. The price: IPv4 NAT in an `inet` table needs Linux 5.2 or newer (Debian 12 has
//! 6.1). Older natpmpd versions used `table ip natpmpd`; `prepare` removes it.
//!
//! The firewall contract. Every base chain on a hook votes, so an `accept` of ours could never
//! override a `drop` in the operator's forward chain. Instead natpmpd marks every connection it
//! lets in, IPv4 port forwards and IPv6 pinholes alike, with the conntrack mark bit(s)
//! `TableSpec::connection_mark`, and the operator's forward chain accepts them with one rule
//! for both families: `ct mark & 0x00100000 == 0x00100000 accept`. Our chains never accept
//! or drop anything themselves: the verdict stays the operator's. Only our bit is set (`ct
//! mark set ct mark | MARK`), so the operator's other mark bits are kept; and only a
//! connection that hit a live element is marked, in the same rule after the lookup, so traffic
//! to an unmapped port or from a remote outside a FILTER stays unmarked.

use crate::nftables::TABLE;
use natpmp_pcp_core::kernel::{validate_interface, KernelError, TableSpec};

/// The `nft -f` input that replaces any earlier table of ours with a fresh one built around
/// `table` (its external interface and connection mark), in one transaction.
///
/// Each `table X {}` + `delete table X` pair is the usual idiom for "delete if it exists":
/// declaring the table creates it when absent (and is a no-op when present), so the delete
/// never fails. The first pair removes the `table ip natpmpd` of an older natpmpd. Because
/// `nft -f` sends the whole file as one batch, the old tables (with all their elements) and
/// the new one are swapped atomically: no packet sees a moment without our rules, and a
/// failure anywhere leaves the old tables as they were. Only `table ip natpmpd` and `table inet
/// natpmpd` are named; no other table is affected.
pub fn ruleset(table: &TableSpec) -> Result<String, KernelError> {
    validate_interface(&table.external_interface)?;
    if table.connection_mark == 0 {
        // `ct mark & 0 == 0` is true of every connection: the operator's contract rule would
        // accept all forwarded traffic.
        return Err(KernelError::Load(
            "the connection mark is 0: the firewall contract needs at least one mark bit".into(),
        ));
    }
    let ext = &table.external_interface;
    let mark = format!("ct mark set ct mark | {:#010x}", table.connection_mark);
    Ok(format!(
        r#"table ip {TABLE} {{}}
delete table ip {TABLE}
table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
	# protocol . external port -> internal address . internal port
	map inbound {{
		type inet_proto . inet_service : ipv4_addr . inet_service
		flags timeout
	}}

	# protocol . external port . remote addresses . remote ports -> internal address .
	# internal port: a mapping that only some remotes may reach (a PCP FILTER, or a PEER).
	# Each element is one box of remotes; the kernel refuses overlapping boxes (EEXIST).
	map inbound_filtered {{
		type inet_proto . inet_service . ipv4_addr . inet_service : ipv4_addr . inet_service
		flags interval, timeout
	}}

	# internal address . protocol . internal port -> external address . external port
	map outbound {{
		type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
		flags timeout
	}}

	# Hairpin (RFC 6886 section 4.3.4): the current external address, and the internal
	# networks. Filled by set_hairpin over netlink; empty means hairpin is off.
	set wan_addr {{
		type ipv4_addr
	}}

	set lan_nets {{
		type ipv4_addr
		flags interval
	}}

	# IPv6 has no NAT: a mapping is a pinhole (RFC 6092), the host's own address . protocol
	# . port, which any remote may reach...
	set pinholes {{
		type ipv6_addr . inet_proto . inet_service
		flags timeout
	}}

	# ... or only the remotes in one box (a FILTER or a PEER): host address . protocol .
	# port . remote addresses . remote ports. Boxes must not overlap, as in inbound_filtered.
	set pinholes_filtered {{
		type ipv6_addr . inet_proto . inet_service . ipv6_addr . inet_service
		flags interval, timeout
	}}

	# Match the interface, not its address, so an address change needs no rule rewrite.
	# A packet that misses a map gets no verdict from that rule and goes on to the next, so:
	# the filtered map is tried first, then the plain one; a filtered mapping's remotes outside
	# every box miss both and reach nothing; and a port with no mapping at all reaches the
	# gateway's own services on that address. The last two rules are the hairpin: a LAN host
	# that connects to our external address and a mapped port reaches the mapped host.
	# Each rule looks its key up first (a map serves as a set of its keys), then marks the
	# connection for the operator's forward chain, then translates: a miss marks nothing.
	# Hairpinned flows are marked too: they are forwarded LAN to LAN, which a forward chain
	# that drops by default would drop. The plain rule from outside says `meta nfproto ipv4`,
	# or IPv6 packets to a mapped port would be marked (`dnat ip` skips them); the others
	# imply it with `ip saddr` or `ip daddr`.
	# Without `meta l4proto {{ tcp, udp }}` nft 1.0.6 refuses the filtered rules ("transport
	# protocol mapping is only valid after transport protocol match").
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname "{ext}" meta l4proto {{ tcp, udp }} meta l4proto . th dport . ip saddr . th sport @inbound_filtered {mark} dnat ip to meta l4proto . th dport . ip saddr . th sport map @inbound_filtered
		iifname "{ext}" meta nfproto ipv4 meta l4proto . th dport @inbound {mark} dnat ip to meta l4proto . th dport map @inbound
		iifname != "{ext}" ip daddr @wan_addr meta l4proto {{ tcp, udp }} meta l4proto . th dport . ip saddr . th sport @inbound_filtered {mark} dnat ip to meta l4proto . th dport . ip saddr . th sport map @inbound_filtered
		iifname != "{ext}" ip daddr @wan_addr meta l4proto . th dport @inbound {mark} dnat ip to meta l4proto . th dport map @inbound
	}}

	# Before the operator's masquerade (srcnat), so mapped flows leave from the mapped port.
	# The second rule completes the hairpin: the mapped host must answer through us (so the
	# reply is translated back), not straight to a neighbour on its own subnet, so hairpinned
	# flows leave with our address. Flows from the internet were also destination-translated
	# to the external address, but their source is not in lan_nets, so they keep it.
	chain postrouting {{
		type nat hook postrouting priority srcnat - 1; policy accept;
		oifname "{ext}" snat ip to ip saddr . meta l4proto . th sport map @outbound
		ct status dnat ct original ip daddr @wan_addr ip saddr @lan_nets masquerade
	}}

	# The pinholes' half of the contract: mark new IPv6 connections from outside to a live
	# pinhole. A filter chain on prerouting runs before every forward chain, whatever its
	# priority, and at mangle priority after conntrack, which the mark lives in. No verdict:
	# the operator's forward chain decides. `ct state new` first, so the packets of
	# established flows leave after one comparison.
	chain mark_pinholes {{
		type filter hook prerouting priority mangle; policy accept;
		ct state new iifname "{ext}" ip6 daddr . meta l4proto . th dport @pinholes {mark}
		ct state new iifname "{ext}" ip6 daddr . meta l4proto . th dport . ip6 saddr . th sport @pinholes_filtered {mark}
	}}
}}
"#
    ))
}

/// The maps of our table (`nftables::ElementSet` names them for element messages).
pub const MAPS: [&str; 3] = ["inbound", "inbound_filtered", "outbound"];
/// The plain sets of our table: hairpin's two, and the two pinhole sets.
pub const SETS: [&str; 4] = ["wan_addr", "lan_nets", "pinholes", "pinholes_filtered"];
/// Our chains and how many rules [`ruleset`] puts in each: the health check compares the
/// kernel's counts with these (a unit test keeps them in step with the text).
pub const CHAINS: [(&str, usize); 3] =
    [("prerouting", 4), ("postrouting", 2), ("mark_pinholes", 2)];

/// The `nft -f` input that removes our table if it exists, and nothing else.
pub fn teardown() -> String {
    format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ext: &str) -> TableSpec {
        TableSpec::new(ext)
    }

    fn text() -> String {
        ruleset(&spec("wan0")).unwrap()
    }

    const MARK: &str = "ct mark set ct mark | 0x00100000";

    #[test]
    fn ruleset_names_only_our_tables_and_the_interface() {
        let text = text();
        assert!(text.starts_with(
            "table ip natpmpd {}\ndelete table ip natpmpd\n\
             table inet natpmpd {}\ndelete table inet natpmpd\ntable inet natpmpd {\n"
        ));
        assert!(text.contains(
            "oifname \"wan0\" snat ip to ip saddr . meta l4proto . th sport map @outbound"
        ));
        let tables: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("table") || l.contains("delete"))
            .collect();
        assert_eq!(tables.len(), 5, "{tables:?}");
        assert!(
            tables
                .iter()
                .all(|l| l.contains("ip natpmpd") || l.contains("inet natpmpd")),
            "{tables:?}"
        );
        assert!(matches!(
            ruleset(&spec("wan0\"")),
            Err(KernelError::InvalidInterface(_))
        ));
    }

    #[test]
    fn the_mark_is_configurable_and_never_zero() {
        let table = TableSpec {
            external_interface: "wan0".into(),
            connection_mark: 0x8000_0001,
        };
        let text = ruleset(&table).unwrap();
        assert_eq!(text.matches("ct mark set ct mark | 0x80000001").count(), 6);
        assert!(!text.contains("0x00100000"));
        let table = TableSpec {
            connection_mark: 0,
            ..table
        };
        assert!(matches!(ruleset(&table), Err(KernelError::Load(_))));
    }

    /// The filtered map is tried before the plain one on both paths (from outside, and the
    /// hairpin), so the order of the rules is part of the behaviour; each marks after its
    /// lookup and before its translation.
    #[test]
    fn every_dnat_rule_looks_up_then_marks_then_translates() {
        let text = text();
        assert!(text.contains(
            "map inbound_filtered {\n\t\ttype inet_proto . inet_service . ipv4_addr . inet_service \
             : ipv4_addr . inet_service\n\t\tflags interval, timeout\n\t}"
        ));
        let fkey = "meta l4proto . th dport . ip saddr . th sport";
        let filtered = format!(
            "meta l4proto {{ tcp, udp }} {fkey} @inbound_filtered {MARK} dnat ip to {fkey} map \
             @inbound_filtered"
        );
        let pkey = "meta l4proto . th dport";
        let plain = format!("{pkey} @inbound {MARK} dnat ip to {pkey} map @inbound");
        let rules: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("dnat ip to"))
            .collect();
        assert_eq!(
            rules,
            [
                format!("iifname \"wan0\" {filtered}"),
                format!("iifname \"wan0\" meta nfproto ipv4 {plain}"),
                format!("iifname != \"wan0\" ip daddr @wan_addr {filtered}"),
                format!("iifname != \"wan0\" ip daddr @wan_addr {plain}"),
            ]
        );
    }

    #[test]
    fn ruleset_has_the_hairpin_sets_and_rules() {
        let text = text();
        assert!(text.contains("set wan_addr {\n\t\ttype ipv4_addr\n\t}"));
        assert!(text.contains("set lan_nets {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}"));
        assert!(text.contains(
            "ct status dnat ct original ip daddr @wan_addr ip saddr @lan_nets masquerade"
        ));
    }

    #[test]
    fn pinholes_are_marked_before_any_forward_chain_and_never_judged() {
        let text = text();
        assert!(text.contains(
            "set pinholes {\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tflags timeout\n\t}"
        ));
        assert!(text.contains(
            "set pinholes_filtered {\n\t\ttype ipv6_addr . inet_proto . inet_service . ipv6_addr \
             . inet_service\n\t\tflags interval, timeout\n\t}"
        ));
        assert!(text.contains(
            "chain mark_pinholes {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        ));
        let key = "ip6 daddr . meta l4proto . th dport";
        assert!(text.contains(&format!(
            "ct state new iifname \"wan0\" {key} @pinholes {MARK}\n"
        )));
        assert!(text.contains(&format!(
            "ct state new iifname \"wan0\" {key} . ip6 saddr . th sport @pinholes_filtered {MARK}\n"
        )));
        // No chain of ours gives a verdict (the policies are accept, which defers to the next
        // base chain): the operator's forward chain decides.
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.starts_with("type "));
        for rule in rules {
            for verdict in [
                "accept", "drop", "reject", "jump", "goto", "return", "queue",
            ] {
                assert!(!rule.split(' ').any(|w| w == verdict), "{rule}");
            }
        }
    }

    /// `CHAINS` must say how many rules each chain of the template really has, or the health
    /// check would call a fresh table damaged.
    #[test]
    fn chain_rule_counts_match_the_template() {
        let text = text();
        for (chain, expected) in CHAINS {
            let body = text
                .split(&format!("chain {chain} {{"))
                .nth(1)
                // A chain ends at the first line that is only a closing brace (its rules hold
                // braces of their own: `{ tcp, udp }`).
                .and_then(|rest| rest.split("\n\t}").next())
                .unwrap_or_else(|| panic!("no chain {chain}"));
            let rules = body
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("type "))
                .count();
            assert_eq!(rules, expected, "chain {chain}");
        }
        assert_eq!(text.matches("\tchain ").count(), CHAINS.len());
        for name in MAPS {
            assert!(text.contains(&format!("map {name} {{")), "{name}");
        }
        for name in SETS {
            assert!(text.contains(&format!("set {name} {{")), "{name}");
        }
    }

    #[test]
    fn teardown_only_deletes_our_table() {
        assert_eq!(
            teardown(),
            "table inet natpmpd {}\ndelete table inet natpmpd\n"
        );
    }
}
