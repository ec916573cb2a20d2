//! A per-client rate limit: one token bucket per client address (issue 9 item 7).
//!
//! Every datagram the gateway admits (right interface, addressed to the gateway, source on
//! that interface's subnets) takes one token from its source address's bucket before anything
//! parses it; a bucket refills at `rate` tokens a second up to `burst`. A datagram that finds
//! its bucket empty is dropped without a word, NAT-PMP and PCP alike (see `Gateway::
//! rate_limited_datagrams` for the count, and docs/protocol-choices.md): a reply costs the
//! gateway as much as the request did, so answering a flood (PCP's NO_RESOURCES, say) would
//! let it keep the gateway busy writing, and a PCP client retransmits with back-off anyway
//! (RFC 6887 §8.1.1), as a NAT-PMP client does (RFC 6886 §3.1).
//!
//! Arithmetic: fixed point in integers, no floats. Time comes in milliseconds, so a bucket's
//! level is kept in thousandths of a token: `elapsed_ms × rate` is exactly the refill in those
//! units. Every step saturates and is capped at the bucket's size, so no time jump (forwards
//! by years or backwards) and no rate can overflow or panic.
//!
//! Time going backwards refills nothing; the bucket's clock then restarts at the earlier
//! time, so when time moves forward again the gap counts as refill time. That errs toward
//! admitting, which is the side a limit meant to stop floods may err on.
//!
//! Memory: a full bucket is the same as no bucket (a new client starts full), so buckets that
//! have refilled to full are pruned. The table is swept when it has doubled since the last
//! sweep (at least `MIN_SWEEP` buckets), which keeps the sweeps' cost constant per datagram,
//! and it never holds more than `max_buckets` (default [`MAX_BUCKETS`]). When it is at the cap
//! and a sweep frees nothing (a flood from that many addresses, all still draining), a new
//! client is admitted without a bucket: it is not limited until a sweep makes room, and no
//! existing bucket is evicted. That keeps real clients served (nobody is ever dropped because
//! the table is full) and keeps the limit on the clients already held, a single-address
//! flooder among them (evicting would hand it a fresh full bucket). After a sweep that left
//! the table over three quarters full, the next waits `FULL_SWEEP_INTERVAL`, so a table full
//! of draining buckets does not cost a walk of the whole table per datagram.
//!
//! A flood from many addresses is not what a per-address limit can stop (each new address
//! brings a full bucket); what it bounds is the memory such a flood costs. The table's keys
//! are hashed with std's randomly keyed SipHash, so spoofed addresses cannot be chosen to
//! collide.

use super::Gateway;
use crate::kernel::Forwarder;
use crate::time::Timestamp;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Requests per second per client address, by default. Generous: a client that maps its
/// whole default quota (256 mappings) at start-up does it inside the default burst.
pub const DEFAULT_RATE: u32 = 100;
/// The bucket size by default: above the default per-client quota of 256 mappings plus an
/// address request, so mapping everything at once is never limited.
pub const DEFAULT_BURST: u32 = 300;
/// At most this many buckets (about 40 bytes each, so a few MB at most).
pub const MAX_BUCKETS: usize = 65_536;
/// The table is not swept below this many buckets.
pub const MIN_SWEEP: usize = 1024;
/// After a sweep that left the table over three quarters full, the next one waits this long.
pub const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One token in the bucket's units (thousandths: time is in milliseconds, rates per second).
const UNIT: u64 = 1000;

/// The `rate-limit` and `rate-limit-burst` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests per second per client address; 0 turns the limit off.
    pub rate: u32,
    /// How many requests a client may send at once (the bucket size). The configuration
    /// refuses 0 with a non-zero rate; here 0 counts as 1, so a request always passes in time.
    pub burst: u32,
}

impl RateLimitConfig {
    /// No limit at all.
    pub const OFF: RateLimitConfig = RateLimitConfig { rate: 0, burst: 0 };

    pub fn is_off(&self) -> bool {
        self.rate == 0
    }

    /// The bucket size in the bucket's units.
    fn capacity(&self) -> u64 {
        u64::from(self.burst.max(1)) * UNIT
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a token, at `at`.
    level: u64,
    at: Timestamp,
}

impl Bucket {
    /// The level at `now`, refilled at `config`'s rate and capped at its size.
    fn level_at(&self, now: Timestamp, config: &RateLimitConfig) -> u64 {
        let elapsed = now.as_millis().saturating_sub(self.at.as_millis());
        self.level
            .saturating_add(elapsed.saturating_mul(u64::from(config.rate)))
            .min(config.capacity())
    }
}

/// The token buckets, keyed by client address.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: HashMap<IpAddr, Bucket>,
    max_buckets: usize,
    /// Sweep when the table reaches this size (never above `max_buckets`).
    sweep_at: usize,
    /// At the cap: no sweep before this time.
    next_full_sweep: Option<Timestamp>,
    dropped: u64,
    unbucketed: u64,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter::with_max_buckets(config, MAX_BUCKETS)
    }

    /// With another cap on the number of buckets (at least 1).
    pub fn with_max_buckets(config: RateLimitConfig, max_buckets: usize) -> RateLimiter {
        let max_buckets = max_buckets.max(1);
        RateLimiter {
            config,
            buckets: HashMap::new(),
            max_buckets,
            sweep_at: MIN_SWEEP.min(max_buckets),
            next_full_sweep: None,
            dropped: 0,
            unbucketed: 0,
        }
    }

    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Datagrams dropped for being over the limit, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Datagrams admitted without a bucket because the table was at its cap.
    pub fn admitted_without_bucket(&self) -> u64 {
        self.unbucketed
    }

    /// Buckets held now (clients seen recently whose bucket is not yet full again).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    pub fn max_buckets(&self) -> usize {
        self.max_buckets
    }

    /// Whether `client` is held in the table now.
    pub fn has_bucket(&self, client: IpAddr) -> bool {
        self.buckets.contains_key(&client.to_canonical())
    }

    /// Whether a datagram from `client` at `now` may go on; takes a token if so, counts a
    /// drop if not.
    pub fn admit(&mut self, now: Timestamp, client: IpAddr) -> bool {
        if self.config.is_off() {
            return true;
        }
        // An IPv4 client seen through an IPv4-mapped IPv6 address is still the same client.
        let client = client.to_canonical();
        let config = self.config;
        if let Some(bucket) = self.buckets.get_mut(&client) {
            let level = bucket.level_at(now, &config);
            bucket.at = now;
            if level >= UNIT {
                bucket.level = level - UNIT;
                return true;
            }
            bucket.level = level;
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        // A new client: a full bucket, less this datagram's token.
        if self.buckets.len() >= self.sweep_at {
            self.maybe_sweep(now);
        }
        if self.buckets.len() >= self.max_buckets {
            self.unbucketed = self.unbucketed.saturating_add(1);
            return true;
        }
        self.buckets.insert(
            client,
            Bucket {
                level: config.capacity() - UNIT,
                at: now,
            },
        );
        true
    }

    /// A reload: the buckets are brought up to `now` at the old rate, then held to the new
    /// size; those that are full are dropped. Off drops them all.
    pub fn set_config(&mut self, now: Timestamp, config: RateLimitConfig) {
        if config == self.config {
            return;
        }
        let old = self.config;
        self.config = config;
        if config.is_off() {
            self.buckets = HashMap::new();
        } else {
            let capacity = config.capacity();
            self.buckets.retain(|_, b| {
                b.level = b.level_at(now, &old).min(capacity);
                b.at = now;
                b.level < capacity
            });
        }
        self.after_sweep(now);
    }

    /// Sweep, unless the last sweep freed little and was too recent. (A clock that went
    /// backwards makes the wait at most `FULL_SWEEP_INTERVAL` from now.)
    fn maybe_sweep(&mut self, now: Timestamp) {
        let interval = FULL_SWEEP_INTERVAL.as_millis() as u64;
        if let Some(next) = self.next_full_sweep {
            let waiting = next.as_millis().saturating_sub(now.as_millis());
            if waiting > 0 && waiting <= interval {
                return;
            }
        }
        self.sweep(now);
    }

    /// Prune the buckets that have refilled to full.
    fn sweep(&mut self, now: Timestamp) {
        let config = self.config;
        let capacity = config.capacity();
        self.buckets
            .retain(|_, b| b.level_at(now, &config) < capacity);
        self.after_sweep(now);
    }

    fn after_sweep(&mut self, now: Timestamp) {
        let len = self.buckets.len();
        self.sweep_at = len.saturating_mul(2).max(MIN_SWEEP).min(self.max_buckets);
        // A sweep that left the table over three quarters full freed too little to repeat
        // soon: the next one waits (new clients meanwhile fill the table, then are admitted
        // without a bucket).
        self.next_full_sweep = (len > self.max_buckets / 4 * 3).then(|| now + FULL_SWEEP_INTERVAL);
        // Give back what a flood of addresses made the table grow to.
        if self.buckets.capacity() > 4 * len.max(MIN_SWEEP) {
            self.buckets.shrink_to(2 * len);
        }
    }
}

impl<F: Forwarder> Gateway<F> {
    /// Datagrams dropped by the per-client rate limit since the start (for metrics).
    pub fn rate_limited_datagrams(&self) -> u64 {
        self.rate_limiter.dropped()
    }

    /// The rate limiter's state (buckets held, datagrams admitted without a bucket).
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate_limiter
    }
}
