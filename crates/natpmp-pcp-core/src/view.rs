//! A read-only view of one mapping, for `natpmpctl print`, its JSON and logs.

use crate::addr::Protocol;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Which protocol made (or owns) the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    NatPmp,
    Pcp,
}

impl Via {
    /// As in JSON and `natpmpctl print`'s `via=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::NatPmp => "nat-pmp",
            Via::Pcp => "pcp",
        }
    }

    /// As in a made-up comment: `NAT-PMP tcp 8080`.
    pub fn label(self) -> &'static str {
        match self {
            Via::NatPmp => "NAT-PMP",
            Via::Pcp => "PCP",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingKind {
    /// Inbound from any remote host, or from the FILTERed ones (NAT-PMP map, PCP MAP).
    Map,
    /// Inbound from one remote host and port (PCP PEER).
    Peer,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingView {
    /// The LAN host that asked (the request's source address).
    pub client: IpAddr,
    pub protocol: Protocol,
    pub internal_port: u16,
    /// The address the mapping is reachable on; `None` while there is none.
    pub external_addr: Option<IpAddr>,
    pub external_port: u16,
    /// The lifetime granted by the last request, in seconds.
    pub lifetime: u32,
    /// Seconds left before the mapping expires.
    pub expires_in: u32,
    pub via: Via,
    pub kind: MappingKind,
    /// Whether a PCP nonce owns it (only requests with that nonce may change it).
    pub nonce_owned: bool,
    /// The one remote a PEER mapping admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<SocketAddr>,
    /// The remotes a FILTERed MAP admits (`203.0.113.0/24`, `198.51.100.7/32:4000`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// The client's DESCRIPTION (RFC 7220), if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl MappingView {
    /// What RouterOS shows after `nat-pmp <client>: `: the client's own description, or one
    /// made up from what the mapping is (`NAT-PMP tcp 8080`, `PCP udp 51413`).
    pub fn comment_text(&self) -> String {
        match &self.description {
            Some(d) => d.clone(),
            None => format!(
                "{} {} {}",
                self.via.label(),
                self.protocol,
                self.internal_port
            ),
        }
    }
}
