//! When the kernel's elements are listed for the drift comparison (gateway/drift.rs,
//! `element_check_interval`): the listing costs the square of the table, so a table that grew
//! past a few thousand mappings since its listing was scheduled has it put off by its new
//! size, and a table that stays the same size is listed on schedule. A forwarder that accepts
//! everything and counts its listings, so ten thousand mappings are cheap.

mod common;
use common::*;
use natpmp_pcp_core::gateway::{element_check_interval, DRIFT_CHECK};
use natpmp_pcp_core::kernel::{ApplyError, Health, KernelError, TableSpec};
use natpmp_pcp_core::{Change, Datagram, Element, EngineConfig, Forwarder, Gateway, GatewayConfig};
use natpmp_pcp_core::{Outgoing, Timestamp};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Accepts every change, keeps nothing, and counts `list` calls (answering with no elements,
/// so a listing would show up as a repair of everything, too).
#[derive(Clone, Default)]
struct CountingKernel {
    listings: Arc<AtomicUsize>,
}

impl Forwarder for CountingKernel {
    fn prepare(&mut self, _: &TableSpec) -> Result<(), KernelError> {
        Ok(())
    }
    fn apply(&mut self, _: &[Change]) -> Result<(), ApplyError> {
        Ok(())
    }
    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError> {
        self.listings.fetch_add(1, Ordering::Relaxed);
        Ok(Vec::new())
    }
    fn teardown(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
    fn set_hairpin(
        &mut self,
        _: Option<Ipv4Addr>,
        _: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError> {
        Ok(())
    }
    fn check(&mut self) -> Result<Health, KernelError> {
        Ok(Health::Intact)
    }
    fn clear_flows(&mut self, _: &[Element]) {}
}

fn gateway(kernel: &CountingKernel) -> Gateway<CountingKernel> {
    let config = GatewayConfig {
        drift_check: true,
        ..gateway_config(EngineConfig {
            max_mappings_per_client: 100_000,
            ..EngineConfig::default()
        })
    };
    let mut g = Gateway::new(config, kernel.clone(), T0);
    g.set_interfaces(T0, interfaces(Some(EXT)));
    g.start(T0, None).expect("starts");
    g
}

/// `n` NAT-PMP mappings from four clients, 64 requests per batch, all at `at`.
fn fill(g: &mut Gateway<CountingKernel>, at: Timestamp, n: usize) {
    let requests: Vec<(SocketAddr, [u8; 12])> = (0..n)
        .map(|i| {
            let client = Ipv4Addr::new(192, 168, 88, 10 + (i % 4) as u8);
            let op = if i % 8 < 4 { TCP } else { UDP };
            let port = 1024 + (i / 8) as u16;
            (
                SocketAddr::new(IpAddr::V4(client), 5350),
                map_request(op, port, 0, 3600),
            )
        })
        .collect();
    let mut out: Vec<Outgoing> = Vec::new();
    for batch in requests.chunks(64) {
        let datagrams = batch.iter().map(|(source, payload)| Datagram {
            source: *source,
            destination: v4(GW_LAN),
            ifindex: LAN_INDEX,
            payload,
        });
        g.handle_datagrams(at, datagrams, &mut out);
    }
    assert_eq!(out.len(), n);
    assert!(
        out.iter().all(|o| o.payload[3] == 0),
        "every mapping granted"
    );
    assert_eq!(g.mappings(at).len(), n);
}

/// Run the gateway's timers from `from` to `to`, as the daemon's loop does (the lease file
/// is "written" at once).
fn run(g: &mut Gateway<CountingKernel>, from: Timestamp, to: Timestamp) {
    let mut now = from;
    let mut out = Vec::new();
    for _ in 0..100_000 {
        g.handle_timeout(now, &mut out);
        if g.take_lease_snapshot(now).is_some() {
            g.lease_saved(now, Ok(()));
        }
        match g.poll_timeout() {
            Some(t) if t <= to => now = now.max(t),
            _ => return,
        }
    }
    panic!("the timers never settle before {to:?}");
}

#[test]
fn a_listing_scheduled_while_the_table_was_small_waits_for_its_new_size() {
    let kernel = CountingKernel::default();
    let mut g = gateway(&kernel);
    let listed = || kernel.listings.load(Ordering::Relaxed);
    let at_start = listed();
    fill(&mut g, T0 + Duration::from_millis(100), 12_000);
    let interval = element_check_interval(12_000);
    assert!(interval > DRIFT_CHECK, "{interval:?}");
    let half = Duration::from_millis(500);
    let (first, due) = (
        T0 + DRIFT_CHECK + half,
        T0 + DRIFT_CHECK + (interval - half),
    );
    // The first check after the fill: the shape is checked, the 24 000 elements are not listed.
    run(&mut g, T0, first);
    assert_eq!(listed(), at_start, "listed in the middle of the growth");
    // ...until the interval of the size it grew to has passed since then.
    run(&mut g, first, due);
    assert_eq!(listed(), at_start);
    run(&mut g, due, due + half * 2);
    assert_eq!(
        listed(),
        at_start + 1,
        "listed once the new interval has passed"
    );
}

#[test]
fn a_table_that_keeps_its_size_is_listed_every_drift_check() {
    let kernel = CountingKernel::default();
    let mut g = gateway(&kernel);
    let listed = || kernel.listings.load(Ordering::Relaxed);
    fill(&mut g, T0 + Duration::from_millis(100), 100);
    let before = listed();
    run(
        &mut g,
        T0,
        T0 + DRIFT_CHECK * 3 + Duration::from_millis(500),
    );
    assert_eq!(listed(), before + 3);
}
