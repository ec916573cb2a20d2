//! What a request may touch, read from its bytes before it is handled: which of its client's
//! endpoints it may read or change. The gateway uses it to stage a client's requests on top of
//! each other in one kernel transaction as long as they touch different endpoints (a client
//! mapping its whole quota at start-up sends a burst of them), and to settle the batch first
//! when they might not (gateway/batch.rs).
//!
//! Over-approximating is always safe: anything this cannot place exactly is `Client`. The
//! client of every endpoint a request touches is its source address: NAT-PMP has no other,
//! and natpmpd refuses PCP's THIRD_PARTY (front/pcp_options.rs).

use super::{dispatch, Dispatch};
use crate::addr::Protocol;
use crate::engine::mapping::EndpointKey;
use crate::wire;
use crate::wire::natpmp::Request;
use crate::wire::pcp::MapData;
use std::net::IpAddr;

/// The endpoints of its client a request may read or change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// None: it is answered from the external address and the epoch alone (a NAT-PMP
    /// address request, an unsupported opcode or version, a PCP ANNOUNCE), or dropped.
    Nothing,
    /// One endpoint: a MAP or PEER for one protocol and internal port.
    Endpoint {
        protocol: Protocol,
        internal_port: u16,
    },
    /// Possibly any of the client's endpoints: a delete of all its mappings, or a request
    /// this cannot read.
    Client,
}

impl Scope {
    /// Whether `key`, an endpoint a request of `client` touched, lies within this scope.
    pub fn covers(self, client: IpAddr, key: &EndpointKey) -> bool {
        let same_client = key.client.to_canonical() == client.to_canonical();
        match self {
            Scope::Nothing => false,
            Scope::Endpoint {
                protocol,
                internal_port,
            } => same_client && key.protocol == protocol && key.internal_port == internal_port,
            Scope::Client => same_client,
        }
    }
}

/// The scope of `datagram`, as `front::dispatch` would route it, read with the front ends'
/// own parsers.
pub fn scope(datagram: &[u8], pcp_enabled: bool) -> Scope {
    match dispatch(datagram, pcp_enabled) {
        Dispatch::Drop | Dispatch::UnsupportedVersion => Scope::Nothing,
        Dispatch::NatPmp => natpmp_scope(datagram),
        Dispatch::Pcp => pcp_scope(datagram),
    }
}

fn natpmp_scope(datagram: &[u8]) -> Scope {
    match wire::natpmp::parse(datagram) {
        // Port 0 with lifetime 0 deletes all of the client's mappings (RFC 6886 §3.4).
        Some(Request::Map(m)) if m.internal_port == 0 => Scope::Client,
        Some(Request::Map(m)) => Scope::Endpoint {
            protocol: m.protocol,
            internal_port: m.internal_port,
        },
        // The address request, unsupported opcodes, and what is dropped.
        _ => Scope::Nothing,
    }
}

fn pcp_scope(datagram: &[u8]) -> Scope {
    match datagram[1] & !wire::pcp::RESPONSE_BIT {
        wire::pcp::OP_ANNOUNCE => Scope::Nothing,
        // A PEER's opcode data begins as a MAP's (RFC 6887 §12.1).
        wire::pcp::OP_MAP | wire::pcp::OP_PEER => {
            let data = datagram
                .get(wire::pcp::HEADER_LEN..)
                .and_then(MapData::parse);
            match data.and_then(|d| Some((Protocol::from_number(d.protocol)?, d.internal_port))) {
                Some((protocol, internal_port)) if internal_port != 0 => Scope::Endpoint {
                    protocol,
                    internal_port,
                },
                // A wildcard delete (protocol 0, port 0), another protocol, or too short.
                _ => Scope::Client,
            }
        }
        _ => Scope::Client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn natpmp_map(opcode: u8, internal_port: u16) -> Vec<u8> {
        let mut d = vec![0, opcode, 0, 0];
        d.extend_from_slice(&internal_port.to_be_bytes());
        d.extend_from_slice(&[0; 6]);
        d
    }

    /// Where MAP and PEER keep the protocol and internal port: after the 24-byte header and
    /// the 12-byte nonce (RFC 6887 §11.1).
    const PCP_PROTOCOL: usize = 36;
    const PCP_INTERNAL_PORT: usize = 40;

    fn pcp(opcode: u8, protocol: u8, internal_port: u16) -> Vec<u8> {
        let mut d = vec![0u8; 60];
        d[0] = 2;
        d[1] = opcode;
        d[PCP_PROTOCOL] = protocol;
        d[PCP_INTERNAL_PORT..PCP_INTERNAL_PORT + 2].copy_from_slice(&internal_port.to_be_bytes());
        d
    }

    #[test]
    fn natpmp_requests() {
        let tcp = Scope::Endpoint {
            protocol: Protocol::Tcp,
            internal_port: 8080,
        };
        assert_eq!(scope(&natpmp_map(2, 8080), true), tcp);
        assert_eq!(
            scope(&natpmp_map(1, 53), false),
            Scope::Endpoint {
                protocol: Protocol::Udp,
                internal_port: 53
            }
        );
        assert_eq!(scope(&natpmp_map(1, 0), true), Scope::Client);
        assert_eq!(scope(&[0, 0], true), Scope::Nothing);
        assert_eq!(scope(&natpmp_map(9, 80), true), Scope::Nothing);
        assert_eq!(scope(&natpmp_map(2, 80)[..8], true), Scope::Nothing);
        // A response is dropped, whatever it says.
        assert_eq!(scope(&natpmp_map(0x82, 80), true), Scope::Nothing);
    }

    #[test]
    fn pcp_requests() {
        let udp = Scope::Endpoint {
            protocol: Protocol::Udp,
            internal_port: 5000,
        };
        assert_eq!(scope(&pcp(1, 17, 5000), true), udp);
        assert_eq!(scope(&pcp(2, 17, 5000), true), udp);
        // Wildcards, other protocols, short and unknown requests: anything of the client.
        assert_eq!(scope(&pcp(1, 0, 0), true), Scope::Client);
        assert_eq!(scope(&pcp(1, 6, 0), true), Scope::Client);
        assert_eq!(scope(&pcp(1, 132, 5000), true), Scope::Client);
        assert_eq!(scope(&pcp(1, 6, 5000)[..40], true), Scope::Client);
        assert_eq!(scope(&pcp(7, 6, 5000), true), Scope::Client);
        assert_eq!(scope(&pcp(0, 0, 0), true), Scope::Nothing);
        // With PCP off, version 2 is an unsupported version.
        assert_eq!(scope(&pcp(1, 17, 5000), false), Scope::Nothing);
    }

    #[test]
    fn covers_only_its_own_endpoints() {
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 2));
        let key = |c: IpAddr, protocol, internal_port| EndpointKey {
            client: c,
            protocol,
            internal_port,
        };
        let tcp80 = Scope::Endpoint {
            protocol: Protocol::Tcp,
            internal_port: 80,
        };
        assert!(tcp80.covers(client, &key(client, Protocol::Tcp, 80)));
        assert!(!tcp80.covers(client, &key(client, Protocol::Udp, 80)));
        assert!(!tcp80.covers(client, &key(client, Protocol::Tcp, 81)));
        let other = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 3));
        assert!(!tcp80.covers(client, &key(other, Protocol::Tcp, 80)));
        assert!(Scope::Client.covers(client, &key(client, Protocol::Udp, 9)));
        assert!(!Scope::Client.covers(client, &key(other, Protocol::Udp, 9)));
        assert!(!Scope::Nothing.covers(client, &key(client, Protocol::Tcp, 80)));
        // An IPv4 client seen as an IPv4-mapped IPv6 source is the same client.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 168, 88, 2).to_ipv6_mapped());
        assert!(tcp80.covers(mapped, &key(client, Protocol::Tcp, 80)));
    }
}
