//! The ports the router needs itself: `reserved-ports` from the configuration, and every port
//! a socket on the router is bound to on the external address or a wildcard (a TCP listener,
//! or a bound UDP socket such as WireGuard's 51820). They are never handed out as external
//! ports, and a mapping that holds one is taken back: otherwise the DNAT would carry the
//! router's own traffic (its VPN, its web UI) to a LAN host.
//!
//! IPv6 pinholes are not affected: their external address is the host's own, not the
//! router's.

use super::access::PortRange;
use super::mapping::EndpointKey;
use super::ports::{PortBits, PortPolicy};
use super::Engine;
use crate::addr::Protocol;
use crate::kernel::Change;
use crate::time::Timestamp;

/// Index of a protocol in the per-protocol arrays.
pub(super) fn index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
    }
}

impl Engine {
    /// The router's own bound ports changed (the daemon scans its sockets): `tcp` are
    /// listening TCP ports, `udp` bound UDP ports, each on the external address or a
    /// wildcard. Call [`Engine::take_back_router_ports`] afterwards.
    pub fn set_router_sockets(&mut self, mut tcp: Vec<u16>, mut udp: Vec<u16>) -> bool {
        tcp.sort_unstable();
        tcp.dedup();
        udp.sort_unstable();
        udp.dedup();
        if self.router_sockets == [tcp.clone(), udp.clone()] {
            return false;
        }
        self.router_sockets = [tcp, udp];
        self.rebuild_unavailable();
        true
    }

    /// The router's own bound ports, as last reported: (TCP, UDP).
    pub fn router_sockets(&self) -> (&[u16], &[u16]) {
        (&self.router_sockets[0], &self.router_sockets[1])
    }

    pub(super) fn rebuild_unavailable(&mut self) {
        for (i, sockets) in self.router_sockets.iter().enumerate() {
            let mut bits = PortBits::default();
            for r in &self.config.reserved_ports {
                for port in r.first..=r.last {
                    bits.set(port, true);
                }
            }
            for &port in sockets {
                bits.set(port, true);
            }
            self.unavailable[i] = bits;
        }
    }

    /// Whether the router needs `port` for `protocol` itself.
    pub fn router_needs(&self, protocol: Protocol, port: u16) -> bool {
        self.unavailable[index(protocol)].get(port)
    }

    /// Remove every IPv4 mapping whose external port the router now needs (staging the kernel
    /// changes); returns what was removed, with its external port, so the caller can log it.
    pub fn take_back_router_ports(
        &mut self,
        now: Timestamp,
        changes: &mut Vec<Change>,
    ) -> Vec<(EndpointKey, u16)> {
        let doomed: Vec<(EndpointKey, u16)> = self
            .table
            .iter()
            .filter(|(k, e)| k.client.is_ipv4() && self.router_needs(k.protocol, e.external_port))
            .map(|(k, e)| (*k, e.external_port))
            .collect();
        for (key, _) in &doomed {
            self.put(now, *key, None, changes);
        }
        doomed
    }

    /// The external ports a new IPv4 mapping at `key` may have: what the access rules allow,
    /// inside `port-range`. Empty when the rules deny the client, protocol or internal port.
    pub(super) fn allowed_ports(&self, key: &EndpointKey) -> Vec<PortRange> {
        let Some(range) = self.ports.range() else {
            return Vec::new();
        };
        if self.config.access.is_empty() {
            return vec![range];
        }
        let allowed =
            self.config
                .access
                .allowed_external(key.client, key.protocol, key.internal_port);
        super::access::clip(&allowed, range.first, range.last)
    }

    /// The policy of a request at `key` whose allowed ports are `allowed`.
    pub(super) fn policy<'a>(
        &'a self,
        key: &EndpointKey,
        allowed: &'a [PortRange],
    ) -> PortPolicy<'a> {
        PortPolicy {
            allowed,
            unavailable: &self.unavailable[index(key.protocol)],
        }
    }
}
