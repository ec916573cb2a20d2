//! Preconditions and commands: required tools and root, `ip`/`nft` inside a namespace, bounded child processes.

use super::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
