//! Reacting to the machine's interfaces: interfaces that appear or vanish, the external
//! address (epoch reset, announcements, Mapping Updates, outbound rewrites moved), IPv6
//! prefixes that leave the link, and the hairpin sets.

use super::interfaces::{is_private_or_reserved, Interfaces};
use super::{Gateway, HairpinSets};
use crate::addr::Prefix;
use crate::kernel::Forwarder;
use crate::time::Timestamp;
use std::net::Ipv4Addr;
use tracing::{info, warn};

impl<F: Forwarder> Gateway<F> {
    /// Take a new interface snapshot and act on what changed: interfaces that appeared or
    /// vanished, the external address (epoch reset, announcements, Mapping Updates, outbound
    /// rewrites moved), hairpin subnets.
    pub fn set_interfaces(&mut self, now: Timestamp, interfaces: Interfaces) {
        self.interfaces = interfaces;
        self.report_missing_interfaces();
        let addr = self
            .config
            .external
            .as_ref()
            .and_then(|e| e.address(&self.interfaces));
        if addr != self.engine.external_address() {
            self.external_address_changed(now, addr);
            // Sockets bound to the new address are the router's now.
            self.sync_router_ports(now);
        }
        self.forget_off_link_pinholes(now);
        if self.serving {
            self.sync_hairpin();
        }
    }

    /// When the router's IPv6 addresses or delegated prefix change, the mappings of hosts whose
    /// prefix is gone are removed: their addresses are no longer on-link, and a pinhole for an
    /// address the LAN no longer has would open a hole for whoever gets it next. Only prefixes
    /// that were seen and then vanished count, so pinholes restored at start-up survive
    /// interfaces whose addresses arrive later (DHCPv6-PD, slow DAD).
    fn forget_off_link_pinholes(&mut self, now: Timestamp) {
        let mut current: Vec<Prefix> = self
            .internal_interfaces()
            .flat_map(|i| i.v6_prefixes())
            .collect();
        current.sort();
        current.dedup();
        let gone: Vec<Prefix> = self
            .v6_prefixes
            .iter()
            .filter(|p| !current.contains(p))
            .copied()
            .collect();
        self.v6_prefixes = current;
        if gone.is_empty() {
            return;
        }
        let still_on_link = self.v6_prefixes.clone();
        let mut changes = Vec::new();
        let forgotten = self.engine.forget_where(
            now,
            |k| {
                gone.iter().any(|p| p.contains(k.client))
                    && !still_on_link.iter().any(|p| p.contains(k.client))
            },
            &mut changes,
        );
        for key in &forgotten {
            info!(
                "{} is no longer on-link (prefix gone): removing its {} {} pinhole",
                key.client, key.protocol, key.internal_port
            );
        }
        if !forgotten.is_empty() {
            if self.serving {
                self.apply_or_rebuild(now, &changes);
            }
            self.leases_changed(now);
        }
    }

    fn report_missing_interfaces(&mut self) {
        let configured: Vec<(String, &'static str)> = self
            .config
            .external
            .iter()
            .map(|e| (e.name.clone(), "external"))
            .chain(self.config.internal.iter().map(|n| (n.clone(), "internal")))
            .collect();
        for (name, kind) in configured {
            let present = self.interfaces.contains_key(&name);
            if !present && self.reported_missing.insert(name.clone()) {
                warn!("{kind} interface {name} does not exist (yet); waiting for it");
            } else if present && self.reported_missing.remove(&name) {
                info!("{kind} interface {name} appeared");
            }
        }
    }

    fn external_address_changed(&mut self, now: Timestamp, addr: Option<Ipv4Addr>) {
        match addr {
            Some(a) => {
                info!("external address is now {a}");
                if is_private_or_reserved(a) && self.warned_private != Some(a) {
                    warn!("external address {a} is private or reserved: mappings are reachable only from networks that route to it (double NAT?)");
                    self.warned_private = Some(a);
                }
            }
            None => warn!(
                "no external address: requests for IPv4 mappings fail (NAT-PMP result 3, PCP NETWORK_FAILURE) until one appears"
            ),
        }
        let mut changes = Vec::new();
        self.engine.set_external_address(now, addr, &mut changes);
        if self.serving {
            self.apply_or_rebuild(now, &changes);
        }
        if addr.is_some() {
            // The new address for NAT-PMP clients; PCP clients hear of their own mappings.
            self.natpmp_announcements.start(now);
            if self.config.pcp && !self.engine.pcp_mappings(now).is_empty() {
                self.updates.start(now);
            }
        } else {
            // With no address there is nothing true to announce (miniupnpd does the same).
            self.natpmp_announcements.stop();
            self.updates.stop();
        }
        self.leases_changed(now);
    }

    /// Give the kernel the current hairpin sets, if they changed.
    pub(super) fn sync_hairpin(&mut self) {
        let addr = self
            .engine
            .external_address()
            .filter(|_| self.config.hairpin);
        let mut nets: Vec<(Ipv4Addr, u8)> = self
            .internal_interfaces()
            .flat_map(|i| i.addrs.iter())
            .filter_map(|a| a.v4_network())
            .collect();
        nets.sort();
        nets.dedup();
        let wanted: HairpinSets = (addr, nets);
        if self.hairpin_applied.as_ref() == Some(&wanted) {
            return;
        }
        match self.forwarder.set_hairpin(wanted.0, &wanted.1) {
            Ok(()) => self.hairpin_applied = Some(wanted),
            Err(e) => warn!("cannot update the hairpin sets: {e}"),
        }
    }
}
