//! The element transaction: add and remove elements of our three maps.
//!
//! A transaction is one datagram: `BATCH_BEGIN`, then one `NEWSETELEM` or `DELSETELEM` per
//! change, then `BATCH_END`. The kernel applies the batch all or nothing and, as every member
//! carries `NLM_F_ACK`, answers each member with an ack or an error. One message per change
//! rather than one message with many elements costs a few bytes, but lets an error name the
//! change that caused it: member `i` has sequence number `begin + 1 + i`.
//!
//! Map layouts (see `template.rs`). nftables concatenations put each field in its own 32-bit
//! register, so every field is padded to a multiple of 4 bytes, value first, zeros after;
//! ports and addresses are in network byte order:
//!
//! ```text
//! inbound           key      proto(1)+pad(3) . port(2)+pad(2)                              8
//!                   data     addr(4) . port(2)+pad(2)                                      8
//! inbound_filtered  key      proto(1)+pad(3) . port(2)+pad(2) . addr(4) . port(2)+pad(2)  16
//!                   key_end  the same, with the last remote address and port of the box  16
//!                   data     addr(4) . port(2)+pad(2)                                      8
//! outbound          key      addr(4) . proto(1)+pad(3) . port(2)+pad(2)                   12
//!                   data     addr(4) . port(2)+pad(2)                                      8
//! ```
//!
//! `inbound_filtered` is a set of concatenated intervals (the kernel's pipapo set): an element
//! is a box, a range per field from `key` to `key_end`. Protocol and external port are the same
//! in both, so each box belongs to one mapping; the remote address and port ranges are the
//! box. nft sends `key_end` even for a single point (a PEER), and so do we, when removing too.

use super::NFTA_SET_ELEM_TIMEOUT;
use super::{batch_marker, data_value, nft_type, Map, NFPROTO_IPV4, TABLE};
use super::{NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM};
use super::{NFTA_LIST_ELEM, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END};
use super::{NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE};
use crate::nl::{MsgBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use natpmp_pcp_core::kernel::{Change, Element};
use natpmp_pcp_core::Protocol;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

fn proto_field(p: Protocol) -> [u8; 4] {
    [p.number(), 0, 0, 0]
}

fn port_field(port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [p[0], p[1], 0, 0]
}

/// `address . port`: the data of every map (where the kernel translates to).
pub fn endpoint(sa: SocketAddrV4) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[0..4].copy_from_slice(&sa.ip().octets());
    d[4..8].copy_from_slice(&port_field(sa.port()));
    d
}

/// `inbound` key: `protocol . external port`.
pub fn inbound_key(protocol: Protocol, external_port: u16) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&proto_field(protocol));
    k[4..8].copy_from_slice(&port_field(external_port));
    k
}

/// `inbound_filtered` key (or key end): `protocol . external port . remote address . remote
/// port`.
pub fn filtered_key(
    protocol: Protocol,
    external_port: u16,
    remote_addr: Ipv4Addr,
    remote_port: u16,
) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0..8].copy_from_slice(&inbound_key(protocol, external_port));
    k[8..12].copy_from_slice(&remote_addr.octets());
    k[12..16].copy_from_slice(&port_field(remote_port));
    k
}

/// `outbound` key: `internal address . protocol . internal port`.
pub fn outbound_key(internal: SocketAddrV4, protocol: Protocol) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[0..4].copy_from_slice(&internal.ip().octets());
    k[4..8].copy_from_slice(&proto_field(protocol));
    k[8..12].copy_from_slice(&port_field(internal.port()));
    k
}

/// The data of `element`: where the kernel rewrites matching packets to.
pub fn data(element: &Element) -> [u8; 8] {
    match *element {
        Element::Inbound { internal, .. } | Element::FilteredInbound { internal, .. } => {
            endpoint(internal)
        }
        Element::Outbound { external, .. } => endpoint(external),
    }
}

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

/// About how many bytes a change takes (a filtered add is 140), to size the buffer once.
const BYTES_PER_CHANGE: usize = 144;

/// Encode `changes` as one nf_tables batch, numbering messages from `first_seq`.
pub fn encode_transaction(changes: &[Change], first_seq: u32) -> Transaction {
    let mut b = MsgBuilder::with_capacity(64 + changes.len() * BYTES_PER_CHANGE);
    let begin_seq = first_seq;
    let mut seq = first_seq;
    batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    for change in changes {
        seq = seq.wrapping_add(1);
        setelem(&mut b, change, seq);
    }
    seq = seq.wrapping_add(1);
    batch_marker(&mut b, NFNL_MSG_BATCH_END, seq);
    Transaction {
        bytes: b.into_bytes(),
        begin_seq,
        members: changes.len(),
        next_seq: seq.wrapping_add(1),
    }
}

/// One `NEWSETELEM` (add) or `DELSETELEM` (remove) holding the change's element, in its map.
pub fn setelem(b: &mut MsgBuilder, change: &Change, seq: u32) {
    let element = change.element();
    let (ty, flags) = match change {
        // CREATE|EXCL: adding an element whose key is taken is an error (EEXIST), as it would
        // be a second mapping of the same port; renewals remove first. In the interval map an
        // overlap with another box is refused the same way.
        Change::Add { .. } => (
            NFT_MSG_NEWSETELEM,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
        Change::Remove(_) => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let m = b.begin(nft_type(ty), flags, seq, NFPROTO_IPV4, 0);
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, Map::of(element).name());
    let list = b.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    let elem = b.nest_begin(NFTA_LIST_ELEM);
    match *element {
        Element::Inbound {
            protocol,
            external_port,
            ..
        } => data_value(b, NFTA_SET_ELEM_KEY, &inbound_key(protocol, external_port)),
        Element::FilteredInbound {
            protocol,
            external_port,
            remote,
            ..
        } => {
            let first = filtered_key(
                protocol,
                external_port,
                remote.first_addr,
                remote.first_port,
            );
            let last = filtered_key(protocol, external_port, remote.last_addr, remote.last_port);
            data_value(b, NFTA_SET_ELEM_KEY, &first);
            data_value(b, NFTA_SET_ELEM_KEY_END, &last);
        }
        Element::Outbound {
            internal, protocol, ..
        } => data_value(b, NFTA_SET_ELEM_KEY, &outbound_key(internal, protocol)),
    }
    if let Change::Add { timeout, .. } = change {
        data_value(b, NFTA_SET_ELEM_DATA, &data(element));
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
    use natpmp_pcp_core::kernel::RemoteRange;

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
    fn keys_pad_every_field_to_four_bytes() {
        // tcp = 6 in the first byte of its register; 8080 = 0x1f90, big-endian then padding.
        assert_eq!(
            inbound_key(Protocol::Tcp, 8080),
            [6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        // 192.168.88.2 . port 80 = 0x0050
        assert_eq!(data(&inbound()), [192, 168, 88, 2, 0x00, 0x50, 0, 0]);
        assert_eq!(
            outbound_key(sa([192, 168, 88, 2], 80), Protocol::Tcp),
            [192, 168, 88, 2, 6, 0, 0, 0, 0x00, 0x50, 0, 0]
        );
        assert_eq!(data(&outbound()), [203, 0, 113, 7, 0x1f, 0x90, 0, 0]);
        assert_eq!(
            filtered_key(Protocol::Udp, 5353, Ipv4Addr::new(198, 51, 100, 7), 4000),
            [17, 0, 0, 0, 0x14, 0xe9, 0, 0, 198, 51, 100, 7, 0x0f, 0xa0, 0, 0]
        );
    }

    #[test]
    fn timeouts_round_trip_in_milliseconds() {
        assert_eq!(timeout_ms(Duration::ZERO), None);
        assert_eq!(timeout_ms(Duration::from_micros(10)), Some(1));
        assert_eq!(timeout_ms(Duration::from_secs(60)), Some(60_000));
        assert_eq!(timeout_ms(Duration::MAX), Some(u64::MAX));
    }

    /// The add message for `inbound()`, laid out by hand from nf_tables.h and checked against
    /// `nft --debug=mnl add element ip natpmpd inbound { tcp . 8080 timeout 60s :
    /// 192.168.88.2 . 80 }` (nft 1.0.6 also sends a set id, which we do not need).
    #[cfg(target_endian = "little")]
    #[test]
    fn add_inbound_matches_hand_layout() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &add(inbound()), 5);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // nlmsghdr
            96, 0, 0, 0,            // length: 16 + 4 + 12 + 12 + 52
            0x0c, 0x0a,             // type: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM (12)
            0x05, 0x06,             // flags: REQUEST|ACK (0x5) | EXCL|CREATE (0x600)
            5, 0, 0, 0,             // seq
            0, 0, 0, 0,             // port id: kernel fills in
            // nfgenmsg
            2, 0, 0, 0,             // NFPROTO_IPV4, NFNETLINK_V0, res_id 0
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
        assert_eq!(b.as_bytes(), &expected[..]);
    }

    /// Removing from `outbound` carries only the key, and no CREATE/EXCL.
    #[cfg(target_endian = "little")]
    #[test]
    fn remove_outbound_matches_hand_layout() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(outbound()), 9);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            76, 0, 0, 0,            // length: 16 + 4 + 12 + 16 + 28
            0x0e, 0x0a,             // NFTA subsystem | NFT_MSG_DELSETELEM (14)
            0x05, 0x00,             // REQUEST|ACK
            9, 0, 0, 0,
            0, 0, 0, 0,
            2, 0, 0, 0,
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
        assert_eq!(b.as_bytes(), &expected[..]);
    }

    /// The add message for `filtered()`, checked against a capture on nft 1.0.6, kernel 6.18,
    /// in a throwaway namespace holding only the map:
    /// `nft --debug=mnl add element ip natpmpd inbound_filtered { tcp . 8080 .
    /// 203.0.113.0-203.0.113.255 . 4000-4999 timeout 60s : 192.168.88.2 . 80 }`.
    /// nft's message is 148 bytes: the same attributes, plus NFTA_SET_ELEM_LIST_SET_ID (8
    /// bytes, right after the set name), with TIMEOUT first in the element rather than last
    /// (the kernel reads attributes by type, in any order), seq 1 and no ACK flag.
    #[cfg(target_endian = "little")]
    #[test]
    fn add_filtered_matches_capture() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &add(filtered()), 5);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            140, 0, 0, 0,           // length: 16 + 4 + 12 + 24 + 84
            0x0c, 0x0a,             // NEWSETELEM
            0x05, 0x06,             // REQUEST|ACK | EXCL|CREATE
            5, 0, 0, 0,
            0, 0, 0, 0,
            2, 0, 0, 0,
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
        assert_eq!(b.as_bytes(), &expected[..]);
    }

    /// The remove message for `filtered()`: key and key end, nothing else. Identical to nft's
    /// (`nft --debug=mnl delete element ip natpmpd inbound_filtered { tcp . 8080 .
    /// 203.0.113.0-203.0.113.255 . 4000-4999 }`, 112 bytes, in the same namespace) but for seq
    /// and the ACK flag: nft sends no set id for a delete.
    #[cfg(target_endian = "little")]
    #[test]
    fn remove_filtered_matches_capture() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Remove(filtered()), 9);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            112, 0, 0, 0,           // length: 16 + 4 + 12 + 24 + 56
            0x0e, 0x0a,             // DELSETELEM
            0x05, 0x00,             // REQUEST|ACK
            9, 0, 0, 0,
            0, 0, 0, 0,
            2, 0, 0, 0,
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
        assert_eq!(b.as_bytes(), &expected[..]);
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
        setelem(&mut b, &Change::Remove(peer), 1);
        let bytes = b.into_bytes();
        let key = filtered_key(Protocol::Udp, 5353, Ipv4Addr::new(198, 51, 100, 7), 4000);
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
        let t = encode_transaction(&[], 100);
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
        let changes = [
            Change::Remove(inbound()),
            add(inbound()),
            add(filtered()),
            Change::Remove(outbound()),
        ];
        let t = encode_transaction(&changes, u32::MAX); // numbering wraps
        assert_eq!(t.members, 4);
        assert_eq!(t.first_member_seq(), 0);
        let msgs: Vec<_> = messages(&t.bytes).collect();
        let types: Vec<u16> = msgs.iter().map(|m| m.ty).collect();
        assert_eq!(types, vec![0x10, 0x0a0e, 0x0a0c, 0x0a0c, 0x0a0e, 0x11]);
        for (i, m) in msgs[1..5].iter().enumerate() {
            assert_eq!(t.change_of(m.seq), Some(i));
        }
        assert_eq!(t.change_of(t.begin_seq), None);
        assert_eq!(t.change_of(msgs[5].seq), None);
        assert_eq!(t.next_seq, 5);
        // Each message names its element's map.
        for (m, map) in
            msgs[1..5]
                .iter()
                .zip(["inbound", "inbound", "inbound_filtered", "outbound"])
        {
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
