//! The request sockets on port 5351, where NAT-PMP and PCP both arrive: one on 0.0.0.0:5351
//! (IP_PKTINFO) and, for PCP over IPv6, one on [::]:5351 (IPV6_PKTINFO, IPv6 only). Each learns,
//! for every datagram, the interface it arrived on and the address it was sent to, and sends
//! each reply from exactly that address (clients drop replies from any other, RFC 6886 §3.2,
//! RFC 6887 §8.3): global, ULA or link-local.

use nix::sys::socket::{
    bind, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use tokio::io::unix::AsyncFd;

/// Where a received datagram came from and in, and how long it is.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub source: SocketAddr,
    /// The destination address in the IP header (may be broadcast or multicast).
    pub destination: IpAddr,
    /// The interface it arrived on.
    pub ifindex: u32,
    pub len: usize,
}

pub struct RequestSocket {
    socket: AsyncFd<UdpSocket>,
    v6: bool,
}

/// The receive queue asked for on each request socket, bytes (the kernel doubles it for its
/// bookkeeping; a small datagram takes ~1 KiB of it, so this holds a few thousand).
const RECEIVE_QUEUE: libc::c_int = 4 << 20;

fn os(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

impl RequestSocket {
    /// The IPv4 socket on 0.0.0.0:`port`.
    pub fn bind_v4(port: u16) -> io::Result<RequestSocket> {
        // IP_PKTINFO is switched on before bind: a datagram queued in between would carry no
        // arrival interface and be dropped as if it came from outside.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(os)?;
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).map_err(os)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
        )
        .map_err(os)?;
        let socket = UdpSocket::from(fd);
        // Announcements are link-local (224.0.0.1): never let them leave the link.
        setsockopt(&socket, sockopt::IpMulticastTtl, &1).map_err(os)?;
        setsockopt(&socket, sockopt::IpMulticastLoop, &false).map_err(os)?;
        Self::register(socket, false)
    }

    /// The IPv6 socket on [::]:`port`, IPv6 only (IPv4 has its own socket).
    pub fn bind_v6(port: u16) -> io::Result<RequestSocket> {
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(os)?;
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(os)?;
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true).map_err(os)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
        )
        .map_err(os)?;
        let socket = UdpSocket::from(fd);
        // Announcements go to ff02::1, link scope: one hop, and not back to ourselves.
        setsockopt(&socket, sockopt::Ipv6MulticastHops, &1).map_err(os)?;
        set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)?;
        Self::register(socket, true)
    }

    fn register(socket: UdpSocket, v6: bool) -> io::Result<RequestSocket> {
        // A flood from one host (which the rate limit then drops) must not fill the queue
        // before the loop reads it and cost other hosts their requests: a deep queue.
        // SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN, which natpmpd has;
        // without it, SO_RCVBUF gets what rmem_max allows.
        if set_int(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            RECEIVE_QUEUE,
        )
        .is_err()
        {
            let _ = set_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_QUEUE);
        }
        Ok(RequestSocket {
            socket: {
                // SAFETY: `socket` is an owned, open descriptor that moves into the AsyncFd and
                // stays open, unchanged, until the AsyncFd drops it.
                unsafe { AsyncFd::register(socket) }?
            },
            v6,
        })
    }

    pub async fn readable(&self) -> io::Result<()> {
        let mut guard = self.socket.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Receive one datagram into `buf` without blocking; `Ok(None)` when none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let fd = self.socket.get_ref().as_raw_fd();
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let source = msg.address.and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())))
            } else {
                a.as_sockaddr_in6().map(|v6| {
                    SocketAddr::V6(SocketAddrV6::new(
                        v6.ip(),
                        v6.port(),
                        v6.flowinfo(),
                        v6.scope_id(),
                    ))
                })
            }
        });
        let Some(source) = source else {
            return Ok(None);
        };
        let mut destination = None;
        let mut ifindex = 0;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    destination = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                    ifindex = info.ipi_ifindex as u32;
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    ifindex = info.ipi6_ifindex;
                }
                _ => {}
            }
        }
        // No arrival information: the gateway could not tell where it came from; drop it.
        let Some(destination) = destination else {
            return Ok(None);
        };
        Ok(Some(Received {
            source,
            destination,
            ifindex,
            len: msg.bytes,
        }))
    }

    /// Send `payload` to `to` from local address `from` out of interface `ifindex`.
    pub fn send_from(
        &self,
        payload: &[u8],
        from: IpAddr,
        ifindex: u32,
        to: SocketAddr,
    ) -> io::Result<()> {
        let fd = self.socket.get_ref().as_raw_fd();
        let iov = [IoSlice::new(payload)];
        match (from, to, self.v6) {
            (IpAddr::V4(from), SocketAddr::V4(to), false) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: ifindex as libc::c_int,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(from).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&SockaddrIn::from(to)),
                )
            }
            (IpAddr::V6(from), SocketAddr::V6(to), true) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: from.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                // A link-local destination needs its interface as scope.
                let to = if to.scope_id() == 0 && is_link_scope(to.ip()) {
                    SocketAddrV6::new(*to.ip(), to.port(), 0, ifindex)
                } else {
                    to
                };
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&SockaddrIn6::from(to)),
                )
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send from {from} to {to} on this socket"),
                ))
            }
        }
        .map(|_| ())
        .map_err(io::Error::from)
    }
}

/// Link-local unicast (fe80::/10) or link-scope multicast (ff02::/16).
fn is_link_scope(a: &Ipv6Addr) -> bool {
    let s = a.segments();
    (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xff0f) == 0xff02
}

fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
