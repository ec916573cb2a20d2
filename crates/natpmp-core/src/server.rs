//! The NAT-PMP protocol engine: `handle(now, client, datagram)` -> reply bytes + staged kernel
//! changes. Deterministic: time is an argument, randomness comes from `ServerConfig::seed`.

use crate::forward::{Change, Forward};
use crate::time::Timestamp;
use crate::view::MappingView;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// Policy knobs of the engine. The daemon fills these from the configuration file.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// External ports the engine hands out (rfc-checklist §6 A9: "high-numbered" means this
    /// range). Suggested ports outside it are replaced by one inside it.
    pub port_range: RangeInclusive<u16>,
    /// The longest lifetime granted, in seconds (§6 A10). Never more than the client asked.
    pub max_lifetime: u32,
    /// How many mappings one client address may hold; more gives result 4.
    pub max_mappings_per_client: usize,
    /// Where the port allocator starts searching, so external ports are not predictable.
    pub seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port_range: 1024..=65535,
            max_lifetime: 86400,
            max_mappings_per_client: 256,
            seed: 0,
        }
    }
}

/// What the caller does with a datagram after `Server::handle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send nothing (rfc-checklist §1.2: too short, or a response arriving as a request).
    Drop,
    /// Send the bytes written into the reply buffer back to the client.
    Reply,
}

pub struct Server {
    _private: (),
}

impl Server {
    /// A fresh engine whose epoch starts at `now`, with no external address yet.
    pub fn new(config: ServerConfig, now: Timestamp) -> Server {
        let _ = (config, now);
        todo!()
    }

    pub fn external_address(&self) -> Option<Ipv4Addr> {
        todo!()
    }

    /// The external address changed (or appeared, or vanished). Resets the epoch, starts the
    /// 10-copy announcement train when there is an address, and stages changes that move every
    /// forward onto the new address.
    pub fn set_external_address(
        &mut self,
        now: Timestamp,
        addr: Option<Ipv4Addr>,
        changes: &mut Vec<Change>,
    ) {
        let _ = (now, addr, changes);
        todo!()
    }

    /// Answer one datagram from `client` (the request's source address; the daemon has already
    /// checked it arrived on an internal interface, addressed to the gateway). The reply is
    /// written into `reply` (cleared first); kernel changes are appended to `changes`.
    pub fn handle(
        &mut self,
        now: Timestamp,
        client: Ipv4Addr,
        request: &[u8],
        reply: &mut Vec<u8>,
        changes: &mut Vec<Change>,
    ) -> Outcome {
        let _ = (now, client, request, reply, changes);
        todo!()
    }

    /// The kernel refused `failed` (a batch of changes staged by `handle`): forget every
    /// mapping whose `Add` is in it, so the table never claims a forward the kernel lacks.
    pub fn revert(&mut self, failed: &[Change]) {
        let _ = failed;
        todo!()
    }

    /// When `handle_timeout` or `poll_announcement` next has work: the earliest mapping expiry
    /// or announcement copy.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        todo!()
    }

    /// Expire every mapping whose lifetime has ended by `now`, staging their removal.
    pub fn handle_timeout(&mut self, now: Timestamp, changes: &mut Vec<Change>) {
        let _ = (now, changes);
        todo!()
    }

    /// If an announcement copy is due at `now`, write it (12 bytes, current SSSoE) into `out`
    /// and return true. The caller sends it to 224.0.0.1:5350 on every internal interface.
    pub fn poll_announcement(&mut self, now: Timestamp, out: &mut Vec<u8>) -> bool {
        let _ = (now, out);
        todo!()
    }

    /// Seconds since the start of the epoch (SSSoE) at `now`.
    pub fn epoch_seconds(&self, now: Timestamp) -> u32 {
        let _ = now;
        todo!()
    }

    /// Every live mapping, ordered by client, protocol, internal port.
    pub fn mappings(&self, now: Timestamp) -> Vec<MappingView> {
        let _ = now;
        todo!()
    }

    /// The forwards the kernel should hold now (for reconciliation).
    pub fn forwards(&self, now: Timestamp) -> Vec<Forward> {
        let _ = now;
        todo!()
    }

    /// Forget every mapping (staging their removal), reset the epoch and restart the
    /// announcement train (RFC 6886 §3.7).
    pub fn reset(&mut self, now: Timestamp, changes: &mut Vec<Change>) {
        let _ = (now, changes);
        todo!()
    }
}
