//! Ready-made setups: a lab with the daemon running and a TCP and a UDP mapping carrying traffic.

use super::*;
use std::net::SocketAddrV4;
use std::time::Duration;

/// A lab with the daemon running and two live mappings of the LAN host, each with an echo
/// server behind it: TCP 8080 and UDP 9000, asked for on external ports 40080 and 40090.
/// TCP through the first is checked before this returns.
pub struct Setup {
    pub lab: Lab,
    pub tcp: u16,
    pub udp: u16,
    /// The echo servers behind the two mappings (they record who connected).
    pub tcp_srv: EchoServer,
    pub udp_srv: EchoServer,
}

pub fn setup() -> Setup {
    setup_with("")
}

/// `setup` with `extra` top-level configuration keys (e.g. `hairpin = false`).
pub fn setup_with(extra: &str) -> Setup {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), extra);
    let tcp_srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");
    let udp_srv = udp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 9000), "lan-udp");
    let tcp = natpmpc_map(&lab.lan, GW_LAN, 40080, 8080, Proto::Tcp, 3600).public_port;
    let udp = natpmpc_map(&lab.lan, GW_LAN, 40090, 9000, Proto::Udp, 3600).public_port;
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, tcp),
        "lan-tcp",
        Duration::from_secs(2)
    ));
    Setup {
        lab,
        tcp,
        udp,
        tcp_srv,
        udp_srv,
    }
}
