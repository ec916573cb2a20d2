//! The kernel projection of the mapping table, as plain data: one [`Element`] per entry of
//! one of natpmpd's nftables maps, and [`Change`]s that add or remove them.
//!
//! The engine never talks to the kernel. It stages changes, a [`Forwarder`](super::Forwarder)
//! applies them in one transaction, and the engine is told the verdict. Keeping these types in
//! the core lets every rule be tested byte for byte without a kernel, and keeps the dependency
//! direction core <- kernel backend <- daemon.
//!
//! How a mapping becomes elements (see `engine::project`):
//! - every IPv4 endpoint that holds an external port has one [`Element::Outbound`], so all its
//!   outbound traffic leaves from the mapped port (RFC 6886 §3.9, RFC 6887 §11);
//! - a MAP without FILTER adds one [`Element::Inbound`]: any remote host may reach it;
//! - a MAP with FILTERs, and each PEER, add [`Element::FilteredInbound`]s: only the listed
//!   remote addresses and ports reach it. The kernel refuses overlapping intervals, so the
//!   filters are first cut into disjoint boxes.
//! - IPv6 has no NAT: a MAP opens an [`Element::Pinhole`] (any remote may reach the host's own
//!   address and port), and FILTERs and PEERs open [`Element::FilteredPinhole`] boxes
//!   (RFC 6887 §11, §12; RFC 6092).

use crate::addr::Protocol;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

/// An inclusive range of remote addresses (IPv4 by default, or IPv6) and ports: one box of a
/// FILTER or PEER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteRange<A = Ipv4Addr> {
    pub first_addr: A,
    pub last_addr: A,
    pub first_port: u16,
    pub last_port: u16,
}

impl<A: Copy + Ord> RemoteRange<A> {
    /// Exactly one remote address and port (a PEER).
    pub fn single(addr: A, port: u16) -> RemoteRange<A> {
        RemoteRange {
            first_addr: addr,
            last_addr: addr,
            first_port: port,
            last_port: port,
        }
    }

    pub fn contains(&self, addr: A, port: u16) -> bool {
        (self.first_addr..=self.last_addr).contains(&addr)
            && (self.first_port..=self.last_port).contains(&port)
    }

    /// Whether the two boxes share any (address, port).
    pub fn overlaps(&self, other: &RemoteRange<A>) -> bool {
        self.first_addr <= other.last_addr
            && other.first_addr <= self.last_addr
            && self.first_port <= other.last_port
            && other.first_port <= self.last_port
    }
}

impl<A: Copy + Ord + fmt::Display> fmt::Display for RemoteRange<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first_addr == self.last_addr {
            write!(f, "{}", self.first_addr)?;
        } else {
            write!(f, "{}-{}", self.first_addr, self.last_addr)?;
        }
        match (self.first_port, self.last_port) {
            (0, 65535) => Ok(()),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

/// One entry of one of natpmpd's maps. Two elements with the same key collide in the kernel
/// (see [`Element::collides_with`]); the data is what the kernel rewrites packets to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "map", rename_all = "snake_case")]
pub enum Element {
    /// Map `inbound`: `protocol . external port -> internal address . internal port`. New
    /// flows from any remote host to the external port are translated to the internal host.
    Inbound {
        protocol: Protocol,
        external_port: u16,
        internal: SocketAddrV4,
    },
    /// Map `inbound_filtered`: `protocol . external port . remote addresses . remote ports ->
    /// internal address . internal port`, with intervals. Only remotes inside the box are
    /// translated; the others miss the map and reach nothing.
    FilteredInbound {
        protocol: Protocol,
        external_port: u16,
        remote: RemoteRange,
        internal: SocketAddrV4,
    },
    /// Map `outbound`: `internal address . protocol . internal port -> external address .
    /// external port`. The internal host's own flows leave from the mapped port.
    Outbound {
        internal: SocketAddrV4,
        protocol: Protocol,
        external: SocketAddrV4,
    },
    /// Set `pinholes`: `internal address . protocol . internal port`. New IPv6 flows from any
    /// remote host to the host's own address and port are let in (marked for the operator's
    /// forward chain).
    Pinhole {
        protocol: Protocol,
        internal: SocketAddrV6,
    },
    /// Set `pinholes_filtered`: `internal address . protocol . internal port . remote
    /// addresses . remote ports`, with intervals. Only remotes inside the box are let in.
    FilteredPinhole {
        protocol: Protocol,
        internal: SocketAddrV6,
        remote: RemoteRange<Ipv6Addr>,
    },
}

impl Element {
    /// The nftables map the element lives in.
    pub fn map_name(&self) -> &'static str {
        match self {
            Element::Inbound { .. } => "inbound",
            Element::FilteredInbound { .. } => "inbound_filtered",
            Element::Outbound { .. } => "outbound",
            Element::Pinhole { .. } => "pinholes",
            Element::FilteredPinhole { .. } => "pinholes_filtered",
        }
    }

    /// Whether the element is of the IPv6 firewall (a pinhole) rather than the IPv4 NAT.
    pub fn is_ipv6(&self) -> bool {
        matches!(
            self,
            Element::Pinhole { .. } | Element::FilteredPinhole { .. }
        )
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            Element::Inbound { protocol, .. }
            | Element::FilteredInbound { protocol, .. }
            | Element::Outbound { protocol, .. }
            | Element::Pinhole { protocol, .. }
            | Element::FilteredPinhole { protocol, .. } => *protocol,
        }
    }

    /// The internal endpoint traffic is translated to (or from), or let in to.
    pub fn internal(&self) -> SocketAddr {
        match self {
            Element::Inbound { internal, .. }
            | Element::FilteredInbound { internal, .. }
            | Element::Outbound { internal, .. } => SocketAddr::V4(*internal),
            Element::Pinhole { internal, .. } | Element::FilteredPinhole { internal, .. } => {
                SocketAddr::V6(*internal)
            }
        }
    }

    /// The external port traffic arrives on (or leaves from); a pinhole's is the host's own.
    pub fn external_port(&self) -> u16 {
        match self {
            Element::Inbound { external_port, .. }
            | Element::FilteredInbound { external_port, .. } => *external_port,
            Element::Outbound { external, .. } => external.port(),
            Element::Pinhole { internal, .. } | Element::FilteredPinhole { internal, .. } => {
                internal.port()
            }
        }
    }

    /// The internal host's address.
    pub fn internal_ip(&self) -> IpAddr {
        self.internal().ip()
    }

    /// Whether the kernel would refuse to hold both: same map and same key (or, in the
    /// interval map, overlapping keys). Adding an element that collides fails with EEXIST.
    pub fn collides_with(&self, other: &Element) -> bool {
        match (self, other) {
            (
                Element::Inbound {
                    protocol: p,
                    external_port: e,
                    ..
                },
                Element::Inbound {
                    protocol: q,
                    external_port: f,
                    ..
                },
            ) => p == q && e == f,
            (
                Element::FilteredInbound {
                    protocol: p,
                    external_port: e,
                    remote: r,
                    ..
                },
                Element::FilteredInbound {
                    protocol: q,
                    external_port: f,
                    remote: s,
                    ..
                },
            ) => p == q && e == f && r.overlaps(s),
            (
                Element::Outbound {
                    internal: a,
                    protocol: p,
                    ..
                },
                Element::Outbound {
                    internal: b,
                    protocol: q,
                    ..
                },
            ) => a == b && p == q,
            (
                Element::Pinhole {
                    protocol: p,
                    internal: a,
                },
                Element::Pinhole {
                    protocol: q,
                    internal: b,
                },
            ) => p == q && a.ip() == b.ip() && a.port() == b.port(),
            (
                Element::FilteredPinhole {
                    protocol: p,
                    internal: a,
                    remote: r,
                },
                Element::FilteredPinhole {
                    protocol: q,
                    internal: b,
                    remote: s,
                },
            ) => p == q && a.ip() == b.ip() && a.port() == b.port() && r.overlaps(s),
            _ => false,
        }
    }

    /// Whether `other` names the same kernel entry (same map and key; the data may differ).
    /// A removal only needs the key.
    pub fn same_key(&self, other: &Element) -> bool {
        match (self, other) {
            (
                Element::FilteredInbound { remote: r, .. },
                Element::FilteredInbound { remote: s, .. },
            ) => r == s && self.collides_with(other),
            (
                Element::FilteredPinhole { remote: r, .. },
                Element::FilteredPinhole { remote: s, .. },
            ) => r == s && self.collides_with(other),
            _ => self.collides_with(other),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Inbound {
                protocol,
                external_port,
                internal,
            } => write!(f, "inbound {protocol} {external_port} -> {internal}"),
            Element::FilteredInbound {
                protocol,
                external_port,
                remote,
                internal,
            } => write!(
                f,
                "inbound_filtered {protocol} {external_port} from {remote} -> {internal}"
            ),
            Element::Outbound {
                internal,
                protocol,
                external,
            } => write!(f, "outbound {protocol} {internal} -> {external}"),
            Element::Pinhole { protocol, internal } => {
                write!(f, "pinholes {protocol} {internal}")
            }
            Element::FilteredPinhole {
                protocol,
                internal,
                remote,
            } => write!(f, "pinholes_filtered {protocol} {internal} from {remote}"),
        }
    }
}

/// A change to the kernel's elements. A renewal is `Remove` then `Add` of the same element in
/// one transaction, which the kernel applies atomically; the new timeout is the point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add `element`; the kernel removes it by itself after `timeout` (a backstop for a daemon
    /// that died: slightly longer than the mapping, so the daemon normally removes it first).
    Add {
        element: Element,
        timeout: Duration,
    },
    Remove(Element),
}

impl Change {
    pub fn element(&self) -> &Element {
        match self {
            Change::Add { element, .. } | Change::Remove(element) => element,
        }
    }

    pub fn is_add(&self) -> bool {
        matches!(self, Change::Add { .. })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add { element, timeout } => {
                write!(f, "add {element} (timeout {}s)", timeout.as_secs())
            }
            Change::Remove(element) => write!(f, "remove {element}"),
        }
    }
}

/// The elements `changes` remove for good: removed and not added back later in the same
/// transaction. A renewal (remove + add of the same key) keeps its flows; the flows of the
/// others must end (their conntrack entries are cleared).
pub fn removed_for_good(changes: &[Change]) -> Vec<Element> {
    let mut gone: Vec<Element> = Vec::new();
    for c in changes {
        match c {
            Change::Remove(e) => gone.push(*e),
            Change::Add { element, .. } => gone.retain(|g| !g.same_key(element)),
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(host: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, host), port)
    }

    fn inbound(ext: u16, host: u8) -> Element {
        Element::Inbound {
            protocol: Protocol::Udp,
            external_port: ext,
            internal: sa(host, ext),
        }
    }

    #[test]
    fn renewals_keep_their_flows() {
        let add = |e| Change::Add {
            element: e,
            timeout: Duration::from_secs(5),
        };
        let changes = [
            Change::Remove(inbound(1, 2)),
            add(inbound(1, 2)), // renewal of 1
            Change::Remove(inbound(2, 2)),
            Change::Remove(inbound(3, 2)),
            add(inbound(3, 2)),
            Change::Remove(inbound(3, 2)), // 3 re-added, then removed again
        ];
        assert_eq!(
            removed_for_good(&changes),
            vec![inbound(2, 2), inbound(3, 2)]
        );
    }

    #[test]
    fn keys_collide_per_map() {
        assert!(inbound(1, 2).collides_with(&inbound(1, 3)));
        assert!(!inbound(1, 2).collides_with(&inbound(2, 2)));
        let out = |host, ext| Element::Outbound {
            internal: sa(host, 80),
            protocol: Protocol::Udp,
            external: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), ext),
        };
        assert!(out(2, 1).collides_with(&out(2, 9)));
        assert!(!out(2, 1).collides_with(&out(3, 1)));
        assert!(!out(2, 1).collides_with(&inbound(1, 2)));
        let filtered = |a: [u8; 4], b: [u8; 4], ports: (u16, u16)| Element::FilteredInbound {
            protocol: Protocol::Tcp,
            external_port: 8080,
            remote: RemoteRange {
                first_addr: a.into(),
                last_addr: b.into(),
                first_port: ports.0,
                last_port: ports.1,
            },
            internal: sa(2, 80),
        };
        let net = filtered([203, 0, 113, 0], [203, 0, 113, 255], (0, 65535));
        let host = filtered([203, 0, 113, 7], [203, 0, 113, 7], (4000, 4000));
        let other = filtered([198, 51, 100, 7], [198, 51, 100, 7], (4000, 4000));
        assert!(net.collides_with(&host));
        assert!(!net.same_key(&host));
        assert!(!host.collides_with(&other));
        assert!(host.same_key(&host));
    }

    #[test]
    fn overlapping_pinhole_boxes_collide_but_are_not_the_same_key() {
        let host = SocketAddrV6::new("2001:db8:1::10".parse().unwrap(), 8080, 0, 0);
        let boxed = |first: &str, last: &str, port: u16| Element::FilteredPinhole {
            protocol: Protocol::Udp,
            internal: host,
            remote: RemoteRange {
                first_addr: first.parse().unwrap(),
                last_addr: last.parse().unwrap(),
                first_port: port,
                last_port: port,
            },
        };
        let net = boxed("2001:db8:ff::", "2001:db8:ff::ffff", 4000);
        let one = boxed("2001:db8:ff::7", "2001:db8:ff::7", 4000);
        assert!(net.collides_with(&one));
        assert!(!net.same_key(&one));
        assert!(one.same_key(&one));
        let hole = Element::Pinhole {
            protocol: Protocol::Udp,
            internal: host,
        };
        assert!(hole.same_key(&hole) && !hole.collides_with(&net));
        // Removing the host's box while adding the network's ends the host's flows.
        let changes = [
            Change::Remove(one),
            Change::Add {
                element: net,
                timeout: Duration::from_secs(5),
            },
        ];
        assert_eq!(removed_for_good(&changes), vec![one]);
    }

    #[test]
    fn remote_ranges_print_compactly() {
        let r = RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 4000);
        assert_eq!(r.to_string(), "198.51.100.7:4000");
        let net = RemoteRange {
            first_addr: Ipv4Addr::new(203, 0, 113, 0),
            last_addr: Ipv4Addr::new(203, 0, 113, 255),
            first_port: 0,
            last_port: 65535,
        };
        assert_eq!(net.to_string(), "203.0.113.0-203.0.113.255");
        assert!(net.contains(Ipv4Addr::new(203, 0, 113, 9), 1));
        assert!(!net.contains(Ipv4Addr::new(203, 0, 114, 0), 1));
    }
}
