//! Property tests: the gateway never panics, every reply is well formed, and random sequences of
//! requests, time steps, life-cycle events and kernel faults keep the table, the kernel and the
//! replies consistent (rfc-checklist §1.2, §4 case 73; brief: "the engine never panics on any
//! input"). Everything goes through the whole sans-IO stack: `Gateway<FakeForwarder>`.
//!
//! Levels:
//! - `arbitrary_datagrams_*`: any byte string -> no reply, or a reply whose length, version byte
//!   and opcode follow the dispatch rules exactly (PCP on and off), carrying the current epoch.
//! - `model_*`: a sequence of steps against a small model of the NAT-PMP table (keys, external
//!   ports, expiry times, epoch, both announcement trains). After every step the gateway's
//!   `mappings()`, the engine's projection and the fake kernel must agree with the model, and
//!   the table invariants must hold (unique external ports, companion reservation, quota,
//!   lifetime cap). Kernel faults (a failed transaction, an element typed in by hand on a key
//!   natpmpd will need, one of ours deleted by hand, the whole table deleted) must never change
//!   a reply, and the kernel must always be the engine's projection, less what was deleted by
//!   hand, plus what was typed in by hand, until a rebuild makes it exact again.
//! - `model_*_through_address_loss`: the same with the address coming and going, against the
//!   engine's documented choice (`Engine::set_external_address`): while there is no address,
//!   mappings stay in the table but not in the kernel, creations and renewals get result 3,
//!   deletes and expiry still work, and everything returns to the kernel with the next address.
//! - `invariants_*`: the same steps plus arbitrary input and PCP MAP and PEER requests, checked
//!   for invariants only.

mod common;
use common::*;
use natpmp_pcp_core::kernel::Errno;
use natpmp_pcp_core::view::Via;
use natpmp_pcp_core::{Element, EngineConfig, GatewayConfig, MappingView, Protocol, Timestamp};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

const CLIENTS: [Ipv4Addr; 4] = [A, B, C, D];
const ADDRS: [Ipv4Addr; 2] = [EXT, EXT2];

fn config_of(engine: EngineConfig, pcp: bool) -> GatewayConfig {
    GatewayConfig {
        pcp,
        ..gateway_config(engine)
    }
}

// ---------------------------------------------------------------------------------------------
// Reply oracle for a single datagram (dispatch rules, §6 A2/A3/A4/A13, RFC 6887 §8.2, §9).

#[derive(Debug)]
enum Shape {
    /// A NAT-PMP reply: its length and byte 1.
    NatPmp(usize, u8),
    /// A PCP response to a version-2 request: byte 1 is 0x80 | opcode.
    Pcp(u8),
    /// PCP's UNSUPP_VERSION, exactly these bytes but the epoch.
    PcpUnsupportedVersion,
}

/// What the dispatch rules say the reply to `req` looks like: None = no reply.
fn expected_shape(req: &[u8], pcp: bool) -> Option<Shape> {
    if req.len() < 2 || req[1] >= 128 {
        return None;
    }
    match (req[0], pcp) {
        (0, _) => match req[1] {
            0 => Some(Shape::NatPmp(12, 0x80)),
            1 | 2 if req.len() < 12 => None,
            1 | 2 => Some(Shape::NatPmp(16, 0x80 | req[1])),
            op => Some(Shape::NatPmp(req.len().clamp(8, 1100), 0x80 | op)),
        },
        (2, true) if req.len() < 24 => None,
        (2, true) => Some(Shape::Pcp(req[1])),
        (_, true) => Some(Shape::PcpUnsupportedVersion),
        (_, false) => Some(Shape::NatPmp(8, 0x80)),
    }
}

fn check_reply_shape(
    req: &[u8],
    pcp: bool,
    reply: Option<&[u8]>,
    epoch: u32,
) -> Result<(), TestCaseError> {
    match (expected_shape(req, pcp), reply) {
        (None, None) => Ok(()),
        (None, Some(reply)) => Err(TestCaseError::fail(format!(
            "replied to {} with {}",
            hex(req),
            hex(reply)
        ))),
        (Some(_), None) => Err(TestCaseError::fail(format!("dropped {}", hex(req)))),
        (Some(Shape::NatPmp(len, op)), Some(reply)) => {
            prop_assert_eq!(reply.len(), len, "length of reply to {}", hex(req));
            prop_assert_eq!(reply[0], 0);
            prop_assert!(reply[1] >= 128);
            prop_assert_eq!(reply[1], op);
            prop_assert_eq!(
                u32::from_be_bytes(reply[4..8].try_into().unwrap()),
                epoch,
                "SSSoE in {}",
                hex(reply)
            );
            Ok(())
        }
        (Some(Shape::Pcp(op)), Some(reply)) => {
            prop_assert!(
                (24..=1100).contains(&reply.len()) && reply.len() % 4 == 0,
                "PCP reply of {} bytes to {}",
                reply.len(),
                hex(req)
            );
            prop_assert_eq!(reply[0], 2);
            prop_assert_eq!(reply[1], 0x80 | op);
            prop_assert_eq!(reply[2], 0);
            prop_assert_eq!(pcp_epoch(reply), epoch, "epoch in {}", hex(reply));
            Ok(())
        }
        (Some(Shape::PcpUnsupportedVersion), Some(reply)) => {
            prop_assert_eq!(
                reply,
                &pcp_unsupported_version_reply(req, epoch)[..],
                "UNSUPP_VERSION for {}",
                hex(req)
            );
            Ok(())
        }
    }
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Fully arbitrary.
        proptest::collection::vec(any::<u8>(), 0..1200),
        // Version 0, any opcode, short-ish: hits every dispatch branch often.
        (0u8..6, proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(op, rest)| {
            let mut v = vec![0, op];
            v.extend(rest);
            v
        }),
        // Version 0, opcode with the top bit, or unknown opcodes with long payloads.
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..1200)).prop_map(|(op, rest)| {
            let mut v = vec![0, op];
            v.extend(rest);
            v
        }),
        // Version 2, PCP opcodes and lengths around the ones that matter.
        (
            0u8..4,
            prop_oneof![Just(24usize), Just(60), Just(80), 0usize..200],
            proptest::collection::vec(any::<u8>(), 200)
        )
            .prop_map(|(op, len, bytes)| {
                let mut v = bytes[..len.min(200)].to_vec();
                v.resize(len.max(2), 0);
                v[0] = 2;
                v[1] = op;
                v
            }),
    ]
}

/// Put the sender's own address in a PCP request's client field, so the request gets past
/// ADDRESS_MISMATCH into the opcode's processing.
fn with_client_field(mut bytes: Vec<u8>, client: Ipv4Addr) -> Vec<u8> {
    if bytes.len() >= 24 && bytes[0] == 2 {
        bytes[8..24].copy_from_slice(&mapped(client));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_get_well_formed_replies_or_none(
        reqs in proptest::collection::vec((0usize..4, datagram(), any::<bool>()), 1..20),
        with_addr in any::<bool>(),
        pcp in any::<bool>(),
        start in 0u64..1_000_000_000,
    ) {
        let t = Timestamp::from_millis(start);
        let config = config_of(EngineConfig::default(), pcp);
        let (mut gw, _) = Gw::started(config, t, with_addr.then_some(EXT), None);
        for (i, (client, req, fix)) in reqs.iter().enumerate() {
            gw.now = t + ms(i as u64 * 100);
            let client = CLIENTS[*client];
            let req = if *fix { with_client_field(req.clone(), client) } else { req.clone() };
            let reply = gw.send(client, &req);
            check_reply_shape(&req, pcp, reply.as_deref(), gw.epoch())?;
        }
        gw.assert_kernel_matches_engine();
    }

    #[test]
    fn arbitrary_datagrams_with_tiny_config_never_panic(
        reqs in proptest::collection::vec((0usize..4, datagram(), any::<bool>()), 1..40),
        lo in any::<u16>(),
        width in 0u16..4,
        max_lifetime in any::<u32>(),
        quota in 0usize..3,
        seed in any::<u64>(),
        pcp in any::<bool>(),
    ) {
        // Degenerate configurations too: a range of one port, 5350..=5351 only, quota 0,
        // max_lifetime 0 or u32::MAX.
        let hi = lo.saturating_add(width);
        let engine = EngineConfig {
            port_range: lo..=hi,
            max_lifetime,
            max_mappings_per_client: quota,
            seed,
            ..EngineConfig::default()
        };
        let (mut gw, _) = Gw::started(config_of(engine, pcp), T0, Some(EXT), None);
        for (i, (client, req, fix)) in reqs.iter().enumerate() {
            gw.now = T0 + secs(i as u64);
            let client = CLIENTS[*client];
            let req = if *fix { with_client_field(req.clone(), client) } else { req.clone() };
            let reply = gw.send(client, &req);
            check_reply_shape(&req, pcp, reply.as_deref(), gw.epoch())?;
            gw.timeout();
            for m in gw.mappings() {
                prop_assert!(m.external_port >= lo && m.external_port <= hi);
                prop_assert!(m.external_port != 0 && m.external_port != 5350 && m.external_port != 5351);
                prop_assert!(m.lifetime <= max_lifetime);
            }
            gw.assert_kernel_matches_engine();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sequences of steps.

#[derive(Clone, Debug)]
enum Fault {
    /// The next transaction fails as a whole (ENOMEM).
    FailNext,
    /// Someone types in an element on an inbound key (protocol, external port) or an outbound
    /// key (client, protocol, internal port) that natpmpd may need.
    Squat {
        inbound: bool,
        op: u8,
        client: usize,
        port: u16,
    },
    /// Someone deletes one of natpmpd's elements (the n-th, if there are any).
    Unplug(usize),
    /// Someone deletes natpmpd's whole table.
    Wipe,
}

#[derive(Clone, Debug)]
enum Step {
    Map {
        client: usize,
        op: u8,
        iport: u16,
        eport: u16,
        lifetime: u32,
        reserved: u16,
        extra: u8,
    },
    Raw {
        client: usize,
        bytes: Vec<u8>,
    },
    /// A request that must not be admitted: from off the LAN, to the external address, to
    /// the broadcast address, or on the wrong interface.
    Stray {
        kind: u8,
        client: usize,
        iport: u16,
    },
    Pcp {
        client: usize,
        peer: bool,
        nonce: u8,
        protocol: u8,
        iport: u16,
        eport: u16,
        lifetime: u32,
        remote: u8,
        options: u8,
    },
    Advance(u64),
    SetAddr(Option<usize>),
    Reset,
    Announce,
    Fault(Fault),
}

fn iport() -> impl Strategy<Value = u16> {
    prop_oneof![2 => Just(0u16), 6 => 1u16..6, 1 => any::<u16>()]
}

fn eport(lo: u16) -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(0u16), 1 => Just(5350u16), 1 => Just(5351u16), 6 => lo..lo + 8, 1 => any::<u16>()]
}

fn lifetime() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 3 => 1u32..10, 3 => 10u32..200, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn fault(lo: u16) -> impl Strategy<Value = Fault> {
    prop_oneof![
        2 => Just(Fault::FailNext),
        3 => (any::<bool>(), 1u8..=2, 0usize..4, prop_oneof![lo..lo + 8, 1u16..6])
            .prop_map(|(inbound, op, client, port)| Fault::Squat { inbound, op, client, port }),
        3 => (0usize..16).prop_map(Fault::Unplug),
        1 => Just(Fault::Wipe),
    ]
}

fn step(lo: u16, allow_no_addr: bool, with_pcp: bool) -> impl Strategy<Value = Step> {
    let addr = if allow_no_addr {
        prop_oneof![Just(None), Just(Some(0usize)), Just(Some(1usize))].boxed()
    } else {
        prop_oneof![Just(Some(0usize)), Just(Some(1usize))].boxed()
    };
    let pcp_weight = if with_pcp { 6 } else { 0 };
    prop_oneof![
        12 => (0usize..4, 1u8..=2, iport(), eport(lo), lifetime(), prop_oneof![Just(0u16), any::<u16>()], prop_oneof![3 => Just(0u8), 1 => 1u8..20])
            .prop_map(|(client, op, iport, eport, lifetime, reserved, extra)| Step::Map { client, op, iport, eport, lifetime, reserved, extra }),
        2 => (0usize..4, datagram()).prop_map(|(client, bytes)| Step::Raw { client, bytes }),
        1 => (0u8..4, 0usize..4, 1u16..6).prop_map(|(kind, client, iport)| Step::Stray { kind, client, iport }),
        pcp_weight => (
            0usize..4,
            any::<bool>(),
            0u8..3,
            prop_oneof![4 => Just(6u8), 4 => Just(17u8), 1 => Just(0u8), 1 => any::<u8>()],
            prop_oneof![1 => Just(0u16), 6 => 1u16..6],
            eport(lo),
            prop_oneof![1 => Just(0u32), 4 => 1u32..400, 1 => any::<u32>()],
            0u8..3,
            prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
        )
            .prop_map(|(client, peer, nonce, protocol, iport, eport, lifetime, remote, options)| Step::Pcp { client, peer, nonce, protocol, iport, eport, lifetime, remote, options }),
        6 => prop_oneof![0u64..2_000, 0u64..30_000, 0u64..400_000].prop_map(Step::Advance),
        1 => addr.prop_map(Step::SetAddr),
        1 => Just(Step::Reset),
        2 => Just(Step::Announce),
        2 => fault(lo).prop_map(Step::Fault),
    ]
}

fn config_strategy(lo: u16) -> impl Strategy<Value = EngineConfig> {
    (
        prop_oneof![Just(lo..=lo + 7), Just(lo..=lo + 2), Just(5349..=5352)],
        1u32..300,
        1usize..5,
        any::<u64>(),
    )
        .prop_map(
            |(port_range, max_lifetime, max_mappings_per_client, seed)| EngineConfig {
                port_range,
                max_lifetime,
                max_mappings_per_client,
                seed,
                ..EngineConfig::default()
            },
        )
}

const LO: u16 = 40000;

/// The datagram a `Stray` step sends: a valid create request that must not be admitted.
fn stray(gw: &mut Gw, kind: u8, client: Ipv4Addr, iport: u16) -> Vec<natpmp_pcp_core::Outgoing> {
    let req = map_request(TCP, iport, 0, 60);
    let port = gw.source_port();
    let (source, destination, ifindex) = match kind {
        0 => (SocketAddr::new(v4(OFF_LAN), port), v4(GW_LAN), LAN_INDEX),
        1 => (SocketAddr::new(v4(client), port), v4(EXT), WAN_INDEX),
        2 => (
            SocketAddr::new(v4(client), port),
            v4(Ipv4Addr::new(192, 168, 88, 255)),
            LAN_INDEX,
        ),
        _ => (SocketAddr::new(v4(client), port), v4(GW_LAN), WAN_INDEX),
    };
    gw.deliver(&[(source, destination, ifindex, &req)])
}

/// The bytes of a `Pcp` step: a MAP or PEER from `client`, sometimes with FILTERs or
/// PREFER_FAILURE.
#[allow(clippy::too_many_arguments)]
fn pcp_request(
    client: Ipv4Addr,
    peer: bool,
    nonce: u8,
    protocol: u8,
    iport: u16,
    eport: u16,
    lifetime: u32,
    remote: u8,
    options: u8,
) -> Vec<u8> {
    let nonce = [nonce; 12];
    let remote_addr = Ipv4Addr::new(198, 51, 100, remote);
    let mut b = if peer {
        pcp_peer_request(
            client,
            lifetime,
            nonce,
            protocol,
            iport,
            eport,
            4000 + u16::from(remote),
            remote_addr,
        )
    } else {
        pcp_map_request(client, lifetime, nonce, protocol, iport, eport, [0; 16])
    };
    if options & 1 != 0 {
        b.extend(pcp_filter(96 + 24 + (options >> 4) % 9, 0, remote_addr));
    }
    if options & 2 != 0 {
        b.extend(pcp_filter(128, 4000, Ipv4Addr::new(203, 0, 113, remote)));
    }
    if options & 4 != 0 {
        b.extend(pcp_prefer_failure());
    }
    if options & 8 != 0 {
        b.extend(pcp_filter(0, 0, Ipv4Addr::UNSPECIFIED));
    }
    b
}

type Key = (Ipv4Addr, Protocol, u16);

#[derive(Clone, Copy, Debug)]
struct Entry {
    eport: u16,
    lifetime: u32,
    expiry: Timestamp,
}

fn op_of(p: Protocol) -> u8 {
    match p {
        Protocol::Udp => UDP,
        Protocol::Tcp => TCP,
    }
}

/// What the kernel may hold besides the engine's projection after a fault, until the next
/// rebuild (`prepare`) makes it exact again.
#[derive(Default)]
struct KernelWatch {
    /// Elements typed in by hand, still there.
    foreign: Vec<Element>,
    /// Elements of ours deleted by hand (or with the table), not put back yet.
    missing: Vec<Element>,
    prepares: usize,
    /// An injected failure not consumed by a transaction yet.
    armed: bool,
    applied: usize,
}

impl KernelWatch {
    fn new(gw: &Gw) -> KernelWatch {
        KernelWatch {
            prepares: gw.kernel.prepares(),
            applied: gw.kernel.applied().len(),
            ..KernelWatch::default()
        }
    }

    fn inject(&mut self, gw: &Gw, fault: &Fault) {
        match fault {
            Fault::FailNext => {
                gw.kernel.fail_next_apply(Errno::ENOMEM);
                self.armed = true;
            }
            Fault::Squat {
                inbound,
                op,
                client,
                port,
            } => {
                let elsewhere = SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 99), 9);
                let e = if *inbound {
                    Element::Inbound {
                        protocol: proto(*op),
                        external_port: *port,
                        internal: elsewhere,
                    }
                } else {
                    Element::Outbound {
                        internal: SocketAddrV4::new(CLIENTS[*client], *port),
                        protocol: proto(*op),
                        external: SocketAddrV4::new(EXT, 9),
                    }
                };
                // `nft add element` refuses a key that is taken.
                if !gw
                    .kernel_elements()
                    .iter()
                    .any(|(k, _)| k.collides_with(&e))
                {
                    gw.kernel.insert_by_hand(e, secs(3600));
                    self.foreign.push(e);
                }
            }
            Fault::Unplug(n) => {
                let ours: Vec<Element> = gw
                    .elements()
                    .into_iter()
                    .filter(|e| !self.foreign.contains(e))
                    .collect();
                if !ours.is_empty() {
                    let e = ours[n % ours.len()];
                    gw.kernel.remove_by_hand(&e);
                    self.missing.push(e);
                }
            }
            Fault::Wipe => {
                gw.kernel.wipe();
                self.foreign.clear();
                self.missing = gw.projection();
            }
        }
    }

    /// After every step: the kernel holds the projection, less what was deleted by hand, plus
    /// what was typed in by hand; after a rebuild, exactly the projection.
    fn check(&mut self, gw: &Gw) -> Result<(), TestCaseError> {
        let applied = gw.kernel.applied().len();
        if applied != self.applied {
            self.armed = false;
            self.applied = applied;
        }
        if gw.kernel.prepares() != self.prepares {
            self.prepares = gw.kernel.prepares();
            self.foreign.clear();
            self.missing.clear();
        }
        let kernel = gw.elements();
        let projection = gw.projection();
        for e in &kernel {
            prop_assert!(
                projection.contains(e) || self.foreign.contains(e),
                "the kernel holds {} that nobody asked for (projection {:?})",
                e,
                projection
            );
        }
        for e in &projection {
            prop_assert!(
                kernel.contains(e) || self.missing.iter().any(|m| m.same_key(e)),
                "the kernel lacks {} (kernel {:?})",
                e,
                kernel
            );
        }
        // Still missing: the projection has an element on its key that the kernel lacks (the
        // key may hold a stranger meanwhile).
        self.missing.retain(|m| {
            projection
                .iter()
                .any(|p| p.same_key(m) && !kernel.contains(p))
        });
        self.foreign.retain(|f| kernel.contains(f));
        if self.foreign.is_empty() && self.missing.is_empty() {
            prop_assert_eq!(&kernel, &projection, "the kernel drifted from the engine");
        }
        Ok(())
    }
}

/// An announcement schedule as the model sees it: late copies collapse into one.
#[derive(Clone, Copy, Debug, Default)]
struct Train {
    start: Option<Timestamp>,
    consumed: usize,
}

impl Train {
    fn restart(&mut self, at: Option<Timestamp>) {
        self.start = at;
        self.consumed = 0;
    }

    fn due(&self, now: Timestamp) -> usize {
        self.start.map_or(0, |s| {
            ANNOUNCE_OFFSETS_MS
                .iter()
                .filter(|&&o| s + ms(o) <= now)
                .count()
        })
    }

    /// How many copies a wake-up at `now` sends: one if a copy not yet sent is due.
    fn wake(&mut self, now: Timestamp) -> usize {
        let d = self.due(now);
        if d > self.consumed {
            self.consumed = d;
            1
        } else {
            0
        }
    }
}

/// Invariants that hold whatever happened. `nat_pmp_only`: every mapping is a NAT-PMP MAP
/// (the model), so keys are unique and the kernel holds two elements per mapping.
fn check_invariants(
    config: &EngineConfig,
    gw: &Gw,
    addr: Option<Ipv4Addr>,
    nat_pmp_only: bool,
) -> Result<(), TestCaseError> {
    let views = gw.mappings();
    // Sorted by client, protocol, internal port, each endpoint's MAP before its PEERs (in no
    // given order), and unique on that key and the PEER's remote.
    let order = |m: &MappingView| (m.client, m.protocol, m.internal_port, m.remote.is_some());
    for w in views.windows(2) {
        prop_assert!(
            order(&w[0]) <= order(&w[1]),
            "mappings not sorted: {:?} then {:?}",
            w[0],
            w[1]
        );
        if !nat_pmp_only && w[0].remote.is_some() {
            continue;
        }
        prop_assert!(
            order(&w[0]) < order(&w[1]),
            "mappings duplicated: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let mut keys: Vec<_> = views
        .iter()
        .map(|m| (m.client, m.protocol, m.internal_port, m.remote))
        .collect();
    keys.sort();
    keys.dedup();
    prop_assert_eq!(keys.len(), views.len(), "duplicated mappings: {:?}", views);
    let mut per_client: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, m) in views.iter().enumerate() {
        prop_assert!(
            config.port_range.contains(&m.external_port),
            "{:?} outside the range",
            m
        );
        prop_assert!(
            m.external_port != 0 && m.external_port != 5350 && m.external_port != 5351,
            "{:?}",
            m
        );
        prop_assert!(
            m.lifetime >= 1 && m.lifetime <= config.max_lifetime,
            "{:?}",
            m
        );
        prop_assert!(m.expires_in <= m.lifetime, "{:?}", m);
        if m.via == Via::NatPmp {
            prop_assert_eq!(&m.description, &None);
            prop_assert_eq!(
                m.comment_text(),
                format!("NAT-PMP {} {}", m.protocol, m.internal_port)
            );
        } else {
            prop_assert!(!nat_pmp_only, "a PCP mapping in a NAT-PMP run: {:?}", m);
        }
        *per_client.entry(m.client).or_default() += 1;
        for n in &views[i + 1..] {
            let same_endpoint =
                (m.client, m.protocol, m.internal_port) == (n.client, n.protocol, n.internal_port);
            if same_endpoint {
                prop_assert_eq!(m.external_port, n.external_port, "{:?} {:?}", m, n);
                continue;
            }
            prop_assert!(
                !(m.protocol == n.protocol && m.external_port == n.external_port),
                "two mappings share {} {}: {:?} {:?}",
                m.protocol,
                m.external_port,
                m,
                n
            );
            prop_assert!(
                !(m.client != n.client && m.external_port == n.external_port),
                "companion rule broken: {:?} and {:?}",
                m,
                n
            );
        }
    }
    for (c, n) in per_client {
        prop_assert!(
            n <= config.max_mappings_per_client,
            "{} holds {} mappings",
            c,
            n
        );
    }
    for m in &views {
        prop_assert_eq!(m.external_addr, addr.map(v4));
    }
    // What the engine projects: two elements per open MAP while there is an address.
    let projection = gw.projection();
    if addr.is_none() {
        prop_assert!(projection.is_empty(), "{:?}", projection);
    }
    if nat_pmp_only {
        prop_assert_eq!(&projection, &gw.elements_of_views());
    }
    // No kernel timeout outlives the cap (elements typed in by hand aside).
    let cap = secs(u64::from(config.max_lifetime)) + GRACE;
    for (e, t) in gw.kernel_elements() {
        if projection.contains(&e) {
            prop_assert!(t <= cap, "{} added with timeout {:?}", e, t);
        }
    }
    Ok(())
}

/// Is `port` free for `client` to take for `protocol`, per the model?
fn free_for(
    config: &EngineConfig,
    table: &BTreeMap<Key, Entry>,
    client: Ipv4Addr,
    protocol: Protocol,
    port: u16,
) -> bool {
    config.port_range.contains(&port)
        && port != 0
        && port != 5350
        && port != 5351
        && !table
            .iter()
            .any(|(&(c, p, _), e)| e.eport == port && (p == protocol || c != client))
}

fn sssoe(now: Timestamp, epoch_start: Timestamp) -> u32 {
    (now.since(epoch_start).as_millis() / 1000) as u32
}

struct Model {
    config: EngineConfig,
    pcp: bool,
    gw: Gw,
    table: BTreeMap<Key, Entry>,
    natpmp_train: Train,
    pcp_train: Train,
    watch: KernelWatch,
}

impl Model {
    fn new(config: EngineConfig, pcp: bool, start: Timestamp) -> Result<Model, TestCaseError> {
        let (gw, started) = Gw::started(config_of(config.clone(), pcp), start, Some(EXT), None);
        prop_assert_eq!(started.installed, 0);
        let mut natpmp_train = Train::default();
        natpmp_train.restart(Some(start));
        let mut pcp_train = Train::default();
        pcp_train.restart(pcp.then_some(start));
        let watch = KernelWatch::new(&gw);
        Ok(Model {
            config,
            pcp,
            gw,
            table: BTreeMap::new(),
            natpmp_train,
            pcp_train,
            watch,
        })
    }

    fn now(&self) -> Timestamp {
        self.gw.now
    }

    fn sssoe(&self) -> u32 {
        sssoe(self.gw.now, self.gw.epoch_start)
    }

    /// The changes the step handed the kernel first: what the gateway staged (later
    /// transactions are retries and rebuilds after a fault).
    fn staged(&self) -> Vec<natpmp_pcp_core::Change> {
        self.gw.transactions.first().cloned().unwrap_or_default()
    }

    fn expected_elements(&self) -> Vec<Element> {
        let mut v = Vec::new();
        if let Some(addr) = self.gw.addr {
            for (&(c, p, i), e) in &self.table {
                v.extend(pair(op_of(p), addr, e.eport, c, i));
            }
        }
        v.sort();
        v
    }

    /// Run the timers, as the daemon does when `poll_timeout` is due: expiry, announcements,
    /// the lease file.
    fn timers(&mut self) -> Result<(), TestCaseError> {
        let now = self.now();
        let leases_before = self.gw.leases.len();
        self.gw.timeout();
        let due: Vec<Key> = self
            .table
            .iter()
            .filter(|(_, e)| e.expiry <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut want = Vec::new();
        if let Some(addr) = self.gw.addr {
            for k in &due {
                let e = self.table[k];
                want.extend(removed(op_of(k.1), addr, e.eport, k.0, k.2));
            }
        }
        let staged = self.staged();
        let mut g = staged.clone();
        let mut w = want.clone();
        g.sort_by_key(|c| format!("{c:?}"));
        w.sort_by_key(|c| format!("{c:?}"));
        prop_assert_eq!(g, w, "expiry at {:?}", now);
        if want.is_empty() {
            prop_assert!(
                self.gw.transactions.is_empty(),
                "{:?}",
                self.gw.transactions
            );
        }
        for k in &due {
            self.table.remove(k);
        }
        // Announcements: exactly the copies the schedules say, P7 and PCP ANNOUNCE.
        let pmp = natpmp_announcements(&self.gw.out);
        let pcp = pcp_announcements(&self.gw.out);
        let want_pmp = if self.gw.addr.is_some() {
            self.natpmp_train.wake(now)
        } else {
            0
        };
        let want_pcp = self.pcp_train.wake(now);
        prop_assert_eq!(pmp.len(), want_pmp, "NAT-PMP copies at {:?}", now);
        prop_assert_eq!(pcp.len(), want_pcp, "PCP copies at {:?}", now);
        prop_assert_eq!(self.gw.out.len(), want_pmp + want_pcp, "{:?}", self.gw.out);
        for o in &self.gw.out {
            assert_sent_on_lan(o);
            prop_assert_eq!(o.to, ANNOUNCE_TO);
        }
        if let (Some(o), Some(addr)) = (pmp.first(), self.gw.addr) {
            prop_assert_eq!(&o.payload[..], &addr_reply(SUCCESS, self.sssoe(), addr)[..]);
        }
        if let Some(o) = pcp.first() {
            prop_assert_eq!(&o.payload[..], &pcp_announce(self.sssoe())[..]);
        }
        // The lease file, when it was due, holds the table.
        if self.gw.leases.len() > leases_before {
            let l = self.gw.leases.last().unwrap();
            prop_assert_eq!(l.records.len(), self.table.len());
            prop_assert_eq!(l.epoch_seconds, self.sssoe());
            prop_assert_eq!(l.external_addr, self.gw.addr);
        }
        Ok(())
    }

    fn request(&mut self, client: Ipv4Addr, req: &[u8]) -> Result<(), TestCaseError> {
        let reply = self.gw.send(client, req);
        check_reply_shape(req, self.pcp, reply.as_deref(), self.gw.epoch())?;
        let s = self.sssoe();
        let is_map = reply.is_some() && req[0] == 0 && (req[1] == 1 || req[1] == 2);
        let Some(reply) = reply.filter(|_| is_map) else {
            prop_assert!(
                self.gw.transactions.is_empty(),
                "{} changed the kernel: {:?}",
                hex(req),
                self.gw.transactions
            );
            if req.len() >= 2 && req[0] == 0 && req[1] == 0 {
                let want = match self.gw.addr {
                    Some(addr) => addr_reply(SUCCESS, s, addr),
                    None => addr_reply(NETWORK_FAILURE, s, Ipv4Addr::UNSPECIFIED),
                };
                prop_assert_eq!(self.gw.out[0].payload.clone(), want);
            }
            return Ok(());
        };
        let op = req[1];
        let protocol = proto(op);
        let iport = u16::from_be_bytes([req[4], req[5]]);
        let suggested = u16::from_be_bytes([req[6], req[7]]);
        let asked = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
        let r = parse_map_reply(&reply);
        let now = self.now();
        let staged = self.staged();
        if asked == 0 {
            // Delete or delete-all.
            prop_assert_eq!(&reply[..], &map_reply(op, SUCCESS, s, iport, 0, 0)[..]);
            let gone: Vec<Key> = self
                .table
                .keys()
                .filter(|&&(c, p, i)| c == client && p == protocol && (iport == 0 || i == iport))
                .copied()
                .collect();
            let mut want = Vec::new();
            if let Some(addr) = self.gw.addr {
                for k in &gone {
                    want.extend(removed(op, addr, self.table[k].eport, client, k.2));
                }
            }
            assert_same_changes(&staged, &want);
            if gone.is_empty() {
                prop_assert!(self.gw.transactions.is_empty());
            }
            for k in gone {
                self.table.remove(&k);
            }
        } else if iport == 0 {
            // Refused before the address is looked at (§6 A5).
            prop_assert_eq!(&reply[..], &map_reply(op, REFUSED, s, 0, 0, 0)[..]);
            prop_assert!(self.gw.transactions.is_empty());
        } else if let Some(addr) = self.gw.addr {
            let key = (client, protocol, iport);
            let granted = asked.min(self.config.max_lifetime);
            let expiry = now + secs(u64::from(granted));
            if let Some(old) = self.table.get(&key).copied() {
                prop_assert_eq!(
                    &reply[..],
                    &map_reply(op, SUCCESS, s, iport, old.eport, granted)[..],
                    "renewal"
                );
                prop_assert!(!self.gw.transactions.is_empty());
                if old.expiry == expiry {
                    // Same expiry (a retransmission in the same millisecond): nothing moves.
                    prop_assert!(staged.is_empty(), "{:?}", staged);
                } else {
                    let mut want = removed(op, addr, old.eport, client, iport);
                    want.extend(created(op, addr, old.eport, client, iport, granted));
                    assert_same_changes(&staged, &want);
                    assert_removes_before_adds(&staged);
                }
                self.table.insert(
                    key,
                    Entry {
                        eport: old.eport,
                        lifetime: granted,
                        expiry,
                    },
                );
            } else if r.result == SUCCESS {
                prop_assert!(
                    free_for(&self.config, &self.table, client, protocol, r.eport),
                    "granted port {} is not free for {} {}",
                    r.eport,
                    client,
                    protocol
                );
                if free_for(&self.config, &self.table, client, protocol, suggested) {
                    prop_assert_eq!(r.eport, suggested, "a free suggested port must be granted");
                }
                prop_assert_eq!(
                    &reply[..],
                    &map_reply(op, SUCCESS, s, iport, r.eport, granted)[..]
                );
                let held = self.table.keys().filter(|k| k.0 == client).count();
                prop_assert!(
                    held < self.config.max_mappings_per_client,
                    "quota exceeded yet granted"
                );
                assert_same_changes(&staged, &created(op, addr, r.eport, client, iport, granted));
                self.table.insert(
                    key,
                    Entry {
                        eport: r.eport,
                        lifetime: granted,
                        expiry,
                    },
                );
            } else {
                prop_assert_eq!(
                    &reply[..],
                    &map_reply(op, OUT_OF_RESOURCES, s, iport, 0, 0)[..]
                );
                prop_assert!(self.gw.transactions.is_empty());
                let held = self.table.keys().filter(|k| k.0 == client).count();
                let any_free = self
                    .config
                    .port_range
                    .clone()
                    .any(|p| free_for(&self.config, &self.table, client, protocol, p));
                prop_assert!(
                    held >= self.config.max_mappings_per_client || !any_free,
                    "result 4 while under quota ({} held) and a port is free",
                    held
                );
            }
        } else {
            // Create or renew with no address: result 3, nothing refreshed.
            prop_assert_eq!(
                &reply[..],
                &map_reply(op, NETWORK_FAILURE, s, iport, 0, 0)[..]
            );
            prop_assert!(self.gw.transactions.is_empty());
        }
        Ok(())
    }

    fn set_addr(&mut self, addr: Option<Ipv4Addr>) -> Result<(), TestCaseError> {
        let old = self.gw.addr;
        let now = self.now();
        self.gw.set_address(addr);
        if addr == old {
            prop_assert!(
                self.gw.transactions.is_empty(),
                "same address staged {:?}",
                self.gw.transactions
            );
            return Ok(());
        }
        let mut want = Vec::new();
        for (&(c, p, i), e) in &self.table {
            let op = op_of(p);
            let timeout = e.expiry.since(now) + GRACE;
            match (old, addr) {
                (Some(a), Some(b)) => {
                    want.push(natpmp_pcp_core::Change::Remove(outbound(
                        op, a, e.eport, c, i,
                    )));
                    want.push(natpmp_pcp_core::Change::Add {
                        element: outbound(op, b, e.eport, c, i),
                        timeout,
                    });
                }
                (Some(a), None) => want.extend(removed(op, a, e.eport, c, i)),
                (None, Some(b)) => want.extend(
                    pair(op, b, e.eport, c, i)
                        .into_iter()
                        .map(|element| natpmp_pcp_core::Change::Add { element, timeout }),
                ),
                (None, None) => unreachable!(),
            }
        }
        let staged = self.staged();
        assert_same_changes(&staged, &want);
        assert_removes_before_adds(&staged);
        if want.is_empty() {
            prop_assert!(self.gw.transactions.is_empty());
        }
        self.natpmp_train.restart(addr.map(|_| now));
        Ok(())
    }

    fn reset(&mut self) -> Result<(), TestCaseError> {
        let on = self.gw.config().clone();
        let off = GatewayConfig {
            enabled: false,
            ..on.clone()
        };
        prop_assert!(self.gw.reconfigure(off).is_ok());
        let started = self.gw.reconfigure(on.clone());
        if self.watch.armed {
            // The injected failure hits the start's table installation: the gateway stays off,
            // and the operator's next reload starts it.
            prop_assert!(
                started.is_err(),
                "start succeeded through an injected failure"
            );
            prop_assert!(!self.gw.gateway.serving());
            self.watch.armed = false;
            self.watch.applied = self.gw.kernel.applied().len();
            prop_assert!(self.gw.reconfigure(on).is_ok());
        } else {
            prop_assert!(started.is_ok(), "{:?}", started);
        }
        prop_assert!(self.gw.gateway.serving());
        prop_assert!(self.gw.elements().is_empty());
        prop_assert!(self.gw.mappings().is_empty());
        self.gw.epoch_start = self.now();
        self.table.clear();
        let now = self.now();
        self.natpmp_train.restart(self.gw.addr.map(|_| now));
        self.pcp_train.restart(self.pcp.then_some(now));
        Ok(())
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let addr = self.gw.addr;
        check_invariants(&self.config, &self.gw, addr, true)?;
        let views = self.gw.mappings();
        // The model's table.
        let got: Vec<(IpAddr, Protocol, u16, u16, u32)> = views
            .iter()
            .map(|m| {
                (
                    m.client,
                    m.protocol,
                    m.internal_port,
                    m.external_port,
                    m.lifetime,
                )
            })
            .collect();
        let want: Vec<(IpAddr, Protocol, u16, u16, u32)> = self
            .table
            .iter()
            .map(|(k, e)| (v4(k.0), k.1, k.2, e.eport, e.lifetime))
            .collect();
        prop_assert_eq!(got, want, "mappings() differ from the model");
        for m in &views {
            let IpAddr::V4(c) = m.client else {
                unreachable!()
            };
            let e = self.table[&(c, m.protocol, m.internal_port)];
            let left_ms = e.expiry.since(self.now()).as_millis() as u64;
            prop_assert_eq!(
                m.expires_in,
                left_ms.div_ceil(1000) as u32,
                "expires_in for {} ms left",
                left_ms
            );
        }
        // poll_timeout never later than the next expiry.
        if let Some(next) = self.table.values().map(|e| e.expiry).min() {
            let pt = self.gw.poll_timeout();
            prop_assert!(
                pt.is_some_and(|p| p <= next),
                "poll_timeout {:?} after expiry {:?}",
                pt,
                next
            );
        }
        // The engine projects what the model says, and the kernel holds it (faults aside).
        prop_assert_eq!(self.gw.projection(), self.expected_elements());
        self.watch.check(&self.gw)
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Map {
                client,
                op,
                iport,
                eport,
                lifetime,
                reserved,
                extra,
            } => {
                let mut req = map_request(*op, *iport, *eport, *lifetime).to_vec();
                req[2..4].copy_from_slice(&reserved.to_be_bytes());
                req.extend(std::iter::repeat_n(0x5A, *extra as usize));
                self.request(CLIENTS[*client], &req)?;
            }
            Step::Raw { client, bytes } => self.request(CLIENTS[*client], bytes)?,
            Step::Stray {
                kind,
                client,
                iport,
            } => {
                let out = stray(&mut self.gw, *kind, CLIENTS[*client], *iport);
                prop_assert!(out.is_empty(), "answered a stray datagram: {:?}", out);
                prop_assert!(self.gw.transactions.is_empty());
            }
            // Not generated for the model (it models NAT-PMP only).
            Step::Pcp { .. } => unreachable!(),
            Step::Advance(d) => {
                self.gw.advance_ms(*d);
                self.timers()?;
            }
            Step::SetAddr(a) => self.set_addr(a.map(|i| ADDRS[i]))?,
            Step::Reset => self.reset()?,
            Step::Announce => self.timers()?,
            Step::Fault(f) => self.watch.inject(&self.gw, f),
        }
        self.check()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn model_random_sequences_keep_table_kernel_and_replies_consistent(
        config in config_strategy(LO),
        pcp in any::<bool>(),
        start in 0u64..1_000_000_000,
        steps in proptest::collection::vec(step(LO, false, false), 1..80),
    ) {
        let mut m = Model::new(config, pcp, Timestamp::from_millis(start))?;
        for s in &steps {
            m.run(s)?;
        }
    }

    #[test]
    fn model_random_sequences_through_address_loss(
        config in config_strategy(LO),
        pcp in any::<bool>(),
        start in 0u64..1_000_000_000,
        steps in proptest::collection::vec(step(LO, true, false), 1..80),
    ) {
        let mut m = Model::new(config, pcp, Timestamp::from_millis(start))?;
        for s in &steps {
            m.run(s)?;
        }
    }

    #[test]
    fn invariants_hold_through_address_loss_and_arbitrary_input(
        config in prop_oneof![config_strategy(LO), Just(EngineConfig::default())],
        pcp in prop_oneof![3 => Just(true), 1 => Just(false)],
        with_addr in any::<bool>(),
        steps in proptest::collection::vec(step(LO, true, true), 1..80),
    ) {
        let (mut gw, _) = Gw::started(config_of(config.clone(), pcp), T0, with_addr.then_some(EXT), None);
        let mut watch = KernelWatch::new(&gw);
        for s in &steps {
            match s {
                Step::Map { client, op, iport, eport, lifetime, reserved, extra } => {
                    let mut req = map_request(*op, *iport, *eport, *lifetime).to_vec();
                    req[2..4].copy_from_slice(&reserved.to_be_bytes());
                    req.extend(std::iter::repeat_n(0x5A, *extra as usize));
                    let reply = gw.send(CLIENTS[*client], &req);
                    check_reply_shape(&req, pcp, reply.as_deref(), gw.epoch())?;
                    let r = parse_map_reply(&reply.unwrap());
                    if gw.addr.is_none() && *lifetime != 0 && *iport != 0 {
                        prop_assert_eq!(r.result, NETWORK_FAILURE);
                        prop_assert!(gw.transactions.is_empty());
                    }
                    if r.result == SUCCESS && *lifetime != 0 {
                        prop_assert!(r.lifetime <= *lifetime && r.lifetime <= config.max_lifetime);
                        prop_assert!(r.eport != 0);
                    }
                    if r.result != SUCCESS {
                        // Errors carry lifetime 0 and external port 0, except a NAT-PMP delete
                        // refused because a PCP nonce owns the mapping: it names the port that
                        // stays (§6 A7).
                        let kept_port = r.result == REFUSED && *lifetime == 0 && *iport != 0;
                        prop_assert_eq!(r.lifetime, 0);
                        if !kept_port {
                            prop_assert_eq!(r.eport, 0);
                        }
                    }
                }
                Step::Raw { client, bytes } => {
                    let client = CLIENTS[*client];
                    let bytes = with_client_field(bytes.clone(), client);
                    let reply = gw.send(client, &bytes);
                    check_reply_shape(&bytes, pcp, reply.as_deref(), gw.epoch())?;
                }
                Step::Stray { kind, client, iport } => {
                    let out = stray(&mut gw, *kind, CLIENTS[*client], *iport);
                    prop_assert!(out.is_empty(), "answered a stray datagram: {:?}", out);
                }
                Step::Pcp { client, peer, nonce, protocol, iport, eport, lifetime, remote, options } => {
                    let client = CLIENTS[*client];
                    let req = pcp_request(client, *peer, *nonce, *protocol, *iport, *eport, *lifetime, *remote, *options);
                    let reply = gw.send(client, &req);
                    check_reply_shape(&req, pcp, reply.as_deref(), gw.epoch())?;
                }
                Step::Advance(d) => {
                    gw.advance_ms(*d);
                    gw.timeout();
                }
                Step::SetAddr(a) => gw.set_address(a.map(|i| ADDRS[i])),
                Step::Reset => {
                    let on = gw.config().clone();
                    let off = GatewayConfig { enabled: false, ..on.clone() };
                    prop_assert!(gw.reconfigure(off).is_ok());
                    if gw.reconfigure(on.clone()).is_err() {
                        prop_assert!(watch.armed, "start failed with no fault");
                        prop_assert!(gw.reconfigure(on).is_ok());
                    }
                    gw.epoch_start = gw.now;
                    prop_assert!(gw.mappings().is_empty());
                    prop_assert!(gw.elements().is_empty());
                }
                Step::Announce => {
                    gw.timeout();
                    for o in natpmp_announcements(&gw.out) {
                        prop_assert!(gw.addr.is_some(), "announced with no external address");
                        prop_assert_eq!(&o.payload[..], &addr_reply(SUCCESS, gw.epoch(), gw.addr.unwrap())[..]);
                    }
                }
                Step::Fault(f) => watch.inject(&gw, f),
            }
            check_invariants(&config, &gw, gw.addr, false)?;
            watch.check(&gw)?;
            let _ = gw.poll_timeout();
        }
    }
}

#[test]
fn time_earlier_than_the_epoch_start_does_not_panic() {
    // The daemon's clock is monotonic, but the gateway must not panic if handed an earlier
    // `now`.
    let start = Timestamp::from_secs(100);
    let (mut gw, _) = Gw::started(
        gateway_config(EngineConfig::default()),
        start,
        Some(EXT),
        None,
    );
    gw.now = Timestamp::from_secs(50);
    for req in [
        &addr_request()[..],
        &map_request(TCP, 1, 0, 60)[..],
        &map_request(TCP, 1, 0, 0)[..],
        &[1, 0][..],
    ] {
        let reply = gw.send(A, req);
        check_reply_shape(req, true, reply.as_deref(), 0).unwrap();
    }
    gw.now = Timestamp::ZERO;
    gw.timeout();
    let _ = gw.poll_timeout();
    let _ = gw.mappings();
    gw.assert_kernel_matches_engine();
}

#[test]
fn far_future_time_does_not_panic() {
    let (mut gw, _) = Gw::started(
        gateway_config(EngineConfig {
            max_lifetime: u32::MAX,
            ..EngineConfig::default()
        }),
        T0,
        Some(EXT),
        None,
    );
    let r = gw.map(A, UDP, 1, 0, u32::MAX);
    assert_eq!(r.result, SUCCESS);
    let far = Timestamp::from_millis(u64::MAX - 1);
    gw.now = far;
    // SSSoE saturates rather than wrapping to a small number (which would look like a reboot).
    assert_eq!(gw.epoch(), u32::MAX);
    assert_bytes(
        &gw.reply(A, &addr_request()),
        &addr_reply(SUCCESS, u32::MAX, EXT),
    );
    gw.reply(A, &map_request(UDP, 2, 0, u32::MAX));
    gw.timeout();
    let left = gw.mappings();
    assert!(left.is_empty() || left.iter().all(|m| m.internal_port == 2));
    let _ = gw.poll_timeout();
    gw.assert_kernel_matches_engine();
}
