//! Throwaway hosts for kernel tests and benchmarks: each `Host` is a thread in an anonymous
//! network namespace of its own (no name under /run/netns, so nothing outlives the process),
//! and `run` runs a command in the calling thread's namespace, failing loudly.
//!
//! Shared by the kernel tests (`tests/kernel.rs`, `tests/traffic.rs`) and
//! `examples/bench_forwarding.rs` (included with `#[path]`).

#![allow(dead_code)]

use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Run `program` with `args` in the calling thread's namespace; panic with its stderr if it
/// fails. Returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of its own, held by a thread that runs the jobs it is given. It needs
/// no name under /run/netns, so nothing is left behind on the host even if a test panics:
/// dropping the `Host` ends the thread, and the kernel discards the namespace with it.
pub struct Host {
    jobs: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    /// The thread's id, which `ip link set ... netns` accepts as a pid.
    tid: i32,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    pub fn new() -> Host {
        let (jobs, inbox) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: only this thread's namespace changes; gettid has no preconditions.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            for job in inbox {
                job();
            }
        });
        let tid = tid_rx.recv().expect("host thread did not start");
        Host {
            jobs: Some(jobs),
            tid,
            thread: Some(thread),
        }
    }

    /// Run `f` in this host's namespace and return its result; a panic in `f` fails the test.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.jobs.as_ref().unwrap().send(job).unwrap();
        match rx.recv().expect("host thread ended") {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Move `link` (in the caller's namespace) here as `eth0` with `addr`, routing via `gw`.
    pub fn attach(&self, link: &str, addr: &'static str, gw: Option<&'static str>) {
        run("ip", &["link", "set", link, "netns", &self.tid.to_string()]);
        let link = link.to_owned();
        self.run(move || {
            run("ip", &["link", "set", "lo", "up"]);
            run("ip", &["link", "set", &link, "name", "eth0"]);
            run("ip", &["addr", "add", addr, "dev", "eth0"]);
            run("ip", &["link", "set", "eth0", "up"]);
            if let Some(gw) = gw {
                run("ip", &["route", "add", "default", "via", gw]);
            }
        });
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Make the calling thread's namespace a gateway with two hosts on veth pairs, with forwarding
/// on for both families. Returns (lan, inet).
/// - IPv4: a LAN host 192.168.88.2 (default route via the gateway's `lan0` 192.168.88.1) and
///   an internet host 203.0.113.9 on the gateway's `ext` 203.0.113.1 (no route to the LAN: it
///   is behind the NAT).
/// - IPv6: the LAN 2001:db8:1::/64 (gateway ::1, host ::10) and the WAN 2001:db8:ff::/64
///   (gateway ::1, internet host ::2 and ::3, routing to the LAN via the gateway, from ::2 by
///   default). Every address is added `nodad`, so it is usable at once.
pub fn gateway_with_hosts(ext: &str) -> (Host, Host) {
    let lan = Host::new();
    let inet = Host::new();
    run(
        "ip",
        &[
            "link", "add", "lan0", "type", "veth", "peer", "name", "lanpeer",
        ],
    );
    run(
        "ip",
        &[
            "link", "add", ext, "type", "veth", "peer", "name", "wanpeer",
        ],
    );
    lan.attach("lanpeer", "192.168.88.2/24", Some("192.168.88.1"));
    inet.attach("wanpeer", "203.0.113.9/24", None);
    for (link, addr) in [("lan0", "192.168.88.1/24"), (ext, "203.0.113.1/24")] {
        run("ip", &["addr", "add", addr, "dev", link]);
        run("ip", &["link", "set", link, "up"]);
    }
    for (link, addr) in [("lan0", "2001:db8:1::1/64"), (ext, "2001:db8:ff::1/64")] {
        run("ip", &["-6", "addr", "add", addr, "dev", link, "nodad"]);
    }
    lan.run(|| {
        run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                "2001:db8:1::10/64",
                "dev",
                "eth0",
                "nodad",
            ],
        );
        run(
            "ip",
            &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
        );
    });
    inet.run(|| {
        for addr in ["2001:db8:ff::2/64", "2001:db8:ff::3/64"] {
            run("ip", &["-6", "addr", "add", addr, "dev", "eth0", "nodad"]);
        }
        // From ::2 unless a socket binds ::3: both match the destination equally well.
        run(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "2001:db8:1::/64",
                "via",
                "2001:db8:ff::1",
                "src",
                "2001:db8:ff::2",
            ],
        );
    });
    run("ip", &["link", "set", "lo", "up"]);
    run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
    run("sysctl", &["-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
    (lan, inet)
}

/// Run `body` in a thread of its own, in a new network namespace (see the test files' module
/// comments). Fails, never skips, without root.
pub fn in_netns<F: FnOnce() + Send + 'static>(body: F) {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare only changes the calling thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed ({}): these tests must run as root",
            std::io::Error::last_os_error()
        );
        body();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `nft` with whitespace-separated `args`, in the calling thread's namespace.
pub fn nft(args: &str) -> String {
    run("nft", &args.split_whitespace().collect::<Vec<_>>())
}

/// Feed `script` to `nft -f -` in the calling thread's namespace.
pub fn nft_script(script: &str) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed: {script}");
}
