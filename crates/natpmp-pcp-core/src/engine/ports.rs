//! External port allocation (IPv4): the suggested port when policy and the table allow it;
//! otherwise a wholly free port from the configured range, searched from a pseudo-random start
//! so ports are not predictable from outside (a bitset scan: at most 1024 word reads, even
//! when full); and when none is wholly free, a companion port the client itself holds.

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

/// Why a suggested port cannot be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Reserved, or outside `port-range`: it will never be given.
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

    /// Whether `client` may have `port` for `protocol` now.
    pub fn check(
        &self,
        table: &MappingTable,
        client: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Result<(), Unusable> {
        if reserved(port) || !self.in_range(port) {
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
    ) -> Option<u16> {
        if self.check(table, client, protocol, suggested).is_ok() {
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
            .filter_map(|k| table.get(&k).map(|e| e.external_port))
            .find(|&p| self.check(table, client, protocol, p).is_ok())
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

    #[test]
    fn allocator_stays_inside_a_tiny_range_and_reports_exhaustion() {
        let table = MappingTable::default();
        let mut alloc = PortAllocator::new(5349..=5352, 7);
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10));
        for _ in 0..50 {
            let p = alloc.allocate(&table, client, Protocol::Tcp, 0).unwrap();
            assert!(p == 5349 || p == 5352, "got {p}");
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
                        filters: Vec::new(),
                        description: None,
                    }),
                    peers: Vec::new(),
                }),
            );
        }
        let other = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 11));
        assert_eq!(alloc.allocate(&table, other, Protocol::Udp, 0), None);
        assert_eq!(
            alloc.check(&table, other, Protocol::Udp, 5349),
            Err(Unusable::Held)
        );
        assert_eq!(
            alloc.check(&table, other, Protocol::Udp, 5351),
            Err(Unusable::Forbidden)
        );
        // The holder itself may still take its companion UDP ports.
        let p = alloc.allocate(&table, client, Protocol::Udp, 0).unwrap();
        assert!(p == 5349 || p == 5352);
    }
}
