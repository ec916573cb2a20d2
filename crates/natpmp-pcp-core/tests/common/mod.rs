//! Shared helpers for the natpmp-pcp-core integration tests.
//!
//! Every test drives the public API only: a whole `Gateway<FakeForwarder>` with virtual time,
//! as the daemon's driver does (datagrams in, replies and unsolicited datagrams out, timers on
//! `poll_timeout`), and byte strings built here by hand from the layouts in rfc-checklist §1.1
//! and RFC 6887 (never from the crate's own encoder, so a wrong constant in the crate cannot
//! hide behind the same wrong constant in a test). The kernel is read from a probe clone of the
//! fake forwarder, never from engine internals.
//!
//! The machine the gateway runs on, in every test:
//! - `ether1` (ifindex 1), external, with `EXT`/24 (or whatever `set_address` gives it);
//! - `ether2` (ifindex 2), internal, `192.168.88.1/24` (`GW_LAN`); LAN clients `A`, `B`, `C`,
//!   `D` send to `GW_LAN` on ifindex 2, from a port the harness picks (`send`) or the test
//!   names (`send_from`).
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

use natpmp_pcp_core::gateway::interfaces::{ExternalInterface, IfAddr, Interface, Interfaces};
use natpmp_pcp_core::gateway::router_ports::LocalSocket;
use natpmp_pcp_core::gateway::{LeaseSnapshot, RestoredLeases, Started};
use natpmp_pcp_core::kernel::KernelError;
use natpmp_pcp_core::{
    Change, Datagram, Element, EngineConfig, FakeForwarder, Gateway, GatewayConfig, MappingView,
    Outgoing, Protocol, Timestamp,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// The gateway's public address in most tests (TEST-NET-3).
pub const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// A second public address, for address changes (TEST-NET-2).
pub const EXT2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// The external interface.
pub const WAN_IF: &str = "ether1";
pub const WAN_INDEX: u32 = 1;
/// The internal interface and the gateway's address on it (what clients send to, and what
/// replies and announcements come from).
pub const LAN_IF: &str = "ether2";
pub const LAN_INDEX: u32 = 2;
pub const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);
pub const LAN_PREFIX_LEN: u8 = 24;

/// LAN clients. `C` sorts before `A` numerically but after it as a string.
pub const A: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 10);
pub const B: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 20);
pub const C: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 9);
pub const D: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 30);
/// A host that is not on any internal subnet: whatever it sends is dropped unanswered.
pub const OFF_LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The port requests go to, and the port announcements go to.
pub const SERVER_PORT: u16 = 5351;
pub const CLIENT_PORT: u16 = 5350;
/// Where announcements go: 224.0.0.1:5350 (RFC 6886 §3.2.1, RFC 6887 §14.1.3).
pub const ANNOUNCE_TO: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), CLIENT_PORT));

/// NAT-PMP opcodes.
pub const OP_ADDR: u8 = 0;
pub const UDP: u8 = 1;
pub const TCP: u8 = 2;

/// NAT-PMP result codes (RFC 6886 §3.5).
pub const SUCCESS: u16 = 0;
pub const UNSUPPORTED_VERSION: u16 = 1;
pub const REFUSED: u16 = 2;
pub const NETWORK_FAILURE: u16 = 3;
pub const OUT_OF_RESOURCES: u16 = 4;
pub const UNSUPPORTED_OPCODE: u16 = 5;

/// PCP (RFC 6887 §7.4): result codes used here, and the long error lifetime.
pub const PCP_SUCCESS: u8 = 0;
pub const PCP_UNSUPP_VERSION: u8 = 1;
pub const PCP_LONG_ERROR_LIFETIME: u32 = 1800;

/// Where virtual time starts in most tests: deliberately not zero, so an engine that confuses
/// "time since origin" with "time since epoch start" is caught.
pub const T0: Timestamp = Timestamp::from_secs(1_000);

/// The announcement schedule, in milliseconds after the event (RFC 6886 §3.2.1).
pub const ANNOUNCE_OFFSETS_MS: [u64; 10] =
    [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127750];

/// The kernel timeout is the mapping's lifetime plus this grace (the daemon removes the
/// element first; the kernel's timeout is only the backstop).
pub const GRACE: Duration = Duration::from_secs(2);

pub fn proto(op: u8) -> Protocol {
    match op {
        UDP => Protocol::Udp,
        TCP => Protocol::Tcp,
        _ => panic!("not a map opcode: {op}"),
    }
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

// ---------------------------------------------------------------------------------------------
// NAT-PMP byte builders (rfc-checklist §1.1)

/// P1: `00 00`.
pub fn addr_request() -> [u8; 2] {
    [0, OP_ADDR]
}

/// P3: `00 op 0000 iport eport lifetime`.
pub fn map_request(op: u8, iport: u16, eport: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = op;
    b[4..6].copy_from_slice(&iport.to_be_bytes());
    b[6..8].copy_from_slice(&eport.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

/// P2 / P7: `00 80 result SSSoE a.b.c.d`.
pub fn addr_reply(result: u16, sssoe: u32, addr: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8, 0x80];
    b.extend_from_slice(&result.to_be_bytes());
    b.extend_from_slice(&sssoe.to_be_bytes());
    b.extend_from_slice(&addr.octets());
    b
}

/// P4: `00 (128+op) result SSSoE iport eport lifetime`.
pub fn map_reply(
    op: u8,
    result: u16,
    sssoe: u32,
    iport: u16,
    eport: u16,
    lifetime: u32,
) -> Vec<u8> {
    let mut b = vec![0u8, 0x80 | op];
    b.extend_from_slice(&result.to_be_bytes());
    b.extend_from_slice(&sssoe.to_be_bytes());
    b.extend_from_slice(&iport.to_be_bytes());
    b.extend_from_slice(&eport.to_be_bytes());
    b.extend_from_slice(&lifetime.to_be_bytes());
    b
}

/// P5: `00 80 0001 SSSoE` (opcode 0x80 per errata 3618): a NAT-PMP-only server's answer to
/// any other version.
pub fn unsupported_version_reply(sssoe: u32) -> Vec<u8> {
    let mut b = vec![0u8, 0x80];
    b.extend_from_slice(&UNSUPPORTED_VERSION.to_be_bytes());
    b.extend_from_slice(&sssoe.to_be_bytes());
    b
}

/// P6 as decided in §6 A3: length max(request, 8) capped at 1100; byte 1 |= 0x80; bytes 2–3 = 5;
/// bytes 4–7 = SSSoE; every other byte echoed (bytes the request lacks are 0).
pub fn unsupported_opcode_reply(request: &[u8], sssoe: u32) -> Vec<u8> {
    let len = request.len().clamp(8, 1100);
    let mut b = vec![0u8; len];
    let n = request.len().min(len);
    b[..n].copy_from_slice(&request[..n]);
    b[1] |= 0x80;
    b[2..4].copy_from_slice(&UNSUPPORTED_OPCODE.to_be_bytes());
    b[4..8].copy_from_slice(&sssoe.to_be_bytes());
    b
}

// ---------------------------------------------------------------------------------------------
// PCP byte builders (RFC 6887 §7.1, §7.2, §11.1, §14.1.3), by hand as well.

/// The 128-bit wire form of an IPv4 address: `::ffff:a.b.c.d` (RFC 6887 §5).
pub fn mapped(a: Ipv4Addr) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[10] = 0xFF;
    b[11] = 0xFF;
    b[12..].copy_from_slice(&a.octets());
    b
}

/// A PCP request header (24 bytes): `02 opcode 0000 lifetime client-ip(16)`.
pub fn pcp_header(opcode: u8, lifetime: u32, client: [u8; 16]) -> Vec<u8> {
    let mut b = vec![2u8, opcode, 0, 0];
    b.extend_from_slice(&lifetime.to_be_bytes());
    b.extend_from_slice(&client);
    b
}

/// A PCP MAP request (60 bytes, no options) from `client`: header, then nonce (12), protocol,
/// 3 reserved bytes, internal port, suggested external port, suggested external address (16).
pub fn pcp_map_request(
    client: Ipv4Addr,
    lifetime: u32,
    nonce: [u8; 12],
    protocol: u8,
    iport: u16,
    eport: u16,
    suggested_addr: [u8; 16],
) -> Vec<u8> {
    let mut b = pcp_header(1, lifetime, mapped(client));
    b.extend_from_slice(&nonce);
    b.extend_from_slice(&[protocol, 0, 0, 0]);
    b.extend_from_slice(&iport.to_be_bytes());
    b.extend_from_slice(&eport.to_be_bytes());
    b.extend_from_slice(&suggested_addr);
    b
}

/// A PCP PEER request (80 bytes, no options): the MAP layout, then remote peer port, 2
/// reserved bytes, remote peer address (16) (RFC 6887 §12.1).
#[allow(clippy::too_many_arguments)]
pub fn pcp_peer_request(
    client: Ipv4Addr,
    lifetime: u32,
    nonce: [u8; 12],
    protocol: u8,
    iport: u16,
    eport: u16,
    remote_port: u16,
    remote: Ipv4Addr,
) -> Vec<u8> {
    let mut b = pcp_header(2, lifetime, mapped(client));
    b.extend_from_slice(&nonce);
    b.extend_from_slice(&[protocol, 0, 0, 0]);
    b.extend_from_slice(&iport.to_be_bytes());
    b.extend_from_slice(&eport.to_be_bytes());
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&remote_port.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&mapped(remote));
    b
}

/// A PCP option: code, reserved, data length, data, zero padding to a multiple of 4 (§7.3).
pub fn pcp_option(code: u8, data: &[u8]) -> Vec<u8> {
    let mut b = vec![code, 0];
    b.extend_from_slice(&(data.len() as u16).to_be_bytes());
    b.extend_from_slice(data);
    b.resize(4 + data.len().next_multiple_of(4), 0);
    b
}

/// FILTER (§13.3, code 3): reserved, prefix length (96 + n for an IPv4 /n), remote port,
/// remote address.
pub fn pcp_filter(prefix_len: u8, remote_port: u16, remote: Ipv4Addr) -> Vec<u8> {
    let mut data = vec![0, prefix_len];
    data.extend_from_slice(&remote_port.to_be_bytes());
    data.extend_from_slice(&mapped(remote));
    pcp_option(3, &data)
}

/// PREFER_FAILURE (§13.2, code 2): no data.
pub fn pcp_prefer_failure() -> Vec<u8> {
    pcp_option(2, &[])
}

/// The PCP-format UNSUPP_VERSION answer to `request` (RFC 6887 §8.2, §9): the request copied
/// (at most 1100 bytes, zero-padded to a multiple of 4 and to at least 24), then version 2,
/// R bit | opcode, reserved 0, result 1, lifetime 1800, the epoch. The rest keeps the copy of
/// the request (it could not be parsed, so bytes 12–23 hold the client field's last 96 bits).
pub fn pcp_unsupported_version_reply(request: &[u8], epoch: u32) -> Vec<u8> {
    let copied = request.len().min(1100);
    let len = copied.next_multiple_of(4).clamp(24, 1100);
    let mut b = request[..copied].to_vec();
    b.resize(len, 0);
    b[0] = 2;
    b[1] = 0x80 | request.get(1).copied().unwrap_or(0);
    b[2] = 0;
    b[3] = PCP_UNSUPP_VERSION;
    b[4..8].copy_from_slice(&PCP_LONG_ERROR_LIFETIME.to_be_bytes());
    b[8..12].copy_from_slice(&epoch.to_be_bytes());
    b
}

/// The unsolicited PCP ANNOUNCE (RFC 6887 §14.1.3): `02 80 00 00`, lifetime 0, the epoch, 12
/// zero bytes.
pub fn pcp_announce(epoch: u32) -> Vec<u8> {
    let mut b = vec![2u8, 0x80, 0, PCP_SUCCESS, 0, 0, 0, 0];
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&[0; 12]);
    b
}

/// Bytes 8–11 of a PCP response: the epoch.
pub fn pcp_epoch(reply: &[u8]) -> u32 {
    u32::from_be_bytes(reply[8..12].try_into().unwrap())
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compare whole replies and print both in hex on failure.
#[track_caller]
pub fn assert_bytes(got: &[u8], expected: &[u8]) {
    assert!(
        got == expected,
        "reply bytes differ\n  expected ({} bytes): {}\n  got      ({} bytes): {}",
        expected.len(),
        hex(expected),
        got.len(),
        hex(got)
    );
}

/// A parsed P4 map reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReply {
    pub opcode: u8,
    pub result: u16,
    pub sssoe: u32,
    pub iport: u16,
    pub eport: u16,
    pub lifetime: u32,
}

#[track_caller]
pub fn parse_map_reply(b: &[u8]) -> MapReply {
    assert_eq!(b.len(), 16, "a map reply is 16 bytes, got {}", hex(b));
    assert_eq!(b[0], 0, "version byte of a map reply: {}", hex(b));
    MapReply {
        opcode: b[1],
        result: u16::from_be_bytes([b[2], b[3]]),
        sssoe: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        iport: u16::from_be_bytes([b[8], b[9]]),
        eport: u16::from_be_bytes([b[10], b[11]]),
        lifetime: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel elements. A NAT-PMP mapping is two: the outbound rewrite (the host's own flows leave
// from the mapped port) and the inbound translation (anyone may reach it).

/// `outbound`: `client:iport` leaves as `ext:eport`.
pub fn outbound(op: u8, ext: Ipv4Addr, eport: u16, client: Ipv4Addr, iport: u16) -> Element {
    Element::Outbound {
        internal: SocketAddrV4::new(client, iport),
        protocol: proto(op),
        external: SocketAddrV4::new(ext, eport),
    }
}

/// `inbound`: external port `eport` reaches `client:iport`.
pub fn inbound(op: u8, eport: u16, client: Ipv4Addr, iport: u16) -> Element {
    Element::Inbound {
        protocol: proto(op),
        external_port: eport,
        internal: SocketAddrV4::new(client, iport),
    }
}

/// Both elements of one NAT-PMP mapping, sorted as `FakeForwarder::element_set` sorts.
pub fn pair(op: u8, ext: Ipv4Addr, eport: u16, client: Ipv4Addr, iport: u16) -> Vec<Element> {
    let mut v = vec![
        outbound(op, ext, eport, client, iport),
        inbound(op, eport, client, iport),
    ];
    v.sort();
    v
}

/// What the kernel is given for a fresh mapping granted `granted` seconds: both elements,
/// each with timeout = granted + 2 s.
pub fn created(
    op: u8,
    ext: Ipv4Addr,
    eport: u16,
    client: Ipv4Addr,
    iport: u16,
    granted: u32,
) -> Vec<Change> {
    let timeout = secs(u64::from(granted)) + GRACE;
    pair(op, ext, eport, client, iport)
        .into_iter()
        .map(|element| Change::Add { element, timeout })
        .collect()
}

/// What the kernel is given when a mapping goes: the removal of both elements.
pub fn removed(op: u8, ext: Ipv4Addr, eport: u16, client: Ipv4Addr, iport: u16) -> Vec<Change> {
    pair(op, ext, eport, client, iport)
        .into_iter()
        .map(Change::Remove)
        .collect()
}

fn change_order(c: &Change) -> (bool, Element, Duration) {
    match c {
        Change::Remove(e) => (false, *e, Duration::ZERO),
        Change::Add { element, timeout } => (true, *element, *timeout),
    }
}

/// The same changes, in any order (the order inside one transaction does not matter to the
/// kernel, except that a removal must come before the addition of the same key: see
/// `assert_removes_before_adds`).
#[track_caller]
pub fn assert_same_changes(got: &[Change], want: &[Change]) {
    let mut g: Vec<Change> = got.to_vec();
    let mut w: Vec<Change> = want.to_vec();
    g.sort_by_key(change_order);
    w.sort_by_key(change_order);
    assert_eq!(g, w, "kernel changes differ");
}

/// Every removal comes before any addition of the same key (the kernel would refuse the
/// addition otherwise).
#[track_caller]
pub fn assert_removes_before_adds(changes: &[Change]) {
    for (i, c) in changes.iter().enumerate() {
        if let Change::Remove(e) = c {
            assert!(
                !changes[..i]
                    .iter()
                    .any(|a| a.is_add() && a.element().same_key(e)),
                "Remove of {e} after the Add of its key: {changes:?}"
            );
        }
    }
}

pub fn adds(changes: &[Change]) -> Vec<(Element, Duration)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Add { element, timeout } => Some((*element, *timeout)),
            _ => None,
        })
        .collect()
}

pub fn removes(changes: &[Change]) -> Vec<Element> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Remove(e) => Some(*e),
            _ => None,
        })
        .collect()
}

/// The `Outgoing` datagrams that are NAT-PMP announcements (P7 to 224.0.0.1:5350).
pub fn natpmp_announcements(out: &[Outgoing]) -> Vec<&Outgoing> {
    out.iter()
        .filter(|o| o.to == ANNOUNCE_TO && o.payload.first() == Some(&0))
        .collect()
}

/// The `Outgoing` datagrams that are PCP ANNOUNCEs (24 bytes, version 2, to 224.0.0.1:5350).
pub fn pcp_announcements(out: &[Outgoing]) -> Vec<&Outgoing> {
    out.iter()
        .filter(|o| o.to == ANNOUNCE_TO && o.payload.first() == Some(&2))
        .collect()
}

/// Every unsolicited datagram must leave the LAN interface from the gateway's LAN address.
#[track_caller]
pub fn assert_sent_on_lan(o: &Outgoing) {
    assert_eq!(
        (o.from, o.ifindex),
        (v4(GW_LAN), LAN_INDEX),
        "sent from the wrong address or interface: {o:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The machine: interfaces and configuration.

/// The interface snapshot: `ether1` with `ext`/24 (no IPv4 address when `None`: no DHCP lease
/// yet), `ether2` with `192.168.88.1/24`.
pub fn interfaces(ext: Option<Ipv4Addr>) -> Interfaces {
    let mut m = Interfaces::new();
    m.insert(
        WAN_IF.to_owned(),
        Interface {
            name: WAN_IF.to_owned(),
            index: WAN_INDEX,
            up: true,
            addrs: ext.map(|a| IfAddr::v4(a, 24)).into_iter().collect(),
        },
    );
    m.insert(
        LAN_IF.to_owned(),
        Interface {
            name: LAN_IF.to_owned(),
            index: LAN_INDEX,
            up: true,
            addrs: vec![IfAddr::v4(GW_LAN, LAN_PREFIX_LEN)],
        },
    );
    m
}

/// The gateway configuration of every test: enabled, external `ether1`, internal `ether2`,
/// no drift check (the fake kernel changes only when the test changes it), `engine` as given,
/// PCP on (the default), no rate limit (protocol tests send thousands of requests from one
/// client in one instant; `tests/rate_limit.rs` tests the limit).
pub fn gateway_config(engine: EngineConfig) -> GatewayConfig {
    GatewayConfig {
        enabled: true,
        engine,
        rate_limit: natpmp_pcp_core::gateway::rate_limit::RateLimitConfig::OFF,
        external: Some(ExternalInterface {
            name: WAN_IF.to_owned(),
            forced_ip: None,
        }),
        internal: vec![LAN_IF.to_owned()],
        drift_check: false,
        ..GatewayConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// A gateway under test, with virtual time.

pub struct Gw {
    pub gateway: Gateway<FakeForwarder>,
    /// A clone of the gateway's forwarder: the same in-memory kernel.
    pub kernel: FakeForwarder,
    pub now: Timestamp,
    /// Where the test expects the epoch to have started (kept by the test, not read from the
    /// gateway).
    pub epoch_start: Timestamp,
    /// The external address the test last set (kept by the test).
    pub addr: Option<Ipv4Addr>,
    /// Every transaction handed to the kernel by the last call made through this harness
    /// (including refused ones and a rebuild's).
    pub transactions: Vec<Vec<Change>>,
    /// The same, flattened: what the last call asked the kernel to do.
    pub changes: Vec<Change>,
    /// Everything the gateway sent during the last call (replies, announcements, Mapping
    /// Updates), in order.
    pub out: Vec<Outgoing>,
    /// Every lease snapshot the gateway asked to have saved, in order.
    pub leases: Vec<LeaseSnapshot>,
    /// The interface snapshot the gateway has now.
    pub interfaces: Interfaces,
    applied_seen: usize,
    next_port: u16,
}

impl Gw {
    /// Default config (PCP on), started at `T0` with external address `EXT`.
    pub fn new() -> Gw {
        Gw::with_config(gateway_config(EngineConfig::default()))
    }

    /// With PCP switched off: a NAT-PMP-only server.
    pub fn natpmp_only() -> Gw {
        Gw::with_config(GatewayConfig {
            pcp: false,
            ..gateway_config(EngineConfig::default())
        })
    }

    pub fn with_engine(engine: EngineConfig) -> Gw {
        Gw::with_config(gateway_config(engine))
    }

    pub fn with_config(config: GatewayConfig) -> Gw {
        let gw = Gw::started(config, T0, Some(EXT), None).0;
        assert!(
            gw.elements().is_empty(),
            "a fresh gateway installs nothing: {:?}",
            gw.elements()
        );
        gw
    }

    /// Default config, started at `T0`, no external address yet.
    pub fn without_address() -> Gw {
        Gw::without_address_config(gateway_config(EngineConfig::default()))
    }

    pub fn without_address_config(config: GatewayConfig) -> Gw {
        Gw::started(config, T0, None, None).0
    }

    pub fn small_range(lo: u16, hi: u16) -> Gw {
        Gw::with_engine(EngineConfig {
            port_range: lo..=hi,
            ..EngineConfig::default()
        })
    }

    /// What the daemon does at start-up, at `at`: a gateway on a fresh fake kernel, the
    /// interfaces (external address `addr`), then `start` with the leases.
    pub fn started(
        config: GatewayConfig,
        at: Timestamp,
        addr: Option<Ipv4Addr>,
        leases: Option<RestoredLeases>,
    ) -> (Gw, Started) {
        Gw::started_on(FakeForwarder::new(), config, at, addr, leases)
    }

    /// The same on a given kernel (a restart keeps the kernel's table).
    pub fn started_on(
        kernel: FakeForwarder,
        config: GatewayConfig,
        at: Timestamp,
        addr: Option<Ipv4Addr>,
        leases: Option<RestoredLeases>,
    ) -> (Gw, Started) {
        let mut gateway = Gateway::new(config, kernel.clone(), at);
        let interfaces = interfaces(addr);
        gateway.set_interfaces(at, interfaces.clone());
        let applied_seen = kernel.applied().len();
        let started = gateway.start(at, leases).expect("the gateway starts");
        let mut gw = Gw {
            gateway,
            kernel,
            now: at,
            epoch_start: at,
            addr,
            transactions: Vec::new(),
            changes: Vec::new(),
            out: Vec::new(),
            leases: Vec::new(),
            interfaces,
            applied_seen,
            next_port: 0,
        };
        gw.collect_transactions();
        (gw, started)
    }

    pub fn config(&self) -> &GatewayConfig {
        self.gateway.config()
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    pub fn advance_secs(&mut self, s: u64) {
        self.advance(secs(s));
    }

    pub fn advance_ms(&mut self, m: u64) {
        self.advance(ms(m));
    }

    /// The SSSoE the test expects at `self.now`: whole seconds since `epoch_start`.
    pub fn sssoe(&self) -> u32 {
        self.sssoe_at(self.now)
    }

    pub fn sssoe_at(&self, t: Timestamp) -> u32 {
        (t.since(self.epoch_start).as_millis() / 1000) as u32
    }

    /// The epoch as the gateway keeps it, at `self.now`.
    pub fn epoch(&self) -> u32 {
        self.gateway.engine().epoch_seconds(self.now)
    }

    /// Take the transactions the kernel was handed since the last look.
    fn collect_transactions(&mut self) {
        let applied = self.kernel.applied();
        self.transactions = applied[self.applied_seen..].to_vec();
        self.applied_seen = applied.len();
        self.changes = self.transactions.concat();
    }

    // --- interfaces and configuration

    /// Give the gateway a new interface snapshot (the daemon does on every netlink event).
    pub fn set_interfaces(&mut self, interfaces: Interfaces) {
        self.out.clear();
        self.gateway.set_interfaces(self.now, interfaces.clone());
        self.interfaces = interfaces;
        self.gateway.clear_flows();
        self.collect_transactions();
    }

    /// Report the router's own bound sockets (the daemon rescans them every few seconds).
    pub fn set_local_sockets(&mut self, sockets: Vec<LocalSocket>) {
        self.out.clear();
        self.gateway.set_local_sockets(self.now, sockets);
        self.gateway.clear_flows();
        self.collect_transactions();
    }

    /// Set (or clear) the external address, through a new interface snapshot; a real change
    /// restarts the expected epoch.
    pub fn set_address(&mut self, addr: Option<Ipv4Addr>) {
        let mut snapshot = self.interfaces.clone();
        let wan = interfaces(addr).remove(WAN_IF).unwrap();
        snapshot.insert(WAN_IF.to_owned(), wan);
        self.set_interfaces(snapshot);
        if self.addr != addr {
            self.epoch_start = self.now;
        }
        self.addr = addr;
    }

    /// A configuration reload.
    pub fn reconfigure(&mut self, config: GatewayConfig) -> Result<(), KernelError> {
        self.out.clear();
        let r = self.gateway.reconfigure(self.now, config);
        self.gateway.clear_flows();
        self.collect_transactions();
        r
    }

    /// Lose the mapping state (RFC 6886 §3.7, §2 E item 22): the operator switches natpmpd off
    /// and on again. Every mapping is forgotten, the table removed and installed afresh, the
    /// epoch and the announcements restart.
    pub fn reset(&mut self) {
        let on = self.config().clone();
        let off = GatewayConfig {
            enabled: false,
            ..on.clone()
        };
        self.reconfigure(off).expect("switching off");
        assert!(!self.gateway.serving());
        let off_transactions = std::mem::take(&mut self.transactions);
        self.reconfigure(on).expect("switching on again");
        assert!(self.gateway.serving());
        self.transactions = [off_transactions, std::mem::take(&mut self.transactions)].concat();
        self.changes = self.transactions.concat();
        self.epoch_start = self.now;
    }

    /// From now on every rebuild of the table fails, as when the backend refuses to load it:
    /// the configuration is reloaded with an external interface name every backend refuses
    /// (present in the snapshot with the same addresses, so the external address stays). So a
    /// change the kernel refuses is no longer repaired by a rebuild, and reaches the client.
    pub fn break_rebuilds(&mut self) {
        const BAD: &str = "ether1;flush";
        let mut snapshot = self.interfaces.clone();
        let mut wan = snapshot[WAN_IF].clone();
        wan.name = BAD.to_owned();
        wan.index = 7;
        snapshot.insert(BAD.to_owned(), wan);
        self.set_interfaces(snapshot);
        let mut config = self.config().clone();
        config.external = Some(ExternalInterface {
            name: BAD.to_owned(),
            forced_ip: None,
        });
        let prepares = self.kernel.prepares();
        assert!(
            matches!(
                self.reconfigure(config),
                Err(KernelError::InvalidInterface(_))
            ),
            "the table with a bad interface name must not load"
        );
        assert_eq!(self.kernel.prepares(), prepares);
        assert_eq!(
            self.gateway.engine().external_address(),
            self.addr,
            "breaking rebuilds must not change the external address"
        );
    }

    // --- requests

    /// The next client source port: not 5350/5351, different on every call.
    pub fn source_port(&mut self) -> u16 {
        self.next_port = self.next_port.wrapping_add(1);
        49152 + (u32::from(self.next_port) * 7919 % 16384) as u16
    }

    /// Hand the gateway one batch of datagrams as the daemon does (then end the flows of what
    /// was removed), each `(source, destination, ifindex, payload)`. Returns what it sent.
    pub fn deliver(&mut self, datagrams: &[(SocketAddr, IpAddr, u32, &[u8])]) -> Vec<Outgoing> {
        self.out.clear();
        let batch = datagrams
            .iter()
            .map(|&(source, destination, ifindex, payload)| Datagram {
                source,
                destination,
                ifindex,
                payload,
            });
        self.gateway
            .handle_datagrams(self.now, batch, &mut self.out);
        self.gateway.clear_flows();
        self.collect_transactions();
        self.out.clone()
    }

    /// Several datagrams from the LAN, to `GW_LAN`, in one batch.
    pub fn send_batch(&mut self, datagrams: &[(SocketAddr, &[u8])]) -> Vec<Outgoing> {
        let all: Vec<(SocketAddr, IpAddr, u32, &[u8])> = datagrams
            .iter()
            .map(|&(s, p)| (s, v4(GW_LAN), LAN_INDEX, p))
            .collect();
        self.deliver(&all)
    }

    /// One datagram from `source` on the LAN to `GW_LAN:5351`; `Some(reply)` when the gateway
    /// answers. The reply must go back to `source`, from `GW_LAN` on the LAN interface.
    #[track_caller]
    pub fn send_from(&mut self, source: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
        let out = self.send_batch(&[(source, request)]);
        assert!(
            out.len() <= 1,
            "more than one reply to one request: {out:?}"
        );
        let o = out.into_iter().next()?;
        assert_eq!(o.to, source, "reply to the wrong place");
        assert_sent_on_lan(&o);
        Some(o.payload)
    }

    /// One datagram from `client` (a port the harness picks).
    #[track_caller]
    pub fn send(&mut self, client: Ipv4Addr, request: &[u8]) -> Option<Vec<u8>> {
        let port = self.source_port();
        self.send_from(SocketAddr::new(v4(client), port), request)
    }

    /// Send and require a reply.
    #[track_caller]
    pub fn reply(&mut self, client: Ipv4Addr, request: &[u8]) -> Vec<u8> {
        match self.send(client, request) {
            Some(r) => r,
            None => panic!("no reply to {}", hex(request)),
        }
    }

    /// Send and require a drop that asks nothing of the kernel.
    #[track_caller]
    pub fn assert_dropped(&mut self, client: Ipv4Addr, request: &[u8]) {
        let r = self.send(client, request);
        assert!(
            r.is_none(),
            "expected no reply to {}, got {}",
            hex(request),
            hex(r.as_deref().unwrap_or(&[]))
        );
        assert!(
            self.changes.is_empty(),
            "a dropped request changed the kernel: {:?}",
            self.changes
        );
    }

    /// A map request (12 bytes), parsed reply. Checks the reply's version and opcode.
    #[track_caller]
    pub fn map(
        &mut self,
        client: Ipv4Addr,
        op: u8,
        iport: u16,
        eport: u16,
        lifetime: u32,
    ) -> MapReply {
        let r = self.reply(client, &map_request(op, iport, eport, lifetime));
        let m = parse_map_reply(&r);
        assert_eq!(m.opcode, 0x80 | op, "reply opcode: {}", hex(&r));
        m
    }

    /// A successful create/renew; returns the external port.
    #[track_caller]
    pub fn map_ok(
        &mut self,
        client: Ipv4Addr,
        op: u8,
        iport: u16,
        eport: u16,
        lifetime: u32,
    ) -> u16 {
        let m = self.map(client, op, iport, eport, lifetime);
        assert_eq!(
            m.result, SUCCESS,
            "mapping {client} {op} {iport}->{eport} for {lifetime}s: {m:?}"
        );
        assert_ne!(m.eport, 0, "success with external port 0: {m:?}");
        m.eport
    }

    // --- timers

    /// What the daemon does when its timer fires at `self.now`: `handle_timeout` (expiry,
    /// announcements, Mapping Updates), end the flows of what expired, save the leases if they
    /// are due. Returns what the kernel was asked to do; what was sent is in `self.out`.
    pub fn timeout(&mut self) -> Vec<Change> {
        self.out.clear();
        self.gateway.handle_timeout(self.now, &mut self.out);
        self.gateway.clear_flows();
        if let Some(snapshot) = self.gateway.take_lease_snapshot(self.now) {
            self.leases.push(snapshot);
            self.gateway.lease_saved(self.now, Ok(()));
        }
        self.collect_transactions();
        self.changes.clone()
    }

    /// When the daemon would wake up next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.gateway.poll_timeout()
    }

    /// Run the timers at `self.now` and return the NAT-PMP announcement they sent, if any (at
    /// most one: one internal interface). Checks where it went and where it came from; any PCP
    /// ANNOUNCE sent at the same time is in `self.out`.
    #[track_caller]
    pub fn announcement(&mut self) -> Option<Vec<u8>> {
        self.timeout();
        let found = natpmp_announcements(&self.out);
        assert!(found.len() <= 1, "two announcements at once: {found:?}");
        for o in found.iter().chain(pcp_announcements(&self.out).iter()) {
            assert_sent_on_lan(o);
        }
        found.first().map(|o| o.payload.clone())
    }

    /// Drive the gateway as the daemon would until `t`: wake at every `poll_timeout` up to `t`
    /// and run the timers. Everything sent on the way is returned (and `self.out` holds it);
    /// `self.changes` holds every kernel change on the way.
    #[track_caller]
    pub fn run_until(&mut self, t: Timestamp) -> Vec<Outgoing> {
        let mut sent = Vec::new();
        let mut changes = Vec::new();
        let mut transactions = Vec::new();
        for _ in 0..100_000 {
            match self.poll_timeout() {
                Some(due) if due <= t => {
                    self.now = self.now.max(due);
                    self.timeout();
                    sent.append(&mut self.out);
                    changes.append(&mut self.changes);
                    transactions.append(&mut self.transactions);
                    let after = self.poll_timeout();
                    assert!(
                        after.is_none_or(|a| a > self.now),
                        "poll_timeout {after:?} reports work handle_timeout does not do"
                    );
                }
                _ => {
                    self.now = self.now.max(t);
                    self.out = sent.clone();
                    self.changes = changes;
                    self.transactions = transactions;
                    return sent;
                }
            }
        }
        panic!("the timers never settle before {t:?}");
    }

    pub fn run_for(&mut self, d: Duration) -> Vec<Outgoing> {
        self.run_until(self.now + d)
    }

    // --- what there is

    pub fn mappings(&self) -> Vec<MappingView> {
        self.gateway.mappings(self.now)
    }

    pub fn mapping(&self, client: Ipv4Addr, op: u8, iport: u16) -> Option<MappingView> {
        self.mappings()
            .into_iter()
            .find(|m| m.client == v4(client) && m.protocol == proto(op) && m.internal_port == iport)
    }

    /// The kernel's elements now, sorted (timeouts left out).
    pub fn elements(&self) -> Vec<Element> {
        self.kernel.element_set()
    }

    /// The kernel's elements with the timeouts they were added with.
    pub fn kernel_elements(&self) -> Vec<(Element, Duration)> {
        self.kernel.elements()
    }

    /// What the engine says the kernel should hold, sorted.
    pub fn projection(&self) -> Vec<Element> {
        let mut v: Vec<Element> = self
            .gateway
            .engine()
            .projection()
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        v.sort();
        v
    }

    /// The kernel holds exactly what the engine projects.
    #[track_caller]
    pub fn assert_kernel_matches_engine(&self) {
        assert_eq!(
            self.elements(),
            self.projection(),
            "the kernel drifted from the engine"
        );
    }

    /// The elements the mapping views say the kernel holds (two per IPv4 mapping while there
    /// is an external address, none without).
    pub fn elements_of_views(&self) -> Vec<Element> {
        let mut v = Vec::new();
        for m in self.mappings() {
            let (IpAddr::V4(client), Some(IpAddr::V4(ext))) = (m.client, m.external_addr) else {
                continue;
            };
            let op = match m.protocol {
                Protocol::Udp => UDP,
                Protocol::Tcp => TCP,
            };
            v.extend(pair(op, ext, m.external_port, client, m.internal_port));
        }
        v.sort();
        v
    }
}

impl Default for Gw {
    fn default() -> Self {
        Gw::new()
    }
}

/// An IPv6 address from a string, for tests that need one.
pub fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// PCP conformance helpers (the `pcp_*.rs` suites): every result code, replies built by hand
// from RFC 6887 §7.2, §8.2, §11.1, §12.1, a snapshot of all state, IPv6 clients.

pub const PCP_NOT_AUTHORIZED: u8 = 2;
pub const PCP_MALFORMED_REQUEST: u8 = 3;
pub const PCP_UNSUPP_OPCODE: u8 = 4;
pub const PCP_UNSUPP_OPTION: u8 = 5;
pub const PCP_MALFORMED_OPTION: u8 = 6;
pub const PCP_NETWORK_FAILURE: u8 = 7;
pub const PCP_NO_RESOURCES: u8 = 8;
pub const PCP_UNSUPP_PROTOCOL: u8 = 9;
pub const PCP_USER_EX_QUOTA: u8 = 10;
pub const PCP_CANNOT_PROVIDE_EXTERNAL: u8 = 11;
pub const PCP_ADDRESS_MISMATCH: u8 = 12;
pub const PCP_EXCESSIVE_REMOTE_PEERS: u8 = 13;
/// The recommended short error lifetime (RFC 6887 §7.4: 30 s).
pub const PCP_SHORT_ERROR_LIFETIME: u32 = 30;

/// PCP opcodes (RFC 6887 §19.2).
pub const PCP_ANNOUNCE: u8 = 0;
pub const PCP_MAP: u8 = 1;
pub const PCP_PEER: u8 = 2;

/// IANA protocol numbers as the PCP protocol field carries them.
pub const IP_TCP: u8 = 6;
pub const IP_UDP: u8 = 17;

/// PCP option codes (RFC 6887 §13, RFC 7220).
pub const OPT_THIRD_PARTY: u8 = 1;
pub const OPT_PREFER_FAILURE: u8 = 2;
pub const OPT_FILTER: u8 = 3;
pub const OPT_DESCRIPTION: u8 = 128;

/// Two nonces, so ownership can be tested.
pub const NONCE: [u8; 12] = [
    0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC,
];
pub const NONCE2: [u8; 12] = [0x5B; 12];

/// The all-zeros IPv4 address in its 128-bit form (`::ffff:0:0`), and the all-zeros IPv6 one.
pub const ZERO4: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0];
pub const ZERO6: [u8; 16] = [0; 16];

/// The gateway's IPv6 address on the LAN, and IPv6 LAN clients (a ULA /64).
pub const GW_LAN6: &str = "fd00:88::1";
pub const A6: &str = "fd00:88::10";
pub const B6: &str = "fd00:88::20";

/// A PCP MAP request (60 bytes, no options) whose client field is `client` as given (so a
/// test can put a wrong or IPv6 address there).
pub fn pcp_map_request_field(
    client: [u8; 16],
    lifetime: u32,
    nonce: [u8; 12],
    protocol: u8,
    iport: u16,
    eport: u16,
    suggested_addr: [u8; 16],
) -> Vec<u8> {
    let mut b = pcp_header(PCP_MAP, lifetime, client);
    b.extend_from_slice(&nonce);
    b.extend_from_slice(&[protocol, 0, 0, 0]);
    b.extend_from_slice(&iport.to_be_bytes());
    b.extend_from_slice(&eport.to_be_bytes());
    b.extend_from_slice(&suggested_addr);
    b
}

/// A PCP PEER request (80 bytes, no options) with every address field given as its 128 bits.
#[allow(clippy::too_many_arguments)]
pub fn pcp_peer_request_field(
    client: [u8; 16],
    lifetime: u32,
    nonce: [u8; 12],
    protocol: u8,
    iport: u16,
    eport: u16,
    suggested_addr: [u8; 16],
    remote_port: u16,
    remote: [u8; 16],
) -> Vec<u8> {
    let mut b = pcp_map_request_field(
        client,
        lifetime,
        nonce,
        protocol,
        iport,
        eport,
        suggested_addr,
    );
    b[1] = PCP_PEER;
    b.extend_from_slice(&remote_port.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&remote);
    b
}

/// A TCP MAP from `client` with nonce `NONCE`, no suggestion: the common case.
pub fn tcp_map(client: Ipv4Addr, iport: u16, lifetime: u32) -> Vec<u8> {
    pcp_map_request(client, lifetime, NONCE, IP_TCP, iport, 0, ZERO4)
}

/// DESCRIPTION (RFC 7220, code 128).
pub fn pcp_description(text: &[u8]) -> Vec<u8> {
    pcp_option(OPT_DESCRIPTION, text)
}

/// THIRD_PARTY (RFC 6887 §13.1, code 1): the internal address, 128 bits.
pub fn pcp_third_party(addr: [u8; 16]) -> Vec<u8> {
    pcp_option(OPT_THIRD_PARTY, &addr)
}

/// The 128-bit form of an IPv6 address.
pub fn wire6(s: &str) -> [u8; 16] {
    ip6(s).octets()
}

/// A PCP error response as RFC 6887 §8.2 builds it: the request copied (at most 1100 bytes,
/// zero-padded to a multiple of 4 and to at least 24), then version 2, R | opcode, reserved 0,
/// `result`, `lifetime`, `epoch`. Bytes 12–23 keep the copy of the client field's last 96 bits
/// when the request was not understood (`understood = false`), and are zero otherwise (§7.2).
pub fn pcp_error_reply(
    request: &[u8],
    result: u8,
    lifetime: u32,
    epoch: u32,
    understood: bool,
) -> Vec<u8> {
    let copied = request.len().min(1100);
    let len = copied.next_multiple_of(4).clamp(24, 1100);
    let mut b = request[..copied].to_vec();
    b.resize(len, 0);
    b[0] = 2;
    b[1] = 0x80 | (request.get(1).copied().unwrap_or(0) & 0x7F);
    b[2] = 0;
    b[3] = result;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[8..12].copy_from_slice(&epoch.to_be_bytes());
    if understood {
        b[12..24].fill(0);
    }
    b
}

/// A PCP success response to `request` (RFC 6887 §8.2, §11.1, §12.1): the 24-byte header
/// (`02`, R | opcode, `00`, `00`, lifetime, epoch, 12 zero bytes), the request's opcode data
/// (MAP 36 bytes, PEER 56, ANNOUNCE none) with its reserved bits sent as 0 and the assigned
/// port and address in bytes 42–59, then `options` (the processed ones).
pub fn pcp_success_reply(
    request: &[u8],
    lifetime: u32,
    epoch: u32,
    eport: u16,
    eaddr: [u8; 16],
    options: &[u8],
) -> Vec<u8> {
    let opcode = request[1] & 0x7F;
    let data_end = match opcode {
        PCP_MAP => 60,
        PCP_PEER => 80,
        _ => 24,
    };
    let mut b = vec![2u8, 0x80 | opcode, 0, PCP_SUCCESS];
    b.extend_from_slice(&lifetime.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(&request[24..data_end]);
    if data_end > 24 {
        b[37..40].fill(0);
        b[42..44].copy_from_slice(&eport.to_be_bytes());
        b[44..60].copy_from_slice(&eaddr);
    }
    if opcode == PCP_PEER {
        b[62..64].fill(0);
    }
    b.extend_from_slice(options);
    b
}

/// The success response to a MAP or PEER delete (lifetime 0, RFC 6887 §15.1 with errata
/// 3621): the suggested port and address copied into the assigned fields, no options.
pub fn pcp_delete_reply(request: &[u8], epoch: u32) -> Vec<u8> {
    let eport = u16::from_be_bytes([request[42], request[43]]);
    let eaddr: [u8; 16] = request[44..60].try_into().unwrap();
    pcp_success_reply(request, 0, epoch, eport, eaddr, &[])
}

pub fn pcp_result(reply: &[u8]) -> u8 {
    reply[3]
}

pub fn pcp_lifetime(reply: &[u8]) -> u32 {
    u32::from_be_bytes(reply[4..8].try_into().unwrap())
}

/// Bytes 42–43 of a MAP or PEER response: the assigned external port.
pub fn pcp_eport(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[42], reply[43]])
}

/// A `FilteredInbound` element: remotes in `remote` reaching `client:iport` on `eport`.
pub fn filtered(
    op: u8,
    eport: u16,
    remote: natpmp_pcp_core::kernel::RemoteRange,
    client: Ipv4Addr,
    iport: u16,
) -> Element {
    Element::FilteredInbound {
        protocol: proto(op),
        external_port: eport,
        remote,
        internal: SocketAddrV4::new(client, iport),
    }
}

/// Remote addresses `first..=last`, remote ports `first_port..=last_port`.
pub fn remotes(
    first: Ipv4Addr,
    last: Ipv4Addr,
    first_port: u16,
    last_port: u16,
) -> natpmp_pcp_core::kernel::RemoteRange {
    natpmp_pcp_core::kernel::RemoteRange {
        first_addr: first,
        last_addr: last,
        first_port,
        last_port,
    }
}

/// Everything a request could change, for "an error changes nothing": the table (every
/// mapping with its owner and nonce, reply path, lifetime, expiry, filters, peers and
/// description), the kernel's elements with their timeouts, and the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub records: Vec<natpmp_pcp_core::engine::records::MappingRecord>,
    pub kernel: Vec<(Element, Duration)>,
    pub epoch: u32,
}

/// The interfaces of `interfaces(ext)`, with `GW_LAN6`/64 on the LAN interface too.
pub fn interfaces_with_v6(ext: Option<Ipv4Addr>) -> Interfaces {
    let mut m = interfaces(ext);
    m.get_mut(LAN_IF)
        .unwrap()
        .addrs
        .push(IfAddr::v6(ip6(GW_LAN6), 64));
    m
}

impl Gw {
    /// The whole state now (see [`State`]).
    pub fn state(&self) -> State {
        let mut kernel = self.kernel_elements();
        kernel.sort();
        State {
            records: self.gateway.engine().records(self.now),
            kernel,
            epoch: self.epoch(),
        }
    }

    /// Send `request` from `client`, require exactly `expected` back, and require that nothing
    /// changed: no kernel transaction, the same table and kernel as before (RFC 6887 §8.2: an
    /// error leaves no state behind).
    #[track_caller]
    pub fn assert_refused(&mut self, client: Ipv4Addr, request: &[u8], expected: &[u8]) {
        let before = self.state();
        let r = self.reply(client, request);
        assert_bytes(&r, expected);
        assert!(
            self.changes.is_empty(),
            "a refused request asked the kernel for {:?}",
            self.changes
        );
        assert_eq!(self.state(), before, "a refused request changed the state");
    }

    /// Every element the last call added carries its mapping's expiry + 2 s as its kernel
    /// timeout, and the kernel holds exactly the engine's projection.
    #[track_caller]
    pub fn assert_kernel_exact(&self) {
        self.assert_kernel_matches_engine();
        let projection = self.gateway.engine().projection();
        for (element, timeout) in adds(&self.changes) {
            let (_, expires) = projection
                .iter()
                .find(|(e, _)| *e == element)
                .unwrap_or_else(|| panic!("{element} added but not projected"));
            assert_eq!(
                timeout,
                expires.since(self.now) + GRACE,
                "kernel timeout of {element}"
            );
        }
    }

    /// Send `request` from `client` and require a SUCCESS reply (byte 3 = 0, R set) after which
    /// the kernel is exactly the engine's projection.
    #[track_caller]
    pub fn pcp_ok(&mut self, client: Ipv4Addr, request: &[u8]) -> Vec<u8> {
        let r = self.reply(client, request);
        assert!(r.len() >= 24, "short PCP reply {}", hex(&r));
        assert_eq!(
            (r[0], r[1], r[3]),
            (2, 0x80 | request[1], PCP_SUCCESS),
            "not a SUCCESS: {}",
            hex(&r)
        );
        self.assert_kernel_exact();
        r
    }

    /// The same from a given source address and port.
    #[track_caller]
    pub fn pcp_ok_from(&mut self, source: SocketAddr, request: &[u8]) -> Vec<u8> {
        let r = self
            .send_from(source, request)
            .unwrap_or_else(|| panic!("no reply to {}", hex(request)));
        assert_eq!(r[3], PCP_SUCCESS, "not a SUCCESS: {}", hex(&r));
        self.assert_kernel_exact();
        r
    }

    /// A gateway whose LAN interface has an IPv6 address as well (`GW_LAN6`/64).
    pub fn with_ipv6() -> Gw {
        let mut gw = Gw::new();
        gw.set_interfaces(interfaces_with_v6(Some(EXT)));
        gw
    }

    /// One datagram from the IPv6 LAN client `client` (port `port`) to `GW_LAN6:5351` on the
    /// LAN interface; the reply, which must go back to the client from `GW_LAN6`.
    #[track_caller]
    pub fn send6(&mut self, client: &str, port: u16, request: &[u8]) -> Option<Vec<u8>> {
        let source = SocketAddr::new(IpAddr::V6(ip6(client)), port);
        let out = self.deliver(&[(source, IpAddr::V6(ip6(GW_LAN6)), LAN_INDEX, request)]);
        assert!(out.len() <= 1, "more than one reply: {out:?}");
        let o = out.into_iter().next()?;
        assert_eq!(
            (o.to, o.from, o.ifindex),
            (source, IpAddr::V6(ip6(GW_LAN6)), LAN_INDEX),
            "IPv6 reply sent the wrong way"
        );
        Some(o.payload)
    }
}
