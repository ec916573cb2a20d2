//! Request-path throughput at different table sizes: how long one map request, one renewal, one
//! delete and one expiry sweep take when the table already holds N mappings.
//!
//! What is measured: the whole sans-IO request path the daemon runs for each datagram,
//! `Gateway::handle_datagrams` with one datagram per call (admission, dispatch, the NAT-PMP
//! front end, the engine, staging the kernel changes, one `apply` per batch, commit, the reply
//! bytes), and `Gateway::handle_timeout` for the expiry sweep. Only the kernel is left out: the
//! forwarder here (`Discard`) takes every transaction at no cost and only counts it.
//! `NullForwarder` is not used because its `apply` scans every element it remembers, so at N
//! mappings it would measure that stand-in rather than the request path; the real cost of the
//! kernel (a netlink round trip per batch) is what crate natpmp-pcp-nft's benchmark measures.
//!
//! The same operations are then timed for PCP MAP requests (60 bytes, one nonce per mapping)
//! on the same gateway in the same run, in alternating rounds, and the PCP/NAT-PMP ratio is
//! printed (the goal: PCP within 10% of NAT-PMP).
//!
//! Times are the thread's own CPU time (not wall time, which counts the moments the thread
//! waits for a core). `--pcp-only` runs just the comparison, small enough for
//! `valgrind --tool=callgrind`, whose instruction counts for `natpmp_round` and `pcp_round`
//! do not depend on the load of the machine.
//!
//! Run: `cargo run --release -p natpmp-pcp-core --example bench_engine`. Prints one row per N.

use natpmp_pcp_core::gateway::interfaces::{ExternalInterface, IfAddr, Interface, Interfaces};
use natpmp_pcp_core::kernel::{ApplyError, Health, KernelError, TableSpec};
use natpmp_pcp_core::{
    Change, Datagram, Element, EngineConfig, Forwarder, Gateway, GatewayConfig, Outgoing, Timestamp,
};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A kernel that takes everything at no cost: it counts the changes it was given.
#[derive(Default)]
struct Discard {
    changes: usize,
}

impl Forwarder for Discard {
    fn prepare(&mut self, _table: &TableSpec) -> Result<(), KernelError> {
        Ok(())
    }
    fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        self.changes += changes.len();
        Ok(())
    }
    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError> {
        Ok(Vec::new())
    }
    fn teardown(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
    fn set_hairpin(
        &mut self,
        _external_addr: Option<Ipv4Addr>,
        _lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError> {
        Ok(())
    }
    fn check(&mut self) -> Result<Health, KernelError> {
        Ok(Health::Intact)
    }
    fn clear_flows(&mut self, _removed: &[Element]) {}
}

const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);
const LAN_INDEX: u32 = 2;

fn map_request(op: u8, internal_port: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = op;
    r[4..6].copy_from_slice(&internal_port.to_be_bytes());
    r[6..8].copy_from_slice(&suggested.to_be_bytes());
    r[8..12].copy_from_slice(&lifetime.to_be_bytes());
    r
}

/// Client `i`'s address: 250 mappings per address keep every client under the quota.
fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i / 250)
}

/// The external interface with 203.0.113.1; the internal one with 192.168.88.1/24 and
/// 10.255.255.254/8, so that the table can be filled from many 10.x addresses.
fn interfaces() -> Interfaces {
    let iface = |name: &str, index, addrs| Interface {
        name: name.to_owned(),
        index,
        up: true,
        addrs,
    };
    let mut m = Interfaces::new();
    m.insert(
        "ether1".to_owned(),
        iface(
            "ether1",
            1,
            vec![IfAddr::v4(Ipv4Addr::new(203, 0, 113, 1), 24)],
        ),
    );
    m.insert(
        "ether2".to_owned(),
        iface(
            "ether2",
            LAN_INDEX,
            vec![
                IfAddr::v4(GW_LAN, 24),
                IfAddr::v4(Ipv4Addr::new(10, 255, 255, 254), 8),
            ],
        ),
    );
    m
}

fn gateway(max_mappings_per_client: usize) -> Gateway<Discard> {
    let config = GatewayConfig {
        enabled: true,
        engine: EngineConfig {
            max_mappings_per_client,
            ..EngineConfig::default()
        },
        external: Some(ExternalInterface {
            name: "ether1".to_owned(),
            forced_ip: None,
        }),
        internal: vec!["ether2".to_owned()],
        drift_check: false,
        ..GatewayConfig::default()
    };
    let mut g = Gateway::new(config, Discard::default(), Timestamp::ZERO);
    g.set_interfaces(Timestamp::ZERO, interfaces());
    g.start(Timestamp::ZERO, None).expect("start");
    g
}

/// One datagram from `from`, as the daemon hands it over; the reply lands in `out`.
fn send(
    g: &mut Gateway<Discard>,
    now: Timestamp,
    from: Ipv4Addr,
    req: &[u8],
    out: &mut Vec<Outgoing>,
) {
    out.clear();
    let d = Datagram {
        source: SocketAddr::new(IpAddr::V4(from), 40000),
        destination: IpAddr::V4(GW_LAN),
        ifindex: LAN_INDEX,
        payload: req,
    };
    g.handle_datagrams(now, [d], out);
    g.clear_flows();
}

fn filled(n: u32) -> Gateway<Discard> {
    let mut g = gateway(1000);
    let mut out = Vec::new();
    for i in 0..n {
        let op = if i % 2 == 0 { 1 } else { 2 };
        let req = map_request(op, 1000 + (i % 250) as u16, 0, 7200);
        send(&mut g, Timestamp::ZERO, client(i), &req, &mut out);
    }
    assert_eq!(
        g.engine().len(),
        n as usize,
        "every pre-filled mapping exists"
    );
    g
}

fn per_op(total: Duration, ops: u32) -> f64 {
    total.as_nanos() as f64 / f64::from(ops)
}

/// A PCP MAP request (RFC 6887 §11.1) from `client` with nonce `nonce`, built by hand.
fn pcp_map_request(client: Ipv4Addr, nonce: u32, internal_port: u16, lifetime: u32) -> [u8; 60] {
    let mut r = [0u8; 60];
    r[0] = 2;
    r[1] = 1;
    r[4..8].copy_from_slice(&lifetime.to_be_bytes());
    r[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    r[24..28].copy_from_slice(&nonce.to_be_bytes());
    r[36] = 6;
    r[40..42].copy_from_slice(&internal_port.to_be_bytes());
    r[44..60].copy_from_slice(&Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    r
}

/// The `i`-th probe mapping's client and internal port.
fn probe(i: u32) -> (Ipv4Addr, u16) {
    let first = Ipv4Addr::new(192, 168, 88, 10);
    (
        Ipv4Addr::from(u32::from(first) + i / 200),
        2000 + (i % 200) as u16,
    )
}

/// CPU time this thread has used. Unlike wall time it does not count the moments the thread
/// waits for a core, which on a shared 2-core machine is most of the noise.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Create, renew (a second later) and delete `ops` mappings with one protocol; returns the
/// three costs per operation (thread CPU time) and the time the next round may start at.
fn round(
    g: &mut Gateway<Discard>,
    start: Timestamp,
    ops: u32,
    pcp: bool,
    out: &mut Vec<Outgoing>,
) -> ([f64; 3], Timestamp) {
    let request = |i: u32, lifetime: u32| -> Vec<u8> {
        let (c, port) = probe(i);
        if pcp {
            pcp_map_request(c, i, port, lifetime).to_vec()
        } else {
            map_request(2, port, 0, lifetime).to_vec()
        }
    };
    let mut costs = [0.0; 3];
    let steps = [
        (start, 3600),
        (start + Duration::from_secs(1), 3600),
        (start + Duration::from_secs(1), 0),
    ];
    for (k, (now, lifetime)) in steps.into_iter().enumerate() {
        let requests: Vec<Vec<u8>> = (0..ops).map(|i| request(i, lifetime)).collect();
        let t = thread_cpu();
        for (i, req) in requests.iter().enumerate() {
            send(g, now, probe(i as u32).0, req, out);
            black_box(&out);
        }
        costs[k] = per_op(thread_cpu() - t, ops);
        assert_eq!(out[0].payload[3], 0, "every probe request succeeds");
    }
    (costs, start + Duration::from_secs(2))
}

/// The two protocols' rounds as functions of their own, so `valgrind --tool=callgrind` can
/// count the instructions of each (see `--pcp-only`).
#[inline(never)]
fn natpmp_round(
    g: &mut Gateway<Discard>,
    start: Timestamp,
    ops: u32,
    out: &mut Vec<Outgoing>,
) -> ([f64; 3], Timestamp) {
    round(g, start, ops, false, out)
}

#[inline(never)]
fn pcp_round(
    g: &mut Gateway<Discard>,
    start: Timestamp,
    ops: u32,
    out: &mut Vec<Outgoing>,
) -> ([f64; 3], Timestamp) {
    round(g, start, ops, true, out)
}

fn fastest(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn main() {
    // `--pcp-only`: just the comparison, at N = 10 000, 3 rounds: small enough to run under
    // `valgrind --tool=callgrind`, whose instruction counts do not depend on the machine's load.
    let pcp_only = std::env::args().any(|a| a == "--pcp-only");
    let (rounds, sizes): (usize, &[u32]) = if pcp_only {
        (3, &[10_000])
    } else {
        (11, &[0, 10_000, 50_000])
    };
    if !pcp_only {
        table_sizes();
    }
    compare_protocols(rounds, sizes);
    if !pcp_only {
        full_port_range();
    }
}

fn table_sizes() {
    println!("engine cost per operation (ns of thread CPU time), table holding N mappings");
    println!(
        "{:>7} | {:>9} {:>9} {:>9} {:>11}",
        "N", "create", "renew", "delete", "expire(each)"
    );
    let ops = 5_000u32;
    for n in [0u32, 1_000, 10_000, 50_000, 58_000] {
        let mut g = filled(n);
        let mut out = Vec::with_capacity(1);
        let now = Timestamp::from_secs(1);
        let probe = Ipv4Addr::new(192, 168, 88, 10);

        // Create `ops` new mappings from fresh clients (suggested port 0: allocator path).
        let t = thread_cpu();
        for i in 0..ops {
            let c = Ipv4Addr::from(u32::from(probe) + i / 200);
            let req = map_request(2, 2000 + (i % 200) as u16, 0, 3600);
            send(&mut g, now, c, &req, &mut out);
            black_box(&out);
        }
        let create = per_op(thread_cpu() - t, ops);

        // Renew them a second later (the elements' expiry moves: remove and add again).
        let now = Timestamp::from_secs(2);
        let t = thread_cpu();
        for i in 0..ops {
            let c = Ipv4Addr::from(u32::from(probe) + i / 200);
            let req = map_request(2, 2000 + (i % 200) as u16, 0, 3600);
            send(&mut g, now, c, &req, &mut out);
            black_box(&out);
        }
        let renew = per_op(thread_cpu() - t, ops);

        let t = thread_cpu();
        for i in 0..ops {
            let c = Ipv4Addr::from(u32::from(probe) + i / 200);
            let req = map_request(2, 2000 + (i % 200) as u16, 0, 0);
            send(&mut g, now, c, &req, &mut out);
            black_box(&out);
        }
        let delete = per_op(thread_cpu() - t, ops);
        assert_eq!(g.engine().len(), n as usize, "the probe mappings are gone");

        // Expire the whole pre-filled table in one sweep.
        let before = g.forwarder().changes;
        out.clear();
        let t = thread_cpu();
        g.handle_timeout(Timestamp::from_secs(8000), &mut out);
        g.clear_flows();
        let expire = if n == 0 {
            0.0
        } else {
            per_op(thread_cpu() - t, n)
        };
        assert_eq!(
            g.forwarder().changes - before,
            2 * n as usize,
            "every pre-filled mapping expires (two elements each)"
        );
        println!("{n:>7} | {create:>9.0} {renew:>9.0} {delete:>9.0} {expire:>11.0}");
    }
}

fn compare_protocols(rounds: usize, sizes: &[u32]) {
    let ops = 5_000u32;
    println!();
    // The fastest round is the one least disturbed by other work on the machine.
    println!("PCP MAP beside NAT-PMP, same gateway and run, fastest of 11 alternating rounds (ns of thread CPU time)");
    println!(
        "{:>7} | {:>17} | {:>17} | {:>17}",
        "N", "create pmp/pcp", "renew pmp/pcp", "delete pmp/pcp"
    );
    for &n in sizes {
        let mut g = filled(n);
        let mut out = Vec::with_capacity(1);
        let mut now = Timestamp::from_secs(10);
        let (mut natpmp, mut pcp): (Vec<[f64; 3]>, Vec<[f64; 3]>) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (c, next) = natpmp_round(&mut g, now, ops, &mut out);
            natpmp.push(c);
            let (c, next) = pcp_round(&mut g, next, ops, &mut out);
            pcp.push(c);
            now = next;
        }
        let cell = |k: usize| {
            let a = fastest(natpmp.iter().map(|c| c[k]).collect());
            let b = fastest(pcp.iter().map(|c| c[k]).collect());
            format!("{a:>5.0}/{b:>5.0} ({:.2}x)", b / a)
        };
        println!("{n:>7} | {} | {} | {}", cell(0), cell(1), cell(2));
    }
    println!();
}

fn full_port_range() {
    // The worst case: the whole port range is held by others, so a new request scans it all
    // before answering result 4.
    let mut g = gateway(70_000);
    let mut out = Vec::new();
    let owner = Ipv4Addr::new(10, 9, 9, 9);
    for port in 1024..=65535u16 {
        let req = map_request(2, port, port, 7200);
        send(&mut g, Timestamp::ZERO, owner, &req, &mut out);
    }
    let refused = 200u32;
    let t = thread_cpu();
    for i in 0..refused {
        let req = map_request(1, 1000 + i as u16, 0, 7200);
        send(
            &mut g,
            Timestamp::ZERO,
            Ipv4Addr::new(10, 1, 1, 1),
            &req,
            &mut out,
        );
        black_box(&out);
    }
    let elapsed = thread_cpu() - t;
    assert_eq!(out[0].payload[3], 4, "a full port range answers result 4");
    println!(
        "port range full ({} mappings): a refused request costs {:.0} ns",
        g.mappings(Timestamp::ZERO).len(),
        per_op(elapsed, refused)
    );
}
