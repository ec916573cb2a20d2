//! External port allocation (IPv4): the suggested port when policy and the table allow it;
//! otherwise a wholly free port from the ports the policy allows, searched from a
//! pseudo-random start so ports are not predictable from outside (a bitset scan: at most 1024
//! word reads, even when full); and when none is wholly free, a companion port the client
//! itself holds.
//!
//! The policy of one request ([`PortPolicy`]): the external ports the access rules allow it,
//! inside `port-range`, minus the ports the router needs (`reserved-ports` and its own bound
//! sockets), which are never handed out.

use super::access::PortRange;
use super::table::MappingTable;
use crate::addr::Protocol;
use std::net::IpAddr;
use std::ops::RangeInclusive;

/// A 65536-bit set (8 KiB), allocated on first use. Lets the allocator find a wholly free port
/// 64 ports per step, so a flood against a nearly full range cannot make each request scan
/// 64k hash entries.
#[derive(Default)]
pub struct PortBits(Vec<u64>);

impl PortBits {
    pub fn set(&mut self, port: u16, on: bool) {
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

    pub fn get(&self, port: u16) -> bool {
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

/// Ports never handed out: NAT-PMP/PCP's own (RFC 6887 §11.3 makes 5350/5351 a MUST for
/// UDP; natpmpd keeps them for TCP too, so the companion rule stays simple) and 0.
pub fn reserved(port: u16) -> bool {
    matches!(port, 0 | 5350 | 5351)
}

/// What one request's external port must satisfy besides being free.
#[derive(Clone, Copy)]
pub struct PortPolicy<'a> {
    /// The ports the access rules allow this request, already inside `port-range`: sorted,
    /// disjoint ranges.
    pub allowed: &'a [PortRange],
    /// The ports of this protocol the router needs.
    pub unavailable: &'a PortBits,
}

impl PortPolicy<'_> {
    fn permits(&self, port: u16) -> bool {
        !reserved(port)
            && !self.unavailable.get(port)
            && self.allowed.iter().any(|r| r.contains(port))
    }
}

/// Why a suggested port cannot be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Reserved, needed by the router, outside `port-range` or denied by the access rules: it
    /// will not be given (until the configuration or the router's own sockets change).
    Forbidden,
    /// Another mapping holds it (or its companion); the holder's key tells whose.
    Held,
}

pub struct PortAllocator {
    /// The configured range; `None` when it is empty (start > end), so nothing is handed out.
    range: Option<(u16, u16)>,
    state: u64,
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>, seed: u64) -> PortAllocator {
        let (lo, hi) = (*range.start(), *range.end());
        PortAllocator {
            // Never widened or moved: a port outside the configured range is never handed out.
            range: (lo <= hi).then_some((lo, hi)),
            // xorshift must not start at 0.
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The configured range, as the one range a request may use when there are no access
    /// rules.
    pub fn range(&self) -> Option<PortRange> {
        self.range.map(|(lo, hi)| PortRange::new(lo, hi))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Whether `client` may have `port` for `protocol` now.
    pub fn check(
        &self,
        table: &MappingTable,
        client: IpAddr,
        protocol: Protocol,
        port: u16,
        policy: PortPolicy<'_>,
    ) -> Result<(), Unusable> {
        if !policy.permits(port) {
            Err(Unusable::Forbidden)
        } else if !table.port_available(client, protocol, port) {
            Err(Unusable::Held)
        } else {
            Ok(())
        }
    }

    /// A port for `client`/`protocol`, preferring `suggested`; `None` when none is free.
    pub fn allocate(
        &mut self,
        table: &MappingTable,
        client: IpAddr,
        protocol: Protocol,
        suggested: u16,
        policy: PortPolicy<'_>,
    ) -> Option<u16> {
        if self
            .check(table, client, protocol, suggested, policy)
            .is_ok()
        {
            return Some(suggested);
        }
        // First a port nobody holds in either protocol, from a random start, wrapping once: the
        // ranges from the start up, then those below it. The start is drawn among the allowed
        // ports themselves (not the span around them), so every allowed port is as likely.
        let total: u64 = policy
            .allowed
            .iter()
            .map(|r| u64::from(r.last - r.first) + 1)
            .sum();
        if total == 0 {
            return None;
        }
        let mut k = self.next_random() % total;
        let mut start = 0;
        for r in policy.allowed {
            let len = u64::from(r.last - r.first) + 1;
            if k < len {
                start = r.first + k as u16;
                break;
            }
            k -= len;
        }
        let wholly_free = |p: u16| !reserved(p) && !policy.unavailable.get(p);
        let from_start = policy.allowed.iter().filter_map(|r| {
            let first = r.first.max(start);
            (first <= r.last).then_some((first, r.last))
        });
        let below_start = policy.allowed.iter().filter_map(|r| {
            let last = r.last.min(start.saturating_sub(1));
            (r.first < start).then_some((r.first, last))
        });
        if let Some(p) = from_start
            .chain(below_start)
            .find_map(|(from, to)| table.held_ports.first_clear(from, to, wholly_free))
        {
            return Some(p);
        }
        // Then the companion ports this client itself holds in the other protocol: with every
        // port taken, those are the only ones the companion rule still lets it have.
        table
            .keys_of(client, protocol.companion())
            .into_iter()
            .filter_map(|k| table.get(&k).map(|e| e.external_port))
            .find(|&p| self.check(table, client, protocol, p, policy).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mapping::{Endpoint, EndpointKey, MapMapping, Owner};
    use crate::time::Timestamp;
    use std::net::Ipv4Addr;

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

    /// The policy of a request with no access rules and nothing the router needs.
    fn open(alloc: &PortAllocator) -> (Vec<PortRange>, PortBits) {
        (alloc.range().into_iter().collect(), PortBits::default())
    }

    fn policy<'a>(p: &'a (Vec<PortRange>, PortBits)) -> PortPolicy<'a> {
        PortPolicy {
            allowed: &p.0,
            unavailable: &p.1,
        }
    }

    #[test]
    fn allocator_takes_only_allowed_ports_the_router_does_not_need() {
        let table = MappingTable::default();
        let mut alloc = PortAllocator::new(1024..=65535, 3);
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10));
        let mut unavailable = PortBits::default();
        unavailable.set(2001, true);
        let p = (
            vec![PortRange::new(2000, 2002), PortRange::new(3000, 3000)],
            unavailable,
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(
                alloc
                    .allocate(&table, client, Protocol::Udp, 0, policy(&p))
                    .unwrap(),
            );
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![2000, 2002, 3000]);
        // A suggestion outside the allowed ports, or one the router needs, gets another port.
        for suggested in [2001, 2500, 3001] {
            assert_eq!(
                alloc.check(&table, client, Protocol::Udp, suggested, policy(&p)),
                Err(Unusable::Forbidden)
            );
            let got = alloc
                .allocate(&table, client, Protocol::Udp, suggested, policy(&p))
                .unwrap();
            assert!([2000, 2002, 3000].contains(&got), "{got}");
        }
        assert_eq!(
            alloc.allocate(&table, client, Protocol::Udp, 3000, policy(&p)),
            Some(3000)
        );
        // Nothing allowed: nothing given.
        let none = (Vec::new(), PortBits::default());
        assert_eq!(
            alloc.allocate(&table, client, Protocol::Udp, 0, policy(&none)),
            None
        );
    }

    #[test]
    fn allocator_stays_inside_a_tiny_range_and_reports_exhaustion() {
        let table = MappingTable::default();
        let mut alloc = PortAllocator::new(5349..=5352, 7);
        let p = open(&alloc);
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10));
        for _ in 0..50 {
            let port = alloc
                .allocate(&table, client, Protocol::Tcp, 0, policy(&p))
                .unwrap();
            assert!(port == 5349 || port == 5352, "got {port}");
        }
        let mut table = MappingTable::default();
        for (i, port) in [5349u16, 5352].into_iter().enumerate() {
            table.put(
                EndpointKey {
                    client,
                    protocol: Protocol::Tcp,
                    internal_port: i as u16 + 1,
                },
                Some(Endpoint {
                    external_port: port,
                    map: Some(MapMapping {
                        owner: Owner::NatPmp,
                        lifetime: 60,
                        expires: Timestamp::from_secs(60),
                        filters: Default::default(),
                        description: None,
                    }),
                    peers: Default::default(),
                }),
            );
        }
        let other = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 11));
        assert_eq!(
            alloc.allocate(&table, other, Protocol::Udp, 0, policy(&p)),
            None
        );
        assert_eq!(
            alloc.check(&table, other, Protocol::Udp, 5349, policy(&p)),
            Err(Unusable::Held)
        );
        assert_eq!(
            alloc.check(&table, other, Protocol::Udp, 5351, policy(&p)),
            Err(Unusable::Forbidden)
        );
        // The holder itself may still take its companion UDP ports.
        let port = alloc
            .allocate(&table, client, Protocol::Udp, 0, policy(&p))
            .unwrap();
        assert!(port == 5349 || port == 5352);
    }
}
