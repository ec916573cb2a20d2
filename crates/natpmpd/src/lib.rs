//! natpmpd: the NAT-PMP and PCP gateway daemon and its control client, as a library so that
//! the two binaries and the integration tests share one implementation. The gateway logic is
//! the core's sans-IO `Gateway`; this crate gives it sockets, time, signals and files.
//!
//! - `config`: the TOML configuration file (RouterOS `/ip nat-pmp` property names), parsed
//!   into a validated `Config` with errors that name the key and the line.
//! - `control`: the control socket (newline-delimited JSON over a Unix stream socket) that
//!   `natpmpctl` talks to, server and client side, and the `print` formatting.
//! - `driver`: the event loop around the `Gateway`: sockets, timers, signals.
//! - `leases`: the lease file (mappings across restarts), written atomically.
//! - `udp`: the port-5351 socket with IP_PKTINFO (arrival interface, reply source address).
//! - `netif`: interface snapshots and the netlink route monitor.
//! - `local_sockets`: the router's own listening and bound sockets (never handed out).
//! - `notify`: systemd's notification socket (READY=1, STATUS=, WATCHDOG=1, RELOADING=1).
//! - `journal_log`: log lines with their syslog priority when stderr is the journal.

pub mod config;
pub mod control;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal_log;
pub mod lease_writer;
pub mod leases;
pub mod local_sockets;
pub mod metrics;
pub mod netif;
pub mod notify;
pub mod socket_scanner;
pub mod udp;
