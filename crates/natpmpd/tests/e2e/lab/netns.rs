//! Running Rust code inside a namespace: a fresh thread `setns()`es into it and runs the closure.

use super::*;
use std::fs;
use std::io::{self};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Moves the calling thread into network namespace `ns` (a name under /var/run/netns).
pub fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; it only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", io::Error::last_os_error());
}

/// A closure running on its own thread inside a namespace.
pub struct NsTask<T> {
    what: String,
    rx: mpsc::Receiver<thread::Result<T>>,
}

impl<T> NsTask<T> {
    /// Waits for the result; panics (re-raising the closure's panic) on failure or timeout.
    pub fn join(self, timeout: Duration) -> T {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(v)) => v,
            Ok(Err(p)) => std::panic::resume_unwind(p),
            Err(_) => panic!("{} did not finish within {timeout:?}", self.what),
        }
    }
}

/// Starts `f` on a new thread inside namespace `ns`.
pub fn spawn_in_ns<T, F>(ns: &str, f: F) -> NsTask<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let name = ns.to_string();
    thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            enter_netns(&name);
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
        })
        .expect("spawn namespace thread");
    NsTask {
        what: format!("code in namespace {ns}"),
        rx,
    }
}

/// Runs `f` inside namespace `ns` and returns its result (bounded by [`NS_TIMEOUT`]).
pub fn in_ns<T, F>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in_ns(ns, f).join(NS_TIMEOUT)
}

/// Runs an async block inside namespace `ns` on a current-thread tokio runtime.
pub fn in_ns_async<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    in_ns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}
