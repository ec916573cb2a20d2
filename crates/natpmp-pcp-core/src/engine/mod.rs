//! The protocol-neutral engine: one mapping table, one port allocator and one epoch for both
//! NAT-PMP and PCP. Deterministic: time is an argument, randomness comes from the seed.
//!
//! The front ends (`front::natpmp`, `front::pcp`) turn wire messages into the operations in
//! `ops.rs` and the outcomes back into their own result codes. Every operation that changes the
//! table stages the matching kernel changes (see `project.rs`) and returns an [`Undo`]: the
//! caller applies the changes and, if the kernel refuses them, hands the undo back to
//! [`Engine::revert`] before any reply is written.
//!
//! - `mapping`: endpoints, MAP and PEER mappings, owners and nonces, filters.
//! - `table`: the mapping table and its indexes.
//! - `access`: the access rules (`[[access]]`).
//! - `ports`: the port allocator.
//! - `router_ports`: the ports the router needs itself, never handed out.
//! - `project`: the kernel projection of an endpoint, and the diff between two.
//! - `ops`: map, peer, delete.
//! - `records`: saving and restoring mappings (the lease file), and read-only views.
//! - `remove`: mappings removed by hand (`natpmpctl remove`).

pub mod access;
pub mod mapping;
pub mod ops;
pub mod ports;
pub mod project;
pub mod records;
pub mod remove;
pub mod router_ports;
pub mod table;
pub mod thin_vec;

use crate::kernel::{Change, Element};
use crate::time::Timestamp;
use crate::view::MappingCounts;
use access::{AccessRules, PortRange};
use mapping::{Endpoint, EndpointKey};
use ports::{PortAllocator, PortBits};
use project::{project, stage_diff};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use table::MappingTable;

pub use ops::{
    Claim, DeleteAllOutcome, DeleteOutcome, DescriptionUpdate, FilterUpdate, Granted, Lifetime,
    MapOutcome, MapRequest, PeerRequest, Refusal,
};

/// Policy knobs of the engine. The daemon fills these from the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// External ports handed out (rfc-checklist §6 A9: "high-numbered" means this range).
    /// Suggested ports outside it are replaced by one inside it.
    pub port_range: RangeInclusive<u16>,
    /// The longest lifetime granted to either protocol, seconds (§6 A10).
    pub max_lifetime: u32,
    /// The shortest lifetime granted to a PCP mapping (RFC 6887 §15: SHOULD be 120 s).
    /// NAT-PMP has no minimum: it never grants more than asked.
    pub pcp_min_lifetime: u32,
    /// How many mappings (MAP and PEER, both protocols) one client address may hold.
    pub max_mappings_per_client: usize,
    /// How many FILTERs one MAP may hold (RFC 6887 §13.3: at least 1; here at least 4).
    pub max_filters: usize,
    /// Where the port allocator starts searching, so external ports are not predictable.
    pub seed: u64,
    /// Who may map what (`[[access]]`); empty: everyone everything.
    pub access: AccessRules,
    /// External ports the router keeps for itself (`reserved-ports`), both protocols.
    pub reserved_ports: Vec<PortRange>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            port_range: 1024..=65535,
            max_lifetime: 86400,
            pcp_min_lifetime: 120,
            max_mappings_per_client: 256,
            max_filters: 8,
            seed: 0,
            access: AccessRules::default(),
            reserved_ports: Vec::new(),
        }
    }
}

/// Seconds Since Start of Epoch (NAT-PMP) and PCP's epoch time: one clock for both (§6 A8).
#[derive(Clone, Copy, Debug)]
struct Epoch {
    start: Timestamp,
    /// Seconds the epoch had already run before `start`: non-zero only after a restore
    /// carried an epoch over from a previous run whose mappings survived.
    carry: u32,
}

impl Epoch {
    fn seconds(&self, now: Timestamp) -> u32 {
        let run = u32::try_from(now.since(self.start).as_secs()).unwrap_or(u32::MAX);
        run.saturating_add(self.carry)
    }
}

/// What to put back if the kernel refuses a request's changes: each endpoint it touched, as it
/// was before, in the order touched.
///
/// Most requests touch one endpoint, kept inline: an undo record allocates nothing. A batch
/// of records allocated one by one, interleaved with the endpoints being allocated for the
/// same requests and freed together once the kernel answered, left the heap full of small
/// holes (1.4 MB in 29 000 free chunks after 100 000 mappings, glibc's malloc_info).
#[derive(Debug, Default)]
#[must_use = "hand it to Engine::revert if the kernel refuses the changes"]
pub struct Undo {
    first: Option<(EndpointKey, Option<Endpoint>)>,
    rest: Vec<(EndpointKey, Option<Endpoint>)>,
}

impl Undo {
    fn one(key: EndpointKey, before: Option<Endpoint>) -> Undo {
        Undo {
            first: Some((key, before)),
            rest: Vec::new(),
        }
    }

    fn push(&mut self, key: EndpointKey, before: Option<Endpoint>) {
        match self.first {
            None => self.first = Some((key, before)),
            Some(_) => self.rest.push((key, before)),
        }
    }

    fn append(&mut self, other: Undo) {
        for (key, before) in other.into_entries() {
            self.push(key, before);
        }
    }

    fn into_entries(self) -> impl DoubleEndedIterator<Item = (EndpointKey, Option<Endpoint>)> {
        self.first.into_iter().chain(self.rest)
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The endpoints touched.
    pub fn keys(&self) -> impl Iterator<Item = &EndpointKey> {
        self.first.iter().chain(&self.rest).map(|(k, _)| k)
    }
}

pub struct Engine {
    config: EngineConfig,
    table: MappingTable,
    ports: PortAllocator,
    external: Option<Ipv4Addr>,
    epoch: Epoch,
    /// The router's own bound ports (TCP, UDP), as last reported (see `router_ports`).
    router_sockets: [Vec<u16>; 2],
    /// Per protocol (TCP, UDP): `reserved-ports` and the router's own sockets together.
    unavailable: [PortBits; 2],
}

impl Engine {
    /// A fresh engine whose epoch starts at `now`, with no external address yet.
    pub fn new(config: EngineConfig, now: Timestamp) -> Engine {
        let mut engine = Engine {
            ports: PortAllocator::new(config.port_range.clone(), config.seed),
            config,
            table: MappingTable::default(),
            external: None,
            epoch: Epoch {
                start: now,
                carry: 0,
            },
            router_sockets: [Vec::new(), Vec::new()],
            unavailable: [PortBits::default(), PortBits::default()],
        };
        engine.rebuild_unavailable();
        engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Change the policy (live reload). Existing mappings keep their ports and lifetimes until
    /// they are renewed; new requests and renewals follow the new policy. (Ports newly listed
    /// in `reserved-ports` are taken back by [`Engine::take_back_router_ports`].)
    pub fn set_config(&mut self, config: EngineConfig) {
        if config.port_range != self.config.port_range {
            self.ports = PortAllocator::new(config.port_range.clone(), config.seed);
        }
        let reserved_changed = config.reserved_ports != self.config.reserved_ports;
        self.config = config;
        if reserved_changed {
            self.rebuild_unavailable();
        }
    }

    pub fn external_address(&self) -> Option<Ipv4Addr> {
        self.external
    }

    /// How many mappings (MAP and PEER) the table holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// How many of each protocol, family and maker (the metrics' gauges), kept as the table
    /// changes: no walk over it.
    pub fn mapping_counts(&self) -> MappingCounts {
        self.table.counts()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Seconds since the start of the epoch at `now`, saturating at u32::MAX.
    pub fn epoch_seconds(&self, now: Timestamp) -> u32 {
        self.epoch.seconds(now)
    }

    /// Restart the epoch at 0 while keeping the mappings: state was lost that the table does
    /// not show (after a crash, see `gateway::recovery`), so clients must re-create theirs.
    pub fn restart_epoch(&mut self, now: Timestamp) {
        self.reset_epoch(now);
    }

    fn reset_epoch(&mut self, now: Timestamp) {
        self.epoch = Epoch {
            start: now,
            carry: 0,
        };
    }

    /// The external address changed (or appeared, or vanished). Resets the epoch and stages
    /// the changes that move every IPv4 endpoint's outbound rewrite onto the new address.
    /// Returns whether anything changed.
    ///
    /// Epoch choice (rfc-checklist §6 A8): one epoch, reset on every address change. PCP
    /// requires the reset (RFC 6887 §8.5); RFC 6886 allows it, and a client that sees it simply
    /// renews. While there is no address, IPv4 mappings stay in the table but not in the
    /// kernel; they return with the next address.
    pub fn set_external_address(
        &mut self,
        now: Timestamp,
        addr: Option<Ipv4Addr>,
        changes: &mut Vec<Change>,
    ) -> bool {
        if addr == self.external {
            return false;
        }
        for (key, endpoint) in self.table.iter().filter(|(k, _)| k.client.is_ipv4()) {
            let before = project(key, endpoint, self.external);
            let after = project(key, endpoint, addr);
            stage_diff(now, &before, &after, changes);
        }
        self.external = addr;
        self.reset_epoch(now);
        true
    }

    /// Set the endpoint at `key` to `new`, staging the kernel changes between the two.
    fn put(
        &mut self,
        now: Timestamp,
        key: EndpointKey,
        new: Option<Endpoint>,
        changes: &mut Vec<Change>,
    ) {
        let before = self
            .table
            .get(&key)
            .map(|e| project(&key, e, self.external))
            .unwrap_or_default();
        let after = new
            .as_ref()
            .map(|e| project(&key, e, self.external))
            .unwrap_or_default();
        stage_diff(now, &before, &after, changes);
        self.table.put(key, new);
    }

    /// Undo a request whose changes the kernel refused: every endpoint it touched goes back to
    /// what it was. Stages nothing, since the kernel never took the changes.
    pub fn revert(&mut self, undo: Undo) {
        for (key, before) in undo.into_entries().rev() {
            self.table.put(key, before);
        }
    }

    /// When `handle_timeout` next has work: the earliest expiry.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.table.next_expiry()
    }

    /// Expire every mapping whose lifetime has ended by `now`, staging the removal of what it
    /// alone kept in the kernel (RFC 6886 §3.4, RFC 6887 §15). Returns how many expired.
    pub fn handle_timeout(&mut self, now: Timestamp, changes: &mut Vec<Change>) -> usize {
        let expired = self.table.expired(now);
        for id in &expired {
            let Some(mut endpoint) = self.table.get(&id.key).cloned() else {
                continue;
            };
            match id.remote {
                None => endpoint.map = None,
                Some(remote) => endpoint.peers.retain(|p| p.remote != remote),
            }
            self.put(now, id.key, Some(endpoint), changes);
        }
        expired.len()
    }

    /// Every element the kernel should hold now, with the expiry it serves (for a rebuild and
    /// for drift repair).
    pub fn projection(&self) -> Vec<(Element, Timestamp)> {
        self.table
            .iter()
            .flat_map(|(k, e)| project(k, e, self.external))
            .collect()
    }

    /// Forget every endpoint whose key `doomed` picks (staging the removal of its elements), and
    /// return their keys: used when a host's addresses left the link (an IPv6 prefix went away).
    /// The epoch does not reset: the other mappings are intact.
    pub fn forget_where(
        &mut self,
        now: Timestamp,
        doomed: impl Fn(&EndpointKey) -> bool,
        changes: &mut Vec<Change>,
    ) -> Vec<EndpointKey> {
        let keys: Vec<EndpointKey> = self
            .table
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| doomed(k))
            .collect();
        for key in &keys {
            self.put(now, *key, None, changes);
        }
        keys
    }

    /// Forget every mapping (staging their removal) and reset the epoch: the mapping state is
    /// lost (RFC 6886 §3.7, RFC 6887 §8.5).
    pub fn reset(&mut self, now: Timestamp, changes: &mut Vec<Change>) {
        for (key, endpoint) in self.table.clear() {
            let before = project(&key, &endpoint, self.external);
            stage_diff(now, &before, &[], changes);
        }
        self.reset_epoch(now);
    }
}

/// Whole seconds from `now` until `t`, rounded up, so a mapping that is still alive never
/// reports 0 seconds left.
pub(crate) fn seconds_left(now: Timestamp, t: Timestamp) -> u32 {
    let ms = t.since(now).as_millis();
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}
