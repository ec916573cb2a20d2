//! The namespace lab shared by every `e2e_*.rs` test file (`mod lab;`).
//!
//! Each [`Lab`] builds its own four network namespaces with unique names
//! (`npd-<pid>-<n>-{gw,lan,lan2,inet}`) and tears them down in `Drop`, also when the test
//! panics. Every `ip`/`nft` command runs inside one of those namespaces (`ip -n NAME ...` or
//! `ip netns exec NAME ...`); nothing touches the host's interfaces, routes or firewall.
//!
//! ```text
//!   lan  192.168.88.10/24 + .11/24 ──eth0══ether2── gw ──ether1══eth0── inet 203.0.113.2/24 + .3
//!                                     192.168.88.1/24 + .2/24   203.0.113.1/24  (no route back)
//!   lan2 192.168.89.10/24 ──────────eth0══ether3── gw 192.168.89.1/24
//!
//!   IPv6 (no NAT; inet routes the LAN prefix through gw):
//!   lan  2001:db8:1::10/64 + ::11 ── gw 2001:db8:1::1/64 ─ gw 2001:db8:ff::1/64 ── inet ::2 + ::3
//!   lan2 2001:db8:2::10/64 ───────── gw 2001:db8:2::1/64
//! ```
//!
//! The gateway runs the real `natpmpd` binary (`CARGO_BIN_EXE_natpmpd`) with real nftables;
//! the operator's part is set up here: forwarding on for both families, and `table inet lab`
//! with a masquerade for IPv4 and a forward chain that drops by default and accepts only
//! established flows, the LANs' own traffic to the internet, and natpmpd's connection mark:
//! the firewall contract of the README, so every end-to-end test passes through it.
//! Rust code runs inside a namespace through [`in_ns`]: a fresh thread `setns()`es into the
//! namespace and runs the closure; sockets made there stay in that namespace, so they can be
//! handed back and used from any thread.
#![allow(dead_code)]

pub mod pcp;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Once};
use std::thread;
use std::time::{Duration, Instant};

pub const GW_EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const INET_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// A second internet host (an address of inet's too): a remote that a FILTER or PEER leaves out.
pub const INET_HOST_SECOND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
pub const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);
pub const GW_LAN_SECOND: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 2);
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 10);
pub const LAN_HOST_SECOND: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 11);
pub const GW_LAN2: Ipv4Addr = Ipv4Addr::new(192, 168, 89, 1);
pub const LAN2_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 89, 10);
pub const NATPMP_PORT: u16 = 5351;

pub const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const LAN_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub const LAN_HOST6_SECOND: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11);
pub const GW_LAN2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const LAN2_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
pub const GW_EXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
pub const INET_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
pub const INET_HOST6_SECOND: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 3);
/// natpmpd's default `connection-mark`: the lab's forward chain accepts what carries it.
pub const CONNECTION_MARK: u32 = 0x0010_0000;

/// Upper bound for any single helper command (`ip`, `nft`, `natpmpc`, `natpmpctl`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for code run inside a namespace through [`in_ns`].
pub const NS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a reply may take before a UDP exchange counts as "no reply".
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(1500);

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLEAN_STALE: Once = Once::new();

// ---------------------------------------------------------------------------------------------
// Preconditions and commands
// ---------------------------------------------------------------------------------------------

/// Absolute path of a system tool, searching PATH and the sbin directories (sudo and CI may
/// have a short PATH).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').chain([
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]);
    for dir in dirs {
        if dir.is_empty() {
            continue;
        }
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "end-to-end lab: required tool `{name}` is not installed; run `sudo ./scripts/deps.sh` \
         (the lab needs ip, nft and natpmpc)"
    );
}

/// Fails the test loudly when the lab cannot run here: a skipped lab test would hide a broken
/// CI setup.
pub fn require_lab() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end lab: these tests create network namespaces and nftables tables and must run \
         as root; run `sudo ./scripts/test.sh` (CI runs as root)"
    );
    for name in ["ip", "nft", "natpmpc"] {
        tool(name);
    }
    assert!(
        Path::new("/proc/self/ns/net").exists(),
        "end-to-end lab: this kernel has no network namespaces"
    );
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CmdOutput {
    pub cmdline: String,
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// Panics with everything the command printed unless it succeeded.
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed: {self}");
        self
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` -> {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmdline,
            if self.timed_out {
                "TIMED OUT (killed)".to_string()
            } else {
                format!("{:?}", self.status)
            },
            self.stdout,
            self.stderr
        )
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with a deadline; on timeout the command is killed and `timed_out` is set.
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let line = cmdline(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                timed_out = true;
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{line}`: {e}"),
        }
    };
    CmdOutput {
        cmdline: line,
        status,
        timed_out,
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

/// `ip netns exec NS program args...`
pub fn ns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// Runs `ip -n NS args...` and requires success.
pub fn ip_n(ns: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["-n", ns]).args(args);
    run_timeout(cmd, CMD_TIMEOUT).ok()
}

/// Runs `nft args...` inside namespace NS (no success requirement).
pub fn nft_in(ns: &str, args: &[&str]) -> CmdOutput {
    run_timeout(ns_command(ns, tool("nft"), args), CMD_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// Running Rust code inside a namespace
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Sockets and traffic
// ---------------------------------------------------------------------------------------------

/// A UDP socket bound in namespace `ns`, with [`REPLY_TIMEOUT`] as read timeout.
pub fn udp_socket(ns: &str, bind: impl Into<SocketAddr>) -> UdpSocket {
    let bind = bind.into();
    in_ns(ns, move || {
        let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind udp {bind}: {e}"));
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        s
    })
}

/// A TCP listener bound in namespace `ns`.
pub fn tcp_listener(ns: &str, bind: impl Into<SocketAddr>) -> TcpListener {
    let bind = bind.into();
    in_ns(ns, move || {
        TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind tcp {bind}: {e}"))
    })
}

/// Receives one datagram, or `None` when nothing arrives within the socket's read timeout.
pub fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        // ICMP errors from earlier sends surface here on Linux; treat them as "nothing".
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => None,
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// Sends `payload` from `src` (in namespace `ns`) to `dst` and waits for one reply.
pub fn udp_exchange(
    ns: &str,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Option<(Vec<u8>, SocketAddr)> {
    let sock = udp_socket(ns, SocketAddrV4::new(src, 0));
    sock.send_to(payload, dst).expect("send_to");
    recv(&sock)
}

/// Serves one TCP connection on `listener`: reads one line and answers `<tag>:<line>`.
/// Returns the peer address, or `None` if nobody connected within `wait`.
pub fn serve_tcp_once(
    listener: TcpListener,
    tag: &'static str,
    wait: Duration,
) -> thread::JoinHandle<Option<SocketAddr>> {
    thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + wait;
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let line = read_line(&mut stream).unwrap_or_default();
        let _ = stream.write_all(format!("{tag}:{line}\n").as_bytes());
        Some(peer)
    })
}

fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => out.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// From namespace `ns`: connects to `to`, sends `msg` and returns the reply line.
/// Errors (refused, timeout) are returned, not raised.
pub fn tcp_roundtrip(ns: &str, to: SocketAddrV4, msg: &str) -> io::Result<String> {
    let msg = msg.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut s)
    })
}

// ---------------------------------------------------------------------------------------------
// NAT-PMP on the wire (our own minimal client, for cases the real clients cannot express)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn opcode(self) -> u8 {
        match self {
            Proto::Udp => 1,
            Proto::Tcp => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A decoded NAT-PMP map response (P4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReply {
    pub opcode: u8,
    pub result: u16,
    pub epoch: u32,
    pub internal: u16,
    pub external: u16,
    pub lifetime: u32,
}

pub fn map_request(proto: Proto, internal: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[1] = proto.opcode();
    p[4..6].copy_from_slice(&internal.to_be_bytes());
    p[6..8].copy_from_slice(&suggested.to_be_bytes());
    p[8..12].copy_from_slice(&lifetime.to_be_bytes());
    p
}

pub fn parse_map_reply(b: &[u8]) -> MapReply {
    assert_eq!(b.len(), 16, "map reply must be 16 bytes, got {b:02x?}");
    assert_eq!(b[0], 0, "map reply version: {b:02x?}");
    MapReply {
        opcode: b[1],
        result: u16::from_be_bytes([b[2], b[3]]),
        epoch: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        internal: u16::from_be_bytes([b[8], b[9]]),
        external: u16::from_be_bytes([b[10], b[11]]),
        lifetime: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    }
}

/// Sends a NAT-PMP map request from `src` in `ns` to `gw`:5351 and checks the reply comes from
/// there. Panics when no reply arrives (after a few retransmissions).
pub fn map_raw(
    ns: &str,
    src: Ipv4Addr,
    gw: Ipv4Addr,
    proto: Proto,
    internal: u16,
    suggested: u16,
    lifetime: u32,
) -> MapReply {
    let req = map_request(proto, internal, suggested, lifetime);
    let to = SocketAddrV4::new(gw, NATPMP_PORT);
    let sock = udp_socket(ns, SocketAddrV4::new(src, 0));
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for _ in 0..4 {
        sock.send_to(&req, to).expect("send map request");
        if let Some((b, from)) = recv(&sock) {
            assert_eq!(from, SocketAddr::V4(to), "map reply from the wrong address");
            let r = parse_map_reply(&b);
            assert_eq!(r.opcode, 128 + proto.opcode(), "map reply opcode: {b:02x?}");
            return r;
        }
    }
    panic!(
        "no reply from {to} to a {} map request from {src} in {ns}",
        proto.name()
    );
}

// ---------------------------------------------------------------------------------------------
// Real third-party client: natpmpc
// ---------------------------------------------------------------------------------------------

/// What natpmpc printed for a successful mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatpmpcMapping {
    pub public_port: u16,
    pub protocol: String,
    pub private_port: u16,
    pub lifetime: u32,
    pub public_ip: Option<Ipv4Addr>,
}

/// Parses `Mapped public port P protocol TCP to local port L liftime T` (sic) and
/// `Public IP address : A.B.C.D` from natpmpc's output.
pub fn parse_natpmpc(stdout: &str) -> Option<NatpmpcMapping> {
    let public_ip = stdout.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Public IP address :")
            .and_then(|a| a.trim().parse().ok())
    });
    stdout.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 11 && w[0] == "Mapped" && w[1] == "public" && w[2] == "port" {
            Some(NatpmpcMapping {
                public_port: w[3].parse().ok()?,
                protocol: w[5].to_string(),
                private_port: w[9].parse().ok()?,
                lifetime: w[11].parse().ok()?,
                public_ip,
            })
        } else {
            None
        }
    })
}

/// Runs `natpmpc -g GW args...` inside namespace `ns`.
pub fn natpmpc(ns: &str, gw: Ipv4Addr, args: &[&str]) -> CmdOutput {
    let gw = gw.to_string();
    let mut all = vec!["-g", gw.as_str()];
    all.extend_from_slice(args);
    run_timeout(
        ns_command(ns, tool("natpmpc"), &all),
        Duration::from_secs(10),
    )
}

/// `natpmpc -a PUBLIC PRIVATE PROTO LIFETIME`, requiring a mapping in the output.
pub fn natpmpc_map(
    ns: &str,
    gw: Ipv4Addr,
    public: u16,
    private: u16,
    proto: Proto,
    lifetime: u32,
) -> NatpmpcMapping {
    let out = natpmpc(
        ns,
        gw,
        &[
            "-a",
            &public.to_string(),
            &private.to_string(),
            proto.name(),
            &lifetime.to_string(),
        ],
    );
    match parse_natpmpc(&out.stdout) {
        Some(m) if out.success() => m,
        _ => panic!("natpmpc did not report a mapping: {out}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------------

/// What goes into the generated natpmpd configuration.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub enabled: bool,
    pub backend: &'static str,
    pub port_range: &'static str,
    pub max_lifetime: u32,
    pub max_mappings_per_client: u32,
    /// (interface, type, disabled)
    pub interfaces: Vec<(&'static str, &'static str, bool)>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            enabled: true,
            backend: "nftables",
            port_range: "1024-65535",
            max_lifetime: 86400,
            max_mappings_per_client: 256,
            interfaces: vec![
                ("ether1", "external", false),
                ("ether2", "internal", false),
                ("ether3", "internal", false),
            ],
        }
    }
}

struct Daemon {
    child: Child,
}

/// One namespace lab: gw, lan, lan2, inet; the daemon (once started) runs in gw.
pub struct Lab {
    pub gw: String,
    pub lan: String,
    pub lan2: String,
    pub inet: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    daemon: Option<Daemon>,
}

/// The operator's own table, as the README shows it: IPv4 masquerade for the LANs, and a
/// forward chain that drops by default, accepts established flows and the LANs' own traffic
/// out, and natpmpd's connection mark (one rule for both families).
pub fn operator_ruleset() -> String {
    format!(
        "table inet lab {{\n\
         \x20 chain post {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   meta nfproto ipv4 oifname \"ether1\" masquerade\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy drop;\n\
         \x20   ct state established,related accept\n\
         \x20   ct mark & {CONNECTION_MARK:#010x} == {CONNECTION_MARK:#010x} accept\n\
         \x20   iifname {{ \"ether2\", \"ether3\" }} oifname \"ether1\" accept\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Removes namespaces left by earlier test processes that were killed before their `Drop`
/// ran. Only names of the form `npd-<pid>-...` whose pid is no longer alive are touched.
fn remove_stale_namespaces() {
    let Ok(entries) = fs::read_dir("/var/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("npd-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let mut cmd = Command::new(tool("ip"));
            cmd.args(["netns", "del", &name]);
            let _ = run_timeout(cmd, CMD_TIMEOUT);
        }
    }
}

impl Lab {
    /// Builds the topology (see the module docs). Panics with a clear message when the lab
    /// cannot run here (not root, tools missing).
    pub fn new() -> Lab {
        require_lab();
        CLEAN_STALE.call_once(remove_stale_namespaces);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("npd-{}-{}", std::process::id(), n);
        let dir = std::env::temp_dir().join(&prefix);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create lab temp dir");
        let mut lab = Lab {
            gw: format!("{prefix}-gw"),
            lan: format!("{prefix}-lan"),
            lan2: format!("{prefix}-lan2"),
            inet: format!("{prefix}-inet"),
            dir,
            namespaces: Vec::new(),
            daemon: None,
        };
        lab.build();
        lab
    }

    fn build(&mut self) {
        for ns in [&self.gw, &self.lan, &self.lan2, &self.inet] {
            let mut cmd = Command::new(tool("ip"));
            cmd.args(["netns", "add", ns]);
            run_timeout(cmd, CMD_TIMEOUT).ok();
            // Registered at once, so Drop removes it whatever fails later.
            self.namespaces.push(ns.clone());
            // No duplicate address detection: IPv6 addresses, link-local ones included, are
            // usable the moment a link is up, not a second or two later.
            let cmd = ns_command(
                ns,
                "/bin/sh",
                &[
                    "-c",
                    "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
                     echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
                ],
            );
            run_timeout(cmd, CMD_TIMEOUT).ok();
            ip_n(ns, &["link", "set", "lo", "up"]);
        }
        let (gw, lan, lan2, inet) = (&self.gw, &self.lan, &self.lan2, &self.inet);
        // veth pairs are created inside gw with the peer placed straight into the other
        // namespace, so no interface ever exists in the host namespace.
        for (gw_if, peer_ns) in [("ether1", inet), ("ether2", lan), ("ether3", lan2)] {
            ip_n(
                gw,
                &[
                    "link", "add", gw_if, "type", "veth", "peer", "name", "eth0", "netns", peer_ns,
                ],
            );
            ip_n(gw, &["link", "set", gw_if, "up"]);
            ip_n(peer_ns, &["link", "set", "eth0", "up"]);
        }
        ip_n(gw, &["addr", "add", "203.0.113.1/24", "dev", "ether1"]);
        ip_n(gw, &["addr", "add", "192.168.88.1/24", "dev", "ether2"]);
        ip_n(gw, &["addr", "add", "192.168.88.2/24", "dev", "ether2"]);
        ip_n(gw, &["addr", "add", "192.168.89.1/24", "dev", "ether3"]);
        // .10 first: it is the primary address, so clients that cannot bind (natpmpc, the
        // crates) use it as their source.
        ip_n(lan, &["addr", "add", "192.168.88.10/24", "dev", "eth0"]);
        ip_n(lan, &["addr", "add", "192.168.88.11/24", "dev", "eth0"]);
        ip_n(lan, &["route", "add", "default", "via", "192.168.88.1"]);
        ip_n(lan2, &["addr", "add", "192.168.89.10/24", "dev", "eth0"]);
        ip_n(lan2, &["route", "add", "default", "via", "192.168.89.1"]);
        // inet deliberately has no route to the LAN subnets: only forwards reach the LAN.
        ip_n(inet, &["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
        ip_n(inet, &["addr", "add", "203.0.113.3/24", "dev", "eth0"]);

        // IPv6: no DAD (`nodad`), so the addresses are usable at once.
        for (ns, addr, dev) in [
            (gw, "2001:db8:1::1/64", "ether2"),
            (gw, "2001:db8:2::1/64", "ether3"),
            (gw, "2001:db8:ff::1/64", "ether1"),
            (lan, "2001:db8:1::10/64", "eth0"),
            (lan2, "2001:db8:2::10/64", "eth0"),
            (inet, "2001:db8:ff::2/64", "eth0"),
            (inet, "2001:db8:ff::3/64", "eth0"),
        ] {
            ip_n(ns, &["-6", "addr", "add", addr, "dev", dev, "nodad"]);
        }
        ip_n(
            lan,
            &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
        );
        ip_n(
            lan2,
            &["-6", "route", "add", "default", "via", "2001:db8:2::1"],
        );
        // There is no NAT on IPv6: the internet routes the LAN prefixes to the gateway.
        ip_n(
            inet,
            &[
                "-6",
                "route",
                "add",
                "2001:db8::/32",
                "via",
                "2001:db8:ff::1",
            ],
        );

        // The operator's part: forwarding for both families and their own table.
        // (/proc/sys/net follows the network namespace of the writing process.)
        let cmd = ns_command(
            gw,
            "/bin/sh",
            &[
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward && \
                 echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
            ],
        );
        run_timeout(cmd, CMD_TIMEOUT).ok();
        let rules = self.dir.join("lab.nft");
        // Replacing any earlier version of the table, so a reload always leaves exactly this.
        fs::write(
            &rules,
            format!(
                "table inet lab {{}}\ndelete table inet lab\n{}",
                operator_ruleset()
            ),
        )
        .unwrap();
        nft_in(gw, &["-f", rules.to_str().unwrap()]).ok();
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("natpmpd.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("natpmpd.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("natpmpd.log")
    }

    /// The TOML the daemon gets for `cfg`.
    pub fn config_text(&self, cfg: &DaemonConfig) -> String {
        let mut s = format!(
            "enabled = {}\nlease-file = \"{}\"\ncontrol-socket = \"{}\"\nbackend = \"{}\"\n\
             port-range = \"{}\"\nmax-lifetime = {}\nmax-mappings-per-client = {}\n",
            cfg.enabled,
            self.dir.join("leases.json").display(),
            self.control_socket().display(),
            cfg.backend,
            cfg.port_range,
            cfg.max_lifetime,
            cfg.max_mappings_per_client,
        );
        for (name, kind, disabled) in &cfg.interfaces {
            s.push_str(&format!(
                "\n[[interfaces]]\ninterface = \"{name}\"\ntype = \"{kind}\"\ndisabled = {disabled}\n"
            ));
        }
        s
    }

    /// Starts natpmpd in gw without waiting for it to answer.
    pub fn spawn_daemon(&mut self, cfg: &DaemonConfig) {
        fs::write(self.config_path(), self.config_text(cfg)).unwrap();
        self.launch(false);
    }

    /// Spawns natpmpd in gw on the configuration file in place, its output going to the log
    /// (appended to, after a marker line, when `again`). Returns the moment just before the
    /// spawn.
    fn launch(&mut self, again: bool) -> Instant {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = self.log_path();
        let mut stderr = if again {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        } else {
            fs::File::create(&log).unwrap()
        };
        if again {
            let _ = writeln!(stderr, "===== lab: natpmpd started again =====");
        }
        let stdout = stderr.try_clone().unwrap();
        let config = self.config_path();
        let mut cmd = ns_command(
            &self.gw,
            env!("CARGO_BIN_EXE_natpmpd"),
            &["--config", config.to_str().unwrap()],
        );
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let t0 = Instant::now();
        let child = cmd.spawn().expect("start natpmpd");
        self.daemon = Some(Daemon { child });
        t0
    }

    /// Starts natpmpd in gw and waits until it answers an external-address request from lan.
    pub fn start_daemon(&mut self, cfg: &DaemonConfig) {
        self.spawn_daemon(cfg);
        self.wait_ready();
    }

    /// Starts natpmpd with the default configuration (nftables; ether2 and ether3 internal).
    pub fn start_default(&mut self) {
        self.start_daemon(&DaemonConfig::default());
    }

    /// Waits (up to 10 s) until natpmpd answers `00 00` sent from lan to 192.168.88.1:5351.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let sock = udp_socket(&self.lan, SocketAddrV4::new(LAN_HOST, 0));
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        loop {
            self.assert_daemon_running();
            let _ = sock.send_to(&[0, 0], SocketAddrV4::new(GW_LAN, NATPMP_PORT));
            if let Some((b, _)) = recv(&sock) {
                if b.len() == 12 && b[1] == 0x80 && b[2..4] == [0, 0] {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "natpmpd did not answer an external-address request within 10 s"
            );
        }
    }

    /// Panics (with the daemon's log) if natpmpd has exited.
    pub fn assert_daemon_running(&mut self) {
        let d = self.daemon.as_mut().expect("daemon not started");
        if let Some(st) = d.child.try_wait().unwrap() {
            panic!("natpmpd exited early with {st}");
        }
    }

    /// Sends SIGTERM and waits (up to `wait`) for natpmpd to exit; returns its exit status.
    pub fn stop_daemon(&mut self, wait: Duration) -> Option<ExitStatus> {
        let mut d = self.daemon.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + wait;
        loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = d.child.kill();
                let _ = d.child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// natpmpd's stderr so far.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `natpmpctl --socket PATH print --json`, parsed.
    pub fn print_json(&self) -> serde_json::Value {
        let sock = self.control_socket();
        let out = run_timeout(
            ns_command(
                &self.gw,
                env!("CARGO_BIN_EXE_natpmpctl"),
                &["--socket", sock.to_str().unwrap(), "print", "--json"],
            ),
            CMD_TIMEOUT,
        )
        .ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("natpmpctl print --json is not JSON ({e}): {out}"))
    }

    /// The `mappings` array of `natpmpctl print --json`.
    pub fn mappings(&self) -> Vec<serde_json::Value> {
        let v = self.print_json();
        v.get("mappings")
            .and_then(|m| m.as_array())
            .unwrap_or_else(|| panic!("no `mappings` array in {v}"))
            .clone()
    }

    /// `nft list map inet natpmpd inbound` in gw (stdout; panics if the command fails).
    pub fn inbound_map(&self) -> String {
        nft_in(&self.gw, &["list", "map", "inet", "natpmpd", "inbound"])
            .ok()
            .stdout
    }

    /// `nft list tables` in gw.
    pub fn gw_tables(&self) -> String {
        nft_in(&self.gw, &["list", "tables"]).ok().stdout
    }

    /// Polls `cond` every 100 ms until it holds or `within` passes; returns whether it held.
    pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failing = thread::panicking();
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while d.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        if failing {
            eprintln!("===== natpmpd stderr ({}) =====", self.log_path().display());
            eprintln!("{}", self.daemon_log());
            if self.namespaces.contains(&self.gw) {
                let rs = nft_in(&self.gw, &["list", "ruleset"]);
                eprintln!(
                    "===== nft list ruleset in gw =====\n{}{}",
                    rs.stdout, rs.stderr
                );
            }
            if let Ok(cfg) = fs::read_to_string(self.config_path()) {
                eprintln!("===== config =====\n{cfg}");
            }
        }
        for ns in self.namespaces.drain(..) {
            let mut cmd = Command::new(tool("ip"));
            cmd.args(["netns", "del", &ns]);
            let out = run_timeout(cmd, CMD_TIMEOUT);
            if !out.success() {
                eprintln!("lab cleanup: {out}");
            }
        }
        if std::env::var_os("NPD_KEEP_LAB_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durability helpers: restarts, signals, config rewrites, long-running echo servers
// ---------------------------------------------------------------------------------------------

/// Whether `nft list map inet natpmpd inbound` output holds `proto . ext : ip . port`.
pub fn inbound_map_has(map: &str, proto: &str, ext: u16, to: &str) -> bool {
    map.split([',', '{', '}', '\n'])
        .map(str::trim)
        .any(|e| e.starts_with(&format!("{proto} . {ext} ")) && e.contains(to))
}

/// The `[[interfaces]]` list of [`DaemonConfig::default`] without ether3.
pub fn interfaces_without_ether3() -> Vec<(&'static str, &'static str, bool)> {
    vec![("ether1", "external", false), ("ether2", "internal", false)]
}

impl Lab {
    /// Where the generated configuration puts the lease file.
    pub fn lease_path(&self) -> PathBuf {
        self.dir.join("leases.json")
    }

    /// [`Lab::config_text`] with `extra` top-level lines (e.g. `hairpin = false\n`) placed
    /// before the first `[[interfaces]]` table.
    pub fn config_text_with(&self, cfg: &DaemonConfig, extra: &str) -> String {
        let base = self.config_text(cfg);
        match base.find("\n[[interfaces]]") {
            Some(i) => format!("{}{}{}", &base[..i + 1], extra, &base[i + 1..]),
            None => format!("{base}{extra}"),
        }
    }

    /// Overwrites the daemon's configuration file (for reloads and restarts).
    pub fn write_config(&self, text: &str) {
        fs::write(self.config_path(), text).unwrap();
    }

    /// Starts natpmpd with whatever configuration file is in place now (same lease file),
    /// appending to the existing log. Returns the moment just before the spawn.
    pub fn respawn_daemon(&mut self) -> Instant {
        self.launch(true)
    }

    /// Writes the configuration for `cfg` plus `extra` top-level lines, then starts natpmpd
    /// and waits until it answers.
    pub fn start_daemon_with(&mut self, cfg: &DaemonConfig, extra: &str) {
        self.write_config(&self.config_text_with(cfg, extra));
        self.launch(false);
        self.wait_ready();
    }

    /// The pid of the running daemon (the `ip netns exec` child execs natpmpd, so this is
    /// natpmpd itself).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon not started").child.id()
    }

    /// Whether the daemon process is still alive (not exited, not a zombie); `&self` only.
    pub fn daemon_alive(&self) -> bool {
        let Some(d) = self.daemon.as_ref() else {
            return false;
        };
        match fs::read_to_string(format!("/proc/{}/stat", d.child.id())) {
            // The state follows the parenthesised command name: `pid (comm) S ...`.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }

    /// Sends `sig` to the running daemon.
    pub fn signal_daemon(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.daemon_pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}): {}", io::Error::last_os_error());
    }

    /// `kill -9` the daemon (no chance to save or clean up) and reap it.
    pub fn kill_daemon_hard(&mut self) -> Option<ExitStatus> {
        let mut d = self.daemon.take()?;
        let _ = d.child.kill();
        d.child.wait().ok()
    }

    /// `natpmpctl --socket S ARGS...` run in gw (no success requirement).
    pub fn natpmpctl(&self, args: &[&str]) -> CmdOutput {
        let sock = self.control_socket();
        let mut all = vec!["--socket", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        run_timeout(
            ns_command(&self.gw, env!("CARGO_BIN_EXE_natpmpctl"), &all),
            CMD_TIMEOUT,
        )
    }

    /// Waits (up to `within`) until the daemon's log contains `needle` at least `count` times.
    pub fn wait_log_count(&self, needle: &str, count: usize, within: Duration) -> bool {
        Lab::eventually(within, || {
            self.daemon_log().matches(needle).count() >= count
        })
    }

    /// Puts the operator's own `table inet lab` back, e.g. after `nft flush ruleset`.
    pub fn reload_lab_rules(&self) {
        let rules = self.dir.join("lab.nft");
        nft_in(&self.gw, &["-f", rules.to_str().unwrap()]).ok();
    }

    /// Sends an external-address request (`00 00`) from lan to 192.168.88.1:5351 and returns
    /// (result code, SSSoE, address), or `None` without a reply.
    pub fn address_request(&self) -> Option<(u16, u32, Ipv4Addr)> {
        address_request_from(&self.lan, LAN_HOST, GW_LAN)
    }
}

/// An external-address request from `src` in `ns` to `gw`:5351 (two tries):
/// (result code, SSSoE, address).
pub fn address_request_from(ns: &str, src: Ipv4Addr, gw: Ipv4Addr) -> Option<(u16, u32, Ipv4Addr)> {
    let sock = udp_socket(ns, SocketAddrV4::new(src, 0));
    sock.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    for _ in 0..2 {
        sock.send_to(&[0, 0], SocketAddrV4::new(gw, NATPMP_PORT))
            .unwrap();
        if let Some((b, _)) = recv(&sock) {
            assert_eq!(b.len(), 12, "address reply length: {b:02x?}");
            assert_eq!(&b[..2], &[0, 0x80], "address reply header: {b:02x?}");
            return Some((
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                Ipv4Addr::new(b[8], b[9], b[10], b[11]),
            ));
        }
    }
    None
}

/// A TCP server in a namespace answering every connection with `<tag>:<line>`, until dropped
/// (or 180 s at most, so a forgotten server cannot keep a test alive).
pub struct EchoServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peers: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    /// The peers seen so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

const ECHO_MAX: Duration = Duration::from_secs(180);

/// Starts a TCP [`EchoServer`] on `bind` in `ns`.
pub fn tcp_echo_server(ns: &str, bind: impl Into<SocketAddr>, tag: &'static str) -> EchoServer {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    let listener = tcp_listener(ns, bind);
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (s, p) = (stop.clone(), peers.clone());
    let handle = thread::spawn(move || {
        let end = Instant::now() + ECHO_MAX;
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    p.lock().unwrap().push(peer);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                    let line = read_line(&mut stream).unwrap_or_default();
                    let _ = stream.write_all(format!("{tag}:{line}\n").as_bytes());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    EchoServer {
        stop,
        peers,
        handle: Some(handle),
    }
}

/// Starts a UDP [`EchoServer`] on `bind` in `ns`: every datagram is answered with
/// `<tag>:<payload>` to its sender.
pub fn udp_echo_server(ns: &str, bind: impl Into<SocketAddr>, tag: &'static str) -> EchoServer {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    let sock = udp_socket(ns, bind);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (s, p) = (stop.clone(), peers.clone());
    let handle = thread::spawn(move || {
        let end = Instant::now() + ECHO_MAX;
        let mut buf = [0u8; 1500];
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                p.lock().unwrap().push(from);
                let mut reply = format!("{tag}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    EchoServer {
        stop,
        peers,
        handle: Some(handle),
    }
}

/// From a fresh socket (a new source port, so no stale conntrack entry is reused) in `ns`:
/// sends `msg` to `to` and returns the reply and where it came from.
pub fn udp_roundtrip(ns: &str, to: SocketAddrV4, msg: &str) -> Option<(String, SocketAddr)> {
    let sock = udp_socket(ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    sock.send_to(msg.as_bytes(), to).ok()?;
    recv(&sock).map(|(b, from)| (String::from_utf8_lossy(&b).into_owned(), from))
}

/// Like [`tcp_roundtrip`] but from source address `src` (bound before connecting), with a
/// connect timeout of `connect_within`.
pub fn tcp_roundtrip_from(
    ns: &str,
    src: impl Into<std::net::IpAddr>,
    to: impl Into<SocketAddr>,
    msg: &str,
    connect_within: Duration,
) -> io::Result<String> {
    let msg = msg.to_string();
    let (src, to) = (src.into(), to.into());
    in_ns_async(ns, move || async move {
        let sock = if src.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.bind(SocketAddr::new(src, 0))?;
        let stream = tokio::time::timeout(connect_within, sock.connect(to))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let mut s = stream.into_std()?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut s)
    })
}

/// A quick TCP probe from `ns` to `to`: connect (within `within`), send, and expect
/// `<tag>:<msg>` back.
pub fn tcp_probe(ns: &str, to: impl Into<SocketAddr>, tag: &str, within: Duration) -> bool {
    let msg = "probe";
    let to = to.into();
    let r = in_ns(ns, move || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, within)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut s)
    });
    matches!(r, Ok(line) if line == format!("{tag}:{msg}"))
}

/// A UDP socket in `ns` bound to 224.0.0.1:5350 that receives NAT-PMP announcements.
pub fn announcement_socket(ns: &str, iface_addr: Ipv4Addr) -> UdpSocket {
    let group = Ipv4Addr::new(224, 0, 0, 1);
    in_ns(ns, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(group, 5350)).expect("bind 224.0.0.1:5350");
        let _ = s.join_multicast_v4(&group, &iface_addr);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        s
    })
}

/// Collects everything `sock` receives (with arrival times) until `until`.
pub fn collect_datagrams(
    sock: UdpSocket,
    until: Instant,
) -> thread::JoinHandle<Vec<(Instant, Vec<u8>, SocketAddr)>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                got.push((Instant::now(), buf[..n].to_vec(), from));
            }
        }
        got
    })
}

/// A lab with the daemon running and two live mappings of the LAN host, each with an echo
/// server behind it: TCP 8080 and UDP 9000, asked for on external ports 40080 and 40090.
/// TCP through the first is checked before this returns.
pub struct Setup {
    pub lab: Lab,
    pub tcp: u16,
    pub udp: u16,
    /// The echo servers behind the two mappings (they record who connected).
    pub tcp_srv: EchoServer,
    pub udp_srv: EchoServer,
}

pub fn setup() -> Setup {
    setup_with("")
}

/// `setup` with `extra` top-level configuration keys (e.g. `hairpin = false`).
pub fn setup_with(extra: &str) -> Setup {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), extra);
    let tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let udp_srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600).public_port;
    let udp = natpmpc_map(&lab.lan, GW_LAN, 40090, 9000, Proto::Udp, 3600).public_port;
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, tcp),
        "lan-tcp",
        Duration::from_secs(2)
    ));
    Setup {
        lab,
        tcp,
        udp,
        tcp_srv,
        udp_srv,
    }
}
