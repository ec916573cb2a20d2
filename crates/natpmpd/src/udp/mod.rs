//! The request sockets on port 5351, where NAT-PMP and PCP both arrive: one on 0.0.0.0:5351
//! (IP_PKTINFO) and, for PCP over IPv6, one on [::]:5351 (IPV6_PKTINFO, IPv6 only). Each learns,
//! for every datagram, the interface it arrived on and the address it was sent to, and sends
//! each reply from exactly that address (clients drop replies from any other, RFC 6886 §3.2,
//! RFC 6887 §8.3): global, ULA or link-local.

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};
use std::cell::{Ref, RefCell};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

mod batch;

pub use batch::{Outbound, Received, BATCH, RECV_BUFFER};
use batch::{ReceiveBatch, SendBatch};

pub struct RequestSocket {
    socket: AsyncFd<UdpSocket>,
    v6: bool,
    /// What the last [`RequestSocket::receive`] read. The event loop is single-threaded and
    /// never holds a borrow across an await, so the cells are never borrowed twice.
    received: RefCell<ReceiveBatch>,
    sending: RefCell<SendBatch>,
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
            received: RefCell::new(ReceiveBatch::new()),
            sending: RefCell::new(SendBatch::new()),
        })
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// Wait until datagrams are queued and read up to [`BATCH`] of them in one recvmmsg; they
    /// are in [`RequestSocket::received`] until the next call. A receive error other than an
    /// empty queue is logged and leaves the batch empty.
    pub async fn receive(&self) -> io::Result<()> {
        loop {
            let mut guard = self.socket.readable().await?;
            let fd = guard.get_inner().as_raw_fd();
            // try_io clears the readiness only when the queue was found empty, with the
            // readiness it was given: a datagram that arrives after that wakes us again.
            match guard.try_io(|_| self.received.borrow_mut().receive(fd)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => {
                    warn!("receiving: {e}");
                    return Ok(());
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// The datagrams the last [`RequestSocket::receive`] read.
    pub fn received(&self) -> Ref<'_, ReceiveBatch> {
        self.received.borrow()
    }

    /// Send each datagram in `out` from its own address and interface, [`BATCH`] per
    /// sendmmsg; one the kernel refuses is logged and skipped.
    pub fn send(&self, out: &[Outbound<'_>]) {
        let fd = self.socket.get_ref().as_raw_fd();
        self.sending.borrow_mut().send(fd, self.v6, out, |o, e| {
            debug!("datagram to {} not sent: {e}", o.to)
        });
    }
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

#[cfg(test)]
mod tests;
