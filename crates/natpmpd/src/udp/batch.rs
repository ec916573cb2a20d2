//! recvmmsg and sendmmsg on the request sockets: up to [`BATCH`] datagrams per system call in
//! each direction, with the arrival interface and destination of each (IP_PKTINFO,
//! IPV6_PKTINFO) and the source address each reply must go out from.
//!
//! One recvmsg and one sendmsg per request held natpmpd at ~84% of a UDP responder that does
//! no work at all; the system calls, not the gateway, were the cost (docs/benchmarks.md).
//!
//! The buffers live in [`ReceiveBatch`] and [`SendBatch`], allocated once; the message headers
//! that point into them are rebuilt before every call (64 small writes), so no raw pointer
//! outlives the call that uses it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call, and per turn of the event loop before timers, events and the
/// control socket get theirs.
pub const BATCH: usize = 64;
/// Room for the largest request worth reading: PCP's 1100 bytes, with margin. A longer
/// datagram is cut to this and answered MALFORMED_REQUEST (it is over 1100 either way).
pub const RECV_BUFFER: usize = 2048;

/// Room for one IPv4 or IPv6 packet-info control message (40 bytes on 64-bit Linux) and any
/// other the kernel might add; a truncated control area (MSG_CTRUNC) drops the datagram.
const CONTROL_ROOM: usize = 128;

/// A control-message area, aligned as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_ROOM]);

/// Where a received datagram came from and in, and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub source: SocketAddr,
    /// The destination address in the IP header (may be broadcast or multicast).
    pub destination: IpAddr,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Bytes read: at most [`RECV_BUFFER`].
    pub len: usize,
}

/// One datagram to send: `payload` to `to`, from the local address `from`, out of `ifindex`.
#[derive(Clone, Copy, Debug)]
pub struct Outbound<'a> {
    pub payload: &'a [u8],
    pub from: IpAddr,
    pub ifindex: u32,
    pub to: SocketAddr,
}

/// The buffers of one recvmmsg call and what it read.
pub struct ReceiveBatch {
    buffers: Vec<[u8; RECV_BUFFER]>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// What the last call read, with the index of the buffer that holds each payload.
    received: Vec<(Received, usize)>,
}

impl Default for ReceiveBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ReceiveBatch {
    pub fn new() -> ReceiveBatch {
        ReceiveBatch {
            buffers: vec![[0; RECV_BUFFER]; BATCH],
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all
            // zero bytes are a valid value (null pointers, zero lengths).
            names: vec![unsafe { zeroed() }; BATCH],
            controls: vec![Control([0; CONTROL_ROOM]); BATCH],
            iovecs: vec![unsafe { zeroed() }; BATCH],
            headers: vec![unsafe { zeroed() }; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// The datagrams the last [`ReceiveBatch::receive`] read, with their payloads.
    pub fn datagrams(&self) -> impl Iterator<Item = (&Received, &[u8])> + '_ {
        self.received
            .iter()
            .map(|(r, i)| (r, &self.buffers[*i][..r.len]))
    }

    pub fn len(&self) -> usize {
        self.received.len()
    }

    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// Read up to [`BATCH`] queued datagrams from the non-blocking socket `fd`, replacing what
    /// the last call read. `Err(WouldBlock)` when none is queued. Returns how many the kernel
    /// handed over; those without arrival information are dropped and not in
    /// [`ReceiveBatch::datagrams`] (the gateway could not tell where they came from).
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received.clear();
        let names = self.names.as_mut_ptr();
        let controls = self.controls.as_mut_ptr();
        let iovecs = self.iovecs.as_mut_ptr();
        for (i, (buffer, header)) in self
            .buffers
            .iter_mut()
            .zip(self.headers.iter_mut())
            .enumerate()
        {
            // SAFETY: `i < BATCH`, the length of every vector here, none of which is resized
            // while these pointers are in use (only within this call).
            unsafe {
                *iovecs.add(i) = libc::iovec {
                    iov_base: buffer.as_mut_ptr().cast(),
                    iov_len: RECV_BUFFER,
                };
                header.msg_hdr.msg_name = names.add(i).cast();
                header.msg_hdr.msg_iov = iovecs.add(i);
                header.msg_hdr.msg_control = controls.add(i).cast();
            }
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_controllen = CONTROL_ROOM as _;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: `headers` holds BATCH initialised mmsghdr whose buffers are live and as
        // long as their lengths say; no timeout (the socket is non-blocking).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let header = &self.headers[i];
            let Some(source) = socket_address(&self.names[i], header.msg_hdr.msg_namelen) else {
                continue;
            };
            if header.msg_hdr.msg_flags & libc::MSG_CTRUNC != 0 {
                continue;
            }
            // SAFETY: the kernel filled the control area of this header, whose pointer and
            // length recvmmsg returned, within the `controls[i]` it points into.
            let Some((destination, ifindex)) = (unsafe { packet_info(&header.msg_hdr) }) else {
                continue;
            };
            let received = Received {
                source,
                destination,
                ifindex,
                len: (header.msg_len as usize).min(RECV_BUFFER),
            };
            self.received.push((received, i));
        }
        Ok(n)
    }
}

/// The scratch of sendmmsg calls.
pub struct SendBatch {
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// For each prepared header, the index of its datagram in the chunk being sent.
    order: Vec<usize>,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            // SAFETY: as in ReceiveBatch::new, all zeros is a valid value of each.
            names: vec![unsafe { zeroed() }; BATCH],
            controls: vec![Control([0; CONTROL_ROOM]); BATCH],
            iovecs: vec![unsafe { zeroed() }; BATCH],
            headers: vec![unsafe { zeroed() }; BATCH],
            order: Vec::with_capacity(BATCH),
        }
    }

    /// Send every datagram in `out` on the socket `fd` (of family IPv6 when `v6`), [`BATCH`] per
    /// system call. A datagram the kernel refuses (full send queue, no route) is skipped and
    /// given to `refused` with the error, and the rest still go.
    pub fn send(
        &mut self,
        fd: RawFd,
        v6: bool,
        out: &[Outbound<'_>],
        mut refused: impl FnMut(&Outbound<'_>, io::Error),
    ) {
        for chunk in out.chunks(BATCH) {
            self.order.clear();
            for (k, o) in chunk.iter().enumerate() {
                match self.prepare(self.order.len(), v6, o) {
                    Ok(()) => self.order.push(k),
                    Err(e) => refused(o, e),
                }
            }
            let count = self.order.len();
            let names = self.names.as_mut_ptr();
            let controls = self.controls.as_mut_ptr();
            let iovecs = self.iovecs.as_mut_ptr();
            for (i, header) in self.headers[..count].iter_mut().enumerate() {
                // SAFETY: `i < count <= BATCH`, the length of every vector here; none is
                // resized while these pointers are in use (only within this call).
                unsafe {
                    header.msg_hdr.msg_name = names.add(i).cast();
                    header.msg_hdr.msg_iov = iovecs.add(i);
                    header.msg_hdr.msg_control = controls.add(i).cast();
                }
            }
            let mut sent = 0;
            while sent < count {
                // SAFETY: headers[sent..count] were prepared above and point into this
                // batch's vectors and into the payloads of `chunk`, all alive during the call.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.headers.as_mut_ptr().add(sent),
                        (count - sent) as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    // sendmmsg reports an error only when the first datagram of the call
                    // fails: skip that one and go on with the next.
                    refused(&chunk[self.order[sent]], io::Error::last_os_error());
                    sent += 1;
                } else {
                    sent += n as usize;
                }
            }
        }
    }

    /// Fill the address, control message, payload slice and lengths of header `i` for `o`
    /// (the pointers are set by `send`, just before the call).
    fn prepare(&mut self, i: usize, v6: bool, o: &Outbound<'_>) -> io::Result<()> {
        let name = &mut self.names[i];
        let control = &mut self.controls[i].0;
        let (name_len, control_len) = match (o.from, o.to, v6) {
            (IpAddr::V4(from), SocketAddr::V4(to), false) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: o.ifindex as libc::c_int,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(from).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let address = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: to.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*to.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                (
                    store(name, address),
                    write_control(control, libc::IPPROTO_IP, libc::IP_PKTINFO, info),
                )
            }
            (IpAddr::V6(from), SocketAddr::V6(to), true) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: from.octets(),
                    },
                    ipi6_ifindex: o.ifindex,
                };
                // A link-local destination needs its interface as scope.
                let scope = if to.scope_id() == 0 && is_link_scope(to.ip()) {
                    o.ifindex
                } else {
                    to.scope_id()
                };
                let address = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: to.port().to_be(),
                    sin6_flowinfo: to.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: to.ip().octets(),
                    },
                    sin6_scope_id: scope,
                };
                (
                    store(name, address),
                    write_control(control, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info),
                )
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send from {} to {} on this socket", o.from, o.to),
                ))
            }
        };
        self.iovecs[i] = libc::iovec {
            iov_base: o.payload.as_ptr().cast_mut().cast(),
            iov_len: o.payload.len(),
        };
        let header = &mut self.headers[i];
        header.msg_hdr.msg_namelen = name_len;
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_controllen = control_len as _;
        header.msg_hdr.msg_flags = 0;
        header.msg_len = 0;
        Ok(())
    }
}

/// Link-local unicast (fe80::/10) or link-scope multicast (ff02::/16).
pub fn is_link_scope(a: &Ipv6Addr) -> bool {
    let s = a.segments();
    (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xff0f) == 0xff02
}

/// Write `address` (a sockaddr_in or sockaddr_in6) into `name`; its length.
fn store<T: Copy>(name: &mut libc::sockaddr_storage, address: T) -> libc::socklen_t {
    const { assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>()) };
    // SAFETY: sockaddr_storage is larger than, and aligned at least as, any sockaddr type.
    unsafe { std::ptr::write((name as *mut libc::sockaddr_storage).cast::<T>(), address) };
    size_of::<T>() as libc::socklen_t
}

/// One control message of `level`/`kind` carrying `data` at the start of `control`; the
/// length of the control area it takes (CMSG_SPACE).
fn write_control<T: Copy>(
    control: &mut [u8; CONTROL_ROOM],
    level: libc::c_int,
    kind: libc::c_int,
    data: T,
) -> usize {
    // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<T>() as libc::c_uint) as usize,
            libc::CMSG_LEN(size_of::<T>() as libc::c_uint) as usize,
        )
    };
    assert!(space <= CONTROL_ROOM, "a packet-info message fits the room");
    control[..space].fill(0);
    let header = libc::cmsghdr {
        cmsg_len: len as _,
        cmsg_level: level,
        cmsg_type: kind,
    };
    // SAFETY: `control` is 8-aligned (Control) and at least `space` bytes long; the header
    // goes at its start and the data at CMSG_DATA's offset, both within `space`.
    unsafe {
        let cmsg = control.as_mut_ptr().cast::<libc::cmsghdr>();
        std::ptr::write(cmsg, header);
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<T>(), data);
    }
    space
}

/// The peer address the kernel wrote into `name`, if it is IPv4 or IPv6.
fn socket_address(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match name.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The destination address and arrival interface from the IP_PKTINFO or IPV6_PKTINFO message
/// among the control messages of `header`.
///
/// # Safety
/// `header.msg_control` and `msg_controllen` must describe control messages as recvmsg wrote
/// them, in memory that is alive.
unsafe fn packet_info(header: &libc::msghdr) -> Option<(IpAddr, u32)> {
    let mut cmsg = libc::CMSG_FIRSTHDR(header);
    while !cmsg.is_null() {
        let c = &*cmsg;
        let data = libc::CMSG_DATA(cmsg);
        let room = (c.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
        match (c.cmsg_level, c.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if room >= size_of::<libc::in_pktinfo>() => {
                let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                return Some((
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                    info.ipi_ifindex as u32,
                ));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if room >= size_of::<libc::in6_pktinfo>() => {
                let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                return Some((
                    IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    info.ipi6_ifindex,
                ));
            }
            _ => {}
        }
        cmsg = libc::CMSG_NXTHDR(header, cmsg);
    }
    None
}
