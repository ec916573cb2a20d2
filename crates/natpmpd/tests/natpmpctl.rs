//! The `natpmpctl` binary against a fake daemon: the real control socket server
//! (`control::bind` + `control::serve`) answering canned mappings, on a socket in a temp dir.

use natpmp_pcp_core::view::{MappingKind, Via};
use natpmp_pcp_core::{MappingView, Protocol};
use natpmpd::control::{self, Request, Response};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "natpmpctl-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A control socket served on its own thread, answering every request with `reply`.
struct FakeDaemon {
    dir: PathBuf,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(reply: Response) -> FakeDaemon {
        let dir = temp_dir();
        let socket = dir.join("run/natpmpd.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = control::bind(&path, None).unwrap();
                let (tx, mut rx) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(4);
                tokio::spawn(control::serve(listener, tx));
                ready_tx.send(()).unwrap();
                let answer = async move {
                    while let Some((Request::Print, sender)) = rx.recv().await {
                        let _ = sender.send(reply.clone());
                    }
                };
                tokio::select! {
                    () = answer => {}
                    _ = stopped => {}
                }
            });
        });
        ready_rx.recv().expect("the fake daemon started");
        FakeDaemon {
            dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mappings() -> Response {
    Response {
        ok: true,
        error: None,
        external_interface: Some("ether1".into()),
        status: None,
        removed: Vec::new(),
        mappings: vec![
            MappingView {
                client: Ipv4Addr::new(192, 168, 88, 10).into(),
                protocol: Protocol::Tcp,
                internal_port: 8080,
                external_addr: Some(Ipv4Addr::new(203, 0, 113, 1).into()),
                external_port: 40000,
                lifetime: 7200,
                expires_in: 7198,
                via: Via::NatPmp,
                kind: MappingKind::Map,
                nonce_owned: false,
                remote: None,
                filters: Vec::new(),
                description: None,
            },
            MappingView {
                client: Ipv4Addr::new(192, 168, 88, 11).into(),
                protocol: Protocol::Udp,
                internal_port: 5000,
                external_addr: None,
                external_port: 45000,
                lifetime: 93784,
                expires_in: 0,
                via: Via::Pcp,
                kind: MappingKind::Map,
                nonce_owned: true,
                remote: None,
                filters: vec!["198.51.100.0/24".into()],
                description: Some("ApplicationX".into()),
            },
        ],
    }
}

fn natpmpctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natpmpctl"))
        .args(args)
        .output()
        .expect("run natpmpctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn socket_arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[test]
fn print_text() {
    let daemon = FakeDaemon::start(mappings());
    let out = natpmpctl(&["--socket", &socket_arg(&daemon.socket), "print"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Flags: X - disabled, I - invalid, D - dynamic\n\
         \x200  D ;;; nat-pmp 192.168.88.10: NAT-PMP tcp 8080\n\
         \x20     chain=dstnat action=dst-nat to-addresses=192.168.88.10 to-ports=8080 \
         protocol=tcp dst-address=203.0.113.1 in-interface=ether1 dst-port=40000 \
         lifetime=2h left=1h59m58s via=nat-pmp\n\
         \x201  D ;;; nat-pmp 192.168.88.11: ApplicationX\n\
         \x20     chain=dstnat action=dst-nat to-addresses=192.168.88.11 to-ports=5000 \
         protocol=udp src-address=198.51.100.0/24 in-interface=ether1 dst-port=45000 \
         lifetime=1d2h3m4s left=0s via=pcp nonce-owned=yes\n"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn print_json() {
    let daemon = FakeDaemon::start(mappings());
    let out = natpmpctl(&["print", "--json", "--socket", &socket_arg(&daemon.socket)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"{"mappings":["#,
            r#"{"number":0,"flags":"D","comment":"nat-pmp 192.168.88.10: NAT-PMP tcp 8080","chain":"dstnat","action":"dst-nat","to-addresses":"192.168.88.10","to-ports":8080,"protocol":"tcp","dst-address":"203.0.113.1","in-interface":"ether1","dst-port":40000,"lifetime":7200,"lifetime-left":7198,"client":"192.168.88.10","via":"nat-pmp","kind":"map","nonce-owned":false,"family":"ipv4"},"#,
            r#"{"number":1,"flags":"D","comment":"nat-pmp 192.168.88.11: ApplicationX","chain":"dstnat","action":"dst-nat","to-addresses":"192.168.88.11","to-ports":5000,"protocol":"udp","src-address":["198.51.100.0/24"],"dst-address":null,"in-interface":"ether1","dst-port":45000,"lifetime":93784,"lifetime-left":0,"client":"192.168.88.11","via":"pcp","kind":"map","nonce-owned":true,"description":"ApplicationX","family":"ipv4"}"#,
            "]}\n"
        )
    );
}

#[test]
fn print_nothing_mapped() {
    let daemon = FakeDaemon::start(Response {
        ok: true,
        ..Response::default()
    });
    let out = natpmpctl(&["--socket", &socket_arg(&daemon.socket), "print"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "Flags: X - disabled, I - invalid, D - dynamic\n"
    );
    let out = natpmpctl(&["--socket", &socket_arg(&daemon.socket), "print", "--json"]);
    assert_eq!(text(&out.stdout), "{\"mappings\":[]}\n");
}

#[test]
fn socket_from_the_config_file() {
    let daemon = FakeDaemon::start(mappings());
    let config = daemon.dir.join("natpmpd.toml");
    std::fs::write(
        &config,
        format!("control-socket = {:?}\n", socket_arg(&daemon.socket)),
    )
    .unwrap();
    let out = natpmpctl(&["--config", config.to_str().unwrap(), "print", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("{\"mappings\":[{\"number\":0,"));
}

#[test]
fn bad_config_file_is_a_usage_error() {
    let dir = temp_dir();
    let config = dir.join("natpmpd.toml");
    std::fs::write(&config, "enabled = true\ncontrol-sockett = \"/x\"\n").unwrap();
    let out = natpmpctl(&["--config", config.to_str().unwrap(), "print"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "natpmpctl: {}:2:1: control-sockett: unknown key",
            config.display()
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn daemon_error_exits_1() {
    let daemon = FakeDaemon::start(Response::error("the service is disabled"));
    let out = natpmpctl(&["--socket", &socket_arg(&daemon.socket), "print"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "natpmpctl: natpmpd: the service is disabled\n"
    );
}

#[test]
fn no_daemon_running() {
    let dir = temp_dir();
    let socket = dir.join("natpmpd.sock");
    let out = natpmpctl(&["--socket", &socket_arg(&socket), "print"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "natpmpctl: cannot connect to {}: No such file or directory (natpmpd is not running, or uses another socket: start it with `systemctl start natpmpd`, or name its socket with --socket PATH or --config FILE)\n",
            socket.display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stale_socket_without_a_daemon() {
    let dir = temp_dir();
    let socket = dir.join("natpmpd.sock");
    // Bound then closed: the file stays, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let out = natpmpctl(&["--socket", &socket_arg(&socket), "print"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "natpmpctl: cannot connect to {}: Connection refused (natpmpd is not running: the socket is left over from a run that ended; starting natpmpd replaces it)\n",
            socket.display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_and_usage_errors() {
    let out = natpmpctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for needle in [
        "print",
        "--socket",
        "--config",
        "/run/natpmpd/natpmpd.sock",
        "Exit status",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let out = natpmpctl(&["print", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--json"));

    for args in [
        &[][..],
        &["frobnicate"][..],
        &["print", "--yaml"][..],
        &["--socket", "/a", "--config", "/b", "print"][..],
    ] {
        let out = natpmpctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
