//! ctnetlink messages to end the flows of removed elements.
//!
//! Removing an element stops new flows from being translated (or, for a pinhole, marked), but
//! a flow the kernel already tracks keeps its translation and its mark until its conntrack
//! entry dies. So once the elements are gone (`Forwarder::clear_flows`, after the clients have
//! their replies), we dump the conntrack table once, IPv4 and IPv6 together, pick the entries
//! of all those elements, and delete each by its original tuple (plus its id, so an entry that
//! was replaced meanwhile by a new one with the same tuple is left alone).
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
//!   flows from remotes in its other boxes, belong to other elements;
//! - for a `Pinhole`, a flow into the host's address and port: reply source = the host's
//!   address and port (nothing is translated, so that is also the original destination). The
//!   host's own flows from that port need no pinhole and are left alone;
//! - for a `FilteredPinhole`, such a flow whose remote (original source) is inside the box.

use crate::nl::{
    self, Attr, MsgBuilder, TooLong, NFGENMSG_LEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use natpmp_pcp_core::kernel::Element;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// The type of dumped entries (only the tests build them).
#[cfg(test)]
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// In a dump request: every family. The kernel filters a dump by the request's family only
/// when it is not 0, so one dump returns the IPv4 and the IPv6 entries.
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

pub const fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// One direction of a tracked TCP or UDP flow. Both addresses are of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry, reduced to what matching, deletion and diagnostics need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub id: Option<u32>,
    pub zone: Option<u16>,
    /// The connection's mark (`ct mark`): natpmpd's bit on the flows it let in, beside any
    /// bits of the operator's. 0 when the kernel sent none.
    pub mark: u32,
}

impl Entry {
    /// Does this flow go through `element`? (See the module comment.)
    pub fn belongs_to(&self, element: &Element) -> bool {
        if self.orig.proto != element.protocol().number() {
            return false;
        }
        let internal = element.internal();
        let into_host = self.reply.src == internal.ip() && self.reply.sport == internal.port();
        let inbound = into_host && self.orig.dport == element.external_port();
        match element {
            Element::Inbound { .. } | Element::Outbound { .. } => {
                let outbound = self.orig.src == internal.ip()
                    && self.orig.sport == internal.port()
                    && self.reply.dport == element.external_port();
                inbound || outbound
            }
            Element::FilteredInbound { remote, .. } => match self.orig.src {
                IpAddr::V4(src) => inbound && remote.contains(src, self.orig.sport),
                IpAddr::V6(_) => false,
            },
            Element::Pinhole { .. } => into_host,
            Element::FilteredPinhole { remote, .. } => match self.orig.src {
                IpAddr::V6(src) => into_host && remote.contains(src, self.orig.sport),
                IpAddr::V4(_) => false,
            },
        }
    }

    /// The address family of the flow, which a delete request must name.
    fn family(&self) -> u8 {
        match self.orig.src {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        }
    }
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP` for the IPv4 and IPv6 tables at once.
pub fn encode_dump(seq: u32) -> Result<Vec<u8>, TooLong> {
    let mut b = MsgBuilder::new();
    let m = b.begin(
        ct_type(IPCTNL_MSG_CT_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        AF_UNSPEC,
        0,
    );
    b.end(m);
    b.into_bytes()
}

/// The addresses of a tuple as the kernel nests them: V4 or V6 attributes by family.
fn tuple_ip(b: &mut MsgBuilder, t: &Tuple) {
    let ip = b.nest_begin(CTA_TUPLE_IP);
    match (t.src, t.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            b.attr(CTA_IP_V4_SRC, &src.octets());
            b.attr(CTA_IP_V4_DST, &dst.octets());
        }
        (src, dst) => {
            // A parsed tuple never mixes families; were one built that did, an IPv4 address
            // is written as its mapped IPv6 form, and the kernel finds nothing to delete.
            b.attr(CTA_IP_V6_SRC, &v6(src).octets());
            b.attr(CTA_IP_V6_DST, &v6(dst).octets());
        }
    }
    b.nest_end(ip);
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Append an `IPCTNL_MSG_CT_DELETE` for `entry`, acked so we learn what happened to it.
pub fn encode_delete(b: &mut MsgBuilder, entry: &Entry, seq: u32) {
    let m = b.begin(
        ct_type(IPCTNL_MSG_CT_DELETE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        entry.family(),
        0,
    );
    let t = b.nest_begin(CTA_TUPLE_ORIG);
    tuple_ip(b, &entry.orig);
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

/// The source and destination of a `CTA_TUPLE_IP`: both IPv4 or both IPv6.
fn parse_addrs(ip: Attr<'_>) -> Option<(IpAddr, IpAddr)> {
    fn get<const N: usize>(ip: Attr<'_>, ty: u16) -> Option<[u8; N]> {
        ip.nested().get(ty)?.payload.get(..N)?.try_into().ok()
    }
    if let (Some(src), Some(dst)) = (get::<4>(ip, CTA_IP_V4_SRC), get::<4>(ip, CTA_IP_V4_DST)) {
        return Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()));
    }
    let src = get::<16>(ip, CTA_IP_V6_SRC)?;
    let dst = get::<16>(ip, CTA_IP_V6_DST)?;
    Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
}

fn parse_tuple(a: Attr<'_>) -> Option<Tuple> {
    let (src, dst) = parse_addrs(a.nested().get(CTA_TUPLE_IP)?)?;
    let proto = a.nested().get(CTA_TUPLE_PROTO)?;
    Some(Tuple {
        src,
        dst,
        proto: proto.nested().get(CTA_PROTO_NUM)?.u8()?,
        sport: proto.nested().get(CTA_PROTO_SRC_PORT)?.be16()?,
        dport: proto.nested().get(CTA_PROTO_DST_PORT)?.be16()?,
    })
}

/// Decode one dumped entry (payload = after the netlink header). `None` for anything that is
/// not an IPv4 or IPv6 flow with ports (ICMP, say), has directions of two families, or is
/// malformed.
pub fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let attrs = nl::attrs(payload.get(NFGENMSG_LEN..)?);
    let mut orig = None;
    let mut reply = None;
    let mut id = None;
    let mut zone = None;
    let mut mark = 0;
    for a in attrs {
        match a.ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(a),
            CTA_TUPLE_REPLY => reply = parse_tuple(a),
            CTA_ID => id = a.be32(),
            CTA_ZONE => zone = a.be16(),
            CTA_MARK => mark = a.be32().unwrap_or(0),
            _ => {}
        }
    }
    let (orig, reply): (Tuple, Tuple) = (orig?, reply?);
    if orig.src.is_ipv4() != reply.src.is_ipv4() {
        return None;
    }
    Some(Entry {
        orig,
        reply,
        id,
        zone,
        mark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::messages;
    use natpmp_pcp_core::kernel::RemoteRange;
    use natpmp_pcp_core::Protocol;
    use std::net::{SocketAddrV4, SocketAddrV6};

    fn tuple(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, ports: (u16, u16)) -> Tuple {
        Tuple {
            src: src.into(),
            dst: dst.into(),
            proto: 17,
            sport: ports.0,
            dport: ports.1,
        }
    }

    fn entry() -> Entry {
        // A client's outbound UDP flow 192.168.88.2:4000 -> 198.51.100.9:53, SNATed to
        // 203.0.113.7:40000.
        Entry {
            orig: tuple(*CLIENT.ip(), REMOTE, (4000, 53)),
            reply: tuple(REMOTE, *EXTERNAL.ip(), (53, 40000)),
            id: Some(0x01020304),
            zone: None,
            mark: 0,
        }
    }

    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 2), 4000);
    const EXTERNAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40000);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

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
            orig: tuple(REMOTE, *EXTERNAL.ip(), (53, EXTERNAL.port())),
            reply: tuple(*CLIENT.ip(), REMOTE, (CLIENT.port(), 53)),
            id: None,
            zone: None,
            mark: 0x0010_0000,
        }
    }

    fn host6() -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8:1::10".parse().unwrap(), 8080, 0, 0)
    }

    fn remote6() -> Ipv6Addr {
        "2001:db8:ff::2".parse().unwrap()
    }

    /// An IPv6 flow into a pinhole: 2001:db8:ff::2:4000 -> 2001:db8:1::10:8080, untranslated.
    fn pinhole_entry() -> Entry {
        Entry {
            orig: tuple(remote6(), *host6().ip(), (4000, 8080)),
            reply: tuple(*host6().ip(), remote6(), (8080, 4000)),
            id: Some(0xa0050515),
            zone: None,
            mark: 0x0010_0000,
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
            0, 0, 0, 0,     // AF_UNSPEC: both families
        ];
        assert_eq!(encode_dump(7).unwrap(), expected);
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
            2, 0, 0, 0,             // AF_INET
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
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    /// Checked against what `conntrack -D -f ipv6 -p udp -s 2001:db8:ff::2 -d 2001:db8:1::10
    /// --sport 4000 --dport 8080` (conntrack-tools 1.4.7, under `strace -xx`, in a throwaway
    /// namespace) sends: the same family and CTA_TUPLE_ORIG, byte for byte; it also sends the
    /// reply tuple, status, timeout, mark and a nest of zeros, which a delete does not need.
    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_delete_request_bytes() {
        let mut b = MsgBuilder::new();
        encode_delete(&mut b, &pinhole_entry(), 8);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            104, 0, 0, 0,           // 16 + 4 + 76 + 8
            0x02, 0x01,             // CTNETLINK | IPCTNL_MSG_CT_DELETE
            0x05, 0x00,             // REQUEST | ACK
            8, 0, 0, 0, 0, 0, 0, 0,
            10, 0, 0, 0,            // AF_INET6
            76, 0, 0x01, 0x80,      // CTA_TUPLE_ORIG | NESTED: 4 + 44 + 28
            44, 0, 0x01, 0x80,      //   CTA_TUPLE_IP | NESTED
            20, 0, 3, 0,            //     CTA_IP_V6_SRC: 2001:db8:ff::2
            0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
            20, 0, 4, 0,            //     CTA_IP_V6_DST: 2001:db8:1::10
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            28, 0, 0x02, 0x80,      //   CTA_TUPLE_PROTO | NESTED
            5, 0, 1, 0, 17, 0, 0, 0,
            6, 0, 2, 0, 0x0f, 0xa0, 0, 0,   // 4000
            6, 0, 3, 0, 0x1f, 0x90, 0, 0,   // 8080
            8, 0, 12, 0, 0xa0, 0x05, 0x05, 0x15, // CTA_ID
        ];
        assert_eq!(b.as_bytes().unwrap(), &expected[..]);
    }

    /// A dump reply carries the same tuple layout (plus both directions); build one with the
    /// encoder's pieces and parse it back.
    fn reply_for(e: &Entry) -> Vec<u8> {
        let mut b = MsgBuilder::new();
        let m = b.begin(ct_type(IPCTNL_MSG_CT_NEW), 2, 1, e.family(), 0);
        for (ty, t) in [(CTA_TUPLE_ORIG, e.orig), (CTA_TUPLE_REPLY, e.reply)] {
            let n = b.nest_begin(ty);
            tuple_ip(&mut b, &t);
            let p = b.nest_begin(CTA_TUPLE_PROTO);
            b.attr(CTA_PROTO_NUM, &[t.proto]);
            b.attr(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
            b.attr(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
            b.nest_end(p);
            b.nest_end(n);
        }
        b.attr(3, &0x188u32.to_be_bytes()); // CTA_STATUS: ignored
        if e.mark != 0 {
            b.attr(CTA_MARK, &e.mark.to_be_bytes());
        }
        if let Some(id) = e.id {
            b.attr(CTA_ID, &id.to_be_bytes());
        }
        if let Some(z) = e.zone {
            b.attr(CTA_ZONE, &z.to_be_bytes());
        }
        b.end(m);
        b.into_bytes().unwrap()
    }

    #[test]
    fn entries_of_both_families_round_trip_and_every_truncation_parses() {
        for mut e in [entry(), inbound_entry(), pinhole_entry()] {
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
        // Directions of two families are no flow natpmpd knows.
        let mut mixed = pinhole_entry();
        mixed.reply = entry().reply;
        let bytes = reply_for(&mixed);
        assert_eq!(parse_entry(messages(&bytes).next().unwrap().payload), None);
    }

    #[test]
    fn matching_covers_both_directions_and_nothing_else() {
        let out = entry();
        let inbound = inbound_entry();
        for e in [outbound_element(), inbound_element()] {
            assert!(out.belongs_to(&e), "{e}");
            assert!(inbound.belongs_to(&e), "{e}");
            assert!(!pinhole_entry().belongs_to(&e), "{e}");
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
        let remote = RemoteRange::single(REMOTE, 53);
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
            RemoteRange::single(REMOTE, 54),
            RemoteRange::single(Ipv4Addr::new(198, 51, 100, 10), 53),
        ];
        for r in elsewhere {
            assert!(!inbound.belongs_to(&filtered_element(r)), "{r}");
        }
        // The client's own outbound flow is the Outbound element's, even to a remote in the
        // box.
        assert!(!entry().belongs_to(&filtered_element(wide)));
    }

    #[test]
    fn a_pinhole_owns_the_flows_into_its_host_and_port() {
        let flow = pinhole_entry();
        let pinhole = |protocol, port| Element::Pinhole {
            protocol,
            internal: SocketAddrV6::new(*host6().ip(), port, 0, 0),
        };
        assert!(flow.belongs_to(&pinhole(Protocol::Udp, 8080)));
        assert!(!flow.belongs_to(&pinhole(Protocol::Tcp, 8080)));
        assert!(!flow.belongs_to(&pinhole(Protocol::Udp, 8081)));
        let elsewhere = Element::Pinhole {
            protocol: Protocol::Udp,
            internal: SocketAddrV6::new("2001:db8:1::11".parse().unwrap(), 8080, 0, 0),
        };
        assert!(!flow.belongs_to(&elsewhere));
        // The host's own flow from that port, out to the remote, needs no pinhole.
        let own = Entry {
            orig: flow.reply,
            reply: flow.orig,
            ..flow
        };
        assert!(!own.belongs_to(&pinhole(Protocol::Udp, 8080)));
        // An IPv4 flow never belongs to a pinhole, nor an IPv6 one to an IPv4 element.
        assert!(!inbound_entry().belongs_to(&pinhole(Protocol::Udp, 4000)));

        let boxed = |first: &str, last: &str, ports: (u16, u16)| Element::FilteredPinhole {
            protocol: Protocol::Udp,
            internal: host6(),
            remote: RemoteRange {
                first_addr: first.parse().unwrap(),
                last_addr: last.parse().unwrap(),
                first_port: ports.0,
                last_port: ports.1,
            },
        };
        let net = ("2001:db8:ff::", "2001:db8:ff:0:ffff:ffff:ffff:ffff");
        assert!(flow.belongs_to(&boxed(net.0, net.1, (0, 65535))));
        assert!(flow.belongs_to(&boxed("2001:db8:ff::2", "2001:db8:ff::2", (4000, 4000))));
        assert!(!flow.belongs_to(&boxed(net.0, net.1, (4001, 65535))));
        assert!(!flow.belongs_to(&boxed("2001:db8:ff::3", "2001:db8:ff::9", (0, 65535))));
        assert!(!own.belongs_to(&boxed(net.0, net.1, (0, 65535))));
    }
}
