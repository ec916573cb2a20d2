//! Engine throughput at different table sizes: how long one map request, one renewal, one
//! delete and one expiry sweep take when the table already holds N mappings.
//!
//! Run: `cargo run --release -p natpmp-pcp-core --example bench_engine`. Prints one row per N.

use natpmp_pcp_core::{Server, ServerConfig, Timestamp};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn map_request(op: u8, internal_port: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = op;
    r[4..6].copy_from_slice(&internal_port.to_be_bytes());
    r[6..8].copy_from_slice(&suggested.to_be_bytes());
    r[8..12].copy_from_slice(&lifetime.to_be_bytes());
    r
}

/// Client `i`'s address: 250 mappings per address keep every client under the default quota.
fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i / 250)
}

fn filled(n: u32) -> Server {
    let config = ServerConfig {
        max_mappings_per_client: 1000,
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, Timestamp::ZERO);
    let mut changes = Vec::new();
    s.set_external_address(
        Timestamp::ZERO,
        Some(Ipv4Addr::new(203, 0, 113, 1)),
        &mut changes,
    );
    let mut reply = Vec::new();
    for i in 0..n {
        let op = if i % 2 == 0 { 1 } else { 2 };
        let req = map_request(op, 1000 + (i % 250) as u16, 0, 7200);
        changes.clear();
        s.handle(Timestamp::ZERO, client(i), &req, &mut reply, &mut changes);
    }
    s
}

fn per_op(total: Duration, ops: u32) -> f64 {
    total.as_nanos() as f64 / f64::from(ops)
}

fn main() {
    println!("engine cost per operation (ns), table holding N mappings");
    println!(
        "{:>7} | {:>9} {:>9} {:>9} {:>11}",
        "N", "create", "renew", "delete", "expire(each)"
    );
    let ops = 5_000u32;
    for n in [0u32, 1_000, 10_000, 50_000, 58_000] {
        let mut s = filled(n);
        let mut reply = Vec::with_capacity(16);
        let mut changes = Vec::with_capacity(4);
        let now = Timestamp::from_secs(1);
        let probe = Ipv4Addr::new(192, 168, 88, 10);

        // Create `ops` new mappings from fresh clients (suggested port 0: allocator path).
        let t = Instant::now();
        for i in 0..ops {
            changes.clear();
            let c = Ipv4Addr::from(u32::from(probe) + i / 200);
            let req = map_request(2, 2000 + (i % 200) as u16, 0, 3600);
            black_box(s.handle(now, c, &req, &mut reply, &mut changes));
        }
        let create = per_op(t.elapsed(), ops);

        let t = Instant::now();
        for i in 0..ops {
            changes.clear();
            let c = Ipv4Addr::from(u32::from(probe) + i / 200);
            let req = map_request(2, 2000 + (i % 200) as u16, 0, 3600);
            black_box(s.handle(now, c, &req, &mut reply, &mut changes));
        }
        let renew = per_op(t.elapsed(), ops);

        let t = Instant::now();
        for i in 0..ops {
            changes.clear();
            let c = Ipv4Addr::from(u32::from(probe) + i / 200);
            let req = map_request(2, 2000 + (i % 200) as u16, 0, 0);
            black_box(s.handle(now, c, &req, &mut reply, &mut changes));
        }
        let delete = per_op(t.elapsed(), ops);

        // Expire the whole pre-filled table in one sweep.
        changes.clear();
        let t = Instant::now();
        s.handle_timeout(Timestamp::from_secs(8000), &mut changes);
        let expire = if n == 0 { 0.0 } else { per_op(t.elapsed(), n) };
        assert_eq!(
            changes.len(),
            n as usize,
            "every pre-filled mapping expires"
        );
        println!("{n:>7} | {create:>9.0} {renew:>9.0} {delete:>9.0} {expire:>11.0}");
    }

    // The worst case: the whole port range is held by others, so a new request scans it all
    // before answering result 4.
    let config = ServerConfig {
        max_mappings_per_client: 70_000,
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, Timestamp::ZERO);
    let mut changes = Vec::new();
    let mut reply = Vec::new();
    s.set_external_address(
        Timestamp::ZERO,
        Some(Ipv4Addr::new(203, 0, 113, 1)),
        &mut changes,
    );
    let owner = Ipv4Addr::new(10, 9, 9, 9);
    for port in 1024..=65535u16 {
        changes.clear();
        let req = map_request(2, port, port, 7200);
        s.handle(Timestamp::ZERO, owner, &req, &mut reply, &mut changes);
    }
    let refused = 200u32;
    let t = Instant::now();
    for i in 0..refused {
        changes.clear();
        let req = map_request(1, 1000 + i as u16, 0, 7200);
        black_box(s.handle(
            Timestamp::ZERO,
            Ipv4Addr::new(10, 1, 1, 1),
            &req,
            &mut reply,
            &mut changes,
        ));
    }
    assert_eq!(reply[3], 4, "a full port range answers result 4");
    println!(
        "port range full ({} mappings): a refused request costs {:.0} ns",
        s.mappings(Timestamp::ZERO).len(),
        per_op(t.elapsed(), refused)
    );
}
