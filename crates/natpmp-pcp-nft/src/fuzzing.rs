//! Fuzzing entry points for every parser of what the kernel sends, shared by the cargo-fuzz
//! targets in `fuzz/` (nightly, libFuzzer) and the corpus replay test `tests/fuzz_corpus.rs`
//! (stable, `cargo test`). Not part of the API: the parsers stay private, and these functions
//! are the smallest door to them.
//!
//! Each function takes raw fuzzer bytes and panics only when an invariant breaks; beyond "no
//! panic" each checks that what was parsed lies inside the input and, where natpmpd also
//! encodes the same thing, that encoding it again and parsing that gives the same value.
//! [`seeds`] gives the starting corpora, made with the crate's own encoders.

use crate::conntrack::{self, Entry};
use crate::health;
use crate::nftables::{dump, element, ElementSet};
use crate::nl::{self, Attr, ErrorMsg, MsgBuilder, NFGENMSG_LEN, NLMSG_HDRLEN};
use natpmp_pcp_core::kernel::{Change, Element, RemoteRange};
use natpmp_pcp_core::Protocol;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

/// How deep nested attributes are walked (ours nest four deep at most).
const MAX_DEPTH: usize = 6;

/// A received datagram through the message walker, the error-message parser and the
/// attribute walker; the attributes found are rebuilt with `MsgBuilder` and must read back
/// the same.
pub fn netlink(data: &[u8]) {
    let mut end_of_last = 0;
    for msg in nl::messages(data) {
        // Each message's payload lies inside the datagram, after its header and the previous
        // message.
        let start = inside(data, msg.payload);
        assert!(start >= end_of_last + NLMSG_HDRLEN, "messages overlap");
        end_of_last = start + msg.payload.len();
        if let Some(e) = ErrorMsg::parse(&msg) {
            assert!(e.text.as_deref().is_none_or(|t| !t.is_empty()));
            let _ = e.describe();
            let _ = crate::session::refused("fuzzing".into(), &e).to_string();
        }
        // A sock_diag answer: the listener's port and address are read from where
        // `inet_diag_msg` keeps them.
        if let Some((addr, port)) = crate::sock_diag::parse_listener(msg.payload) {
            assert_eq!(msg.payload[4..6], port.to_be_bytes());
            match addr {
                IpAddr::V4(a) => assert_eq!(msg.payload[8..12], a.octets()),
                IpAddr::V6(a) => assert_eq!(msg.payload[8..24], a.octets()),
            }
        }
        let attrs = msg.payload.get(NFGENMSG_LEN..).unwrap_or(&[]);
        walk(attrs, 0);
        rebuild(attrs);
    }
    walk(data, 0);
    rebuild(data);
}

/// Where `part` starts in `whole`; panics unless it lies entirely inside it.
fn inside(whole: &[u8], part: &[u8]) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        start <= whole.len() && part.len() <= whole.len() - start,
        "a parsed slice reaches outside its input"
    );
    start
}

fn walk(buf: &[u8], depth: usize) {
    for a in nl::attrs(buf) {
        inside(buf, a.payload);
        let _ = (a.u8(), a.be16(), a.be32(), a.be64(), a.str());
        if depth < MAX_DEPTH {
            walk(a.payload, depth + 1);
        }
    }
}

/// Attributes written again (as flat attributes of the same types and payloads) parse back to
/// the same list. The walker drops the flag bits of a type, so those are compared without.
fn rebuild(buf: &[u8]) {
    let found: Vec<Attr<'_>> = nl::attrs(buf).collect();
    let mut b = MsgBuilder::new();
    for a in &found {
        b.attr(a.ty, a.payload);
    }
    let bytes = b
        .into_bytes()
        .expect("attributes read from a 16-bit length fit one again");
    let again: Vec<Attr<'_>> = nl::attrs(&bytes).collect();
    assert_eq!(found, again, "attributes do not survive a rebuild");
}

/// The payload of one dumped `NEWSETELEM` message through the element parser and the decoder
/// of every map and set; an element that decodes, encoded as natpmpd would add it and parsed
/// and decoded again, is the same element.
pub fn nft_dump(data: &[u8]) {
    for raw in dump::parse_elements(data) {
        for set in ElementSet::ALL {
            match dump::decode(set, &raw) {
                Ok((e, timeout)) => {
                    assert_eq!(ElementSet::of(&e), set, "{e} decoded from the wrong set");
                    assert_eq!(
                        timeout,
                        Duration::from_millis(raw.expiration_ms.unwrap_or(0))
                    );
                    let again = round_trip(&e);
                    assert_eq!(again, Some(e), "{e} does not survive an encode and a dump");
                }
                Err(unreadable) => {
                    let _ = unreadable.to_string();
                }
            }
        }
    }
}

/// Encode `e` as an add, parse the message as a dump answer, decode it.
fn round_trip(e: &Element) -> Option<Element> {
    let add = Change::Add {
        element: *e,
        timeout: Duration::from_secs(60),
    };
    let mut b = MsgBuilder::new();
    element::setelem(&mut b, &add, 1, true);
    let bytes = b.into_bytes().ok()?;
    let msg = nl::messages(&bytes).next()?;
    let raws = dump::parse_elements(msg.payload);
    let [raw] = raws.as_slice() else {
        return None;
    };
    dump::decode(ElementSet::of(e), raw).ok().map(|(e, _)| e)
}

/// The payload of one conntrack message through the entry parser; an entry is of one family
/// in both directions, and matching it against elements built from it never panics.
pub fn conntrack(data: &[u8]) {
    let Some(entry) = conntrack::parse_entry(data) else {
        return;
    };
    for t in [entry.orig, entry.reply] {
        assert_eq!(t.src.is_ipv4(), t.dst.is_ipv4(), "a tuple of two families");
    }
    assert_eq!(entry.orig.src.is_ipv4(), entry.reply.src.is_ipv4());
    for e in elements_near(&entry) {
        let _ = entry.belongs_to(&e);
    }
    let mut b = MsgBuilder::new();
    conntrack::encode_delete(&mut b, &entry, 1);
    assert!(
        b.as_bytes().is_ok(),
        "a delete for a parsed entry must encode"
    );
}

/// Elements of every kind around an entry's addresses and ports.
fn elements_near(entry: &Entry) -> Vec<Element> {
    let protocol = Protocol::from_number(entry.orig.proto).unwrap_or(Protocol::Tcp);
    let mut out = Vec::new();
    match (entry.reply.src, entry.orig.src) {
        (IpAddr::V4(host), IpAddr::V4(remote)) => {
            let internal = SocketAddrV4::new(host, entry.reply.sport);
            out.push(Element::Inbound {
                protocol,
                external_port: entry.orig.dport,
                internal,
            });
            out.push(Element::FilteredInbound {
                protocol,
                external_port: entry.orig.dport,
                remote: RemoteRange::single(remote, entry.orig.sport),
                internal,
            });
            out.push(Element::Outbound {
                internal,
                protocol,
                external: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), entry.orig.dport),
            });
        }
        (IpAddr::V6(host), IpAddr::V6(remote)) => {
            let internal = SocketAddrV6::new(host, entry.reply.sport, 0, 0);
            out.push(Element::Pinhole { protocol, internal });
            out.push(Element::FilteredPinhole {
                protocol,
                remote: RemoteRange::single(remote, entry.orig.sport),
                internal,
            });
        }
        _ => {}
    }
    out
}

/// The payload of one dumped nf_tables object through the health check's three parsers, and
/// what they found through the verdict.
pub fn health(data: &[u8]) {
    let mut found = health::Found::default();
    found.sets.extend(health::parse_set(data));
    found.chains.extend(health::parse_chain(data));
    found.rules.extend(health::parse_rule(data));
    for (name, _) in found.sets.iter().chain(found.chains.iter()) {
        assert!(!name.contains('\0'));
    }
    let _ = health::evaluate(&found);
}

/// Starting corpora, by target, made with the crate's own encoders: request and element
/// messages, an error message with extended-ack text, conntrack entries of both families, and
/// set, chain and rule objects of our table.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let elements = sample_elements();
    let changes: Vec<Change> = elements
        .iter()
        .map(|e| Change::Add {
            element: *e,
            timeout: Duration::from_secs(3600),
        })
        .chain(elements.iter().map(|e| Change::Remove(*e)))
        .collect();
    if let Ok(tx) = element::encode_transaction(&changes, 100) {
        out.push(("netlink", tx.bytes.clone()));
        for msg in nl::messages(&tx.bytes) {
            if !msg.payload.is_empty() {
                out.push(("nft_dump", msg.payload.to_vec()));
            }
        }
    }
    // A dumped element carries its expiration (attribute 10), beside the key and data.
    for e in &elements {
        let mut b = MsgBuilder::new();
        element::setelem(
            &mut b,
            &Change::Add {
                element: *e,
                timeout: Duration::from_secs(60),
            },
            1,
            true,
        );
        if let Ok(bytes) = b.into_bytes() {
            if let Some(msg) = nl::messages(&bytes).next() {
                let mut p = msg.payload.to_vec();
                let mut exp = MsgBuilder::new();
                exp.attr(10, &59_000u64.to_be_bytes());
                p.extend_from_slice(exp.as_bytes().unwrap_or(&[]));
                out.push(("nft_dump", p));
            }
        }
    }
    out.push(("netlink", error_message(17, Some("Could not process rule"))));
    out.push(("netlink", error_message(0, None)));
    if let Ok(bytes) = health::encode_get_table(5) {
        out.push(("netlink", bytes));
    }
    for entry in sample_entries() {
        let mut b = MsgBuilder::new();
        conntrack::encode_delete(&mut b, &entry, 1);
        if let Ok(bytes) = b.into_bytes() {
            out.push(("netlink", bytes.clone()));
            if let Some(msg) = nl::messages(&bytes).next() {
                out.push(("conntrack", with_reply_tuple(msg.payload)));
            }
        }
    }
    for object in health_objects() {
        out.push(("health", object));
    }
    out.push(("netlink", sock_diag_answers()));
    out
}

/// A sock_diag dump as the kernel answers it: an IPv4 and an IPv6 listener, then DONE.
fn sock_diag_answers() -> Vec<u8> {
    let mut out = Vec::new();
    let mut message = |ty: u16, payload: &[u8]| {
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        out.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(payload);
    };
    for (family, addr) in [
        (2u8, Ipv4Addr::new(192, 168, 88, 1).octets().to_vec()),
        (10, Ipv6Addr::LOCALHOST.octets().to_vec()),
    ] {
        let mut p = vec![family, 10, 0, 0, 0x01, 0xbb, 0, 0];
        p.extend_from_slice(&addr);
        p.resize(72, 0);
        message(20, &p);
    }
    message(3, &0i32.to_ne_bytes());
    out
}

/// An `NLMSG_ERROR` datagram answering seq 7 with `errno` (0: an ack), capped, with the
/// kernel's text as an extended-ack attribute when given.
fn error_message(errno: i32, text: Option<&str>) -> Vec<u8> {
    let mut p = (-errno).to_ne_bytes().to_vec();
    let mut orig = vec![0u8; NLMSG_HDRLEN];
    orig[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
    orig[8..12].copy_from_slice(&7u32.to_ne_bytes());
    p.extend_from_slice(&orig);
    let mut flags = nl::NLM_F_CAPPED;
    if let Some(t) = text {
        let mut b = MsgBuilder::new();
        b.attr_str(1, t);
        p.extend_from_slice(b.as_bytes().unwrap_or(&[]));
        flags |= nl::NLM_F_ACK_TLVS;
    }
    let mut msg = ((NLMSG_HDRLEN + p.len()) as u32).to_ne_bytes().to_vec();
    msg.extend_from_slice(&nl::NLMSG_ERROR.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&7u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&p);
    msg
}

/// A delete's payload holds the original tuple only; a dumped entry has both directions: the
/// original nest copied as the reply (`CTA_TUPLE_REPLY`, 2) with its ports swapped is enough
/// for a seed.
fn with_reply_tuple(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    if let Some(orig) = payload
        .get(NFGENMSG_LEN..)
        .and_then(|a| nl::attrs(a).next())
    {
        let mut b = MsgBuilder::new();
        let n = b.nest_begin(2);
        for inner in orig.nested() {
            let nest = b.nest_begin(inner.ty);
            for leaf in inner.nested() {
                b.attr(leaf.ty, leaf.payload);
            }
            b.nest_end(nest);
        }
        b.nest_end(n);
        out.extend_from_slice(b.as_bytes().unwrap_or(&[]));
    }
    out
}

/// Set, chain and rule objects of our table as the kernel dumps them (nfgenmsg, then the
/// table name in attribute 1, the object's name in 2 or the rule's chain in 2, flags or hook).
fn health_objects() -> Vec<Vec<u8>> {
    let object = |attrs: &[(u16, &[u8])]| {
        let mut b = MsgBuilder::new();
        for (ty, payload) in attrs {
            b.attr(*ty, payload);
        }
        let mut p = vec![1, 0, 0, 0];
        p.extend_from_slice(b.as_bytes().unwrap_or(&[]));
        p
    };
    vec![
        object(&[
            (1, b"natpmpd\0"),
            (2, b"inbound\0"),
            (3, &8u32.to_be_bytes()),
        ]),
        object(&[
            (1, b"natpmpd\0"),
            (2, b"pinholes\0"),
            (3, &0u32.to_be_bytes()),
        ]),
        object(&[
            (1, b"natpmpd\0"),
            (3, b"prerouting\0"),
            (4, &[8, 0, 1, 0, 0, 0, 0, 0]),
        ]),
        object(&[(1, b"natpmpd\0"), (2, b"forward\0")]),
        object(&[(1, b"filter\0"), (2, b"inbound\0")]),
    ]
}

fn sample_elements() -> Vec<Element> {
    let host6 = SocketAddrV6::new(
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10),
        8080,
        0,
        0,
    );
    vec![
        Element::Inbound {
            protocol: Protocol::Tcp,
            external_port: 8080,
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 10), 80),
        },
        Element::FilteredInbound {
            protocol: Protocol::Udp,
            external_port: 4000,
            remote: RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 4000),
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 20), 4000),
        },
        Element::Outbound {
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 10), 80),
            protocol: Protocol::Tcp,
            external: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 8080),
        },
        Element::Pinhole {
            protocol: Protocol::Tcp,
            internal: host6,
        },
        Element::FilteredPinhole {
            protocol: Protocol::Udp,
            remote: RemoteRange {
                first_addr: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0),
                last_addr: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0xffff, 0xffff, 0xffff, 0xffff),
                first_port: 0,
                last_port: 65535,
            },
            internal: host6,
        },
    ]
}

fn sample_entries() -> Vec<Entry> {
    let tuple = |src: IpAddr, dst: IpAddr, sport, dport| conntrack::Tuple {
        src,
        dst,
        proto: 6,
        sport,
        dport,
    };
    let lan = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10));
    let remote = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let ext = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
    let host6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10));
    let remote6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 9));
    vec![
        Entry {
            orig: tuple(remote, ext, 40000, 8080),
            reply: tuple(lan, remote, 80, 40000),
            id: Some(7),
            zone: Some(3),
            mark: 0x0010_0000,
        },
        Entry {
            orig: tuple(remote6, host6, 40000, 8080),
            reply: tuple(host6, remote6, 8080, 40000),
            id: None,
            zone: None,
            mark: 0,
        },
    ]
}
