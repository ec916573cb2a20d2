//! The service manager's notification protocol (sd_notify(3)), written here rather than taken
//! from a crate: it is one datagram of `KEY=VALUE` lines to the Unix socket in
//! `$NOTIFY_SOCKET`.
//!
//! - `READY=1` once port 5351 is open and the table installed (or, with `enabled = false`,
//!   once the daemon is up and idle), with `STATUS=` naming the external address and the
//!   number of mappings; `STATUS=` again whenever that line changes.
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, from the event loop itself (the driver ticks
//!   [`Notifier::watchdog_interval`] in its `select!`), so a loop that is stuck stops the
//!   pings and systemd restarts the service. Only when `$WATCHDOG_PID` is unset or our pid.
//! - `RELOADING=1` with `MONOTONIC_USEC=` (what systemd's notify-reload protocol asks for)
//!   when a reload starts, `READY=1` when it has ended either way.
//! - `STOPPING=1` on SIGTERM or SIGINT.
//!
//! Without `$NOTIFY_SOCKET` (not run by systemd) every call does nothing. A send that fails
//! is logged at debug level and otherwise ignored: the daemon's work never depends on the
//! service manager hearing it.

use natpmp_pcp_core::kernel::Forwarder;
use natpmp_pcp_core::Gateway;
use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::rc::Rc;
use std::time::Duration;
use tracing::{debug, warn};

/// Longest a notification may hold the event loop up when the manager's queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Where notifications go, if anywhere, and the watchdog interval asked for.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Rc<Target>>,
    watchdog: Option<Duration>,
    /// The last `STATUS=` sent, so an unchanged line is not sent again.
    status: String,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Target {
    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            debug!("service manager notification not sent ({e}): {message:?}");
        }
    }
}

/// Sends `READY=1` when dropped: returned by [`Notifier::reloading`], so the end of a reload
/// is reported on every way out of it.
#[must_use = "READY=1 is sent when this is dropped"]
pub struct Reloading {
    target: Option<Rc<Target>>,
}

impl Drop for Reloading {
    fn drop(&mut self) {
        if let Some(t) = &self.target {
            t.send("READY=1");
        }
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A value that cannot be
    /// used is logged and left out, never fatal.
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Notifier::disabled();
        };
        let target = match connect(&path) {
            Ok(t) => t,
            Err(e) => {
                warn!("NOTIFY_SOCKET={path:?}: {e}; not notifying the service manager");
                return Notifier::disabled();
            }
        };
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog = match watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
        {
            Ok(w) => w,
            Err(e) => {
                warn!("{e}; no watchdog pings");
                None
            }
        };
        if let Some(w) = watchdog {
            debug!("watchdog: pinging the service manager every {w:?}");
        }
        Notifier {
            target: Some(Rc::new(target)),
            watchdog,
            status: String::new(),
        }
    }

    /// Whether anything is sent at all.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often the event loop must call [`Notifier::watchdog`]: half of `$WATCHDOG_USEC`,
    /// as sd_watchdog_enabled(3) recommends; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// The timer the event loop pings on, if there is a watchdog. A late tick is followed by
    /// a full interval, not a burst of catch-up pings.
    pub fn watchdog_timer(&self) -> Option<tokio::time::Interval> {
        self.watchdog.map(|period| {
            let mut timer = tokio::time::interval(period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        })
    }

    /// `READY=1` with the status line.
    pub fn ready(&mut self, status: &str) {
        let status = one_line(status);
        self.send(&format!("READY=1\nSTATUS={status}"));
        self.status = status;
    }

    /// `STATUS=` if the line differs from the last one sent. `make` is called only when there
    /// is a service manager to tell.
    pub fn set_status(&mut self, make: impl FnOnce() -> String) {
        if self.target.is_none() {
            return;
        }
        let status = one_line(&make());
        if status != self.status {
            self.send(&format!("STATUS={status}"));
            self.status = status;
        }
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `RELOADING=1` now, `READY=1` when the returned guard is dropped.
    pub fn reloading(&self) -> Reloading {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        Reloading {
            target: self.target.clone(),
        }
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        if let Some(t) = &self.target {
            t.send(message);
        }
    }
}

/// Waits for the next watchdog tick; never, without a watchdog (a branch of the driver's
/// `select!` that then simply never fires).
pub async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The status line: what systemctl status shows next to the unit.
pub fn status_line<F: Forwarder>(gateway: &Gateway<F>) -> String {
    if !gateway.serving() {
        return "disabled (enabled = false): port 5351 closed".to_owned();
    }
    let interface = gateway.external_interface().unwrap_or("none");
    let address = match gateway.engine().external_address() {
        Some(a) => format!("external address {a} on {interface}"),
        None => format!("no external address on {interface}"),
    };
    let n = gateway.engine().len();
    format!(
        "serving on port 5351; {address}; {n} mapping{}",
        if n == 1 { "" } else { "s" }
    )
}

/// A socket aimed at `path`: a file system path (`/run/systemd/notify`) or, with a leading
/// `@`, a name in the abstract namespace.
fn connect(path: &OsStr) -> Result<Target, String> {
    let address = parse_address(path)?;
    let socket = UnixDatagram::unbound().map_err(|e| format!("cannot make a socket: {e}"))?;
    socket
        .set_write_timeout(Some(SEND_TIMEOUT))
        .map_err(|e| format!("cannot set a send timeout: {e}"))?;
    Ok(Target { socket, address })
}

fn parse_address(path: &OsStr) -> Result<SocketAddr, String> {
    let bytes = path.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(path),
        _ => return Err("not a socket path (one starting with / or, abstract, with @)".to_owned()),
    }
    .map_err(|e| format!("not a usable socket address: {e}"))
}

/// Half the watchdog timeout, if the watchdog is on and meant for `our_pid`.
fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        match pid.parse::<u32>() {
            // The watchdog is another process's (a wrapper that started us, say).
            Ok(p) if p != our_pid => return Ok(None),
            Ok(_) => {}
            Err(_) => return Err(format!("WATCHDOG_PID={pid:?} is not a process id")),
        }
    }
    match usec.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "WATCHDOG_USEC={usec:?} is not a positive number of microseconds"
        )),
        Ok(u) => Ok(Some(
            Duration::from_micros(u / 2).max(Duration::from_millis(1)),
        )),
    }
}

/// STATUS= takes one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC= with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which outlives the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn receiver() -> (UnixDatagram, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "natpmpd-notify-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        (socket, path)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("no notification arrived");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn notifier_for(path: &OsStr) -> Notifier {
        Notifier {
            target: Some(Rc::new(connect(path).unwrap())),
            watchdog: None,
            status: String::new(),
        }
    }

    #[test]
    fn messages_arrive_in_the_protocol_format() {
        let (rx, path) = receiver();
        let mut n = notifier_for(path.as_os_str());
        n.ready("serving\nwith a newline");
        assert_eq!(recv(&rx), "READY=1\nSTATUS=serving with a newline");
        n.watchdog();
        assert_eq!(recv(&rx), "WATCHDOG=1");
        {
            let _guard = n.reloading();
            let msg = recv(&rx);
            let usec = msg
                .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
                .unwrap_or_else(|| panic!("{msg:?}"));
            let usec: u64 = usec.parse().unwrap();
            assert!(usec.abs_diff(monotonic_usec()) < 5_000_000, "{usec}");
        }
        assert_eq!(recv(&rx), "READY=1", "the guard's drop ends the reload");
        n.stopping();
        assert_eq!(recv(&rx), "STOPPING=1");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn status_is_sent_only_when_it_changes() {
        let (rx, path) = receiver();
        let mut n = notifier_for(path.as_os_str());
        n.ready("a");
        assert_eq!(recv(&rx), "READY=1\nSTATUS=a");
        n.set_status(|| "a".into());
        n.set_status(|| "b".into());
        n.set_status(|| "b".into());
        n.stopping();
        assert_eq!(recv(&rx), "STATUS=b");
        assert_eq!(
            recv(&rx),
            "STOPPING=1",
            "an unchanged STATUS= was sent again"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn abstract_names_start_with_an_at_sign() {
        let name = format!("natpmpd-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = notifier_for(&OsString::from(format!("@{name}")));
        n.watchdog();
        assert_eq!(recv(&rx), "WATCHDOG=1");
    }

    #[test]
    fn addresses_that_are_not_sockets_are_refused() {
        for bad in ["", "relative/path", "vsock:2:1234"] {
            assert!(parse_address(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(parse_address(OsStr::new(&long)).is_err());
    }

    #[test]
    fn a_disabled_notifier_does_nothing() {
        let mut n = Notifier::disabled();
        assert!(!n.enabled());
        n.set_status(|| unreachable!("no status is made without a manager"));
        n.ready("x");
        n.watchdog();
        drop(n.reloading());
        n.stopping();
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("3000000"), None, 42),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            watchdog_interval(Some("3000000"), Some("42"), 42),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(watchdog_interval(Some("3000000"), Some("43"), 42), Ok(None));
        assert_eq!(watchdog_interval(None, Some("42"), 42), Ok(None));
        assert_eq!(watchdog_interval(Some(""), None, 42), Ok(None));
        assert!(watchdog_interval(Some("0"), None, 42).is_err());
        assert!(watchdog_interval(Some("soon"), None, 42).is_err());
        assert!(watchdog_interval(Some("1000"), Some("me"), 42).is_err());
    }
}
