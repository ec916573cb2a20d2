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
    /// One bit per external port: set while either protocol of that port is held. Lets the
    /// allocator find a wholly free port 64 ports per step, so even a nearly full port range
    /// answers in microseconds (a flood cannot make each request scan 64k hash entries).
    held_ports: PortBits,
}

/// A 65536-bit set (8 KiB), allocated on first use.
#[derive(Default)]
struct PortBits(Vec<u64>);

impl PortBits {
    fn set(&mut self, port: u16, on: bool) {
        if self.0.is_empty() {
            self.0 = vec![0; 1024];
        }
        let (word, bit) = (usize::from(port) / 64, port % 64);
        if on {
            self.0[word] |= 1 << bit;
        } else {
            self.0[word] &= !(1 << bit);
        }
    }

    #[cfg(test)]
    fn get(&self, port: u16) -> bool {
        self.0
            .get(usize::from(port) / 64)
            .is_some_and(|w| w & (1 << (port % 64)) != 0)
    }

    /// The first clear bit in `from..=to` that `ok` accepts.
    fn first_clear(&self, from: u16, to: u16, ok: impl Fn(u16) -> bool) -> Option<u16> {
        let mut port = u32::from(from);
        while port <= u32::from(to) {
            let word = self.0.get(port as usize / 64).copied().unwrap_or(0);
            // Bits below `port` in this word count as set, so they are skipped.
            let free = !(word | ((1u64 << (port % 64)) - 1));
            if free == 0 {
                port = (port / 64 + 1) * 64;
                continue;
            }
            let candidate = (port / 64) * 64 + free.trailing_zeros();
            if candidate > u32::from(to) {
                return None;
            }
            if ok(candidate as u16) {
                return Some(candidate as u16);
            }
            port = candidate + 1;
        }
        None
    }
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
        self.held_ports.set(mapping.external_port, true);
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
        if !self
            .by_external
            .contains_key(&(key.protocol.companion(), m.external_port))
        {
            self.held_ports.set(m.external_port, false);
        }
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
/// wholly free port from the configured range, searched from a pseudo-random start so ports are
/// not predictable from outside (a bitset scan: at most 1024 word reads, even when full); and
/// when none is wholly free, a companion port the client itself holds.
pub struct PortAllocator {
    /// The configured range; `None` when it is empty (start > end), so nothing is handed out.
    range: Option<(u16, u16)>,
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
            // Never widened or moved: a port outside the configured range is never handed out.
            range: (lo <= hi).then_some((lo, hi)),
            // xorshift must not start at 0.
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn in_range(&self, port: u16) -> bool {
        self.range.is_some_and(|(lo, hi)| port >= lo && port <= hi)
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
        let (lo, hi) = self.range?;
        // First a port nobody holds in either protocol, from a random start, wrapping once.
        let span = u32::from(hi - lo) + 1;
        let start = lo + (self.next_random() % u64::from(span)) as u16;
        let wholly_free = |p: u16| !reserved(p);
        if let Some(p) = table
            .held_ports
            .first_clear(start, hi, wholly_free)
            .or_else(|| table.held_ports.first_clear(lo, start, wholly_free))
        {
            return Some(p);
        }
        // Then the companion ports this client itself holds in the other protocol: with every
        // port taken, those are the only ones the companion rule still lets it have.
        table
            .keys_of(client, protocol.companion())
            .into_iter()
            .filter_map(|k| table.get(&k).map(|m| m.external_port))
            .find(|&p| self.in_range(p) && usable(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits_find_the_first_clear_bit_across_words() {
        let mut bits = PortBits::default();
        for p in 1000..=1200 {
            bits.set(p, true);
        }
        assert!(bits.get(1100));
        assert_eq!(bits.first_clear(1000, 2000, |_| true), Some(1201));
        assert_eq!(bits.first_clear(1000, 1200, |_| true), None);
        assert_eq!(bits.first_clear(1000, 2000, |p| p != 1201), Some(1202));
        bits.set(1100, false);
        assert_eq!(bits.first_clear(1000, 2000, |_| true), Some(1100));
        assert_eq!(bits.first_clear(65535, 65535, |_| true), Some(65535));
    }

    #[test]
    fn allocator_stays_inside_a_tiny_range_and_reports_exhaustion() {
        let table = MappingTable::default();
        let mut alloc = PortAllocator::new(5349..=5352, 7);
        let client = Ipv4Addr::new(192, 168, 88, 10);
        for _ in 0..50 {
            let p = alloc.allocate(&table, client, Protocol::Tcp, 0).unwrap();
            assert!(p == 5349 || p == 5352, "got {p}");
        }
        let mut table = MappingTable::default();
        for (i, port) in [5349u16, 5352].into_iter().enumerate() {
            table.insert(Mapping {
                key: InternalKey {
                    client,
                    protocol: Protocol::Tcp,
                    internal_port: i as u16 + 1,
                },
                external_port: port,
                lifetime: 60,
                expires: Timestamp::from_secs(60),
            });
        }
        let other = Ipv4Addr::new(192, 168, 88, 11);
        assert_eq!(alloc.allocate(&table, other, Protocol::Udp, 0), None);
        // The holder itself may still take its companion UDP ports.
        let p = alloc.allocate(&table, client, Protocol::Udp, 0).unwrap();
        assert!(p == 5349 || p == 5352);
    }
}
