//! Binding the control socket: its directory, mode and group, and refusing to replace a live
//! daemon's socket or a file that is not a socket.

use super::annotate;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

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
