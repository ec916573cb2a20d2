//! What the mapping table holds: endpoints, and the MAP and PEER mappings on them.
//!
//! An *endpoint* is one internal address, protocol and port. On IPv4 it holds one external
//! port, which all its mappings share, because the kernel rewrites every flow of the endpoint
//! to that port (`outbound` map): natpmpd is endpoint-independent (RFC 4787). On it live at
//! most one MAP mapping (inbound from anyone, or from FILTERed remotes) and any number of
//! PEER mappings (inbound from one remote each).

use super::thin_vec::ThinVec;
use crate::addr::{Prefix, Protocol};
use crate::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One internal address, protocol and port: the key NAT-PMP requests and PCP MAP/PEER name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    /// The client's address (the request's source address: RFC 6886 §3.3, RFC 6887 §11.1
    /// without THIRD_PARTY).
    pub client: IpAddr,
    pub protocol: Protocol,
    pub internal_port: u16,
}

/// A PCP mapping nonce (96 bits, RFC 6887 §11.1). Zero is a legal nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Nonce(pub [u8; 12]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::str::FromStr for Nonce {
    type Err = String;
    fn from_str(s: &str) -> Result<Nonce, String> {
        if s.len() != 24 || !s.is_ascii() {
            return Err(format!("a nonce is 24 hex digits, not {s:?}"));
        }
        let mut out = [0u8; 12];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("{s:?} is not hexadecimal"))?;
        }
        Ok(Nonce(out))
    }
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Nonce, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a PCP client's last request for a mapping came from and went to: where its Mapping
/// Updates go (RFC 6887 §14.2: "the client address and port used for that mapping's last
/// reply"), sent from the gateway address it talked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplyPath {
    pub client_port: u16,
    /// The gateway's own address the request was sent to.
    pub server: IpAddr,
}

/// A PCP client's claim on a mapping: its nonce, and where it last spoke from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PcpClient {
    pub nonce: Nonce,
    pub reply_path: ReplyPath,
}

/// Who made a MAP mapping and may change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// NAT-PMP has no nonce: any request from the client's address may renew or delete it, and
    /// a PCP MAP from the same address takes it over (rfc-checklist §3.13).
    NatPmp,
    /// Only requests carrying this nonce may renew or delete it (RFC 6887 §11.3, Simple Threat
    /// Model). NAT-PMP requests for it get its external port and change nothing.
    Pcp(PcpClient),
}

impl Owner {
    pub fn is_pcp(&self) -> bool {
        matches!(self, Owner::Pcp(_))
    }

    pub fn pcp(&self) -> Option<&PcpClient> {
        match self {
            Owner::Pcp(c) => Some(c),
            Owner::NatPmp => None,
        }
    }
}

/// One FILTER (RFC 6887 §13.3): remote addresses in `prefix`, from `port` (0: any port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Filter {
    pub prefix: Prefix,
    pub port: u16,
}

impl Filter {
    /// Whether every remote this one admits is admitted by `other` too.
    pub fn within(&self, other: &Filter) -> bool {
        other.prefix.covers(&self.prefix) && (other.port == 0 || other.port == self.port)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.prefix.addr(), self.port) {
            (_, 0) => write!(f, "{}", self.prefix),
            (IpAddr::V6(_), p) => write!(f, "[{}]:{p}", self.prefix),
            (IpAddr::V4(_), p) => write!(f, "{}:{p}", self.prefix),
        }
    }
}

/// The MAP mapping of an endpoint: inbound traffic to the external port reaches the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMapping {
    pub owner: Owner,
    /// Lifetime granted by the last request, seconds.
    pub lifetime: u32,
    pub expires: Timestamp,
    /// Empty: every remote may reach the mapping. Otherwise only these.
    pub filters: ThinVec<Filter>,
    pub description: Option<Box<str>>,
}

/// A PEER mapping (RFC 6887 §12): the one remote whose traffic to the external port reaches
/// the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMapping {
    pub remote: SocketAddr,
    pub client: PcpClient,
    pub lifetime: u32,
    pub expires: Timestamp,
    pub description: Option<Box<str>>,
}

/// Everything the table holds for one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// On IPv4 the allocated external port; on IPv6 (a pinhole) the internal port itself.
    pub external_port: u16,
    pub map: Option<MapMapping>,
    pub peers: ThinVec<PeerMapping>,
}

impl Endpoint {
    pub fn is_empty(&self) -> bool {
        self.map.is_none() && self.peers.is_empty()
    }

    /// How many mappings it holds (the per-client quota counts these).
    pub fn mapping_count(&self) -> usize {
        usize::from(self.map.is_some()) + self.peers.len()
    }

    /// The latest expiry of its mappings.
    pub fn last_expiry(&self) -> Option<Timestamp> {
        self.map
            .iter()
            .map(|m| m.expires)
            .chain(self.peers.iter().map(|p| p.expires))
            .max()
    }

    pub fn peer(&self, remote: SocketAddr) -> Option<&PeerMapping> {
        self.peers.iter().find(|p| p.remote == remote)
    }
}

/// Names one mapping: the MAP of an endpoint (`remote` = None) or one of its PEERs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingId {
    pub key: EndpointKey,
    pub remote: Option<SocketAddr>,
}
