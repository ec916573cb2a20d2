//! Forwarded traffic through natpmpd's nftables maps as the number of mappings grows, against
//! the same traffic through one DNAT rule per mapping in a linear chain (the miniupnpd style).
//!
//! For N = 1, 1000 and 10000 UDP mappings (external ports 20000.., each to 192.168.88.2 on
//! the same port number: the outbound map is keyed by internal address and port, so the
//! internal ports must differ), it prints:
//! - the time to install the N mappings (one `NftForwarder::apply` of N changes, against one
//!   `nft -f` of a table with N rules) and to add one more at that N (one `apply` of one
//!   change, against one `nft add rule` process; mean of 10, timed after the traffic, so for
//!   the chain they are appended behind the N rules);
//! - round trips per second on one steady UDP flow (32 requests in flight) to a UDP echo
//!   behind the first and the last-installed mapping. Conntrack sends only a flow's first
//!   packet through the NAT chains, so this is expected to be flat;
//! - new flows per second to the first and the last mapping: each flow is a fresh socket on a
//!   new source port that sends one datagram and waits for the echo, 32 flows in flight. Each
//!   flow's first packet is the one that pays the NAT lookup (one hash lookup in the map, or
//!   a walk down the chain to the matching rule). "extra us per flow" is 1/last - 1/first:
//!   what reaching the last mapping adds to each new flow.
//!
//! Every rate is the best of 5 rounds that alternate between the first and the last mapping
//! (0.4 s per steady round, 0.6 s or 60000 flows per new-flow round), after an untimed warm-up
//! round; conntrack is flushed before each round. Any socket waits at most 1 s for an answer,
//! and a missing answer ends the run.
//!
//! Run as root: `cargo run --release -p natpmp-pcp-nft --example bench_forwarding` (other
//! sizes on the command line: `... -- 1 100`; each N must be at least 1). Everything
//! happens in anonymous network namespaces owned by threads of this process: the benchmark
//! thread is the gateway, two more threads are an internet host and a LAN host on veth pairs.
//! Nothing is named under /run/netns and the host's interfaces and ruleset are never touched;
//! the namespaces vanish with the threads. A watchdog ends the process after 170 seconds.

use natpmp_pcp_core::kernel::{Change, Element, Forwarder, TableSpec};
use natpmp_pcp_core::Protocol;
use natpmp_pcp_nft::NftForwarder;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "../tests/kernel/support/netns.rs"]
mod netns;
use netns::{gateway_with_hosts, run, Host};

const WAN: &str = "wan0";
const WAN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 2);
const FIRST_PORT: u16 = 20_000;
/// Ports of the extra mappings that time "add one more"; above any of the N.
const EXTRA_PORT: u16 = 40_000;
const EXTRA_ADDS: u16 = 10;
const SIZES: [usize; 3] = [1, 1000, 10_000];
/// Each rate is the best of this many rounds (first and last mapping alternately).
const ROUNDS: usize = 5;
const STEADY_TIME: Duration = Duration::from_millis(400);
const NEW_FLOW_TIME: Duration = Duration::from_millis(600);
/// An untimed new-flow round before each set of measurements: the first round after a change
/// of ruleset ran up to 25% slower than the rest.
const WARM_UP: Duration = Duration::from_millis(300);
/// Flows in flight at once in the new-flow measurement.
const BATCH: usize = 32;
/// Source ports 1024.. are used once each per measurement (conntrack is flushed between
/// measurements), so a measurement stops at this many flows whatever the time.
const MAX_FLOWS: usize = 60_000;
/// How long any socket waits for an answer before the measurement is declared failed.
const ANSWER_WAIT: Duration = Duration::from_secs(1);
const WATCHDOG: Duration = Duration::from_secs(170);

/// Load `script` with one `nft -f -` process; returns how long the process took.
fn nft_file(script: &str) -> Duration {
    let t = Instant::now();
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to nft");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// UDP echo servers on the LAN host, one thread per port, stopped on drop.
struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Echo {
    fn start(lan: &Host, ports: &[u16]) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            // The socket belongs to the namespace it is created in, whichever thread uses it.
            let sock = lan.run(move || {
                // A socket just closed may linger a moment in a child forked to run nft.
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)) {
                        Ok(s) => break s,
                        Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => panic!("echo: bind port {port}: {e}"),
                    }
                }
            });
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        Echo { stop, threads }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One UDP mapping of `port` to the LAN host's same port: its two elements.
fn forward(port: u16) -> [Change; 2] {
    let internal = SocketAddrV4::new(LAN_HOST, port);
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
                external: SocketAddrV4::new(WAN_ADDR, port),
            },
            timeout,
        },
    ]
}

fn linear_rule(port: u16) -> String {
    format!("iifname \"{WAN}\" udp dport {port} dnat to {LAN_HOST}:{port}")
}

fn linear_table(n: usize) -> String {
    let mut s = String::with_capacity(80 * n + 200);
    s.push_str("table ip linear {\n  chain prerouting {\n");
    s.push_str("    type nat hook prerouting priority dstnat; policy accept;\n");
    for i in 0..n {
        s.push_str("    ");
        s.push_str(&linear_rule(FIRST_PORT + i as u16));
        s.push('\n');
    }
    s.push_str("  }\n}\n");
    s
}

/// Round trips per second on one UDP flow from the internet host to `port` for `STEADY_TIME`:
/// `BATCH` requests sent, then their `BATCH` echoes received, repeated. (One request at a time
/// measured mostly how fast the scheduler wakes the two threads, and varied by 20% from
/// round to round.)
fn steady_rate(inet: &Host, port: u16) -> Result<f64, String> {
    inet.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
        s.connect((WAN_ADDR, port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(ANSWER_WAIT))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let mut trips = 0u64;
        let t = Instant::now();
        while t.elapsed() < STEADY_TIME {
            for _ in 0..BATCH {
                s.send(b"ping").map_err(|e| format!("send: {e}"))?;
            }
            for _ in 0..BATCH {
                s.recv(&mut buf)
                    .map_err(|e| format!("steady flow to {port}: no echo: {e}"))?;
            }
            trips += BATCH as u64;
        }
        Ok(trips as f64 / t.elapsed().as_secs_f64())
    })
}

/// New flows per second from the internet host to `port`: each flow is a new socket on the
/// next source port (1024, 1025, ...) sending one datagram and receiving its echo, `BATCH`
/// flows in flight at a time, for `time` or `MAX_FLOWS` flows. Conntrack must hold no
/// entry for these ports (flush first), so every flow is new to the gateway.
fn new_flow_rate(inet: &Host, port: u16, time: Duration) -> Result<f64, String> {
    inet.run(move || {
        let mut next_src: u16 = 1024;
        let mut flows = 0usize;
        let mut socks = Vec::with_capacity(BATCH);
        let mut buf = [0u8; 64];
        let t = Instant::now();
        while t.elapsed() < time && flows + BATCH <= MAX_FLOWS {
            for _ in 0..BATCH {
                let src = next_src;
                next_src += 1;
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, src))
                    .map_err(|e| format!("bind source port {src}: {e}"))?;
                s.connect((WAN_ADDR, port)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(ANSWER_WAIT))
                    .map_err(|e| e.to_string())?;
                s.send(b"hello").map_err(|e| format!("send: {e}"))?;
                socks.push((src, s));
            }
            for (src, s) in socks.drain(..) {
                s.recv(&mut buf)
                    .map_err(|e| format!("new flow {src} -> {port}: no echo: {e}"))?;
            }
            flows += BATCH;
        }
        Ok(flows as f64 / t.elapsed().as_secs_f64())
    })
}

fn flush_conntrack() {
    // conntrack reports the count on stderr; only the exit status matters here.
    let out = Command::new("conntrack")
        .arg("-F")
        .output()
        .expect("run conntrack");
    assert!(
        out.status.success(),
        "conntrack -F failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rates to the first and the last-installed mapping: (steady first, steady last, new first,
/// new last), each the best of `ROUNDS` measurements taken alternately to the first and the
/// last mapping (the machine is shared: the best round is the least disturbed one). A failed
/// measurement ends the benchmark: a number without traffic is no number.
fn traffic(inet: &Host, lan: &Host, n: usize) -> [f64; 4] {
    let first = FIRST_PORT;
    let last = FIRST_PORT + (n - 1) as u16;
    let ports: Vec<u16> = if n == 1 {
        vec![first]
    } else {
        vec![first, last]
    };
    let _echo = Echo::start(lan, &ports);
    flush_conntrack();
    new_flow_rate(inet, first, WARM_UP).unwrap_or_else(|e| panic!("N={n}: {e}"));
    let mut out = [0.0f64; 4];
    for _ in 0..ROUNDS {
        for (i, port) in [first, last].into_iter().enumerate() {
            flush_conntrack();
            let steady = steady_rate(inet, port).unwrap_or_else(|e| panic!("N={n}: {e}"));
            out[i] = out[i].max(steady);
            flush_conntrack();
            let new =
                new_flow_rate(inet, port, NEW_FLOW_TIME).unwrap_or_else(|e| panic!("N={n}: {e}"));
            out[2 + i] = out[2 + i].max(new);
        }
    }
    out
}

struct Row {
    n: usize,
    style: &'static str,
    install: Duration,
    add_one: Duration,
    /// steady first, steady last, new first, new last
    rates: [f64; 4],
}

fn maps_style(f: &mut NftForwarder, inet: &Host, lan: &Host, n: usize) -> Row {
    f.prepare(&TableSpec::new(WAN)).expect("prepare");
    let adds: Vec<Change> = (0..n)
        .flat_map(|i| forward(FIRST_PORT + i as u16))
        .collect();
    let t = Instant::now();
    f.apply(&adds).expect("add N mappings");
    let install = t.elapsed();
    let rates = traffic(inet, lan, n);
    let t = Instant::now();
    for k in 0..EXTRA_ADDS {
        f.apply(&forward(EXTRA_PORT + k)).expect("add one mapping");
    }
    let add_one = t.elapsed() / u32::from(EXTRA_ADDS);
    f.teardown().expect("teardown");
    Row {
        n,
        style: "maps",
        install,
        add_one,
        rates,
    }
}

fn linear_style(inet: &Host, lan: &Host, n: usize) -> Row {
    let install = nft_file(&linear_table(n));
    let rates = traffic(inet, lan, n);
    let t = Instant::now();
    for k in 0..EXTRA_ADDS {
        let rule = linear_rule(EXTRA_PORT + k);
        let mut args = vec!["add", "rule", "ip", "linear", "prerouting"];
        args.extend(rule.split(' '));
        run("nft", &args);
    }
    let add_one = t.elapsed() / u32::from(EXTRA_ADDS);
    nft_file("delete table ip linear\n");
    Row {
        n,
        style: "linear",
        install,
        add_one,
        rates,
    }
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

fn print_rows(rows: &[Row]) {
    let head = |a: &str, b: &str, c: &str, d: &str, e: [&str; 7]| {
        println!(
            "{a:>6} {b:<7} {c:>10} {d:>10} | {:>11} {:>11} {:>6} | {:>11} {:>11} {:>6} {:>9}",
            e[0], e[1], e[2], e[3], e[4], e[5], e[6]
        )
    };
    head(
        "N",
        "style",
        "install N",
        "add 1 more",
        [
            "steady rt/s",
            "steady rt/s",
            "last/",
            "new flow/s",
            "new flow/s",
            "last/",
            "extra us",
        ],
    );
    head(
        "",
        "",
        "",
        "",
        [
            "first", "last", "first", "first", "last", "first", "per flow",
        ],
    );
    for r in rows {
        let [sf, sl, nf, nl] = r.rates;
        // What the last mapping costs a new flow beyond the first: the lookup's share.
        let extra_us = (1.0 / nl - 1.0 / nf) * 1e6;
        println!(
            "{:>6} {:<7} {:>10} {:>10} | {:>11.0} {:>11.0} {:>6.2} | {:>11.0} {:>11.0} {:>6.2} {:>9.1}",
            r.n,
            r.style,
            fmt_duration(r.install),
            fmt_duration(r.add_one),
            sf,
            sl,
            sl / sf,
            nf,
            nl,
            nl / nf,
            extra_us
        );
    }
}

fn gateway() {
    // SAFETY: only this thread's network namespace changes.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let (lan, inet) = gateway_with_hosts(WAN);

    let mut f = NftForwarder::new().expect("netlink socket");
    let mut rows = Vec::new();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        SIZES.to_vec()
    } else {
        sizes
    };
    for n in sizes {
        rows.push(maps_style(&mut f, &inet, &lan, n));
        rows.push(linear_style(&inet, &lan, n));
    }
    println!(
        "UDP, one echo on 192.168.88.2 behind the first and the last-installed mapping; \
         {}-flow batches for new flows",
        BATCH
    );
    print_rows(&rows);
}

fn main() {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("bench_forwarding: still running after {WATCHDOG:?}; giving up");
        std::process::exit(2);
    });
    let started = Instant::now();
    std::thread::spawn(gateway)
        .join()
        .expect("benchmark thread");
    println!("(whole run: {:.0} s)", started.elapsed().as_secs_f64());
}
