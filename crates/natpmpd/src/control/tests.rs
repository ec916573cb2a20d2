//! The control socket end to end, without root: bind, serve and call on sockets in a temp
//! directory.

use super::server::MAX_REQUEST_LINE;
use super::*;
use natpmp_pcp_core::view::{MappingKind, Via};
use natpmp_pcp_core::Protocol;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "natpmpd-control-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sample() -> Response {
    Response {
        ok: true,
        error: None,
        external_interface: Some("ether1".into()),
        status: None,
        removed: Vec::new(),
        mappings: vec![MappingView {
            client: Ipv4Addr::new(192, 168, 88, 10).into(),
            protocol: Protocol::Tcp,
            internal_port: 8080,
            external_addr: Some(Ipv4Addr::new(203, 0, 113, 1).into()),
            external_port: 40000,
            lifetime: 7200,
            expires_in: 7198,
            via: Via::Pcp,
            kind: MappingKind::Map,
            nonce_owned: true,
            remote: None,
            filters: vec!["198.51.100.0/24".into()],
            description: Some("ApplicationX".into()),
        }],
    }
}

/// Runs `serve` with a daemon side answering every request with `sample()`, then runs
/// `client` (blocking) on another thread.
fn with_server<T: Send + 'static>(path: &Path, client: impl FnOnce() -> T + Send + 'static) -> T {
    runtime().block_on(async {
        let listener = bind(path, None).unwrap();
        let (tx, mut rx) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(8);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(sample());
            }
        });
        tokio::task::spawn_blocking(client).await.unwrap()
    })
}

fn raw_exchange(path: &Path, send: &[u8]) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(send).unwrap();
    // End of request: lets the server see an empty or unterminated request at once.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn request_wire_form() {
    assert_eq!(
        serde_json::to_string(&Request::Print).unwrap(),
        r#"{"command":"print"}"#
    );
    let r: Response = serde_json::from_str(r#"{"ok":true}"#).unwrap();
    assert_eq!(
        r,
        Response {
            ok: true,
            ..Response::default()
        }
    );
}

#[test]
fn print_round_trip() {
    let dir = temp_dir();
    let path = dir.join("s.sock");
    let p = path.clone();
    let reply = with_server(&path, move || call(&p, &Request::Print)).unwrap();
    assert_eq!(reply, sample());
    let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn malformed_lines_get_an_error_response() {
    let dir = temp_dir();
    let path = dir.join("s.sock");
    let p = path.clone();
    let answers = with_server(&path, move || {
        [
            &b"not json\n"[..],
            b"{\"command\":\"frobnicate\"}\n",
            b"\xff\xfe\n",
            b"\n",
            b"",
        ]
        .iter()
        .map(|bytes| raw_exchange(&p, bytes))
        .collect::<Vec<_>>()
    });
    for answer in answers {
        assert!(answer.ends_with('\n'), "{answer:?}");
        let r: Response = serde_json::from_str(&answer).unwrap();
        assert!(!r.ok && r.error.is_some(), "{answer}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn oversized_request_is_refused() {
    let dir = temp_dir();
    let path = dir.join("s.sock");
    let p = path.clone();
    let answer = with_server(&path, move || {
        let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server stops reading at its limit, so a write may fail; only the answer
        // matters.
        let _ = s.write_all(&vec![b'x'; MAX_REQUEST_LINE as usize + 10]);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    assert!(answer.contains("longer than"), "{answer}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn silent_client_does_not_block_others() {
    let dir = temp_dir();
    let path = dir.join("s.sock");
    let p = path.clone();
    let started = std::time::Instant::now();
    let reply = with_server(&path, move || {
        // Connected and silent for the whole exchange below.
        let _silent = std::os::unix::net::UnixStream::connect(&p).unwrap();
        call(&p, &Request::Print)
    });
    assert_eq!(reply.unwrap(), sample());
    assert!(started.elapsed() < IO_TIMEOUT);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn daemon_gone_is_an_error_response() {
    let dir = temp_dir();
    let path = dir.join("s.sock");
    let answer = runtime().block_on(async {
        let listener = bind(&path, None).unwrap();
        let (tx, rx) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(1);
        // Keep the receiver but never answer: drop each reply sender.
        let daemon = tokio::spawn(async move {
            let mut rx = rx;
            while let Some((_, reply)) = rx.recv().await {
                drop(reply);
            }
        });
        let server = tokio::spawn(serve(listener, tx));
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || call(&p, &Request::Print))
            .await
            .unwrap();
        daemon.abort();
        // With the receiver gone, serve returns.
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        r
    });
    let r = answer.unwrap();
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("dropped"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn call_without_daemon_names_the_path() {
    let dir = temp_dir();
    let path = dir.join("missing.sock");
    let e = call(&path, &Request::Print).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to {}: No such file or directory (natpmpd is not running, or uses another socket: start it with `systemctl start natpmpd`, or name its socket with --socket PATH or --config FILE)",
            path.display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn call_times_out_on_a_silent_server() {
    let dir = temp_dir();
    let path = dir.join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let e = call_with_timeout(&path, &Request::Print, Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, ControlError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bind_creates_the_directory_and_replaces_a_stale_socket() {
    let dir = temp_dir();
    let path = dir.join("sub/dir/s.sock");
    runtime().block_on(async {
        drop(bind(&path, None).unwrap());
        let parent_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(parent_mode, 0o755);
        // The listener is dropped but the file remains: a stale socket.
        assert!(path.exists());
        let _again = bind(&path, None).unwrap();
        // No temporary names left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.sock")]);
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bind_refuses_a_live_socket_and_a_regular_file() {
    let dir = temp_dir();
    let live = dir.join("live.sock");
    let file = dir.join("file");
    std::fs::write(&file, b"keep me").unwrap();
    runtime().block_on(async {
        let _first = bind(&live, None).unwrap();
        let e = bind(&live, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("already running"), "{e}");
        let e = bind(&file, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
    });
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bind_with_group_is_0660_and_owned_by_it() {
    let gid = nix::unistd::getegid();
    let Ok(Some(group)) = nix::unistd::Group::from_gid(gid) else {
        // A gid without a name (some containers) cannot be named in the configuration.
        eprintln!("skipped: the current gid {gid} has no group name");
        return;
    };
    let dir = temp_dir();
    let path = dir.join("g.sock");
    runtime().block_on(async {
        let _l = bind(&path, Some(&group.name)).unwrap();
    });
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid.as_raw());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = temp_dir();
    let e = bind(&dir.join("s.sock"), None).unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bind_with_unknown_group_names_it() {
    let dir = temp_dir();
    let path = dir.join("g.sock");
    let e = runtime()
        .block_on(async { bind(&path, Some("no-such-group-natpmpd")).map(drop) })
        .unwrap_err();
    assert!(e.to_string().contains("\"no-such-group-natpmpd\""), "{e}");
    assert!(!path.exists());
    std::fs::remove_dir_all(dir).unwrap();
}
