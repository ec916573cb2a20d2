//! The daemon in the lab: its generated configuration, start, readiness, stop, signals, restarts, logs and what `natpmpctl` says.

use super::*;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

/// How natpmpd is started beyond its configuration file: extra environment variables (systemd's
/// `NOTIFY_SOCKET`, say), and a program it is run through (`setpriv ...` to drop root).
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub env: Vec<(String, String)>,
    /// `ip netns exec GW WRAPPER... natpmpd --config FILE`; the wrapper must exec natpmpd, so
    /// the child's pid stays natpmpd's.
    pub wrapper: Vec<String>,
    /// The natpmpd binary; cargo's when `None`.
    pub program: Option<PathBuf>,
}

/// The running natpmpd of a lab.
pub(super) struct Daemon {
    pub(super) child: Child,
}

impl Lab {
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
        self.config_text_at(cfg, &self.lease_path(), &self.control_socket())
    }

    /// [`Lab::config_text`] with the lease file and control socket elsewhere.
    pub fn config_text_at(
        &self,
        cfg: &DaemonConfig,
        lease_file: &std::path::Path,
        control_socket: &std::path::Path,
    ) -> String {
        let mut s = format!(
            "enabled = {}\nlease-file = \"{}\"\ncontrol-socket = \"{}\"\nbackend = \"{}\"\n\
             port-range = \"{}\"\nmax-lifetime = {}\nmax-mappings-per-client = {}\n",
            cfg.enabled,
            lease_file.display(),
            control_socket.display(),
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
        self.launch_with(again, &Launch::default())
    }

    /// Starts natpmpd on the configuration file in place, as `launch` says, without waiting
    /// for it to answer (a fresh log unless `again`). Returns the moment just before the spawn.
    pub fn spawn_daemon_launch(&mut self, again: bool, launch: &Launch) -> Instant {
        self.launch_with(again, launch)
    }

    fn launch_with(&mut self, again: bool, launch: &Launch) -> Instant {
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
        let mut args: Vec<&str> = launch.wrapper.iter().map(String::as_str).collect();
        let program = launch
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_natpmpd")));
        args.extend([
            program.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]);
        let mut cmd = ns_command(&self.gw, args[0], &args[1..]);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
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
