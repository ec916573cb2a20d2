//! The mapping table: the engine's truth about which client holds which external port.
//!
//! Three indexes kept in step, so every operation is O(log n) whatever the number of
//! mappings: by internal endpoint (client, protocol, internal port) — the key NAT-PMP requests
//! name; by external endpoint (protocol, external port) — for allocation and the companion
//! rule; and an ordered expiry index, so expiry never scans the table.

use crate::forward::Protocol;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// What a NAT-PMP request names: the client's address, the protocol and its internal port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InternalKey {
    pub client: Ipv4Addr,
    pub protocol: Protocol,
    pub internal_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub key: InternalKey,
    pub external_port: u16,
    /// Lifetime granted by the last request, seconds.
    pub lifetime: u32,
    pub expires: Timestamp,
}

#[derive(Default)]
pub struct MappingTable {
    by_internal: BTreeMap<InternalKey, Mapping>,
    by_external: HashMap<(Protocol, u16), InternalKey>,
    expiry: BTreeSet<(Timestamp, InternalKey)>,
    per_client: HashMap<Ipv4Addr, usize>,
}

impl MappingTable {
    pub fn len(&self) -> usize {
        self.by_internal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_internal.is_empty()
    }

    pub fn get(&self, key: &InternalKey) -> Option<&Mapping> {
        self.by_internal.get(key)
    }

    /// Who holds `protocol` external `port`, if anyone.
    pub fn holder(&self, protocol: Protocol, port: u16) -> Option<&InternalKey> {
        self.by_external.get(&(protocol, port))
    }

    pub fn count_for(&self, client: Ipv4Addr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }

    /// Whether `client` may take `protocol` external `port`: nobody holds it, and the same
    /// port of the other protocol is free or held by `client` itself (the companion-port
    /// reservation of RFC 6886 §3.3).
    pub fn port_available(&self, client: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        if self.by_external.contains_key(&(protocol, port)) {
            return false;
        }
        match self.by_external.get(&(protocol.companion(), port)) {
            None => true,
            Some(holder) => holder.client == client,
        }
    }

    /// Insert a new mapping. The caller has checked the port is available and the key absent.
    pub fn insert(&mut self, mapping: Mapping) {
        let key = mapping.key;
        debug_assert!(!self.by_internal.contains_key(&key));
        self.by_external
            .insert((key.protocol, mapping.external_port), key);
        self.expiry.insert((mapping.expires, key));
        *self.per_client.entry(key.client).or_insert(0) += 1;
        self.by_internal.insert(key, mapping);
    }

    /// Give an existing mapping a new lifetime and expiry. Returns the old mapping.
    pub fn renew(
        &mut self,
        key: &InternalKey,
        lifetime: u32,
        expires: Timestamp,
    ) -> Option<Mapping> {
        let m = self.by_internal.get_mut(key)?;
        let old = *m;
        self.expiry.remove(&(old.expires, *key));
        m.lifetime = lifetime;
        m.expires = expires;
        self.expiry.insert((expires, *key));
        Some(old)
    }

    pub fn remove(&mut self, key: &InternalKey) -> Option<Mapping> {
        let m = self.by_internal.remove(key)?;
        self.by_external.remove(&(key.protocol, m.external_port));
        self.expiry.remove(&(m.expires, *key));
        if let Some(n) = self.per_client.get_mut(&key.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&key.client);
            }
        }
        Some(m)
    }

    /// Every mapping of `client` for `protocol`, in internal-port order.
    pub fn keys_of(&self, client: Ipv4Addr, protocol: Protocol) -> Vec<InternalKey> {
        let lo = InternalKey {
            client,
            protocol,
            internal_port: 0,
        };
        let hi = InternalKey {
            internal_port: u16::MAX,
            ..lo
        };
        self.by_internal.range(lo..=hi).map(|(k, _)| *k).collect()
    }

    /// The earliest expiry, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Remove and return every mapping that expires at or before `now`.
    pub fn take_expired(&mut self, now: Timestamp) -> Vec<Mapping> {
        let mut out = Vec::new();
        while let Some(&(t, key)) = self.expiry.first() {
            if t > now {
                break;
            }
            if let Some(m) = self.remove(&key) {
                out.push(m);
            }
        }
        out
    }

    /// All mappings, ordered by client, protocol, internal port.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.by_internal.values()
    }

    pub fn clear(&mut self) -> Vec<Mapping> {
        let all: Vec<Mapping> = self.by_internal.values().copied().collect();
        *self = MappingTable::default();
        all
    }
}

/// Chooses external ports. The suggested port when policy and the table allow it; otherwise a
/// port from the configured range, starting the search at a pseudo-random point so ports are
/// not predictable from outside, then probing upward (expected O(1) while the range is sparse,
/// bounded by the range size when it is full).
pub struct PortAllocator {
    range: (u16, u16),
    state: u64,
}

/// Ports never handed out: NAT-PMP/PCP's own (RFC 6887 §11.3 makes 5350/5351 a MUST) and 0.
fn reserved(port: u16) -> bool {
    matches!(port, 0 | 5350 | 5351)
}

impl PortAllocator {
    pub fn new(range: std::ops::RangeInclusive<u16>, seed: u64) -> PortAllocator {
        let (lo, hi) = (*range.start(), *range.end());
        PortAllocator {
            range: (lo.max(1), hi.max(lo.max(1))),
            // xorshift must not start at 0.
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn in_range(&self, port: u16) -> bool {
        port >= self.range.0 && port <= self.range.1
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A port for `client`/`protocol`, preferring `suggested`; `None` when none is free.
    pub fn allocate(
        &mut self,
        table: &MappingTable,
        client: Ipv4Addr,
        protocol: Protocol,
        suggested: u16,
    ) -> Option<u16> {
        let usable = |p: u16| !reserved(p) && table.port_available(client, protocol, p);
        if self.in_range(suggested) && usable(suggested) {
            return Some(suggested);
        }
        let (lo, hi) = self.range;
        let size = u64::from(hi - lo) + 1;
        let start = self.next_random() % size;
        (0..size)
            .map(|i| lo + ((start + i) % size) as u16)
            .find(|&p| usable(p))
    }
}
