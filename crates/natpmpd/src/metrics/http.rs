//! A minimal HTTP/1.1 responder for `GET /metrics`, on std threads, apart from the event loop.
//!
//! One request per connection, then `Connection: close`. `GET /metrics` (a query string is
//! ignored) gets the registry in the OpenMetrics text format, encoded by `prometheus-client`;
//! another path gets 404, another method 405, a request line that is not HTTP gets 400. Each
//! connection has its own thread with read and write timeouts, and at most
//! [`MAX_CONNECTIONS`] run at once, so a client that connects and says nothing only holds
//! one slot, for at most [`IO_TIMEOUT`], and never the event loop.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How long a client may take to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// The longest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn start(addr: SocketAddr, registry: Registry) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || accept_loop(listener, registry))?;
    Ok(bound)
}

fn accept_loop(listener: TcpListener, registry: Arc<Registry>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Typically EMFILE: pause rather than spin on an error that repeats.
                warn!("metrics: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            debug!("metrics: too many connections, closing one");
            continue;
        }
        let registry = registry.clone();
        let busy = busy.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &registry) {
                    debug!("metrics connection: {e}");
                }
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            warn!("metrics: cannot start a thread: {e}");
        }
    }
}

fn serve(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, extra, body) = match route(&head) {
        Route::Metrics => {
            let mut text = String::new();
            match encode(&mut text, registry) {
                Ok(()) => ("200 OK", format!("Content-Type: {CONTENT_TYPE}\r\n"), text),
                Err(_) => (
                    "500 Internal Server Error",
                    String::new(),
                    "cannot encode the metrics\n".into(),
                ),
            }
        }
        Route::NotFound => ("404 Not Found", String::new(), "try /metrics\n".into()),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "Allow: GET\r\n".into(),
            "only GET\n".into(),
        ),
        Route::BadRequest => ("400 Bad Request", String::new(), "bad request\n".into()),
    };
    let extra = if status.starts_with("200") {
        extra
    } else {
        format!("{extra}Content-Type: text/plain; charset=utf-8\r\n")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Read up to the end of the request head (a blank line), at most `MAX_HEAD` bytes.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_HEAD {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn server() -> SocketAddr {
        let (_m, registry) = super::super::Metrics::new();
        start("127.0.0.1:0".parse().unwrap(), registry).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"hello\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY\r\n\r\n"), Route::BadRequest);
        assert_eq!(
            route(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"),
            Route::BadRequest
        );
    }

    #[test]
    fn metrics_404_and_405_over_tcp() {
        let addr = server();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(
            ok.contains("# TYPE natpmpd_kernel_transactions counter"),
            "{ok}"
        );
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        let missing = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("Allow: GET\r\n"), "{post}");
        let junk = exchange(addr, b"junk\r\n\r\n");
        assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    }

    #[test]
    fn a_silent_client_does_not_hold_up_a_scrape() {
        let addr = server();
        let _silent = TcpStream::connect(addr).unwrap();
        let started = std::time::Instant::now();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(started.elapsed() < IO_TIMEOUT);
    }
}
