//! End-to-end: `metrics-listen` on the real daemon. Mappings made with real requests, then
//! `GET /metrics` over HTTP in the gateway's namespace: the mapping gauge sums to the live
//! mappings, the request counter moves by exactly the requests sent under the right labels,
//! the epoch and the external address are there; other paths 404, other methods 405; and a
//! client that connects to the metrics port and never sends or reads does not stop requests
//! from being answered; datagrams over the rate limit are counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use crate::lab::*;

const METRICS: &str = "127.0.0.1:9851";
const EXTRA: &str = "metrics-listen = \"127.0.0.1:9851\"\n";

/// One HTTP request to the metrics port from inside the gateway's namespace: the status line
/// and the body.
fn http(lab: &Lab, request: &'static str) -> (String, String) {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let raw = in_ns(&lab.gw, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

fn scrape(lab: &Lab) -> String {
    let (status, body) = http(lab, "GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// The value of every sample of `name` whose labels contain all of `labels`, summed.
fn sum(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[test]
fn metrics_show_the_live_mappings_the_requests_and_the_epoch() {
    let s = setup_with(EXTRA);
    let lab = &s.lab;
    let map_tcp = [
        "protocol=\"nat-pmp\"",
        "opcode=\"map-tcp\"",
        "result=\"success\"",
    ];
    let before = scrape(lab);
    let tcp_before = sum(&before, "natpmpd_requests_total", &map_tcp);
    assert!(
        tcp_before >= 1.0,
        "the setup's TCP mapping is counted:\n{before}"
    );

    // Two more TCP mappings, and a request with an opcode NAT-PMP does not know.
    map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Tcp, 7001, 7001, 600);
    map_raw(
        &lab.lan,
        LAN_HOST_SECOND,
        GW_LAN,
        Proto::Tcp,
        7002,
        7002,
        600,
    );
    let sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 0));
    sock.send_to(&[0, 9], SocketAddrV4::new(GW_LAN, NATPMP_PORT))
        .unwrap();
    assert!(recv(&sock).is_some(), "no answer to an unknown opcode");

    let live = lab.mappings().len();
    assert_eq!(live, 4);
    let mut body = String::new();
    // The gauges are refreshed at most every second.
    let settled = Lab::eventually(Duration::from_secs(5), || {
        body = scrape(lab);
        sum(&body, "natpmpd_mappings", &[]) == live as f64
    });
    assert!(settled, "natpmpd_mappings does not sum to {live}:\n{body}");
    assert_eq!(
        sum(
            &body,
            "natpmpd_mappings",
            &["protocol=\"tcp\"", "family=\"ipv4\"", "owner=\"nat-pmp\""]
        ),
        3.0,
        "{body}"
    );
    assert_eq!(
        sum(&body, "natpmpd_mappings", &["protocol=\"udp\""]),
        1.0,
        "{body}"
    );
    assert_eq!(
        sum(&body, "natpmpd_requests_total", &map_tcp),
        tcp_before + 2.0,
        "{body}"
    );
    assert_eq!(
        sum(
            &body,
            "natpmpd_requests_total",
            &["opcode=\"other\"", "result=\"unsupported-opcode\""]
        ),
        1.0,
        "{body}"
    );
    assert!(body.contains("\nnatpmpd_epoch_seconds "), "{body}");
    assert!(
        body.contains("natpmpd_external_address{address=\"203.0.113.1\"} 1\n"),
        "{body}"
    );
    assert!(
        sum(&body, "natpmpd_kernel_transactions_total", &[]) >= 3.0,
        "{body}"
    );
    assert_eq!(
        sum(&body, "natpmpd_kernel_errors_total", &[]),
        0.0,
        "{body}"
    );
    assert!(
        sum(&body, "natpmpd_request_duration_seconds_count", &[]) >= 4.0,
        "{body}"
    );
    assert!(
        sum(&body, "natpmpd_announcements_total", &[]) >= 1.0,
        "{body}"
    );
    // The lease file was written after the changes.
    assert!(
        Lab::eventually(Duration::from_secs(5), || {
            sum(&scrape(lab), "natpmpd_lease_saves_total", &[]) >= 1.0
        }),
        "no lease save counted"
    );
}

#[test]
fn other_paths_get_404_and_other_methods_405() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), EXTRA);
    let (status, _) = http(&lab, "GET / HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404 "), "{status}");
    let (status, _) = http(&lab, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 405 "), "{status}");
}

#[test]
fn a_silent_metrics_client_does_not_stop_requests_being_answered() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), EXTRA);
    let addr: SocketAddr = METRICS.parse().unwrap();
    // Connected, never sends, never reads, held for the whole test.
    let silent: Vec<TcpStream> = in_ns(&lab.gw, move || {
        (0..4)
            .map(|_| TcpStream::connect(addr).expect("connect to the metrics port"))
            .collect()
    });
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20u16 {
        let t = Instant::now();
        let r = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Udp, 6000 + i, 0, 600);
        assert_eq!(r.result, 0, "mapping {i}: {r:?}");
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "MEASURE 20 requests with {} silent metrics clients: {:.0} ms, slowest {:.1} ms",
        silent.len(),
        started.elapsed().as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    // map_raw retransmits every 500 ms: a reply within that came on the first try.
    assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
    // And a scrape still gets through beside them.
    let body = scrape(&lab);
    assert!(
        sum(&body, "natpmpd_requests_total", &["opcode=\"map-udp\""]) >= 20.0,
        "{body}"
    );
    drop(silent);
}

#[test]
fn datagrams_over_the_rate_limit_are_counted() {
    let mut lab = Lab::new();
    let extra = format!("{EXTRA}rate-limit = 1\nrate-limit-burst = 3\n");
    lab.start_daemon_with(&DaemonConfig::default(), &extra);
    assert_eq!(
        sum(&scrape(&lab), "natpmpd_requests_rate_limited_total", &[]),
        0.0
    );
    // Ten address requests at once from one address: what is left of the burst of three is
    // answered (the lab's own readiness check may have used one; a token may come back
    // meanwhile), the rest dropped, and the counter says how many.
    let sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 0));
    let gw = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
    for _ in 0..10 {
        sock.send_to(&[0, 0], gw).unwrap();
    }
    let mut answered = 0;
    while recv(&sock).is_some() {
        answered += 1;
    }
    assert!((1..=4).contains(&answered), "{answered} answered");
    let body = scrape(&lab);
    assert_eq!(
        sum(&body, "natpmpd_requests_rate_limited_total", &[]),
        f64::from(10 - answered),
        "{body}"
    );
}
