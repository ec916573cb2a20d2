//! Elements and changes for the kernel tests: LAN hosts are 192.168.88.x, the external address
//! is 203.0.113.1; the IPv6 LAN host is 2001:db8:1::10 and the internet hosts are
//! 2001:db8:ff::2 and ::3 (as `netns::gateway_with_hosts` sets them up).

#![allow(dead_code)]

use natpmp_pcp_core::kernel::{Change, Element, RemoteRange};
use natpmp_pcp_core::Protocol;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

pub const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const LAN6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub const INET6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
pub const INET6_OTHER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 3);

/// The IPv6 LAN host's `port`.
pub fn host6(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(LAN6_HOST, port, 0, 0)
}

/// A pinhole to the IPv6 LAN host's `port`.
pub fn pinhole(protocol: Protocol, port: u16) -> Element {
    Element::Pinhole {
        protocol,
        internal: host6(port),
    }
}

/// A pinhole to the IPv6 LAN host's `port` for the remotes in `remote` only.
pub fn filtered_pinhole(protocol: Protocol, port: u16, remote: RemoteRange<Ipv6Addr>) -> Element {
    Element::FilteredPinhole {
        protocol,
        internal: host6(port),
        remote,
    }
}

/// IPv6 remote addresses `first..=last` and ports `ports.0..=ports.1`.
pub fn remotes6(first: &str, last: &str, ports: (u16, u16)) -> RemoteRange<Ipv6Addr> {
    RemoteRange {
        first_addr: first.parse().unwrap(),
        last_addr: last.parse().unwrap(),
        first_port: ports.0,
        last_port: ports.1,
    }
}

pub fn lan(host: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, host), port)
}

pub fn inbound(protocol: Protocol, external_port: u16, host: u8, port: u16) -> Element {
    Element::Inbound {
        protocol,
        external_port,
        internal: lan(host, port),
    }
}

pub fn outbound(protocol: Protocol, host: u8, port: u16, external_port: u16) -> Element {
    Element::Outbound {
        internal: lan(host, port),
        protocol,
        external: SocketAddrV4::new(WAN, external_port),
    }
}

pub fn filtered(
    protocol: Protocol,
    external_port: u16,
    remote: RemoteRange,
    host: u8,
    port: u16,
) -> Element {
    Element::FilteredInbound {
        protocol,
        external_port,
        remote,
        internal: lan(host, port),
    }
}

/// Remote addresses `first..=last` and ports `ports.0..=ports.1`.
pub fn remotes(first: [u8; 4], last: [u8; 4], ports: (u16, u16)) -> RemoteRange {
    RemoteRange {
        first_addr: first.into(),
        last_addr: last.into(),
        first_port: ports.0,
        last_port: ports.1,
    }
}

pub fn add(element: Element, secs: u64) -> Change {
    Change::Add {
        element,
        timeout: Duration::from_secs(secs),
    }
}

/// What a plain MAP installs: its `inbound` and `outbound` elements.
pub fn mapping(
    protocol: Protocol,
    external_port: u16,
    host: u8,
    port: u16,
    secs: u64,
) -> Vec<Change> {
    vec![
        add(inbound(protocol, external_port, host, port), secs),
        add(outbound(protocol, host, port, external_port), secs),
    ]
}

/// The elements of `changes` (adds and removes alike), sorted.
pub fn elements_of(changes: &[Change]) -> Vec<Element> {
    sorted(changes.iter().map(|c| *c.element()).collect())
}

/// The elements of a listing, without the time left, sorted.
pub fn keys(listed: &[(Element, Duration)]) -> Vec<Element> {
    sorted(listed.iter().map(|(e, _)| *e).collect())
}

pub fn sorted(mut v: Vec<Element>) -> Vec<Element> {
    v.sort();
    v
}
