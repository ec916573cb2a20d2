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

/// How many mappings the table holds of each protocol, address family and maker: the
/// `natpmpd_mappings` gauges. Kept by the table as endpoints change, so reading it costs
/// nothing; counting a view of every mapping instead took ~65 ms of the loop at 100 000, once
/// a second while metrics were on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingCounts {
    /// By [protocol][IPv6][PCP]: UDP or TCP, IPv4 or IPv6, NAT-PMP or PCP.
    counts: [[[usize; 2]; 2]; 2],
}

impl MappingCounts {
    fn index(protocol: Protocol, ipv6: bool, via: Via) -> [usize; 3] {
        [
            usize::from(protocol == Protocol::Tcp),
            usize::from(ipv6),
            usize::from(via == Via::Pcp),
        ]
    }

    /// One mapping more (`by` = 1) or fewer (`by` = -1).
    pub(crate) fn add(&mut self, protocol: Protocol, ipv6: bool, via: Via, by: isize) {
        let [p, f, v] = Self::index(protocol, ipv6, via);
        self.counts[p][f][v] = self.counts[p][f][v].wrapping_add_signed(by);
    }

    /// How many mappings of `protocol`, of IPv6 hosts or IPv4 ones, made by `via`.
    pub fn get(&self, protocol: Protocol, ipv6: bool, via: Via) -> usize {
        let [p, f, v] = Self::index(protocol, ipv6, via);
        self.counts[p][f][v]
    }

    /// Every combination, with its count (zero ones too).
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, bool, Via, usize)> + '_ {
        [Protocol::Udp, Protocol::Tcp]
            .into_iter()
            .flat_map(move |protocol| {
                [false, true].into_iter().flat_map(move |ipv6| {
                    [Via::NatPmp, Via::Pcp]
                        .into_iter()
                        .map(move |via| (protocol, ipv6, via, self.get(protocol, ipv6, via)))
                })
            })
    }

    pub fn total(&self) -> usize {
        self.iter().map(|(_, _, _, n)| n).sum()
    }
}
