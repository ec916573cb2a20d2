//! The gateway: everything between the sockets and the kernel, without I/O.
//!
//! It owns the engine and a [`Forwarder`], and is driven by the caller with the current time,
//! received datagrams, interface snapshots and configuration; it hands back the datagrams to
//! send. The tokio driver in the daemon keeps only sockets, timers and signals; tests drive a
//! `Gateway<FakeForwarder>` with virtual time, without root.
//!
//! - `batch`: admission and a batch of requests: stage, apply in one transaction, settle
//!   (commit or revert), and only then write replies (design.md §2).
//! - `drift`: keeping the kernel an exact projection of the engine (check, repair, rebuild).
//! - `announce`: the announcement and Mapping Update schedules.
//! - `interfaces`: the interface model, the external address, hairpin networks.
//!
//! What lives here and not in the engine: what depends on interfaces and on the kernel's
//! answers, and what is sent without being asked (announcements, Mapping Updates).

pub mod announce;
mod batch;
mod drift;
pub mod interfaces;

use crate::engine::records::MappingRecord;
use crate::engine::{Engine, EngineConfig};
use crate::front::pcp::{mapping_update, PcpPolicy};
use crate::kernel::{removed_for_good, Change, Element, Forwarder, KernelError};
use crate::time::Timestamp;
use crate::view::MappingView;
use crate::wire;
use announce::{AnnouncementTrain, UpdateTrain};
use interfaces::{is_private_or_reserved, ExternalInterface, Interface, Interfaces};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;
use tracing::{debug, info, warn};

pub use batch::Datagram;

/// How often the kernel table is compared with the engine. The promise in the README: a
/// flushed or deleted table is back within this time (plus the time to reload it).
pub const DRIFT_CHECK: Duration = Duration::from_secs(2);
/// The lease file is written at most this often under load, and this long after a change.
pub const LEASE_SAVE_DELAY: Duration = Duration::from_secs(1);
/// After a failed write, the next attempt waits this long.
pub const LEASE_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Everything the gateway is told by the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The global switch. Off: nothing is answered and natpmpd's table is removed.
    pub enabled: bool,
    pub engine: EngineConfig,
    /// PCP served beside NAT-PMP on port 5351. Off: version 2 gets NAT-PMP's Unsupported
    /// Version, as from a NAT-PMP-only server.
    pub pcp: bool,
    pub pcp_policy: PcpPolicy,
    pub external: Option<ExternalInterface>,
    /// The enabled internal interfaces, by name.
    pub internal: Vec<String>,
    /// LAN hosts reach mappings through the external address too (RFC 6886 §4.3.4).
    pub hairpin: bool,
    /// Compare the kernel with the engine every `DRIFT_CHECK` (a real kernel backend).
    pub drift_check: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: false,
            engine: EngineConfig::default(),
            pcp: true,
            pcp_policy: PcpPolicy::default(),
            external: None,
            internal: Vec::new(),
            hairpin: true,
            drift_check: false,
        }
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub payload: Vec<u8>,
    /// The gateway's own address to send from (clients check it, RFC 6886 §3.2).
    pub from: IpAddr,
    /// The interface to send on.
    pub ifindex: u32,
    pub to: SocketAddr,
}

/// Mappings saved by an earlier run, converted to the time of reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredLeases {
    /// The external address when they were saved: the epoch continues only if it is still
    /// the same (an address change resets the epoch, RFC 6887 §8.5).
    pub external_addr: Option<Ipv4Addr>,
    /// The epoch as it stands now: the saved value plus the time since the save.
    pub epoch_seconds: u32,
    pub records: Vec<MappingRecord>,
}

/// What the lease file should hold now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSnapshot {
    pub external_addr: Option<Ipv4Addr>,
    pub epoch_seconds: u32,
    pub records: Vec<MappingRecord>,
}

/// What `Gateway::start` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// Mappings brought back from the leases.
    pub restored: usize,
    /// Whether the epoch continued from the leases (else it starts at 0).
    pub epoch_continued: bool,
    /// Kernel elements installed.
    pub installed: usize,
}

/// What the hairpin sets hold: the external address (none = hairpin off) and the LAN subnets.
type HairpinSets = (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>);

pub struct Gateway<F: Forwarder> {
    config: GatewayConfig,
    engine: Engine,
    forwarder: F,
    interfaces: Interfaces,
    /// Our table is installed and requests are answered.
    serving: bool,
    hairpin_applied: Option<HairpinSets>,
    natpmp_announcements: AnnouncementTrain,
    pcp_announcements: AnnouncementTrain,
    updates: UpdateTrain,
    /// When the lease file is next due to be written (a change is waiting).
    lease_due: Option<Timestamp>,
    lease_failing: bool,
    next_drift_check: Timestamp,
    /// Elements removed for good whose flows are yet to be ended (after the replies).
    flows_to_clear: Vec<Element>,
    /// Configured interfaces already reported missing, so the log says it once.
    reported_missing: HashSet<String>,
    warned_private: Option<Ipv4Addr>,
}

impl<F: Forwarder> Gateway<F> {
    /// A gateway that does not serve yet: give it interfaces, then `start` it.
    pub fn new(config: GatewayConfig, forwarder: F, now: Timestamp) -> Gateway<F> {
        Gateway {
            engine: Engine::new(config.engine.clone(), now),
            config,
            forwarder,
            interfaces: Interfaces::new(),
            serving: false,
            hairpin_applied: None,
            natpmp_announcements: AnnouncementTrain::default(),
            pcp_announcements: AnnouncementTrain::default(),
            updates: UpdateTrain::default(),
            lease_due: None,
            lease_failing: false,
            next_drift_check: now + DRIFT_CHECK,
            flows_to_clear: Vec::new(),
            reported_missing: HashSet::new(),
            warned_private: None,
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn forwarder(&self) -> &F {
        &self.forwarder
    }

    /// Whether requests are answered (the driver keeps port 5351 open exactly then).
    pub fn serving(&self) -> bool {
        self.serving
    }

    /// The external interface's name, for `natpmpctl print`.
    pub fn external_interface(&self) -> Option<&str> {
        self.config.external.as_ref().map(|e| e.name.as_str())
    }

    /// Every live mapping, for `natpmpctl print`.
    pub fn mappings(&self, now: Timestamp) -> Vec<MappingView> {
        self.engine.mappings(now)
    }

    /// The enabled internal interfaces that exist now.
    fn internal_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.config
            .internal
            .iter()
            .filter_map(|name| self.interfaces.get(name))
    }

    /// Start serving: bring back the leases of an earlier run, install our table with every
    /// mapping, and start the announcements (at every start: RFC 6886 §3.2.1, RFC 6887
    /// §14.1.3). The epoch continues only when there were leases and the external address is
    /// the one they knew (the lease rule in the daemon's `leases.rs`).
    pub fn start(
        &mut self,
        now: Timestamp,
        leases: Option<RestoredLeases>,
    ) -> Result<Started, KernelError> {
        let mut started = Started::default();
        if let Some(r) = leases {
            started.epoch_continued = r.external_addr == self.engine.external_address();
            let epoch = if started.epoch_continued {
                r.epoch_seconds
            } else {
                0
            };
            // The rebuild below installs everything, so the staged changes are not needed.
            let mut staged = Vec::new();
            started.restored = self.engine.restore(now, epoch, &r.records, &mut staged);
        }
        started.installed = self.rebuild(now)?;
        self.serving = true;
        self.next_drift_check = now + DRIFT_CHECK;
        if self.engine.external_address().is_some() {
            self.natpmp_announcements.start(now);
        }
        if self.config.pcp {
            self.pcp_announcements.start(now);
        }
        self.leases_changed(now);
        Ok(started)
    }

    /// Remove a table of ours that an earlier run left behind, without serving (natpmpd is
    /// switched off).
    pub fn remove_table(&mut self) {
        if let Err(e) = self.forwarder.teardown() {
            debug!("no natpmpd table to remove: {e}");
        }
    }

    /// Stop serving: forget the mappings and remove our table (RouterOS default, and
    /// rfc-checklist §6 A16: switched off means not listening at all).
    fn stop_serving(&mut self, now: Timestamp) {
        let mut dropped = Vec::new();
        self.engine.reset(now, &mut dropped);
        self.serving = false;
        self.natpmp_announcements.stop();
        self.pcp_announcements.stop();
        self.updates.stop();
        if let Err(e) = self.forwarder.teardown() {
            debug!("no natpmpd table to remove: {e}");
        }
        self.hairpin_applied = None;
        self.leases_changed(now);
    }

    /// The caller is stopping. With `keep_forwards`, our table stays in the kernel (each
    /// element's own timeout still ends it on time, and the next start takes it over).
    /// Returns what the lease file should hold.
    pub fn shutdown(&mut self, now: Timestamp, keep_forwards: bool) -> LeaseSnapshot {
        let snapshot = self.lease_snapshot(now);
        if self.serving && !keep_forwards {
            match self.forwarder.teardown() {
                Ok(()) => info!("natpmpd table removed"),
                Err(e) => warn!("could not remove the natpmpd table: {e}"),
            }
        }
        self.serving = false;
        snapshot
    }

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
        }
        if self.serving {
            self.sync_hairpin();
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
    fn sync_hairpin(&mut self) {
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

    /// Apply a new configuration (a reload). The caller has refused invalid files already.
    pub fn reconfigure(
        &mut self,
        now: Timestamp,
        config: GatewayConfig,
    ) -> Result<(), KernelError> {
        let old_external = self.config.external.as_ref().map(|e| e.name.clone());
        self.engine.set_config(config.engine.clone());
        self.config = config;
        self.reported_missing.clear();
        let interfaces = std::mem::take(&mut self.interfaces);
        if self.serving && !self.config.enabled {
            self.stop_serving(now);
            self.set_interfaces(now, interfaces);
            return Ok(());
        }
        self.set_interfaces(now, interfaces);
        if !self.serving && self.config.enabled {
            self.start(now, None)?;
        } else if self.serving && old_external.as_deref() != self.external_interface() {
            // A new external interface: our rules name it, so reload the table.
            info!(
                "external interface changed from {} to {}",
                old_external.as_deref().unwrap_or("none"),
                self.external_interface().unwrap_or("none")
            );
            self.rebuild(now)?;
        }
        Ok(())
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut due = [
            self.engine.poll_timeout(),
            self.natpmp_announcements.next_due(),
            self.pcp_announcements.next_due(),
            self.updates.next_due(),
            self.lease_due,
            (self.serving && self.config.drift_check).then_some(self.next_drift_check),
        ];
        due.sort();
        due.into_iter().flatten().next()
    }

    /// Expire mappings, send due announcements and Mapping Updates, check for drift.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Vec<Outgoing>) {
        let mut changes = Vec::new();
        let expired = self.engine.handle_timeout(now, &mut changes);
        if expired > 0 {
            debug!("{expired} mapping(s) expired");
            if self.serving {
                self.apply_or_rebuild(now, &changes);
            }
            self.leases_changed(now);
        }
        if self.serving {
            self.send_announcements(now, out);
            self.send_mapping_updates(now, out);
        }
        if self.serving && self.config.drift_check && self.next_drift_check <= now {
            self.check_drift(now);
            self.next_drift_check = now + DRIFT_CHECK;
        }
    }

    /// Apply changes that no client waits on (expiry, address change). If the kernel refuses,
    /// rebuild our table from the engine's truth rather than leave the two apart. The flows
    /// of what was removed end either way.
    fn apply_or_rebuild(&mut self, now: Timestamp, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.forwarder.apply(changes) {
            warn!("{e}; rebuilding the natpmpd table");
            if let Err(e) = self.rebuild(now) {
                warn!("cannot rebuild the natpmpd table: {e}");
            }
        }
        self.flows_to_clear.extend(removed_for_good(changes));
    }

    /// End the flows of elements removed since the last call. Call it after sending the
    /// replies of a batch: a clearing walks the whole conntrack table.
    pub fn clear_flows(&mut self) {
        if !self.flows_to_clear.is_empty() {
            let gone = std::mem::take(&mut self.flows_to_clear);
            self.forwarder.clear_flows(&gone);
        }
    }

    fn send_announcements(&mut self, now: Timestamp, out: &mut Vec<Outgoing>) {
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
        let mut sent_on = 0;
        for iface in self.internal_interfaces() {
            // Sent from the interface's own address: clients check the source (§3.2.1).
            let Some(from) = iface.first_v4() else {
                continue;
            };
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
        debug!(
            "{} announcement(s) on {sent_on} interface(s)",
            payloads.len()
        );
    }

    fn send_mapping_updates(&mut self, now: Timestamp, out: &mut Vec<Outgoing>) {
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

    /// The mapping state changed: the lease file is due soon (at most once per
    /// `LEASE_SAVE_DELAY`, so a flood of requests costs one write per second, not one each).
    fn leases_changed(&mut self, now: Timestamp) {
        if self.lease_due.is_none() {
            self.lease_due = Some(now + LEASE_SAVE_DELAY);
        }
    }

    fn lease_snapshot(&self, now: Timestamp) -> LeaseSnapshot {
        LeaseSnapshot {
            external_addr: self.engine.external_address(),
            epoch_seconds: self.engine.epoch_seconds(now),
            records: self.engine.records(now),
        }
    }

    /// If the lease file is due at `now`, what it should hold. Report the write with
    /// `lease_saved`.
    pub fn take_lease_snapshot(&mut self, now: Timestamp) -> Option<LeaseSnapshot> {
        if self.lease_due.is_none_or(|t| t > now) {
            return None;
        }
        self.lease_due = None;
        Some(self.lease_snapshot(now))
    }

    /// How writing the lease file went; a failure is retried after `LEASE_RETRY_DELAY`, and
    /// logged once until it works again.
    pub fn lease_saved(&mut self, now: Timestamp, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.lease_failing {
                    info!("lease file written again");
                }
                self.lease_failing = false;
            }
            Err(e) => {
                if !self.lease_failing {
                    warn!("cannot write the lease file: {e}; mappings will not survive a restart until it works (retrying)");
                }
                self.lease_failing = true;
                self.lease_due = Some(self.lease_due.unwrap_or(now + LEASE_RETRY_DELAY));
            }
        }
    }
}
