//! The router's own sockets: the daemon reports every TCP listener and bound UDP socket it
//! finds, as data; here they are narrowed to those the internet reaches on the external
//! address (bound to it, or to a wildcard), handed to the engine as ports it never gives out,
//! and any mapping that holds one is taken back (see `engine::router_ports`).

use super::Gateway;
use crate::addr::Protocol;
use crate::kernel::Forwarder;
use crate::time::Timestamp;
use std::net::IpAddr;
use tracing::warn;

/// One socket bound on the router: a listening TCP socket or a bound UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalSocket {
    pub protocol: Protocol,
    pub addr: IpAddr,
    pub port: u16,
}

impl<F: Forwarder> Gateway<F> {
    /// The router's bound sockets now (the daemon rescans them every few seconds). Mappings on
    /// a port a socket now needs are removed at once, with a log line.
    pub fn set_local_sockets(&mut self, now: Timestamp, sockets: Vec<LocalSocket>) {
        self.local_sockets = sockets;
        self.sync_router_ports(now);
    }

    /// Recompute which ports the router needs (after new sockets, a new external address or a
    /// reload that changed `reserved-ports`) and take back the mappings on them.
    pub(super) fn sync_router_ports(&mut self, now: Timestamp) {
        let external = self.engine.external_address();
        let reaches_us = |addr: IpAddr| {
            addr.is_unspecified()
                || match addr {
                    IpAddr::V4(a) => Some(a) == external,
                    IpAddr::V6(a) => a.to_ipv4_mapped().is_some_and(|a| Some(a) == external),
                }
        };
        let ports = |protocol: Protocol| -> Vec<u16> {
            self.local_sockets
                .iter()
                .filter(|s| s.protocol == protocol && s.port != 0 && reaches_us(s.addr))
                .map(|s| s.port)
                .collect()
        };
        let (tcp, udp) = (ports(Protocol::Tcp), ports(Protocol::Udp));
        // Unchanged (the common case of a rescan): no walk of the table.
        if self.engine.set_router_sockets(tcp, udp) {
            self.take_back_router_ports(now);
        }
    }

    pub(super) fn take_back_router_ports(&mut self, now: Timestamp) {
        let mut changes = Vec::new();
        let taken = self.engine.take_back_router_ports(now, &mut changes);
        if taken.is_empty() {
            return;
        }
        for (key, port) in &taken {
            warn!(
                "external {} port {port} is the router's own (a socket is bound to it, or it is \
                 in reserved-ports): removed the mapping of {}:{} that held it",
                key.protocol, key.client, key.internal_port
            );
        }
        if self.serving {
            self.apply_or_rebuild(now, &changes);
        }
        self.leases_changed(now);
    }
}
