//! The structure-aware gateway target: a `Gateway<FakeForwarder>` with virtual time, fed a
//! sequence of steps decoded from the input (datagrams from LAN clients, time passing, timer
//! ticks, reloads of quota, lifetime cap, PCP switch and port range, external address
//! changes, the router's own sockets), with these invariants checked after every step:
//!
//! - nothing panics (the code under test);
//! - the fake kernel holds exactly the engine's projection, element for element;
//! - no client holds more mappings than its quota, except those it held before a reload
//!   lowered the quota (existing mappings are kept until they expire, `Engine::set_config`),
//!   and a client over its quota never gains one;
//! - no mapping is granted a lifetime above the cap in force when it is granted (a refresh that
//!   does not move its expiry later grants nothing), and no kernel
//!   timeout exceeds the largest cap ever configured plus the kernel grace;
//! - everything sent is a response (R bit set, so no reflection loops) of a known version and
//!   at most 1100 bytes;
//! - the mapping counts the table keeps (the metrics' gauges) are those of its mappings;
//! - a lease snapshot, taken two endpoints per step so that it spans several steps as a large
//!   table's does, holds each endpoint once, and restoring it invents nothing.

use super::input::Input;
use super::requests;
use crate::engine::project::KERNEL_TIMEOUT_GRACE;
use crate::engine::records::{MappingRecord, RecordKind};
use crate::gateway::interfaces::{ExternalInterface, IfAddr, Interface, Interfaces};
use crate::gateway::router_ports::LocalSocket;
use crate::gateway::LeaseSnapshot;
use crate::view::MappingCounts;
use crate::{
    Datagram, Engine, EngineConfig, FakeForwarder, Gateway, GatewayConfig, Outgoing, Protocol,
    Timestamp,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Steps per input at most: enough for long histories, short enough to stay fast.
const MAX_STEPS: usize = 64;

const WAN_IF: &str = "ether1";
const LAN_IF: &str = "ether2";
const LAN_INDEX: u32 = 2;
const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);
const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const GW_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const EXTERNAL: [Option<Ipv4Addr>; 3] = [
    Some(Ipv4Addr::new(203, 0, 113, 5)),
    Some(Ipv4Addr::new(198, 51, 100, 7)),
    None,
];

/// LAN clients (IPv4 and IPv6, one link-local) and one host off every internal subnet, whose
/// datagrams must be dropped.
const CLIENTS: [IpAddr; 7] = [
    IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 88, 20)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 88, 30)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20)),
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
];
const SOURCE_PORTS: [u16; 4] = [49152, 49153, 5350, 5351];

const QUOTAS: [u16; 5] = [0, 1, 2, 4, 256];
const CAPS: [u32; 6] = [1, 60, 120, 3600, 86400, u32::MAX];
const PCP_MINIMUMS: [u32; 4] = [0, 1, 120, 3600];
/// Port ranges: the default, a small one (exhaustion), one around the NAT-PMP ports.
const PORT_RANGES: [RangeInclusive<u16>; 3] = [1024..=65535, 5000..=5007, 5349..=5352];
/// Time steps in milliseconds; the last choice reads any 32-bit value.
const ADVANCES_MS: [u32; 8] = [0, 1, 250, 1000, 2000, 60_000, 3_600_000, 86_400_000];

/// Run one input. Panics when an invariant breaks.
pub fn gateway(data: &[u8]) {
    let mut input = Input::new(data);
    let mut h = Harness::new(&mut input);
    h.check(&[]);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let out = h.step(&mut input);
        h.check(&out);
    }
}

fn engine_config(input: &mut Input<'_>) -> EngineConfig {
    let max_lifetime = CAPS[input.below(CAPS.len())];
    EngineConfig {
        port_range: PORT_RANGES[input.below(PORT_RANGES.len())].clone(),
        max_lifetime,
        pcp_min_lifetime: PCP_MINIMUMS[input.below(PCP_MINIMUMS.len())].min(max_lifetime),
        max_mappings_per_client: usize::from(QUOTAS[input.below(QUOTAS.len())]),
        seed: u64::from(input.u8()),
        ..EngineConfig::default()
    }
}

fn interfaces(external: Option<Ipv4Addr>) -> Interfaces {
    let mut m = Interfaces::new();
    m.insert(
        WAN_IF.to_owned(),
        Interface {
            name: WAN_IF.to_owned(),
            index: 1,
            up: true,
            addrs: external.map(|a| IfAddr::v4(a, 24)).into_iter().collect(),
        },
    );
    m.insert(
        LAN_IF.to_owned(),
        Interface {
            name: LAN_IF.to_owned(),
            index: LAN_INDEX,
            up: true,
            addrs: vec![
                IfAddr::v4(GW_LAN, 24),
                IfAddr::v6(GW_LAN6, 64),
                IfAddr::v6(GW_LINK_LOCAL, 64),
            ],
        },
    );
    m
}

struct Harness {
    gateway: Gateway<FakeForwarder>,
    kernel: FakeForwarder,
    now: Timestamp,
    /// Each mapping's lifetime and absolute expiry after the last step.
    grants: BTreeMap<MappingKey, (u32, u64)>,
    /// Mappings per client after the last step.
    counts: BTreeMap<IpAddr, usize>,
    /// The largest lifetime cap configured so far.
    largest_cap: u32,
    /// Lease writes alternate between success and failure, to exercise the retry timer.
    lease_fails: bool,
}

type MappingKey = (IpAddr, Protocol, u16, Option<SocketAddr>);

fn key_of(r: &MappingRecord) -> MappingKey {
    let remote = match &r.kind {
        RecordKind::Map { .. } => None,
        RecordKind::Peer { remote, .. } => Some(*remote),
    };
    (r.client, r.protocol, r.internal_port, remote)
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Harness {
        let now = Timestamp::from_secs(1_000);
        let config = GatewayConfig {
            enabled: true,
            engine: engine_config(input),
            pcp: input.u8() < 224,
            external: Some(ExternalInterface {
                name: WAN_IF.to_owned(),
                forced_ip: None,
            }),
            internal: vec![LAN_IF.to_owned()],
            drift_check: false,
            ..GatewayConfig::default()
        };
        let largest_cap = config.engine.max_lifetime;
        let kernel = FakeForwarder::new();
        let mut gateway = Gateway::new(config, kernel.clone(), now);
        gateway.set_lease_slice(2);
        gateway.set_interfaces(now, interfaces(EXTERNAL[0]));
        gateway
            .start(now, None)
            .expect("the fake kernel takes an empty table");
        Harness {
            gateway,
            kernel,
            now,
            grants: BTreeMap::new(),
            counts: BTreeMap::new(),
            largest_cap,
            lease_fails: false,
        }
    }

    /// Decode and run one step; returns what the gateway sent.
    fn step(&mut self, input: &mut Input<'_>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        match input.below(10) {
            0..=4 => {
                let n = 1 + input.below(3);
                let mut batch: Vec<(SocketAddr, IpAddr, Vec<u8>)> = Vec::with_capacity(n);
                for _ in 0..n {
                    let client = CLIENTS[input.below(CLIENTS.len())];
                    let port = SOURCE_PORTS[input.below(SOURCE_PORTS.len())];
                    let destination = match client {
                        IpAddr::V4(_) => IpAddr::V4(GW_LAN),
                        IpAddr::V6(a) if a.segments()[0] == 0xfe80 => IpAddr::V6(GW_LINK_LOCAL),
                        IpAddr::V6(_) => IpAddr::V6(GW_LAN6),
                    };
                    let payload = requests::request(input, client);
                    batch.push((SocketAddr::new(client, port), destination, payload));
                }
                let datagrams = batch.iter().map(|(source, destination, payload)| Datagram {
                    source: *source,
                    destination: *destination,
                    ifindex: LAN_INDEX,
                    payload,
                });
                self.gateway.handle_datagrams(self.now, datagrams, &mut out);
            }
            5 => {
                let ms = input.pick_u32(&ADVANCES_MS);
                self.now = Timestamp::from_millis(self.now.as_millis() + u64::from(ms));
            }
            6 => {
                // A timer tick: jump to the next deadline (at most two days ahead) and run it.
                if let Some(due) = self.gateway.poll_timeout() {
                    let limit = self.now.as_millis() + 2 * 86_400_000;
                    if due > self.now && due.as_millis() <= limit {
                        self.now = due;
                    }
                }
                self.gateway.handle_timeout(self.now, &mut out);
            }
            7 => {
                let mut config = self.gateway.config().clone();
                config.engine = engine_config(input);
                config.pcp = input.u8() < 224;
                self.largest_cap = self.largest_cap.max(config.engine.max_lifetime);
                self.gateway
                    .reconfigure(self.now, config)
                    .expect("the fake kernel takes every reload");
            }
            8 => {
                let external = EXTERNAL[input.below(EXTERNAL.len())];
                self.gateway.set_interfaces(self.now, interfaces(external));
            }
            _ => {
                let sockets = (0..input.below(3))
                    .map(|_| LocalSocket {
                        protocol: if input.bool() {
                            Protocol::Tcp
                        } else {
                            Protocol::Udp
                        },
                        addr: if input.bool() {
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                        } else {
                            IpAddr::V4(EXTERNAL[0].unwrap_or(Ipv4Addr::UNSPECIFIED))
                        },
                        port: input.pick_u16(&[5000, 5001, 8080, 1024, 65535]),
                    })
                    .collect();
                self.gateway.set_local_sockets(self.now, sockets);
            }
        }
        self.gateway.clear_flows();
        if let Some(snapshot) = self.gateway.take_lease_snapshot(self.now) {
            check_lease_snapshot(&snapshot, self.gateway.engine().config());
            let result = if self.lease_fails {
                Err("disk full".to_owned())
            } else {
                Ok(())
            };
            self.lease_fails = !self.lease_fails;
            self.gateway.lease_saved(self.now, result);
        }
        out
    }

    fn check(&mut self, out: &[Outgoing]) {
        for o in out {
            let p = &o.payload;
            assert!(
                !p.is_empty() && p.len() <= 1100,
                "sent {} bytes: {o:?}",
                p.len()
            );
            assert!(
                p.len() >= 2 && p[1] & 0x80 != 0,
                "sent a datagram without the response bit: {o:?}"
            );
            assert!(matches!(p[0], 0 | 2), "sent version {}: {o:?}", p[0]);
        }

        // The kernel is exactly the engine's projection.
        let mut projected: Vec<_> = self
            .gateway
            .engine()
            .projection()
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        projected.sort();
        assert_eq!(
            self.kernel.element_set(),
            projected,
            "the kernel is not the engine's projection"
        );
        let longest = Duration::from_secs(u64::from(self.largest_cap)) + KERNEL_TIMEOUT_GRACE;
        for (e, timeout) in self.kernel.elements() {
            assert!(timeout <= longest, "{e} has kernel timeout {timeout:?}");
        }

        // The counts the table keeps for the metrics are those of its mappings.
        let mut recount = MappingCounts::default();
        for m in self.gateway.mappings(self.now) {
            recount.add(m.protocol, m.client.is_ipv6(), m.via, 1);
        }
        assert_eq!(
            self.gateway.mapping_counts(),
            recount,
            "the mapping counts the table keeps are not those of its mappings"
        );

        let engine = self.gateway.engine().config().clone();
        let records = self.gateway.engine().records(self.now);
        let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
        let mut grants = BTreeMap::new();
        for r in &records {
            *counts.entry(r.client).or_default() += 1;
            let key = key_of(r);
            let previous = self.grants.get(&key).copied();
            // An expired mapping not yet collected keeps its old expiry.
            let expiry = if r.expires_in_ms == 0 {
                previous.map_or(self.now.as_millis(), |(_, e)| e)
            } else {
                self.now.as_millis() + r.expires_in_ms
            };
            // Only an expiry moved later is a new grant. A PEER refresh never shortens: after a
            // reload lowered the cap it reports what is left of the earlier grant, which the
            // new cap does not take back (docs/protocol-choices.md, PEER). Found by this target:
            // fuzz/corpus/gateway/regression-peer-refresh-under-a-lowered-cap.
            let extended = previous.is_none_or(|(_, before)| expiry > before);
            if previous != Some((r.lifetime, expiry)) && extended {
                assert!(
                    r.lifetime <= engine.max_lifetime,
                    "granted {} s over the cap of {} s: {r:?}",
                    r.lifetime,
                    engine.max_lifetime
                );
                assert!(
                    u64::from(r.lifetime) * 1000 >= r.expires_in_ms,
                    "expires after its lifetime: {r:?}"
                );
            }
            grants.insert(key, (r.lifetime, expiry));
        }
        for (client, n) in &counts {
            let before = self.counts.get(client).copied().unwrap_or(0);
            assert!(
                *n <= engine.max_mappings_per_client.max(before),
                "{client} holds {n} mappings, quota {}, {before} before this step",
                engine.max_mappings_per_client
            );
        }
        self.grants = grants;
        self.counts = counts;
    }
}

/// A lease snapshot read a slice at a time visits each endpoint once, in order: a MAP at most
/// once per endpoint, a PEER remote once. Restored into a fresh engine, it brings back only
/// records it holds (clashes between slices taken at different moments are skipped).
fn check_lease_snapshot(snapshot: &LeaseSnapshot, config: &EngineConfig) {
    let mut seen = BTreeSet::new();
    let mut last_endpoint = None;
    for r in &snapshot.records {
        let endpoint = (r.client, r.protocol, r.internal_port);
        assert!(
            last_endpoint <= Some(endpoint),
            "lease records out of endpoint order: {snapshot:?}"
        );
        last_endpoint = Some(endpoint);
        assert!(
            seen.insert(key_of(r)),
            "the lease snapshot holds {r:?} twice: {snapshot:?}"
        );
    }
    let at = snapshot.taken_at;
    let mut engine = Engine::new(config.clone(), at);
    let mut changes = Vec::new();
    engine.set_external_address(at, snapshot.external_addr, &mut changes);
    engine.restore(at, snapshot.epoch_seconds, &snapshot.records, &mut changes);
    for r in engine.records(at) {
        assert!(
            snapshot.records.contains(&r),
            "restoring the leases made {r:?}, which they do not hold: {snapshot:?}"
        );
    }
}

/// The checks must be able to fail: each test breaks one invariant by hand and expects the
/// check to say so.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::Element;
    use std::net::SocketAddrV4;

    /// Cap 86400 s, default port range, PCP minimum 120 s, quota 256, seed 0, PCP on.
    const CONFIG: [u8; 6] = [4, 0, 2, 4, 0, 0];

    fn harness_with_mappings(n: u16) -> Harness {
        let mut h = Harness::new(&mut Input::new(&CONFIG));
        for i in 0..n {
            let mut request = vec![0, 2, 0, 0];
            request.extend_from_slice(&(8000 + i).to_be_bytes());
            request.extend_from_slice(&[0, 0]);
            request.extend_from_slice(&3600u32.to_be_bytes());
            let mut out = Vec::new();
            let datagram = Datagram {
                source: SocketAddr::new(CLIENTS[0], 49152),
                destination: IpAddr::V4(GW_LAN),
                ifindex: LAN_INDEX,
                payload: &request,
            };
            h.gateway.handle_datagrams(h.now, [datagram], &mut out);
            h.check(&out);
        }
        assert_eq!(h.gateway.engine().records(h.now).len(), usize::from(n));
        h
    }

    fn reload(h: &mut Harness, quota: usize, cap: u32) {
        let mut config = h.gateway.config().clone();
        config.engine.max_mappings_per_client = quota;
        config.engine.max_lifetime = cap;
        config.engine.pcp_min_lifetime = cap.min(120);
        h.gateway.reconfigure(h.now, config).unwrap();
    }

    #[test]
    fn a_reload_that_lowers_quota_and_cap_keeps_existing_mappings_within_the_invariants() {
        let mut h = harness_with_mappings(2);
        reload(&mut h, 1, 60);
        h.check(&[]);
    }

    fn snapshot_of(h: &Harness) -> LeaseSnapshot {
        LeaseSnapshot {
            external_addr: EXTERNAL[0],
            epoch_seconds: 0,
            records: h.gateway.engine().records(h.now),
            taken_at: h.now,
            clean: false,
        }
    }

    #[test]
    fn a_snapshot_of_the_table_passes_the_lease_check() {
        let h = harness_with_mappings(3);
        check_lease_snapshot(&snapshot_of(&h), h.gateway.engine().config());
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn an_endpoint_twice_in_a_lease_snapshot_is_caught() {
        let h = harness_with_mappings(1);
        let mut snapshot = snapshot_of(&h);
        snapshot.records.push(snapshot.records[0].clone());
        check_lease_snapshot(&snapshot, h.gateway.engine().config());
    }

    #[test]
    #[should_panic(expected = "out of endpoint order")]
    fn lease_records_out_of_order_are_caught() {
        let h = harness_with_mappings(2);
        let mut snapshot = snapshot_of(&h);
        snapshot.records.reverse();
        check_lease_snapshot(&snapshot, h.gateway.engine().config());
    }

    #[test]
    #[should_panic(expected = "the kernel is not the engine's projection")]
    fn a_kernel_element_the_engine_does_not_project_is_caught() {
        let mut h = harness_with_mappings(1);
        h.kernel.insert_by_hand(
            Element::Inbound {
                protocol: Protocol::Udp,
                external_port: 4444,
                internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 10), 4444),
            },
            Duration::from_secs(10),
        );
        h.check(&[]);
    }

    #[test]
    #[should_panic(expected = "holds 2 mappings, quota 1")]
    fn a_client_over_its_quota_is_caught() {
        let mut h = harness_with_mappings(2);
        reload(&mut h, 1, 86400);
        // As if both mappings had been granted in this step.
        h.counts.clear();
        h.check(&[]);
    }

    #[test]
    #[should_panic(expected = "over the cap of 60 s")]
    fn a_grant_over_the_cap_is_caught() {
        let mut h = harness_with_mappings(1);
        reload(&mut h, 256, 60);
        // As if the 3600 s mapping had been granted in this step, under the 60 s cap.
        h.grants.clear();
        h.check(&[]);
    }

    #[test]
    #[should_panic(expected = "without the response bit")]
    fn a_datagram_sent_without_the_response_bit_is_caught() {
        let mut h = harness_with_mappings(0);
        let request = Outgoing {
            payload: vec![0, 1, 0, 0, 0, 80, 0, 80, 0, 0, 14, 16],
            from: IpAddr::V4(GW_LAN),
            ifindex: LAN_INDEX,
            to: SocketAddr::new(CLIENTS[0], 5351),
        };
        h.check(&[request]);
    }
}
