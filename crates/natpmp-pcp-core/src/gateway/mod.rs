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
//! - `links`: reacting to interface changes: the external address, IPv6 prefixes, hairpin.
//! - `unsolicited`: announcements and Mapping Updates, and where they leave from.
//! - `announce`: their schedules.
//! - `leases`: when the lease file is due and what it holds.
//! - `interfaces`: the interface model, the external address, hairpin networks.
//! - `stats`: the counters behind the daemon's metrics and `natpmpctl status`.
//! - `remove`: mappings removed by hand (`natpmpctl remove`).
//! - `recovery`: starting after a crash, with the kernel's table as the witness.
//! - `rate_limit`: a token bucket per client address, checked before any parsing.
//!
//! What lives here and not in the engine: what depends on interfaces and on the kernel's
//! answers, and what is sent without being asked (announcements, Mapping Updates).

pub mod announce;
mod batch;
mod drift;
pub use drift::element_check_interval;
pub mod interfaces;
mod leases;
mod links;
pub mod rate_limit;
pub mod recovery;
mod remove;
pub mod router_ports;
mod stats;
mod unsolicited;

use crate::addr::Prefix;
use crate::engine::records::MappingRecord;
use crate::engine::{Engine, EngineConfig};
use crate::front::pcp::PcpPolicy;
use crate::kernel::{removed_for_good, Change, Element, Forwarder, KernelError};
use crate::time::Timestamp;
use crate::view::{MappingCounts, MappingView};
use announce::Train;
use interfaces::{ExternalInterface, Interface, Interfaces};
use rate_limit::{RateLimitConfig, RateLimiter};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tracing::{debug, info, warn};

pub use batch::Datagram;
pub use leases::LEASE_SLICE;
pub use remove::{Removal, Removed};
pub use stats::{request_labels, DriftFinding, GatewayStats, RequestLabels};

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
    /// The conntrack mark bit set on every connection natpmpd lets in (`connection-mark`).
    pub connection_mark: u32,
    /// `rate-limit` and `rate-limit-burst`: a token bucket per client address.
    pub rate_limit: RateLimitConfig,
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
            connection_mark: crate::kernel::TableSpec::DEFAULT_CONNECTION_MARK,
            rate_limit: RateLimitConfig::default(),
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
    /// Whether the run that wrote them stopped cleanly (the file was written at shutdown).
    /// If not, mappings acknowledged after its last save may be missing, and the kernel is
    /// asked (see `recovery`).
    pub clean: bool,
}

/// What the lease file should hold now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSnapshot {
    pub external_addr: Option<Ipv4Addr>,
    pub epoch_seconds: u32,
    pub records: Vec<MappingRecord>,
    /// When the records were read: their `expires_in_ms` count from here. A snapshot of a
    /// large table is taken over several turns of the loop; this is the first.
    pub taken_at: Timestamp,
    /// True only for the snapshot taken at shutdown: nothing can change after it.
    pub clean: bool,
}

/// ff02::1, all nodes on the link: where PCP's IPv6 announcements go.
pub const ALL_NODES_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// What `Gateway::start` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// Mappings brought back from the leases.
    pub restored: usize,
    /// Whether the epoch continued from the leases (else it starts at 0).
    pub epoch_continued: bool,
    /// Kernel elements installed.
    pub installed: usize,
    /// After an unclean stop: what comparing the leases with the kernel found.
    pub recovery: Option<recovery::Recovery>,
}

/// What the hairpin sets hold: the external address (none = hairpin off) and the LAN subnets.
pub(super) type HairpinSets = (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>);

pub struct Gateway<F: Forwarder> {
    config: GatewayConfig,
    engine: Engine,
    forwarder: F,
    interfaces: Interfaces,
    /// Our table is installed and requests are answered.
    serving: bool,
    hairpin_applied: Option<HairpinSets>,
    natpmp_announcements: Train,
    pcp_announcements: Train,
    updates: Train,
    /// When the lease file is next due to be written (a change is waiting).
    lease_due: Option<Timestamp>,
    lease_failing: bool,
    /// The lease snapshot being taken, a slice per turn (see `leases`).
    lease_partial: Option<leases::Partial>,
    /// How many endpoints one slice of it copies.
    lease_slice: usize,
    next_drift_check: Timestamp,
    /// When the kernel's elements are next listed and compared (see `drift::element_check_interval`).
    next_element_check: Timestamp,
    /// How many mappings the engine held when that listing was scheduled.
    element_check_size: usize,
    /// Elements removed for good whose flows are yet to be ended (after the replies).
    flows_to_clear: Vec<Element>,
    /// The internal interfaces' IPv6 prefixes in the last snapshot: a pinhole whose host's
    /// prefix disappears from them is removed.
    v6_prefixes: Vec<Prefix>,
    /// Configured interfaces already reported missing, so the log says it once.
    reported_missing: HashSet<String>,
    warned_private: Option<Ipv4Addr>,
    /// The router's own bound sockets, as the daemon last reported them.
    local_sockets: Vec<router_ports::LocalSocket>,
    stats: GatewayStats,
    rate_limiter: RateLimiter,
}

impl<F: Forwarder> Gateway<F> {
    /// A gateway that does not serve yet: give it interfaces, then `start` it.
    pub fn new(config: GatewayConfig, forwarder: F, now: Timestamp) -> Gateway<F> {
        Gateway {
            engine: Engine::new(config.engine.clone(), now),
            rate_limiter: RateLimiter::new(config.rate_limit),
            config,
            forwarder,
            interfaces: Interfaces::new(),
            serving: false,
            hairpin_applied: None,
            natpmp_announcements: Train::announcements(),
            pcp_announcements: Train::announcements(),
            updates: Train::updates(),
            lease_due: None,
            lease_failing: false,
            lease_partial: None,
            lease_slice: leases::LEASE_SLICE,
            next_drift_check: now + DRIFT_CHECK,
            next_element_check: now,
            element_check_size: 0,
            flows_to_clear: Vec::new(),
            v6_prefixes: Vec::new(),
            reported_missing: HashSet::new(),
            warned_private: None,
            local_sockets: Vec::new(),
            stats: GatewayStats::default(),
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

    /// How many mappings of each protocol, family and maker, without a walk over the table.
    pub fn mapping_counts(&self) -> MappingCounts {
        self.engine.mapping_counts()
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
    /// §14.1.3). The epoch continues only when there were leases, the external address is
    /// the one they knew (the lease rule in the daemon's `leases.rs`), and, after an unclean
    /// stop, the kernel's table agrees with them (`recovery`).
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
            if !r.clean {
                let kernel = self.forwarder.list();
                self.reconcile_after_crash(now, kernel, &mut started);
            }
        } else {
            // No lease file, but our table survived with elements in it: the last run died
            // before its first save (or the file was removed). Take over what can be.
            match self.forwarder.list() {
                Ok(kernel) if !kernel.is_empty() => {
                    self.reconcile_after_crash(now, Ok(kernel), &mut started)
                }
                _ => {}
            }
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
        // Whole and of one instant: a periodic snapshot under way is dropped.
        self.lease_partial = None;
        let snapshot = LeaseSnapshot {
            clean: true,
            ..self.lease_snapshot(now)
        };
        if self.serving && !keep_forwards {
            match self.forwarder.teardown() {
                Ok(()) => info!("natpmpd table removed"),
                Err(e) => warn!("could not remove the natpmpd table: {e}"),
            }
        }
        self.serving = false;
        snapshot
    }

    /// Apply a new configuration (a reload). The caller has refused invalid files already.
    pub fn reconfigure(
        &mut self,
        now: Timestamp,
        config: GatewayConfig,
    ) -> Result<(), KernelError> {
        let old_external = self.config.external.as_ref().map(|e| e.name.clone());
        let old_mark = self.config.connection_mark;
        let old_reserved = self.config.engine.reserved_ports.clone();
        self.engine.set_config(config.engine.clone());
        self.rate_limiter.set_config(now, config.rate_limit);
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
        } else if self.serving && old_mark != self.config.connection_mark {
            info!(
                "connection-mark changed from {old_mark:#010x} to {:#010x}: reloading the table",
                self.config.connection_mark
            );
            self.rebuild(now)?;
        }
        if self.config.engine.reserved_ports != old_reserved {
            self.take_back_router_ports(now);
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
            let before = out.len();
            self.send_announcements(now, out);
            self.send_mapping_updates(now, out);
            self.stats.announcements += (out.len() - before) as u64;
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
        if let Err(e) = self.kernel_apply(changes) {
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
}
