//! Mappings as records to save across restarts (the lease file) and restore, and as read-only
//! views for `natpmpctl print` and for PCP Mapping Updates.

use super::mapping::{
    Endpoint, EndpointKey, Filter, MapMapping, MappingId, Owner, PcpClient, PeerMapping,
};
use super::project::{project, stage_all};
use super::thin_vec::ThinVec;
use super::{seconds_left, Engine, Epoch};
use crate::addr::Protocol;
use crate::kernel::Change;
use crate::time::Timestamp;
use crate::view::{MappingKind, MappingView, Via};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One mapping as it is saved and restored. Everything a client was promised is here: its
/// port, lifetime, nonce, filters, description, and where its Mapping Updates go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRecord {
    pub client: IpAddr,
    pub protocol: Protocol,
    pub internal_port: u16,
    pub external_port: u16,
    /// The lifetime granted by the last request, seconds.
    pub lifetime: u32,
    /// Milliseconds left at the time the record was taken.
    pub expires_in_ms: u64,
    #[serde(flatten)]
    pub kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordKind {
    Map {
        owner: Owner,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        filters: Vec<Filter>,
    },
    Peer {
        remote: SocketAddr,
        /// The PEER's nonce and reply path (named `owner` as a MAP's is: the record's
        /// `client` is the host's address).
        owner: PcpClient,
    },
}

/// One PCP-owned mapping, as a Mapping Update describes it (RFC 6887 §14.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcpMappingInfo {
    pub key: EndpointKey,
    pub remote: Option<SocketAddr>,
    pub client: PcpClient,
    pub external: SocketAddr,
    pub lifetime_left: u32,
    pub filters: Vec<Filter>,
    pub description: Option<Box<str>>,
    /// When the client last had the mapping granted: a client that refreshed after an event
    /// needs no update about it.
    pub granted_at: Timestamp,
}

fn ms_left(now: Timestamp, t: Timestamp) -> u64 {
    u64::try_from(t.since(now).as_millis()).unwrap_or(u64::MAX)
}

impl Engine {
    /// Every mapping as a record to save.
    pub fn records(&self, now: Timestamp) -> Vec<MappingRecord> {
        let mut out = Vec::with_capacity(self.table.len());
        self.records_after(now, None, usize::MAX, &mut out);
        out
    }

    /// The records of up to `endpoints` endpoints after `after` (from the first for `None`),
    /// appended to `out`, their expiries counted from `now`. Returns the last endpoint read
    /// when there may be more, `None` at the end of the table: the lease snapshot of a large
    /// table is taken a slice at a time this way, so no turn of the loop copies all of it.
    pub fn records_after(
        &self,
        now: Timestamp,
        after: Option<&EndpointKey>,
        endpoints: usize,
        out: &mut Vec<MappingRecord>,
    ) -> Option<EndpointKey> {
        let mut last = None;
        for (n, (key, e)) in self.table.iter_after(after).enumerate() {
            if n == endpoints {
                return last;
            }
            last = Some(*key);
            if let Some(m) = &e.map {
                out.push(MappingRecord {
                    client: key.client,
                    protocol: key.protocol,
                    internal_port: key.internal_port,
                    external_port: e.external_port,
                    lifetime: m.lifetime,
                    expires_in_ms: ms_left(now, m.expires),
                    kind: RecordKind::Map {
                        owner: m.owner,
                        filters: m.filters.to_vec(),
                    },
                    description: m.description.as_deref().map(str::to_owned),
                });
            }
            for p in &e.peers {
                out.push(MappingRecord {
                    client: key.client,
                    protocol: key.protocol,
                    internal_port: key.internal_port,
                    external_port: e.external_port,
                    lifetime: p.lifetime,
                    expires_in_ms: ms_left(now, p.expires),
                    kind: RecordKind::Peer {
                        remote: p.remote,
                        owner: p.client,
                    },
                    description: p.description.as_deref().map(str::to_owned),
                });
            }
        }
        None
    }

    /// Bring back mappings saved by an earlier run, staging their kernel elements, and continue
    /// that run's epoch at `epoch_seconds` (RFC 6886 §3.6: the epoch resets only when mapping
    /// state is lost; here it was kept). Records that have expired, or that clash with what is
    /// already held (another external port for the endpoint, a port another client holds, a
    /// second MAP or the same PEER twice), are skipped. Returns how many were restored.
    pub fn restore(
        &mut self,
        now: Timestamp,
        epoch_seconds: u32,
        records: &[MappingRecord],
        changes: &mut Vec<Change>,
    ) -> usize {
        self.epoch = Epoch {
            start: now,
            carry: epoch_seconds,
        };
        self.bring_back(now, records, changes)
    }

    /// `restore` without touching the epoch: the records, staged, skipping what has expired
    /// or clashes with what is held.
    fn bring_back(
        &mut self,
        now: Timestamp,
        records: &[MappingRecord],
        changes: &mut Vec<Change>,
    ) -> usize {
        let mut restored = 0;
        let mut touched = Vec::new();
        for r in records {
            let key = EndpointKey {
                client: r.client,
                protocol: r.protocol,
                internal_port: r.internal_port,
            };
            if r.expires_in_ms == 0 || r.internal_port == 0 || r.external_port == 0 {
                continue;
            }
            let mut endpoint = match self.table.get(&key) {
                Some(e) if e.external_port == r.external_port => e.clone(),
                Some(_) => continue,
                None => {
                    let free = match r.client {
                        IpAddr::V4(_) => {
                            self.table
                                .port_available(r.client, r.protocol, r.external_port)
                        }
                        IpAddr::V6(_) => r.external_port == r.internal_port,
                    };
                    if !free {
                        continue;
                    }
                    Endpoint {
                        external_port: r.external_port,
                        map: None,
                        peers: ThinVec::new(),
                    }
                }
            };
            let expires = now + Duration::from_millis(r.expires_in_ms);
            let description = r.description.as_deref().map(Box::from);
            match &r.kind {
                RecordKind::Map { owner, filters } => {
                    if endpoint.map.is_some() {
                        continue;
                    }
                    endpoint.map = Some(MapMapping {
                        owner: *owner,
                        lifetime: r.lifetime,
                        expires,
                        filters: filters.clone().into(),
                        description,
                    });
                }
                RecordKind::Peer { remote, owner } => {
                    if endpoint.peer(*remote).is_some() {
                        continue;
                    }
                    endpoint.peers.push(PeerMapping {
                        remote: *remote,
                        client: *owner,
                        lifetime: r.lifetime,
                        expires,
                        description,
                    });
                }
            }
            self.table.put(key, Some(endpoint));
            touched.push(key);
            restored += 1;
        }
        touched.sort();
        touched.dedup();
        for key in touched {
            if let Some(e) = self.table.get(&key) {
                stage_all(now, &project(&key, e, self.external), changes);
            }
        }
        restored
    }

    /// Take over open MAPs that the kernel holds and no lease knew of (after a crash, see
    /// `gateway::recovery`): a record for an endpoint not in the table is brought in as
    /// `restore` would; for an endpoint whose open MAP is already here on the same external
    /// port, a later expiry (a renewal the leases missed) is taken. The epoch is not touched.
    /// Returns how many records were taken in or extended.
    pub fn adopt(
        &mut self,
        now: Timestamp,
        records: &[MappingRecord],
        changes: &mut Vec<Change>,
    ) -> usize {
        let mut adopted = 0;
        for r in records {
            let key = EndpointKey {
                client: r.client,
                protocol: r.protocol,
                internal_port: r.internal_port,
            };
            let expires = now + Duration::from_millis(r.expires_in_ms);
            match self.table.get(&key) {
                Some(e) if e.external_port == r.external_port => {
                    let Some(map) = e.map.as_ref().filter(|m| m.filters.is_empty()) else {
                        continue;
                    };
                    // The kernel's countdown and the lease file's expiry agree to within
                    // milliseconds; only a real renewal moves it by a second or more.
                    if map.expires + Duration::from_secs(1) >= expires {
                        continue;
                    }
                    let mut endpoint = e.clone();
                    if let Some(m) = endpoint.map.as_mut() {
                        m.expires = expires;
                        m.lifetime = m.lifetime.max(r.lifetime);
                    }
                    self.put(now, key, Some(endpoint), changes);
                    adopted += 1;
                }
                Some(_) => {}
                None => adopted += self.bring_back(now, std::slice::from_ref(r), changes),
            }
        }
        adopted
    }

    /// Every live mapping, ordered by client, protocol, internal port; each endpoint's MAP
    /// before its PEERs.
    pub fn mappings(&self, now: Timestamp) -> Vec<MappingView> {
        let mut out = Vec::with_capacity(self.table.len());
        for (key, e) in self.table.iter() {
            let external_addr = match key.client {
                IpAddr::V4(_) => self.external.map(IpAddr::V4),
                v6 => Some(v6),
            };
            let base = |via, kind, lifetime, expires: Timestamp, description: &Option<Box<str>>| {
                MappingView {
                    client: key.client,
                    protocol: key.protocol,
                    internal_port: key.internal_port,
                    external_addr,
                    external_port: e.external_port,
                    lifetime,
                    expires_in: seconds_left(now, expires),
                    via,
                    kind,
                    nonce_owned: false,
                    remote: None,
                    filters: Vec::new(),
                    description: description.as_deref().map(str::to_owned),
                }
            };
            if let Some(m) = &e.map {
                let via = if m.owner.is_pcp() {
                    Via::Pcp
                } else {
                    Via::NatPmp
                };
                let mut v = base(via, MappingKind::Map, m.lifetime, m.expires, &m.description);
                v.nonce_owned = m.owner.is_pcp();
                v.filters = m.filters.iter().map(Filter::to_string).collect();
                out.push(v);
            }
            for p in &e.peers {
                let mut v = base(
                    Via::Pcp,
                    MappingKind::Peer,
                    p.lifetime,
                    p.expires,
                    &p.description,
                );
                v.nonce_owned = true;
                v.remote = Some(p.remote);
                out.push(v);
            }
        }
        out
    }

    /// Every PCP-owned mapping, with what a Mapping Update needs.
    pub fn pcp_mappings(&self, now: Timestamp) -> Vec<PcpMappingInfo> {
        let mut out = Vec::new();
        for (key, e) in self.table.iter() {
            let Ok(addr) = self.external_addr_for(key) else {
                continue;
            };
            let external = SocketAddr::new(addr, e.external_port);
            let granted_at = |expires: Timestamp, lifetime: u32| {
                Timestamp::from_millis(
                    expires
                        .as_millis()
                        .saturating_sub(u64::from(lifetime) * 1000),
                )
            };
            if let Some(m) = &e.map {
                if let Owner::Pcp(client) = m.owner {
                    out.push(PcpMappingInfo {
                        key: *key,
                        remote: None,
                        client,
                        external,
                        lifetime_left: seconds_left(now, m.expires),
                        filters: m.filters.to_vec(),
                        description: m.description.clone(),
                        granted_at: granted_at(m.expires, m.lifetime),
                    });
                }
            }
            for p in &e.peers {
                out.push(PcpMappingInfo {
                    key: *key,
                    remote: Some(p.remote),
                    client: p.client,
                    external,
                    lifetime_left: seconds_left(now, p.expires),
                    filters: Vec::new(),
                    description: p.description.clone(),
                    granted_at: granted_at(p.expires, p.lifetime),
                });
            }
        }
        out
    }

    /// The mapping `id` names, if it still exists.
    pub fn contains(&self, id: &MappingId) -> bool {
        self.table.get(&id.key).is_some_and(|e| match id.remote {
            None => e.map.is_some(),
            Some(r) => e.peer(r).is_some(),
        })
    }
}
