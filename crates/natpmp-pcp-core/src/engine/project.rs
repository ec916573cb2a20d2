//! The kernel projection of an endpoint, and the changes that move the kernel from one
//! projection to the next.
//!
//! Every change to an endpoint (a request, an expiry, an address change) is made the same way:
//! project the endpoint before and after, and stage the difference. Elements whose expiry
//! moved are removed and added again, which refreshes the kernel's own timeout (the backstop
//! for a daemon that died). One mechanism for every case keeps the kernel an exact projection
//! of the table, which is also what drift repair compares against.

use super::mapping::{Endpoint, EndpointKey, Filter};
use crate::kernel::{Change, Element, RemoteRange};
use crate::time::Timestamp;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

/// How much longer than the mapping the kernel element lives. The gateway removes the element
/// itself at expiry (and clears conntrack); the kernel timeout is only the backstop for a
/// daemon that died, so it must never fire first.
pub const KERNEL_TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// The elements the kernel should hold for the endpoint, each with the expiry it serves.
/// IPv4 endpoints project nothing while there is no external address (the outbound rewrite
/// needs one); they come back with the next address. IPv6 endpoints are pinholes and need none.
pub fn project(
    key: &EndpointKey,
    endpoint: &Endpoint,
    external: Option<Ipv4Addr>,
) -> Vec<(Element, Timestamp)> {
    match key.client {
        IpAddr::V4(client) => match external {
            Some(external) => project_v4(key, client, endpoint, external),
            None => Vec::new(),
        },
        IpAddr::V6(client) => project_v6(key, client, endpoint),
    }
}

/// The expiry of a MAP that admits anyone (no FILTER), if the endpoint has one: then PEER
/// boxes would add nothing.
fn open_map(endpoint: &Endpoint) -> Option<Timestamp> {
    endpoint
        .map
        .as_ref()
        .filter(|m| m.filters.is_empty())
        .map(|m| m.expires)
}

/// The endpoint's FILTERs and PEERs as disjoint boxes (see [`disjoint_boxes`]).
fn filtered_boxes(endpoint: &Endpoint, v6: bool) -> Vec<(Boxed, Timestamp)> {
    let mut admitted: Vec<Admitted> = Vec::new();
    if let Some(m) = &endpoint.map {
        admitted.extend(
            m.filters
                .iter()
                .filter(|f| f.prefix.addr().is_ipv6() == v6)
                .map(|f| Admitted::filter(f, m.expires)),
        );
    }
    admitted.extend(
        endpoint
            .peers
            .iter()
            .filter(|p| p.remote.is_ipv6() == v6)
            .map(|p| Admitted::peer(p.remote, p.expires)),
    );
    disjoint_boxes(&admitted)
}

fn project_v4(
    key: &EndpointKey,
    client: Ipv4Addr,
    endpoint: &Endpoint,
    external: Ipv4Addr,
) -> Vec<(Element, Timestamp)> {
    let mut out = Vec::new();
    let Some(last) = endpoint.last_expiry() else {
        return out;
    };
    let internal = SocketAddrV4::new(client, key.internal_port);
    let protocol = key.protocol;
    out.push((
        Element::Outbound {
            internal,
            protocol,
            external: SocketAddrV4::new(external, endpoint.external_port),
        },
        last,
    ));
    if let Some(expires) = open_map(endpoint) {
        out.push((
            Element::Inbound {
                protocol,
                external_port: endpoint.external_port,
                internal,
            },
            expires,
        ));
        return out;
    }
    for (b, expires) in filtered_boxes(endpoint, false) {
        out.push((
            Element::FilteredInbound {
                protocol,
                external_port: endpoint.external_port,
                remote: RemoteRange {
                    first_addr: Ipv4Addr::from(b.addrs.0 as u32),
                    last_addr: Ipv4Addr::from(b.addrs.1 as u32),
                    first_port: b.ports.0,
                    last_port: b.ports.1,
                },
                internal,
            },
            expires,
        ));
    }
    out
}

/// A pinhole: the host's own address and port, no translation and no outbound element.
fn project_v6(
    key: &EndpointKey,
    client: Ipv6Addr,
    endpoint: &Endpoint,
) -> Vec<(Element, Timestamp)> {
    let internal = SocketAddrV6::new(client, key.internal_port, 0, 0);
    let protocol = key.protocol;
    if let Some(expires) = open_map(endpoint) {
        return vec![(Element::Pinhole { protocol, internal }, expires)];
    }
    filtered_boxes(endpoint, true)
        .into_iter()
        .map(|(b, expires)| {
            (
                Element::FilteredPinhole {
                    protocol,
                    internal,
                    remote: RemoteRange {
                        first_addr: Ipv6Addr::from(b.addrs.0),
                        last_addr: Ipv6Addr::from(b.addrs.1),
                        first_port: b.ports.0,
                        last_port: b.ports.1,
                    },
                },
                expires,
            )
        })
        .collect()
}

/// One admitted set of remotes: an aligned address range (a prefix; addresses as numbers, an
/// IPv4 one as its 32-bit value) and a port range (one port or all), with the expiry of the
/// mapping that admits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Admitted {
    addrs: (u128, u128),
    ports: (u16, u16),
    expires: Timestamp,
}

impl Admitted {
    fn filter(f: &Filter, expires: Timestamp) -> Admitted {
        let ports = if f.port == 0 {
            (0, 65535)
        } else {
            (f.port, f.port)
        };
        Admitted {
            addrs: f.prefix.numeric_range(),
            ports,
            expires,
        }
    }

    fn peer(remote: SocketAddr, expires: Timestamp) -> Admitted {
        let addr = match remote.ip() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        Admitted {
            addrs: (addr, addr),
            ports: (remote.port(), remote.port()),
            expires,
        }
    }
}

/// A disjoint box of remotes, before it is given its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Boxed {
    addrs: (u128, u128),
    ports: (u16, u16),
}

/// An address range (first, last) and the expiry of what it admits.
type AddressBox = ((u128, u128), Timestamp);

/// Cut the admitted sets into disjoint boxes that cover exactly their union, each with the
/// latest expiry of the sets it covers. The kernel's interval maps refuse overlapping
/// elements, and FILTERs and PEERs of one endpoint may overlap (a /24 and a host in it).
///
/// The address ranges are prefixes, so any two are nested or apart. First the sets are grouped
/// under their outermost range: sets in different groups never overlap, so each group is cut
/// on its own. Within a group, ports are cut into segments at every range edge, each segment
/// gets the group's outermost ranges that admit it, and neighbouring segments with the same
/// boxes are merged again, so a lone FILTER stays one element.
fn disjoint_boxes(admitted: &[Admitted]) -> Vec<(Boxed, Timestamp)> {
    let mut sorted: Vec<&Admitted> = admitted.iter().collect();
    // Outer ranges first: by start, then widest.
    sorted.sort_by_key(|a| (a.addrs.0, std::cmp::Reverse(a.addrs.1)));
    let mut groups: Vec<Vec<&Admitted>> = Vec::new();
    let mut group_end = None;
    for a in sorted {
        match (groups.last_mut(), group_end) {
            (Some(g), Some(end)) if a.addrs.1 <= end => g.push(a),
            _ => {
                groups.push(vec![a]);
                group_end = Some(a.addrs.1);
            }
        }
    }
    groups.iter().flat_map(|g| cut_ports(g)).collect()
}

/// One group's boxes (see [`disjoint_boxes`]); `group` is sorted outer ranges first.
fn cut_ports(group: &[&Admitted]) -> Vec<(Boxed, Timestamp)> {
    let mut edges: Vec<u32> = group
        .iter()
        .flat_map(|a| [u32::from(a.ports.0), u32::from(a.ports.1) + 1])
        .collect();
    edges.sort_unstable();
    edges.dedup();
    // Per segment: its port range and its outermost address ranges with their expiries.
    let mut segments: Vec<((u16, u16), Vec<AddressBox>)> = Vec::new();
    for w in edges.windows(2) {
        let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
        let mut outer: Vec<AddressBox> = Vec::new();
        for a in group.iter().filter(|a| a.ports.0 <= lo && hi <= a.ports.1) {
            match outer.last_mut() {
                Some((range, expires)) if a.addrs.1 <= range.1 => {
                    *expires = (*expires).max(a.expires)
                }
                _ => outer.push((a.addrs, a.expires)),
            }
        }
        if outer.is_empty() {
            continue;
        }
        match segments.last_mut() {
            Some((ports, boxes)) if u32::from(ports.1) + 1 == u32::from(lo) && *boxes == outer => {
                ports.1 = hi
            }
            _ => segments.push(((lo, hi), outer)),
        }
    }
    segments
        .into_iter()
        .flat_map(|(ports, boxes)| {
            boxes
                .into_iter()
                .map(move |(addrs, expires)| (Boxed { addrs, ports }, expires))
        })
        .collect()
}

/// Stage the changes from projection `before` to `after`: removals first (so an element whose
/// key stays but whose data changes, like an outbound rewrite to a new address, is freed
/// before it is added), then additions; an element whose expiry moved is removed and added.
pub fn stage_diff(
    now: Timestamp,
    before: &[(Element, Timestamp)],
    after: &[(Element, Timestamp)],
    changes: &mut Vec<Change>,
) {
    let unchanged = |e: &(Element, Timestamp), other: &[(Element, Timestamp)]| other.contains(e);
    for b in before.iter().filter(|b| !unchanged(b, after)) {
        changes.push(Change::Remove(b.0));
    }
    for a in after.iter().filter(|a| !unchanged(a, before)) {
        changes.push(Change::Add {
            element: a.0,
            timeout: a.1.since(now) + KERNEL_TIMEOUT_GRACE,
        });
    }
}

/// The `Add`s that install `projection` from nothing (a rebuild or a restore).
pub fn stage_all(now: Timestamp, projection: &[(Element, Timestamp)], changes: &mut Vec<Change>) {
    stage_diff(now, &[], projection, changes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Prefix, Protocol};
    use crate::engine::mapping::{MapMapping, Nonce, Owner, PcpClient, PeerMapping, ReplyPath};

    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
    const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 10);

    fn key() -> EndpointKey {
        EndpointKey {
            client: HOST.into(),
            protocol: Protocol::Tcp,
            internal_port: 80,
        }
    }

    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    fn map(expires: u64, filters: Vec<Filter>) -> MapMapping {
        MapMapping {
            owner: Owner::NatPmp,
            lifetime: 60,
            expires: t(expires),
            filters: filters.into(),
            description: None,
        }
    }

    fn peer(addr: [u8; 4], port: u16, expires: u64) -> PeerMapping {
        PeerMapping {
            remote: SocketAddr::new(Ipv4Addr::from(addr).into(), port),
            client: PcpClient {
                nonce: Nonce::default(),
                reply_path: ReplyPath {
                    client_port: 1,
                    server: Ipv4Addr::new(192, 168, 88, 1).into(),
                },
            },
            lifetime: 60,
            expires: t(expires),
            description: None,
        }
    }

    fn filter(addr: [u8; 4], len: u8, port: u16) -> Filter {
        Filter {
            prefix: Prefix::new(Ipv4Addr::from(addr).into(), len).unwrap(),
            port,
        }
    }

    fn boxes(p: &[(Element, Timestamp)]) -> Vec<(String, u64)> {
        p.iter()
            .filter_map(|(e, x)| match e {
                Element::FilteredInbound { remote, .. } => {
                    Some((remote.to_string(), x.as_millis() / 1000))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_open_map_is_one_inbound_and_one_outbound() {
        let ep = Endpoint {
            external_port: 8080,
            map: Some(map(100, vec![])),
            peers: vec![peer([198, 51, 100, 7], 4000, 500)].into(),
        };
        let p = project(&key(), &ep, Some(EXT));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(matches!(p[0], (Element::Outbound { external, .. }, x)
            if external == SocketAddrV4::new(EXT, 8080) && x == t(500)));
        assert!(matches!(p[1], (Element::Inbound { external_port: 8080, .. }, x) if x == t(100)));
        assert!(project(&key(), &ep, None).is_empty());
    }

    #[test]
    fn filters_and_peers_become_disjoint_boxes() {
        // A /24 from any port, a host inside it on one port (a PEER that outlives the MAP),
        // and a host elsewhere.
        let ep = Endpoint {
            external_port: 8080,
            map: Some(map(100, vec![filter([203, 0, 113, 0], 24, 0)])),
            peers: vec![
                peer([203, 0, 113, 7], 4000, 300),
                peer([198, 51, 100, 7], 4000, 200),
            ]
            .into(),
        };
        let p = project(&key(), &ep, Some(EXT));
        assert_eq!(
            boxes(&p),
            vec![
                ("198.51.100.7:4000".to_owned(), 200),
                ("203.0.113.0-203.0.113.255:0-3999".to_owned(), 100),
                ("203.0.113.0-203.0.113.255:4000".to_owned(), 300),
                ("203.0.113.0-203.0.113.255:4001-65535".to_owned(), 100),
            ]
        );
        let remotes: Vec<RemoteRange> = p
            .iter()
            .filter_map(|(e, _)| match e {
                Element::FilteredInbound { remote, .. } => Some(*remote),
                _ => None,
            })
            .collect();
        for (i, a) in remotes.iter().enumerate() {
            for b in &remotes[i + 1..] {
                assert!(!a.overlaps(b), "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn nested_filters_collapse_to_the_outer_one() {
        let ep = Endpoint {
            external_port: 8080,
            map: Some(map(
                100,
                vec![
                    filter([203, 0, 113, 9], 32, 0),
                    filter([203, 0, 113, 0], 24, 0),
                    filter([203, 0, 113, 128], 25, 443),
                ],
            )),
            peers: Default::default(),
        };
        assert_eq!(
            boxes(&project(&key(), &ep, Some(EXT))),
            vec![("203.0.113.0-203.0.113.255".to_owned(), 100)]
        );
    }

    #[test]
    fn ipv6_endpoints_are_pinholes_without_translation() {
        let host: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let key = EndpointKey {
            client: host.into(),
            protocol: Protocol::Udp,
            internal_port: 9000,
        };
        let internal = SocketAddrV6::new(host, 9000, 0, 0);
        let open = Endpoint {
            external_port: 9000,
            map: Some(map(100, vec![])),
            peers: Default::default(),
        };
        // No external IPv4 address is needed, and no outbound element is made.
        assert_eq!(
            project(&key, &open, None),
            vec![(
                Element::Pinhole {
                    protocol: Protocol::Udp,
                    internal
                },
                t(100)
            )]
        );
        let remote_net = Filter {
            prefix: Prefix::new("2001:db8:ff::".parse::<Ipv6Addr>().unwrap().into(), 64).unwrap(),
            port: 0,
        };
        let mut peer6 = peer([0, 0, 0, 0], 4000, 300);
        peer6.remote = "[2001:db8:ee::7]:4000".parse().unwrap();
        let filtered = Endpoint {
            external_port: 9000,
            map: Some(map(100, vec![remote_net])),
            peers: vec![peer6].into(),
        };
        let p = project(&key, &filtered, Some(EXT));
        let remotes: Vec<(String, u64)> = p
            .iter()
            .map(|(e, x)| match e {
                Element::FilteredPinhole {
                    remote,
                    internal: i,
                    ..
                } => {
                    assert_eq!(*i, internal);
                    (remote.to_string(), x.as_millis() / 1000)
                }
                other => panic!("not a filtered pinhole: {other}"),
            })
            .collect();
        assert_eq!(
            remotes,
            vec![
                ("2001:db8:ee::7:4000".to_owned(), 300),
                (
                    "2001:db8:ff::-2001:db8:ff:0:ffff:ffff:ffff:ffff".to_owned(),
                    100
                ),
            ]
        );
    }

    #[test]
    fn diff_refreshes_moved_expiries_and_removes_first() {
        let a = project(
            &key(),
            &Endpoint {
                external_port: 8080,
                map: Some(map(100, vec![])),
                peers: Default::default(),
            },
            Some(EXT),
        );
        let b = project(
            &key(),
            &Endpoint {
                external_port: 8080,
                map: Some(map(200, vec![])),
                peers: Default::default(),
            },
            Some(EXT),
        );
        let mut changes = Vec::new();
        stage_diff(t(50), &a, &b, &mut changes);
        let kinds: Vec<bool> = changes.iter().map(Change::is_add).collect();
        assert_eq!(kinds, vec![false, false, true, true]);
        assert!(matches!(changes[2], Change::Add { timeout, .. }
            if timeout == Duration::from_secs(152)));
        changes.clear();
        stage_diff(t(50), &a, &a, &mut changes);
        assert!(changes.is_empty());
    }
}
