//! The ruleset of our own table, `table ip natpmpd`, as `nft -f` input.
//!
//! The table is written once per start (and on an external interface change) by spawning `nft`,
//! because a readable template is easier to review and to compare with `nft list ruleset` than
//! hand-encoded rule expressions. Mappings then change only the three maps' elements, and
//! hairpin only the two sets' elements, over netlink, never through `nft`.

use crate::nftables::TABLE;
use natpmp_pcp_core::kernel::{validate_interface, KernelError};

/// The `nft -f` input that replaces any earlier table of ours with a fresh one naming
/// `external_interface`, in one transaction.
///
/// The first two lines are the usual idiom for "delete if it exists": declaring the table
/// creates it when absent (and is a no-op when present), so the delete never fails. Because
/// `nft -f` sends the whole file as one batch, the old table (with all its elements) and the
/// new one are swapped atomically: no packet sees a moment without our rules, and a failure
/// anywhere leaves the old table as it was. Only `table ip natpmpd` is named; no other table
/// is affected.
pub fn ruleset(external_interface: &str) -> Result<String, KernelError> {
    validate_interface(external_interface)?;
    let ext = external_interface;
    Ok(format!(
        r#"table ip {TABLE} {{}}
delete table ip {TABLE}
table ip {TABLE} {{
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

	# Match the interface, not its address, so an address change needs no rule rewrite.
	# A packet that misses a map gets no verdict from that rule and goes on to the next, so:
	# the filtered map is tried first, then the plain one; a filtered mapping's remotes outside
	# every box miss both and reach nothing; and a port with no mapping at all reaches the
	# gateway's own services on that address. The last two rules are the hairpin: a LAN host
	# that connects to our external address and a mapped port reaches the mapped host.
	# Without `meta l4proto {{ tcp, udp }}` nft 1.0.6 refuses the filtered rules ("transport
	# protocol mapping is only valid after transport protocol match").
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname "{ext}" meta l4proto {{ tcp, udp }} dnat ip to meta l4proto . th dport . ip saddr . th sport map @inbound_filtered
		iifname "{ext}" dnat ip to meta l4proto . th dport map @inbound
		iifname != "{ext}" ip daddr @wan_addr meta l4proto {{ tcp, udp }} dnat ip to meta l4proto . th dport . ip saddr . th sport map @inbound_filtered
		iifname != "{ext}" ip daddr @wan_addr dnat ip to meta l4proto . th dport map @inbound
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
}}
"#
    ))
}

/// The maps of our table (`nftables::Map` names them for element messages).
pub const MAPS: [&str; 3] = ["inbound", "inbound_filtered", "outbound"];
/// The plain sets of our table, for hairpin.
pub const SETS: [&str; 2] = ["wan_addr", "lan_nets"];
/// Our chains and how many rules [`ruleset`] puts in each: the health check compares the
/// kernel's counts with these (a unit test keeps them in step with the text).
pub const CHAINS: [(&str, usize); 2] = [("prerouting", 4), ("postrouting", 2)];

/// The `nft -f` input that removes our table if it exists, and nothing else.
pub fn teardown() -> String {
    format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_names_only_our_table_and_the_interface() {
        let text = ruleset("wan0").unwrap();
        assert!(text.starts_with("table ip natpmpd {}\ndelete table ip natpmpd\n"));
        assert!(text.contains("iifname \"wan0\" dnat ip to meta l4proto . th dport map @inbound"));
        assert!(text.contains(
            "oifname \"wan0\" snat ip to ip saddr . meta l4proto . th sport map @outbound"
        ));
        let tables: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("table") || l.contains("delete"))
            .collect();
        assert!(
            tables.iter().all(|l| l.contains("ip natpmpd")),
            "{tables:?}"
        );
        assert!(matches!(
            ruleset("wan0\""),
            Err(KernelError::InvalidInterface(_))
        ));
    }

    /// The filtered map is tried before the plain one on both paths (from outside, and the
    /// hairpin), so the order of the rules is part of the behaviour.
    #[test]
    fn ruleset_has_the_filtered_map_before_the_plain_one() {
        let text = ruleset("wan0").unwrap();
        assert!(text.contains(
            "map inbound_filtered {\n\t\ttype inet_proto . inet_service . ipv4_addr . inet_service \
             : ipv4_addr . inet_service\n\t\tflags interval, timeout\n\t}"
        ));
        let filtered = "meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport . ip saddr . \
                        th sport map @inbound_filtered";
        let plain = "dnat ip to meta l4proto . th dport map @inbound\n";
        let rules: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("dnat ip to"))
            .collect();
        assert_eq!(rules.len(), 4, "{rules:?}");
        assert_eq!(rules[0], format!("iifname \"wan0\" {filtered}"));
        assert_eq!(
            format!("{}\n", rules[1]),
            format!("iifname \"wan0\" {plain}")
        );
        assert_eq!(
            rules[2],
            format!("iifname != \"wan0\" ip daddr @wan_addr {filtered}")
        );
        assert_eq!(
            format!("{}\n", rules[3]),
            format!("iifname != \"wan0\" ip daddr @wan_addr {plain}")
        );
    }

    #[test]
    fn ruleset_has_the_hairpin_sets_and_rules() {
        let text = ruleset("wan0").unwrap();
        assert!(text.contains("set wan_addr {\n\t\ttype ipv4_addr\n\t}"));
        assert!(text.contains("set lan_nets {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}"));
        assert!(text.contains(
            "iifname != \"wan0\" ip daddr @wan_addr dnat ip to meta l4proto . th dport map @inbound"
        ));
        assert!(text.contains(
            "ct status dnat ct original ip daddr @wan_addr ip saddr @lan_nets masquerade"
        ));
    }

    /// `CHAINS` must say how many rules each chain of the template really has, or the health
    /// check would call a fresh table damaged.
    #[test]
    fn chain_rule_counts_match_the_template() {
        let text = ruleset("wan0").unwrap();
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
        for name in MAPS {
            assert!(text.contains(&format!("map {name} {{")), "{name}");
        }
        for name in SETS {
            assert!(text.contains(&format!("set {name} {{")), "{name}");
        }
    }

    #[test]
    fn teardown_only_deletes_our_table() {
        assert_eq!(teardown(), "table ip natpmpd {}\ndelete table ip natpmpd\n");
    }
}
