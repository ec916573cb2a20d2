//! Addresses, prefixes and protocols as both protocols and the kernel see them.
//!
//! PCP carries every address in a 128-bit field, an IPv4 address as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`, RFC 6887 §5). [`from_wire`] checks all of the first 96 bits, as §5 says,
//! so `::a.b.c.d` or `ffff::a.b.c.d` are never taken for IPv4.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The transport protocol of a mapping, by its IANA number. Only TCP and UDP can be
/// forwarded; PCP requests for any other number get UNSUPP_PROTOCOL before they reach the
/// engine, and NAT-PMP can only name these two (opcode 1 is UDP, 2 is TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    pub const TCP_NUMBER: u8 = 6;
    pub const UDP_NUMBER: u8 = 17;

    /// The IANA protocol number (`meta l4proto`, the PCP protocol field).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => Self::UDP_NUMBER,
            Protocol::Tcp => Self::TCP_NUMBER,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            Self::UDP_NUMBER => Some(Protocol::Udp),
            Self::TCP_NUMBER => Some(Protocol::Tcp),
            _ => None,
        }
    }

    /// The other protocol: the one whose port is the companion reservation (RFC 6886 §3.3).
    pub fn companion(self) -> Protocol {
        match self {
            Protocol::Udp => Protocol::Tcp,
            Protocol::Tcp => Protocol::Udp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 128-bit wire form of `addr`: IPv6 as is, IPv4 as IPv4-mapped.
pub fn to_wire(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The address a 128-bit wire field holds: IPv4 when the first 96 bits are exactly
/// `0:0:0:0:0:ffff`, IPv6 otherwise.
pub fn from_wire(field: Ipv6Addr) -> IpAddr {
    match field.to_ipv4_mapped() {
        Some(a) => IpAddr::V4(a),
        None => IpAddr::V6(field),
    }
}

/// The all-zeros address of `addr`'s family.
pub fn unspecified_like(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Whether a host at `addr` can be given a pinhole: an address the internet can send to.
/// Link-local (fe80::/10), loopback, multicast and unspecified addresses cannot; unique
/// local addresses (fc00::/7) can, for networks that route them.
pub fn pinhole_capable(addr: Ipv6Addr) -> bool {
    let link_local = (addr.segments()[0] & 0xffc0) == 0xfe80;
    !(addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || link_local
        || addr.to_ipv4_mapped().is_some())
}

/// An address prefix, host bits cleared: `203.0.113.0/24`, `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `None` when `len` is longer than the family's address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(len))),
        };
        Some(Prefix { addr, len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(p), IpAddr::V4(a)) => u32::from(a) & v4_mask(self.len) == u32::from(p),
            (IpAddr::V6(p), IpAddr::V6(a)) => u128::from(a) & v6_mask(self.len) == u128::from(p),
            _ => false,
        }
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    /// The first and last address as numbers (an IPv4 address is its 32-bit value), for
    /// range arithmetic that does not care about the family.
    pub fn numeric_range(&self) -> (u128, u128) {
        match self.addr {
            IpAddr::V4(a) => {
                let first = u32::from(a);
                (first.into(), (first | !v4_mask(self.len)).into())
            }
            IpAddr::V6(a) => {
                let first = u128::from(a);
                (first, first | !v6_mask(self.len))
            }
        }
    }

    /// The first and last IPv4 address, for an IPv4 prefix.
    pub fn v4_range(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        match self.addr {
            IpAddr::V4(a) => {
                let first = u32::from(a);
                Some((
                    Ipv4Addr::from(first),
                    Ipv4Addr::from(first | !v4_mask(self.len)),
                ))
            }
            IpAddr::V6(_) => None,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn v4_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

fn v6_mask(len: u8) -> u128 {
    match len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n.min(128))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_needs_all_96_bits() {
        let a = Ipv4Addr::new(192, 168, 88, 10);
        assert_eq!(from_wire(to_wire(IpAddr::V4(a))), IpAddr::V4(a));
        // ::192.168.88.10 (IPv4-compatible) and a wrong 80-bit prefix are IPv6.
        let compatible: Ipv6Addr = "::c0a8:580a".parse().unwrap();
        assert!(from_wire(compatible).is_ipv6());
        let wrong: Ipv6Addr = "1::ffff:c0a8:580a".parse().unwrap();
        assert!(from_wire(wrong).is_ipv6());
        assert_eq!(
            from_wire("::ffff:0:0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
        assert!(from_wire(Ipv6Addr::UNSPECIFIED).is_ipv6());
    }

    #[test]
    fn pinholes_only_for_addresses_the_internet_can_reach() {
        for good in ["2001:db8:1::10", "fd00::1"] {
            assert!(pinhole_capable(good.parse().unwrap()), "{good}");
        }
        for bad in [
            "fe80::1",
            "febf::1",
            "::1",
            "::",
            "ff02::1",
            "::ffff:192.168.88.10",
        ] {
            assert!(!pinhole_capable(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn prefixes_clear_host_bits_and_contain() {
        let p = Prefix::new("203.0.113.77".parse().unwrap(), 24).unwrap();
        assert_eq!(p.to_string(), "203.0.113.0/24");
        assert!(p.contains("203.0.113.1".parse().unwrap()));
        assert!(!p.contains("203.0.114.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        assert_eq!(
            p.v4_range(),
            Some((
                "203.0.113.0".parse().unwrap(),
                "203.0.113.255".parse().unwrap()
            ))
        );
        let all = Prefix::new("1.2.3.4".parse().unwrap(), 0).unwrap();
        assert!(all.covers(&p));
        assert!(!p.covers(&all));
        assert_eq!(
            all.v4_range(),
            Some((Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST))
        );
        assert!(Prefix::new("1.2.3.4".parse().unwrap(), 33).is_none());
        let v6 = Prefix::new("2001:db8:1::99".parse().unwrap(), 64).unwrap();
        assert_eq!(v6.to_string(), "2001:db8:1::/64");
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(Prefix::new("::".parse().unwrap(), 129).is_none());
    }
}
