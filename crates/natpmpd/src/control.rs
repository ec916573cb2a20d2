//! The control socket: newline-delimited JSON over a Unix stream socket.
//!
//! One request line in, one response line out, then the server closes the connection. Keeping
//! it to one exchange per connection means no framing state, and a client that misbehaves can
//! only waste its own connection. The server side (`bind`, `serve`) runs in the daemon's tokio
//! loop; the client side (`call`) is blocking std I/O because `natpmpctl` has nothing else to
//! do while it waits.

pub mod print;

use natpmp_pcp_core::MappingView;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a client may take to send its request line, and the server to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest request line accepted; requests are tiny, so anything longer is garbage or abuse
/// and must not make the daemon buffer it.
const MAX_REQUEST_LINE: u64 = 64 * 1024;

/// Longest response line the client accepts (a full table of mappings is well below this).
const MAX_RESPONSE_LINE: u64 = 64 * 1024 * 1024;

/// Connections served at once. The socket is root-only by default, but a group member should
/// still not be able to pin unbounded memory and descriptors in the daemon.
const MAX_CONNECTIONS: usize = 64;

/// A request from `natpmpctl`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// List the dynamic mappings (`natpmpctl print`).
    Print,
    /// Re-read the configuration file (`natpmpctl reload`, like SIGHUP). An invalid file
    /// leaves the running configuration in place and comes back as the error.
    Reload,
}

/// The daemon's answer. `ok = false` comes with an `error`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The external interface the mappings are reachable on (`in-interface=` in `print`).
    #[serde(default)]
    pub external_interface: Option<String>,
    #[serde(default)]
    pub mappings: Vec<MappingView>,
}

impl Response {
    /// A failure response carrying `message`.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

/// Bind the control socket at `path`.
///
/// Creates the parent directory (0755) when missing, refuses to start when another daemon is
/// answering on `path`, replaces a stale socket file (but never any other kind of file), and
/// leaves the socket 0600 (root only) or, with `group`, 0660 owned by that group. Must be
/// called from within a tokio runtime.
///
/// The socket is bound under a temporary name, given its mode and group, and then renamed
/// onto `path`: that way there is no moment when `path` exists with looser permissions than
/// configured, whatever the process umask.
pub fn bind(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    // tokio panics when a listener is registered outside a runtime; make that an error.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "control::bind must be called from within a tokio runtime",
        ));
    }
    let gid = match group {
        None => None,
        Some(name) => Some(lookup_group(name)?),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| annotate(e, format!("cannot create {}", parent.display())))?;
        }
    }
    check_not_in_use(path)?;

    let temp = temp_name(path);
    // A leftover from a crash between bind and rename; it is ours by its name.
    let _ = std::fs::remove_file(&temp);
    let listener = std::os::unix::net::UnixListener::bind(&temp)
        .map_err(|e| annotate(e, format!("cannot bind {}", temp.display())))?;
    let prepared = (|| {
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&temp, None, Some(gid)).map_err(|e| {
                annotate(
                    e,
                    format!(
                        "cannot give {} to group {:?}",
                        path.display(),
                        group.unwrap_or("")
                    ),
                )
            })?;
        }
        std::fs::rename(&temp, path)
            .map_err(|e| annotate(e, format!("cannot move the socket to {}", path.display())))
    })();
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

fn lookup_group(name: &str) -> io::Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("control-socket-group: there is no group named {name:?}"),
        )),
        Err(errno) => Err(io::Error::other(format!(
            "control-socket-group: cannot look up group {name:?}: {}",
            errno.desc()
        ))),
    }
}

/// Fails when a live daemon answers on `path`, or when `path` is something other than a
/// socket; removes nothing itself (the rename in `bind` replaces a stale socket atomically).
fn check_not_in_use(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, format!("cannot inspect {}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process is listening on {} (is natpmpd already running?)",
                path.display()
            ),
        )),
        // Refused (or any other failure): nobody is behind it, it is stale.
        Err(_) => Ok(()),
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn annotate(err: io::Error, context: String) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {}", describe_io(&err)))
}

/// An I/O error's text without Rust's " (os error N)" suffix, for messages read by people.
fn describe_io(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    }
}

/// Accept connections until the receiving end of `requests` is dropped (the daemon is
/// stopping). Each connection gets its own task, so a slow or silent client cannot hold up
/// the others; each request is sent to the daemon with a reply channel, and the reply is
/// written back as one JSON line.
pub async fn serve(
    listener: UnixListener,
    requests: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Typically EMFILE; pause instead of spinning on an error that repeats.
                    tracing::warn!("control socket: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = requests.closed() => return,
        };
        let requests = requests.clone();
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let Ok(_permit) = permit else {
                let reply = Response::error("natpmpd is busy: too many control connections");
                let _ = write_response(stream, &reply).await;
                return;
            };
            handle_connection(stream, requests).await;
        });
    }
}

async fn handle_connection(
    mut stream: UnixStream,
    requests: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) {
    let line = match tokio::time::timeout(IO_TIMEOUT, read_request_line(&mut stream)).await {
        Ok(Ok(line)) => line,
        Ok(Err(message)) => {
            let _ = write_response(stream, &Response::error(message)).await;
            return;
        }
        Err(_) => {
            let reply = Response::error("timed out waiting for a request line");
            let _ = write_response(stream, &reply).await;
            return;
        }
    };
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(err) => Response::error(format!("malformed request: {err}")),
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            if requests.send((request, tx)).await.is_err() {
                Response::error("natpmpd is shutting down")
            } else {
                match rx.await {
                    Ok(response) => response,
                    Err(_) => Response::error("natpmpd dropped the request"),
                }
            }
        }
    };
    let _ = write_response(stream, &reply).await;
}

/// Reads up to the first newline (or end of stream), at most `MAX_REQUEST_LINE` bytes.
async fn read_request_line(stream: &mut UnixStream) -> Result<String, String> {
    let mut reader = tokio::io::BufReader::new(stream.take(MAX_REQUEST_LINE + 1));
    let mut bytes = Vec::new();
    reader
        .read_until(b'\n', &mut bytes)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if bytes.len() as u64 > MAX_REQUEST_LINE {
        return Err(format!("request longer than {MAX_REQUEST_LINE} bytes"));
    }
    if bytes.is_empty() {
        return Err("empty request".into());
    }
    String::from_utf8(bytes).map_err(|_| "malformed request: not UTF-8".into())
}

async fn write_response(mut stream: UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|_| {
        // Serialising plain data cannot fail; answer something valid anyway.
        br#"{"ok":false,"error":"cannot encode the response"}"#.to_vec()
    });
    line.push(b'\n');
    let write = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(IO_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Why `call` failed. Every message names the socket path.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to {path}: {reason} ({hint})")]
    Connect {
        path: PathBuf,
        reason: String,
        /// What the operator probably has to do about it.
        hint: &'static str,
    },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: natpmpd did not answer within {} seconds", timeout.as_secs())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("{path}: natpmpd closed the connection without answering")]
    NoResponse { path: PathBuf },
    #[error("{path}: malformed response from natpmpd: {reason}")]
    BadResponse { path: PathBuf, reason: String },
}

/// Send one request to the daemon at `path` and wait (at most a few seconds) for its answer.
/// A response with `ok = false` is returned as `Ok`: it is the daemon's answer, not a failure
/// to talk to it.
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    call_with_timeout(path, request, IO_TIMEOUT * 2)
}

/// `call` with an explicit timeout for each read and write.
pub fn call_with_timeout(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let io_error = |e: io::Error| -> ControlError {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ControlError::Timeout {
                path: path.to_owned(),
                timeout,
            }
        } else {
            ControlError::Io {
                path: path.to_owned(),
                reason: describe_io(&e),
            }
        }
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| ControlError::Connect {
            path: path.to_owned(),
            reason: describe_io(&e),
            hint: if e.kind() == io::ErrorKind::PermissionDenied {
                "run as root, or as a member of the daemon's control-socket-group"
            } else {
                "is natpmpd running?"
            },
        })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;

    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::Io {
        path: path.to_owned(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_error)?;

    let mut reply = Vec::new();
    BufReader::new((&stream).take(MAX_RESPONSE_LINE))
        .read_until(b'\n', &mut reply)
        .map_err(io_error)?;
    if reply.is_empty() {
        return Err(ControlError::NoResponse {
            path: path.to_owned(),
        });
    }
    serde_json::from_slice(&reply).map_err(|e| ControlError::BadResponse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::view::{MappingKind, Via};
    use natpmp_pcp_core::Protocol;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
    fn with_server<T: Send + 'static>(
        path: &Path,
        client: impl FnOnce() -> T + Send + 'static,
    ) -> T {
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
                "cannot connect to {}: No such file or directory (is natpmpd running?)",
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
}
