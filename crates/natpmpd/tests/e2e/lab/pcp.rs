//! A raw PCP client for the end-to-end tests (RFC 6887), built by hand from the RFC's layouts
//! rather than with natpmpd's own encoder, so a wrong constant in the daemon cannot hide behind
//! the same constant here.

use super::{in_ns, recv, NATPMP_PORT, REPLY_TIMEOUT};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

pub const ANNOUNCE: u8 = 0;
pub const MAP: u8 = 1;
pub const PEER: u8 = 2;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub const SUCCESS: u8 = 0;
pub const NOT_AUTHORIZED: u8 = 2;
pub const MALFORMED_OPTION: u8 = 6;
pub const CANNOT_PROVIDE_EXTERNAL: u8 = 11;

/// The 128-bit wire form: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
pub fn mapped(a: impl Into<IpAddr>) -> [u8; 16] {
    match a.into() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A request: header (version 2, opcode, lifetime, client address), then MAP or PEER data,
/// then `options` as given.
#[derive(Clone, Debug)]
pub struct Request {
    pub opcode: u8,
    pub lifetime: u32,
    pub client: IpAddr,
    pub nonce: [u8; 12],
    pub protocol: u8,
    pub internal_port: u16,
    pub suggested_port: u16,
    pub suggested_addr: IpAddr,
    /// PEER only: the remote peer.
    pub remote: Option<SocketAddr>,
    pub options: Vec<u8>,
}

impl Request {
    pub fn map(
        client: impl Into<IpAddr>,
        nonce: u8,
        protocol: u8,
        internal: u16,
        lifetime: u32,
    ) -> Self {
        let client = client.into();
        Request {
            opcode: MAP,
            lifetime,
            client,
            nonce: [nonce; 12],
            protocol,
            internal_port: internal,
            suggested_port: 0,
            // The all-zeros address of the client's family: no preference.
            suggested_addr: match client {
                IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            },
            remote: None,
            options: Vec::new(),
        }
    }

    pub fn peer(
        client: impl Into<IpAddr>,
        nonce: u8,
        protocol: u8,
        internal: u16,
        remote: impl Into<SocketAddr>,
        lifetime: u32,
    ) -> Self {
        Request {
            opcode: PEER,
            remote: Some(remote.into()),
            ..Request::map(client, nonce, protocol, internal, lifetime)
        }
    }

    pub fn suggest(mut self, port: u16) -> Self {
        self.suggested_port = port;
        self
    }

    pub fn prefer_failure(mut self) -> Self {
        self.options.extend_from_slice(&[2, 0, 0, 0]);
        self
    }

    /// A FILTER for the prefix `addr/len` (for IPv4 the wire prefix length is 96 + len) and
    /// remote port (0: any).
    pub fn filter(mut self, addr: impl Into<IpAddr>, len: u8, port: u16) -> Self {
        let addr = addr.into();
        let wire_len = if addr.is_ipv4() { 96 + len } else { len };
        self.options.extend_from_slice(&[3, 0, 0, 20, 0, wire_len]);
        self.options.extend_from_slice(&port.to_be_bytes());
        self.options.extend_from_slice(&mapped(addr));
        self
    }

    pub fn description(mut self, text: &str) -> Self {
        let len = text.len() as u16;
        self.options.extend_from_slice(&[128, 0]);
        self.options.extend_from_slice(&len.to_be_bytes());
        self.options.extend_from_slice(text.as_bytes());
        while !self.options.len().is_multiple_of(4) {
            self.options.push(0);
        }
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = vec![2, self.opcode, 0, 0];
        b.extend_from_slice(&self.lifetime.to_be_bytes());
        b.extend_from_slice(&mapped(self.client));
        if self.opcode != ANNOUNCE {
            b.extend_from_slice(&self.nonce);
            b.extend_from_slice(&[self.protocol, 0, 0, 0]);
            b.extend_from_slice(&self.internal_port.to_be_bytes());
            b.extend_from_slice(&self.suggested_port.to_be_bytes());
            b.extend_from_slice(&mapped(self.suggested_addr));
        }
        if let Some(r) = self.remote {
            b.extend_from_slice(&r.port().to_be_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&mapped(r.ip()));
        }
        b.extend_from_slice(&self.options);
        b
    }
}

/// A PCP response, fields read by offset (RFC 6887 §7.2, §11.1, §12.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub version: u8,
    pub opcode: u8,
    pub result: u8,
    pub lifetime: u32,
    pub epoch: u32,
    pub nonce: [u8; 12],
    pub protocol: u8,
    pub internal_port: u16,
    pub external_port: u16,
    pub external_addr: IpAddr,
    pub remote: Option<SocketAddr>,
    /// (code, data) of every option after the opcode data.
    pub options: Vec<(u8, Vec<u8>)>,
    pub len: usize,
}

fn addr(b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    let v6 = std::net::Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Parses a response; panics with the bytes when it is not one.
pub fn parse(b: &[u8]) -> Response {
    assert!(
        b.len() >= 24,
        "not a PCP response ({} bytes): {b:02x?}",
        b.len()
    );
    assert!(b[1] & 0x80 != 0, "R bit clear: {b:02x?}");
    let opcode = b[1] & 0x7f;
    let mut r = Response {
        version: b[0],
        opcode,
        result: b[3],
        lifetime: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        epoch: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        nonce: [0; 12],
        protocol: 0,
        internal_port: 0,
        external_port: 0,
        external_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        remote: None,
        options: Vec::new(),
        len: b.len(),
    };
    let data_len = match opcode {
        MAP => 36,
        PEER => 56,
        _ => 0,
    };
    if data_len > 0 && b.len() >= 24 + data_len {
        let d = &b[24..];
        r.nonce.copy_from_slice(&d[..12]);
        r.protocol = d[12];
        r.internal_port = u16::from_be_bytes([d[16], d[17]]);
        r.external_port = u16::from_be_bytes([d[18], d[19]]);
        r.external_addr = addr(&d[20..36]);
        if opcode == PEER {
            r.remote = Some(SocketAddr::new(
                addr(&d[40..56]),
                u16::from_be_bytes([d[36], d[37]]),
            ));
        }
        let mut rest = &b[24 + data_len..];
        while rest.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let padded = len.div_ceil(4) * 4;
            if rest.len() < 4 + padded {
                break;
            }
            r.options.push((rest[0], rest[4..4 + len].to_vec()));
            rest = &rest[4 + padded..];
        }
    }
    r
}

/// A UDP socket in `ns` bound to `src` (any port), with the lab's reply timeout.
pub fn socket(ns: &str, src: impl Into<IpAddr>) -> UdpSocket {
    let bind = SocketAddr::new(src.into(), 0);
    in_ns(ns, move || {
        let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind udp {bind}: {e}"));
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        s
    })
}

/// Sends `request` from `src` (any port) in namespace `ns` to `gw`:5351 and waits for a
/// reply; returns it with the socket, so the test can listen for more on the same port.
pub fn exchange(
    ns: &str,
    src: impl Into<IpAddr>,
    gw: impl Into<IpAddr>,
    request: &Request,
) -> (Option<Response>, UdpSocket) {
    let sock = socket(ns, src);
    let reply = exchange_on(&sock, gw, request);
    (reply, sock)
}

/// [`exchange`] over a socket the test already holds.
pub fn exchange_on(sock: &UdpSocket, gw: impl Into<IpAddr>, request: &Request) -> Option<Response> {
    let to = SocketAddr::new(gw.into(), NATPMP_PORT);
    sock.send_to(&request.bytes(), to).expect("send_to");
    recv(sock).map(|(b, from)| {
        assert_eq!(from, to, "reply from the wrong address");
        parse(&b)
    })
}

/// A request that must succeed; returns the response.
#[track_caller]
pub fn ok(ns: &str, src: impl Into<IpAddr>, gw: impl Into<IpAddr>, request: &Request) -> Response {
    let (r, _) = exchange(ns, src, gw, request);
    let r = r.unwrap_or_else(|| panic!("no PCP reply to {request:?}"));
    assert_eq!(r.result, SUCCESS, "PCP request refused: {r:?}");
    r
}
