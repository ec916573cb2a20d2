//! Load generators for the lab: closed-loop clients (send, wait for the reply, repeat), an
//! open-loop flooder, a probe that sends one request every 100 ms and records its latency, and
//! a do-nothing UDP responder to compare natpmpd with.

use crate::lab::*;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SERVER: u16 = 5351;

/// What one closed-loop client got.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub replies: u64,
    pub timeouts: u64,
    /// The longest any client waited for a reply: a turn of the daemon's loop that stalls
    /// shows here even when the probe's few requests miss it.
    pub slowest: Duration,
}

/// `clients` closed-loop clients in `ns`, one per source address, each sending `request(i)`
/// (its own request number `i`) to `gw`:5351 and waiting for a reply (200 ms at most) until
/// `run` is over. Returns the total.
pub fn closed_loop(
    ns: &str,
    sources: &[Ipv4Addr],
    gw: Ipv4Addr,
    run: Duration,
    request: impl Fn(usize, u64) -> Vec<u8> + Send + Sync + Clone + 'static,
) -> Counts {
    let tasks: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(n, &src)| {
            let request = request.clone();
            spawn_in_ns(ns, move || {
                let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let to = SocketAddrV4::new(gw, SERVER);
                let mut buf = [0u8; 1100];
                let mut counts = Counts::default();
                let end = Instant::now() + run;
                let mut i = 0u64;
                while Instant::now() < end {
                    let sent = Instant::now();
                    sock.send_to(&request(n, i), to).unwrap();
                    match sock.recv_from(&mut buf) {
                        Ok(_) => {
                            counts.replies += 1;
                            counts.slowest = counts.slowest.max(sent.elapsed());
                        }
                        Err(_) => counts.timeouts += 1,
                    }
                    i += 1;
                }
                counts
            })
        })
        .collect();
    tasks
        .into_iter()
        .map(|t| t.join(run + Duration::from_secs(30)))
        .fold(Counts::default(), |a, c| Counts {
            replies: a.replies + c.replies,
            timeouts: a.timeouts + c.timeouts,
            slowest: a.slowest.max(c.slowest),
        })
}

/// Sends `request(i)` from `src` to `gw`:5351 as fast as one thread can, without waiting for
/// replies (nor reading them), until `run` is over. Returns how many were sent.
pub fn flood(
    ns: &str,
    src: Ipv4Addr,
    gw: Ipv4Addr,
    run: Duration,
    request: impl Fn(u64) -> Vec<u8> + Send + 'static,
) -> u64 {
    spawn_in_ns(ns, move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap();
        let to = SocketAddrV4::new(gw, SERVER);
        let end = Instant::now() + run;
        let mut sent = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                if sock.send_to(&request(sent), to).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    })
    .join(run + Duration::from_secs(30))
}

/// One request every 100 ms from `src` in `ns` to `gw`, while the load runs.
pub struct Probe {
    stop: Arc<AtomicBool>,
    task: NsTask<Vec<Option<Duration>>>,
}

/// What the probe saw: its latencies, sorted, and how many got no reply within 1 s.
pub struct ProbeResult {
    pub latencies: Vec<Duration>,
    pub lost: usize,
}

impl ProbeResult {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    pub fn summary(&self) -> String {
        format!(
            "probe: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost {}",
            self.latencies.len() + self.lost,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.lost
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Probe {
    pub fn start(ns: &str, src: Ipv4Addr, gw: Ipv4Addr, request: Vec<u8>) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = spawn_in_ns(ns, move || {
            let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let to = SocketAddrV4::new(gw, SERVER);
            let mut buf = [0u8; 1100];
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                sock.send_to(&request, to).unwrap();
                seen.push(sock.recv_from(&mut buf).ok().map(|_| t.elapsed()));
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
            }
            seen
        });
        Probe { stop, task }
    }

    pub fn finish(self) -> ProbeResult {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.join(Duration::from_secs(10));
        let lost = seen.iter().filter(|s| s.is_none()).count();
        let mut latencies: Vec<Duration> = seen.into_iter().flatten().collect();
        latencies.sort();
        ProbeResult { latencies, lost }
    }
}

/// A UDP responder on 0.0.0.0:5351 in `ns` that answers every datagram with a canned
/// 12-byte NAT-PMP address reply and does nothing else: the ceiling of a request/response
/// server on this machine, under the same load.
pub struct NullResponder {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    task: NsTask<()>,
}

impl NullResponder {
    pub fn start(ns: &str) -> NullResponder {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), answered.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let task = spawn_in_ns(ns, move || {
            let sock = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], SERVER))).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let reply = [0u8, 0x80, 0, 0, 0, 0, 0, 1, 203, 0, 113, 1];
            let mut buf = [0u8; 1100];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&reply, from);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        NullResponder {
            stop,
            answered,
            task,
        }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.join(Duration::from_secs(5));
        self.answered.load(Ordering::Relaxed)
    }
}
