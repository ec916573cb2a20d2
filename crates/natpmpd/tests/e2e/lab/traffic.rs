//! Sockets and traffic: UDP and TCP exchanges, echo servers that record their peers, probes, announcement listeners.

use super::*;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// A UDP socket bound in namespace `ns`, with [`REPLY_TIMEOUT`] as read timeout.
pub fn udp_socket(ns: &str, bind: impl Into<SocketAddr>) -> UdpSocket {
    let bind = bind.into();
    in_ns(ns, move || {
        let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind udp {bind}: {e}"));
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        s
    })
}

/// A TCP listener bound in namespace `ns`.
pub fn tcp_listener(ns: &str, bind: impl Into<SocketAddr>) -> TcpListener {
    let bind = bind.into();
    in_ns(ns, move || {
        TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind tcp {bind}: {e}"))
    })
}

/// Receives one datagram, or `None` when nothing arrives within the socket's read timeout.
pub fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    let got = loop {
        match sock.recv_from(&mut buf) {
            // A signal to the test process (seen once in a full run: EINTR) is no answer
            // either way: wait again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            got => break got,
        }
    };
    match got {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        // ICMP errors from earlier sends surface here on Linux; treat them as "nothing".
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => None,
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// Sends `payload` from `src` (in namespace `ns`) to `dst` and waits for one reply.
pub fn udp_exchange(
    ns: &str,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Option<(Vec<u8>, SocketAddr)> {
    let sock = udp_socket(ns, SocketAddrV4::new(src, 0));
    sock.send_to(payload, dst).expect("send_to");
    recv(&sock)
}

/// Serves one TCP connection on `listener`: reads one line and answers `<tag>:<line>`.
/// Returns the peer address, or `None` if nobody connected within `wait`.
pub fn serve_tcp_once(
    listener: TcpListener,
    tag: &'static str,
    wait: Duration,
) -> thread::JoinHandle<Option<SocketAddr>> {
    thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + wait;
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let line = read_line(&mut stream).unwrap_or_default();
        let _ = stream.write_all(format!("{tag}:{line}\n").as_bytes());
        Some(peer)
    })
}

fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => out.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// From namespace `ns`: connects to `to`, sends `msg` and returns the reply line.
/// Errors (refused, timeout) are returned, not raised.
pub fn tcp_roundtrip(ns: &str, to: SocketAddrV4, msg: &str) -> io::Result<String> {
    let msg = msg.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut s)
    })
}

/// A TCP server in a namespace answering every connection with `<tag>:<line>`, until dropped
/// (or 180 s at most, so a forgotten server cannot keep a test alive).
pub struct EchoServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peers: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    /// The peers seen so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

const ECHO_MAX: Duration = Duration::from_secs(180);

/// Starts a TCP [`EchoServer`] on `bind` in `ns`.
pub fn tcp_echo_server(ns: &str, bind: impl Into<SocketAddr>, tag: &'static str) -> EchoServer {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    let listener = tcp_listener(ns, bind);
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (s, p) = (stop.clone(), peers.clone());
    let handle = thread::spawn(move || {
        let end = Instant::now() + ECHO_MAX;
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    p.lock().unwrap().push(peer);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                    let line = read_line(&mut stream).unwrap_or_default();
                    let _ = stream.write_all(format!("{tag}:{line}\n").as_bytes());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    EchoServer {
        stop,
        peers,
        handle: Some(handle),
    }
}

/// Starts a UDP [`EchoServer`] on `bind` in `ns`: every datagram is answered with
/// `<tag>:<payload>` to its sender.
pub fn udp_echo_server(ns: &str, bind: impl Into<SocketAddr>, tag: &'static str) -> EchoServer {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    let sock = udp_socket(ns, bind);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (s, p) = (stop.clone(), peers.clone());
    let handle = thread::spawn(move || {
        let end = Instant::now() + ECHO_MAX;
        let mut buf = [0u8; 1500];
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                p.lock().unwrap().push(from);
                let mut reply = format!("{tag}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    EchoServer {
        stop,
        peers,
        handle: Some(handle),
    }
}

/// From a fresh socket (a new source port, so no stale conntrack entry is reused) in `ns`:
/// sends `msg` to `to` and returns the reply and where it came from.
pub fn udp_roundtrip(ns: &str, to: SocketAddrV4, msg: &str) -> Option<(String, SocketAddr)> {
    let sock = udp_socket(ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    sock.send_to(msg.as_bytes(), to).ok()?;
    recv(&sock).map(|(b, from)| (String::from_utf8_lossy(&b).into_owned(), from))
}

/// Like [`tcp_roundtrip`] but from source address `src` (bound before connecting), with a
/// connect timeout of `connect_within`.
pub fn tcp_roundtrip_from(
    ns: &str,
    src: impl Into<std::net::IpAddr>,
    to: impl Into<SocketAddr>,
    msg: &str,
    connect_within: Duration,
) -> io::Result<String> {
    let msg = msg.to_string();
    let (src, to) = (src.into(), to.into());
    in_ns_async(ns, move || async move {
        let sock = if src.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.bind(SocketAddr::new(src, 0))?;
        let stream = tokio::time::timeout(connect_within, sock.connect(to))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let mut s = stream.into_std()?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut s)
    })
}

/// A quick TCP probe from `ns` to `to`: connect (within `within`), send, and expect
/// `<tag>:<msg>` back.
pub fn tcp_probe(ns: &str, to: impl Into<SocketAddr>, tag: &str, within: Duration) -> bool {
    let msg = "probe";
    let to = to.into();
    let r = in_ns(ns, move || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, within)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut s)
    });
    matches!(r, Ok(line) if line == format!("{tag}:{msg}"))
}

/// A UDP socket in `ns` bound to 224.0.0.1:5350 that receives NAT-PMP announcements.
pub fn announcement_socket(ns: &str, iface_addr: Ipv4Addr) -> UdpSocket {
    let group = Ipv4Addr::new(224, 0, 0, 1);
    in_ns(ns, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(group, 5350)).expect("bind 224.0.0.1:5350");
        let _ = s.join_multicast_v4(&group, &iface_addr);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        s
    })
}

/// Collects everything `sock` receives (with arrival times) until `until`.
pub fn collect_datagrams(
    sock: UdpSocket,
    until: Instant,
) -> thread::JoinHandle<Vec<(Instant, Vec<u8>, SocketAddr)>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                got.push((Instant::now(), buf[..n].to_vec(), from));
            }
        }
        got
    })
}

/// Real UDP from a fresh inet socket to the external address's port `ext` comes back from
/// the LAN echo server tagged `tag`, from that same address and port (up to three tries).
pub fn udp_passes(lab: &Lab, ext: u16, tag: &str) -> bool {
    (0..3).any(|i| {
        let msg = format!("udp-{i}");
        matches!(udp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, ext), &msg),
            Some((r, from)) if r == format!("{tag}:{msg}")
                && from == SocketAddrV4::new(GW_EXT, ext).into())
    })
}
