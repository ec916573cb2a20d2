//! End-to-end: systemd's notification protocol without systemd. The test plays the service
//! manager: it binds the Unix datagram socket, starts the real natpmpd with `NOTIFY_SOCKET`
//! (and `WATCHDOG_USEC`) pointing at it, and checks what arrives and when: READY=1 only once
//! port 5351 is open and the table installed, STATUS= with the external address and the
//! mapping count, WATCHDOG=1 at half the watchdog timeout, RELOADING=1 with MONOTONIC_USEC=
//! then READY=1 around a reload, STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

/// The manager's end: every datagram that arrives, with the moment it did.
struct Manager {
    rx: mpsc::Receiver<(Instant, String)>,
    /// Everything received so far, in order.
    seen: Vec<(Instant, String)>,
}

impl Manager {
    /// Binds `lab.dir/notify` (a path, not an abstract name: those are per network namespace,
    /// and natpmpd runs in gw) and reads it on a thread until the socket's owner is dropped.
    fn bind(lab: &Lab) -> (Manager, String) {
        let path = lab.dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Until the test is gone (send fails) or 120 s, whichever comes first.
            let end = Instant::now() + Duration::from_secs(120);
            while Instant::now() < end {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if tx.send((Instant::now(), msg)).is_err() {
                        return;
                    }
                }
            }
        });
        let manager = Manager {
            rx,
            seen: Vec::new(),
        };
        (manager, path.to_str().unwrap().to_owned())
    }

    /// The next message for which `want` holds, within `within`; the ones before it are kept
    /// in `seen` too. Panics with everything seen if none comes.
    fn wait_for(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> (Instant, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, msg)) => {
                    self.seen.push((at, msg.clone()));
                    if want(&msg) {
                        return (at, msg);
                    }
                }
                Err(_) => panic!(
                    "no matching notification within {within:?}; seen: {:?}",
                    self.messages()
                ),
            }
        }
    }

    /// Takes whatever has arrived by now, without waiting.
    fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
    }

    fn messages(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, m)| m.as_str()).collect()
    }
}

/// The `KEY=` field of a notification, if it has one.
fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Continues a stopped daemon when dropped, so a failing assertion never leaves it stopped.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        // SAFETY: plain kill(2) on the lab's own child.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the lab's own child.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// Whether a UDP socket is bound to port 5351 in `ns` (its /proc/net/udp, read from a thread
/// in there: /proc/self/net would be the main thread's namespace).
fn udp_5351_bound(ns: &str) -> bool {
    in_ns(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/udp")
            .unwrap()
            .lines()
            .skip(1)
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|local| local.ends_with(":14E7"))
            })
    })
}

#[test]
fn ready_only_once_port_5351_answers_and_the_table_exists_and_status_follows_the_mappings() {
    let mut lab = Lab::new();
    let (mut manager, socket) = Manager::bind(&lab);
    lab.write_config(&lab.config_text(&DaemonConfig::default()));
    // A watchdog meant for another process (WATCHDOG_PID is not natpmpd's): no pings.
    let launch = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), socket),
            ("WATCHDOG_USEC".into(), "400000".into()),
            ("WATCHDOG_PID".into(), "1".into()),
        ],
        ..Launch::default()
    };
    lab.spawn_daemon_launch(false, &launch);

    let (_, ready) = manager.wait_for(Duration::from_secs(10), |m| m.contains("READY=1"));
    {
        // Frozen the moment READY=1 is in: what is true now was true when it was sent (give
        // or take the few instructions between its send and our SIGSTOP).
        let _stopped = Stopped::new(lab.daemon_pid());
        assert!(
            udp_5351_bound(&lab.gw),
            "READY=1 came before port 5351 was open"
        );
        assert!(
            lab.gw_tables().contains("table inet natpmpd"),
            "READY=1 came before the table was installed: {}",
            lab.gw_tables()
        );
    }
    assert!(
        lab.address_request()
            .is_some_and(|(rc, _, a)| rc == 0 && a == GW_EXT),
        "no external address answer right after READY=1"
    );
    let status =
        field(&ready, "STATUS").unwrap_or_else(|| panic!("READY=1 without STATUS=: {ready:?}"));
    assert!(status.contains("203.0.113.1"), "{status}");
    assert!(status.contains("ether1"), "{status}");
    assert!(status.contains("0 mappings"), "{status}");

    // A mapping changes the status line.
    let m = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Tcp, 8080, 40000, 600);
    assert_eq!(m.result, 0, "{m:?}");
    let (_, status) = manager.wait_for(Duration::from_secs(3), |m| {
        field(m, "STATUS").is_some_and(|s| s.contains("1 mapping"))
    });
    assert!(status.contains("203.0.113.1"), "{status}");

    // SIGHUP: RELOADING=1 with a MONOTONIC_USEC= of now, then READY=1.
    let before = monotonic_usec();
    lab.signal_daemon(libc::SIGHUP);
    let (reloading_at, reloading) =
        manager.wait_for(Duration::from_secs(5), |m| m.contains("RELOADING=1"));
    let usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC=: {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "MONOTONIC_USEC={usec} is not between {before} and now"
    );
    let (ready_at, _) = manager.wait_for(Duration::from_secs(5), |m| m.contains("READY=1"));
    assert!(ready_at >= reloading_at);

    // `natpmpctl reload` is the same reload, framed the same way.
    assert!(lab.natpmpctl(&["reload"]).success());
    manager.wait_for(Duration::from_secs(5), |m| m.contains("RELOADING=1"));
    manager.wait_for(Duration::from_secs(5), |m| m.contains("READY=1"));

    // A refused file still ends the reload with READY=1 (the old configuration runs on).
    lab.write_config("enabled = maybe\n");
    lab.signal_daemon(libc::SIGHUP);
    manager.wait_for(Duration::from_secs(5), |m| m.contains("RELOADING=1"));
    manager.wait_for(Duration::from_secs(5), |m| m.contains("READY=1"));
    assert!(
        lab.address_request().is_some(),
        "a refused reload stopped the service"
    );

    lab.signal_daemon(libc::SIGTERM);
    manager.wait_for(Duration::from_secs(5), |m| m.contains("STOPPING=1"));
    let status = lab.stop_daemon(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    manager.drain();
    assert!(
        !manager.messages().iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged a watchdog that is another process's: {:?}",
        manager.messages()
    );
}

#[test]
fn watchdog_pings_come_from_the_loop_at_half_the_timeout() {
    let mut lab = Lab::new();
    let (mut manager, socket) = Manager::bind(&lab);
    lab.write_config(&lab.config_text(&DaemonConfig::default()));
    let timeout = Duration::from_millis(1000);
    let launch = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), socket),
            ("WATCHDOG_USEC".into(), timeout.as_micros().to_string()),
        ],
        // WATCHDOG_PID is natpmpd's own pid: the shell's, which then becomes natpmpd.
        wrapper: vec![
            "/bin/sh".into(),
            "-c".into(),
            "export WATCHDOG_PID=$$; exec \"$@\"".into(),
            "sh".into(),
        ],
        ..Launch::default()
    };
    lab.spawn_daemon_launch(false, &launch);
    manager.wait_for(Duration::from_secs(10), |m| m.contains("READY=1"));

    let mut pings = Vec::new();
    while pings.len() < 6 {
        let (at, _) = manager.wait_for(timeout, |m| m == "WATCHDOG=1");
        pings.push(at);
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= timeout / 10 && *gap <= timeout * 9 / 10,
            "a watchdog ping gap of {gap:?} is outside 0.1x..0.9x of {timeout:?}: {gaps:?}"
        );
    }
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= timeout * 4 / 10 && mean <= timeout * 7 / 10,
        "mean gap {mean:?} is not about half of {timeout:?}: {gaps:?}"
    );

    lab.stop_daemon(Duration::from_secs(5));
}
