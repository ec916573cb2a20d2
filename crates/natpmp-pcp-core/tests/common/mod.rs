//! Shared helpers for the natpmp-pcp-core integration tests.
//!
//! Every test drives the public API only: `Server` with virtual time, and byte strings built
//! here by hand from the layouts in rfc-checklist §1.1 (never from the crate's own encoder, so a
//! wrong constant in the engine cannot hide behind the same wrong constant in a test).
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

use natpmp_pcp_core::{
    Change, Forward, MappingView, Outcome, Protocol, Server, ServerConfig, Timestamp,
};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The gateway's public address in most tests (TEST-NET-3).
pub const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// A second public address, for address changes (TEST-NET-2).
pub const EXT2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// LAN clients. `C` sorts before `A` numerically but after it as a string.
pub const A: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 10);
pub const B: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 20);
pub const C: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 9);

/// NAT-PMP opcodes.
pub const OP_ADDR: u8 = 0;
pub const UDP: u8 = 1;
pub const TCP: u8 = 2;

/// Result codes (RFC 6886 §3.5).
pub const SUCCESS: u16 = 0;
pub const UNSUPPORTED_VERSION: u16 = 1;
pub const REFUSED: u16 = 2;
pub const NETWORK_FAILURE: u16 = 3;
pub const OUT_OF_RESOURCES: u16 = 4;
pub const UNSUPPORTED_OPCODE: u16 = 5;

/// Where virtual time starts in most tests: deliberately not zero, so an engine that confuses
/// "time since origin" with "time since epoch start" is caught.
pub const T0: Timestamp = Timestamp::from_secs(1_000);

/// The announcement schedule, in milliseconds after the event (RFC 6886 §3.2.1).
pub const ANNOUNCE_OFFSETS_MS: [u64; 10] =
    [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127750];

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

// ---------------------------------------------------------------------------------------------
// Byte builders (rfc-checklist §1.1)

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

/// P5: `00 80 0001 SSSoE` (opcode 0x80 per errata 3618).
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

/// The forward the engine should stage for a fresh mapping: timeout = granted + 2 s.
pub fn forward(
    op: u8,
    ext: Ipv4Addr,
    eport: u16,
    client: Ipv4Addr,
    iport: u16,
    granted: u32,
) -> Forward {
    Forward {
        protocol: proto(op),
        external_addr: ext,
        external_port: eport,
        internal_addr: client,
        internal_port: iport,
        timeout: Duration::from_secs(u64::from(granted) + 2),
    }
}

/// A staged `Remove` names kernel elements; its timeout does not matter to the kernel, so it is
/// compared with `same_elements`.
#[track_caller]
pub fn assert_is_remove_of(change: &Change, fwd: &Forward) {
    match change {
        Change::Remove(f) if f.same_elements(fwd) => {}
        other => panic!("expected Remove of {fwd:?}, got {other:?}"),
    }
}

pub fn adds(changes: &[Change]) -> Vec<Forward> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Add(f) => Some(*f),
            _ => None,
        })
        .collect()
}

pub fn removes(changes: &[Change]) -> Vec<Forward> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Remove(f) => Some(*f),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A gateway under test, with virtual time.

pub struct Gw {
    pub server: Server,
    pub config: ServerConfig,
    pub now: Timestamp,
    /// Where the test expects the epoch to have started (kept by the test, not read from the
    /// engine).
    pub epoch_start: Timestamp,
    /// The external address the test last set (kept by the test).
    pub addr: Option<Ipv4Addr>,
    /// Changes staged by the last call made through this harness.
    pub changes: Vec<Change>,
}

impl Gw {
    /// Default config, created at `T0` with external address `EXT` set at `T0`.
    pub fn new() -> Gw {
        Gw::with_config(ServerConfig::default())
    }

    pub fn with_config(config: ServerConfig) -> Gw {
        let mut gw = Gw::without_address_config(config);
        gw.set_address(Some(EXT));
        assert!(
            gw.changes.is_empty(),
            "setting the first address with no mappings stages nothing: {:?}",
            gw.changes
        );
        gw
    }

    /// Default config, created at `T0`, no external address yet.
    pub fn without_address() -> Gw {
        Gw::without_address_config(ServerConfig::default())
    }

    pub fn without_address_config(config: ServerConfig) -> Gw {
        Gw {
            server: Server::new(config.clone(), T0),
            config,
            now: T0,
            epoch_start: T0,
            addr: None,
            changes: Vec::new(),
        }
    }

    pub fn small_range(lo: u16, hi: u16) -> Gw {
        Gw::with_config(ServerConfig {
            port_range: lo..=hi,
            ..ServerConfig::default()
        })
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

    /// Set (or clear) the external address; a real change restarts the expected epoch.
    pub fn set_address(&mut self, addr: Option<Ipv4Addr>) {
        self.changes.clear();
        self.server
            .set_external_address(self.now, addr, &mut self.changes);
        if self.addr != addr {
            self.epoch_start = self.now;
        }
        self.addr = addr;
    }

    /// Send a datagram; `Some(reply)` when the engine answers. The reply buffer is pre-filled
    /// with junk to check the engine clears it.
    pub fn send(&mut self, client: Ipv4Addr, request: &[u8]) -> Option<Vec<u8>> {
        let mut reply = vec![0xEE; 40];
        self.changes.clear();
        let outcome = self
            .server
            .handle(self.now, client, request, &mut reply, &mut self.changes);
        match outcome {
            Outcome::Reply => Some(reply),
            Outcome::Drop => None,
        }
    }

    /// Send and require a reply.
    #[track_caller]
    pub fn reply(&mut self, client: Ipv4Addr, request: &[u8]) -> Vec<u8> {
        match self.send(client, request) {
            Some(r) => r,
            None => panic!("no reply to {}", hex(request)),
        }
    }

    /// Send and require a drop with no staged changes.
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
            "a dropped request staged changes: {:?}",
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

    pub fn timeout(&mut self) -> Vec<Change> {
        self.changes.clear();
        self.server.handle_timeout(self.now, &mut self.changes);
        self.changes.clone()
    }

    pub fn mappings(&self) -> Vec<MappingView> {
        self.server.mappings(self.now)
    }

    pub fn mapping(&self, client: Ipv4Addr, op: u8, iport: u16) -> Option<MappingView> {
        self.mappings()
            .into_iter()
            .find(|m| m.client == client && m.protocol == proto(op) && m.internal_port == iport)
    }

    pub fn announcement(&mut self) -> Option<Vec<u8>> {
        let mut out = vec![0xEE; 20];
        if self.server.poll_announcement(self.now, &mut out) {
            Some(out)
        } else {
            None
        }
    }
}

impl Default for Gw {
    fn default() -> Self {
        Gw::new()
    }
}
