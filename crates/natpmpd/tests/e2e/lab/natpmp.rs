//! NAT-PMP on the wire (our own minimal client, for cases the real clients cannot express) and the real third-party client, natpmpc.

use super::*;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn opcode(self) -> u8 {
        match self {
            Proto::Udp => 1,
            Proto::Tcp => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A decoded NAT-PMP map response (P4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReply {
    pub opcode: u8,
    pub result: u16,
    pub epoch: u32,
    pub internal: u16,
    pub external: u16,
    pub lifetime: u32,
}

pub fn map_request(proto: Proto, internal: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[1] = proto.opcode();
    p[4..6].copy_from_slice(&internal.to_be_bytes());
    p[6..8].copy_from_slice(&suggested.to_be_bytes());
    p[8..12].copy_from_slice(&lifetime.to_be_bytes());
    p
}

pub fn parse_map_reply(b: &[u8]) -> MapReply {
    assert_eq!(b.len(), 16, "map reply must be 16 bytes, got {b:02x?}");
    assert_eq!(b[0], 0, "map reply version: {b:02x?}");
    MapReply {
        opcode: b[1],
        result: u16::from_be_bytes([b[2], b[3]]),
        epoch: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        internal: u16::from_be_bytes([b[8], b[9]]),
        external: u16::from_be_bytes([b[10], b[11]]),
        lifetime: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    }
}

/// Sends a NAT-PMP map request from `src` in `ns` to `gw`:5351 and checks the reply comes from
/// there. Panics when no reply arrives (after a few retransmissions).
pub fn map_raw(
    ns: &str,
    src: Ipv4Addr,
    gw: Ipv4Addr,
    proto: Proto,
    internal: u16,
    suggested: u16,
    lifetime: u32,
) -> MapReply {
    let req = map_request(proto, internal, suggested, lifetime);
    let to = SocketAddrV4::new(gw, NATPMP_PORT);
    let sock = udp_socket(ns, SocketAddrV4::new(src, 0));
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for _ in 0..4 {
        sock.send_to(&req, to).expect("send map request");
        if let Some((b, from)) = recv(&sock) {
            assert_eq!(from, SocketAddr::V4(to), "map reply from the wrong address");
            let r = parse_map_reply(&b);
            assert_eq!(r.opcode, 128 + proto.opcode(), "map reply opcode: {b:02x?}");
            return r;
        }
    }
    panic!(
        "no reply from {to} to a {} map request from {src} in {ns}",
        proto.name()
    );
}

/// What natpmpc printed for a successful mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatpmpcMapping {
    pub public_port: u16,
    pub protocol: String,
    pub private_port: u16,
    pub lifetime: u32,
    pub public_ip: Option<Ipv4Addr>,
}

/// Parses `Mapped public port P protocol TCP to local port L liftime T` (sic) and
/// `Public IP address : A.B.C.D` from natpmpc's output.
pub fn parse_natpmpc(stdout: &str) -> Option<NatpmpcMapping> {
    let public_ip = stdout.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Public IP address :")
            .and_then(|a| a.trim().parse().ok())
    });
    stdout.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 11 && w[0] == "Mapped" && w[1] == "public" && w[2] == "port" {
            Some(NatpmpcMapping {
                public_port: w[3].parse().ok()?,
                protocol: w[5].to_string(),
                private_port: w[9].parse().ok()?,
                lifetime: w[11].parse().ok()?,
                public_ip,
            })
        } else {
            None
        }
    })
}

/// Runs `natpmpc -g GW args...` inside namespace `ns`.
pub fn natpmpc(ns: &str, gw: Ipv4Addr, args: &[&str]) -> CmdOutput {
    let gw = gw.to_string();
    let mut all = vec!["-g", gw.as_str()];
    all.extend_from_slice(args);
    run_timeout(
        ns_command(ns, tool("natpmpc"), &all),
        Duration::from_secs(10),
    )
}

/// `natpmpc -a PUBLIC PRIVATE PROTO LIFETIME`, requiring a mapping in the output.
pub fn natpmpc_map(
    ns: &str,
    gw: Ipv4Addr,
    public: u16,
    private: u16,
    proto: Proto,
    lifetime: u32,
) -> NatpmpcMapping {
    let out = natpmpc(
        ns,
        gw,
        &[
            "-a",
            &public.to_string(),
            &private.to_string(),
            proto.name(),
            &lifetime.to_string(),
        ],
    );
    match parse_natpmpc(&out.stdout) {
        Some(m) if out.success() => m,
        _ => panic!("natpmpc did not report a mapping: {out}"),
    }
}
