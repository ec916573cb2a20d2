//! The control socket: newline-delimited JSON over a Unix stream socket.
//!
//! One request line in, one response line out, then the server closes the connection. Keeping
//! it to one exchange per connection means no framing state, and a client that misbehaves can
//! only waste its own connection. The server side (`bind`, `serve`) runs in the daemon's tokio
//! loop; the client side (`call`) is blocking std I/O because `natpmpctl` has nothing else to
//! do while it waits.
//!
//! - `socket`: binding the socket (mode, group, stale sockets).
//! - `server`: the daemon's side: one task per connection, requests handed to the loop.
//! - `client`: the blocking client `natpmpctl` uses.
//! - `print`: formatting `natpmpctl print`.
//! - `status`: what `natpmpctl status` shows, gathered and formatted.
//! - `remove`: `natpmpctl remove`: choosing the mappings, the daemon's side, the log line.

pub mod client;
pub mod print;
pub mod remove;
pub mod server;
pub mod socket;
pub mod status;

pub use client::{call, call_with_timeout, ControlError};
pub use server::serve;
pub use socket::bind;

use natpmp_pcp_core::MappingView;
use serde::{Deserialize, Serialize};
use std::io;
use std::time::Duration;

/// How long a client may take to send its request line, and the server to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A request from `natpmpctl`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// List the dynamic mappings (`natpmpctl print`).
    Print,
    /// Re-read the configuration file (`natpmpctl reload`, like SIGHUP). An invalid file
    /// leaves the running configuration in place and comes back as the error.
    Reload,
    /// The daemon's state in brief (`natpmpctl status`).
    Status,
    /// Remove mappings by hand (`natpmpctl remove`), conntrack entries included.
    Remove {
        removal: natpmp_pcp_core::gateway::Removal,
        /// Who asked: filled in by the server from SO_PEERCRED, never taken from the
        /// client's line (a client cannot set it).
        #[serde(skip)]
        by: Option<Peer>,
    },
}

/// The process at the other end of a control connection, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {}", self.uid)?;
        match self.pid {
            Some(pid) => write!(f, " pid {pid}"),
            None => Ok(()),
        }
    }
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
    /// `status`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<status::Status>,
    /// `remove`'s answer: what was removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<MappingView>,
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

pub(crate) fn annotate(err: io::Error, context: String) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {}", describe_io(&err)))
}

/// An I/O error's text without Rust's " (os error N)" suffix, for messages read by people.
pub(crate) fn describe_io(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests;
