//! [`Session`]: requests and their answers over our one netfilter netlink socket.
//!
//! Two shapes of exchange: a batch of acked messages ([`Session::exchange`]: element
//! transactions, hairpin sets, conntrack deletes), and a dump or get ([`Session::query`]:
//! elements, conntrack entries, the health check's objects). Sequence numbers are ours to
//! assign; every answer is matched to its request by them, and anything else is ignored.

use crate::nl::{self, ErrorMsg, TooLong, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP};
use natpmp_pcp_core::kernel::{Errno, KernelError};
use std::io;

/// Receive buffer: larger than the biggest datagram the kernel builds for a dump (32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// `NLM_F_DUMP_INTR`: the dumped object changed while it was being dumped.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// How many times a dump that was interrupted by a concurrent change is retried.
const DUMP_TRIES: usize = 3;

/// Why an exchange has no answer to give.
#[derive(Debug)]
pub enum ExchangeFailure {
    /// The request never reached the kernel, which is as it was.
    NotSent(io::Error),
    /// The request went out, but its answers did not all come back: the outcome is unknown.
    Lost(KernelError),
}

impl From<ExchangeFailure> for KernelError {
    fn from(f: ExchangeFailure) -> KernelError {
        match f {
            ExchangeFailure::NotSent(e) => KernelError::Io(e),
            ExchangeFailure::Lost(e) => e,
        }
    }
}

/// Which messages of an exchange carry `NLM_F_ACK`, and so are answered when they succeed.
/// A failed message is answered either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Every message: the exchange ends when each has its answer.
    Every,
    /// Only the last. For an nf_tables batch: nfnetlink keeps a batch's answers until the
    /// whole batch is processed, then delivers them in message order, so the last message's
    /// answer comes after every error of the messages before it and closes the exchange.
    Last,
}

/// The socket, its sequence numbers and its receive buffer.
pub struct Session {
    sock: nl::Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Session {
    pub fn open() -> io::Result<Session> {
        Ok(Session::with_socket(nl::Socket::open()?))
    }

    /// A session over `sock` (of any netlink family).
    pub fn with_socket(sock: nl::Socket) -> Session {
        // Start sequence numbers somewhere unlikely to repeat across restarts, which makes
        // reading a `nft monitor` or a packet capture of several runs less confusing.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Session {
            sock,
            seq,
            buf: vec![0; RECV_BUF],
        }
    }

    pub fn port(&self) -> u32 {
        self.sock.port
    }

    pub fn seq(&self) -> u32 {
        self.seq
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The first of the sequence numbers a batch encoded from here would use; pair with
    /// [`Session::used_until`].
    pub fn peek_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    /// A batch used sequence numbers up to, not including, `next`.
    pub fn used_until(&mut self, next: u32) {
        self.seq = next.wrapping_sub(1);
    }

    /// Send one datagram of `expected` messages numbered from `first_seq` and collect the
    /// kernel's answers: an error for each message that failed, and an ack for each that
    /// carries `NLM_F_ACK` as `acks` says. Returns the errors, each with its seq. `batch_seq`
    /// is where batch-wide errors are reported (nfnetlink answers failed commits, refused
    /// batches and lack of memory there); after such an error the remaining answers may never
    /// come, so we stop waiting and take only what is already queued.
    pub fn exchange(
        &mut self,
        bytes: &[u8],
        first_seq: u32,
        expected: usize,
        batch_seq: Option<u32>,
        acks: Acks,
    ) -> Result<Vec<ErrorMsg>, ExchangeFailure> {
        self.sock.reserve(bytes.len(), expected + 2);
        self.sock.drain(&mut self.buf);
        self.sock.send(bytes).map_err(ExchangeFailure::NotSent)?;
        let lost = |e: io::Error| ExchangeFailure::Lost(KernelError::Io(e));
        let mut answered = vec![false; expected];
        // The answers that must come: every message's, or the last one's alone.
        let mut remaining = match acks {
            Acks::Every => expected,
            Acks::Last => expected.min(1),
        };
        let mut errors = Vec::new();
        let mut batch_failed = false;
        while remaining > 0 {
            let got = match self.sock.recv(&mut self.buf, !batch_failed) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(ExchangeFailure::Lost(KernelError::Protocol(
                        "the kernel's answers overflowed the socket buffer".into(),
                    )))
                }
                Err(e) => return Err(lost(e)),
            };
            for msg in nl::messages(&self.buf[..got]) {
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(err) = ErrorMsg::parse(&msg) else {
                    continue;
                };
                if Some(err.seq) == batch_seq {
                    if err.errno != 0 {
                        batch_failed = true;
                        errors.push(err);
                    }
                    continue;
                }
                let idx = err.seq.wrapping_sub(first_seq) as usize;
                match answered.get_mut(idx) {
                    Some(seen) if !*seen => {
                        *seen = true;
                        if acks == Acks::Every || idx + 1 == expected {
                            remaining -= 1;
                        }
                        if err.errno != 0 {
                            errors.push(err);
                        }
                    }
                    // A stale or duplicate answer: not ours to count.
                    _ => {}
                }
            }
        }
        if remaining > 0 && errors.is_empty() {
            let what = match acks {
                Acks::Every => format!(
                    "the kernel answered only {} of {expected} messages",
                    expected - remaining
                ),
                Acks::Last => format!("the kernel did not answer the last of {expected} messages"),
            };
            return Err(ExchangeFailure::Lost(KernelError::Protocol(what)));
        }
        Ok(errors)
    }

    /// Run a dump request, handing each answer's payload to `each`. A dump that the kernel
    /// flags as interrupted (the map changed meanwhile) is started over. A refusal becomes
    /// `KernelError::Refused` naming `what`.
    pub fn dump(
        &mut self,
        request: impl FnMut(u32) -> Result<Vec<u8>, TooLong>,
        each: impl FnMut(&[u8]),
        what: &str,
    ) -> Result<(), KernelError> {
        self.query(request, each, what)?
            .map_err(|e| refused(what.to_owned(), &e))
    }

    /// [`Session::dump`], but a refusal by the kernel is handed back as the inner error, so a
    /// caller can tell "no such table" from a failure. Also serves plain gets sent with
    /// `NLM_F_ACK`: their answers come back the same way, ended by the ack.
    pub fn query(
        &mut self,
        mut request: impl FnMut(u32) -> Result<Vec<u8>, TooLong>,
        mut each: impl FnMut(&[u8]),
        what: &str,
    ) -> Result<Result<(), ErrorMsg>, KernelError> {
        for _ in 0..DUMP_TRIES {
            let seq = self.next_seq();
            let bytes = request(seq)?;
            self.sock.drain(&mut self.buf);
            self.sock.send(&bytes)?;
            let mut interrupted = false;
            let mut payloads: Vec<Vec<u8>> = Vec::new();
            'recv: loop {
                let got = match self.sock.recv(&mut self.buf, true)? {
                    Some(n) => n,
                    None => continue,
                };
                for msg in nl::messages(&self.buf[..got]) {
                    if msg.seq != seq || msg.ty == NLMSG_NOOP {
                        continue;
                    }
                    if msg.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match msg.ty {
                        NLMSG_DONE => {
                            // The payload, when present, is the dump's final status.
                            let status = msg
                                .payload
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .map(i32::from_ne_bytes)
                                .unwrap_or(0);
                            if status < 0 {
                                return Ok(Err(ErrorMsg {
                                    errno: status.checked_neg().unwrap_or(i32::MAX),
                                    seq,
                                    text: None,
                                }));
                            }
                            break 'recv;
                        }
                        NLMSG_ERROR => match ErrorMsg::parse(&msg) {
                            Some(e) if e.errno != 0 => return Ok(Err(e)),
                            _ => break 'recv,
                        },
                        _ => payloads.push(msg.payload.to_vec()),
                    }
                }
            }
            if !interrupted {
                payloads.iter().for_each(|p| each(p));
                return Ok(Ok(()));
            }
        }
        Err(KernelError::Protocol(format!(
            "{what}: kept changing while being read ({DUMP_TRIES} tries)"
        )))
    }
}

/// A request that could not be encoded was never sent: the kernel is as it was.
impl From<TooLong> for KernelError {
    fn from(e: TooLong) -> KernelError {
        KernelError::Encode(e.to_string())
    }
}

/// The kernel refused `what` with `e`; its extended-ack text, if any, goes into `what`.
pub fn refused(mut what: String, e: &ErrorMsg) -> KernelError {
    if let Some(text) = &e.text {
        what.push_str(" (");
        what.push_str(text);
        what.push(')');
    }
    KernelError::Refused {
        what,
        errno: Errno(e.errno),
    }
}
