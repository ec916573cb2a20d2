//! Traffic between the `Host`s of `netns::gateway_with_hosts`: UDP round trips and TCP
//! connections, and the operator's own firewall of the lab, whose forward chain drops by
//! default and keeps the firewall contract (see `template.rs`).

#![allow(dead_code)]

use super::netns::{nft_script, Host};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// natpmpd's default connection mark (`TableSpec::DEFAULT_CONNECTION_MARK`).
pub const MARK: u32 = 0x0010_0000;
/// How long to wait where an answer is expected: generous, the tests run in parallel on small
/// machines.
pub const ANSWER: Duration = Duration::from_secs(3);
pub const NO_ANSWER: Duration = Duration::from_millis(500);

/// Any address and port of the family of `like`: let the kernel choose.
pub fn any_of(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Retry `bind` for up to 2 s on AddrInUse: the previous socket on this port may live on for a
/// moment in a child that another test thread forked (the fd is shared until that child's
/// exec closes it).
fn retry_bind<T>(at: SocketAddr, bind: impl Fn(SocketAddr) -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match bind(at) {
            Ok(s) => return s,
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("bind {at}: {e}"),
        }
    }
}

pub fn bind_udp(at: impl Into<SocketAddr>) -> UdpSocket {
    retry_bind(at.into(), UdpSocket::bind)
}

/// Send one UDP datagram from `client_host`, bound to `from` (port 0: chosen by the kernel),
/// to `to` while a server on `server_host` listens on `server_port` (of `to`'s family).
/// Returns where the server saw it come from and where the answer came from, or `None` for
/// either that did not arrive within `wait`.
pub fn udp_round_trip(
    client_host: &Host,
    from: impl Into<SocketAddr>,
    server_host: &Host,
    server_port: u16,
    to: impl Into<SocketAddr>,
    wait: Duration,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let (from, to) = (from.into(), to.into());
    let mut at = any_of(to);
    at.set_port(server_port);
    let server = server_host.run(move || {
        let s = bind_udp(at);
        s.set_read_timeout(Some(wait)).unwrap();
        s
    });
    let client = client_host.run(move || {
        let c = bind_udp(from);
        c.set_read_timeout(Some(wait)).unwrap();
        c.send_to(b"ping", to).unwrap();
        c
    });
    let mut buf = [0u8; 16];
    let seen = server.recv_from(&mut buf).ok().map(|(_, from)| from);
    if let Some(from) = seen {
        server.send_to(b"pong", from).unwrap();
    }
    let answer = client.recv_from(&mut buf).ok().map(|(_, from)| from);
    (seen, answer)
}

/// A TCP listener on `host`, on `port` of every address of the family of `like`.
pub fn tcp_listen(host: &Host, like: SocketAddr, port: u16) -> TcpListener {
    let mut at = any_of(like);
    at.set_port(port);
    host.run(move || retry_bind(at, TcpListener::bind))
}

/// Connect from `client_host` to `to` and have `listener` accept: both ends, or `None` when
/// the connection is not made within `wait` (the SYN was dropped).
pub fn tcp_connect(
    client_host: &Host,
    listener: &TcpListener,
    to: SocketAddr,
    wait: Duration,
) -> Option<(TcpStream, TcpStream)> {
    let client = client_host.run(move || TcpStream::connect_timeout(&to, wait).ok())?;
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + wait;
    let server = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    server.set_nonblocking(false).unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(wait)).unwrap();
    }
    Some((client, server))
}

/// Whether `message`, written to `from`, arrives whole at `to` within its read timeout.
pub fn tcp_carries(from: &mut TcpStream, to: &mut TcpStream, message: &[u8]) -> bool {
    from.write_all(message).unwrap();
    let mut got = vec![0u8; message.len()];
    match to.read_exact(&mut got) {
        Ok(()) => got == message,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("read: {e}"),
    }
}

/// The operator's firewall in the gateway's namespace, `table inet lab`: a forward chain that
/// drops by default and accepts established flows, what natpmpd marked (the one contract rule,
/// for both families), and new flows from the LAN to the internet. Nothing else: no `ct status
/// dnat accept`, so IPv4 forwards pass only by the mark.
pub fn operator_firewall(lan: &str, ext: &str, mark: u32) {
    nft_script(&format!(
        "table inet lab {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tct mark & {mark:#010x} == {mark:#010x} accept\n\
         \t\tiifname \"{lan}\" oifname \"{ext}\" accept\n\
         \t}}\n\
         }}\n"
    ));
}
