//! The ruleset of our own table, `table ip natpmpd`, as `nft -f` input.
//!
//! The table is written once per start (and on an external interface change) by spawning `nft`,
//! because a readable template is easier to review and to compare with `nft list ruleset` than
//! hand-encoded rule expressions. Mappings then change only the two maps' elements, and hairpin
//! only the two sets' elements, over netlink, never through `nft`.

use crate::nftables::TABLE;

/// Linux interface names: at most `IFNAMSIZ - 1` bytes.
const IFNAMSIZ_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceNameError {
    #[error("the external interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than 15 bytes")]
    TooLong(String),
    #[error("interface name {0:?} has a character other than A-Z a-z 0-9 . _ @ -")]
    BadCharacter(String),
}

/// Check that `name` can be placed inside an nft string literal as is. The name goes into our
/// ruleset text, so a quote or newline in it would let configuration inject nft statements;
/// Linux itself allows almost any byte, but real interface names stay within this set.
pub fn validate_interface(name: &str) -> Result<(), InterfaceNameError> {
    if name.is_empty() {
        return Err(InterfaceNameError::Empty);
    }
    if name.len() > IFNAMSIZ_MAX {
        return Err(InterfaceNameError::TooLong(name.to_owned()));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if !name.chars().all(ok) {
        return Err(InterfaceNameError::BadCharacter(name.to_owned()));
    }
    Ok(())
}

/// The `nft -f` input that replaces any earlier table of ours with a fresh one naming
/// `external_interface`, in one transaction.
///
/// The first two lines are the usual idiom for "delete if it exists": declaring the table
/// creates it when absent (and is a no-op when present), so the delete never fails. Because
/// `nft -f` sends the whole file as one batch, the old table (with all its elements) and the
/// new one are swapped atomically: no packet sees a moment without our rules, and a failure
/// anywhere leaves the old table as it was. Only `table ip natpmpd` is named; no other table
/// is affected.
pub fn ruleset(external_interface: &str) -> Result<String, InterfaceNameError> {
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
	# The second rule is the hairpin: a LAN host that connects to our external address and a
	# mapped port reaches the mapped host. A port with no mapping misses the map, which ends
	# the rule without a verdict, so the gateway's own services on that address still answer.
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname "{ext}" dnat ip to meta l4proto . th dport map @inbound
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
pub const MAPS: [&str; 2] = ["inbound", "outbound"];
/// The plain sets of our table, for hairpin.
pub const SETS: [&str; 2] = ["wan_addr", "lan_nets"];
/// Our chains and how many rules [`ruleset`] puts in each: the health check compares the
/// kernel's counts with these (a unit test keeps them in step with the text).
pub const CHAINS: [(&str, usize); 2] = [("prerouting", 2), ("postrouting", 2)];

/// The `nft -f` input that removes our table if it exists, and nothing else.
pub fn teardown() -> String {
    format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_interface_names() {
        for name in [
            "eth0", "enp3s0", "wan.100", "br-lan", "veth_1", "ppp0@x", "a",
        ] {
            assert_eq!(validate_interface(name), Ok(()), "{name}");
        }
        assert_eq!(validate_interface("abcdefghijklmno"), Ok(())); // 15 bytes
    }

    #[test]
    fn refuses_names_that_could_inject_nft_text() {
        assert_eq!(validate_interface(""), Err(InterfaceNameError::Empty));
        assert!(matches!(
            validate_interface("abcdefghijklmnop"),
            Err(InterfaceNameError::TooLong(_))
        ));
        for name in [
            "eth0\" accept",
            "eth0\n",
            "eth 0",
            "eth0;",
            "eth0}",
            "eth0*",
            "é",
        ] {
            assert!(
                matches!(
                    validate_interface(name),
                    Err(InterfaceNameError::BadCharacter(_))
                ),
                "{name:?}"
            );
        }
    }

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
        assert!(ruleset("wan0\"").is_err());
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
                .and_then(|rest| rest.split('}').next())
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
