//! The namespace lab shared by every end-to-end test module (`crate::lab`).
//!
//! Each [`Lab`] builds its own four network namespaces with unique names
//! (`npd-<pid>-<n>-{gw,lan,lan2,inet}`) and tears them down in `Drop`, also when the test
//! panics. Every `ip`/`nft` command runs inside one of those namespaces (`ip -n NAME ...` or
//! `ip netns exec NAME ...`); nothing touches the host's interfaces, routes or firewall.
//!
//! ```text
//!   lan  192.168.88.10/24 + .11/24 ──eth0══ether2── gw ──ether1══eth0── inet 203.0.113.2/24 + .3
//!                                     192.168.88.1/24 + .2/24   203.0.113.1/24  (no route back)
//!   lan2 192.168.89.10/24 ──────────eth0══ether3── gw 192.168.89.1/24
//!
//!   IPv6 (no NAT; inet routes the LAN prefix through gw):
//!   lan  2001:db8:1::10/64 + ::11 ── gw 2001:db8:1::1/64 ─ gw 2001:db8:ff::1/64 ── inet ::2 + ::3
//!   lan2 2001:db8:2::10/64 ───────── gw 2001:db8:2::1/64
//! ```
//!
//! The gateway runs the real `natpmpd` binary (`CARGO_BIN_EXE_natpmpd`) with real nftables;
//! the operator's part is set up here: forwarding on for both families, and `table inet lab`
//! with a masquerade for IPv4 and a forward chain that drops by default and accepts only
//! established flows, the LANs' own traffic to the internet, and natpmpd's connection mark:
//! the firewall contract of the README, so every end-to-end test passes through it.
//! Rust code runs inside a namespace through [`in_ns`]: a fresh thread `setns()`es into the
//! namespace and runs the closure; sockets made there stay in that namespace, so they can be
//! handed back and used from any thread.
#![allow(dead_code)]

mod cmd;
mod daemon;
mod fixtures;
mod natpmp;
mod netns;
pub mod pcp;
mod topology;
mod traffic;

pub use cmd::*;
pub use daemon::*;
pub use fixtures::*;
pub use natpmp::*;
pub use netns::*;
pub use topology::*;
pub use traffic::*;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicUsize;
use std::sync::Once;
use std::time::Duration;

pub const GW_EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const INET_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// A second internet host (an address of inet's too): a remote that a FILTER or PEER leaves out.
pub const INET_HOST_SECOND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
pub const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);
pub const GW_LAN_SECOND: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 2);
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 10);
pub const LAN_HOST_SECOND: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 11);
pub const GW_LAN2: Ipv4Addr = Ipv4Addr::new(192, 168, 89, 1);
pub const LAN2_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 89, 10);
pub const NATPMP_PORT: u16 = 5351;

pub const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const LAN_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub const LAN_HOST6_SECOND: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11);
pub const GW_LAN2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const LAN2_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
pub const GW_EXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
pub const INET_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
pub const INET_HOST6_SECOND: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 3);
/// natpmpd's default `connection-mark`: the lab's forward chain accepts what carries it.
pub const CONNECTION_MARK: u32 = 0x0010_0000;

/// Upper bound for any single helper command (`ip`, `nft`, `natpmpc`, `natpmpctl`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for code run inside a namespace through [`in_ns`].
pub const NS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a reply may take before a UDP exchange counts as "no reply".
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(1500);

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLEAN_STALE: Once = Once::new();
