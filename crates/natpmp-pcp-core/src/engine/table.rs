//! The mapping table: the engine's truth about which client holds which external port.
//!
//! Indexes kept in step, so every operation is O(log n) whatever the number of mappings: the
//! endpoints by internal key (client, protocol, internal port), ordered so one client's
//! mappings of one protocol are a range; external ports by (protocol, port) for allocation and
//! the companion rule; an ordered expiry index, so expiry never scans the table; and a count
//! of mappings per client for the quota.
//!
//! The expiry index is two sets: MAPs by (expiry, endpoint key), 32 bytes an entry, and PEERs
//! by (expiry, key and remote), 64. One set of `(Timestamp, MappingId)` for both made every
//! MAP pay for a remote address it does not have: at 100 000 mappings that was ~50 bytes a
//! mapping (benches/table_memory.rs).
//!
//! Endpoints are boxed in their B-tree. Its nodes hold 11 entries and, filled in key order as
//! each client's ports are, stay about half full; with the endpoint (88 bytes) inline, every
//! mapping paid for the empty half too. Boxed, the node holds a pointer and the endpoint sits
//! in an allocation of its own size: ~50 bytes a mapping less at 100 000, for one allocation
//! per change that the copy-and-put of every change made anyway.
//!
//! Endpoints are replaced whole ([`MappingTable::put`]): the engine takes a copy, changes it,
//! and puts it back, and the indexes are updated from the old and the new value. That one
//! path keeps every index right, and the copy doubles as the undo record of a request.

use super::mapping::{Endpoint, EndpointKey, MappingId};
use super::ports::PortBits;
use crate::addr::Protocol;
use crate::time::Timestamp;
use crate::view::{MappingCounts, Via};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound;

/// An expiry in the expiry indexes: a `Timestamp` as two 32-bit halves, high first, so that it
/// orders the same but is 4-aligned. An index entry is then 28 bytes, not 32 (a `u64` beside
/// the 20-byte key pads it to 32). Expiries are inserted in ascending time order, which leaves
/// a B-tree's nodes half full, so each byte of an entry costs about two: 9 bytes per mapping
/// at 100 000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ExpiresAt {
    high: u32,
    low: u32,
}

impl From<Timestamp> for ExpiresAt {
    fn from(t: Timestamp) -> ExpiresAt {
        let ms = t.as_millis();
        ExpiresAt {
            high: (ms >> 32) as u32,
            low: ms as u32,
        }
    }
}

impl From<ExpiresAt> for Timestamp {
    fn from(at: ExpiresAt) -> Timestamp {
        Timestamp::from_millis(u64::from(at.high) << 32 | u64::from(at.low))
    }
}

#[derive(Default)]
pub struct MappingTable {
    endpoints: BTreeMap<EndpointKey, Box<Endpoint>>,
    /// IPv4 endpoints only: IPv6 pinholes allocate no external port.
    by_external: HashMap<(Protocol, u16), EndpointKey>,
    map_expiry: BTreeSet<(ExpiresAt, EndpointKey)>,
    peer_expiry: BTreeSet<(ExpiresAt, MappingId)>,
    per_client: HashMap<IpAddr, usize>,
    mappings: usize,
    /// By protocol, family and maker, for the metrics.
    counts: MappingCounts,
    /// One bit per external port held in either protocol (IPv4).
    pub(super) held_ports: PortBits,
}

impl MappingTable {
    /// How many mappings (MAP and PEER) the table holds.
    pub fn len(&self) -> usize {
        self.mappings
    }

    pub fn is_empty(&self) -> bool {
        self.mappings == 0
    }

    pub fn get(&self, key: &EndpointKey) -> Option<&Endpoint> {
        self.endpoints.get(key).map(|e| &**e)
    }

    /// Who holds `protocol` external `port`, if anyone.
    pub fn holder(&self, protocol: Protocol, port: u16) -> Option<&EndpointKey> {
        self.by_external.get(&(protocol, port))
    }

    /// How many mappings of each protocol, family and maker the table holds.
    pub fn counts(&self) -> MappingCounts {
        self.counts
    }

    /// How many mappings `client` holds, of both protocols and both kinds.
    pub fn count_for(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }

    /// Whether `client` may take `protocol` external `port`: nobody holds it, and the same
    /// port of the other protocol is free or held by `client` itself (the companion-port
    /// reservation of RFC 6886 §3.3, applied to both protocols' mappings).
    pub fn port_available(&self, client: IpAddr, protocol: Protocol, port: u16) -> bool {
        if self.by_external.contains_key(&(protocol, port)) {
            return false;
        }
        match self.by_external.get(&(protocol.companion(), port)) {
            None => true,
            Some(holder) => holder.client == client,
        }
    }

    /// Set the endpoint at `key` to `new` (removing it when `None` or empty) and return what
    /// was there. The caller has checked that a new external port is available.
    pub fn put(&mut self, key: EndpointKey, new: Option<Endpoint>) -> Option<Endpoint> {
        let new = new.filter(|e| !e.is_empty());
        let old = match &new {
            Some(e) => self.endpoints.insert(key, Box::new(e.clone())),
            None => self.endpoints.remove(&key),
        }
        .map(|old| *old);
        if let Some(old) = &old {
            self.unindex(key, old);
        }
        if let Some(new) = &new {
            self.index(key, new);
        }
        old
    }

    fn index(&mut self, key: EndpointKey, e: &Endpoint) {
        if key.client.is_ipv4() {
            self.by_external
                .insert((key.protocol, e.external_port), key);
            self.held_ports.set(e.external_port, true);
        }
        if let Some(m) = &e.map {
            self.map_expiry.insert((m.expires.into(), key));
        }
        for p in &e.peers {
            self.peer_expiry.insert((
                p.expires.into(),
                MappingId {
                    key,
                    remote: Some(p.remote),
                },
            ));
        }
        let n = e.mapping_count();
        *self.per_client.entry(key.client).or_insert(0) += n;
        self.mappings += n;
        self.count(key, e, 1);
    }

    /// `by` (1 or -1) for each of `e`'s mappings in `counts`: its MAP by its owner, each PEER
    /// as PCP's (as `Engine::mappings` shows them).
    fn count(&mut self, key: EndpointKey, e: &Endpoint, by: isize) {
        let ipv6 = key.client.is_ipv6();
        if let Some(m) = &e.map {
            let via = if m.owner.is_pcp() {
                Via::Pcp
            } else {
                Via::NatPmp
            };
            self.counts.add(key.protocol, ipv6, via, by);
        }
        for _ in &e.peers {
            self.counts.add(key.protocol, ipv6, Via::Pcp, by);
        }
    }

    fn unindex(&mut self, key: EndpointKey, e: &Endpoint) {
        if key.client.is_ipv4() {
            self.by_external.remove(&(key.protocol, e.external_port));
            if !self
                .by_external
                .contains_key(&(key.protocol.companion(), e.external_port))
            {
                self.held_ports.set(e.external_port, false);
            }
        }
        if let Some(m) = &e.map {
            self.map_expiry.remove(&(m.expires.into(), key));
        }
        for p in &e.peers {
            self.peer_expiry.remove(&(
                p.expires.into(),
                MappingId {
                    key,
                    remote: Some(p.remote),
                },
            ));
        }
        let n = e.mapping_count();
        if let Some(count) = self.per_client.get_mut(&key.client) {
            *count -= n;
            if *count == 0 {
                self.per_client.remove(&key.client);
            }
        }
        self.mappings -= n;
        self.count(key, e, -1);
    }

    /// Every endpoint of `client` for `protocol`, in internal-port order.
    pub fn keys_of(&self, client: IpAddr, protocol: Protocol) -> Vec<EndpointKey> {
        let lo = EndpointKey {
            client,
            protocol,
            internal_port: 0,
        };
        let hi = EndpointKey {
            internal_port: u16::MAX,
            ..lo
        };
        self.endpoints.range(lo..=hi).map(|(k, _)| *k).collect()
    }

    /// The earliest expiry, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        let map = self.map_expiry.first().map(|(t, _)| *t);
        let peer = self.peer_expiry.first().map(|(t, _)| *t);
        map.into_iter().chain(peer).min().map(Timestamp::from)
    }

    /// The mappings whose lifetime ends at or before `now`, earliest first (still in the
    /// table: the engine removes them, so that their kernel elements are staged too).
    pub fn expired(&self, now: Timestamp) -> Vec<MappingId> {
        let now = ExpiresAt::from(now);
        let maps = self
            .map_expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|&(t, key)| (t, MappingId { key, remote: None }));
        let peers = self
            .peer_expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied();
        // In the order one set of (expiry, id) gave: by time, then id (a MAP before its PEERs).
        let mut all: Vec<(ExpiresAt, MappingId)> = maps.chain(peers).collect();
        all.sort_unstable();
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// All endpoints, ordered by client, protocol, internal port.
    pub fn iter(&self) -> impl Iterator<Item = (&EndpointKey, &Endpoint)> {
        self.endpoints.iter().map(|(k, e)| (k, &**e))
    }

    /// The endpoints after `key` (all of them for `None`), in the order of [`Self::iter`]:
    /// where a walk over the table that was put down resumes.
    pub fn iter_after(
        &self,
        key: Option<&EndpointKey>,
    ) -> impl Iterator<Item = (&EndpointKey, &Endpoint)> {
        let from = match key {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.endpoints
            .range((from, Bound::Unbounded))
            .map(|(k, e)| (k, &**e))
    }

    /// Remove everything; returns what was there.
    pub fn clear(&mut self) -> Vec<(EndpointKey, Endpoint)> {
        let all = std::mem::take(&mut self.endpoints);
        *self = MappingTable::default();
        all.into_iter().map(|(k, e)| (k, *e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mapping::{MapMapping, Owner};
    use std::net::Ipv4Addr;

    #[test]
    fn expiries_order_as_timestamps_in_28_bytes_an_entry() {
        let times = [
            0,
            1,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            1 << 40,
            u64::MAX,
        ];
        for w in times.windows(2) {
            let (a, b) = (Timestamp::from_millis(w[0]), Timestamp::from_millis(w[1]));
            assert!(ExpiresAt::from(a) < ExpiresAt::from(b), "{a:?} {b:?}");
            assert_eq!(Timestamp::from(ExpiresAt::from(a)), a);
        }
        assert_eq!(std::mem::size_of::<(ExpiresAt, EndpointKey)>(), 28);
    }

    fn key(host: u8, port: u16) -> EndpointKey {
        EndpointKey {
            client: IpAddr::V4(Ipv4Addr::new(192, 168, 88, host)),
            protocol: Protocol::Tcp,
            internal_port: port,
        }
    }

    fn endpoint(ext: u16, expires: u64) -> Endpoint {
        Endpoint {
            external_port: ext,
            map: Some(MapMapping {
                owner: Owner::NatPmp,
                lifetime: 60,
                expires: Timestamp::from_secs(expires),
                filters: Default::default(),
                description: None,
            }),
            peers: Default::default(),
        }
    }

    #[test]
    fn put_keeps_every_index_in_step() {
        let mut t = MappingTable::default();
        t.put(key(10, 80), Some(endpoint(8080, 60)));
        t.put(key(10, 81), Some(endpoint(8081, 30)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.count_for(key(10, 0).client), 2);
        assert_eq!(t.holder(Protocol::Tcp, 8080), Some(&key(10, 80)));
        assert!(!t.port_available(key(11, 0).client, Protocol::Udp, 8080));
        assert!(t.port_available(key(10, 0).client, Protocol::Udp, 8080));
        assert_eq!(t.next_expiry(), Some(Timestamp::from_secs(30)));
        // Replace: new port and expiry, the old ones are gone from the indexes.
        let old = t.put(key(10, 81), Some(endpoint(9000, 90))).unwrap();
        assert_eq!(old.external_port, 8081);
        assert_eq!(t.holder(Protocol::Tcp, 8081), None);
        assert!(!t.held_ports.get(8081));
        assert!(t.held_ports.get(9000));
        assert_eq!(t.expired(Timestamp::from_secs(60)).len(), 1);
        t.put(key(10, 80), None);
        t.put(key(10, 81), None);
        assert!(t.is_empty());
        assert_eq!(t.count_for(key(10, 0).client), 0);
        assert_eq!(t.next_expiry(), None);
    }
}
