//! The request socket on port 5351, where NAT-PMP and PCP both arrive: one socket on
//! 0.0.0.0:5351 that learns, for every datagram, the interface it arrived on and the address it
//! was sent to (IP_PKTINFO), and sends each reply from exactly that address (clients drop
//! replies from any other, RFC 6886 §3.2, RFC 6887 §8.3).

use nix::sys::socket::{
    bind, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
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
}

impl RequestSocket {
    pub fn bind(port: u16) -> io::Result<RequestSocket> {
        // IP_PKTINFO is switched on before bind: a datagram queued in between would carry no
        // arrival interface and be dropped as if it came from outside.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
        )
        .map_err(io::Error::from)?;
        let socket = UdpSocket::from(fd);
        // Announcements are link-local (224.0.0.1): never let them leave the link.
        setsockopt(&socket, sockopt::IpMulticastTtl, &1).map_err(io::Error::from)?;
        setsockopt(&socket, sockopt::IpMulticastLoop, &false).map_err(io::Error::from)?;
        Ok(RequestSocket {
            socket: {
                // SAFETY: `socket` is an owned, open descriptor that moves into the AsyncFd and
                // stays open, unchanged, until the AsyncFd drops it.
                unsafe { AsyncFd::register(socket) }?
            },
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
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(source) = msg.address.map(|a| SocketAddrV4::new(a.ip(), a.port())) else {
            return Ok(None);
        };
        let mut destination = Ipv4Addr::UNSPECIFIED;
        let mut ifindex = 0;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                destination = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                ifindex = info.ipi_ifindex as u32;
            }
        }
        Ok(Some(Received {
            source: source.into(),
            destination: destination.into(),
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
        let (IpAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this socket speaks IPv4 only",
            ));
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: ifindex as libc::c_int,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(from).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let dest = SockaddrIn::from(to);
        sendmsg(
            self.socket.get_ref().as_raw_fd(),
            &[IoSlice::new(payload)],
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&dest),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    }
}
