//! End-to-end: the per-client rate limit under a real flood (issue 9 item 7), with the
//! default `rate-limit` (100/s) and `rate-limit-burst` (300).
//!
//! One LAN address (192.168.88.11) floods NAT-PMP map requests for new mappings, open loop (a
//! thread doing `send_to` in a loop, never waiting for an answer), at `FLOOD_RATE` (200 times
//! the limit) for `FLOOD`. Meanwhile another (192.168.88.10) sends 40 map requests, one every 100 ms, each
//! sent once and waiting for its reply: all 40 must be answered. The flooder must get far
//! fewer answers than it sent: at most the burst plus the rate times the flood's duration.
//! (The latency figures are printed, not asserted.)
//!
//! Why paced: this suite runs the debug build of natpmpd, which reads about 40 000 datagrams
//! a second on these 2-core machines; a flood faster than the reader fills its socket queue
//! whatever the rate limit does, and then the other host's request waits behind thousands of
//! others or is dropped with them. The full-speed flood (open loop, ~130 000/s, millions of
//! datagrams) against the release build is the load benchmark's `flood` phase, which prints
//! the other host's p99 and losses (docs/benchmarks.md).

use crate::lab::*;
use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const FLOOD: Duration = Duration::from_secs(5);
/// Datagrams per second the flooder sends.
const FLOOD_RATE: u64 = 20_000;
const RATE: u64 = 100;
const BURST: u64 = 300;
const VICTIM_REQUESTS: u16 = 40;
/// How long the victim waits for each reply (no retransmission: one lost request fails).
const VICTIM_WAIT: Duration = Duration::from_secs(1);

/// The gateway's UDP `RcvbufErrors` (/proc/net/snmp in gw): datagrams the kernel dropped
/// because natpmpd's socket queue was full, before natpmpd could see them.
fn rcvbuf_errors(lab: &Lab) -> u64 {
    let out = run_timeout(ns_command(&lab.gw, "cat", &["/proc/net/snmp"]), CMD_TIMEOUT).ok();
    let udp: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Udp:"))
        .collect();
    let [names, values] = udp[..] else {
        panic!("no Udp lines in /proc/net/snmp: {}", out.stdout);
    };
    let column = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .expect("an RcvbufErrors column");
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

/// A socket in `ns` bound to `src`, made there and usable from any thread.
fn socket_in(ns: &str, src: std::net::Ipv4Addr) -> UdpSocket {
    in_ns(ns, move || {
        UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"))
    })
}

#[test]
fn a_flooding_address_does_not_cost_another_its_answers() {
    let mut lab = Lab::new();
    lab.start_default();
    let gw = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
    let rcvbuf_before = rcvbuf_errors(&lab);

    let flood_sock = socket_in(&lab.lan, LAN_HOST_SECOND);
    let flood_recv = flood_sock.try_clone().unwrap();
    flood_recv
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));

    // The flooder's replies, counted until the flood is over and the last stragglers are in.
    let counter = {
        let (stop, answers) = (stop.clone(), answers.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut quiet_since: Option<Instant> = None;
            loop {
                match flood_recv.recv_from(&mut buf) {
                    Ok((16, from)) if from == gw.into() => {
                        answers.fetch_add(1, Ordering::Relaxed);
                        quiet_since = None;
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        if stop.load(Ordering::Relaxed) {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(500) {
                                return;
                            }
                        }
                    }
                    Err(e) => panic!("flooder recv: {e}"),
                }
            }
        })
    };

    // The flood: open loop, a new internal port each time (new mappings, as the issue asks).
    let flooder = thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut refused = 0u64;
        while start.elapsed() < FLOOD {
            if sent > start.elapsed().as_micros() as u64 * FLOOD_RATE / 1_000_000 {
                thread::sleep(Duration::from_micros(200));
                continue;
            }
            let iport = 1 + (sent % 65_000) as u16;
            match flood_sock.send_to(&map_request(Proto::Udp, iport, 0, 3600), gw) {
                Ok(_) => sent += 1,
                // A full queue on the way out, or an ICMP error from an earlier datagram:
                // the flood goes on.
                Err(_) => refused += 1,
            }
        }
        (sent, refused, start.elapsed(), Instant::now())
    });

    // Let the flood get going (and use up its burst) before the other host starts.
    thread::sleep(Duration::from_millis(300));
    let victim = socket_in(&lab.lan, LAN_HOST);
    victim.set_read_timeout(Some(VICTIM_WAIT)).unwrap();
    let mut latencies = Vec::new();
    let mut lost = Vec::new();
    for i in 0..VICTIM_REQUESTS {
        let iport = 20_000 + i;
        let t0 = Instant::now();
        victim
            .send_to(&map_request(Proto::Tcp, iport, 0, 3600), gw)
            .expect("victim send");
        // Wait for this request's reply (a late reply to an earlier one would be skipped).
        let answered = loop {
            match recv(&victim) {
                Some((b, from)) if from == gw.into() && b.len() == 16 => {
                    let r = parse_map_reply(&b);
                    if r.internal == iport {
                        assert_eq!(r.result, 0, "victim's request {i} refused: {r:?}");
                        break true;
                    }
                }
                Some(_) => {}
                None => break false,
            }
            if t0.elapsed() >= VICTIM_WAIT {
                break false;
            }
        };
        if answered {
            latencies.push(t0.elapsed());
        } else {
            lost.push(i);
        }
        thread::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed()));
    }
    let victim_done = Instant::now();

    let (sent, refused, took, flood_end) = flooder.join().expect("flooder thread");
    stop.store(true, Ordering::Relaxed);
    counter.join().expect("counter thread");
    let flood_answers = answers.load(Ordering::Relaxed);
    let kernel_dropped = rcvbuf_errors(&lab) - rcvbuf_before;

    latencies.sort();
    let pct = |p: usize| {
        latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
    };
    eprintln!(
        "rate_limit e2e: flooder sent {sent} in {took:?} ({:.0}/s, {refused} send errors), \
         {flood_answers} answered, {kernel_dropped} dropped by the kernel (natpmpd's socket \
         queue full); victim {}/{VICTIM_REQUESTS} answered, p50 {:?}, p99 {:?}, \
         max {:?}",
        sent as f64 / took.as_secs_f64(),
        latencies.len(),
        pct(50),
        pct(99),
        latencies.last(),
    );
    assert!(
        lost.is_empty(),
        "the other host's requests {lost:?} went unanswered during the flood \
         ({kernel_dropped} datagrams dropped by the kernel: natpmpd's socket queue was full)"
    );
    assert!(
        flood_end >= victim_done,
        "the flood ended before the other host was done: {sent} in {took:?}"
    );

    // The flooder: the burst plus the rate over the flood (plus one second of slack for the
    // time its last datagrams took to be read).
    let bound = BURST + RATE * (took.as_secs() + 1);
    assert!(
        flood_answers <= bound,
        "the flooder got {flood_answers} answers to {sent} requests; the limit allows {bound}"
    );
    assert!(
        sent >= 20 * bound,
        "not a flood: {sent} requests sent in {took:?}"
    );
    assert!(flood_answers > 0, "the flooder got no answer at all");
    // Its mappings are bounded too (by the quota of 256 here, below the burst).
    let maps = lab.mappings();
    let flooder_maps = maps
        .iter()
        .filter(|e| e["client"] == LAN_HOST_SECOND.to_string())
        .count() as u64;
    let victim_maps = maps
        .iter()
        .filter(|e| e["client"] == LAN_HOST.to_string())
        .count();
    assert!(flooder_maps <= flood_answers, "{flooder_maps} mappings");
    assert_eq!(victim_maps, usize::from(VICTIM_REQUESTS));
    lab.assert_daemon_running();
    assert!(lab.address_request().is_some(), "no answer after the flood");
}
