//! End-to-end: natpmpd as the systemd unit runs it, without root. The real daemon runs as
//! user nobody with only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, ambient and in the bounding
//! set (`setpriv`, as `AmbientCapabilities=` and `CapabilityBoundingSet=` do), its lease file
//! and control socket in directories that user owns (as `StateDirectory=` and
//! `RuntimeDirectory=` make them). A mapping is made, real traffic passes through it, the
//! owner's `natpmpctl` works, and the leases survive a restart.

use std::ffi::CString;
use std::net::{IpAddr, SocketAddrV4};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::lab::*;

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12), as /proc/PID/status prints them.
const NET_CAPS: u64 = (1 << 10) | (1 << 12);
const CAPS: &str = "-all,+net_admin,+net_bind_service";

fn nobody() -> (u32, u32) {
    let name = CString::new("nobody").unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no user nobody on this system");
    // SAFETY: non-null, as checked.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// `setpriv` arguments that run a program as `uid:gid` with no groups and only the two
/// network capabilities, ambient (so they survive exec, as `nft` needs) and bounding.
fn as_unprivileged(uid: u32, gid: u32) -> Vec<String> {
    vec![
        tool("setpriv").to_str().unwrap().to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        format!("--inh-caps={CAPS}"),
        format!("--ambient-caps={CAPS}"),
        format!("--bounding-set={CAPS}"),
    ]
}

/// A `/proc/PID/status` field, e.g. `Uid` or `CapAmb`.
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn caps(pid: u32, key: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, key), 16).unwrap()
}

/// Copies of natpmpd and natpmpctl in the lab directory, where nobody can run them whatever
/// the checkout's own directories allow (CI's may be under /root).
fn binaries_for_nobody(lab: &Lab) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = lab.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let copy = |from: &str, name: &str| {
        let to = bin.join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    (
        copy(env!("CARGO_BIN_EXE_natpmpd"), "natpmpd"),
        copy(env!("CARGO_BIN_EXE_natpmpctl"), "natpmpctl"),
    )
}

/// Fails clearly when `path` is not reachable for others (a temp dir under /root, say).
fn assert_others_can_enter(path: &Path) {
    for dir in path.ancestors() {
        let mode = std::fs::metadata(dir).unwrap().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is mode {:o}: user nobody cannot reach the lab directory {} (set TMPDIR elsewhere)",
            dir.display(),
            mode & 0o7777,
            path.display()
        );
    }
}

/// A directory owned by `uid:gid` with `mode`.
fn owned_dir(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn as_nobody_with_two_capabilities_it_maps_forwards_and_keeps_its_leases() {
    let mut lab = Lab::new();
    let (uid, gid) = nobody();
    assert_ne!(uid, 0);
    assert_others_can_enter(&lab.dir);
    let (natpmpd, natpmpctl) = binaries_for_nobody(&lab);
    let state = lab.dir.join("state");
    let run = lab.dir.join("run");
    owned_dir(&state, uid, gid, 0o700);
    owned_dir(&run, uid, gid, 0o755);
    let leases = state.join("leases.json");
    let socket = run.join("natpmpd.sock");
    lab.write_config(&lab.config_text_at(&DaemonConfig::default(), &leases, &socket));
    let launch = Launch {
        env: vec![],
        wrapper: as_unprivileged(uid, gid),
        program: Some(natpmpd),
    };
    lab.spawn_daemon_launch(false, &launch);
    lab.wait_ready();

    // It really is unprivileged: nobody, no groups, the two capabilities and nothing else.
    let pid = lab.daemon_pid();
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(pid, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    assert_eq!(status_field(pid, "Groups"), "");
    for key in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(caps(pid, key), NET_CAPS, "{key} of natpmpd");
    }
    assert!(lab.gw_tables().contains("table inet natpmpd"));

    // A mapping, and real TCP from the internet through it to the LAN host.
    let m = natpmpc_map(&lab.lan, GW_LAN, 40000, 8080, Proto::Tcp, 3600);
    assert_eq!(m.public_ip, Some(GW_EXT));
    let ext = m.public_port;
    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080));
    let server = serve_tcp_once(listener, "lan", Duration::from_secs(5));
    let reply = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, ext), "as nobody")
        .unwrap_or_else(|e| panic!("TCP to 203.0.113.1:{ext} failed: {e}"));
    assert_eq!(reply, "lan:as nobody");
    let peer = server
        .join()
        .unwrap()
        .expect("the LAN host saw no connection");
    assert_eq!(peer.ip(), IpAddr::V4(INET_HOST));

    // The control socket is nobody's, 0600, and nobody's natpmpctl lists the mapping.
    let meta = std::fs::metadata(&socket).expect("no control socket");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(meta.mode() & 0o777, 0o600);
    let mut args = as_unprivileged(uid, gid);
    args.extend([
        natpmpctl.to_str().unwrap().to_owned(),
        "--socket".into(),
        socket.to_str().unwrap().to_owned(),
        "print".into(),
        "--json".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_timeout(ns_command(&lab.gw, args[0], &args[1..]), CMD_TIMEOUT).ok();
    assert!(
        out.stdout.contains(&format!("\"dst-port\":{ext}")),
        "nobody's natpmpctl print lacks port {ext}: {out}"
    );

    // SIGTERM: the leases are written, as nobody's, and the table is removed.
    let status = lab.stop_daemon(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let meta = std::fs::metadata(&leases).expect("no lease file after SIGTERM");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    let text = std::fs::read_to_string(&leases).unwrap();
    assert!(text.contains(&ext.to_string()), "{text}");
    assert!(!lab.gw_tables().contains("natpmpd"), "{}", lab.gw_tables());

    // Started again the same way: the mapping is back, and forwards again.
    lab.spawn_daemon_launch(true, &launch);
    lab.wait_ready();
    assert!(
        Lab::eventually(Duration::from_secs(3), || inbound_map_has(
            &lab.inbound_map(),
            "tcp",
            ext,
            "192.168.88.10"
        )),
        "mapping {ext} not restored from nobody's lease file: {}",
        lab.inbound_map()
    );
    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080));
    let server = serve_tcp_once(listener, "lan", Duration::from_secs(5));
    let reply = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, ext), "again")
        .unwrap_or_else(|e| panic!("TCP after the restart failed: {e}"));
    assert_eq!(reply, "lan:again");
    server
        .join()
        .unwrap()
        .expect("no connection after the restart");
    lab.stop_daemon(Duration::from_secs(5));
}
