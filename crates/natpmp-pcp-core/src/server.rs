//! The NAT-PMP protocol engine: `handle(now, client, datagram)` -> reply bytes + staged kernel
//! changes. Deterministic: time is an argument, randomness comes from `ServerConfig::seed`.

use crate::announce::AnnouncementTrain;
use crate::forward::{Change, Forward, Protocol};
use crate::table::{InternalKey, Mapping, MappingTable, PortAllocator};
use crate::time::Timestamp;
use crate::view::MappingView;
use crate::wire::natpmp::{self, MapRequest, Request, ResultCode};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// How much longer than the mapping the kernel element lives. The daemon removes the element
/// itself at expiry (and clears conntrack); the kernel timeout is only the backstop for a
/// daemon that died, so it must never fire first.
pub const KERNEL_TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Policy knobs of the engine. The daemon fills these from the configuration file.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// External ports the engine hands out (rfc-checklist §6 A9: "high-numbered" means this
    /// range). Suggested ports outside it are replaced by one inside it.
    pub port_range: RangeInclusive<u16>,
    /// The longest lifetime granted, in seconds (§6 A10). Never more than the client asked.
    pub max_lifetime: u32,
    /// How many mappings one client address may hold; more gives result 4.
    pub max_mappings_per_client: usize,
    /// Where the port allocator starts searching, so external ports are not predictable.
    pub seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port_range: 1024..=65535,
            max_lifetime: 86400,
            max_mappings_per_client: 256,
            seed: 0,
        }
    }
}

/// What the caller does with a datagram after `Server::handle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send nothing (rfc-checklist §1.2: too short, or a response arriving as a request).
    Drop,
    /// Send the bytes written into the reply buffer back to the client.
    Reply,
}

pub struct Server {
    config: ServerConfig,
    table: MappingTable,
    ports: PortAllocator,
    external: Option<Ipv4Addr>,
    epoch_start: Timestamp,
    /// Seconds the epoch had already run before `epoch_start`: non-zero only after `restore`
    /// carried an epoch over from a previous run whose mappings survived.
    epoch_carry: u32,
    announcements: AnnouncementTrain,
}

/// One mapping as it is saved across restarts (the lease file) and restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MappingRecord {
    pub client: Ipv4Addr,
    pub protocol: Protocol,
    pub internal_port: u16,
    pub external_port: u16,
    /// The lifetime granted by the last request, seconds.
    pub lifetime: u32,
    /// Milliseconds left at the time the record was taken.
    pub expires_in_ms: u64,
}

impl Server {
    /// A fresh engine whose epoch starts at `now`, with no external address yet.
    pub fn new(config: ServerConfig, now: Timestamp) -> Server {
        Server {
            ports: PortAllocator::new(config.port_range.clone(), config.seed),
            config,
            table: MappingTable::default(),
            external: None,
            epoch_start: now,
            epoch_carry: 0,
            announcements: AnnouncementTrain::default(),
        }
    }

    /// Change the policy (live reload). Existing mappings keep their ports and lifetimes until
    /// they are renewed; new requests follow the new policy.
    pub fn set_config(&mut self, config: ServerConfig) {
        if config.port_range != self.config.port_range {
            self.ports = PortAllocator::new(config.port_range.clone(), config.seed);
        }
        self.config = config;
    }

    /// Every mapping as a record to save.
    pub fn records(&self, now: Timestamp) -> Vec<MappingRecord> {
        self.table
            .iter()
            .map(|m| MappingRecord {
                client: m.key.client,
                protocol: m.key.protocol,
                internal_port: m.key.internal_port,
                external_port: m.external_port,
                lifetime: m.lifetime,
                expires_in_ms: u64::try_from(m.expires.since(now).as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Bring back mappings saved by an earlier run, staging their forwards, and continue that
    /// run's epoch at `epoch_seconds` (RFC 6886 §3.6: the epoch resets only when mapping state
    /// is lost; here it was kept). Records that have expired, or that clash with a mapping
    /// already held (same internal endpoint, or an external port another client holds), are
    /// skipped. Returns how many were restored.
    pub fn restore(
        &mut self,
        now: Timestamp,
        epoch_seconds: u32,
        records: &[MappingRecord],
        changes: &mut Vec<Change>,
    ) -> usize {
        self.epoch_start = now;
        self.epoch_carry = epoch_seconds;
        let mut restored = 0;
        for r in records {
            let key = InternalKey {
                client: r.client,
                protocol: r.protocol,
                internal_port: r.internal_port,
            };
            if r.expires_in_ms == 0
                || r.internal_port == 0
                || r.external_port == 0
                || self.table.get(&key).is_some()
                || !self
                    .table
                    .port_available(r.client, r.protocol, r.external_port)
            {
                continue;
            }
            let mapping = Mapping {
                key,
                external_port: r.external_port,
                lifetime: r.lifetime,
                expires: now + Duration::from_millis(r.expires_in_ms),
            };
            self.table.insert(mapping);
            if let Some(addr) = self.external {
                changes.push(Change::Add(self.forward_of(now, &mapping, addr)));
            }
            restored += 1;
        }
        restored
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn external_address(&self) -> Option<Ipv4Addr> {
        self.external
    }

    /// The external address changed (or appeared, or vanished). Resets the epoch, starts the
    /// 10-copy announcement train when there is an address, and stages changes that move every
    /// forward onto the new address.
    ///
    /// Epoch choice (rfc-checklist §6 A8): one epoch, reset on every address change. PCP
    /// requires the reset (RFC 6887 §8.5); RFC 6886 allows it, and a client that sees it simply
    /// renews, which is what it must do anyway for its mappings to be reachable on the new
    /// address. While there is no address, mappings stay in the table but not in the kernel
    /// (their outbound rewrite needs an address); they return with the next address.
    pub fn set_external_address(
        &mut self,
        now: Timestamp,
        addr: Option<Ipv4Addr>,
        changes: &mut Vec<Change>,
    ) {
        if addr == self.external {
            return;
        }
        if self.external.is_some() {
            changes.extend(self.forwards(now).into_iter().map(Change::Remove));
        }
        self.external = addr;
        if self.external.is_some() {
            changes.extend(self.forwards(now).into_iter().map(Change::Add));
        }
        self.reset_epoch(now);
    }

    fn reset_epoch(&mut self, now: Timestamp) {
        self.epoch_start = now;
        self.epoch_carry = 0;
        if self.external.is_some() {
            self.announcements.start(now);
        } else {
            // With no address there is nothing true to announce (miniupnpd does the same);
            // the train starts when one arrives.
            self.announcements.stop();
        }
    }

    /// Answer one datagram from `client` (the request's source address; the daemon has already
    /// checked it arrived on an internal interface, addressed to the gateway). The reply is
    /// written into `reply` (cleared first); kernel changes are appended to `changes`.
    pub fn handle(
        &mut self,
        now: Timestamp,
        client: Ipv4Addr,
        request: &[u8],
        reply: &mut Vec<u8>,
        changes: &mut Vec<Change>,
    ) -> Outcome {
        reply.clear();
        let sssoe = self.epoch_seconds(now);
        match natpmp::parse(request) {
            None => return Outcome::Drop,
            Some(Request::UnsupportedVersion) => natpmp::emit_unsupported_version(reply, sssoe),
            Some(Request::UnsupportedOpcode(req)) => {
                natpmp::emit_unsupported_opcode(reply, req, sssoe)
            }
            Some(Request::ExternalAddress) => {
                // No address (e.g. no DHCP lease yet): Network Failure (RFC 6886 §3.5).
                let (result, addr) = match self.external {
                    Some(a) => (ResultCode::Success, a),
                    None => (ResultCode::NetworkFailure, Ipv4Addr::UNSPECIFIED),
                };
                natpmp::emit_external_address(reply, result, sssoe, addr);
            }
            Some(Request::Map(m)) => {
                let (result, external_port, lifetime) = self.map(now, client, &m, changes);
                natpmp::emit_map(
                    reply,
                    m.protocol,
                    result,
                    sssoe,
                    m.internal_port,
                    external_port,
                    lifetime,
                );
            }
        }
        Outcome::Reply
    }

    /// Create, renew or delete; returns (result, external port, lifetime) for the reply.
    fn map(
        &mut self,
        now: Timestamp,
        client: Ipv4Addr,
        m: &MapRequest,
        changes: &mut Vec<Change>,
    ) -> (ResultCode, u16, u32) {
        let key = InternalKey {
            client,
            protocol: m.protocol,
            internal_port: m.internal_port,
        };
        if m.lifetime == 0 {
            // Delete (RFC 6886 §3.4). The suggested port is ignored. Internal port 0 deletes
            // all of this client's mappings of this protocol only (§6 A6); nothing else — other
            // protocols and other clients — is touched. Deleting what does not exist succeeds,
            // so a retransmitted delete gets the same answer. There are no static mappings for
            // a delete to be refused on, so the result is always 0.
            let keys = if m.internal_port == 0 {
                self.table.keys_of(client, m.protocol)
            } else {
                vec![key]
            };
            for k in keys {
                if let Some(gone) = self.table.remove(&k) {
                    self.stage_removal(now, &gone, changes);
                }
            }
            return (ResultCode::Success, 0, 0);
        }
        if m.internal_port == 0 {
            // Internal port 0 with a lifetime is undefined (§6 A5): refuse, create nothing,
            // rather than read it as "delete all" as some servers do.
            return (ResultCode::NotAuthorized, 0, 0);
        }
        let Some(external_addr) = self.external else {
            return (ResultCode::NetworkFailure, 0, 0);
        };
        // Never more than asked (RFC 6886 §3.3), never more than the cap (§6 A10); no minimum.
        let lifetime = m.lifetime.min(self.config.max_lifetime);
        let expires = now + Duration::from_secs(u64::from(lifetime));

        if let Some(old) = self.table.renew(&key, lifetime, expires) {
            // Renewal or retransmission: the same external port whatever is suggested (§3.3).
            // Delete + add in one transaction refreshes the kernel's backstop timeout.
            changes.push(Change::Remove(self.forward_of(now, &old, external_addr)));
            let renewed = Mapping {
                lifetime,
                expires,
                ..old
            };
            changes.push(Change::Add(self.forward_of(now, &renewed, external_addr)));
            return (ResultCode::Success, old.external_port, lifetime);
        }
        if self.table.count_for(client) >= self.config.max_mappings_per_client {
            return (ResultCode::OutOfResources, 0, 0);
        }
        let Some(external_port) =
            self.ports
                .allocate(&self.table, client, m.protocol, m.suggested_external_port)
        else {
            return (ResultCode::OutOfResources, 0, 0);
        };
        let mapping = Mapping {
            key,
            external_port,
            lifetime,
            expires,
        };
        self.table.insert(mapping);
        changes.push(Change::Add(self.forward_of(now, &mapping, external_addr)));
        (ResultCode::Success, external_port, lifetime)
    }

    fn forward_of(&self, now: Timestamp, m: &Mapping, external_addr: Ipv4Addr) -> Forward {
        Forward {
            protocol: m.key.protocol,
            external_addr,
            external_port: m.external_port,
            internal_addr: m.key.client,
            internal_port: m.key.internal_port,
            timeout: m.expires.since(now) + KERNEL_TIMEOUT_GRACE,
        }
    }

    fn stage_removal(&self, now: Timestamp, m: &Mapping, changes: &mut Vec<Change>) {
        // Without an address the mapping is not in the kernel (see set_external_address).
        if let Some(addr) = self.external {
            changes.push(Change::Remove(self.forward_of(now, m, addr)));
        }
    }

    /// The kernel refused `failed` (a batch of changes staged by `handle`): forget every
    /// mapping whose `Add` is in it, so the table never claims a forward the kernel lacks.
    pub fn revert(&mut self, failed: &[Change]) {
        for change in failed {
            if let Change::Add(f) = change {
                let key = InternalKey {
                    client: f.internal_addr,
                    protocol: f.protocol,
                    internal_port: f.internal_port,
                };
                if self
                    .table
                    .get(&key)
                    .is_some_and(|m| m.external_port == f.external_port)
                {
                    self.table.remove(&key);
                }
            }
        }
    }

    /// When `handle_timeout` or `poll_announcement` next has work: the earliest mapping expiry
    /// or announcement copy.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let announce = self
            .announcements
            .next_due()
            .filter(|_| self.external.is_some());
        match (self.table.next_expiry(), announce) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expire every mapping whose lifetime has ended by `now`, staging their removal
    /// (RFC 6886 §3.4).
    pub fn handle_timeout(&mut self, now: Timestamp, changes: &mut Vec<Change>) {
        for gone in self.table.take_expired(now) {
            self.stage_removal(now, &gone, changes);
        }
    }

    /// If an announcement copy is due at `now`, write it (12 bytes, current SSSoE, so clients
    /// do not see a false reboot, §3.2.1) into `out` and return true. The caller sends it to
    /// 224.0.0.1:5350 on every internal interface.
    pub fn poll_announcement(&mut self, now: Timestamp, out: &mut Vec<u8>) -> bool {
        let Some(addr) = self.external else {
            return false;
        };
        if !self.announcements.take_due(now) {
            return false;
        }
        natpmp::emit_external_address(out, ResultCode::Success, self.epoch_seconds(now), addr);
        true
    }

    /// Seconds since the start of the epoch (SSSoE) at `now`, saturating at u32::MAX.
    pub fn epoch_seconds(&self, now: Timestamp) -> u32 {
        let run = u32::try_from(now.since(self.epoch_start).as_secs()).unwrap_or(u32::MAX);
        run.saturating_add(self.epoch_carry)
    }

    /// Every live mapping, ordered by client, protocol, internal port.
    pub fn mappings(&self, now: Timestamp) -> Vec<MappingView> {
        self.table
            .iter()
            .map(|m| MappingView {
                client: m.key.client,
                protocol: m.key.protocol,
                internal_port: m.key.internal_port,
                external_addr: self.external,
                external_port: m.external_port,
                lifetime: m.lifetime,
                expires_in: u32::try_from(m.expires.since(now).as_secs()).unwrap_or(u32::MAX),
                description: description(m.key.protocol, m.key.internal_port),
            })
            .collect()
    }

    /// The forwards the kernel should hold now (for reconciliation): none while there is no
    /// external address.
    pub fn forwards(&self, now: Timestamp) -> Vec<Forward> {
        match self.external {
            Some(addr) => self
                .table
                .iter()
                .map(|m| self.forward_of(now, m, addr))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Forget every mapping (staging their removal), reset the epoch and restart the
    /// announcement train (RFC 6886 §3.7).
    pub fn reset(&mut self, now: Timestamp, changes: &mut Vec<Change>) {
        for gone in self.table.clear() {
            self.stage_removal(now, &gone, changes);
        }
        self.reset_epoch(now);
    }
}

/// NAT-PMP carries no description; this is what the operator sees after `nat-pmp <client>: `.
fn description(protocol: Protocol, internal_port: u16) -> String {
    format!("NAT-PMP {protocol} {internal_port}")
}
