//! The client side: blocking std I/O, because `natpmpctl` has nothing else to do while it
//! waits.

use super::{describe_io, Request, Response, IO_TIMEOUT};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest response line the client accepts (a full table of mappings is well below this).
const MAX_RESPONSE_LINE: u64 = 64 * 1024 * 1024;

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

/// What to do about a failed connect, by its cause.
fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => {
            "natpmpd is not running, or uses another socket: start it with \
             `systemctl start natpmpd`, or name its socket with --socket PATH or --config FILE"
        }
        io::ErrorKind::PermissionDenied => {
            "run natpmpctl as root (sudo), or add yourself to the daemon's \
             control-socket-group"
        }
        io::ErrorKind::ConnectionRefused => {
            "natpmpd is not running: the socket is left over from a run that ended; \
             starting natpmpd replaces it"
        }
        _ => "is natpmpd running?",
    }
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
            hint: connect_hint(&e),
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
