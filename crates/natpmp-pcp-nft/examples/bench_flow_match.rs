//! Finding the flows of removed elements in a conntrack dump: asking every removed element of
//! every entry (as the conntrack cleaner did), against the index of `RemovedElements`, for
//! tables of flows and batches of removals of several sizes. Both must pick the same
//! entries; the figures are milliseconds per pass, and the ratio is taken in the same run.
//!
//! No root needed, no kernel: the entries are built in memory, as a dump would parse them.
//! `cargo run --release -p natpmp-pcp-nft --example bench_flow_match`

use natpmp_pcp_core::kernel::Element;
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::{ConntrackEntry, ConntrackTuple, RemovedElements};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Instant;

const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

/// The LAN host and port of mapping `i` (250 hosts, ports from 10000).
fn internal(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(192, 168, 88, 2 + (i % 250) as u8),
        10_000 + (i / 250) as u16,
    )
}

fn external_port(i: usize) -> u16 {
    1024 + i as u16
}

/// The inbound and outbound elements of mapping `i`.
fn elements(i: usize) -> [Element; 2] {
    let protocol = Protocol::Udp;
    [
        Element::Inbound {
            protocol,
            external_port: external_port(i),
            internal: internal(i),
        },
        Element::Outbound {
            protocol,
            internal: internal(i),
            external: SocketAddrV4::new(EXTERNAL, external_port(i)),
        },
    ]
}

/// A flow from the internet into mapping `i`'s host, from remote port `k`.
fn flow(i: usize, k: u16) -> ConntrackEntry {
    let tuple = |src: IpAddr, dst: IpAddr, sport, dport| ConntrackTuple {
        src,
        dst,
        proto: 17,
        sport,
        dport,
    };
    let host = internal(i);
    ConntrackEntry {
        orig: tuple(REMOTE.into(), EXTERNAL.into(), k, external_port(i)),
        reply: tuple((*host.ip()).into(), REMOTE.into(), host.port(), k),
        id: None,
        zone: None,
        mark: 0,
    }
}

fn main() {
    println!("flows of removed elements in a conntrack dump, ms per pass (best of 3)");
    println!(
        "{:>8} {:>8} | {:>12} {:>12} {:>8}",
        "flows", "removed", "every elem.", "index", "ratio"
    );
    for (flows, removed) in [
        (1_000, 100),
        (10_000, 1_000),
        (100_000, 1_000),
        (100_000, 5_000),
    ] {
        // `flows` flows over 20 000 mappings; the first `removed` mappings are removed.
        let table: Vec<ConntrackEntry> = (0..flows)
            .map(|n| flow(n % 20_000, 40_000 + (n / 20_000) as u16))
            .collect();
        let gone: Vec<Element> = (0..removed).flat_map(elements).collect();
        let time = |pass: &dyn Fn() -> usize| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let n = pass();
                    (t.elapsed(), n)
                })
                .min()
                .unwrap()
        };
        let (naive, found_naive) = time(&|| {
            table
                .iter()
                .filter(|e| gone.iter().any(|g| e.belongs_to(g)))
                .count()
        });
        let (indexed, found) = time(&|| {
            let index = RemovedElements::new(&gone);
            table.iter().filter(|e| index.own(e)).count()
        });
        assert_eq!(found, found_naive, "the index must find the same flows");
        assert!(found > 0);
        println!(
            "{flows:>8} {removed:>8} | {:>12.3} {:>12.3} {:>7.0}x   ({found} flows found)",
            naive.as_secs_f64() * 1e3,
            indexed.as_secs_f64() * 1e3,
            naive.as_secs_f64() / indexed.as_secs_f64()
        );
    }
}
