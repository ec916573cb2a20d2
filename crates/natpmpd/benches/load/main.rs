//! The gateway under load, in the namespace lab of the end-to-end tests: the release
//! `natpmpd` with real nftables, 16 LAN addresses loading it in closed loop, a probe host on
//! the other LAN interface sending one request every 100 ms. Prints numbers; every speed
//! figure is a ratio measured in the same run.
//!
//!   sudo cargo bench -p natpmpd --features root-tests --bench load [-- SCENARIO...]
//!
//! Scenarios: `address` (address requests: natpmpd against a do-nothing UDP responder),
//! `renew`, `churn` (map and delete alternating), `flood` (one host floods new mappings open
//! loop; the probe must not suffer), `fill` (100 000 mappings: time, memory per mapping, and
//! the cost of a mapping at 1 000 against 100 000, then renewals at 100 000), `fill-metrics`
//! (the same with Prometheus metrics served). Without arguments, all of them.
//! Root only: it builds network namespaces. Bounded: every phase stops by itself.

#[path = "../../tests/e2e/lab/mod.rs"]
#[allow(unused_imports)]
mod lab;

mod clients;
mod fill;

use clients::*;
use lab::*;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How long each measured phase runs.
const RUN: Duration = Duration::from_secs(5);
const LOAD_HOSTS: u8 = 16;

/// The lab with 16 more LAN addresses for the load (192.168.88.100–115).
fn lab_with_load_hosts() -> (Lab, Vec<Ipv4Addr>) {
    require_lab();
    let lab = Lab::new();
    let hosts: Vec<Ipv4Addr> = (0..LOAD_HOSTS)
        .map(|i| Ipv4Addr::new(192, 168, 88, 100 + i))
        .collect();
    for h in &hosts {
        ip_n(
            &lab.lan,
            &["addr", "add", &format!("{h}/24"), "dev", "eth0"],
        );
    }
    (lab, hosts)
}

fn start(lab: &mut Lab, extra: &str) {
    let cfg = DaemonConfig {
        max_mappings_per_client: 100_000,
        ..DaemonConfig::default()
    };
    lab.start_daemon_with(&cfg, extra);
}

fn address_request(_: usize, _: u64) -> Vec<u8> {
    vec![0, 0]
}

fn probe(lab: &Lab) -> Probe {
    Probe::start(
        &lab.lan2,
        LAN2_HOST,
        GW_LAN2,
        map_request(Proto::Udp, 7777, 7777, 3600).to_vec(),
    )
}

fn per_second(n: u64) -> f64 {
    n as f64 / RUN.as_secs_f64()
}

/// Address requests: natpmpd, then a do-nothing responder on the same port, same load.
fn address(extra: &str) {
    let (mut lab, hosts) = lab_with_load_hosts();
    start(&mut lab, extra);
    let p = probe(&lab);
    let ours = closed_loop(&lab.lan, &hosts, GW_LAN, RUN, address_request);
    let probed = p.finish();
    lab.stop_daemon(Duration::from_secs(5));
    let null = NullResponder::start(&lab.gw);
    let theirs = closed_loop(&lab.lan, &hosts, GW_LAN, RUN, address_request);
    null.stop();
    println!(
        "address requests: natpmpd {:.0}/s ({} timeouts), do-nothing responder {:.0}/s ({} timeouts): natpmpd reaches {:.0}% of it",
        per_second(ours.replies),
        ours.timeouts,
        per_second(theirs.replies),
        theirs.timeouts,
        100.0 * ours.replies as f64 / theirs.replies.max(1) as f64
    );
    println!("  {}", probed.summary());
}

/// Renewals of one mapping per host.
fn renew(extra: &str) {
    let (mut lab, hosts) = lab_with_load_hosts();
    start(&mut lab, extra);
    let p = probe(&lab);
    let c = closed_loop(&lab.lan, &hosts, GW_LAN, RUN, |n, _| {
        map_request(Proto::Tcp, 20000 + n as u16, 0, 3600).to_vec()
    });
    println!(
        "renewals: {:.0}/s ({} timeouts), slowest reply {:.2} ms",
        per_second(c.replies),
        c.timeouts,
        ms(c.slowest)
    );
    println!("  {}", p.finish().summary());
}

/// Map and delete alternating: every other request removes a mapping (and its flows).
fn churn(extra: &str) {
    let (mut lab, hosts) = lab_with_load_hosts();
    start(&mut lab, extra);
    let p = probe(&lab);
    let c = closed_loop(&lab.lan, &hosts, GW_LAN, RUN, |n, i| {
        let port = 20000 + n as u16;
        let lifetime = if i.is_multiple_of(2) { 3600 } else { 0 };
        map_request(Proto::Udp, port, 0, lifetime).to_vec()
    });
    println!(
        "churn (map, delete, map, ...): {:.0}/s ({} timeouts), slowest reply {:.2} ms",
        per_second(c.replies),
        c.timeouts,
        ms(c.slowest)
    );
    println!("  {}", p.finish().summary());
}

/// One host floods new mappings from one address, open loop; the probe host must not suffer.
fn flood_test(extra: &str) {
    let (mut lab, hosts) = lab_with_load_hosts();
    start(&mut lab, extra);
    let p = probe(&lab);
    let sent = flood(&lab.lan, hosts[0], GW_LAN, RUN, |i| {
        map_request(Proto::Udp, 1 + (i % 60000) as u16, 0, 3600).to_vec()
    });
    let probed = p.finish();
    println!(
        "flood: one host sent {sent} new-mapping requests in {:?} ({:.0}/s); {} mappings made",
        RUN,
        per_second(sent),
        lab.mappings().len()
    );
    println!("  {}", probed.summary());
}

fn main() {
    // The lab logs every kernel change at debug level; a benchmark measures the gateway, not
    // its log file.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "info");
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let all = ["address", "renew", "churn", "flood", "fill", "fill-metrics"];
    let chosen: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        all.iter()
            .copied()
            .filter(|s| args.iter().any(|a| a == s))
            .collect()
    };
    println!(
        "natpmpd load benchmark: release natpmpd, nftables backend, {LOAD_HOSTS} closed-loop LAN clients, {RUN:?} per phase"
    );
    // Throughput figures are taken with the per-client rate limit off; the flood runs with
    // the default limit on, which is what it is about.
    let unlimited = "rate-limit = 0\n";
    for s in chosen {
        match s {
            "address" => address(unlimited),
            "renew" => renew(unlimited),
            "churn" => churn(unlimited),
            "flood" => flood_test(""),
            "fill" => fill::run(unlimited),
            // As an operator who watches the gateway runs it: the same with metrics served.
            "fill-metrics" => {
                println!("with metrics-listen set:");
                fill::run(&format!("{unlimited}metrics-listen = \"127.0.0.1:9851\"\n"))
            }
            _ => unreachable!(),
        }
    }
}
