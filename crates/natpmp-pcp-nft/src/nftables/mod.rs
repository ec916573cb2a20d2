//! nf_tables messages for our table, encoded and decoded by hand:
//!
//! - [`element`]: the element transaction, adding and removing elements of our three maps;
//! - [`dump`]: the element dump, and decoding what it returns back into `Element`s;
//! - [`hairpin`]: the two hairpin sets, emptied and refilled in one batch.
//!
//! Shared here: message types and attribute numbers from `linux/netfilter/nf_tables.h`, batch
//! framing, and [`Map`], which names the map each kind of element lives in.

pub mod dump;
pub mod element;
pub mod hairpin;

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
pub const NFPROTO_IPV4: u8 = 2;
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

/// One of our three maps (see `template.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Inbound,
    InboundFiltered,
    Outbound,
}

impl Map {
    pub const ALL: [Map; 3] = [Map::Inbound, Map::InboundFiltered, Map::Outbound];

    /// The map `element` lives in.
    pub fn of(element: &Element) -> Map {
        match element {
            Element::Inbound { .. } => Map::Inbound,
            Element::FilteredInbound { .. } => Map::InboundFiltered,
            Element::Outbound { .. } => Map::Outbound,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Map::Inbound => "inbound",
            Map::InboundFiltered => "inbound_filtered",
            Map::Outbound => "outbound",
        }
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

    #[test]
    fn maps_are_the_templates_and_the_cores() {
        let names: Vec<&str> = Map::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, template::MAPS);
        // The core names the maps too (for logs); they must agree.
        let sa: std::net::SocketAddrV4 = "192.168.88.2:80".parse().unwrap();
        let protocol = natpmp_pcp_core::Protocol::Udp;
        let remote = natpmp_pcp_core::kernel::RemoteRange::single(*sa.ip(), 80);
        for e in [
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
        ] {
            assert_eq!(Map::of(&e).name(), e.map_name());
        }
    }
}
