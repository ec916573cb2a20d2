//! nf_tables messages for our two maps: the element transaction and the element dump.
//!
//! A transaction is one datagram: `BATCH_BEGIN`, then per change one `NEWSETELEM` or
//! `DELSETELEM` per map, then `BATCH_END`. The kernel applies the batch all or nothing and, as
//! every member carries `NLM_F_ACK`, answers each member with an ack or an error. One message
//! per (change, map) rather than one message with many elements costs a few bytes, but lets an
//! error name the change that caused it.
//!
//! Map layouts (see `template.rs`). nftables concatenations put each field in its own 32-bit
//! register, so every field is padded to a multiple of 4 bytes, value first, zeros after:
//!
//! ```text
//! inbound   key  proto(1)+pad(3) . port(2, big-endian)+pad(2)           8 bytes
//!           data addr(4) . port(2)+pad(2)                               8 bytes
//! outbound  key  addr(4) . proto(1)+pad(3) . port(2)+pad(2)            12 bytes
//!           data addr(4) . port(2)+pad(2)                               8 bytes
//! ```

use crate::nl::{self, Attr, MsgBuilder, NFGENMSG_LEN, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP};
use crate::nl::{NLM_F_EXCL, NLM_F_REQUEST};
use natpmp_pcp_core::forward::{Change, Forward, Protocol};
use std::net::Ipv4Addr;
use std::time::Duration;

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
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
// enum nft_data_attributes
const NFTA_DATA_VALUE: u16 = 1;

/// The full netlink message type of an nf_tables message.
pub const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One of our two maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Inbound,
    Outbound,
}

impl Map {
    pub fn name(self) -> &'static str {
        match self {
            Map::Inbound => "inbound",
            Map::Outbound => "outbound",
        }
    }
}

fn port_field(port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [p[0], p[1], 0, 0]
}

/// `protocol . external_port`
pub fn inbound_key(f: &Forward) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0] = f.protocol.number();
    k[4..8].copy_from_slice(&port_field(f.external_port));
    k
}

/// `internal_addr . internal_port`
pub fn inbound_data(f: &Forward) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[0..4].copy_from_slice(&f.internal_addr.octets());
    d[4..8].copy_from_slice(&port_field(f.internal_port));
    d
}

/// `internal_addr . protocol . internal_port`
pub fn outbound_key(f: &Forward) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[0..4].copy_from_slice(&f.internal_addr.octets());
    k[4] = f.protocol.number();
    k[8..12].copy_from_slice(&port_field(f.internal_port));
    k
}

/// `external_addr . external_port`
pub fn outbound_data(f: &Forward) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[0..4].copy_from_slice(&f.external_addr.octets());
    d[4..8].copy_from_slice(&port_field(f.external_port));
    d
}

/// The element timeout in milliseconds, or `None` for "no expiry" (a zero duration). A
/// sub-millisecond timeout rounds up to 1 ms rather than down to "forever".
pub fn timeout_ms(t: Duration) -> Option<u64> {
    if t.is_zero() {
        return None;
    }
    Some(u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// What one member message of a batch was for, so its answer can be traced to a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub seq: u32,
    /// Index into the `changes` slice.
    pub change: usize,
    pub map: Map,
}

/// An encoded transaction.
pub struct Transaction {
    pub bytes: Vec<u8>,
    /// Sequence number of `BATCH_BEGIN`: batch-wide errors (permission, out of memory, a
    /// failed commit) are reported against it.
    pub begin_seq: u32,
    pub members: Vec<Member>,
    /// The sequence number after the last one used.
    pub next_seq: u32,
}

/// About how many bytes a change takes, to size the buffer once.
const BYTES_PER_CHANGE: usize = 2 * 96;

/// Encode `changes` as one nf_tables batch, numbering messages from `first_seq`.
pub fn encode_transaction(changes: &[Change], first_seq: u32) -> Transaction {
    let mut b = MsgBuilder::with_capacity(64 + changes.len() * BYTES_PER_CHANGE);
    let mut seq = first_seq;
    let begin_seq = seq;
    batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    let mut members = Vec::with_capacity(changes.len() * 2);
    for (i, change) in changes.iter().enumerate() {
        for map in [Map::Inbound, Map::Outbound] {
            seq = seq.wrapping_add(1);
            setelem(&mut b, change, map, seq);
            members.push(Member {
                seq,
                change: i,
                map,
            });
        }
    }
    seq = seq.wrapping_add(1);
    batch_marker(&mut b, NFNL_MSG_BATCH_END, seq);
    Transaction {
        bytes: b.into_bytes(),
        begin_seq,
        members,
        next_seq: seq.wrapping_add(1),
    }
}

/// `BATCH_BEGIN` / `BATCH_END`: no attributes; `res_id` names the subsystem the batch is for.
fn batch_marker(b: &mut MsgBuilder, ty: u16, seq: u32) {
    let m = b.begin(ty, NLM_F_REQUEST, seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    b.end(m);
}

/// One `NEWSETELEM` (add) or `DELSETELEM` (remove) holding one element of `map`.
pub fn setelem(b: &mut MsgBuilder, change: &Change, map: Map, seq: u32) {
    let (ty, flags, f, add) = match change {
        // CREATE|EXCL: adding an element that is already there is an error, as it would be a
        // second mapping of the same port; renewals remove first.
        Change::Add(f) => (
            NFT_MSG_NEWSETELEM,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            f,
            true,
        ),
        Change::Remove(f) => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, f, false),
    };
    let m = b.begin(nft_type(ty), flags, seq, NFPROTO_IPV4, 0);
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, map.name());
    let list = b.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    let elem = b.nest_begin(NFTA_LIST_ELEM);
    let key = b.nest_begin(NFTA_SET_ELEM_KEY);
    match map {
        Map::Inbound => b.attr(NFTA_DATA_VALUE, &inbound_key(f)),
        Map::Outbound => b.attr(NFTA_DATA_VALUE, &outbound_key(f)),
    }
    b.nest_end(key);
    if add {
        let data = b.nest_begin(NFTA_SET_ELEM_DATA);
        match map {
            Map::Inbound => b.attr(NFTA_DATA_VALUE, &inbound_data(f)),
            Map::Outbound => b.attr(NFTA_DATA_VALUE, &outbound_data(f)),
        }
        b.nest_end(data);
        if let Some(ms) = timeout_ms(f.timeout) {
            b.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
        }
    }
    b.nest_end(elem);
    b.nest_end(list);
    b.end(m);
}

// enum nft_set_elem_attributes, continued
const NFTA_SET_ELEM_FLAGS: u16 = 3;
/// This element ends an interval (it is the first address after the range).
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

/// The two plain sets hairpin uses (see `template.rs`).
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
) -> HairpinTransaction {
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
    HairpinTransaction {
        bytes: b.into_bytes(),
        begin_seq,
        members,
        next_seq: seq.wrapping_add(1),
    }
}

/// `DELSETELEM` without an element list: the kernel removes every element of the set.
pub fn flush_set(b: &mut MsgBuilder, set: &str, seq: u32) {
    let m = b.begin(
        nft_type(NFT_MSG_DELSETELEM),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_IPV4,
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
        NFPROTO_IPV4,
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

/// `GETSETELEM` with `NLM_F_DUMP`: every element of `map`.
pub fn encode_dump(map: Map, seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    let m = b.begin(
        nft_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_IPV4,
        0,
    );
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, map.name());
    b.end(m);
    b.into_bytes()
}

/// One map element as the kernel reports it, fields still raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawElement<'a> {
    pub key: &'a [u8],
    pub data: Option<&'a [u8]>,
    /// Time left before the kernel expires it, if it has a timeout.
    pub expiration_ms: Option<u64>,
}

/// The elements in the payload of one dumped `NEWSETELEM` message (payload = after the
/// netlink header). Elements lacking a key are skipped; nothing here can panic.
pub fn parse_elements(payload: &[u8]) -> Vec<RawElement<'_>> {
    let mut out = Vec::new();
    let Some(attrs) = payload.get(NFGENMSG_LEN..) else {
        return out;
    };
    for list in nl::attrs(attrs).filter(|a| a.ty == NFTA_SET_ELEM_LIST_ELEMENTS) {
        for elem in list.nested().filter(|a| a.ty == NFTA_LIST_ELEM) {
            fn value(a: Attr<'_>) -> Option<&[u8]> {
                a.nested().get(NFTA_DATA_VALUE).map(|v| v.payload)
            }
            let mut key = None;
            let mut data = None;
            let mut expiration_ms = None;
            for a in elem.nested() {
                match a.ty {
                    NFTA_SET_ELEM_KEY => key = value(a),
                    NFTA_SET_ELEM_DATA => data = value(a),
                    NFTA_SET_ELEM_EXPIRATION => expiration_ms = a.be64(),
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push(RawElement {
                    key,
                    data,
                    expiration_ms,
                });
            }
        }
    }
    out
}

fn field_port(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(0..2)?.try_into().ok()?))
}

fn field_addr(b: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(0..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// An `inbound` element: `protocol . external_port : internal_addr . internal_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundElement {
    pub protocol: Protocol,
    pub external_port: u16,
    pub internal_addr: Ipv4Addr,
    pub internal_port: u16,
    pub expiration_ms: Option<u64>,
}

impl InboundElement {
    pub fn decode(e: &RawElement<'_>) -> Option<InboundElement> {
        let (k, d) = (e.key, e.data?);
        if k.len() != 8 || d.len() != 8 {
            return None;
        }
        Some(InboundElement {
            protocol: Protocol::from_number(k[0])?,
            external_port: field_port(&k[4..])?,
            internal_addr: field_addr(d)?,
            internal_port: field_port(&d[4..])?,
            expiration_ms: e.expiration_ms,
        })
    }
}

/// An `outbound` element: `internal_addr . protocol . internal_port : external_addr .
/// external_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboundElement {
    pub internal_addr: Ipv4Addr,
    pub protocol: Protocol,
    pub internal_port: u16,
    pub external_addr: Ipv4Addr,
    pub external_port: u16,
    pub expiration_ms: Option<u64>,
}

impl OutboundElement {
    pub fn decode(e: &RawElement<'_>) -> Option<OutboundElement> {
        let (k, d) = (e.key, e.data?);
        if k.len() != 12 || d.len() != 8 {
            return None;
        }
        Some(OutboundElement {
            internal_addr: field_addr(k)?,
            protocol: Protocol::from_number(k[4])?,
            internal_port: field_port(&k[8..])?,
            external_addr: field_addr(d)?,
            external_port: field_port(&d[4..])?,
            expiration_ms: e.expiration_ms,
        })
    }
}

/// Pair the two maps back into forwards. A forward is reported only when both of its
/// elements are present (the daemon writes them together, so a half is drift: an element
/// expired or removed by hand); the halves are returned separately for logging.
pub fn join(
    inbound: &[InboundElement],
    outbound: &[OutboundElement],
) -> (Vec<Forward>, Vec<InboundElement>, Vec<OutboundElement>) {
    use std::collections::HashMap;
    let mut by_key: HashMap<(Ipv4Addr, Protocol, u16), (usize, &OutboundElement)> = outbound
        .iter()
        .enumerate()
        .map(|(i, o)| ((o.internal_addr, o.protocol, o.internal_port), (i, o)))
        .collect();
    let mut forwards = Vec::new();
    let mut lone_in = Vec::new();
    for i in inbound {
        let key = (i.internal_addr, i.protocol, i.internal_port);
        match by_key.get(&key) {
            Some((_, o)) if o.external_port == i.external_port => {
                let left = match (i.expiration_ms, o.expiration_ms) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(0),
                };
                forwards.push(Forward {
                    protocol: i.protocol,
                    external_addr: o.external_addr,
                    external_port: i.external_port,
                    internal_addr: i.internal_addr,
                    internal_port: i.internal_port,
                    timeout: Duration::from_millis(left),
                });
                by_key.remove(&key);
            }
            _ => lone_in.push(*i),
        }
    }
    let mut lone_out: Vec<(usize, OutboundElement)> =
        by_key.into_values().map(|(i, o)| (i, *o)).collect();
    lone_out.sort_by_key(|(i, _)| *i);
    (
        forwards,
        lone_in,
        lone_out.into_iter().map(|(_, o)| o).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::{messages, NLMSG_HDRLEN};

    fn fwd() -> Forward {
        Forward {
            protocol: Protocol::Tcp,
            external_addr: Ipv4Addr::new(203, 0, 113, 7),
            external_port: 8080,
            internal_addr: Ipv4Addr::new(192, 168, 88, 2),
            internal_port: 80,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn keys_pad_every_field_to_four_bytes() {
        let f = fwd();
        // tcp = 6 in the first byte of its register; 8080 = 0x1f90, big-endian then padding.
        assert_eq!(inbound_key(&f), [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        // 192.168.88.2 . port 80 = 0x0050
        assert_eq!(inbound_data(&f), [192, 168, 88, 2, 0x00, 0x50, 0, 0]);
        assert_eq!(
            outbound_key(&f),
            [192, 168, 88, 2, 6, 0, 0, 0, 0x00, 0x50, 0, 0]
        );
        assert_eq!(outbound_data(&f), [203, 0, 113, 7, 0x1f, 0x90, 0, 0]);
    }

    #[test]
    fn timeouts_round_trip_in_milliseconds() {
        assert_eq!(timeout_ms(Duration::ZERO), None);
        assert_eq!(timeout_ms(Duration::from_micros(10)), Some(1));
        assert_eq!(timeout_ms(Duration::from_secs(60)), Some(60_000));
        assert_eq!(timeout_ms(Duration::MAX), Some(u64::MAX));
    }

    /// The add message for `fwd()` in map `inbound`, laid out by hand from nf_tables.h and
    /// checked against `nft --debug=mnl add element ip natpmpd inbound { tcp . 8080 timeout
    /// 60s : 192.168.88.2 . 80 }` (nft 1.0.6 also sends a set id, which we do not need).
    #[cfg(target_endian = "little")]
    #[test]
    fn add_inbound_matches_hand_layout() {
        let mut b = MsgBuilder::new();
        setelem(&mut b, &Change::Add(fwd()), Map::Inbound, 5);
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
        setelem(&mut b, &Change::Remove(fwd()), Map::Outbound, 9);
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
    fn transaction_has_one_member_per_change_and_map() {
        let f = fwd();
        let t = encode_transaction(&[Change::Remove(f), Change::Add(f)], 1);
        let seqs: Vec<(u32, usize, Map)> =
            t.members.iter().map(|m| (m.seq, m.change, m.map)).collect();
        assert_eq!(
            seqs,
            vec![
                (2, 0, Map::Inbound),
                (3, 0, Map::Outbound),
                (4, 1, Map::Inbound),
                (5, 1, Map::Outbound)
            ]
        );
        let types: Vec<u16> = messages(&t.bytes).map(|m| m.ty).collect();
        assert_eq!(types, vec![0x10, 0x0a0e, 0x0a0e, 0x0a0c, 0x0a0c, 0x11]);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn dump_request_names_table_and_map() {
        let bytes = encode_dump(Map::Inbound, 3);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            44, 0, 0, 0, 0x0d, 0x0a, 0x01, 0x03, 3, 0, 0, 0, 0, 0, 0, 0, // GETSETELEM, REQUEST|DUMP
            2, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            12, 0, 2, 0, b'i', b'n', b'b', b'o', b'u', b'n', b'd', 0,
        ];
        assert_eq!(bytes, expected);
    }

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

    /// Checked against `nft --debug=mnl -f` of `flush set ip natpmpd lan_nets` + `add element
    /// ip natpmpd lan_nets { 192.168.88.0/24 }` (nft 1.0.6). Differences, none of which the
    /// kernel minds: nft names the set before the table, sends the set's id
    /// (NFTA_SET_ELEM_LIST_SET_ID), numbers list elements 1, 2, 3 instead of 1, 1, 1, and
    /// asks for no acks.
    #[cfg(target_endian = "little")]
    #[test]
    fn hairpin_transaction_matches_hand_layout() {
        let lan = lan_ranges(&[net([192, 168, 88, 1], 24)]).unwrap();
        let tx = encode_hairpin(Some(Ipv4Addr::new(203, 0, 113, 1)), &lan, 40);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // BATCH_BEGIN
            20, 0, 0, 0, 0x10, 0, 0x01, 0, 40, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 10,
            // DELSETELEM wan_addr, no element list: flush
            48, 0, 0, 0, 0x0e, 0x0a, 0x05, 0x00, 41, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'w', b'a', b'n', b'_', b'a', b'd', b'd', b'r', 0, 0, 0, 0,
            // NEWSETELEM wan_addr { 203.0.113.1 }: REQUEST|ACK|CREATE
            68, 0, 0, 0, 0x0c, 0x0a, 0x05, 0x04, 42, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'w', b'a', b'n', b'_', b'a', b'd', b'd', b'r', 0, 0, 0, 0,
            20, 0, 0x03, 0x80,      // ELEMENTS
            16, 0, 0x01, 0x80,      //   LIST_ELEM
            12, 0, 0x01, 0x80,      //     KEY
            8, 0, 1, 0,             //       VALUE
            203, 0, 113, 1,
            // DELSETELEM lan_nets
            48, 0, 0, 0, 0x0e, 0x0a, 0x05, 0x00, 43, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            13, 0, 2, 0, b'l', b'a', b'n', b'_', b'n', b'e', b't', b's', 0, 0, 0, 0,
            // NEWSETELEM lan_nets { 0.0.0.0 end, 192.168.88.0, 192.168.89.0 end }
            116, 0, 0, 0, 0x0c, 0x0a, 0x05, 0x04, 44, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
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
        let tx = encode_hairpin(None, &[], 1);
        let types: Vec<u16> = messages(&tx.bytes).map(|m| m.ty).collect();
        assert_eq!(types, vec![0x10, 0x0a0e, 0x0a0e, 0x11]);
        assert_eq!(
            tx.members,
            vec![(2, "flush set wan_addr"), (3, "flush set lan_nets")]
        );
    }

    /// Build what a dump reply looks like (the kernel sends the element list back in the same
    /// shape we add it, plus EXPIRATION) and decode it.
    fn fake_dump_reply(forwards: &[Forward], map: Map) -> Vec<u8> {
        let mut b = MsgBuilder::new();
        let m = b.begin(nft_type(NFT_MSG_NEWSETELEM), 2, 1, NFPROTO_IPV4, 0);
        b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        b.attr_str(NFTA_SET_ELEM_LIST_SET, map.name());
        let list = b.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        for f in forwards {
            let e = b.nest_begin(NFTA_LIST_ELEM);
            let k = b.nest_begin(NFTA_SET_ELEM_KEY);
            match map {
                Map::Inbound => b.attr(NFTA_DATA_VALUE, &inbound_key(f)),
                Map::Outbound => b.attr(NFTA_DATA_VALUE, &outbound_key(f)),
            }
            b.nest_end(k);
            let d = b.nest_begin(NFTA_SET_ELEM_DATA);
            match map {
                Map::Inbound => b.attr(NFTA_DATA_VALUE, &inbound_data(f)),
                Map::Outbound => b.attr(NFTA_DATA_VALUE, &outbound_data(f)),
            }
            b.nest_end(d);
            b.attr(NFTA_SET_ELEM_TIMEOUT, &60_000u64.to_be_bytes());
            b.attr(
                NFTA_SET_ELEM_EXPIRATION,
                &(f.timeout.as_millis() as u64).to_be_bytes(),
            );
            b.nest_end(e);
        }
        b.nest_end(list);
        b.end(m);
        b.into_bytes()
    }

    fn decode_reply(bytes: &[u8]) -> (Vec<InboundElement>, Vec<OutboundElement>) {
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        for msg in messages(bytes) {
            for raw in parse_elements(msg.payload) {
                if let Some(i) = InboundElement::decode(&raw) {
                    ins.push(i);
                } else if let Some(o) = OutboundElement::decode(&raw) {
                    outs.push(o);
                }
            }
        }
        (ins, outs)
    }

    #[test]
    fn dump_round_trip_rebuilds_forwards() {
        let a = fwd();
        let b = Forward {
            protocol: Protocol::Udp,
            external_port: 5353,
            internal_addr: Ipv4Addr::new(192, 168, 88, 9),
            internal_port: 53,
            timeout: Duration::from_millis(1234),
            ..a
        };
        let mut bytes = fake_dump_reply(&[a, b], Map::Inbound);
        bytes.extend(fake_dump_reply(&[b, a], Map::Outbound));
        let (ins, outs) = decode_reply(&bytes);
        assert_eq!((ins.len(), outs.len()), (2, 2));
        let (forwards, lone_in, lone_out) = join(&ins, &outs);
        assert_eq!(forwards, vec![a, b]);
        assert!(lone_in.is_empty() && lone_out.is_empty());
    }

    #[test]
    fn halves_are_reported_apart() {
        let a = fwd();
        let b = Forward {
            internal_port: 81,
            external_port: 8081,
            ..a
        };
        let bytes = [
            fake_dump_reply(&[a, b], Map::Inbound),
            fake_dump_reply(&[a], Map::Outbound),
        ]
        .concat();
        let (ins, outs) = decode_reply(&bytes);
        let (forwards, lone_in, lone_out) = join(&ins, &outs);
        assert_eq!(forwards, vec![a]);
        assert_eq!(lone_in.len(), 1);
        assert_eq!(lone_in[0].internal_port, 81);
        assert!(lone_out.is_empty());
    }

    #[test]
    fn unknown_protocols_and_odd_sizes_are_dropped_not_trusted() {
        let mut raw = RawElement {
            key: &[1, 0, 0, 0, 0, 80, 0, 0], // ICMP: not ours
            data: Some(&[10, 0, 0, 1, 0, 80, 0, 0]),
            expiration_ms: None,
        };
        assert_eq!(InboundElement::decode(&raw), None);
        raw.key = &[6, 0, 0, 0, 0, 80];
        assert_eq!(InboundElement::decode(&raw), None);
        raw.key = &[6, 0, 0, 0, 0, 80, 0, 0];
        raw.data = None;
        assert_eq!(InboundElement::decode(&raw), None);
    }

    #[test]
    fn every_truncation_of_a_dump_parses_without_panic() {
        let bytes = fake_dump_reply(&[fwd(), fwd()], Map::Outbound);
        for cut in 0..bytes.len() {
            let _ = decode_reply(&bytes[..cut]);
            let _ = parse_elements(&bytes[NLMSG_HDRLEN.min(cut)..cut]);
        }
    }
}
