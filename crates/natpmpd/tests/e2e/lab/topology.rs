//! The lab itself: four namespaces joined by veth pairs, the operator's ruleset, and their removal (also when a test panics).

use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// One namespace lab: gw, lan, lan2, inet; the daemon (once started) runs in gw.
pub struct Lab {
    pub gw: String,
    pub lan: String,
    pub lan2: String,
    pub inet: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    pub(super) daemon: Option<Daemon>,
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
