//! The router's own listening TCP sockets, over `NETLINK_SOCK_DIAG` (inet_diag).
//!
//! `/proc/net/tcp` lists them too, but to do so the kernel walks its whole table of
//! established connections, which is host-wide and sized by the machine's memory (262 144
//! buckets here: 5 ms a family, whatever this namespace holds). Asked for the LISTEN state
//! alone, inet_diag walks only the listening hash and skips that table. The caller falls back
//! to `/proc` when this fails (a kernel without `tcp_diag`).
//!
//! Layouts from `linux/inet_diag.h`: the request is `inet_diag_req_v2` (56 bytes), each answer
//! begins with `inet_diag_msg` (72 bytes), whose `id` holds the local port (network order) and
//! address.

use crate::nl::Socket;
use crate::session::Session;
use natpmp_pcp_core::kernel::KernelError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `SOCK_DIAG_BY_FAMILY`, the message type of requests and answers.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` in the kernel's `tcp_states.h`.
const TCP_LISTEN: u8 = 10;
const REQ_LEN: usize = 56;
/// `inet_diag_msg`: family, state, timer, retrans, then the 48-byte `inet_diag_sockid`.
const MSG_LEN: usize = 72;
const MSG_SPORT: usize = 4;
const MSG_SRC: usize = 8;

/// Every listening TCP socket of this network namespace, IPv4 and IPv6: its local address
/// (unspecified for a wildcard) and port.
pub fn tcp_listeners() -> Result<Vec<(IpAddr, u16)>, KernelError> {
    let mut session = Session::with_socket(Socket::open_protocol(libc::NETLINK_SOCK_DIAG)?);
    let mut found = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        session.dump(
            |seq| Ok(request(family, seq)),
            |payload| found.extend(parse_listener(payload)),
            "listing the listening TCP sockets (sock_diag)",
        )?;
    }
    Ok(found)
}

/// A dump request for `family`'s TCP sockets in the LISTEN state.
pub(crate) fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = crate::nl::NLMSG_HDRLEN + REQ_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(libc::NLM_F_REQUEST | libc::NLM_F_DUMP).to_ne_bytes()[..2]);
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills in ours
                                              // inet_diag_req_v2: family, protocol, ext (no extensions), pad, states, then an all-zero
                                              // inet_diag_sockid (any address, any port, any interface, no cookie).
    b.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    b.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    b.resize(len, 0);
    b
}

/// The local address and port of one answer, if it is a listening socket of either family.
/// Anything shorter than `inet_diag_msg`, of another family or state, is skipped.
pub(crate) fn parse_listener(payload: &[u8]) -> Option<(IpAddr, u16)> {
    if payload.len() < MSG_LEN || payload[1] != TCP_LISTEN {
        return None;
    }
    let port = u16::from_be_bytes([payload[MSG_SPORT], payload[MSG_SPORT + 1]]);
    let src = &payload[MSG_SRC..MSG_SRC + 16];
    let addr = match i32::from(payload[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?)),
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as the kernel lays it out, with `extra` attribute bytes after it.
    pub fn answer(family: u8, state: u8, port: u16, addr: &[u8]) -> Vec<u8> {
        let mut p = vec![family, state, 0, 0];
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0, 0]); // remote port
        let mut src = [0u8; 16];
        src[..addr.len()].copy_from_slice(addr);
        p.extend_from_slice(&src);
        p.resize(MSG_LEN, 0);
        p
    }

    #[test]
    fn listeners_of_both_families_are_read_and_others_skipped() {
        let v4 = answer(2, TCP_LISTEN, 22, &[192, 168, 88, 1]);
        assert_eq!(
            parse_listener(&v4),
            Some((IpAddr::V4(Ipv4Addr::new(192, 168, 88, 1)), 22))
        );
        let v6 = answer(10, TCP_LISTEN, 443, &Ipv6Addr::LOCALHOST.octets());
        assert_eq!(
            parse_listener(&v6),
            Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 443))
        );
        // Established (1), another family, a short answer: nothing.
        assert_eq!(parse_listener(&answer(2, 1, 22, &[10, 0, 0, 1])), None);
        assert_eq!(parse_listener(&answer(7, TCP_LISTEN, 22, &[])), None);
        assert_eq!(parse_listener(&v4[..MSG_LEN - 1]), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn request_matches_hand_layout() {
        #[rustfmt::skip]
        let mut expected: Vec<u8> = vec![
            72, 0, 0, 0,        // length: 16 + 56
            20, 0,              // SOCK_DIAG_BY_FAMILY
            0x01, 0x03,         // NLM_F_REQUEST | NLM_F_DUMP (ROOT | MATCH)
            7, 0, 0, 0,         // seq
            0, 0, 0, 0,         // port id
            10, 6, 0, 0,        // AF_INET6, IPPROTO_TCP, no extensions, pad
            0, 0x04, 0, 0,      // states: 1 << TCP_LISTEN
        ];
        expected.resize(72, 0);
        assert_eq!(request(10, 7), expected);
    }

    #[test]
    fn the_kernel_lists_a_listener_opened_here() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = tcp_listeners().unwrap();
        assert!(
            found.contains(&(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
            "127.0.0.1:{port} not in {found:?}"
        );
    }
}
