//! ctnetlink messages to end the flows of removed elements.
//!
//! Removing a map element stops new flows from being translated, but a flow the kernel already
//! tracks keeps its translation until its conntrack entry dies. So once the elements are gone
//! (`Forwarder::clear_flows`, after the clients have their replies), we dump the IPv4
//! conntrack table once, pick the entries of all those elements, and delete each by its
//! original tuple (plus its id, so an entry that was replaced meanwhile by a new one with the
//! same tuple is left alone).
//!
//! An entry belongs to a removed element (same protocol) when it is
//! - for an `Inbound` or `Outbound` element, any flow of its internal endpoint through its
//!   external port, either way:
//!   - inbound: reply source = the internal endpoint and original destination port = the
//!     external port (the client answered a DNATed flow), or
//!   - outbound: original source = the internal endpoint and reply destination port = the
//!     external port (the client's own flow, SNATed to the mapped port);
//! - for a `FilteredInbound` element, an inbound flow as above whose remote (original source
//!   address and port) is inside the element's box. The internal endpoint's own flows, and
//!   flows from remotes in its other boxes, belong to other elements.

use crate::nl::{self, Attr, MsgBuilder, NFGENMSG_LEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use natpmp_pcp_core::kernel::Element;
use std::net::Ipv4Addr;

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// The type of dumped entries (only the tests build them).
#[cfg(test)]
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
const AF_INET: u8 = 2;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

pub const fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// One direction of a tracked TCP or UDP flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry, reduced to what matching and deletion need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub id: Option<u32>,
    pub zone: Option<u16>,
}

impl Entry {
    /// Does this flow go through `element`? (See the module comment.)
    pub fn belongs_to(&self, element: &Element) -> bool {
        if self.orig.proto != element.protocol().number() {
            return false;
        }
        let internal = element.internal();
        let external_port = element.external_port();
        let inbound = self.reply.src == *internal.ip()
            && self.reply.sport == internal.port()
            && self.orig.dport == external_port;
        match element {
            Element::Inbound { .. } | Element::Outbound { .. } => {
                let outbound = self.orig.src == *internal.ip()
                    && self.orig.sport == internal.port()
                    && self.reply.dport == external_port;
                inbound || outbound
            }
            Element::FilteredInbound { remote, .. } => {
                inbound && remote.contains(self.orig.src, self.orig.sport)
            }
        }
    }
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP` for the IPv4 table.
pub fn encode_dump(seq: u32) -> Vec<u8> {
    let mut b = MsgBuilder::new();
    let m = b.begin(
        ct_type(IPCTNL_MSG_CT_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        AF_INET,
        0,
    );
    b.end(m);
    b.into_bytes()
}

/// Append an `IPCTNL_MSG_CT_DELETE` for `entry`, acked so we learn what happened to it.
pub fn encode_delete(b: &mut MsgBuilder, entry: &Entry, seq: u32) {
    let m = b.begin(
        ct_type(IPCTNL_MSG_CT_DELETE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        AF_INET,
        0,
    );
    let t = b.nest_begin(CTA_TUPLE_ORIG);
    let ip = b.nest_begin(CTA_TUPLE_IP);
    b.attr(CTA_IP_V4_SRC, &entry.orig.src.octets());
    b.attr(CTA_IP_V4_DST, &entry.orig.dst.octets());
    b.nest_end(ip);
    let p = b.nest_begin(CTA_TUPLE_PROTO);
    b.attr(CTA_PROTO_NUM, &[entry.orig.proto]);
    b.attr(CTA_PROTO_SRC_PORT, &entry.orig.sport.to_be_bytes());
    b.attr(CTA_PROTO_DST_PORT, &entry.orig.dport.to_be_bytes());
    b.nest_end(p);
    b.nest_end(t);
    // The lookup is per zone; the dump names the zone only when it is not the default.
    if let Some(zone) = entry.zone {
        b.attr(CTA_ZONE, &zone.to_be_bytes());
    }
    if let Some(id) = entry.id {
        b.attr(CTA_ID, &id.to_be_bytes());
    }
    b.end(m);
}

fn parse_tuple(a: Attr<'_>) -> Option<Tuple> {
    let ip = a.nested().get(CTA_TUPLE_IP)?;
    let proto = a.nested().get(CTA_TUPLE_PROTO)?;
    let addr = |ty| -> Option<Ipv4Addr> {
        let b: [u8; 4] = ip.nested().get(ty)?.payload.get(..4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    Some(Tuple {
        src: addr(CTA_IP_V4_SRC)?,
        dst: addr(CTA_IP_V4_DST)?,
        proto: proto.nested().get(CTA_PROTO_NUM)?.u8()?,
        sport: proto.nested().get(CTA_PROTO_SRC_PORT)?.be16()?,
        dport: proto.nested().get(CTA_PROTO_DST_PORT)?.be16()?,
    })
}

/// Decode one dumped entry (payload = after the netlink header). `None` for anything that is
/// not an IPv4 flow with ports (ICMP, say) or is malformed.
pub fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let attrs = nl::attrs(payload.get(NFGENMSG_LEN..)?);
    let mut orig = None;
    let mut reply = None;
    let mut id = None;
    let mut zone = None;
    for a in attrs {
        match a.ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(a),
            CTA_TUPLE_REPLY => reply = parse_tuple(a),
            CTA_ID => id = a.be32(),
            CTA_ZONE => zone = a.be16(),
            _ => {}
        }
    }
    Some(Entry {
        orig: orig?,
        reply: reply?,
        id,
        zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::messages;
    use natpmp_pcp_core::kernel::RemoteRange;
    use natpmp_pcp_core::Protocol;
    use std::net::SocketAddrV4;

    fn entry() -> Entry {
        // A client's outbound UDP flow 192.168.88.2:4000 -> 198.51.100.9:53, SNATed to
        // 203.0.113.7:40000.
        Entry {
            orig: Tuple {
                src: Ipv4Addr::new(192, 168, 88, 2),
                dst: Ipv4Addr::new(198, 51, 100, 9),
                proto: 17,
                sport: 4000,
                dport: 53,
            },
            reply: Tuple {
                src: Ipv4Addr::new(198, 51, 100, 9),
                dst: Ipv4Addr::new(203, 0, 113, 7),
                proto: 17,
                sport: 53,
                dport: 40000,
            },
            id: Some(0x01020304),
            zone: None,
        }
    }

    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 2), 4000);
    const EXTERNAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40000);

    fn outbound_element() -> Element {
        Element::Outbound {
            internal: CLIENT,
            protocol: Protocol::Udp,
            external: EXTERNAL,
        }
    }

    fn inbound_element() -> Element {
        Element::Inbound {
            protocol: Protocol::Udp,
            external_port: EXTERNAL.port(),
            internal: CLIENT,
        }
    }

    fn filtered_element(remote: RemoteRange) -> Element {
        Element::FilteredInbound {
            protocol: Protocol::Udp,
            external_port: EXTERNAL.port(),
            remote,
            internal: CLIENT,
        }
    }

    /// `entry()` seen from outside: 198.51.100.9:53 -> 203.0.113.7:40000, DNATed to the
    /// client.
    fn inbound_entry() -> Entry {
        Entry {
            orig: Tuple {
                src: Ipv4Addr::new(198, 51, 100, 9),
                dst: *EXTERNAL.ip(),
                proto: 17,
                sport: 53,
                dport: EXTERNAL.port(),
            },
            reply: Tuple {
                src: *CLIENT.ip(),
                dst: Ipv4Addr::new(198, 51, 100, 9),
                proto: 17,
                sport: CLIENT.port(),
                dport: 53,
            },
            id: None,
            zone: None,
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn dump_request_bytes() {
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            20, 0, 0, 0,
            0x01, 0x01,     // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
            0x01, 0x03,     // REQUEST | DUMP
            7, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,     // AF_INET
        ];
        assert_eq!(encode_dump(7), expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn delete_request_bytes() {
        let mut b = MsgBuilder::new();
        encode_delete(&mut b, &entry(), 8);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            80, 0, 0, 0,            // 16 + 4 + 52 + 8
            0x02, 0x01,             // CTNETLINK | IPCTNL_MSG_CT_DELETE
            0x05, 0x00,             // REQUEST | ACK
            8, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0,
            52, 0, 0x01, 0x80,      // CTA_TUPLE_ORIG | NESTED: 4 + 20 + 28
            20, 0, 0x01, 0x80,      //   CTA_TUPLE_IP | NESTED
            8, 0, 1, 0, 192, 168, 88, 2,    // CTA_IP_V4_SRC
            8, 0, 2, 0, 198, 51, 100, 9,    // CTA_IP_V4_DST
            28, 0, 0x02, 0x80,      //   CTA_TUPLE_PROTO | NESTED: 4 + 3 * 8
            5, 0, 1, 0, 17, 0, 0, 0,        // CTA_PROTO_NUM: udp, padded
            6, 0, 2, 0, 0x0f, 0xa0, 0, 0,   // CTA_PROTO_SRC_PORT 4000, be16
            6, 0, 3, 0, 0x00, 0x35, 0, 0,   // CTA_PROTO_DST_PORT 53
            8, 0, 12, 0, 1, 2, 3, 4,        // CTA_ID, be32
        ];
        assert_eq!(b.as_bytes(), &expected[..]);
    }

    /// A dump reply carries the same tuple layout (plus both directions); build one with the
    /// encoder's pieces and parse it back.
    fn reply_for(e: &Entry) -> Vec<u8> {
        let mut b = MsgBuilder::new();
        let m = b.begin(ct_type(IPCTNL_MSG_CT_NEW), 2, 1, AF_INET, 0);
        for (ty, t) in [(CTA_TUPLE_ORIG, e.orig), (CTA_TUPLE_REPLY, e.reply)] {
            let n = b.nest_begin(ty);
            let ip = b.nest_begin(CTA_TUPLE_IP);
            b.attr(CTA_IP_V4_SRC, &t.src.octets());
            b.attr(CTA_IP_V4_DST, &t.dst.octets());
            b.nest_end(ip);
            let p = b.nest_begin(CTA_TUPLE_PROTO);
            b.attr(CTA_PROTO_NUM, &[t.proto]);
            b.attr(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
            b.attr(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
            b.nest_end(p);
            b.nest_end(n);
        }
        b.attr(3, &0x188u32.to_be_bytes()); // CTA_STATUS: ignored
        if let Some(id) = e.id {
            b.attr(CTA_ID, &id.to_be_bytes());
        }
        if let Some(z) = e.zone {
            b.attr(CTA_ZONE, &z.to_be_bytes());
        }
        b.end(m);
        b.into_bytes()
    }

    #[test]
    fn entries_round_trip() {
        let mut e = entry();
        for zone in [None, Some(7)] {
            e.zone = zone;
            let bytes = reply_for(&e);
            let msg = messages(&bytes).next().unwrap();
            assert_eq!(parse_entry(msg.payload), Some(e));
            for cut in 0..msg.payload.len() {
                let _ = parse_entry(&msg.payload[..cut]);
            }
        }
    }

    #[test]
    fn matching_covers_both_directions_and_nothing_else() {
        let out = entry();
        let inbound = inbound_entry();
        for e in [outbound_element(), inbound_element()] {
            assert!(out.belongs_to(&e), "{e}");
            assert!(inbound.belongs_to(&e), "{e}");
        }
        let other = |f: &dyn Fn(&mut Element)| {
            let mut e = outbound_element();
            f(&mut e);
            e
        };
        let tcp = other(&|e| {
            if let Element::Outbound { protocol, .. } = e {
                *protocol = Protocol::Tcp
            }
        });
        let other_port = other(&|e| {
            if let Element::Outbound { external, .. } = e {
                external.set_port(40001)
            }
        });
        let other_host = other(&|e| {
            if let Element::Outbound { internal, .. } = e {
                internal.set_ip(Ipv4Addr::new(192, 168, 88, 3))
            }
        });
        for e in [tcp, other_port, other_host] {
            assert!(!out.belongs_to(&e) && !inbound.belongs_to(&e), "{e}");
        }
    }

    #[test]
    fn a_filtered_element_owns_only_inbound_flows_from_its_box() {
        let inbound = inbound_entry();
        let remote = RemoteRange::single(Ipv4Addr::new(198, 51, 100, 9), 53);
        assert!(inbound.belongs_to(&filtered_element(remote)));
        let wide = RemoteRange {
            first_addr: Ipv4Addr::new(198, 51, 100, 0),
            last_addr: Ipv4Addr::new(198, 51, 100, 255),
            first_port: 0,
            last_port: 65535,
        };
        assert!(inbound.belongs_to(&filtered_element(wide)));
        // Another box: the same host on another port, or another host.
        let elsewhere = [
            RemoteRange::single(Ipv4Addr::new(198, 51, 100, 9), 54),
            RemoteRange::single(Ipv4Addr::new(198, 51, 100, 10), 53),
        ];
        for r in elsewhere {
            assert!(!inbound.belongs_to(&filtered_element(r)), "{r}");
        }
        // The client's own outbound flow is the Outbound element's, even to a remote in the
        // box.
        assert!(!entry().belongs_to(&filtered_element(wide)));
    }
}
