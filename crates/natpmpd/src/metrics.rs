//! Prometheus metrics (`metrics-listen`): the gateway's counters and the daemon's own, in
//! a `prometheus-client` registry, served by `GET /metrics` from a thread of their own.
//!
//! The split is what keeps a scrape from ever delaying a request: the event loop only bumps
//! counters and sets gauges (atomics shared with the registry); the encoding and every byte
//! of HTTP happen on the metrics thread (`metrics/http.rs`), which the loop never waits for.
//!
//! The protocol facts (requests by protocol, opcode and result, drops, kernel transactions
//! and errors, drift repairs, announcements, removals by hand) are counted in core
//! (`GatewayStats`); [`Metrics::sync`] adds what they grew by since the last call. The
//! daemon adds the request latency, the lease saves and failures, and the gauges (mappings,
//! epoch, external address), which are refreshed at most every [`GAUGE_REFRESH`].

mod http;

use natpmp_pcp_core::gateway::{GatewayStats, RequestLabels};
use natpmp_pcp_core::view::Via;
use natpmp_pcp_core::{Forwarder, Gateway, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The gauges built from the mapping table are refreshed at most this often: building them
/// walks every mapping, which a batch of requests should not pay for each time.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MappingLabels {
    /// `tcp` or `udp`.
    protocol: String,
    /// `ipv4` (a port forward) or `ipv6` (a pinhole).
    family: &'static str,
    /// The protocol that made it: `nat-pmp` or `pcp`.
    owner: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabelSet {
    protocol: &'static str,
    opcode: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    address: String,
}

/// The metric handles the event loop writes to. Cheap to update: each is an atomic (or a
/// small locked map of them) shared with the registry on the metrics thread.
pub struct Metrics {
    mappings: Family<MappingLabels, Gauge>,
    requests: Family<RequestLabelSet, Counter>,
    dropped: Counter,
    rate_limited: Counter,
    latency: Histogram,
    kernel_transactions: Counter,
    kernel_errors: Counter,
    drift_repairs: Counter,
    announcements: Counter,
    removed_by_hand: Counter,
    lease_saves: Counter,
    lease_failures: Counter,
    epoch: Gauge,
    external_address: Family<AddressLabels, Gauge>,
    /// What the gateway's counters stood at when last synced.
    seen: Seen,
    gauges_refreshed: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    requests: BTreeMap<RequestLabels, u64>,
    dropped: u64,
    rate_limited: u64,
    kernel_transactions: u64,
    kernel_errors: u64,
    drift_repairs: u64,
    announcements: u64,
    removed_by_hand: u64,
}

/// Add to `counter` what `now` grew by since `seen`, and remember `now`.
fn advance(counter: &Counter, seen: &mut u64, now: u64) {
    if now > *seen {
        counter.inc_by(now - *seen);
    }
    *seen = now;
}

impl Metrics {
    /// The metric handles and the registry that encodes them.
    pub fn new() -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix("natpmpd");
        let m = Metrics {
            mappings: Family::default(),
            requests: Family::default(),
            dropped: Counter::default(),
            rate_limited: Counter::default(),
            // 50 µs to about 0.8 s: a batch answered from memory is well under a millisecond,
            // one that waits on netlink a few milliseconds.
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            kernel_transactions: Counter::default(),
            kernel_errors: Counter::default(),
            drift_repairs: Counter::default(),
            announcements: Counter::default(),
            removed_by_hand: Counter::default(),
            lease_saves: Counter::default(),
            lease_failures: Counter::default(),
            epoch: Gauge::default(),
            external_address: Family::default(),
            seen: Seen::default(),
            gauges_refreshed: None,
        };
        registry.register(
            "mappings",
            "Live mappings by protocol (tcp, udp), family (ipv4 forward, ipv6 pinhole) and owner (the protocol that made it)",
            m.mappings.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by protocol (nat-pmp, pcp), opcode and result code",
            m.requests.clone(),
        );
        registry.register(
            "requests_dropped",
            "Datagrams not answered: not from an internal interface's subnet, too short, or a response arriving as a request",
            m.dropped.clone(),
        );
        registry.register(
            "requests_rate_limited",
            "Datagrams dropped unanswered because their client address was over rate-limit (its burst used up)",
            m.rate_limited.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from reading a batch of datagrams to the last of its replies sent, per datagram",
            Unit::Seconds,
            m.latency.clone(),
        );
        registry.register(
            "kernel_transactions",
            "Transactions sent to the kernel (table loads and element batches)",
            m.kernel_transactions.clone(),
        );
        registry.register(
            "kernel_errors",
            "Kernel transactions refused or failed",
            m.kernel_errors.clone(),
        );
        registry.register(
            "drift_repairs",
            "Times the kernel table was found changed by someone else and put right",
            m.drift_repairs.clone(),
        );
        registry.register(
            "announcements",
            "Unsolicited datagrams sent: NAT-PMP address announcements, PCP ANNOUNCEs and Mapping Updates",
            m.announcements.clone(),
        );
        registry.register(
            "mappings_removed_by_hand",
            "Mappings removed with natpmpctl remove",
            m.removed_by_hand.clone(),
        );
        registry.register(
            "lease_saves",
            "Lease file writes that succeeded",
            m.lease_saves.clone(),
        );
        registry.register(
            "lease_failures",
            "Lease file writes that failed (retried later)",
            m.lease_failures.clone(),
        );
        registry.register_with_unit(
            "epoch",
            "Seconds since the start of the epoch (the SSSoE clients see)",
            Unit::Seconds,
            m.epoch.clone(),
        );
        registry.register(
            "external_address",
            "The external IPv4 address mappings are reachable on (value 1; absent while there is none)",
            m.external_address.clone(),
        );
        (m, registry)
    }

    /// Add what the gateway's counters grew by since the last call.
    pub fn sync(&mut self, stats: &GatewayStats) {
        for (labels, &n) in &stats.requests {
            let seen = self.seen.requests.entry(*labels).or_insert(0);
            if n > *seen {
                self.requests
                    .get_or_create(&RequestLabelSet {
                        protocol: labels.protocol,
                        opcode: labels.opcode,
                        result: labels.result,
                    })
                    .inc_by(n - *seen);
                *seen = n;
            }
        }
        let s = &mut self.seen;
        advance(&self.dropped, &mut s.dropped, stats.dropped);
        advance(
            &self.kernel_transactions,
            &mut s.kernel_transactions,
            stats.kernel_transactions,
        );
        advance(
            &self.kernel_errors,
            &mut s.kernel_errors,
            stats.kernel_errors,
        );
        advance(
            &self.drift_repairs,
            &mut s.drift_repairs,
            stats.drift_repairs,
        );
        advance(
            &self.announcements,
            &mut s.announcements,
            stats.announcements,
        );
        advance(
            &self.removed_by_hand,
            &mut s.removed_by_hand,
            stats.removed_by_hand,
        );
    }

    /// After a batch of requests, a timer round or a control request: the gateway's
    /// counters, the batch's latency (`read`: when its `count` datagrams were read), the
    /// gauges when due (`force`: now).
    pub fn update<F: Forwarder>(
        &mut self,
        gateway: &Gateway<F>,
        now: Timestamp,
        read: Option<(Instant, usize)>,
        force: bool,
    ) {
        if let Some((read_at, count)) = read {
            self.observe_batch(read_at, count);
        }
        self.sync(gateway.stats());
        advance(
            &self.rate_limited,
            &mut self.seen.rate_limited,
            gateway.rate_limited_datagrams(),
        );
        self.refresh_gauges(gateway, now, force);
    }

    /// `count` datagrams read at `read_at` whose replies are all sent now.
    pub fn observe_batch(&self, read_at: Instant, count: usize) {
        let seconds = read_at.elapsed().as_secs_f64();
        for _ in 0..count {
            self.latency.observe(seconds);
        }
    }

    /// A lease file write ended.
    pub fn lease_saved(&self, ok: bool) {
        if ok {
            self.lease_saves.inc();
        } else {
            self.lease_failures.inc();
        }
    }

    /// Refresh the gauges from the gateway, unless that was done less than `GAUGE_REFRESH`
    /// ago (`force` skips the wait: after a removal by hand, say).
    pub fn refresh_gauges<F: Forwarder>(
        &mut self,
        gateway: &Gateway<F>,
        now: Timestamp,
        force: bool,
    ) {
        if !force
            && self
                .gauges_refreshed
                .is_some_and(|t| t.elapsed() < GAUGE_REFRESH)
        {
            return;
        }
        self.gauges_refreshed = Some(Instant::now());
        // Every label set, zero ones too: a series that stops is read as "unknown", not as
        // "none". The counts are kept by the table; counting a view of every mapping took
        // ~65 ms of the loop at 100 000 mappings, once a second.
        for (protocol, ipv6, via, n) in gateway.mapping_counts().iter() {
            let labels = MappingLabels {
                protocol: protocol.to_string(),
                family: if ipv6 { "ipv6" } else { "ipv4" },
                owner: match via {
                    Via::NatPmp => "nat-pmp",
                    Via::Pcp => "pcp",
                },
            };
            self.mappings.get_or_create(&labels).set(n as i64);
        }
        self.epoch
            .set(i64::from(gateway.engine().epoch_seconds(now)));
        let address = gateway.engine().external_address().map(|a| a.to_string());
        let current = address
            .as_ref()
            .map(|a| AddressLabels { address: a.clone() });
        if current
            .as_ref()
            .is_none_or(|c| self.external_address.get(c).is_none())
        {
            self.external_address.clear();
            if let Some(c) = current {
                self.external_address.get_or_create(&c).set(1);
            }
        }
    }
}

/// Bind `addr` and serve the registry on it from a thread of its own. Binding happens here,
/// so a taken port fails the start with a clear message.
pub fn start(addr: SocketAddr, registry: Registry) -> std::io::Result<SocketAddr> {
    http::start(addr, registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn synced_counters_grow_by_the_gateway_deltas_only() {
        let (mut m, registry) = Metrics::new();
        let mut stats = GatewayStats::default();
        let labels = RequestLabels {
            protocol: "nat-pmp",
            opcode: "map-tcp",
            result: "success",
        };
        stats.requests.insert(labels, 3);
        stats.kernel_transactions = 4;
        m.sync(&stats);
        // A second sync of the same numbers adds nothing.
        m.sync(&stats);
        stats.requests.insert(labels, 5);
        stats.drift_repairs = 1;
        m.sync(&stats);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "natpmpd_requests_total{protocol=\"nat-pmp\",opcode=\"map-tcp\",result=\"success\"} 5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("natpmpd_kernel_transactions_total 4\n"),
            "{text}"
        );
        assert!(text.contains("natpmpd_drift_repairs_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn lease_outcomes_and_latency_are_counted() {
        let (m, registry) = Metrics::new();
        m.lease_saved(true);
        m.lease_saved(true);
        m.lease_saved(false);
        m.observe_batch(Instant::now(), 3);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("natpmpd_lease_saves_total 2\n"), "{text}");
        assert!(text.contains("natpmpd_lease_failures_total 1\n"), "{text}");
        assert!(
            text.contains("natpmpd_request_duration_seconds_count 3\n"),
            "{text}"
        );
    }
}
