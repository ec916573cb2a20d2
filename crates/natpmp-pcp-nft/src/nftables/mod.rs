//! nf_tables messages for our table, encoded and decoded by hand:
//!
//! - [`keys`]: the byte layout of every element's key and data, both ways;
//! - [`element`]: the element transaction, adding and removing elements of our three maps and
//!   two pinhole sets;
//! - [`dump`]: the element dump, and decoding what it returns back into `Element`s;
//! - [`hairpin`]: the two hairpin sets, emptied and refilled in one batch.
//!
//! Shared here: message types and attribute numbers from `linux/netfilter/nf_tables.h`, batch
//! framing, and [`ElementSet`], which names the map or set each kind of element lives in.
//! Every message names our table in family inet (see `template.rs`).

pub mod dump;
pub mod element;
pub mod hairpin;
pub mod keys;

use crate::nl::{MsgBuilder, NLM_F_REQUEST};
use natpmp_pcp_core::kernel::Element;

pub const TABLE: &str = "natpmpd";

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NLMSG_MIN_TYPE` and the one after it: batch framing is understood by nfnetlink itself.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
/// Our table's family: `table inet natpmpd` holds both IPv4 and IPv6.
pub const NFPROTO_INET: u8 = 1;
const AF_UNSPEC: u8 = 0;

// enum nft_set_elem_list_attributes
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
// enum nft_list_attributes
const NFTA_LIST_ELEM: u16 = 1;
// enum nft_set_elem_attributes
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
/// The last key of a range, in a set of concatenated intervals (the kernel's pipapo set).
const NFTA_SET_ELEM_KEY_END: u16 = 10;
// enum nft_data_attributes
const NFTA_DATA_VALUE: u16 = 1;
/// In `NFTA_SET_ELEM_FLAGS`: this element ends an interval (plain interval sets only).
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

/// The full netlink message type of an nf_tables message.
pub const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One of the five maps and sets elements live in (see `template.rs`): three maps for IPv4
/// NAT, two sets for IPv6 pinholes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementSet {
    Inbound,
    InboundFiltered,
    Outbound,
    Pinholes,
    PinholesFiltered,
}

impl ElementSet {
    pub const ALL: [ElementSet; 5] = [
        ElementSet::Inbound,
        ElementSet::InboundFiltered,
        ElementSet::Outbound,
        ElementSet::Pinholes,
        ElementSet::PinholesFiltered,
    ];

    /// Where `element` lives.
    pub fn of(element: &Element) -> ElementSet {
        match element {
            Element::Inbound { .. } => ElementSet::Inbound,
            Element::FilteredInbound { .. } => ElementSet::InboundFiltered,
            Element::Outbound { .. } => ElementSet::Outbound,
            Element::Pinhole { .. } => ElementSet::Pinholes,
            Element::FilteredPinhole { .. } => ElementSet::PinholesFiltered,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ElementSet::Inbound => "inbound",
            ElementSet::InboundFiltered => "inbound_filtered",
            ElementSet::Outbound => "outbound",
            ElementSet::Pinholes => "pinholes",
            ElementSet::PinholesFiltered => "pinholes_filtered",
        }
    }

    /// A set of concatenated intervals (the kernel's pipapo set): its elements are boxes,
    /// each sent and dumped as a key and a key end.
    pub fn is_interval(self) -> bool {
        matches!(
            self,
            ElementSet::InboundFiltered | ElementSet::PinholesFiltered
        )
    }

    /// A map (its elements carry data: where the kernel translates to) rather than a set.
    pub fn is_map(self) -> bool {
        !matches!(self, ElementSet::Pinholes | ElementSet::PinholesFiltered)
    }
}

/// `BATCH_BEGIN` / `BATCH_END`: no attributes; `res_id` names the subsystem the batch is for.
fn batch_marker(b: &mut MsgBuilder, ty: u16, seq: u32) {
    let m = b.begin(ty, NLM_F_REQUEST, seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    b.end(m);
}

/// A nested `ty` holding one `NFTA_DATA_VALUE`: how keys and data are wrapped.
fn data_value(b: &mut MsgBuilder, ty: u16, value: &[u8]) {
    let n = b.nest_begin(ty);
    b.attr(NFTA_DATA_VALUE, value);
    b.nest_end(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template;
    use natpmp_pcp_core::kernel::RemoteRange;
    use natpmp_pcp_core::Protocol;
    use std::net::{Ipv6Addr, SocketAddrV4, SocketAddrV6};

    #[test]
    fn element_sets_are_the_templates_and_the_cores() {
        let maps: Vec<&str> = ElementSet::ALL
            .iter()
            .filter(|m| m.is_map())
            .map(|m| m.name())
            .collect();
        assert_eq!(maps, template::MAPS);
        for set in ElementSet::ALL.iter().filter(|m| !m.is_map()) {
            assert!(template::SETS.contains(&set.name()), "{set:?}");
        }
        // The core names them too (for logs); they must agree.
        let sa: SocketAddrV4 = "192.168.88.2:80".parse().unwrap();
        let sa6: SocketAddrV6 = "[2001:db8:1::10]:80".parse().unwrap();
        let protocol = Protocol::Udp;
        let remote = RemoteRange::single(*sa.ip(), 80);
        let remote6 = RemoteRange::single(Ipv6Addr::LOCALHOST, 80);
        let all = [
            Element::Inbound {
                protocol,
                external_port: 80,
                internal: sa,
            },
            Element::FilteredInbound {
                protocol,
                external_port: 80,
                remote,
                internal: sa,
            },
            Element::Outbound {
                internal: sa,
                protocol,
                external: sa,
            },
            Element::Pinhole {
                protocol,
                internal: sa6,
            },
            Element::FilteredPinhole {
                protocol,
                internal: sa6,
                remote: remote6,
            },
        ];
        for (e, set) in all.iter().zip(ElementSet::ALL) {
            assert_eq!(ElementSet::of(e), set);
            assert_eq!(set.name(), e.map_name());
            assert_eq!(set.is_map(), !e.is_ipv6());
        }
    }
}
