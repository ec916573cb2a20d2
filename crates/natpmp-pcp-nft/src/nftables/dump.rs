//! The element dump: every element of one map or set, decoded back into [`Element`]s.
//!
//! The kernel answers `GETSETELEM` with `NEWSETELEM` messages in the shape we add elements
//! (see `element.rs`), plus `NFTA_SET_ELEM_EXPIRATION`, the time left. Decoding is strict
//! (`keys.rs`): an element is ours only if every field has the size, the padding and the
//! values natpmpd writes. Anything else (a catch-all element, a protocol other than TCP and
//! UDP, a box whose corners name two protocols, ports or hosts, a pinhole with data) cannot be
//! an `Element`, and removing an `Element` would never reach it, so it is returned as
//! [`Unreadable`] for the caller to report, never dropped on the floor.

use super::{keys, nft_type, ElementSet, NFPROTO_INET, NFTA_DATA_VALUE, NFTA_LIST_ELEM};
use super::{NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_FLAGS};
use super::{NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END, NFTA_SET_ELEM_LIST_ELEMENTS};
use super::{NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFT_MSG_GETSETELEM, TABLE};
use crate::nl::{self, Attr, MsgBuilder, TooLong, NFGENMSG_LEN, NLM_F_DUMP, NLM_F_REQUEST};
use natpmp_pcp_core::kernel::Element;
use std::fmt;
use std::time::Duration;

/// `GETSETELEM` with `NLM_F_DUMP`: every element of `set`.
pub fn encode_dump(set: ElementSet, seq: u32) -> Result<Vec<u8>, TooLong> {
    let mut b = MsgBuilder::new();
    let m = b.begin(
        nft_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    b.attr_str(NFTA_SET_ELEM_LIST_SET, set.name());
    b.end(m);
    b.into_bytes()
}

/// One element as the kernel reports it, fields still raw. Any of them may be missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawElement<'a> {
    pub key: Option<&'a [u8]>,
    /// The last key of an interval (`inbound_filtered` and `pinholes_filtered` only).
    pub key_end: Option<&'a [u8]>,
    /// What a map element translates to (sets have none).
    pub data: Option<&'a [u8]>,
    /// `NFTA_SET_ELEM_FLAGS` (catch-all, interval end), 0 when absent.
    pub flags: u32,
    /// Time left before the kernel expires it, if it has a timeout.
    pub expiration_ms: Option<u64>,
}

/// Every element in the payload of one dumped `NEWSETELEM` message (payload = after the
/// netlink header), whatever it holds: none is skipped, so none can be lost. Nothing here can
/// panic.
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
            let mut raw = RawElement::default();
            for a in elem.nested() {
                match a.ty {
                    NFTA_SET_ELEM_KEY => raw.key = value(a),
                    NFTA_SET_ELEM_KEY_END => raw.key_end = value(a),
                    NFTA_SET_ELEM_DATA => raw.data = value(a),
                    NFTA_SET_ELEM_FLAGS => raw.flags = a.be32().unwrap_or(u32::MAX),
                    NFTA_SET_ELEM_EXPIRATION => raw.expiration_ms = a.be64(),
                    _ => {}
                }
            }
            out.push(raw);
        }
    }
    out
}

/// An element of one of our maps or sets that is not one natpmpd writes, raw bytes kept for
/// the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub set: ElementSet,
    pub key: Option<Vec<u8>>,
    pub key_end: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
    pub flags: u32,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn hex(f: &mut fmt::Formatter<'_>, name: &str, v: &Option<Vec<u8>>) -> fmt::Result {
            match v {
                None => write!(f, " no {name}"),
                Some(bytes) => {
                    write!(f, " {name} ")?;
                    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
                }
            }
        }
        let kind = if self.set.is_map() { "map" } else { "set" };
        write!(f, "{kind} {}:", self.set.name())?;
        hex(f, "key", &self.key)?;
        if self.key_end.is_some() || self.set.is_interval() {
            hex(f, "key_end", &self.key_end)?;
        }
        // A set element has no data: say so only when it has some.
        if self.data.is_some() || self.set.is_map() {
            hex(f, "data", &self.data)?;
        }
        if self.flags != 0 {
            write!(f, " flags {:#x}", self.flags)?;
        }
        Ok(())
    }
}

/// Decode one element dumped from `set` into the element and its time left (zero for an
/// element without a timeout, as a zero timeout in `Change::Add` asks for none).
pub fn decode(set: ElementSet, raw: &RawElement<'_>) -> Result<(Element, Duration), Unreadable> {
    let element = if raw.flags != 0 {
        None
    } else {
        keys::decode(set, raw.key, raw.key_end, raw.data)
    };
    match element {
        Some(e) => Ok((e, Duration::from_millis(raw.expiration_ms.unwrap_or(0)))),
        None => Err(Unreadable {
            set,
            key: raw.key.map(<[u8]>::to_vec),
            key_end: raw.key_end.map(<[u8]>::to_vec),
            data: raw.data.map(<[u8]>::to_vec),
            flags: raw.flags,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::tests::samples;
    use super::super::{NFTA_SET_ELEM_TIMEOUT, NFT_MSG_NEWSETELEM, NFT_SET_ELEM_INTERVAL_END};
    use super::*;
    use crate::nl::{messages, NLMSG_HDRLEN};
    use natpmp_pcp_core::kernel::RemoteRange;
    use natpmp_pcp_core::Protocol;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    /// One of each kind (`keys.rs`), and a few more IPv4 ones.
    fn elements() -> Vec<Element> {
        let mut v = samples();
        v.extend([
            Element::Inbound {
                protocol: Protocol::Udp,
                external_port: 5353,
                internal: sa([192, 168, 88, 9], 53),
            },
            Element::FilteredInbound {
                protocol: Protocol::Tcp,
                external_port: 8081,
                remote: RemoteRange {
                    first_addr: Ipv4Addr::new(0, 0, 0, 0),
                    last_addr: Ipv4Addr::new(255, 255, 255, 255),
                    first_port: 0,
                    last_port: 65535,
                },
                internal: sa([192, 168, 88, 2], 81),
            },
        ]);
        v
    }

    /// Build what a dump reply looks like: the kernel sends the element list back in the shape
    /// we add it, plus TIMEOUT and EXPIRATION (checked with `nft --debug=netlink list map`).
    fn reply(set: ElementSet, elements: &[(Element, u64)]) -> Vec<u8> {
        let mut b = MsgBuilder::new();
        let m = b.begin(nft_type(NFT_MSG_NEWSETELEM), 2, 1, NFPROTO_INET, 0);
        b.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        b.attr_str(NFTA_SET_ELEM_LIST_SET, set.name());
        let list = b.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (e, left_ms) in elements {
            let n = b.nest_begin(NFTA_LIST_ELEM);
            let (key, key_end) = keys::key(e);
            super::super::data_value(&mut b, NFTA_SET_ELEM_KEY, key.as_slice());
            if let Some(end) = key_end {
                super::super::data_value(&mut b, NFTA_SET_ELEM_KEY_END, end.as_slice());
            }
            if let Some(d) = keys::data(e) {
                super::super::data_value(&mut b, NFTA_SET_ELEM_DATA, &d);
            }
            b.attr(NFTA_SET_ELEM_TIMEOUT, &60_000u64.to_be_bytes());
            b.attr(NFTA_SET_ELEM_EXPIRATION, &left_ms.to_be_bytes());
            b.nest_end(n);
        }
        b.nest_end(list);
        b.end(m);
        b.into_bytes().unwrap()
    }

    type Decoded = (Vec<(Element, Duration)>, Vec<Unreadable>);

    fn decode_reply(set: ElementSet, bytes: &[u8]) -> Decoded {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for msg in messages(bytes) {
            for raw in parse_elements(msg.payload) {
                match decode(set, &raw) {
                    Ok(e) => ok.push(e),
                    Err(u) => bad.push(u),
                }
            }
        }
        (ok, bad)
    }

    #[test]
    fn every_element_round_trips_through_its_map() {
        for (i, e) in elements().into_iter().enumerate() {
            let set = ElementSet::of(&e);
            let left = 1234 + i as u64;
            let (ok, bad) = decode_reply(set, &reply(set, &[(e, left), (e, 0)]));
            assert!(bad.is_empty(), "{e}: {bad:?}");
            assert_eq!(
                ok,
                vec![(e, Duration::from_millis(left)), (e, Duration::ZERO)]
            );
        }
    }

    #[test]
    fn an_element_in_the_wrong_map_does_not_decode() {
        for e in elements() {
            for set in ElementSet::ALL
                .into_iter()
                .filter(|s| *s != ElementSet::of(&e))
            {
                let (ok, bad) = decode_reply(set, &reply(ElementSet::of(&e), &[(e, 1)]));
                assert!(ok.is_empty(), "{e} decoded from {set:?}");
                assert_eq!(bad.len(), 1);
            }
        }
    }

    #[test]
    fn a_point_without_key_end_is_itself() {
        let peer = elements()[1];
        let key = keys::key(&peer).0;
        let d = keys::data(&peer).unwrap();
        let raw = RawElement {
            key: Some(key.as_slice()),
            data: Some(&d),
            ..RawElement::default()
        };
        assert_eq!(decode(ElementSet::InboundFiltered, &raw).unwrap().0, peer);
    }

    #[test]
    fn what_natpmpd_does_not_write_is_unreadable_not_trusted() {
        let d = [10, 0, 0, 1, 0, 80, 0, 0];
        let good_key = [6, 0, 0, 0, 0, 80, 0, 0];
        let base = RawElement {
            key: Some(&good_key),
            data: Some(&d),
            ..RawElement::default()
        };
        assert!(decode(ElementSet::Inbound, &base).is_ok());
        let icmp = [1, 0, 0, 0, 0, 80, 0, 0];
        let short = [6, 0, 0, 0, 0, 80];
        let dirty = [6, 0, 0, 0, 0, 80, 0, 1]; // nonzero padding: a lookup never matches it
        let bad = [
            RawElement {
                key: Some(&icmp),
                ..base
            },
            RawElement {
                key: Some(&short),
                ..base
            },
            RawElement {
                key: Some(&dirty),
                ..base
            },
            RawElement { data: None, ..base },
            RawElement {
                data: Some(&d[..7]),
                ..base
            },
            RawElement { key: None, ..base },
            // A catch-all element (`*`) has no key and flag 2.
            RawElement {
                key: None,
                flags: 2,
                ..base
            },
            RawElement {
                flags: NFT_SET_ELEM_INTERVAL_END,
                ..base
            },
            RawElement {
                key_end: Some(&good_key),
                ..base
            },
        ];
        for raw in bad {
            let u = decode(ElementSet::Inbound, &raw).unwrap_err();
            assert!(u.to_string().starts_with("map inbound:"), "{u}");
        }
        let u = decode(
            ElementSet::Inbound,
            &RawElement {
                key: Some(&icmp),
                ..base
            },
        )
        .unwrap_err();
        assert_eq!(
            u.to_string(),
            "map inbound: key 0100000000500000 data 0a00000100500000"
        );

        // Boxes: corners with two protocols or two external ports, or turned inside out.
        let k = |proto: u8, ext: u8, addr: u8, port: u8| {
            [proto, 0, 0, 0, 0, ext, 0, 0, 10, 0, 0, addr, 0, port, 0, 0]
        };
        let (lo, hi) = (k(6, 80, 1, 1), k(6, 80, 9, 9));
        let boxed = RawElement {
            key: Some(&lo),
            key_end: Some(&hi),
            data: Some(&d),
            ..RawElement::default()
        };
        assert!(decode(ElementSet::InboundFiltered, &boxed).is_ok());
        for (first, last) in [
            (lo, k(17, 80, 9, 9)),
            (lo, k(6, 81, 9, 9)),
            (hi, lo),
            (k(6, 80, 1, 9), k(6, 80, 9, 1)),
        ] {
            let raw = RawElement {
                key: Some(&first),
                key_end: Some(&last),
                ..boxed
            };
            let u = decode(ElementSet::InboundFiltered, &raw).unwrap_err();
            assert!(u.to_string().contains(" key_end "), "{u}");
        }
    }

    #[test]
    fn unreadable_pinholes_are_named_as_set_elements() {
        let k = [0u8; 24]; // protocol 0: neither TCP nor UDP
        let raw = RawElement {
            key: Some(&k),
            ..RawElement::default()
        };
        let u = decode(ElementSet::Pinholes, &raw).unwrap_err();
        assert_eq!(
            u.to_string(),
            format!("set pinholes: key {}", "00".repeat(24))
        );
        // A pinhole with data is nobody's either; the data is shown when there is some.
        let good = keys::key(&samples()[3]).0;
        let d = [1, 2, 3, 4];
        let raw = RawElement {
            key: Some(good.as_slice()),
            data: Some(&d),
            ..RawElement::default()
        };
        assert!(decode(ElementSet::Pinholes, &RawElement { data: None, ..raw }).is_ok());
        let u = decode(ElementSet::PinholesFiltered, &raw).unwrap_err();
        let text = u.to_string();
        assert!(
            text.starts_with("set pinholes_filtered: key 20010db8"),
            "{text}"
        );
        assert!(text.ends_with(" no key_end data 01020304"), "{text}");
    }

    #[test]
    fn every_truncation_of_a_dump_parses_without_panic() {
        let all: Vec<(Element, u64)> = elements().into_iter().map(|e| (e, 7)).collect();
        // Every kind of element in every set: each set's reply holds all five layouts.
        for set in ElementSet::ALL {
            let bytes = reply(set, &all);
            for cut in 0..bytes.len() {
                let _ = decode_reply(set, &bytes[..cut]);
                for raw in parse_elements(&bytes[NLMSG_HDRLEN.min(cut)..cut]) {
                    let _ = decode(set, &raw).map_err(|u| u.to_string());
                }
            }
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn dump_request_names_table_and_map() {
        let bytes = encode_dump(ElementSet::Inbound, 3).unwrap();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            44, 0, 0, 0, 0x0d, 0x0a, 0x01, 0x03, 3, 0, 0, 0, 0, 0, 0, 0, // GETSETELEM, REQUEST|DUMP
            1, 0, 0, 0,             // NFPROTO_INET
            12, 0, 1, 0, b'n', b'a', b't', b'p', b'm', b'p', b'd', 0,
            12, 0, 2, 0, b'i', b'n', b'b', b'o', b'u', b'n', b'd', 0,
        ];
        assert_eq!(bytes, expected);
    }
}
