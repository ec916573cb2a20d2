//! Microseconds per element for `NftForwarder::apply`: N single-change transactions against
//! one N-change transaction, for N = 100, 1000, 10000 (adds, then removes), for plain
//! `inbound` elements, `inbound_filtered` boxes (the interval map), IPv6 `pinholes` and
//! `pinholes_filtered` boxes (the interval set, with 44-byte keys). Sizes can be given on the
//! command line: `... --example bench_apply -- 10 100`.
//!
//! Run as root: `cargo run -p natpmp-pcp-nft --example bench_apply`. It works in a thread that
//! unshares its network namespace first, so the host's ruleset is never touched.

use natpmp_pcp_core::kernel::{Change, Element, Forwarder, RemoteRange, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Filtered,
    Pinhole,
    FilteredPinhole,
}

fn elements(kind: Kind, n: usize) -> Vec<Element> {
    (0..n)
        .map(|i| {
            let protocol = if i % 2 == 0 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            let external_port = 1024 + (i / 2) as u16;
            let internal = SocketAddrV4::new(
                Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
                external_port,
            );
            let host = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16);
            let internal6 = SocketAddrV6::new(host, external_port, 0, 0);
            match kind {
                Kind::Plain => Element::Inbound {
                    protocol,
                    external_port,
                    internal,
                },
                // A /24 of remotes, all ports: a FILTER's usual box.
                Kind::Filtered => Element::FilteredInbound {
                    protocol,
                    external_port,
                    remote: RemoteRange {
                        first_addr: Ipv4Addr::new(198, 51, 100, 0),
                        last_addr: Ipv4Addr::new(198, 51, 100, 255),
                        first_port: 0,
                        last_port: 65535,
                    },
                    internal,
                },
                Kind::Pinhole => Element::Pinhole {
                    protocol,
                    internal: internal6,
                },
                // A /64 of remotes, all ports.
                Kind::FilteredPinhole => Element::FilteredPinhole {
                    protocol,
                    internal: internal6,
                    remote: RemoteRange {
                        first_addr: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0),
                        last_addr: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, !0, !0, !0, !0),
                        first_port: 0,
                        last_port: 65535,
                    },
                },
            }
        })
        .collect()
}

fn per_element(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn bench(f: &mut NftForwarder, kind: Kind, n: usize) {
    let elements = elements(kind, n);
    let adds: Vec<Change> = elements
        .iter()
        .map(|&element| Change::Add {
            element,
            timeout: Duration::from_secs(3600),
        })
        .collect();
    let removes: Vec<Change> = elements.iter().copied().map(Change::Remove).collect();

    let t = Instant::now();
    for c in &adds {
        f.apply(std::slice::from_ref(c)).expect("single add");
    }
    let single_add = t.elapsed();
    let t = Instant::now();
    for c in &removes {
        f.apply(std::slice::from_ref(c)).expect("single remove");
    }
    let single_remove = t.elapsed();

    let t = Instant::now();
    f.apply(&adds).expect("batch add");
    let batch_add = t.elapsed();
    assert_eq!(f.list().expect("list").len(), n);
    let t = Instant::now();
    f.apply(&removes).expect("batch remove");
    let batch_remove = t.elapsed();

    println!(
        "{n:>6} | {:>12.1} {:>12.1} | {:>12.1} {:>12.1}",
        per_element(single_add, n),
        per_element(single_remove, n),
        per_element(batch_add, n),
        per_element(batch_remove, n),
    );
}

fn main() {
    std::thread::spawn(|| {
        // SAFETY: only this thread's network namespace changes.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "unshare(CLONE_NEWNET): {} (run as root)",
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
        let sizes: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| a.parse().expect("sizes are numbers"))
            .collect();
        let sizes = if sizes.is_empty() {
            vec![100, 1000, 10000]
        } else {
            sizes
        };
        let mut f = NftForwarder::new().expect("netlink socket");
        f.prepare(&TableSpec::new("wan0")).expect("prepare");
        for (kind, what) in [
            (Kind::Plain, "inbound elements"),
            (Kind::Filtered, "inbound_filtered boxes (a /24 each)"),
            (Kind::Pinhole, "pinholes"),
            (
                Kind::FilteredPinhole,
                "pinholes_filtered boxes (a /64 each)",
            ),
        ] {
            println!("\nmicroseconds per element: {what}");
            println!("     N |     1/tx add  1/tx remove |     N/tx add  N/tx remove");
            for &n in &sizes {
                bench(&mut f, kind, n);
            }
        }
        f.teardown().expect("teardown");
    })
    .join()
    .expect("benchmark thread");
}
