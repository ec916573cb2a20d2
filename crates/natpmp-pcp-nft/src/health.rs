//! The health check's messages: is our table still whole?
//!
//! Four requests, none of which returns set elements, so the cost does not depend on how many
//! elements there are: get table `natpmpd` (an error when it is missing), then dump the sets,
//! the chains and the rules of family inet (so a legacy `table ip natpmpd` is never seen). The
//! set and rule dumps are filtered to our table by the kernel; the chain dump cannot be, so its
//! answers are filtered here, by table name.
//! [`evaluate`] then compares what was found with `template.rs`.

use crate::nftables::{nft_type, NFPROTO_INET, TABLE};
use crate::nl::{self, MsgBuilder, TooLong, NFGENMSG_LEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use crate::template;
use natpmp_pcp_core::kernel::Health;

pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_GETSET: u16 = 10;

// The table, chain, rule and set attributes all start the same way: 1 is the table's name.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
/// `NFT_SET_MAP`: the set carries data, i.e. it is a map.
const NFT_SET_MAP: u32 = 0x8;

/// `GETTABLE natpmpd`, a plain get with an ack: answered by the table, or by `ENOENT`.
pub fn encode_get_table(seq: u32) -> Result<Vec<u8>, TooLong> {
    let mut b = MsgBuilder::new();
    let m = b.begin(
        nft_type(NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_INET,
        0,
    );
    b.attr_str(NFTA_TABLE_NAME, TABLE);
    b.end(m);
    b.into_bytes()
}

/// A dump of `msg` (`GETSET`, `GETCHAIN` or `GETRULE`) for family inet, naming our table as the
/// filter (attribute 1 in all three; the chain dump ignores it).
pub fn encode_dump(msg: u16, seq: u32) -> Result<Vec<u8>, TooLong> {
    let mut b = MsgBuilder::new();
    let m = b.begin(
        nft_type(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    b.attr_str(1, TABLE);
    b.end(m);
    b.into_bytes()
}

/// The attributes of a dumped nf_tables object (payload = after the netlink header).
fn object_attrs(payload: &[u8]) -> nl::Attrs<'_> {
    nl::attrs(payload.get(NFGENMSG_LEN..).unwrap_or(&[]))
}

/// Whether the object belongs to our table (its table attribute is 1 in all three kinds).
fn in_our_table(payload: &[u8], table_attr: u16) -> bool {
    object_attrs(payload)
        .get(table_attr)
        .and_then(|a| a.str())
        .is_some_and(|t| t == TABLE)
}

/// A set of ours: its name and whether it is a map. `None` for another table's set.
pub fn parse_set(payload: &[u8]) -> Option<(String, bool)> {
    if !in_our_table(payload, NFTA_SET_TABLE) {
        return None;
    }
    let name = object_attrs(payload).get(NFTA_SET_NAME)?.str()?.to_owned();
    let flags = object_attrs(payload)
        .get(NFTA_SET_FLAGS)
        .and_then(|a| a.be32())
        .unwrap_or(0);
    Some((name, flags & NFT_SET_MAP != 0))
}

/// A chain of ours: its name and whether it is hooked into the packet path (a base chain).
pub fn parse_chain(payload: &[u8]) -> Option<(String, bool)> {
    if !in_our_table(payload, NFTA_CHAIN_TABLE) {
        return None;
    }
    let name = object_attrs(payload)
        .get(NFTA_CHAIN_NAME)?
        .str()?
        .to_owned();
    let hooked = object_attrs(payload).get(NFTA_CHAIN_HOOK).is_some();
    Some((name, hooked))
}

/// The chain a rule of ours is in.
pub fn parse_rule(payload: &[u8]) -> Option<String> {
    if !in_our_table(payload, NFTA_RULE_TABLE) {
        return None;
    }
    Some(
        object_attrs(payload)
            .get(NFTA_RULE_CHAIN)?
            .str()?
            .to_owned(),
    )
}

/// What the dumps found in our table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// (name, is a map)
    pub sets: Vec<(String, bool)>,
    /// (name, is a base chain)
    pub chains: Vec<(String, bool)>,
    /// The chain of each rule.
    pub rules: Vec<String>,
}

/// Compare what was found with the template. Only the first problem is named: the cure
/// (`prepare`) is the same whatever is missing, and a short message reads better in a log.
pub fn evaluate(found: &Found) -> Health {
    for name in template::MAPS {
        match found.sets.iter().find(|(n, _)| n == name) {
            None => return Health::Damaged(format!("map {name} is missing")),
            Some((_, false)) => return Health::Damaged(format!("{name} is a set, not a map")),
            Some(_) => {}
        }
    }
    for name in template::SETS {
        match found.sets.iter().find(|(n, _)| n == name) {
            None => return Health::Damaged(format!("set {name} is missing")),
            Some((_, true)) => return Health::Damaged(format!("{name} is a map, not a set")),
            Some(_) => {}
        }
    }
    for (name, expected) in template::CHAINS {
        match found.chains.iter().find(|(n, _)| n == name) {
            None => return Health::Damaged(format!("chain {name} is missing")),
            Some((_, false)) => {
                return Health::Damaged(format!("chain {name} is not hooked (not a base chain)"))
            }
            Some(_) => {}
        }
        let n = found.rules.iter().filter(|c| *c == name).count();
        if n != expected {
            return Health::Damaged(format!("chain {name} has {n} of {expected} rules"));
        }
    }
    Health::Intact
}

/// The message for a missing table.
pub fn table_missing() -> Health {
    Health::Damaged(format!("table inet {TABLE} is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::messages;

    fn whole() -> Found {
        Found {
            sets: vec![
                ("inbound".into(), true),
                ("inbound_filtered".into(), true),
                ("outbound".into(), true),
                // `meta l4proto { tcp, udp }` is an anonymous set of the table: ignored.
                ("__set0".into(), false),
                ("wan_addr".into(), false),
                ("lan_nets".into(), false),
                ("pinholes".into(), false),
                ("pinholes_filtered".into(), false),
            ],
            chains: vec![
                ("prerouting".into(), true),
                ("postrouting".into(), true),
                ("mark_pinholes".into(), true),
            ],
            rules: [
                "prerouting",
                "postrouting",
                "mark_pinholes",
                "prerouting",
                "prerouting",
                "postrouting",
                "mark_pinholes",
                "prerouting",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    #[test]
    fn a_whole_table_is_intact() {
        assert_eq!(evaluate(&whole()), Health::Intact);
    }

    #[test]
    fn each_missing_piece_is_named() {
        let damaged = |f: &dyn Fn(&mut Found)| {
            let mut found = whole();
            f(&mut found);
            match evaluate(&found) {
                Health::Damaged(why) => why,
                Health::Intact => panic!("{found:?} is not intact"),
            }
        };
        assert_eq!(
            damaged(&|f| f.rules.retain(|c| c != "prerouting")),
            "chain prerouting has 0 of 4 rules"
        );
        assert_eq!(
            damaged(&|f| f.rules.push("postrouting".into())),
            "chain postrouting has 3 of 2 rules"
        );
        assert_eq!(
            damaged(&|f| drop(f.chains.remove(1))),
            "chain postrouting is missing"
        );
        assert_eq!(
            damaged(&|f| f.chains[0].1 = false),
            "chain prerouting is not hooked (not a base chain)"
        );
        assert_eq!(
            damaged(&|f| drop(f.sets.remove(0))),
            "map inbound is missing"
        );
        assert_eq!(
            damaged(&|f| drop(f.sets.remove(1))),
            "map inbound_filtered is missing"
        );
        assert_eq!(
            damaged(&|f| drop(f.sets.pop())),
            "set pinholes_filtered is missing"
        );
        assert_eq!(
            damaged(&|f| drop(f.sets.remove(5))),
            "set lan_nets is missing"
        );
        assert_eq!(
            damaged(&|f| f.sets[6].1 = true),
            "pinholes is a map, not a set"
        );
        assert_eq!(
            damaged(&|f| f.chains.truncate(2)),
            "chain mark_pinholes is missing"
        );
        assert_eq!(
            damaged(&|f| f.rules.retain(|c| c != "mark_pinholes")),
            "chain mark_pinholes has 0 of 2 rules"
        );
        assert_eq!(
            damaged(&|f| f.sets[1].1 = false),
            "inbound_filtered is a set, not a map"
        );
        assert_eq!(
            damaged(&|f| f.sets[2].1 = false),
            "outbound is a set, not a map"
        );
        assert_eq!(
            damaged(&|f| f.sets[4].1 = true),
            "wan_addr is a map, not a set"
        );
        assert_eq!(
            damaged(&|f| *f = Found::default()),
            "map inbound is missing"
        );
        assert_eq!(
            table_missing(),
            Health::Damaged("table inet natpmpd is missing".into())
        );
    }

    /// Laid out by hand from nf_tables.h (the kernel tests check that it is answered), and
    /// but for seq the GETTABLE that `nft --debug=mnl list table inet natpmpd` sends.
    #[cfg(target_endian = "little")]
    #[test]
    fn get_table_matches_hand_layout() {
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            32, 0, 0, 0,            // length: 16 + 4 + 12
            0x01, 0x0a,             // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
            0x05, 0x00,             // REQUEST|ACK
            7, 0, 0, 0,             // seq
            0, 0, 0, 0,
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0,            // NFTA_TABLE_NAME
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
        ];
        assert_eq!(encode_get_table(7).unwrap(), expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn dumps_match_hand_layout() {
        for (msg, ty) in [
            (NFT_MSG_GETSET, 0x0a),
            (NFT_MSG_GETCHAIN, 0x04),
            (NFT_MSG_GETRULE, 0x07),
        ] {
            #[rustfmt::skip]
            let expected: Vec<u8> = vec![
                32, 0, 0, 0,
                ty, 0x0a,           // subsystem 10, message
                0x01, 0x03,         // REQUEST|DUMP (0x300)
                9, 0, 0, 0,
                0, 0, 0, 0,
                1, 0, 0, 0,         // NFPROTO_INET
                12, 0, 1, 0,        // NFTA_{SET,CHAIN,RULE}_TABLE
                b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            ];
            assert_eq!(encode_dump(msg, 9).unwrap(), expected, "message {msg}");
        }
    }

    /// A dumped object as the kernel sends it: nfgenmsg, then the attributes given.
    fn object(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = MsgBuilder::new();
        let m = b.begin(nft_type(3), 2, 1, NFPROTO_INET, 0);
        for (ty, payload) in attrs {
            b.attr(*ty, payload);
        }
        b.end(m);
        let bytes = b.into_bytes().unwrap();
        messages(&bytes).next().unwrap().payload.to_vec()
    }

    #[test]
    fn parsers_keep_only_our_table() {
        let chain = object(&[
            (NFTA_CHAIN_TABLE, b"natpmpd\0"),
            (NFTA_CHAIN_NAME, b"prerouting\0"),
            (NFTA_CHAIN_HOOK | nl::NLA_F_NESTED, &[]),
        ]);
        assert_eq!(parse_chain(&chain), Some(("prerouting".into(), true)));
        let other = object(&[
            (NFTA_CHAIN_TABLE, b"filter\0"),
            (NFTA_CHAIN_NAME, b"input\0"),
        ]);
        assert_eq!(parse_chain(&other), None);
        let set = object(&[
            (NFTA_SET_TABLE, b"natpmpd\0"),
            (NFTA_SET_NAME, b"inbound\0"),
            (NFTA_SET_FLAGS, &[0, 0, 0, 0x18]), // MAP | TIMEOUT
        ]);
        assert_eq!(parse_set(&set), Some(("inbound".into(), true)));
        let rule = object(&[
            (NFTA_RULE_TABLE, b"natpmpd\0"),
            (NFTA_RULE_CHAIN, b"postrouting\0"),
        ]);
        assert_eq!(parse_rule(&rule).as_deref(), Some("postrouting"));
        // Every cut of every object parses without a panic.
        for bytes in [&chain, &set, &rule] {
            for cut in 0..bytes.len() {
                let part = &bytes[..cut];
                let _ = (parse_chain(part), parse_set(part), parse_rule(part));
            }
        }
    }
}
