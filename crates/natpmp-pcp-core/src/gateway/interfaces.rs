//! The gateway's view of the machine's interfaces, as plain data the daemon fills from
//! netlink, and the rules that depend on it: which datagrams are accepted, which address is
//! the external one, what hairpin needs, where unsolicited messages leave from.

use crate::addr::Prefix;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of an interface with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IfAddr {
    pub fn v4(addr: Ipv4Addr, prefix_len: u8) -> IfAddr {
        IfAddr {
            addr: addr.into(),
            prefix_len,
        }
    }

    pub fn v6(addr: Ipv6Addr, prefix_len: u8) -> IfAddr {
        IfAddr {
            addr: addr.into(),
            prefix_len,
        }
    }

    /// Whether `other` is on this address's subnet.
    pub fn contains(&self, other: IpAddr) -> bool {
        crate::addr::Prefix::new(self.addr, self.prefix_len).is_some_and(|p| p.contains(other))
    }

    /// The subnet's IPv4 network address and prefix length.
    pub fn v4_network(&self) -> Option<(Ipv4Addr, u8)> {
        match crate::addr::Prefix::new(self.addr, self.prefix_len)?.addr() {
            IpAddr::V4(n) => Some((n, self.prefix_len)),
            IpAddr::V6(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub up: bool,
    /// In the kernel's order: the primary address of each subnet comes first.
    pub addrs: Vec<IfAddr>,
}

impl Interface {
    /// The interface's first IPv4 address: what announcements are sent from.
    pub fn first_v4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Where IPv6 announcements to ff02::1 leave from: the link-local address (link-scope
    /// multicast is best sent from one), else the first global or unique local one.
    pub fn v6_source(&self) -> Option<Ipv6Addr> {
        let v6: Vec<Ipv6Addr> = self
            .addrs
            .iter()
            .filter_map(|a| match a.addr {
                IpAddr::V6(x) => Some(x),
                IpAddr::V4(_) => None,
            })
            .collect();
        v6.iter()
            .find(|a| is_link_local(**a))
            .or_else(|| v6.first())
            .copied()
    }

    /// The interface's on-link IPv6 prefixes other than link-local: where pinhole clients
    /// live.
    pub fn v6_prefixes(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.addrs.iter().filter_map(|a| match a.addr {
            IpAddr::V6(x) if !is_link_local(x) => Prefix::new(a.addr, a.prefix_len),
            _ => None,
        })
    }
}

/// fe80::/10.
pub fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// Every interface of the network namespace, by name.
pub type Interfaces = BTreeMap<String, Interface>;

/// The external interface as configured: RouterOS `type=external`, with `forced-ip`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalInterface {
    pub name: String,
    /// Which address of the interface is the public one, when it has several.
    pub forced_ip: Option<Ipv4Addr>,
}

impl ExternalInterface {
    /// The interface's primary IPv4 address, or `forced-ip` while the interface has it.
    pub fn address(&self, interfaces: &Interfaces) -> Option<Ipv4Addr> {
        let iface = interfaces.get(&self.name)?;
        let mut v4 = iface.addrs.iter().filter_map(|a| match a.addr {
            IpAddr::V4(x) => Some(x),
            IpAddr::V6(_) => None,
        });
        match self.forced_ip {
            Some(forced) => v4.any(|a| a == forced).then_some(forced),
            None => v4.next(),
        }
    }
}

/// Whether `addr` is private or reserved: then mappings are reachable only from networks that
/// route to it (double NAT, CGNAT, labs). Allowed, as RouterOS allows it, with a warning.
pub fn is_private_or_reserved(a: Ipv4Addr) -> bool {
    a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_documentation()
        || (a.octets()[0] == 100 && (a.octets()[1] & 0xC0) == 64)
}
