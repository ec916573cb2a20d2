//! Microseconds per element for `NftForwarder::apply`: N single-change transactions against
//! one N-change transaction, for N = 100, 1000, 10000 (adds, then removes).
//!
//! Run as root: `cargo run -p natpmp-pcp-nft --example bench_apply`. It works in a thread that
//! unshares its network namespace first, so the host's ruleset is never touched.

use natpmp_pcp_core::forward::{Change, Forward, Protocol};
use natpmp_pcp_nft::{Forwarder, NftForwarder};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn forwards(n: usize) -> Vec<Forward> {
    (0..n)
        .map(|i| Forward {
            protocol: if i % 2 == 0 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            external_addr: Ipv4Addr::new(203, 0, 113, 1),
            external_port: 1024 + (i / 2) as u16,
            internal_addr: Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
            internal_port: 1024 + (i / 2) as u16,
            timeout: Duration::from_secs(3600),
        })
        .collect()
}

fn per_element(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn bench(f: &mut NftForwarder, n: usize) {
    let fw = forwards(n);
    let adds: Vec<Change> = fw.iter().copied().map(Change::Add).collect();
    let removes: Vec<Change> = fw.iter().copied().map(Change::Remove).collect();

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
        let mut f = NftForwarder::new().expect("netlink socket");
        f.prepare("wan0").expect("prepare");
        for clearing in [true, false] {
            f.set_conntrack_clearing(clearing);
            println!(
                "\nmicroseconds per forward (2 map elements each); conntrack clearing {}",
                if clearing { "on (default)" } else { "off" }
            );
            println!("     N |     1/tx add  1/tx remove |     N/tx add  N/tx remove");
            for n in [100, 1000, 10000] {
                bench(&mut f, n);
            }
        }
        f.teardown().expect("teardown");
    })
    .join()
    .expect("benchmark thread");
}
