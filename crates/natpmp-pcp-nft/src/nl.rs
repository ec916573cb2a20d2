//! Netlink framing shared by the nftables and conntrack encoders: a message builder, checked
//! views over replies, and a blocking `NETLINK_NETFILTER` socket.
//!
//! Written by hand (on `libc` only) because we need five message kinds, and a full netlink
//! stack would be more code to audit than this file. The parsing half follows one rule: nothing
//! the kernel sends can make it panic. Every length is checked against the bytes actually
//! present before it is used, and a malformed frame ends the walk instead of being trusted.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32 (host byte order).
pub const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`: family u8, version u8, res_id be16.
pub const NFGENMSG_LEN: usize = 4;
/// `struct nlattr`: len u16, type u16 (host byte order).
pub const NLA_HDRLEN: usize = 4;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// In an `NLMSG_ERROR` reply: the echoed request was cut to its header (`NETLINK_CAP_ACK`).
pub const NLM_F_CAPPED: u16 = 0x100;
/// In an `NLMSG_ERROR` reply: extended-ack attributes follow (`NETLINK_EXT_ACK`).
pub const NLM_F_ACK_TLVS: u16 = 0x200;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Attribute type bit saying "the payload is itself a list of attributes".
pub const NLA_F_NESTED: u16 = 0x8000;
/// The two flag bits of an attribute type; the rest is the type number.
const NLA_TYPE_MASK: u16 = 0x3fff;

const NLMSGERR_ATTR_MSG: u16 = 1;

/// Round up to the 4-byte alignment of netlink headers and attributes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An attribute, nest or message too long for its length field: netlink counts attribute
/// and nest lengths in 16 bits (at most 65 535 bytes, header included) and message lengths in
/// 32. A builder that hit one refuses to hand out its bytes: a truncated length would make the
/// kernel read the rest of the batch as garbage, or worse, as other attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// The attribute type (without flag bits), or the message type for a whole message.
    pub ty: u16,
    /// Its length in bytes, header included.
    pub len: usize,
    /// What its length field holds at most.
    pub max: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "netlink attribute or message of type {:#x} would be {} bytes, over the {} its \
             length field can hold",
            self.ty, self.len, self.max
        )
    }
}

impl std::error::Error for TooLong {}

/// Builds one or more netlink messages back to back in one buffer, which is how a batch is
/// sent: the whole transaction must reach the kernel in a single `sendmsg`.
///
/// Lengths are checked, never cast: an attribute or nest over 65 535 bytes (or a message over
/// 4 GiB) is not written, the first such one is remembered, and [`MsgBuilder::into_bytes`] and
/// [`MsgBuilder::as_bytes`] return it as an error instead of the bytes. The error is kept in
/// the builder rather than returned by each call so that encoders stay straight-line code; it
/// cannot be missed, because the bytes cannot be had without looking at it.
#[derive(Default)]
pub struct MsgBuilder {
    buf: Vec<u8>,
    too_long: Option<TooLong>,
}

/// Where an open message or nest starts, so its length can be patched when it is closed.
#[must_use]
pub struct Mark(usize);

/// Largest attribute or nest, header included (`nla_len` is a u16).
pub const NLA_MAX_LEN: usize = u16::MAX as usize;

impl MsgBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        MsgBuilder {
            buf: Vec::with_capacity(n),
            too_long: None,
        }
    }

    /// A builder writing into `buf`, emptied first: a buffer kept from one message to the
    /// next, so that a transaction does not allocate its bytes each time.
    pub fn reusing(mut buf: Vec<u8>) -> Self {
        buf.clear();
        MsgBuilder {
            buf,
            too_long: None,
        }
    }

    fn refuse(&mut self, ty: u16, len: usize, max: usize) {
        self.too_long.get_or_insert(TooLong { ty, len, max });
    }

    /// Open a netfilter message: the netlink header plus `nfgenmsg`. The port id is 0: the
    /// kernel fills in the sender's own.
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Mark {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `end`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        Mark(start)
    }

    /// Close a message opened with [`MsgBuilder::begin`].
    pub fn end(&mut self, mark: Mark) {
        let len = self.buf.len() - mark.0;
        match u32::try_from(len) {
            Ok(len) => self.buf[mark.0..mark.0 + 4].copy_from_slice(&len.to_ne_bytes()),
            Err(_) => {
                let ty = u16::from_ne_bytes([self.buf[mark.0 + 4], self.buf[mark.0 + 5]]);
                self.refuse(ty, len, u32::MAX as usize);
            }
        }
    }

    /// Append one attribute; the payload is padded with zeros to 4 bytes (the padding is not
    /// counted in the attribute's length, as netlink requires). Over 65 535 bytes with its
    /// header, nothing is appended and the builder fails (see [`TooLong`]).
    pub fn attr(&mut self, ty: u16, payload: &[u8]) {
        let Some(len) = self.attr_len(ty, payload.len()) else {
            return;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    /// A NUL-terminated string attribute (`NLA_STRING` as nftables expects names).
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let Some(len) = self.attr_len(ty, s.len() + 1) else {
            return;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// The `nla_len` of an attribute with `payload` bytes, or `None` (and the builder fails)
    /// when it does not fit.
    fn attr_len(&mut self, ty: u16, payload: usize) -> Option<u16> {
        let len = NLA_HDRLEN.saturating_add(payload);
        let fits = u16::try_from(len).ok();
        if fits.is_none() {
            self.refuse(ty & NLA_TYPE_MASK, len, NLA_MAX_LEN);
        }
        fits
    }

    /// Open a nested attribute; its length is patched by [`MsgBuilder::nest_end`].
    pub fn nest_begin(&mut self, ty: u16) -> Mark {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        Mark(start)
    }

    /// Close a nest. Over 65 535 bytes with its contents, the builder fails (see [`TooLong`]).
    pub fn nest_end(&mut self, mark: Mark) {
        let len = self.buf.len() - mark.0;
        match u16::try_from(len) {
            Ok(len) => self.buf[mark.0..mark.0 + 2].copy_from_slice(&len.to_ne_bytes()),
            Err(_) => {
                let ty = u16::from_ne_bytes([self.buf[mark.0 + 2], self.buf[mark.0 + 3]]);
                self.refuse(ty & NLA_TYPE_MASK, len, NLA_MAX_LEN);
            }
        }
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// The messages built so far, unless a length did not fit.
    pub fn as_bytes(&self) -> Result<&[u8], TooLong> {
        match self.too_long {
            None => Ok(&self.buf),
            Some(e) => Err(e),
        }
    }

    /// The messages, unless a length did not fit.
    pub fn into_bytes(self) -> Result<Vec<u8>, TooLong> {
        match self.too_long {
            None => Ok(self.buf),
            Some(e) => Err(e),
        }
    }
}

/// A checked view of one netlink message inside a receive buffer. (The port id is not kept:
/// the kernel's answers carry our own.)
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte netlink header, exactly `len - 16` bytes.
    pub payload: &'a [u8],
}

/// Walks the messages of one datagram. Stops (and sets `malformed`) at the first header whose
/// length does not fit, rather than guessing where the next message starts.
pub struct Msgs<'a> {
    rest: &'a [u8],
    pub malformed: bool,
}

pub fn messages(buf: &[u8]) -> Msgs<'_> {
    Msgs {
        rest: buf,
        malformed: false,
    }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Msg<'a>;

    fn next(&mut self) -> Option<Msg<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < NLMSG_HDRLEN {
            self.malformed = true;
            self.rest = &[];
            return None;
        }
        let len = u32::from_ne_bytes(self.rest[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.malformed = true;
            self.rest = &[];
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([self.rest[4], self.rest[5]]),
            flags: u16::from_ne_bytes([self.rest[6], self.rest[7]]),
            seq: u32::from_ne_bytes(self.rest[8..12].try_into().ok()?),
            payload: &self.rest[NLMSG_HDRLEN..len],
        };
        // The last message of a datagram may be unpadded; never step past the end.
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(msg)
    }
}

/// One attribute: its type number (flag bits removed) and payload (padding removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub ty: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The attributes nested inside this one.
    pub fn nested(&self) -> Attrs<'a> {
        attrs(self.payload)
    }

    pub fn u8(&self) -> Option<u8> {
        self.payload.first().copied()
    }

    pub fn be16(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.payload.get(..2)?.try_into().ok()?))
    }

    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.payload.get(..4)?.try_into().ok()?))
    }

    pub fn be64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.payload.get(..8)?.try_into().ok()?))
    }

    /// A string attribute, without its terminating NUL.
    pub fn str(&self) -> Option<&'a str> {
        let bytes = self.payload.split(|&b| b == 0).next()?;
        std::str::from_utf8(bytes).ok()
    }
}

/// Walks a list of attributes; stops at the first one whose length does not fit.
#[derive(Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

impl<'a> Attrs<'a> {
    /// The first attribute of type `ty`, if any.
    pub fn get(self, ty: u16) -> Option<Attr<'a>> {
        let mut it = self;
        it.by_ref().find(|a: &Attr<'a>| a.ty == ty)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if self.rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let attr = Attr {
            ty,
            payload: &self.rest[NLA_HDRLEN..len],
        };
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(attr)
    }
}

/// The payload of an `NLMSG_ERROR` reply: an ack when `errno == 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// The positive errno (the kernel sends it negated); 0 for an ack.
    pub errno: i32,
    /// The sequence number of the request this answers.
    pub seq: u32,
    /// The kernel's extended-ack text, when it gave one.
    pub text: Option<String>,
}

impl ErrorMsg {
    pub fn parse(msg: &Msg<'_>) -> Option<ErrorMsg> {
        let p = msg.payload;
        let error = i32::from_ne_bytes(p.get(0..4)?.try_into().ok()?);
        let orig = p.get(4..4 + NLMSG_HDRLEN)?;
        let orig_len = u32::from_ne_bytes(orig[0..4].try_into().ok()?) as usize;
        let seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
        let mut text = None;
        if msg.flags & NLM_F_ACK_TLVS != 0 {
            // The TLVs follow the echoed request: only its header when capped, else all of it.
            let echoed = if msg.flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                align4(orig_len)
            };
            if let Some(tlvs) = p.get(4 + echoed..) {
                text = attrs(tlvs)
                    .get(NLMSGERR_ATTR_MSG)
                    .and_then(|a| a.str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned);
            }
        }
        Some(ErrorMsg {
            errno: error.checked_neg().unwrap_or(i32::MAX),
            seq,
            text,
        })
    }

    /// The errno as the C library words it, plus the kernel's own text if any.
    pub fn describe(&self) -> String {
        let mut s = io::Error::from_raw_os_error(self.errno).to_string();
        if let Some(t) = &self.text {
            s.push_str(": ");
            s.push_str(t);
        }
        s
    }
}

/// How long a blocking receive waits before we give up on the kernel. Netlink answers are
/// produced synchronously, so hitting this means something is badly wrong, and a daemon that
/// hangs forever is worse than one that reports an error.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A netlink socket (`NETLINK_NETFILTER` unless opened with [`Socket::open_protocol`]) bound
/// in the network namespace of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
    /// Kernel-assigned port id; replies carry it, so stray messages can be told apart.
    pub port: u32,
    sndbuf: usize,
    rcvbuf: usize,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        Socket::open_protocol(libc::NETLINK_NETFILTER)
    }

    /// A socket of another netlink family (`NETLINK_SOCK_DIAG`).
    pub fn open_protocol(protocol: i32) -> io::Result<Socket> {
        // SAFETY: plain syscall; the result is checked before it is wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid; port 0 asks the kernel to pick one.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let addr_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                addr_len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut len = addr_len;
        // SAFETY: `addr` has room for a sockaddr_nl and `len` says so.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                &mut addr as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sock = Socket {
            fd,
            port: addr.nl_pid,
            sndbuf: 0,
            rcvbuf: 0,
        };
        // Errors echo only the failed request's header, not all of it (a 2000-element batch
        // with one failure would otherwise echo that message whole); and ask for the kernel's
        // error text. Both are best effort: older kernels answer without them.
        let _ = sock.setsockopt_int(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let _ = sock.setsockopt_int(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        sock.sndbuf = sock.getsockopt_int(libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        sock.rcvbuf = sock.getsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        Ok(sock)
    }

    fn setsockopt_int(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        // SAFETY: `value` is a valid int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn getsockopt_int(&self, level: i32, name: i32) -> io::Result<usize> {
        let mut value: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: `value` has room for an int and `len` says so.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &mut value as *mut i32 as *mut libc::c_void,
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value.max(0) as usize)
    }

    /// Grow a socket buffer to at least `want` bytes. The `FORCE` variants (CAP_NET_ADMIN,
    /// which a process that may change nftables has anyway) pass `net.core.*mem_max`; the plain
    /// ones are the fallback. Buffers are never shrunk.
    fn grow(&mut self, send: bool, want: usize) {
        let current = if send { self.sndbuf } else { self.rcvbuf };
        if want <= current {
            return;
        }
        let (force, plain) = if send {
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
        } else {
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
        };
        // The kernel doubles the value it is given (for its own bookkeeping); ask for half.
        let value = (want / 2 + 1).min(i32::MAX as usize) as i32;
        if self.setsockopt_int(libc::SOL_SOCKET, force, value).is_err() {
            let _ = self.setsockopt_int(libc::SOL_SOCKET, plain, value);
        }
        if let Ok(now) = self.getsockopt_int(libc::SOL_SOCKET, plain) {
            if send {
                self.sndbuf = now;
            } else {
                self.rcvbuf = now;
            }
        }
    }

    /// Make room for one datagram of `len` bytes going out and about `answers` small replies
    /// coming back before we read them (the kernel answers a batch while `sendmsg` runs).
    pub fn reserve(&mut self, len: usize, answers: usize) {
        // netlink refuses a datagram larger than the send buffer minus 32 bytes.
        self.grow(true, len + 4096);
        // Each ack is its own skb; its accounted size (skb plus data) is well under 1 KiB.
        self.grow(false, answers.saturating_mul(1024) + 256 * 1024);
    }

    /// Send one datagram to the kernel.
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel (port 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: `buf` and `addr` are valid for the lengths given.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc as usize != buf.len() {
                return Err(io::Error::other("netlink sendto sent a partial datagram"));
            }
            return Ok(());
        }
    }

    /// Receive one datagram into `buf`. With `wait == false`, returns `Ok(None)` when nothing
    /// is queued; with `wait == true`, a timeout is an error. A datagram larger than `buf` is
    /// an error rather than silently cut.
    pub fn recv(&self, buf: &mut [u8], wait: bool) -> io::Result<Option<usize>> {
        let flags = libc::MSG_TRUNC | if wait { 0 } else { libc::MSG_DONTWAIT };
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    flags,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock if !wait => return Ok(None),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer from the kernel over netlink",
                        ))
                    }
                    _ => return Err(e),
                }
            }
            let n = rc as usize;
            if n > buf.len() {
                return Err(io::Error::other(format!(
                    "netlink datagram of {n} bytes did not fit the {} byte buffer",
                    buf.len()
                )));
            }
            return Ok(Some(n));
        }
    }

    /// Throw away anything left over from an earlier exchange, so that its replies can never be
    /// mistaken for the next one's.
    pub fn drain(&self, buf: &mut [u8]) {
        while let Ok(Some(_)) = self.recv(buf, false) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_patched() {
        let mut b = MsgBuilder::new();
        let n = b.nest_begin(3);
        b.attr(1, &[0xaa]);
        b.attr_str(2, "ab");
        b.nest_end(n);
        let bytes = b.into_bytes().unwrap();
        #[rustfmt::skip]
        let expected_le: [u8; 20] = [
            20, 0, 0x03, 0x80,     // nest: len 20, type 3 | NLA_F_NESTED
            5, 0, 1, 0,            // attr 1, len 4 + 1
            0xaa, 0, 0, 0,         // one byte of payload, three of padding
            7, 0, 2, 0,            // attr 2, len 4 + "ab\0"
            b'a', b'b', 0, 0,      // string, NUL, one byte of padding
        ];
        if cfg!(target_endian = "little") {
            assert_eq!(bytes, expected_le);
        }
        let outer: Vec<_> = attrs(&bytes).collect();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].ty, 3);
        let inner: Vec<_> = outer[0].nested().collect();
        assert_eq!(inner[0].payload, &[0xaa]);
        assert_eq!(inner[1].str(), Some("ab"));
    }

    #[test]
    fn truncated_input_never_panics() {
        let mut b = MsgBuilder::new();
        let m = b.begin(0x0a0c, NLM_F_REQUEST, 7, 2, 0);
        b.attr_str(1, "natpmpd");
        let n = b.nest_begin(3);
        b.attr(1, &[1, 2, 3, 4, 5]);
        b.nest_end(n);
        b.end(m);
        let bytes = b.into_bytes().unwrap();
        for cut in 0..=bytes.len() {
            let part = &bytes[..cut];
            for msg in messages(part) {
                for a in attrs(msg.payload.get(NFGENMSG_LEN..).unwrap_or(&[])) {
                    let _ = a.nested().count();
                    let _ = (a.u8(), a.be16(), a.be32(), a.be64(), a.str());
                }
                let _ = ErrorMsg::parse(&msg);
            }
            // Also garbage lengths in every position.
            let mut junk = part.to_vec();
            for i in 0..junk.len() {
                junk[i] = 0xff;
                let _ = messages(&junk).count();
                let _ = attrs(&junk).count();
            }
        }
        let all: Vec<_> = messages(&bytes).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].seq, 7);
    }

    #[test]
    fn an_attribute_of_65535_bytes_fits_and_one_of_65536_is_refused() {
        // 4 bytes of header + 65 531 of payload = 65 535: the largest nla_len.
        let mut b = MsgBuilder::new();
        b.attr(7, &vec![0xab; NLA_MAX_LEN - NLA_HDRLEN]);
        let bytes = b.into_bytes().expect("65 535 bytes fit");
        let all: Vec<_> = attrs(&bytes).collect();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].ty, all[0].payload.len()), (7, 65_531));

        let mut b = MsgBuilder::new();
        b.attr(7, &vec![0xab; NLA_MAX_LEN - NLA_HDRLEN + 1]);
        assert_eq!(
            b.into_bytes(),
            Err(TooLong {
                ty: 7,
                len: 65_536,
                max: 65_535
            })
        );

        // A string counts its NUL.
        let mut b = MsgBuilder::new();
        b.attr_str(2, &"x".repeat(NLA_MAX_LEN - NLA_HDRLEN - 1));
        assert!(b.as_bytes().is_ok());
        b.attr_str(2, &"x".repeat(NLA_MAX_LEN - NLA_HDRLEN));
        assert_eq!(b.as_bytes().unwrap_err().len, 65_536);
    }

    #[test]
    fn a_nest_of_65532_bytes_fits_and_one_of_65536_is_refused() {
        // A nest's contents are padded attributes, so its length is a multiple of 4: the
        // largest that fits is 65 532 (nest header 4 + attribute header 4 + 65 524), and one
        // byte more of payload pads the nest to 65 536.
        for (payload, fits) in [(65_524, true), (65_525, false)] {
            let mut b = MsgBuilder::new();
            let m = b.begin(0x0a0c, NLM_F_REQUEST, 1, 2, 0);
            let n = b.nest_begin(3);
            b.attr(1, &vec![0; payload]);
            b.nest_end(n);
            b.end(m);
            match b.into_bytes() {
                Ok(bytes) => {
                    assert!(fits, "a nest of {} bytes was built", payload + 8);
                    let msg = messages(&bytes).next().unwrap();
                    let nest = attrs(&msg.payload[NFGENMSG_LEN..]).next().unwrap();
                    assert_eq!((nest.ty, nest.payload.len()), (3, 65_528));
                    assert_eq!(nest.nested().next().unwrap().payload.len(), payload);
                }
                Err(e) => {
                    assert!(!fits, "a nest of {} bytes was refused: {e}", payload + 8);
                    assert_eq!((e.ty, e.len, e.max), (3, 65_536, 65_535));
                }
            }
        }
    }

    #[test]
    fn the_first_refusal_is_kept_and_later_attributes_do_not_hide_it() {
        let mut b = MsgBuilder::new();
        let n = b.nest_begin(5);
        b.attr(1, &vec![0; 70_000]);
        b.attr(2, &[1]);
        b.nest_end(n);
        let e = b.as_bytes().unwrap_err();
        assert_eq!((e.ty, e.len), (1, 70_004));
        assert!(e.to_string().contains("70004 bytes"), "{e}");
    }
}
