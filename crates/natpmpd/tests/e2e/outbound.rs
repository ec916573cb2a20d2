//! End-to-end: outbound traffic from a mapped internal port leaves from the mapped external
//! port (not from whatever port the operator's masquerade picks).

use std::net::SocketAddrV4;

use crate::lab::*;

#[test]
fn udp_from_the_mapped_internal_port_leaves_from_the_mapped_external_port() {
    let mut lab = Lab::new();
    lab.start_default();

    // Ask for an external port different from the internal one so a plain masquerade (which
    // keeps the source port when it can) could not pass this test by accident.
    let m = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Udp, 5555, 40123, 600);
    assert_eq!(m.result, 0, "{m:?}");
    assert_ne!(
        m.external, 5555,
        "need external != internal to tell the mapping from masquerade"
    );

    let inet_sock = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST, 9999));
    let lan_sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 5555));
    lan_sock
        .send_to(b"outbound", SocketAddrV4::new(INET_HOST, 9999))
        .unwrap();
    let (b, from) = recv(&inet_sock).expect("the outbound datagram did not arrive at inet");
    assert_eq!(b, b"outbound");
    assert_eq!(
        from,
        SocketAddrV4::new(GW_EXT, m.external).into(),
        "outbound traffic did not leave from the mapped external port"
    );

    // An unmapped port is still masqueraded as usual (the operator's rule keeps working).
    let other = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 5556));
    other
        .send_to(b"plain", SocketAddrV4::new(INET_HOST, 9999))
        .unwrap();
    let (_, from) = recv(&inet_sock).expect("unmapped outbound datagram did not arrive");
    assert_eq!(from.ip(), std::net::IpAddr::V4(GW_EXT));
}

#[test]
fn tcp_from_the_mapped_internal_port_leaves_from_the_mapped_external_port() {
    let mut lab = Lab::new();
    lab.start_default();
    let m = map_raw(&lab.lan, LAN_HOST, GW_LAN, Proto::Tcp, 5600, 40200, 600);
    assert_eq!(m.result, 0, "{m:?}");
    assert_ne!(m.external, 5600);

    let listener = tcp_listener(&lab.inet, SocketAddrV4::new(INET_HOST, 8000));
    let server = serve_tcp_once(listener, "inet", std::time::Duration::from_secs(5));
    let reply = in_ns(&lab.lan, || -> std::io::Result<String> {
        use std::io::{Read, Write};
        // Connect from the mapped internal port.
        let mut s = socket_from(
            SocketAddrV4::new(LAN_HOST, 5600),
            SocketAddrV4::new(INET_HOST, 8000),
        )?;
        s.write_all(b"x\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("TCP from the mapped port failed");
    assert!(reply.starts_with("inet:x"), "{reply}");
    let peer = server.join().unwrap().expect("inet saw no connection");
    assert_eq!(peer, SocketAddrV4::new(GW_EXT, m.external).into());
}

/// A TCP connection from a fixed local address and port (std cannot bind before connect).
fn socket_from(local: SocketAddrV4, to: SocketAddrV4) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    fn sa(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own; the std stream takes it over.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let l = sa(local);
        if libc::bind(fd, &l as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = sa(to);
        if libc::connect(fd, &r as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
        Ok(stream)
    }
}
