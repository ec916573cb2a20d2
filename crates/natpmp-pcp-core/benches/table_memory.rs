//! The engine's own heap per mapping: 16 clients fill the table to 100 000 mappings, TCP and
//! UDP, half of the clients by NAT-PMP and half by PCP, and a counting allocator reports the
//! live bytes at 1 000 and at 100 000 mappings. The daemon-wide figure (resident memory,
//! kernel backend, lease writer) is the `load` benchmark's `fill` phase in natpmpd.
//!
//! It also times a lease snapshot of the full table, whole and one slice.
//!
//!   cargo bench -p natpmp-pcp-core --bench table_memory

use natpmp_pcp_core::engine::mapping::{EndpointKey, Nonce, PcpClient, ReplyPath};
use natpmp_pcp_core::engine::{
    Claim, DescriptionUpdate, FilterUpdate, Lifetime, MapOutcome, MapRequest,
};
use natpmp_pcp_core::gateway::LEASE_SLICE;
use natpmp_pcp_core::{Engine, EngineConfig, Protocol, Timestamp};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLIENTS: usize = 16;
const TOTAL: usize = 100_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Mapping `k` of client `c`: TCP and UDP alternate on internal ports from 1000.
fn request(c: usize, k: usize) -> MapRequest {
    let client = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10 + c as u8));
    let claim = if c.is_multiple_of(2) {
        Claim::NatPmp
    } else {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(k as u64).to_be_bytes());
        Claim::Pcp(PcpClient {
            nonce: Nonce(nonce),
            reply_path: ReplyPath {
                client_port: 5350,
                server: IpAddr::V4(Ipv4Addr::new(192, 168, 88, 1)),
            },
        })
    };
    MapRequest {
        key: EndpointKey {
            client,
            protocol: if k.is_multiple_of(2) {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            internal_port: 1000 + (k / 2) as u16,
        },
        lifetime: Lifetime::AtMost(86400),
        claim,
        suggested_port: if std::env::var_os("NO_SUGGESTION").is_some() {
            0
        } else {
            1100 + c as u16 * 3125 + (k / 2) as u16
        },
        suggested_addr: None,
        prefer_failure: false,
        filters: FilterUpdate::default(),
        description: DescriptionUpdate::Keep,
    }
}

fn main() {
    let config = EngineConfig {
        max_mappings_per_client: TOTAL,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Timestamp::ZERO);
    let mut changes = Vec::new();
    engine.set_external_address(
        Timestamp::ZERO,
        Some(Ipv4Addr::new(203, 0, 113, 1)),
        &mut changes,
    );
    changes = Vec::new();
    let start = live();
    let mut at_probe = (0isize, Duration::ZERO);
    let began = Instant::now();
    let mut tail_started = Instant::now();
    let per_client = TOTAL / CLIENTS;
    let mut made = 0;
    for k in 0..per_client {
        for c in 0..CLIENTS {
            // Over a second of virtual time per round, as a real fill spreads its expiries.
            let now = Timestamp::from_millis((k * CLIENTS + c) as u64);
            let (outcome, undo) = engine.map(now, request(c, k), &mut changes);
            assert!(matches!(outcome, MapOutcome::Granted(_)), "{outcome:?}");
            drop(undo);
            changes.clear();
            made += 1;
            if made == 1_000 {
                at_probe = (live() - start, began.elapsed());
            }
            if made == TOTAL - 1_000 {
                tail_started = Instant::now();
            }
        }
    }
    let last = tail_started.elapsed();
    assert_eq!(engine.len(), TOTAL);
    let full = live() - start;
    println!(
        "engine heap: {:.0} bytes per mapping at 1 000, {:.0} bytes per mapping at {TOTAL} ({CLIENTS} clients, TCP and UDP, NAT-PMP and PCP)",
        at_probe.0 as f64 / 1_000.0,
        full as f64 / TOTAL as f64
    );
    let first = at_probe.1.as_secs_f64() / 1_000.0;
    let tail = last.as_secs_f64() / 1_000.0;
    println!(
        "  one map request: {:.2} µs at the first 1 000, {:.2} µs at the last 1 000 (ratio {:.2}); {TOTAL} in {:.2} s",
        first * 1e6,
        tail * 1e6,
        tail / first,
        began.elapsed().as_secs_f64()
    );
    lease_snapshot(&engine);
}

/// A lease snapshot of the full table: all at once, as it was taken, against one slice of
/// `LEASE_SLICE` endpoints, the most any turn of the daemon's loop now copies (the best of 3).
fn lease_snapshot(engine: &Engine) {
    let now = Timestamp::from_secs(200);
    let best = |f: &dyn Fn() -> usize| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let n = f();
                (t.elapsed(), n)
            })
            .min()
            .unwrap()
    };
    let (whole, n) = best(&|| engine.records(now).len());
    let (slice, m) = best(&|| {
        let mut out = Vec::with_capacity(LEASE_SLICE);
        engine.records_after(now, None, LEASE_SLICE, &mut out);
        out.len()
    });
    println!(
        "  lease snapshot: the whole table ({n} records) {:.2} ms at once; one slice ({m} records) {:.3} ms",
        whole.as_secs_f64() * 1e3,
        slice.as_secs_f64() * 1e3
    );
}
