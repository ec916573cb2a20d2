//! The kernel projection of a mapping, as plain data.
//!
//! The engine never talks to the kernel: it stages [`Change`]s, and the daemon hands them to a
//! `Forwarder` (crate `natpmp-pcp-nft`) in one transaction. Keeping these types here lets the engine
//! be tested byte for byte without a kernel, and keeps the dependency direction core <- nft.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The transport protocol of a mapping. NAT-PMP opcode 1 is UDP, opcode 2 is TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => 17,
            Protocol::Tcp => 6,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            17 => Some(Protocol::Udp),
            6 => Some(Protocol::Tcp),
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

/// One port forward as the kernel holds it: inbound `protocol . external_port ->
/// internal_addr . internal_port`, and outbound `internal_addr . protocol . internal_port ->
/// external_addr . external_port` (so outbound traffic leaves from the mapped port, RFC 6886 §3.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Forward {
    pub protocol: Protocol,
    pub external_addr: Ipv4Addr,
    pub external_port: u16,
    pub internal_addr: Ipv4Addr,
    pub internal_port: u16,
    /// The kernel's own expiry for the element: a backstop so that nothing outlives its
    /// lifetime even if the daemon dies. Slightly longer than the mapping's lifetime so the
    /// daemon, which also clears conntrack, normally removes it first.
    pub timeout: Duration,
}

impl Forward {
    /// Two forwards name the same kernel elements when everything but the timeout matches.
    pub fn same_elements(&self, other: &Forward) -> bool {
        Forward {
            timeout: Duration::ZERO,
            ..*self
        } == Forward {
            timeout: Duration::ZERO,
            ..*other
        }
    }
}

/// A change to the kernel's forwards. A renewal is `Remove` then `Add` in one transaction,
/// which the kernel applies atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Add(Forward),
    Remove(Forward),
}

impl Change {
    pub fn forward(&self) -> &Forward {
        match self {
            Change::Add(f) | Change::Remove(f) => f,
        }
    }
}
