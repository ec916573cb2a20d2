//! Filling the gateway with 100 000 mappings (16 hosts, TCP and UDP): how long it takes, the
//! daemon's memory per mapping, and what one more mapping costs at 1 000 against 100 000;
//! then the hosts renew their mappings in closed loop, with the probe running, to show what
//! a full table costs the requests of a busy gateway (a lease snapshot is due every second).

use crate::clients::{closed_loop, ms};
use crate::lab::*;
use crate::{lab_with_load_hosts, per_second, probe, start, RUN};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const TOTAL: usize = 100_000;
const PROBE_AT: usize = 1_000;
/// Requests a host has in flight at once.
const WINDOW: usize = 32;

/// Mapping `k` of host `h`: TCP and UDP alternate on internal ports from 1000, each asking
/// for its own external port (both protocols of a pair the same one, the companion).
fn request(h: usize, k: usize) -> [u8; 12] {
    let proto = if k.is_multiple_of(2) {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    let pair = (k / 2) as u16;
    let eport = 1100 + h as u16 * 3125 + pair;
    map_request(proto, 1000 + pair, eport, 86400)
}

/// Sends every host's requests `from..to` (its own share), `WINDOW` at a time, resending what
/// got no answer; returns the wall time and how many requests never got one.
fn pipelined(lab: &Lab, hosts: &[Ipv4Addr], from: usize, to: usize) -> (Duration, usize) {
    let start = Instant::now();
    let per_host = |range: (usize, usize), h: usize| -> Vec<[u8; 12]> {
        (range.0..range.1).map(|k| request(h, k)).collect()
    };
    let n = hosts.len();
    let tasks: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(h, &src)| {
            let work = per_host((from / n, to / n), h);
            spawn_in_ns(&lab.lan, move || {
                let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let to = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
                let mut buf = [0u8; 64];
                let mut unanswered = 0;
                for chunk in work.chunks(WINDOW) {
                    let mut waiting: HashSet<(u8, u16)> = chunk
                        .iter()
                        .map(|r| (r[1], u16::from_be_bytes([r[4], r[5]])))
                        .collect();
                    for _attempt in 0..20 {
                        for r in chunk {
                            if waiting.contains(&(r[1], u16::from_be_bytes([r[4], r[5]]))) {
                                sock.send_to(r, to).unwrap();
                            }
                        }
                        while !waiting.is_empty() {
                            match sock.recv_from(&mut buf) {
                                Ok((16, _)) => {
                                    assert_eq!(buf[2..4], [0, 0], "a mapping was refused");
                                    waiting.remove(&(
                                        buf[1] & 0x7f,
                                        u16::from_be_bytes([buf[8], buf[9]]),
                                    ));
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        if waiting.is_empty() {
                            break;
                        }
                    }
                    unanswered += waiting.len();
                }
                unanswered
            })
        })
        .collect();
    let unanswered = tasks
        .into_iter()
        .map(|t| t.join(Duration::from_secs(300)))
        .sum();
    (start.elapsed(), unanswered)
}

/// The daemon's resident memory, bytes: now (`VmRSS`) or at its peak (`VmHWM`).
fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:") * 1024
}

fn peak(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:") * 1024
}

/// CPU time the daemon has used so far (user and system, all its threads), from
/// `/proc/<pid>/stat`: whether a fill is bound by the daemon or by its clients.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the parenthesised command name: state is the 3rd field, utime the
    // 14th and stime the 15th, in clock ticks (100 per second on Linux).
    let rest = &stat[stat
        .rfind(')')
        .expect("/proc/<pid>/stat has a command name")
        + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU time the daemon's main thread (the request loop) has used so far, to the nanosecond,
/// from `/proc/<pid>/schedstat` (its first field). Unlike the wall time of a short phase, it
/// leaves out the clients' own ramp-up and drain.
fn loop_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/schedstat: {stat:?}"));
    Duration::from_nanos(ns)
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

pub fn run(extra: &str) {
    let (mut lab, hosts) = lab_with_load_hosts();
    start(&mut lab, extra);
    let pid = lab.daemon_pid();
    let before = rss(pid);
    let cpu_before = cpu_time(pid);
    let loop_at_start = loop_cpu(pid);
    let (first, lost_first) = pipelined(&lab, &hosts, 0, PROBE_AT * 2);
    let loop_first = loop_cpu(pid) - loop_at_start;
    let (middle, lost_middle) = pipelined(&lab, &hosts, PROBE_AT * 2, TOTAL - PROBE_AT * 2);
    let loop_before_last = loop_cpu(pid);
    let (last, lost_last) = pipelined(&lab, &hosts, TOTAL - PROBE_AT * 2, TOTAL);
    let loop_last = loop_cpu(pid) - loop_before_last;
    let total = first + middle + last;
    let unanswered = lost_first + lost_middle + lost_last;
    let busy = cpu_time(pid) - cpu_before;
    // Let a lease save and the allocator's growth settle before reading memory.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss(pid);
    let highest = peak(pid);
    let listed = lab.mappings().len();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (PROBE_AT * 2) as f64;
    println!(
        "fill: {listed} mappings from {} hosts in {:.2} s ({:.0}/s); {unanswered} requests unanswered after 20 tries",
        hosts.len(),
        total.as_secs_f64(),
        listed as f64 / total.as_secs_f64()
    );
    println!(
        "  daemon CPU during the fill: {:.2} s ({:.0}% of one core)",
        busy.as_secs_f64(),
        busy.as_secs_f64() * 100.0 / total.as_secs_f64()
    );
    let per_mapping = |b: u64| b.saturating_sub(before) as f64 / listed.max(1) as f64;
    println!(
        "  daemon memory: {:.1} MiB before, {:.1} MiB after: {:.0} bytes per mapping (peak {:.1} MiB: {:.0} bytes per mapping)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per_mapping(after),
        highest as f64 / 1048576.0,
        per_mapping(highest),
    );
    println!(
        "  one more mapping, wall time: {:.1} µs at the first {}, {:.1} µs at the last {} (ratio {:.2})",
        per(first),
        PROBE_AT * 2,
        per(last),
        PROBE_AT * 2,
        per(last) / per(first)
    );
    println!(
        "  one more mapping, the request loop's CPU: {:.1} µs at the first {}, {:.1} µs at the last {} (ratio {:.2})",
        per(loop_first),
        PROBE_AT * 2,
        per(loop_last),
        PROBE_AT * 2,
        per(loop_last) / per(loop_first)
    );
    let per_host = listed / hosts.len();
    let p = probe(&lab);
    let renewed = closed_loop(&lab.lan, &hosts, GW_LAN, RUN, move |h, i| {
        request(h, i as usize % per_host).to_vec()
    });
    println!(
        "renewals at {listed} mappings: {:.0}/s ({} timeouts), slowest reply {:.2} ms",
        per_second(renewed.replies),
        renewed.timeouts,
        ms(renewed.slowest)
    );
    println!("  {}", p.finish().summary());
}
