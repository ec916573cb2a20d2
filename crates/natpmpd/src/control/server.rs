//! The daemon's side of the control socket: one task per connection, each request handed to
//! the event loop with a reply channel.

use super::{Peer, Request, Response, IO_TIMEOUT};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Longest request line accepted; requests are tiny, so anything longer is garbage or abuse
/// and must not make the daemon buffer it.
pub(crate) const MAX_REQUEST_LINE: u64 = 64 * 1024;

/// Connections served at once. The socket is root-only by default, but a group member should
/// still not be able to pin unbounded memory and descriptors in the daemon.
const MAX_CONNECTIONS: usize = 64;

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
    let peer = stream.peer_cred().ok().map(|c| Peer {
        uid: c.uid(),
        pid: c.pid(),
    });
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(err) => Response::error(format!("malformed request: {err}")),
        Ok(mut request) => {
            if let Request::Remove { by, .. } = &mut request {
                *by = peer;
            }
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
