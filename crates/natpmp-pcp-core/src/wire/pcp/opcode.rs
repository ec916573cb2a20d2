//! MAP (RFC 6887 §11.1) and PEER (§12.1) opcode data, the same layout in requests and
//! responses.

use super::{addr128, be16};
use std::net::Ipv6Addr;

pub const MAP_DATA_LEN: usize = 36;
pub const PEER_DATA_LEN: usize = 56;

/// MAP opcode data; also the first 36 bytes of PEER's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapData {
    pub nonce: [u8; 12],
    /// IANA protocol number; 0 means all protocols.
    pub protocol: u8,
    pub internal_port: u16,
    /// Suggested in a request, assigned in a response.
    pub external_port: u16,
    /// Suggested in a request, assigned in a response; IPv4 as IPv4-mapped.
    pub external_addr: Ipv6Addr,
}

impl MapData {
    /// Parse from the bytes after the header; `None` if fewer than 36.
    pub fn parse(b: &[u8]) -> Option<MapData> {
        if b.len() < MAP_DATA_LEN {
            return None;
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&b[0..12]);
        Some(MapData {
            nonce,
            protocol: b[12],
            internal_port: be16(&b[16..18]),
            external_port: be16(&b[18..20]),
            external_addr: addr128(&b[20..36]),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&[self.protocol, 0, 0, 0]);
        out.extend_from_slice(&self.internal_port.to_be_bytes());
        out.extend_from_slice(&self.external_port.to_be_bytes());
        out.extend_from_slice(&self.external_addr.octets());
    }
}

/// PEER opcode data: the MAP fields, then the remote peer's port and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerData {
    pub map: MapData,
    pub remote_port: u16,
    pub remote_addr: Ipv6Addr,
}

impl PeerData {
    pub fn parse(b: &[u8]) -> Option<PeerData> {
        if b.len() < PEER_DATA_LEN {
            return None;
        }
        Some(PeerData {
            map: MapData::parse(b)?,
            remote_port: be16(&b[36..38]),
            remote_addr: addr128(&b[40..56]),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        self.map.emit(out);
        out.extend_from_slice(&self.remote_port.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.remote_addr.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_layout_by_hand() {
        let d = MapData {
            nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            protocol: 6,
            internal_port: 8080,
            external_port: 8081,
            external_addr: "::ffff:203.0.113.5".parse().unwrap(),
        };
        let mut b = Vec::new();
        d.emit(&mut b);
        #[rustfmt::skip]
        let expected = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            6, 0, 0, 0,
            0x1f, 0x90, 0x1f, 0x91,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 5,
        ];
        assert_eq!(b, expected);
        assert_eq!(MapData::parse(&b), Some(d));
        assert_eq!(MapData::parse(&b[..35]), None);
    }

    #[test]
    fn peer_layout_by_hand() {
        let d = PeerData {
            map: MapData {
                nonce: [0; 12],
                protocol: 17,
                internal_port: 1,
                external_port: 2,
                external_addr: Ipv6Addr::UNSPECIFIED,
            },
            remote_port: 4000,
            remote_addr: "::ffff:198.51.100.7".parse().unwrap(),
        };
        let mut b = Vec::new();
        d.emit(&mut b);
        assert_eq!(b.len(), 56);
        assert_eq!(&b[36..40], &[0x0f, 0xa0, 0, 0]);
        assert_eq!(&b[50..56], &[0xff, 0xff, 198, 51, 100, 7]);
        assert_eq!(PeerData::parse(&b), Some(d));
        assert_eq!(PeerData::parse(&b[..55]), None);
    }
}
