//! Load generators for the lab: closed-loop clients (send, wait for the reply, repeat), an
//! open-loop flooder, a probe that sends one request every 100 ms and records its latency, and
//! a do-nothing UDP responder to compare natpmpd with.

use crate::lab::*;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    task: NsTask<Vec<Option<(Duration, Duration)>>>,
}

/// What the probe saw: its latencies, sorted, and how many got no reply within 1 s. Each
/// latency twice: until the probe read the reply, and until the reply reached the probe's
/// socket (the kernel's receive timestamp, `SO_TIMESTAMPNS`). The second leaves out the
/// probe thread's own wake-up, which in this lab waits for the same 2 cores as the gateway,
/// its 16 clients and its conntrack cleaner; on a real network the probe is another machine.
pub struct ProbeResult {
    pub latencies: Vec<Duration>,
    pub arrivals: Vec<Duration>,
    pub lost: usize,
}

/// Receive one datagram and the time the kernel received it (`SO_TIMESTAMPNS` must be on).
fn recv_with_arrival(sock: &UdpSocket, buf: &mut [u8]) -> Option<SystemTime> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: the header points at `iov` and `control`, which outlive the call.
    if unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) } < 0 {
        return None;
    }
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of cmsgs; CMSG_* walk
    // them within that length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some(SystemTime::now())
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
        let arrival_p99 = self
            .arrivals
            .get(((self.arrivals.len().max(1) - 1) as f64 * 0.99).round() as usize)
            .copied()
            .unwrap_or_default();
        format!(
            "probe: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost {} (reply at its socket: p99 {:.2} ms)",
            self.latencies.len() + self.lost,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.lost,
            ms(arrival_p99)
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
            let on: libc::c_int = 1;
            // SAFETY: a valid socket, and an int option of the size given.
            let set = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMPNS,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "SO_TIMESTAMPNS");
            let to = SocketAddrV4::new(gw, SERVER);
            let mut buf = [0u8; 1100];
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let sent = SystemTime::now();
                sock.send_to(&request, to).unwrap();
                seen.push(recv_with_arrival(&sock, &mut buf).map(|arrived| {
                    let elapsed = t.elapsed();
                    (
                        elapsed,
                        arrived
                            .duration_since(sent)
                            .unwrap_or_default()
                            .min(elapsed),
                    )
                }));
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
        let (mut latencies, mut arrivals): (Vec<Duration>, Vec<Duration>) =
            seen.into_iter().flatten().unzip();
        latencies.sort();
        arrivals.sort();
        ProbeResult {
            latencies,
            arrivals,
            lost,
        }
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
