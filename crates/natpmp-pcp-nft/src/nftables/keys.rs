//! The byte layout of every element's key and data (see `template.rs`), encoded and decoded
//! side by side so the two cannot drift apart.
//!
//! nftables concatenations put each field in its own 32-bit register, so every field is
//! padded to a multiple of 4 bytes, value first, zeros after; ports and addresses are in
//! network byte order:
//!
//! ```text
//! inbound            key      proto(1)+pad(3) . port(2)+pad(2)                             8
//!                    data     addr(4) . port(2)+pad(2)                                     8
//! inbound_filtered   key      proto(1)+pad(3) . port(2)+pad(2) . addr(4) . port(2)+pad(2) 16
//!                    key_end  the same, with the last remote address and port of the box 16
//!                    data     addr(4) . port(2)+pad(2)                                     8
//! outbound           key      addr(4) . proto(1)+pad(3) . port(2)+pad(2)                  12
//!                    data     addr(4) . port(2)+pad(2)                                     8
//! pinholes           key      addr6(16) . proto(1)+pad(3) . port(2)+pad(2)                24
//! pinholes_filtered  key      addr6(16) . proto . port . remote addr6(16) . port(2)+pad(2) 44
//!                    key_end  the same, with the last remote address and port of the box 44
//! ```
//!
//! The two pinhole sets are sets, not maps: no data (IPv6 is not translated). The filtered
//! map and set are sets of concatenated intervals (the kernel's pipapo set): an element is a
//! box, a range per field from `key` to `key_end`. Everything but the remote address and port
//! is the same in both corners, so each box belongs to one mapping. nft sends `key_end` even
//! for a single point (a PEER), and so do we, when removing too.
//!
//! Decoding is strict: an element is one natpmpd writes only if every field has the size, the
//! padding and the values natpmpd writes (see `dump.rs` for what happens to the others).

use super::ElementSet;
use natpmp_pcp_core::kernel::{Element, RemoteRange};
use natpmp_pcp_core::Protocol;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// The longest key: `pinholes_filtered`'s.
pub const MAX_KEY: usize = 44;

/// A key (or key end) of up to [`MAX_KEY`] bytes, kept inline so encoding a transaction of
/// thousands of changes allocates nothing per change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; MAX_KEY],
    len: usize,
}

impl Key {
    fn of<const N: usize>(k: [u8; N]) -> Key {
        let mut bytes = [0u8; MAX_KEY];
        bytes[..N].copy_from_slice(&k);
        Key { bytes, len: N }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

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

/// `pinholes` key: `host address . protocol . host port`.
pub fn pinhole_key(internal: SocketAddrV6, protocol: Protocol) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[0..16].copy_from_slice(&internal.ip().octets());
    k[16..20].copy_from_slice(&proto_field(protocol));
    k[20..24].copy_from_slice(&port_field(internal.port()));
    k
}

/// `pinholes_filtered` key (or key end): `host address . protocol . host port . remote
/// address . remote port`.
pub fn filtered_pinhole_key(
    internal: SocketAddrV6,
    protocol: Protocol,
    remote_addr: Ipv6Addr,
    remote_port: u16,
) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[0..24].copy_from_slice(&pinhole_key(internal, protocol));
    k[24..40].copy_from_slice(&remote_addr.octets());
    k[40..44].copy_from_slice(&port_field(remote_port));
    k
}

/// The key of `element`, and for a box (the two filtered kinds) its key end.
pub fn key(element: &Element) -> (Key, Option<Key>) {
    match *element {
        Element::Inbound {
            protocol,
            external_port,
            ..
        } => (Key::of(inbound_key(protocol, external_port)), None),
        Element::FilteredInbound {
            protocol,
            external_port,
            remote: r,
            ..
        } => (
            Key::of(filtered_key(
                protocol,
                external_port,
                r.first_addr,
                r.first_port,
            )),
            Some(Key::of(filtered_key(
                protocol,
                external_port,
                r.last_addr,
                r.last_port,
            ))),
        ),
        Element::Outbound {
            internal, protocol, ..
        } => (Key::of(outbound_key(internal, protocol)), None),
        Element::Pinhole { protocol, internal } => (Key::of(pinhole_key(internal, protocol)), None),
        Element::FilteredPinhole {
            protocol,
            internal,
            remote: r,
        } => (
            Key::of(filtered_pinhole_key(
                internal,
                protocol,
                r.first_addr,
                r.first_port,
            )),
            Some(Key::of(filtered_pinhole_key(
                internal,
                protocol,
                r.last_addr,
                r.last_port,
            ))),
        ),
    }
}

/// The data of `element`: where the kernel rewrites matching packets to. `None` for a
/// pinhole, which lives in a set.
pub fn data(element: &Element) -> Option<[u8; 8]> {
    match *element {
        Element::Inbound { internal, .. } | Element::FilteredInbound { internal, .. } => {
            Some(endpoint(internal))
        }
        Element::Outbound { external, .. } => Some(endpoint(external)),
        Element::Pinhole { .. } | Element::FilteredPinhole { .. } => None,
    }
}

/// The element of `set` with these raw fields, or `None` if natpmpd would never write them.
/// The kernel stores a box given without an end as a point, so a missing key end of an
/// interval element is taken to equal its key (nft always sends the end). Nothing here can
/// panic, whatever the lengths.
pub fn decode(
    set: ElementSet,
    key: Option<&[u8]>,
    key_end: Option<&[u8]>,
    data: Option<&[u8]>,
) -> Option<Element> {
    let key = key?;
    if !set.is_interval() && key_end.is_some() {
        return None;
    }
    let last = key_end.unwrap_or(key);
    match set {
        // A set element with data is no pinhole natpmpd wrote.
        ElementSet::Pinholes | ElementSet::PinholesFiltered if data.is_some() => None,
        ElementSet::Inbound => decode_inbound(key, data?),
        ElementSet::InboundFiltered => decode_filtered(key, last, data?),
        ElementSet::Outbound => decode_outbound(key, data?),
        ElementSet::Pinholes => decode_pinhole(key),
        ElementSet::PinholesFiltered => decode_filtered_pinhole(key, last),
    }
}

/// A 4-byte register holding a protocol number.
fn read_proto(b: &[u8]) -> Option<Protocol> {
    match *b {
        [n, 0, 0, 0] => Protocol::from_number(n),
        _ => None,
    }
}

/// A 4-byte register holding a port.
fn read_port(b: &[u8]) -> Option<u16> {
    match *b {
        [hi, lo, 0, 0] => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}

fn read_addr(b: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

fn read_addr6(b: &[u8]) -> Option<Ipv6Addr> {
    let o: [u8; 16] = b.try_into().ok()?;
    Some(Ipv6Addr::from(o))
}

/// `address . port`, the data of every map.
fn read_endpoint(d: &[u8]) -> Option<SocketAddrV4> {
    if d.len() != 8 {
        return None;
    }
    Some(SocketAddrV4::new(
        read_addr(&d[0..4])?,
        read_port(&d[4..8])?,
    ))
}

/// A box from its two corners, if it is one: not turned inside out.
fn remote_range<A: Copy + Ord>(first: (A, u16), last: (A, u16)) -> Option<RemoteRange<A>> {
    let r = RemoteRange {
        first_addr: first.0,
        last_addr: last.0,
        first_port: first.1,
        last_port: last.1,
    };
    (r.first_addr <= r.last_addr && r.first_port <= r.last_port).then_some(r)
}

fn decode_inbound(k: &[u8], data: &[u8]) -> Option<Element> {
    if k.len() != 8 {
        return None;
    }
    Some(Element::Inbound {
        protocol: read_proto(&k[0..4])?,
        external_port: read_port(&k[4..8])?,
        internal: read_endpoint(data)?,
    })
}

fn decode_filtered(first: &[u8], last: &[u8], data: &[u8]) -> Option<Element> {
    if first.len() != 16 || last.len() != 16 || first[0..8] != last[0..8] {
        // A range of protocols or external ports is not one mapping's box.
        return None;
    }
    let corner = |k: &[u8]| Some((read_addr(&k[8..12])?, read_port(&k[12..16])?));
    Some(Element::FilteredInbound {
        protocol: read_proto(&first[0..4])?,
        external_port: read_port(&first[4..8])?,
        remote: remote_range(corner(first)?, corner(last)?)?,
        internal: read_endpoint(data)?,
    })
}

fn decode_outbound(k: &[u8], data: &[u8]) -> Option<Element> {
    if k.len() != 12 {
        return None;
    }
    Some(Element::Outbound {
        internal: SocketAddrV4::new(read_addr(&k[0..4])?, read_port(&k[8..12])?),
        protocol: read_proto(&k[4..8])?,
        external: read_endpoint(data)?,
    })
}

/// `host address . protocol . host port`, the first 24 bytes of both pinhole keys.
fn read_host(k: &[u8]) -> Option<(SocketAddrV6, Protocol)> {
    let k = k.get(..24)?;
    let host = SocketAddrV6::new(read_addr6(&k[0..16])?, read_port(&k[20..24])?, 0, 0);
    Some((host, read_proto(&k[16..20])?))
}

fn decode_pinhole(k: &[u8]) -> Option<Element> {
    if k.len() != 24 {
        return None;
    }
    let (internal, protocol) = read_host(k)?;
    Some(Element::Pinhole { protocol, internal })
}

fn decode_filtered_pinhole(first: &[u8], last: &[u8]) -> Option<Element> {
    if first.len() != 44 || last.len() != 44 || first[0..24] != last[0..24] {
        // A range of hosts, protocols or ports is not one pinhole's box.
        return None;
    }
    let (internal, protocol) = read_host(first)?;
    let corner = |k: &[u8]| Some((read_addr6(&k[24..40])?, read_port(&k[40..44])?));
    Some(Element::FilteredPinhole {
        protocol,
        internal,
        remote: remote_range(corner(first)?, corner(last)?)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn host6(port: u16) -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8:1::10".parse().unwrap(), port, 0, 0)
    }

    /// One element of each kind, with boxes wide and narrow.
    pub fn samples() -> Vec<Element> {
        let everyone6 = RemoteRange {
            first_addr: Ipv6Addr::UNSPECIFIED,
            last_addr: Ipv6Addr::from(u128::MAX),
            first_port: 0,
            last_port: 65535,
        };
        vec![
            Element::Inbound {
                protocol: Protocol::Tcp,
                external_port: 8080,
                internal: sa([192, 168, 88, 2], 80),
            },
            Element::FilteredInbound {
                protocol: Protocol::Udp,
                external_port: 4000,
                remote: RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 4000),
                internal: sa([192, 168, 88, 3], 4000),
            },
            Element::Outbound {
                internal: sa([192, 168, 88, 2], 80),
                protocol: Protocol::Tcp,
                external: sa([203, 0, 113, 7], 8080),
            },
            Element::Pinhole {
                protocol: Protocol::Tcp,
                internal: host6(8080),
            },
            Element::FilteredPinhole {
                protocol: Protocol::Udp,
                internal: host6(5353),
                remote: everyone6,
            },
            Element::FilteredPinhole {
                protocol: Protocol::Tcp,
                internal: host6(22),
                remote: RemoteRange::single("2001:db8:ff::2".parse().unwrap(), 4000),
            },
        ]
    }

    #[test]
    fn keys_pad_every_field_to_four_bytes() {
        // tcp = 6 in the first byte of its register; 8080 = 0x1f90, big-endian then padding.
        assert_eq!(
            inbound_key(Protocol::Tcp, 8080),
            [6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        // 192.168.88.2 . port 80 = 0x0050
        assert_eq!(
            endpoint(sa([192, 168, 88, 2], 80)),
            [192, 168, 88, 2, 0x00, 0x50, 0, 0]
        );
        assert_eq!(
            outbound_key(sa([192, 168, 88, 2], 80), Protocol::Tcp),
            [192, 168, 88, 2, 6, 0, 0, 0, 0x00, 0x50, 0, 0]
        );
        assert_eq!(
            filtered_key(Protocol::Udp, 5353, Ipv4Addr::new(198, 51, 100, 7), 4000),
            [17, 0, 0, 0, 0x14, 0xe9, 0, 0, 198, 51, 100, 7, 0x0f, 0xa0, 0, 0]
        );
        // As `nft --debug=netlink list set inet natpmpd pinholes` shows the element
        // `2001:db8:1::10 . tcp . 8080` (in host-order words): b80d0120 00000100 00000000
        // 10000000 00000006 0000901f.
        #[rustfmt::skip]
        let pinhole = [
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            6, 0, 0, 0,
            0x1f, 0x90, 0, 0,
        ];
        assert_eq!(pinhole_key(host6(8080), Protocol::Tcp), pinhole);
        let k = filtered_pinhole_key(
            host6(8080),
            Protocol::Tcp,
            "2001:db8:ff::2".parse().unwrap(),
            4000,
        );
        assert_eq!(k[..24], pinhole);
        assert_eq!(
            k[24..40],
            "2001:db8:ff::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(k[40..], [0x0f, 0xa0, 0, 0]);
    }

    #[test]
    fn every_kind_round_trips() {
        for e in samples() {
            let set = ElementSet::of(&e);
            let (k, end) = key(&e);
            assert_eq!(end.is_some(), set.is_interval(), "{e}");
            let d = data(&e);
            assert_eq!(d.is_some(), set.is_map(), "{e}");
            let decoded = decode(
                set,
                Some(k.as_slice()),
                end.as_ref().map(Key::as_slice),
                d.as_ref().map(|d| &d[..]),
            );
            assert_eq!(decoded, Some(e));
            // In any other set the same bytes are nobody's.
            for other in ElementSet::ALL.into_iter().filter(|s| *s != set) {
                let d = d.as_ref().map(|d| &d[..]);
                let end = end.as_ref().map(Key::as_slice);
                assert_eq!(decode(other, Some(k.as_slice()), end, d), None, "{e}");
            }
        }
    }

    #[test]
    fn pinholes_natpmpd_did_not_write_do_not_decode() {
        let e = samples()[5];
        let (k, end) = key(&e);
        let (k, end) = (k.as_slice().to_vec(), end.unwrap().as_slice().to_vec());
        let set = ElementSet::PinholesFiltered;
        assert_eq!(decode(set, Some(&k), Some(&end), None), Some(e));
        // A point without an end is itself.
        assert_eq!(decode(set, Some(&k), None, None), Some(e));
        let d = [10, 0, 0, 1, 0, 80, 0, 0];
        let mut other_host = end.clone();
        other_host[15] ^= 1;
        let mut other_proto = end.clone();
        other_proto[16] = 17;
        let mut dirty = end.clone();
        dirty[43] = 1;
        let mut inside_out = k.clone();
        inside_out[41] = 0xa1; // first port 4001 > last port 4000
        for (first, last, data) in [
            (&k, &end, Some(&d[..])),
            (&k, &other_host, None),
            (&k, &other_proto, None),
            (&k, &dirty, None),
            (&inside_out, &end, None),
            (&k, &end[..40].to_vec(), None),
        ] {
            assert_eq!(decode(set, Some(first), Some(last), data), None);
        }
        let plain = samples()[3];
        let k = key(&plain).0.as_slice().to_vec();
        let set = ElementSet::Pinholes;
        assert_eq!(decode(set, Some(&k), None, None), Some(plain));
        assert_eq!(decode(set, Some(&k), None, Some(&d)), None);
        assert_eq!(decode(set, Some(&k), Some(&k), None), None);
        assert_eq!(decode(set, Some(&k[..23]), None, None), None);
        assert_eq!(decode(set, None, None, None), None);
        let mut icmp = k.clone();
        icmp[16] = 58;
        assert_eq!(decode(set, Some(&icmp), None, None), None);
    }

    #[test]
    fn every_truncation_of_every_field_decodes_without_panic() {
        for e in samples() {
            let set = ElementSet::of(&e);
            let (k, end) = key(&e);
            let end = end.unwrap_or(k);
            let d = data(&e).unwrap_or([1; 8]);
            for a in 0..=k.as_slice().len() {
                for b in [0, a, end.as_slice().len()] {
                    for c in [0, 4, 8] {
                        let k = &k.as_slice()[..a];
                        let end = &end.as_slice()[..b.min(end.as_slice().len())];
                        let _ = decode(set, Some(k), Some(end), Some(&d[..c]));
                        let _ = decode(set, Some(k), None, None);
                    }
                }
            }
        }
    }
}
