//! The router's own sockets: every listening TCP socket, from the kernel's socket diagnostics
//! (`natpmp_pcp_nft::tcp_listeners`, which skips the host-wide table of established connections
//! that `/proc/net/tcp` walks), or from `/proc/net/{tcp,tcp6}` on a kernel without them; and
//! every bound UDP socket, from `/proc/net/{udp,udp6}`. All of them show the network namespace
//! the daemon runs in, with each socket's local address and port. The gateway keeps the ones on
//! the external address or a wildcard out of the port allocator (a LAN client must never take
//! the router's WireGuard or web UI port).
//!
//! Read every [`SCAN_INTERVAL`]: a service that starts between two scans can lose its port to
//! a mapping made in that window until the next scan takes it back; services that restart
//! belong in `reserved-ports`.

use natpmp_pcp_core::gateway::router_ports::LocalSocket;
use natpmp_pcp_core::Protocol;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// `st` of a listening TCP socket in /proc/net/tcp (TCP_LISTEN).
const TCP_LISTEN: &str = "0A";

/// Every listening TCP and bound UDP socket of this network namespace. A file that cannot be
/// read (no IPv6 in this kernel, say) contributes nothing; the error of the first one is
/// returned beside what was read, for the caller to log once.
pub fn scan() -> (Vec<LocalSocket>, Option<String>) {
    let mut sockets = Vec::new();
    let mut first_error = None;
    let mut files = vec![
        ("/proc/net/udp", Protocol::Udp),
        ("/proc/net/udp6", Protocol::Udp),
    ];
    match natpmp_pcp_nft::tcp_listeners() {
        Ok(listeners) => sockets.extend(listeners.into_iter().filter(|&(_, port)| port != 0).map(
            |(addr, port)| LocalSocket {
                protocol: Protocol::Tcp,
                addr,
                port,
            },
        )),
        Err(e) => {
            tracing::debug!("{e}; reading /proc/net/tcp instead");
            files.extend([
                ("/proc/net/tcp", Protocol::Tcp),
                ("/proc/net/tcp6", Protocol::Tcp),
            ]);
        }
    }
    for (path, protocol) in files {
        match std::fs::read_to_string(path) {
            Ok(text) => sockets.extend(parse(&text, protocol)),
            Err(e) => {
                first_error.get_or_insert_with(|| format!("cannot read {path}: {e}"));
            }
        }
    }
    sockets.sort();
    sockets.dedup();
    (sockets, first_error)
}

/// The sockets of one /proc/net table. Lines that do not parse are skipped: the format is the
/// kernel's, and a line we cannot read is not a reason to stop reading the others.
pub fn parse(text: &str, protocol: Protocol) -> Vec<LocalSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = fields.next()?;
            let _remote = fields.next()?;
            let state = fields.next()?;
            if protocol == Protocol::Tcp && state != TCP_LISTEN {
                return None;
            }
            let (addr, port) = parse_endpoint(local)?;
            (port != 0).then_some(LocalSocket {
                protocol,
                addr,
                port,
            })
        })
        .collect()
}

/// `0100007F:0035` (IPv4) or 32 hex digits `:PORT` (IPv6). The address is printed as the
/// kernel holds it: 32-bit words in host byte order, so each word's bytes are swapped back on
/// a little-endian machine; the port is plain hex.
fn parse_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(|w| w.to_ne_bytes());
    let addr = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as a little-endian kernel writes them (x86_64, arm64); the tests that read them
    // run there.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 057100CB:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0158A8C0:0016 0A58A8C0:D431 01 00000000:00000000 02:00000A3B 00000000     0        0 4 4 0000000000000000 20 4 29 10 -1
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000000000000000000000000000:CA6C 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5 2 0000000000000000 0
  101: B80D0120000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6 2 0000000000000000 0
  102: garbage
";

    fn sock(protocol: Protocol, addr: &str, port: u16) -> LocalSocket {
        LocalSocket {
            protocol,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn tcp_keeps_listeners_only() {
        assert_eq!(
            parse(TCP, Protocol::Tcp),
            vec![
                sock(Protocol::Tcp, "0.0.0.0", 22),
                sock(Protocol::Tcp, "127.0.0.1", 631),
                sock(Protocol::Tcp, "203.0.113.5", 8443),
            ]
        );
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn udp6_reads_wildcards_and_global_addresses_and_skips_garbage() {
        assert_eq!(
            parse(UDP6, Protocol::Udp),
            vec![
                sock(Protocol::Udp, "::", 51820),
                sock(Protocol::Udp, "2001:db8::1", 53),
            ]
        );
    }

    #[test]
    fn this_machines_own_tables_parse() {
        // The real files of the namespace the test runs in: whatever is there must parse into
        // sockets with non-zero ports, and a socket the test binds must be among them.
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        let (sockets, error) = scan();
        assert!(error.is_none() || !sockets.is_empty(), "{error:?}");
        assert!(sockets.iter().all(|s| s.port != 0));
        assert!(
            sockets.contains(&sock(Protocol::Udp, "0.0.0.0", port)),
            "{sockets:?}"
        );
        assert!(
            sockets.contains(&sock(Protocol::Tcp, "127.0.0.1", tcp_port)),
            "{sockets:?}"
        );
    }
}
