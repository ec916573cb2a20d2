//! The element transaction: add and remove elements of our three maps and two pinhole sets.
//!
//! A transaction is one datagram: `BATCH_BEGIN`, then one `NEWSETELEM` or `DELSETELEM` per
//! change, then `BATCH_END`. The kernel applies the batch all or nothing. One message per
//! change rather than one message with many elements costs a few bytes, but lets an error name
//! the change that caused it: member `i` has sequence number `begin + 1 + i`.
//!
//! Only the last member carries `NLM_F_ACK`. nfnetlink answers a member without it only when
//! it fails, and delivers a batch's answers in member order once the whole batch is processed,
//! so the last member's answer (ack or error) comes after every other error and ends the
//! exchange (`session::Acks::Last`). nft itself sets no ack at all. An ack per member cost the
//! kernel an skb and us a `recv` each: 16 % of the daemon's time while filling 100 000
//! mappings (perf), for answers that said only "done".
//!
//! The key and data layouts of each map and set are in `keys.rs`.

use super::keys;
use super::NFTA_SET_ELEM_TIMEOUT;
use super::{batch_marker, data_value, nft_type, ElementSet, NFPROTO_INET, TABLE};
use super::{NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM};
use super::{NFTA_LIST_ELEM, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END};
use super::{NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE};
use crate::nl::{MsgBuilder, TooLong, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use natpmp_pcp_core::kernel::Change;
use std::time::Duration;

/// The element timeout in milliseconds, or `None` for "no expiry" (a zero duration). A
/// sub-millisecond timeout rounds up to 1 ms rather than down to "forever".
pub fn timeout_ms(t: Duration) -> Option<u64> {
    if t.is_zero() {
        return None;
    }
    Some(u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// An encoded transaction.
pub struct Transaction {
    pub bytes: Vec<u8>,
    /// Sequence number of `BATCH_BEGIN`: batch-wide errors (permission, out of memory, a
    /// failed commit) are reported against it. Change `i` is `begin_seq + 1 + i`.
    pub begin_seq: u32,
    /// How many member messages there are (one per change).
    pub members: usize,
    /// The sequence number after the last one used.
    pub next_seq: u32,
}

impl Transaction {
    /// The sequence number of the first change's message.
    pub fn first_member_seq(&self) -> u32 {
        self.begin_seq.wrapping_add(1)
    }

    /// The index of the change whose message had sequence number `seq`, if any.
    pub fn change_of(&self, seq: u32) -> Option<usize> {
        let i = seq.wrapping_sub(self.first_member_seq()) as usize;
        (i < self.members).then_some(i)
    }
}

/// About how many bytes a change takes (a filtered add is 140, a filtered pinhole add 180),
/// to size the buffer once.
const BYTES_PER_CHANGE: usize = 160;

/// Encode `changes` as one nf_tables batch, numbering messages from `first_seq`.
pub fn encode_transaction(changes: &[Change], first_seq: u32) -> Result<Transaction, TooLong> {
    encode_transaction_into(Vec::new(), changes, first_seq)
}

/// [`encode_transaction`] into `buf` (emptied first; hand back `Transaction::bytes` to use it
/// again).
pub fn encode_transaction_into(
    mut buf: Vec<u8>,
    changes: &[Change],
    first_seq: u32,
) -> Result<Transaction, TooLong> {
    buf.clear();
    buf.reserve(64 + changes.len() * BYTES_PER_CHANGE);
    let mut b = MsgBuilder::reusing(buf);
    let begin_seq = first_seq;
    let mut seq = first_seq;
    batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    for (i, change) in changes.iter().enumerate() {
        seq = seq.wrapping_add(1);
        setelem(&mut b, change, seq, i + 1 == changes.len());
    }
    seq = seq.wrapping_add(1);
    batch_marker(&mut b, NFNL_MSG_BATCH_END, seq);
    Ok(Transaction {
        bytes: b.into_bytes()?,
        begin_seq,
        members: changes.len(),
        next_seq: seq.wrapping_add(1),
    })
}

/// One `NEWSETELEM` (add) or `DELSETELEM` (remove) holding the change's element, in its map
/// or set: the key (and for a box the key end); an add also carries the data (maps only) and
/// the timeout. With `ack`, the kernel answers it even when it succeeds.
pub fn setelem(b: &mut MsgBuilder, change: &Change, seq: u32, ack: bool) {
    let element = change.element();
    let (ty, mut flags) = match change {
        // CREATE|EXCL: adding an element whose key is taken is an error (EEXIST), as it would
        // be a second mapping of the same port; renewals remove first. In the interval map and
        // set an overlap with another box is refused the same way.
        Change::Add { .. } => (
            NFT_MSG_NEWSETELEM,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
        ),
        Change::Remove(_) => (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
    };
    if ack {
        flags |= NLM_F_ACK;
    }
    let m = b.begin(nft_type(ty), flags, seq, NFPROTO_INET, 0);
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, ElementSet::of(element).name());
    let list = b.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    let elem = b.nest_begin(NFTA_LIST_ELEM);
    let (key, key_end) = keys::key(element);
    data_value(b, NFTA_SET_ELEM_KEY, key.as_slice());
    if let Some(end) = key_end {
        data_value(b, NFTA_SET_ELEM_KEY_END, end.as_slice());
    }
    if let Change::Add { timeout, .. } = change {
        if let Some(data) = keys::data(element) {
            data_value(b, NFTA_SET_ELEM_DATA, &data);
        }
        if let Some(ms) = timeout_ms(*timeout) {
            b.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
        }
    }
    b.nest_end(elem);
    b.nest_end(list);
    b.end(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::messages;
    use natpmp_pcp_core::kernel::{Element, RemoteRange};
    use natpmp_pcp_core::Protocol;
    use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};

    fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn inbound() -> Element {
        Element::Inbound {
            protocol: Protocol::Tcp,
            external_port: 8080,
            internal: sa([192, 168, 88, 2], 80),
        }
    }

    fn outbound() -> Element {
        Element::Outbound {
            internal: sa([192, 168, 88, 2], 80),
            protocol: Protocol::Tcp,
            external: sa([203, 0, 113, 7], 8080),
        }
    }

    /// The element of the captures below: tcp 8080 from 203.0.113.0/24, ports 4000-4999.
    fn filtered() -> Element {
        Element::FilteredInbound {
            protocol: Protocol::Tcp,
            external_port: 8080,
            remote: RemoteRange {
                first_addr: Ipv4Addr::new(203, 0, 113, 0),
                last_addr: Ipv4Addr::new(203, 0, 113, 255),
                first_port: 4000,
                last_port: 4999,
            },
            internal: sa([192, 168, 88, 2], 80),
        }
    }

    fn add(element: Element) -> Change {
        Change::Add {
            element,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn timeouts_round_trip_in_milliseconds() {
        assert_eq!(timeout_ms(Duration::ZERO), None);
        assert_eq!(timeout_ms(Duration::from_micros(10)), Some(1));
        assert_eq!(timeout_ms(Duration::from_secs(60)), Some(60_000));
        assert_eq!(timeout_ms(Duration::MAX), Some(u64::MAX));
    }

    /// The add message for `inbound()`, laid out by hand from nf_tables.h and checked against
    /// a capture (see `add_filtered_matches_capture` for where and how): `nft --debug=mnl add
    /// element inet natpmpd inbound { tcp . 8080 timeout 60s : 192.168.88.2 . 80 }`. nft's
    /// message is 104 bytes: the same attributes plus NFTA_SET_ELEM_LIST_SET_ID (8 bytes,
    /// after the set name), with TIMEOUT first in the element, seq 1 and no ACK flag.
    #[cfg(target_endian = "little")]
    #[test]
    fn add_inbound_matches_hand_layout() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &add(inbound()), 5, true);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // nlmsghdr
            96, 0, 0, 0,            // length: 16 + 4 + 12 + 12 + 52
            0x0c, 0x0a,             // type: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM (12)
            0x05, 0x06,             // flags: REQUEST|ACK (0x5) | EXCL|CREATE (0x600)
            5, 0, 0, 0,             // seq
            0, 0, 0, 0,             // port id: kernel fills in
            // nfgenmsg
            1, 0, 0, 0,             // NFPROTO_INET, NFNETLINK_V0, res_id 0
            12, 0, 1, 0,            // NFTA_SET_ELEM_LIST_TABLE, len 4 + 8
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            12, 0, 2, 0,            // NFTA_SET_ELEM_LIST_SET, len 4 + 8
            b'i', b'n', b'b', b'o', b'u', b'n', b'd', 0,
            52, 0, 0x03, 0x80,      // NFTA_SET_ELEM_LIST_ELEMENTS | NESTED
            48, 0, 0x01, 0x80,      //   NFTA_LIST_ELEM | NESTED
            16, 0, 0x01, 0x80,      //     NFTA_SET_ELEM_KEY | NESTED
            12, 0, 1, 0,            //       NFTA_DATA_VALUE, 8 bytes
            6, 0, 0, 0, 0x1f, 0x90, 0, 0,
            16, 0, 0x02, 0x80,      //     NFTA_SET_ELEM_DATA | NESTED
            12, 0, 1, 0,            //       NFTA_DATA_VALUE, 8 bytes
            192, 168, 88, 2, 0, 80, 0, 0,
            12, 0, 4, 0,            //     NFTA_SET_ELEM_TIMEOUT, be64 ms: 60000 = 0xea60
            0, 0, 0, 0, 0, 0, 0xea, 0x60,
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    /// Removing from `outbound` carries only the key, and no CREATE/EXCL. Identical to nft's
    /// `delete element inet natpmpd outbound { 192.168.88.2 . tcp . 80 }` (76 bytes) but for
    /// seq and the ACK flag.
    #[cfg(target_endian = "little")]
    #[test]
    fn remove_outbound_matches_hand_layout() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(outbound()), 9, true);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            76, 0, 0, 0,            // length: 16 + 4 + 12 + 16 + 28
            0x0e, 0x0a,             // NFTA subsystem | NFT_MSG_DELSETELEM (14)
            0x05, 0x00,             // REQUEST|ACK
            9, 0, 0, 0,
            0, 0, 0, 0,
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0,
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0,            // "outbound\0" is 9 bytes: len 13, padded to 16
            b'o', b'u', b't', b'b', b'o', b'u', b'n', b'd', 0, 0, 0, 0,
            28, 0, 0x03, 0x80,
            24, 0, 0x01, 0x80,
            20, 0, 0x01, 0x80,      // key
            16, 0, 1, 0,            // 12-byte value
            192, 168, 88, 2, 6, 0, 0, 0, 0, 80, 0, 0,
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    /// The add message for `filtered()`, checked against a capture on nft 1.0.6, kernel 6.18,
    /// in a throwaway namespace (`ip netns add npd-capture-$$`, load `template::ruleset`
    /// there with `ip netns exec npd-capture-$$ nft -f`, capture, `ip netns del
    /// npd-capture-$$`; the other captures here were taken the same way):
    /// `nft --debug=mnl add element inet natpmpd inbound_filtered { tcp . 8080 .
    /// 203.0.113.0-203.0.113.255 . 4000-4999 timeout 60s : 192.168.88.2 . 80 }`.
    /// nft's message is 148 bytes: the same attributes, plus NFTA_SET_ELEM_LIST_SET_ID (8
    /// bytes, right after the set name), with TIMEOUT first in the element rather than last
    /// (the kernel reads attributes by type, in any order), seq 1 and no ACK flag.
    #[cfg(target_endian = "little")]
    #[test]
    fn add_filtered_matches_capture() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &add(filtered()), 5, true);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            140, 0, 0, 0,           // length: 16 + 4 + 12 + 24 + 84
            0x0c, 0x0a,             // NEWSETELEM
            0x05, 0x06,             // REQUEST|ACK | EXCL|CREATE
            5, 0, 0, 0,
            0, 0, 0, 0,
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0,
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            21, 0, 2, 0,            // "inbound_filtered\0" is 17 bytes: len 21, padded to 24
            b'i', b'n', b'b', b'o', b'u', b'n', b'd', b'_',
            b'f', b'i', b'l', b't', b'e', b'r', b'e', b'd', 0, 0, 0, 0,
            84, 0, 0x03, 0x80,      // ELEMENTS
            80, 0, 0x01, 0x80,      //   LIST_ELEM
            24, 0, 0x01, 0x80,      //     KEY
            20, 0, 1, 0,            //       VALUE, 16 bytes: the first corner of the box
            6, 0, 0, 0,             //         tcp
            0x1f, 0x90, 0, 0,       //         8080
            203, 0, 113, 0,         //         203.0.113.0
            0x0f, 0xa0, 0, 0,       //         4000
            24, 0, 0x0a, 0x80,      //     KEY_END (10) | NESTED
            20, 0, 1, 0,            //       VALUE: the last corner
            6, 0, 0, 0,
            0x1f, 0x90, 0, 0,
            203, 0, 113, 255,       //         203.0.113.255
            0x13, 0x87, 0, 0,       //         4999
            16, 0, 0x02, 0x80,      //     DATA
            12, 0, 1, 0,
            192, 168, 88, 2, 0, 80, 0, 0,
            12, 0, 4, 0,            //     TIMEOUT 60000 ms
            0, 0, 0, 0, 0, 0, 0xea, 0x60,
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    /// The remove message for `filtered()`: key and key end, nothing else. Identical to nft's
    /// (`nft --debug=mnl delete element inet natpmpd inbound_filtered { tcp . 8080 .
    /// 203.0.113.0-203.0.113.255 . 4000-4999 }`, 112 bytes, in the same namespace) but for seq
    /// and the ACK flag: nft sends no set id for a delete.
    #[cfg(target_endian = "little")]
    #[test]
    fn remove_filtered_matches_capture() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(filtered()), 9, true);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            112, 0, 0, 0,           // length: 16 + 4 + 12 + 24 + 56
            0x0e, 0x0a,             // DELSETELEM
            0x05, 0x00,             // REQUEST|ACK
            9, 0, 0, 0,
            0, 0, 0, 0,
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0,
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            21, 0, 2, 0,
            b'i', b'n', b'b', b'o', b'u', b'n', b'd', b'_',
            b'f', b'i', b'l', b't', b'e', b'r', b'e', b'd', 0, 0, 0, 0,
            56, 0, 0x03, 0x80,
            52, 0, 0x01, 0x80,
            24, 0, 0x01, 0x80,      // KEY
            20, 0, 1, 0,
            6, 0, 0, 0, 0x1f, 0x90, 0, 0, 203, 0, 113, 0, 0x0f, 0xa0, 0, 0,
            24, 0, 0x0a, 0x80,      // KEY_END
            20, 0, 1, 0,
            6, 0, 0, 0, 0x1f, 0x90, 0, 0, 203, 0, 113, 255, 0x13, 0x87, 0, 0,
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    fn host6() -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8:1::10".parse().unwrap(), 8080, 0, 0)
    }

    fn pinhole() -> Element {
        Element::Pinhole {
            protocol: Protocol::Tcp,
            internal: host6(),
        }
    }

    /// The element of the captures below: tcp 8080 of 2001:db8:1::10, from 2001:db8:ff::/64,
    /// ports 4000-4999.
    fn filtered_pinhole() -> Element {
        Element::FilteredPinhole {
            protocol: Protocol::Tcp,
            internal: host6(),
            remote: RemoteRange {
                first_addr: "2001:db8:ff::".parse().unwrap(),
                last_addr: "2001:db8:ff:0:ffff:ffff:ffff:ffff".parse().unwrap(),
                first_port: 4000,
                last_port: 4999,
            },
        }
    }

    /// The add message for `pinhole()`: a set element, key and timeout, no data. Checked
    /// against `nft --debug=mnl add element inet natpmpd pinholes { 2001:db8:1::10 . tcp .
    /// 8080 timeout 60s }` (108 bytes: the same plus the set id, timeout first, as above).
    /// The remove is the same message without TIMEOUT (88 bytes) and is nft's byte for byte
    /// but for seq and flags (`nft --debug=mnl delete element inet natpmpd pinholes { ... }`).
    #[cfg(target_endian = "little")]
    #[test]
    fn add_and_remove_pinhole_match_capture() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &add(pinhole()), 5, true);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            100, 0, 0, 0,           // length: 16 + 4 + 12 + 16 + 52
            0x0c, 0x0a,             // NEWSETELEM
            0x05, 0x06,             // REQUEST|ACK | EXCL|CREATE
            5, 0, 0, 0,
            0, 0, 0, 0,
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0,
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0,            // "pinholes\0" is 9 bytes: len 13, padded to 16
            b'p', b'i', b'n', b'h', b'o', b'l', b'e', b's', 0, 0, 0, 0,
            52, 0, 0x03, 0x80,      // ELEMENTS
            48, 0, 0x01, 0x80,      //   LIST_ELEM
            32, 0, 0x01, 0x80,      //     KEY
            28, 0, 1, 0,            //       VALUE, 24 bytes
            0x20, 0x01, 0x0d, 0xb8, //         2001:db8:1::10
            0, 1, 0, 0,
            0, 0, 0, 0,
            0, 0, 0, 0x10,
            6, 0, 0, 0,             //         tcp
            0x1f, 0x90, 0, 0,       //         8080
            12, 0, 4, 0,            //     TIMEOUT 60000 ms
            0, 0, 0, 0, 0, 0, 0xea, 0x60,
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(pinhole()), 5, true);
        let mut removal = expected[..88].to_vec();
        removal[0] = 88;
        removal[4] = 0x0e; // DELSETELEM
        removal[7] = 0; // REQUEST|ACK
        removal[48] = 40; // ELEMENTS: 4 + 36
        removal[52] = 36; // LIST_ELEM: 4 + 32
        assert_eq!(b.as_bytes().unwrap(), &removal[..]);
    }

    /// The add message for `filtered_pinhole()`, checked against `nft --debug=mnl add element
    /// inet natpmpd pinholes_filtered { 2001:db8:1::10 . tcp . 8080 . 2001:db8:ff::/64 .
    /// 4000-4999 timeout 60s }`: nft's is 188 bytes, ours 180, differing as for the others
    /// (set id, timeout first, seq, flags).
    #[cfg(target_endian = "little")]
    #[test]
    fn add_filtered_pinhole_matches_capture() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &add(filtered_pinhole()), 5, true);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            180, 0, 0, 0,           // length: 16 + 4 + 12 + 24 + 124
            0x0c, 0x0a,             // NEWSETELEM
            0x05, 0x06,             // REQUEST|ACK | EXCL|CREATE
            5, 0, 0, 0,
            0, 0, 0, 0,
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0,
            b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            22, 0, 2, 0,            // "pinholes_filtered\0" is 18 bytes: len 22, padded to 24
            b'p', b'i', b'n', b'h', b'o', b'l', b'e', b's',
            b'_', b'f', b'i', b'l', b't', b'e', b'r', b'e', b'd', 0, 0, 0,
            124, 0, 0x03, 0x80,     // ELEMENTS
            120, 0, 0x01, 0x80,     //   LIST_ELEM
            52, 0, 0x01, 0x80,      //     KEY
            48, 0, 1, 0,            //       VALUE, 44 bytes: the first corner of the box
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // 2001:db8:1::10
            6, 0, 0, 0,             //         tcp
            0x1f, 0x90, 0, 0,       //         8080
            0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:ff::
            0x0f, 0xa0, 0, 0,       //         4000
            52, 0, 0x0a, 0x80,      //     KEY_END
            48, 0, 1, 0,            //       VALUE: the last corner
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            6, 0, 0, 0,
            0x1f, 0x90, 0, 0,
            0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, // 2001:db8:ff:0:ffff:ffff:ffff:ffff
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x13, 0x87, 0, 0,       //         4999
            12, 0, 4, 0,            //     TIMEOUT 60000 ms
            0, 0, 0, 0, 0, 0, 0xea, 0x60,
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    /// The remove message for `filtered_pinhole()`: key and key end. nft's (`nft --debug=mnl
    /// delete element inet natpmpd pinholes_filtered { 2001:db8:1::10 . tcp . 8080 .
    /// 2001:db8:ff::/64 . 4000-4999 }`, 168 bytes) is the same but for seq and flags.
    #[cfg(target_endian = "little")]
    #[test]
    fn remove_filtered_pinhole_matches_capture() {
        let mut added = MsgBuilder::new();
        setelem(&mut added, &add(filtered_pinhole()), 5, true);
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(filtered_pinhole()), 5, true);
        let bytes = b.as_bytes().unwrap();
        assert_eq!(bytes.len(), 168);
        assert_eq!(&bytes[..8], &[168, 0, 0, 0, 0x0e, 0x0a, 0x05, 0x00]);
        // ELEMENTS 112 and LIST_ELEM 108; then the same key and key end as the add.
        assert_eq!(&bytes[56..64], &[112, 0, 0x03, 0x80, 108, 0, 0x01, 0x80]);
        assert_eq!(&bytes[64..], &added.as_bytes().unwrap()[64..168]);
        assert_eq!(&bytes[8..56], &added.as_bytes().unwrap()[8..56]);
    }

    /// A PEER is a box of one address and one port: key end equals key, as nft sends it
    /// (`nft --debug=mnl add element ... inbound_filtered { udp . 5353 . 198.51.100.7 . 4000 :
    /// 192.168.88.9 . 53 }` sends KEY_END too).
    #[test]
    fn a_single_remote_sends_key_end_equal_to_key() {
        let peer = Element::FilteredInbound {
            protocol: Protocol::Udp,
            external_port: 5353,
            remote: RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 4000),
            internal: sa([192, 168, 88, 9], 53),
        };
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(peer), 1, true);
        let bytes = b.into_bytes().unwrap();
        let key = keys::filtered_key(Protocol::Udp, 5353, Ipv4Addr::new(198, 51, 100, 7), 4000);
        let at: Vec<usize> = bytes
            .windows(16)
            .enumerate()
            .filter(|(_, w)| *w == key)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 2, "key and key end: {bytes:?}");
    }

    /// Batch framing as nft sends it: 20-byte messages, res_id = 10 big-endian.
    #[cfg(target_endian = "little")]
    #[test]
    fn batch_is_framed_by_begin_and_end() {
        let t = encode_transaction(&[], 100).unwrap();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            20, 0, 0, 0, 0x10, 0, 0x01, 0, 100, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 10,
            20, 0, 0, 0, 0x11, 0, 0x01, 0, 101, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 10,
        ];
        assert_eq!(t.bytes, expected);
        assert_eq!(t.begin_seq, 100);
        assert_eq!(t.next_seq, 102);
    }

    #[test]
    fn transaction_has_one_member_per_change_in_its_map() {
        // Both families in one batch.
        let changes = [
            Change::Remove(inbound()),
            add(inbound()),
            add(filtered()),
            Change::Remove(outbound()),
            add(pinhole()),
            Change::Remove(filtered_pinhole()),
        ];
        let t = encode_transaction(&changes, u32::MAX).unwrap(); // numbering wraps
        assert_eq!(t.members, 6);
        assert_eq!(t.first_member_seq(), 0);
        let msgs: Vec<_> = messages(&t.bytes).collect();
        let types: Vec<u16> = msgs.iter().map(|m| m.ty).collect();
        assert_eq!(
            types,
            vec![0x10, 0x0a0e, 0x0a0c, 0x0a0c, 0x0a0e, 0x0a0c, 0x0a0e, 0x11]
        );
        for (i, m) in msgs[1..7].iter().enumerate() {
            assert_eq!(t.change_of(m.seq), Some(i));
            assert_eq!(m.payload[0], NFPROTO_INET);
            // Only the last member asks for an ack; the others are answered if they fail.
            assert_eq!(m.flags & NLM_F_ACK != 0, i == 5, "member {i}");
        }
        assert_eq!(t.change_of(t.begin_seq), None);
        assert_eq!(t.change_of(msgs[7].seq), None);
        assert_eq!(t.next_seq, 7);
        // Each message names its element's map or set.
        let names = [
            "inbound",
            "inbound",
            "inbound_filtered",
            "outbound",
            "pinholes",
            "pinholes_filtered",
        ];
        for (m, map) in msgs[1..7].iter().zip(names) {
            let needle = format!("{map}\0");
            assert!(
                m.payload
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()),
                "{map}"
            );
        }
    }
}
