//! The two hairpin sets (see `template.rs`): `wan_addr`, our external address, and
//! `lan_nets`, the internal networks, an interval set. [`encode_hairpin`] empties and refills
//! both in one batch.

use super::NFT_SET_ELEM_INTERVAL_END;
use super::{batch_marker, nft_type, NFPROTO_INET, TABLE};
use super::{NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM};
use super::{NFTA_DATA_VALUE, NFTA_LIST_ELEM, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY};
use super::{NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE};
use crate::nl::{MsgBuilder, TooLong, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use std::net::Ipv4Addr;

/// The two plain sets hairpin uses.
pub const SET_WAN_ADDR: &str = "wan_addr";
pub const SET_LAN_NETS: &str = "lan_nets";

/// Turn (address, prefix length) pairs into sorted, disjoint, inclusive address ranges:
/// host bits are dropped and overlapping or touching networks merged. The kernel's interval
/// set refuses overlapping elements, and interface addresses come with host bits set
/// (192.168.88.1/24), so both are normal input, not errors. A prefix over 32 is returned as
/// the error.
pub fn lan_ranges(nets: &[(Ipv4Addr, u8)]) -> Result<Vec<(u32, u32)>, (Ipv4Addr, u8)> {
    let mut ranges = Vec::with_capacity(nets.len());
    for &(addr, len) in nets {
        if len > 32 {
            return Err((addr, len));
        }
        // Widen to u64 so that /0 needs no special case.
        let size = 1u64 << (32 - len);
        let start = u64::from(u32::from(addr)) & !(size - 1);
        ranges.push((start as u32, (start + size - 1) as u32));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if u64::from(start) <= u64::from(last.1) + 1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    Ok(merged)
}

/// The elements of an interval set holding `ranges` (from [`lan_ranges`]), as nft 1.0.6
/// writes them: each range is a start element and an end element one past its last address
/// (none when the range reaches 255.255.255.255), and, unless the first range starts at
/// 0.0.0.0, an end element at 0.0.0.0 comes first. The kernel would do without that one,
/// but with it `nft list` shows our set exactly as if nft had written it.
pub fn interval_elements(ranges: &[(u32, u32)]) -> Vec<(Ipv4Addr, bool)> {
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges.first().is_some_and(|r| r.0 != 0) {
        out.push((Ipv4Addr::UNSPECIFIED, true));
    }
    for &(start, end) in ranges {
        out.push((Ipv4Addr::from(start), false));
        if let Some(next) = end.checked_add(1) {
            out.push((Ipv4Addr::from(next), true));
        }
    }
    out
}

/// An encoded hairpin transaction; `members` name each acked message for error messages.
pub struct HairpinTransaction {
    pub bytes: Vec<u8>,
    pub begin_seq: u32,
    /// (seq, what the message does), in order, with consecutive sequence numbers.
    pub members: Vec<(u32, &'static str)>,
    pub next_seq: u32,
}

/// One batch that empties both hairpin sets and fills them again: flush `wan_addr`, add the
/// external address, flush `lan_nets`, add the networks. Flush and add in one batch is what
/// `nft -f` does for `flush set` + `add element`; a packet sees either the old or the new
/// contents, never an empty set in between.
pub fn encode_hairpin(
    external: Option<Ipv4Addr>,
    ranges: &[(u32, u32)],
    first_seq: u32,
) -> Result<HairpinTransaction, TooLong> {
    let mut b = MsgBuilder::with_capacity(256 + ranges.len() * 64);
    let begin_seq = first_seq;
    let mut seq = first_seq;
    batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    let mut members = Vec::with_capacity(4);
    let lan = interval_elements(ranges);
    let wan: Vec<(Ipv4Addr, bool)> = external.map(|a| (a, false)).into_iter().collect();
    for (set, elements, what) in [
        (
            SET_WAN_ADDR,
            &wan,
            ("flush set wan_addr", "add the external address"),
        ),
        (
            SET_LAN_NETS,
            &lan,
            ("flush set lan_nets", "add the internal networks"),
        ),
    ] {
        seq = seq.wrapping_add(1);
        flush_set(&mut b, set, seq);
        members.push((seq, what.0));
        if !elements.is_empty() {
            seq = seq.wrapping_add(1);
            add_set_elements(&mut b, set, elements, seq);
            members.push((seq, what.1));
        }
    }
    seq = seq.wrapping_add(1);
    batch_marker(&mut b, NFNL_MSG_BATCH_END, seq);
    Ok(HairpinTransaction {
        bytes: b.into_bytes()?,
        begin_seq,
        members,
        next_seq: seq.wrapping_add(1),
    })
}

/// `DELSETELEM` without an element list: the kernel removes every element of the set.
pub fn flush_set(b: &mut MsgBuilder, set: &str, seq: u32) {
    let m = b.begin(
        nft_type(NFT_MSG_DELSETELEM),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_INET,
        0,
    );
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    b.end(m);
}

/// `NEWSETELEM` with address keys (no data), each optionally flagged as an interval end.
pub fn add_set_elements(b: &mut MsgBuilder, set: &str, elements: &[(Ipv4Addr, bool)], seq: u32) {
    let m = b.begin(
        nft_type(NFT_MSG_NEWSETELEM),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        seq,
        NFPROTO_INET,
        0,
    );
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    let list = b.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    for &(addr, end) in elements {
        let elem = b.nest_begin(NFTA_LIST_ELEM);
        if end {
            b.attr(
                NFTA_SET_ELEM_FLAGS,
                &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
            );
        }
        let key = b.nest_begin(NFTA_SET_ELEM_KEY);
        b.attr(NFTA_DATA_VALUE, &addr.octets());
        b.nest_end(key);
        b.nest_end(elem);
    }
    b.nest_end(list);
    b.end(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::messages;

    fn net(a: [u8; 4], len: u8) -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(a), len)
    }

    fn ip(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a))
    }

    #[test]
    fn lan_ranges_drop_host_bits_and_merge() {
        assert_eq!(lan_ranges(&[]), Ok(vec![]));
        assert_eq!(
            lan_ranges(&[net([192, 168, 88, 1], 24)]),
            Ok(vec![(ip([192, 168, 88, 0]), ip([192, 168, 88, 255]))])
        );
        // Overlapping (10/8 holds 10.1/16), touching (.0/25 and .128/25), and out of order.
        assert_eq!(
            lan_ranges(&[
                net([10, 1, 2, 3], 16),
                net([172, 16, 0, 128], 25),
                net([10, 0, 0, 0], 8),
                net([172, 16, 0, 0], 25),
                net([10, 9, 9, 9], 32),
            ]),
            Ok(vec![
                (ip([10, 0, 0, 0]), ip([10, 255, 255, 255])),
                (ip([172, 16, 0, 0]), ip([172, 16, 0, 255])),
            ])
        );
        assert_eq!(lan_ranges(&[net([1, 2, 3, 4], 0)]), Ok(vec![(0, u32::MAX)]));
        assert_eq!(
            lan_ranges(&[net([1, 2, 3, 4], 32), net([1, 2, 3, 4], 33)]),
            Err(net([1, 2, 3, 4], 33))
        );
    }

    #[test]
    fn interval_elements_follow_nft() {
        let lan = lan_ranges(&[net([192, 168, 88, 0], 24)]).unwrap();
        assert_eq!(
            interval_elements(&lan),
            vec![
                (Ipv4Addr::new(0, 0, 0, 0), true),
                (Ipv4Addr::new(192, 168, 88, 0), false),
                (Ipv4Addr::new(192, 168, 89, 0), true),
            ]
        );
        // A range from 0.0.0.0 needs no leading end; one up to 255.255.255.255 has no end.
        let edges = lan_ranges(&[net([0, 0, 0, 0], 8), net([128, 0, 0, 0], 1)]).unwrap();
        assert_eq!(
            interval_elements(&edges),
            vec![
                (Ipv4Addr::new(0, 0, 0, 0), false),
                (Ipv4Addr::new(1, 0, 0, 0), true),
                (Ipv4Addr::new(128, 0, 0, 0), false),
            ]
        );
        assert_eq!(interval_elements(&[]), vec![]);
    }

    /// Checked against `nft --debug=mnl -f` of `flush set inet natpmpd wan_addr`, `add element
    /// inet natpmpd wan_addr { 203.0.113.1 }`, `flush set inet natpmpd lan_nets`, `add element
    /// inet natpmpd lan_nets { 192.168.88.0/24 }` (nft 1.0.6, in a throwaway namespace as in
    /// `element.rs`). Differences, none of which the kernel minds: nft names the set before
    /// the table in a flush, sends the set's id (NFTA_SET_ELEM_LIST_SET_ID), numbers list
    /// elements 1, 2, 3 instead of 1, 1, 1, and asks for no acks.
    #[cfg(target_endian = "little")]
    #[test]
    fn hairpin_transaction_matches_hand_layout() {
        let lan = lan_ranges(&[net([192, 168, 88, 1], 24)]).unwrap();
        let tx = encode_hairpin(Some(Ipv4Addr::new(203, 0, 113, 1)), &lan, 40).unwrap();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // BATCH_BEGIN
            20, 0, 0, 0, 0x10, 0, 0x01, 0, 40, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 10,
            // DELSETELEM wan_addr, no element list: flush
            48, 0, 0, 0, 0x0e, 0x0a, 0x05, 0x00, 41, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'w', b'a', b'n', b'_', b'a', b'd', b'd', b'r', 0, 0, 0, 0,
            // NEWSETELEM wan_addr { 203.0.113.1 }: REQUEST|ACK|CREATE
            68, 0, 0, 0, 0x0c, 0x0a, 0x05, 0x04, 42, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'w', b'a', b'n', b'_', b'a', b'd', b'd', b'r', 0, 0, 0, 0,
            20, 0, 0x03, 0x80,      // ELEMENTS
            16, 0, 0x01, 0x80,      //   LIST_ELEM
            12, 0, 0x01, 0x80,      //     KEY
            8, 0, 1, 0,             //       VALUE
            203, 0, 113, 1,
            // DELSETELEM lan_nets
            48, 0, 0, 0, 0x0e, 0x0a, 0x05, 0x00, 43, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'l', b'a', b'n', b'_', b'n', b'e', b't', b's', 0, 0, 0, 0,
            // NEWSETELEM lan_nets { 0.0.0.0 end, 192.168.88.0, 192.168.89.0 end }
            116, 0, 0, 0, 0x0c, 0x0a, 0x05, 0x04, 44, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'l', b'a', b'n', b'_', b'n', b'e', b't', b's', 0, 0, 0, 0,
            68, 0, 0x03, 0x80,      // ELEMENTS: 4 + 24 + 16 + 24, as nft's
            24, 0, 0x01, 0x80,      //   LIST_ELEM
            8, 0, 3, 0,             //     FLAGS: be32 NFT_SET_ELEM_INTERVAL_END
            0, 0, 0, 1,
            12, 0, 0x01, 0x80,      //     KEY
            8, 0, 1, 0, 0, 0, 0, 0,
            16, 0, 0x01, 0x80,      //   LIST_ELEM (a start: no flags)
            12, 0, 0x01, 0x80,
            8, 0, 1, 0, 192, 168, 88, 0,
            24, 0, 0x01, 0x80,      //   LIST_ELEM
            8, 0, 3, 0, 0, 0, 0, 1,
            12, 0, 0x01, 0x80,
            8, 0, 1, 0, 192, 168, 89, 0,
            // BATCH_END
            20, 0, 0, 0, 0x11, 0, 0x01, 0, 45, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 10,
        ];
        assert_eq!(tx.bytes, expected);
        assert_eq!(tx.begin_seq, 40);
        assert_eq!(tx.next_seq, 46);
        let seqs: Vec<u32> = tx.members.iter().map(|m| m.0).collect();
        assert_eq!(seqs, vec![41, 42, 43, 44]);
    }

    /// Turning hairpin off is two flushes and nothing else.
    #[test]
    fn hairpin_off_only_flushes() {
        let tx = encode_hairpin(None, &[], 1).unwrap();
        let types: Vec<u16> = messages(&tx.bytes).map(|m| m.ty).collect();
        assert_eq!(types, vec![0x10, 0x0a0e, 0x0a0e, 0x11]);
        assert_eq!(
            tx.members,
            vec![(2, "flush set wan_addr"), (3, "flush set lan_nets")]
        );
    }

    #[test]
    fn thousands_of_internal_networks_are_refused_not_truncated() {
        // Every other /32 of 10.0.0.0/8: ranges that never merge, two elements each (24 and 16
        // bytes), so the element list outgrows netlink's 65 535-byte nest near 1 640 ranges.
        let nets = |n: u32| -> Vec<(Ipv4Addr, u8)> {
            (0..n)
                .map(|i| (Ipv4Addr::from(0x0a00_0000 + 2 * i), 32))
                .collect()
        };
        let fits = lan_ranges(&nets(1600)).unwrap();
        let tx = encode_hairpin(None, &fits, 1).expect("1600 ranges fit one nest");
        // Batch begin, flush wan_addr, flush lan_nets, add lan_nets, batch end.
        let add = messages(&tx.bytes).nth(3).expect("the lan_nets add");
        assert!(add.payload.len() > 60_000, "{}", add.payload.len());

        let too_many = lan_ranges(&nets(3000)).unwrap();
        let e = match encode_hairpin(Some(Ipv4Addr::new(203, 0, 113, 1)), &too_many, 1) {
            Ok(tx) => panic!("encoded a {} byte batch", tx.bytes.len()),
            Err(e) => e,
        };
        assert_eq!((e.ty, e.max), (NFTA_SET_ELEM_LIST_ELEMENTS, 65_535));
        assert!(e.len > 65_535, "{e:?}");
    }
}
