//! Property tests: the engine never panics, every reply is well formed, and random sequences of
//! requests, time steps and life-cycle events keep the table consistent (rfc-checklist §1.2,
//! §4 case 73; brief: "the engine never panics on any input").
//!
//! Two levels:
//! - `arbitrary_datagrams_*`: any byte string -> Drop, or a reply whose length, version byte and
//!   opcode follow the dispatch rules exactly.
//! - `model_*`: a sequence of steps against a small model of the table (keys, external ports,
//!   expiry times, epoch) and a fake kernel that applies the staged changes and refuses
//!   impossible ones (removing an absent element, adding a clashing key). After every step the
//!   engine's `mappings()`, `forwards()` and the fake kernel must agree with the model, and the
//!   table invariants must hold (unique external ports, companion reservation, quota).
//! - `model_*_through_address_loss`: the same with the address coming and going, against the
//!   engine's documented choice (server.rs `set_external_address`): while there is no address,
//!   mappings stay in the table but not in the kernel, creations and renewals get result 3,
//!   deletes and expiry still work, and everything returns to the kernel with the next address.
//! - `invariants_*`: the same steps plus arbitrary input, checked for invariants only.

mod common;
use common::*;
use natpmp_pcp_core::{
    Change, Forward, MappingView, Outcome, Protocol, Server, ServerConfig, Timestamp,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const CLIENTS: [Ipv4Addr; 4] = [A, B, C, Ipv4Addr::new(10, 0, 0, 1)];
const ADDRS: [Ipv4Addr; 2] = [EXT, EXT2];

// ---------------------------------------------------------------------------------------------
// Reply oracle for a single datagram (dispatch rules, §6 A3/A4/A13).

/// What the dispatch rules say the reply to `req` looks like: None = Drop, else (length, byte 1).
fn expected_shape(req: &[u8]) -> Option<(usize, u8)> {
    if req.len() < 2 || req[1] >= 128 {
        return None;
    }
    if req[0] != 0 {
        return Some((8, 0x80));
    }
    match req[1] {
        0 => Some((12, 0x80)),
        1 | 2 if req.len() < 12 => None,
        1 | 2 => Some((16, 0x80 | req[1])),
        op => Some((req.len().clamp(8, 1100), 0x80 | op)),
    }
}

fn check_reply_shape(req: &[u8], outcome: Outcome, reply: &[u8]) -> Result<(), TestCaseError> {
    match (expected_shape(req), outcome) {
        (None, Outcome::Drop) => Ok(()),
        (None, Outcome::Reply) => Err(TestCaseError::fail(format!(
            "replied to {} with {}",
            hex(req),
            hex(reply)
        ))),
        (Some(_), Outcome::Drop) => Err(TestCaseError::fail(format!("dropped {}", hex(req)))),
        (Some((len, op)), Outcome::Reply) => {
            prop_assert!((2..=1100).contains(&reply.len()));
            prop_assert_eq!(reply.len(), len, "length of reply to {}", hex(req));
            prop_assert_eq!(reply[0], 0);
            prop_assert!(reply[1] >= 128);
            prop_assert_eq!(reply[1], op);
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
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_get_well_formed_replies_or_none(
        reqs in proptest::collection::vec((0usize..4, datagram()), 1..20),
        with_addr in any::<bool>(),
        start in 0u64..1_000_000_000,
    ) {
        let t = Timestamp::from_millis(start);
        let mut server = Server::new(ServerConfig::default(), t);
        let mut changes = Vec::new();
        if with_addr {
            server.set_external_address(t, Some(EXT), &mut changes);
        }
        let mut reply = Vec::new();
        for (i, (client, req)) in reqs.iter().enumerate() {
            let now = t + ms(i as u64 * 100);
            let out = server.handle(now, CLIENTS[*client], req, &mut reply, &mut changes);
            check_reply_shape(req, out, &reply)?;
            if out == Outcome::Reply {
                let sssoe = u32::from_be_bytes(reply[4..8].try_into().unwrap());
                prop_assert_eq!(sssoe, server.epoch_seconds(now));
            }
        }
    }

    #[test]
    fn arbitrary_datagrams_with_tiny_config_never_panic(
        reqs in proptest::collection::vec((0usize..4, datagram()), 1..40),
        lo in any::<u16>(),
        width in 0u16..4,
        max_lifetime in any::<u32>(),
        quota in 0usize..3,
        seed in any::<u64>(),
    ) {
        // Degenerate configurations too: a range of one port, 5350..=5351 only, quota 0,
        // max_lifetime 0 or u32::MAX.
        let hi = lo.saturating_add(width);
        let config = ServerConfig { port_range: lo..=hi, max_lifetime, max_mappings_per_client: quota, seed };
        let mut server = Server::new(config, T0);
        let mut changes = Vec::new();
        server.set_external_address(T0, Some(EXT), &mut changes);
        let mut reply = Vec::new();
        for (i, (client, req)) in reqs.iter().enumerate() {
            let now = T0 + secs(i as u64);
            let out = server.handle(now, CLIENTS[*client], req, &mut reply, &mut changes);
            check_reply_shape(req, out, &reply)?;
            server.handle_timeout(now, &mut changes);
            for m in server.mappings(now) {
                prop_assert!(m.external_port >= lo && m.external_port <= hi);
                prop_assert!(m.external_port != 0 && m.external_port != 5350 && m.external_port != 5351);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sequences of steps.

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
    Advance(u64),
    SetAddr(Option<usize>),
    Reset,
    Announce,
    RevertLast,
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

fn step(lo: u16, allow_no_addr: bool) -> impl Strategy<Value = Step> {
    let addr = if allow_no_addr {
        prop_oneof![Just(None), Just(Some(0usize)), Just(Some(1usize))].boxed()
    } else {
        prop_oneof![Just(Some(0usize)), Just(Some(1usize))].boxed()
    };
    prop_oneof![
        12 => (0usize..4, 1u8..=2, iport(), eport(lo), lifetime(), prop_oneof![Just(0u16), any::<u16>()], prop_oneof![3 => Just(0u8), 1 => 1u8..20])
            .prop_map(|(client, op, iport, eport, lifetime, reserved, extra)| Step::Map { client, op, iport, eport, lifetime, reserved, extra }),
        2 => (0usize..4, datagram()).prop_map(|(client, bytes)| Step::Raw { client, bytes }),
        6 => prop_oneof![0u64..2_000, 0u64..30_000, 0u64..400_000].prop_map(Step::Advance),
        1 => addr.prop_map(Step::SetAddr),
        1 => Just(Step::Reset),
        2 => Just(Step::Announce),
        2 => Just(Step::RevertLast),
    ]
}

fn config_strategy(lo: u16) -> impl Strategy<Value = ServerConfig> {
    (
        prop_oneof![Just(lo..=lo + 7), Just(lo..=lo + 2), Just(5349..=5352)],
        1u32..300,
        1usize..5,
        any::<u64>(),
    )
        .prop_map(
            |(port_range, max_lifetime, max_mappings_per_client, seed)| ServerConfig {
                port_range,
                max_lifetime,
                max_mappings_per_client,
                seed,
            },
        )
}

const LO: u16 = 40000;

type Key = (Ipv4Addr, Protocol, u16);

#[derive(Clone, Copy, Debug)]
struct Entry {
    eport: u16,
    lifetime: u32,
    expiry: Timestamp,
}

/// A fake kernel: the set of forwards, refusing impossible changes as nftables would.
#[derive(Clone, Default)]
struct Kernel {
    elements: Vec<Forward>,
}

impl Kernel {
    fn apply(&mut self, changes: &[Change]) -> Result<(), TestCaseError> {
        for c in changes {
            match c {
                Change::Remove(f) => {
                    let i = self.elements.iter().position(|e| e.same_elements(f));
                    prop_assert!(
                        i.is_some(),
                        "Remove of an element the kernel does not hold: {:?}",
                        f
                    );
                    self.elements.remove(i.unwrap());
                }
                Change::Add(f) => {
                    prop_assert!(
                        !self.elements.iter().any(|e| e.protocol == f.protocol && e.external_port == f.external_port),
                        "Add clashes with an inbound key already held: {:?}", f
                    );
                    prop_assert!(
                        !self.elements.iter().any(|e| e.protocol == f.protocol
                            && e.internal_addr == f.internal_addr
                            && e.internal_port == f.internal_port),
                        "Add clashes with an outbound key already held: {:?}",
                        f
                    );
                    self.elements.push(*f);
                }
            }
        }
        Ok(())
    }

    fn keys(&self) -> Vec<(Protocol, Ipv4Addr, u16, Ipv4Addr, u16)> {
        let mut v: Vec<_> = self
            .elements
            .iter()
            .map(|f| {
                (
                    f.protocol,
                    f.external_addr,
                    f.external_port,
                    f.internal_addr,
                    f.internal_port,
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn forward_keys(fwds: &[Forward]) -> Vec<(Protocol, Ipv4Addr, u16, Ipv4Addr, u16)> {
    let mut v: Vec<_> = fwds
        .iter()
        .map(|f| {
            (
                f.protocol,
                f.external_addr,
                f.external_port,
                f.internal_addr,
                f.internal_port,
            )
        })
        .collect();
    v.sort();
    v
}

/// Invariants that hold whatever happened.
fn check_invariants(
    config: &ServerConfig,
    views: &[MappingView],
    fwds: &[Forward],
    addr: Option<Ipv4Addr>,
) -> Result<(), TestCaseError> {
    // Sorted by client, protocol, internal port, and unique on that key.
    for w in views.windows(2) {
        prop_assert!(
            (w[0].client, w[0].protocol, w[0].internal_port)
                < (w[1].client, w[1].protocol, w[1].internal_port),
            "mappings not sorted / duplicated: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let mut per_client: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
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
        prop_assert_eq!(
            &m.description,
            &format!("NAT-PMP {} {}", m.protocol, m.internal_port)
        );
        *per_client.entry(m.client).or_default() += 1;
        for n in &views[i + 1..] {
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
    if let Some(addr) = addr {
        for m in views {
            prop_assert_eq!(m.external_addr, Some(addr));
        }
        let mut from_views: Vec<_> = views
            .iter()
            .map(|m| (m.protocol, addr, m.external_port, m.client, m.internal_port))
            .collect();
        from_views.sort();
        prop_assert_eq!(
            forward_keys(fwds),
            from_views,
            "forwards() disagrees with mappings()"
        );
    }
    Ok(())
}

/// Is `port` free for `client` to take for `protocol`, per the model?
fn free_for(
    config: &ServerConfig,
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
    config: ServerConfig,
    server: Server,
    now: Timestamp,
    epoch_start: Timestamp,
    addr: Option<Ipv4Addr>,
    table: BTreeMap<Key, Entry>,
    kernel: Kernel,
    /// The last batch from `handle`, and the kernel before it (to undo a refused batch).
    last_batch: Option<(Vec<Change>, Kernel)>,
    train_start: Option<Timestamp>,
    copies_sent: usize,
}

impl Model {
    fn new(config: ServerConfig, start: Timestamp) -> Result<Model, TestCaseError> {
        let mut server = Server::new(config.clone(), start);
        let mut changes = Vec::new();
        server.set_external_address(start, Some(EXT), &mut changes);
        prop_assert!(changes.is_empty());
        Ok(Model {
            config,
            server,
            now: start,
            epoch_start: start,
            addr: Some(EXT),
            table: BTreeMap::new(),
            kernel: Kernel::default(),
            last_batch: None,
            train_start: Some(start),
            copies_sent: 0,
        })
    }

    fn restart_train(&mut self) {
        self.train_start = self.addr.map(|_| self.now);
        self.copies_sent = 0;
    }

    fn expire(&mut self) -> Result<(), TestCaseError> {
        let mut changes = Vec::new();
        self.server.handle_timeout(self.now, &mut changes);
        let due: Vec<Key> = self
            .table
            .iter()
            .filter(|(_, e)| e.expiry <= self.now)
            .map(|(k, _)| *k)
            .collect();
        let staged = if self.addr.is_some() { due.len() } else { 0 };
        prop_assert_eq!(
            changes.len(),
            staged,
            "expiry at {:?}: {:?}",
            self.now,
            changes
        );
        for k in &due {
            let e = self.table.remove(k).unwrap();
            prop_assert!(
                self.addr.is_none() ||
                changes.iter().any(|c| matches!(c, Change::Remove(f)
                    if (f.internal_addr, f.protocol, f.internal_port) == *k && f.external_port == e.eport)),
                "no Remove for expired {:?}", k
            );
        }
        self.kernel.apply(&changes)
    }

    fn request(&mut self, client: Ipv4Addr, req: &[u8]) -> Result<(), TestCaseError> {
        let mut reply = vec![0xEE; 3];
        let mut changes = Vec::new();
        let out = self
            .server
            .handle(self.now, client, req, &mut reply, &mut changes);
        check_reply_shape(req, out, &reply)?;
        let kernel_before = self.kernel.clone();
        if out == Outcome::Reply {
            prop_assert_eq!(
                u32::from_be_bytes(reply[4..8].try_into().unwrap()),
                sssoe(self.now, self.epoch_start),
                "SSSoE in {}",
                hex(&reply)
            );
        }
        let is_map = out == Outcome::Reply && req[0] == 0 && (req[1] == 1 || req[1] == 2);
        if !is_map {
            prop_assert!(changes.is_empty(), "{} staged {:?}", hex(req), changes);
            if out == Outcome::Reply && req[0] == 0 && req[1] == 0 {
                let s = sssoe(self.now, self.epoch_start);
                let want = match self.addr {
                    Some(addr) => addr_reply(SUCCESS, s, addr),
                    None => addr_reply(NETWORK_FAILURE, s, Ipv4Addr::UNSPECIFIED),
                };
                prop_assert_eq!(&reply[..], &want[..]);
            }
            self.last_batch = None;
            return Ok(());
        }
        let op = req[1];
        let protocol = proto(op);
        let iport = u16::from_be_bytes([req[4], req[5]]);
        let suggested = u16::from_be_bytes([req[6], req[7]]);
        let asked = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
        let r = parse_map_reply(&reply);
        let s = sssoe(self.now, self.epoch_start);
        if asked == 0 {
            // Delete or delete-all.
            prop_assert_eq!(&reply[..], &map_reply(op, SUCCESS, s, iport, 0, 0)[..]);
            let gone: Vec<Key> = self
                .table
                .keys()
                .filter(|&&(c, p, i)| c == client && p == protocol && (iport == 0 || i == iport))
                .copied()
                .collect();
            let staged = if self.addr.is_some() { gone.len() } else { 0 };
            prop_assert_eq!(changes.len(), staged, "delete staged {:?}", changes);
            prop_assert!(adds(&changes).is_empty());
            for k in gone {
                self.table.remove(&k);
            }
        } else if iport == 0 {
            // With no address, result 2 or 3 are both in the rules; 2 otherwise.
            let refused = map_reply(op, REFUSED, s, 0, 0, 0);
            let failed = map_reply(op, NETWORK_FAILURE, s, 0, 0, 0);
            prop_assert!(
                reply == refused || (self.addr.is_none() && reply == failed),
                "{}",
                hex(&reply)
            );
            prop_assert!(changes.is_empty());
        } else if self.addr.is_none() {
            // Create or renew with no address: result 3, nothing refreshed.
            prop_assert_eq!(
                &reply[..],
                &map_reply(op, NETWORK_FAILURE, s, iport, 0, 0)[..]
            );
            prop_assert!(changes.is_empty());
        } else {
            let Some(addr) = self.addr else {
                unreachable!("the no-address case is handled above")
            };
            let key = (client, protocol, iport);
            let granted = asked.min(self.config.max_lifetime);
            if let Some(old) = self.table.get(&key).copied() {
                prop_assert_eq!(
                    &reply[..],
                    &map_reply(op, SUCCESS, s, iport, old.eport, granted)[..],
                    "renewal"
                );
                prop_assert_eq!(changes.len(), 2, "renewal staged {:?}", changes);
                prop_assert!(
                    matches!(changes[0], Change::Remove(f) if f.same_elements(&forward(op, addr, old.eport, client, iport, old.lifetime)))
                );
                prop_assert_eq!(
                    changes[1],
                    Change::Add(forward(op, addr, old.eport, client, iport, granted))
                );
                self.table.insert(
                    key,
                    Entry {
                        eport: old.eport,
                        lifetime: granted,
                        expiry: self.now + secs(u64::from(granted)),
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
                prop_assert_eq!(
                    &changes,
                    &vec![Change::Add(forward(
                        op, addr, r.eport, client, iport, granted
                    ))]
                );
                self.table.insert(
                    key,
                    Entry {
                        eport: r.eport,
                        lifetime: granted,
                        expiry: self.now + secs(u64::from(granted)),
                    },
                );
            } else {
                prop_assert_eq!(
                    &reply[..],
                    &map_reply(op, OUT_OF_RESOURCES, s, iport, 0, 0)[..]
                );
                prop_assert!(changes.is_empty());
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
        }
        self.kernel.apply(&changes)?;
        self.last_batch = Some((changes, kernel_before));
        Ok(())
    }

    fn revert_last(&mut self) -> Result<(), TestCaseError> {
        let Some((batch, kernel_before)) = self.last_batch.take() else {
            return Ok(());
        };
        self.server.revert(&batch);
        for f in adds(&batch) {
            self.table
                .remove(&(f.internal_addr, f.protocol, f.internal_port));
        }
        // The kernel refused the whole batch; the daemon then reconciles it with forwards().
        self.kernel = kernel_before;
        let want = self.server.forwards(self.now);
        self.kernel
            .elements
            .retain(|e| want.iter().any(|w| w.same_elements(e)));
        Ok(())
    }

    fn set_addr(&mut self, addr: Option<Ipv4Addr>) -> Result<(), TestCaseError> {
        let mut changes = Vec::new();
        self.server
            .set_external_address(self.now, addr, &mut changes);
        if addr == self.addr {
            prop_assert!(changes.is_empty(), "same address staged {:?}", changes);
        } else {
            let n = self.table.len();
            let want_removes = if self.addr.is_some() { n } else { 0 };
            let want_adds = if addr.is_some() { n } else { 0 };
            prop_assert_eq!(
                removes(&changes).len(),
                want_removes,
                "address change staged {:?}",
                changes
            );
            prop_assert_eq!(
                adds(&changes).len(),
                want_adds,
                "address change staged {:?}",
                changes
            );
            for f in adds(&changes) {
                prop_assert_eq!(Some(f.external_addr), addr);
            }
            self.addr = addr;
            self.epoch_start = self.now;
            self.restart_train();
        }
        self.last_batch = None;
        self.kernel.apply(&changes)
    }

    fn reset(&mut self) -> Result<(), TestCaseError> {
        let mut changes = Vec::new();
        self.server.reset(self.now, &mut changes);
        let staged = if self.addr.is_some() {
            self.table.len()
        } else {
            0
        };
        prop_assert_eq!(changes.len(), staged);
        prop_assert!(adds(&changes).is_empty());
        self.table.clear();
        self.epoch_start = self.now;
        self.restart_train();
        self.last_batch = None;
        self.kernel.apply(&changes)
    }

    fn announce(&mut self) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        if self.server.poll_announcement(self.now, &mut out) {
            let start = self.train_start;
            prop_assert!(self.addr.is_some(), "announcement with no external address");
            prop_assert!(start.is_some(), "announcement with no train");
            let due = ANNOUNCE_OFFSETS_MS
                .iter()
                .filter(|&&o| start.unwrap() + ms(o) <= self.now)
                .count();
            self.copies_sent += 1;
            prop_assert!(
                self.copies_sent <= due,
                "copy {} sent early",
                self.copies_sent
            );
            let addr = self.addr.unwrap();
            prop_assert_eq!(
                &out[..],
                &addr_reply(SUCCESS, sssoe(self.now, self.epoch_start), addr)[..]
            );
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let views = self.server.mappings(self.now);
        let fwds = self.server.forwards(self.now);
        check_invariants(&self.config, &views, &fwds, self.addr)?;
        if self.addr.is_none() {
            prop_assert!(
                fwds.is_empty(),
                "forwards while there is no address: {:?}",
                fwds
            );
            prop_assert!(views.iter().all(|m| m.external_addr.is_none()));
        }
        // The model's table.
        let got: Vec<(Key, u16, u32)> = views
            .iter()
            .map(|m| {
                (
                    (m.client, m.protocol, m.internal_port),
                    m.external_port,
                    m.lifetime,
                )
            })
            .collect();
        let want: Vec<(Key, u16, u32)> = self
            .table
            .iter()
            .map(|(k, e)| (*k, e.eport, e.lifetime))
            .collect();
        prop_assert_eq!(got, want, "mappings() differ from the model");
        for m in &views {
            let e = self.table[&(m.client, m.protocol, m.internal_port)];
            let left_ms = e.expiry.since(self.now).as_millis() as u64;
            let floor = (left_ms / 1000) as u32;
            let ceil = left_ms.div_ceil(1000) as u32;
            prop_assert!(
                m.expires_in == floor || m.expires_in == ceil,
                "expires_in {} for {} ms left",
                m.expires_in,
                left_ms
            );
        }
        // poll_timeout never later than the next expiry.
        if let Some(next) = self.table.values().map(|e| e.expiry).min() {
            let pt = self.server.poll_timeout();
            prop_assert!(
                pt.is_some_and(|p| p <= next),
                "poll_timeout {:?} after expiry {:?}",
                pt,
                next
            );
        }
        // The fake kernel holds exactly what the engine says it should.
        prop_assert_eq!(
            self.kernel.keys(),
            forward_keys(&fwds),
            "kernel drifted from forwards()"
        );
        Ok(())
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
            Step::Advance(d) => {
                self.now = self.now + ms(*d);
                self.last_batch = None;
                self.expire()?;
            }
            Step::SetAddr(a) => self.set_addr(a.map(|i| ADDRS[i]))?,
            Step::Reset => self.reset()?,
            Step::Announce => self.announce()?,
            Step::RevertLast => self.revert_last()?,
        }
        self.check()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_random_sequences_keep_table_kernel_and_replies_consistent(
        config in config_strategy(LO),
        start in 0u64..1_000_000_000,
        steps in proptest::collection::vec(step(LO, false), 1..80),
    ) {
        let mut m = Model::new(config, Timestamp::from_millis(start))?;
        for s in &steps {
            m.run(s)?;
        }
    }

    #[test]
    fn model_random_sequences_through_address_loss(
        config in config_strategy(LO),
        start in 0u64..1_000_000_000,
        steps in proptest::collection::vec(step(LO, true), 1..80),
    ) {
        let mut m = Model::new(config, Timestamp::from_millis(start))?;
        for s in &steps {
            m.run(s)?;
        }
    }

    #[test]
    fn invariants_hold_through_address_loss_and_arbitrary_input(
        config in prop_oneof![config_strategy(LO), Just(ServerConfig::default())],
        steps in proptest::collection::vec(step(LO, true), 1..80),
    ) {
        let mut server = Server::new(config.clone(), T0);
        let mut now = T0;
        let mut addr = None;
        let mut changes = Vec::new();
        let mut last: Vec<Change> = Vec::new();
        let mut reply = Vec::new();
        for s in &steps {
            changes.clear();
            match s {
                Step::Map { client, op, iport, eport, lifetime, reserved, extra } => {
                    let mut req = map_request(*op, *iport, *eport, *lifetime).to_vec();
                    req[2..4].copy_from_slice(&reserved.to_be_bytes());
                    req.extend(std::iter::repeat_n(0x5A, *extra as usize));
                    let out = server.handle(now, CLIENTS[*client], &req, &mut reply, &mut changes);
                    check_reply_shape(&req, out, &reply)?;
                    let r = parse_map_reply(&reply);
                    if addr.is_none() && *lifetime != 0 && *iport != 0 {
                        prop_assert_eq!(r.result, NETWORK_FAILURE);
                        prop_assert!(changes.is_empty());
                    }
                    if r.result == SUCCESS && *lifetime != 0 {
                        prop_assert!(r.lifetime <= *lifetime && r.lifetime <= config.max_lifetime);
                        prop_assert!(r.eport != 0);
                    }
                    if r.result != SUCCESS {
                        prop_assert_eq!((r.eport, r.lifetime), (0, 0));
                    }
                    last = changes.clone();
                }
                Step::Raw { client, bytes } => {
                    let out = server.handle(now, CLIENTS[*client], bytes, &mut reply, &mut changes);
                    check_reply_shape(bytes, out, &reply)?;
                    last = changes.clone();
                }
                Step::Advance(d) => {
                    now = now + ms(*d);
                    server.handle_timeout(now, &mut changes);
                }
                Step::SetAddr(a) => {
                    addr = a.map(|i| ADDRS[i]);
                    server.set_external_address(now, addr, &mut changes);
                }
                Step::Reset => {
                    server.reset(now, &mut changes);
                    prop_assert!(server.mappings(now).is_empty());
                }
                Step::Announce => {
                    let mut out = Vec::new();
                    if server.poll_announcement(now, &mut out) {
                        prop_assert!(addr.is_some(), "announced with no external address");
                        prop_assert_eq!(&out[..], &addr_reply(SUCCESS, server.epoch_seconds(now), addr.unwrap())[..]);
                    }
                }
                Step::RevertLast => server.revert(&last),
            }
            let views = server.mappings(now);
            let fwds = server.forwards(now);
            check_invariants(&config, &views, &fwds, addr)?;
            let _ = server.poll_timeout();
        }
    }
}

#[test]
fn time_earlier_than_the_epoch_start_does_not_panic() {
    // The daemon's clock is monotonic, but the engine must not panic if handed an earlier `now`.
    let start = Timestamp::from_secs(100);
    let mut server = Server::new(ServerConfig::default(), start);
    let mut changes = Vec::new();
    server.set_external_address(start, Some(EXT), &mut changes);
    let earlier = Timestamp::from_secs(50);
    let mut reply = Vec::new();
    for req in [
        &addr_request()[..],
        &map_request(TCP, 1, 0, 60)[..],
        &map_request(TCP, 1, 0, 0)[..],
        &[1, 0][..],
    ] {
        let out = server.handle(earlier, A, req, &mut reply, &mut changes);
        check_reply_shape(req, out, &reply).unwrap();
        assert_eq!(
            u32::from_be_bytes(reply[4..8].try_into().unwrap()),
            0,
            "SSSoE before the epoch start"
        );
    }
    server.handle_timeout(Timestamp::ZERO, &mut changes);
    let mut out = Vec::new();
    server.poll_announcement(Timestamp::ZERO, &mut out);
    let _ = server.mappings(Timestamp::ZERO);
    let _ = server.forwards(Timestamp::ZERO);
}

#[test]
fn far_future_time_does_not_panic() {
    let mut server = Server::new(
        ServerConfig {
            max_lifetime: u32::MAX,
            ..ServerConfig::default()
        },
        T0,
    );
    let mut changes = Vec::new();
    server.set_external_address(T0, Some(EXT), &mut changes);
    let mut reply = Vec::new();
    server.handle(
        T0,
        A,
        &map_request(UDP, 1, 0, u32::MAX),
        &mut reply,
        &mut changes,
    );
    assert_eq!(parse_map_reply(&reply).result, SUCCESS);
    let far = Timestamp::from_millis(u64::MAX - 1);
    // SSSoE saturates rather than wrapping to a small number (which would look like a reboot).
    assert_eq!(server.epoch_seconds(far), u32::MAX);
    server.handle(far, A, &addr_request(), &mut reply, &mut changes);
    assert_bytes(&reply, &addr_reply(SUCCESS, u32::MAX, EXT));
    server.handle(
        far,
        A,
        &map_request(UDP, 2, 0, u32::MAX),
        &mut reply,
        &mut changes,
    );
    server.handle_timeout(far, &mut changes);
    assert!(
        server.mappings(far).is_empty()
            || server.mappings(far).iter().all(|m| m.internal_port == 2)
    );
    let _ = server.poll_timeout();
}
