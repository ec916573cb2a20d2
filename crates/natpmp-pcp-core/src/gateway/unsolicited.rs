//! What the gateway sends without being asked: the announcement trains (NAT-PMP's address
//! announcements and PCP's ANNOUNCE, RFC 6886 §3.2.1, RFC 6887 §14.1.3) and PCP Mapping
//! Updates (RFC 6887 §14.2), each from the address clients expect it from.

use super::{Gateway, Outgoing, ALL_NODES_V6};
use crate::front::pcp::mapping_update;
use crate::gateway::interfaces::Interface;
use crate::kernel::Forwarder;
use crate::time::Timestamp;
use crate::wire;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use tracing::debug;

impl<F: Forwarder> Gateway<F> {
    pub(super) fn send_announcements(&mut self, now: Timestamp, out: &mut Vec<Outgoing>) {
        let mut payloads = Vec::new();
        if let Some(addr) = self.engine.external_address() {
            if self.natpmp_announcements.take_due(now) {
                let mut p = Vec::with_capacity(wire::natpmp::EXTERNAL_ADDRESS_RESPONSE_LEN);
                let epoch = self.engine.epoch_seconds(now);
                wire::natpmp::emit_external_address(
                    &mut p,
                    wire::natpmp::ResultCode::Success,
                    epoch,
                    addr,
                );
                payloads.push(p);
            }
        }
        if self.pcp_announcements.take_due(now) {
            let mut p = Vec::with_capacity(wire::pcp::HEADER_LEN);
            wire::pcp::emit_announce(&mut p, self.engine.epoch_seconds(now));
            payloads.push(p);
        }
        if payloads.is_empty() {
            return;
        }
        let to = SocketAddr::V4(SocketAddrV4::new(
            wire::natpmp::ANNOUNCE_GROUP,
            wire::natpmp::CLIENT_PORT,
        ));
        // PCP over IPv6 announces to all nodes on the link (RFC 6887 §14.1.3).
        let to6 = SocketAddr::V6(SocketAddrV6::new(
            ALL_NODES_V6,
            wire::natpmp::CLIENT_PORT,
            0,
            0,
        ));
        let mut sent_on = 0;
        for iface in self.internal_interfaces() {
            // Sent from the interface's own address: clients check the source (§3.2.1).
            if let Some(from) = iface.first_v4() {
                for p in &payloads {
                    out.push(Outgoing {
                        payload: p.clone(),
                        from: from.into(),
                        ifindex: iface.index,
                        to,
                    });
                }
                sent_on += 1;
            }
            let Some(from6) = iface.v6_source() else {
                continue;
            };
            for p in payloads.iter().filter(|p| p[0] == wire::pcp::VERSION) {
                out.push(Outgoing {
                    payload: p.clone(),
                    from: from6.into(),
                    ifindex: iface.index,
                    to: to6,
                });
            }
        }
        debug!(
            "{} announcement(s) on {sent_on} interface(s)",
            payloads.len()
        );
    }

    pub(super) fn send_mapping_updates(&mut self, now: Timestamp, out: &mut Vec<Outgoing>) {
        let Some(started) = self.updates.started() else {
            return;
        };
        if !self.updates.take_due(now) {
            return;
        }
        let epoch = self.engine.epoch_seconds(now);
        let mut sent = 0;
        for info in self.engine.pcp_mappings(now) {
            // A client that refreshed its mapping since the change knows already (§14.2:
            // SHOULD stop once it has), and IPv6 pinholes do not move with the IPv4 address.
            if info.granted_at > started || !info.key.client.is_ipv4() {
                continue;
            }
            let Some((from, ifindex)) =
                self.route_to(info.key.client, info.client.reply_path.server)
            else {
                continue;
            };
            out.push(Outgoing {
                payload: mapping_update(&info, epoch),
                from,
                ifindex,
                to: SocketAddr::new(info.key.client, info.client.reply_path.client_port),
            });
            sent += 1;
        }
        debug!("mapping update copy to {sent} PCP mapping(s)");
    }

    /// Where to send an unsolicited message to `client` from: `preferred` (the address the
    /// client talked to) on its interface while it is still ours, else the first address of
    /// the internal interface whose subnet holds the client.
    fn route_to(&self, client: IpAddr, preferred: IpAddr) -> Option<(IpAddr, u32)> {
        let internal: Vec<&Interface> = self.internal_interfaces().collect();
        if let Some(i) = internal
            .iter()
            .find(|i| i.addrs.iter().any(|a| a.addr == preferred))
        {
            return Some((preferred, i.index));
        }
        internal.iter().find_map(|i| {
            let a = i
                .addrs
                .iter()
                .find(|a| a.addr.is_ipv4() == client.is_ipv4() && a.contains(client))?;
            Some((a.addr, i.index))
        })
    }
}
