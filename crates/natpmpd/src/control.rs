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

pub mod client;
pub mod print;
pub mod server;
pub mod socket;

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
