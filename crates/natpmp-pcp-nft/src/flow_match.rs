//! Which conntrack entries are flows of the elements just removed, at one lookup per entry.
//!
//! The conntrack cleaner dumps the whole conntrack table and keeps the entries that belong to
//! an element it was given (`Entry::belongs_to`). Asking every element of every entry costs
//! entries × elements: on a router with 100 000 flows, a pass with 5 000 removed elements was
//! 5 × 10^8 comparisons, far past the cleaner's bound of a few passes of ~11 ms
//! (`examples/bench_flow_match.rs` prints both). Every flow that belongs to an element has the
//! element's internal endpoint as its reply's source (a flow into the host) or its original
//! source (a flow out of it), with the element's protocol; so the elements are indexed by
//! that, and an entry asks only those at its two endpoints.

use crate::conntrack::Entry;
use natpmp_pcp_core::kernel::Element;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Removed elements, by (protocol number, internal endpoint).
pub struct RemovedElements<'a> {
    by_internal: HashMap<(u8, SocketAddr), Vec<&'a Element>>,
}

impl<'a> RemovedElements<'a> {
    pub fn new(elements: &'a [Element]) -> RemovedElements<'a> {
        let mut by_internal: HashMap<_, Vec<&Element>> = HashMap::with_capacity(elements.len());
        for e in elements {
            by_internal
                .entry((e.protocol().number(), e.internal()))
                .or_default()
                .push(e);
        }
        RemovedElements { by_internal }
    }

    /// Whether `entry` is a flow of one of the elements (`Entry::belongs_to`).
    pub fn own(&self, entry: &Entry) -> bool {
        let proto = entry.orig.proto;
        let into_host = SocketAddr::new(entry.reply.src, entry.reply.sport);
        let out_of_host = SocketAddr::new(entry.orig.src, entry.orig.sport);
        let asks = |at: SocketAddr| {
            self.by_internal
                .get(&(proto, at))
                .is_some_and(|candidates| candidates.iter().any(|g| entry.belongs_to(g)))
        };
        asks(into_host) || (out_of_host != into_host && asks(out_of_host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Tuple;
    use natpmp_pcp_core::kernel::RemoteRange;
    use natpmp_pcp_core::Protocol;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    /// A small deterministic generator: few addresses and ports, so that entries and elements
    /// meet often in every way `belongs_to` knows.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
        fn v4(&mut self) -> Ipv4Addr {
            Ipv4Addr::new(192, 168, 88, 10 + self.below(2) as u8)
        }
        fn v6(&mut self) -> Ipv6Addr {
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10 + self.below(2) as u16)
        }
        fn port(&mut self) -> u16 {
            [80, 443][self.below(2) as usize]
        }
        fn protocol(&mut self) -> Protocol {
            if self.below(2) == 0 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            }
        }
        fn element(&mut self) -> Element {
            let protocol = self.protocol();
            let v4 = SocketAddrV4::new(self.v4(), self.port());
            let v6 = SocketAddrV6::new(self.v6(), self.port(), 0, 0);
            match self.below(5) {
                0 => Element::Inbound {
                    protocol,
                    external_port: self.port(),
                    internal: v4,
                },
                1 => Element::Outbound {
                    protocol,
                    internal: v4,
                    external: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), self.port()),
                },
                2 => Element::FilteredInbound {
                    protocol,
                    external_port: self.port(),
                    internal: v4,
                    // The remote's network, port 80 only.
                    remote: RemoteRange {
                        first_addr: Ipv4Addr::new(198, 51, 100, 0),
                        last_addr: Ipv4Addr::new(198, 51, 100, 255),
                        first_port: 80,
                        last_port: 80,
                    },
                },
                3 => Element::Pinhole {
                    protocol,
                    internal: v6,
                },
                _ => Element::FilteredPinhole {
                    protocol,
                    internal: v6,
                    remote: RemoteRange {
                        first_addr: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0),
                        last_addr: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0xff),
                        first_port: 80,
                        last_port: 80,
                    },
                },
            }
        }
        fn entry(&mut self) -> Entry {
            let proto = self.protocol().number();
            let (lan, remote, external): (IpAddr, IpAddr, IpAddr) = if self.below(2) == 0 {
                (
                    self.v4().into(),
                    Ipv4Addr::new(198, 51, 100, 9).into(),
                    Ipv4Addr::new(203, 0, 113, 5).into(),
                )
            } else {
                let host = self.v6();
                (
                    host.into(),
                    Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 9).into(),
                    host.into(),
                )
            };
            let (lan_port, ext_port, remote_port) = (self.port(), self.port(), self.port());
            let tuple = |src, dst, sport, dport| Tuple {
                src,
                dst,
                proto,
                sport,
                dport,
            };
            let (orig, reply) = if self.below(2) == 0 {
                // From the internet into the host.
                (
                    tuple(remote, external, remote_port, ext_port),
                    tuple(lan, remote, lan_port, remote_port),
                )
            } else {
                // From the host out.
                (
                    tuple(lan, remote, lan_port, remote_port),
                    tuple(remote, external, remote_port, ext_port),
                )
            };
            Entry {
                orig,
                reply,
                id: None,
                zone: None,
                mark: 0,
            }
        }
    }

    #[test]
    fn the_index_finds_exactly_the_entries_that_belong_to_some_element() {
        let mut g = Lcg(7);
        let (mut owned, mut total) = (0, 0);
        for _ in 0..200 {
            let gone: Vec<Element> = (0..1 + g.below(8)).map(|_| g.element()).collect();
            let index = RemovedElements::new(&gone);
            for _ in 0..50 {
                let entry = g.entry();
                let naive = gone.iter().any(|e| entry.belongs_to(e));
                assert_eq!(index.own(&entry), naive, "{entry:?} against {gone:?}");
                owned += usize::from(naive);
                total += 1;
            }
        }
        // Both answers occur often, so the comparison means something.
        assert!(
            owned > total / 20 && owned < total - total / 20,
            "{owned} of {total}"
        );
    }

    #[test]
    fn no_elements_own_nothing() {
        let mut g = Lcg(1);
        let index = RemovedElements::new(&[]);
        assert!((0..100).all(|_| !index.own(&g.entry())));
    }
}
