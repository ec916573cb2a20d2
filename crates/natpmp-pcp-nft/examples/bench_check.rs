//! Microseconds per `NftForwarder::check`, which the daemon polls every 2 seconds (and, for
//! 10000 mappings, the cost of the `list()` that follows it and of a full rebuild): with 0 and
//! 10000 mappings (its requests never return elements, so this should not matter), and with
//! an operator table of 50 chains and 2000 rules beside ours (the chain dump cannot be
//! filtered by table in the kernel, so other tables' chains are read and skipped).
//!
//! Run as root: `cargo run --release -p natpmp-pcp-nft --example bench_check`. It works in a
//! thread that unshares its network namespace first, so the host's ruleset is never touched.

use natpmp_pcp_core::kernel::{Change, Element, Forwarder, Health, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Rounds of `check()` per measurement, and how many mappings; both can be given on the
/// command line: `... --example bench_check -- 200 1000`.
const ROUNDS: u32 = 2000;
const MAPPINGS: usize = 10_000;

/// `n` plain mappings: an `inbound` and an `outbound` element each.
fn forwards(n: usize) -> Vec<Change> {
    (0..n)
        .flat_map(|i| {
            let port = 1024 + i as u16;
            let internal = SocketAddrV4::new(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), port);
            let timeout = Duration::from_secs(3600);
            [
                Change::Add {
                    element: Element::Inbound {
                        protocol: Protocol::Udp,
                        external_port: port,
                        internal,
                    },
                    timeout,
                },
                Change::Add {
                    element: Element::Outbound {
                        internal,
                        protocol: Protocol::Udp,
                        external: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), port),
                    },
                    timeout,
                },
            ]
        })
        .collect()
}

fn measure(f: &mut NftForwarder, rounds: u32, label: &str) {
    assert_eq!(f.check().expect("check"), Health::Intact);
    let t = Instant::now();
    for _ in 0..rounds {
        assert_eq!(f.check().expect("check"), Health::Intact);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("{label:<44} {us:>8.1} us per check()");
}

fn operator_table() -> String {
    let mut s = String::from("table ip operator {\n");
    for c in 0..50 {
        s.push_str(&format!("  chain c{c} {{\n"));
        for r in 0..40 {
            s.push_str(&format!("    ip saddr 10.{c}.{r}.0/24 counter accept\n"));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

fn load(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to nft");
    assert!(child.wait().expect("wait for nft").success());
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
        let mut args = std::env::args()
            .skip(1)
            .map(|a| a.parse().expect("a number"));
        let rounds = args.next().map_or(ROUNDS, |r: usize| r as u32);
        let n = args.next().unwrap_or(MAPPINGS);
        let mut f = NftForwarder::new().expect("netlink socket");
        f.prepare(&TableSpec::new("wan0")).expect("prepare");
        measure(&mut f, rounds, "0 mappings");
        f.apply(&forwards(n)).expect("add the mappings");
        measure(&mut f, rounds, &format!("{n} mappings"));
        // The other half of the daemon's drift check: listing every element to compare.
        let t = Instant::now();
        for _ in 0..20 {
            assert_eq!(f.list().expect("list").len(), 2 * n);
        }
        println!(
            "{:<44} {:>8.1} ms per list()",
            format!("{n} mappings ({} elements)", 2 * n),
            t.elapsed().as_secs_f64() * 1e3 / 20.0
        );
        // What a repair after `nft flush ruleset` costs: reload the table, re-add everything.
        let t = Instant::now();
        f.prepare(&TableSpec::new("wan0")).expect("prepare");
        f.apply(&forwards(n)).expect("re-add the mappings");
        println!(
            "{:<44} {:>8.1} ms per rebuild",
            format!("{n} mappings"),
            t.elapsed().as_secs_f64() * 1e3
        );
        load(&operator_table());
        measure(
            &mut f,
            rounds,
            &format!("{n} mappings + operator table (2000 rules)"),
        );
        f.teardown().expect("teardown");
    })
    .join()
    .expect("benchmark thread");
}
