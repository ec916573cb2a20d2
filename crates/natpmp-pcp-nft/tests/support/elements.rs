//! Elements and changes for the kernel tests: LAN hosts are 192.168.88.x, the external address
//! is 203.0.113.1 (as `netns::gateway_with_hosts` sets them up).

#![allow(dead_code)]

use natpmp_pcp_core::kernel::{Change, Element, RemoteRange};
use natpmp_pcp_core::Protocol;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

pub const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

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
