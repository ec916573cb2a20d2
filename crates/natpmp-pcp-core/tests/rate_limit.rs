//! The per-client rate limit (issue 9 item 7): a token bucket per client address, checked
//! after admission and before any parsing; over the limit, NAT-PMP and PCP are dropped
//! without a word. Virtual time throughout.

mod common;
use common::*;
use natpmp_pcp_core::gateway::rate_limit::{
    RateLimitConfig, RateLimiter, DEFAULT_BURST, DEFAULT_RATE, FULL_SWEEP_INTERVAL, MAX_BUCKETS,
};
use natpmp_pcp_core::{Datagram, EngineConfig, GatewayConfig, Timestamp};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn limited(rate: u32, burst: u32) -> Gw {
    Gw::with_config(GatewayConfig {
        rate_limit: RateLimitConfig { rate, burst },
        ..gateway_config(EngineConfig::default())
    })
}

/// The harness's gateway with the default rate limit (the harness turns it off).
fn with_default_limit() -> Gw {
    Gw::with_config(GatewayConfig {
        rate_limit: GatewayConfig::default().rate_limit,
        ..gateway_config(EngineConfig::default())
    })
}

/// Send `n` address requests from `client` at the current time, one datagram each; how many
/// were answered.
fn answered(gw: &mut Gw, client: Ipv4Addr, n: usize) -> usize {
    (0..n)
        .filter(|_| gw.send(client, &addr_request()).is_some())
        .count()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

#[test]
fn the_burst_is_answered_then_requests_are_dropped() {
    let mut gw = limited(10, 5);
    for _ in 0..5 {
        assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 0, EXT));
    }
    gw.assert_dropped(A, &addr_request());
    gw.assert_dropped(A, &map_request(UDP, 4000, 0, 600));
    assert!(gw.mappings().is_empty(), "a dropped map request mapped");
    assert_eq!(gw.gateway.rate_limited_datagrams(), 2);
}

#[test]
fn tokens_come_back_at_the_rate_and_no_more_than_the_burst() {
    let mut gw = limited(10, 5);
    assert_eq!(answered(&mut gw, A, 5), 5);
    // 10 per second: one token per 100 ms.
    gw.advance_ms(99);
    assert_eq!(answered(&mut gw, A, 1), 0);
    gw.advance_ms(1);
    assert_eq!(answered(&mut gw, A, 3), 1);
    gw.advance_ms(250);
    assert_eq!(answered(&mut gw, A, 5), 2);
    // A long pause fills the bucket to the burst, not to the rate times the pause.
    gw.advance_secs(60);
    assert_eq!(answered(&mut gw, A, 20), 5);
    assert_eq!(gw.gateway.rate_limited_datagrams(), 1 + 2 + 3 + 15);
}

#[test]
fn clients_have_separate_buckets() {
    let mut gw = limited(1, 3);
    assert_eq!(answered(&mut gw, A, 10), 3);
    assert_eq!(answered(&mut gw, B, 10), 3);
    let port = gw.source_port();
    let r = gw.send_from(SocketAddr::new(v4(C), port), &addr_request());
    assert!(r.is_some(), "C is not A or B");
    // Another source port of a limited client is still that client.
    let port = gw.source_port();
    assert_eq!(
        gw.send_from(SocketAddr::new(v4(A), port), &addr_request()),
        None
    );
}

#[test]
fn pcp_over_the_limit_is_dropped_silently_too() {
    let mut gw = limited(1, 2);
    let req = |iport| pcp_map_request(A, 600, [7; 12], 17, iport, 0, [0; 16]);
    gw.pcp_ok(A, &req(4000));
    gw.pcp_ok(A, &req(4001));
    gw.assert_dropped(A, &req(4002));
    assert_eq!(gw.mappings().len(), 2);
    gw.advance_secs(1);
    gw.pcp_ok(A, &req(4002));
}

#[test]
fn zero_turns_the_limit_off() {
    let mut gw = limited(0, 0);
    assert_eq!(answered(&mut gw, A, 5_000), 5_000);
    assert_eq!(gw.gateway.rate_limiter().buckets(), 0);
    assert_eq!(gw.gateway.rate_limited_datagrams(), 0);
    let mut off = RateLimiter::new(RateLimitConfig::OFF);
    assert!((0..10_000).all(|_| off.admit(at(5), ip(1))));
    assert_eq!(off.buckets(), 0);
}

#[test]
fn datagrams_the_gateway_drops_anyway_make_no_bucket() {
    let mut gw = limited(1, 1);
    // Off the LAN's subnet, on the external interface, to a broadcast address.
    gw.assert_dropped(OFF_LAN, &addr_request());
    let port = gw.source_port();
    gw.deliver(&[
        (
            SocketAddr::new(v4(A), port),
            v4(EXT),
            WAN_INDEX,
            &addr_request(),
        ),
        (
            SocketAddr::new(v4(A), port),
            v4(Ipv4Addr::new(192, 168, 88, 255)),
            LAN_INDEX,
            &addr_request(),
        ),
    ]);
    assert!(gw.out.is_empty());
    assert_eq!(gw.gateway.rate_limiter().buckets(), 0);
    assert_eq!(gw.gateway.rate_limited_datagrams(), 0);
    // So A's one token is still there.
    assert_eq!(answered(&mut gw, A, 2), 1);
}

#[test]
fn a_reload_changes_the_limit_live() {
    let mut gw = limited(1, 100);
    assert_eq!(answered(&mut gw, A, 10), 10);
    // A smaller burst caps what is left (90 tokens) at once.
    let mut config = gw.config().clone();
    config.rate_limit = RateLimitConfig { rate: 1, burst: 3 };
    gw.reconfigure(config.clone()).unwrap();
    assert_eq!(answered(&mut gw, A, 10), 3);
    // Off: everything passes, and the buckets are gone.
    config.rate_limit = RateLimitConfig::OFF;
    gw.reconfigure(config.clone()).unwrap();
    assert_eq!(answered(&mut gw, A, 500), 500);
    assert_eq!(gw.gateway.rate_limiter().buckets(), 0);
    // On again, with a faster rate: a fresh bucket, refilled at the new rate.
    config.rate_limit = RateLimitConfig {
        rate: 1000,
        burst: 2,
    };
    gw.reconfigure(config).unwrap();
    assert_eq!(answered(&mut gw, A, 5), 2);
    gw.advance_ms(1);
    assert_eq!(answered(&mut gw, A, 5), 1);
    assert_eq!(gw.gateway.rate_limiter().config().rate, 1000);
}

#[test]
fn a_reload_keeps_what_was_used_at_the_old_rate() {
    let config = RateLimitConfig { rate: 10, burst: 4 };
    let mut rl = RateLimiter::new(config);
    assert_eq!((0..6).filter(|_| rl.admit(at(1_000), ip(1))).count(), 4);
    // 200 ms at the old rate (2 tokens), then the rate goes up: what had refilled by the
    // reload is kept, and no more.
    rl.set_config(
        at(1_200),
        RateLimitConfig {
            rate: 1000,
            burst: 4,
        },
    );
    assert_eq!((0..6).filter(|_| rl.admit(at(1_200), ip(1))).count(), 2);
    assert_eq!((0..6).filter(|_| rl.admit(at(1_201), ip(1))).count(), 1);
}

#[test]
fn time_going_backwards_neither_refills_nor_panics() {
    let mut rl = RateLimiter::new(RateLimitConfig { rate: 1, burst: 2 });
    assert!(rl.admit(at(10_000), ip(1)));
    assert!(rl.admit(at(10_000), ip(1)));
    assert!(!rl.admit(at(10_000), ip(1)));
    // Back to the origin: no refill.
    assert!(!rl.admit(at(0), ip(1)));
    // Then forward again: the bucket's clock restarted at 0, one second is one token.
    assert!(rl.admit(at(1_000), ip(1)));
    assert!(!rl.admit(at(1_000), ip(1)));
    // To the end of time and back.
    assert!(rl.admit(at(u64::MAX), ip(1)));
    assert!(rl.admit(at(u64::MAX), ip(1)));
    assert!(!rl.admit(at(u64::MAX), ip(1)));
    assert!(!rl.admit(at(0), ip(1)));
    rl.set_config(at(0), RateLimitConfig { rate: 1, burst: 1 });
    rl.set_config(at(u64::MAX), RateLimitConfig { rate: 2, burst: 1 });
    assert!(rl.admit(at(u64::MAX), ip(1)));
}

#[test]
fn extreme_rates_and_bursts_do_not_overflow() {
    let big = RateLimitConfig {
        rate: u32::MAX,
        burst: u32::MAX,
    };
    let mut rl = RateLimiter::new(big);
    assert!((0..1000).all(|_| rl.admit(at(u64::MAX - 1), ip(1))));
    assert!(rl.admit(at(u64::MAX), ip(1)));
    assert!(rl.admit(at(0), ip(2)));
    // Burst 0 with a rate is refused by the configuration; here it counts as 1.
    let mut one = RateLimiter::new(RateLimitConfig { rate: 1, burst: 0 });
    assert!(one.admit(at(0), ip(1)));
    assert!(!one.admit(at(999), ip(1)));
    assert!(one.admit(at(1_000), ip(1)));
}

#[test]
fn full_buckets_are_pruned() {
    let mut rl = RateLimiter::new(RateLimitConfig {
        rate: 100,
        burst: 300,
    });
    // One request each from many addresses, 10 ms apart in groups: a bucket that gave one
    // token is full again after 10 ms, so the table never holds much more than a group
    // (plus the sweep's doubling threshold).
    for group in 0..200u32 {
        let now = at(u64::from(group) * 10);
        for n in 0..1000 {
            assert!(rl.admit(now, ip(group * 1000 + n)));
        }
        assert!(rl.buckets() <= 4096, "{} buckets", rl.buckets());
    }
    assert_eq!(rl.admitted_without_bucket(), 0);
    // A client still draining keeps its bucket through the sweeps.
    let mut rl = RateLimiter::new(RateLimitConfig { rate: 1, burst: 2 });
    assert!(rl.admit(at(0), ip(0)));
    assert!(rl.admit(at(0), ip(0)));
    for n in 1..5000 {
        rl.admit(at(10), ip(n));
    }
    assert!(rl.has_bucket(ip(0)));
    assert!(!rl.admit(at(10), ip(0)), "the drained client was forgotten");
}

#[test]
fn at_the_cap_new_clients_are_served_and_the_held_ones_stay_limited() {
    let config = RateLimitConfig { rate: 1, burst: 5 };
    let mut rl = RateLimiter::with_max_buckets(config, 8);
    for n in 0..8 {
        assert_eq!((0..5).filter(|_| rl.admit(at(0), ip(n))).count(), 5);
    }
    assert_eq!(rl.buckets(), 8);
    // A new client: nothing to prune, so it is admitted without a bucket (every time).
    assert!((0..50).all(|_| rl.admit(at(100), ip(100))));
    assert_eq!(rl.buckets(), 8);
    assert_eq!(rl.admitted_without_bucket(), 50);
    // The clients held are still limited (none was evicted).
    assert!((0..8).all(|n| !rl.admit(at(100), ip(n))));
    // Once they have refilled (5 s), a sweep makes room and new clients get buckets again.
    assert!(rl.admit(at(6_000), ip(200)));
    assert!(rl.has_bucket(ip(200)));
    assert_eq!(rl.buckets(), 1);
    assert_eq!(rl.max_buckets(), 8);
}

#[test]
fn at_the_cap_the_sweeps_wait() {
    let mut rl = RateLimiter::with_max_buckets(RateLimitConfig { rate: 1, burst: 5 }, 8);
    for n in 0..8 {
        assert!(rl.admit(at(0), ip(n)));
    }
    // Each bucket gave one token: full again at 1 s. The first new client at 0 swept (nothing
    // to prune), so the next sweep waits FULL_SWEEP_INTERVAL.
    assert!(rl.admit(at(0), ip(100)));
    assert!(rl.admit(at(999), ip(101)));
    assert!(!rl.has_bucket(ip(101)));
    let after = FULL_SWEEP_INTERVAL.as_millis() as u64;
    assert!(rl.admit(at(after), ip(102)));
    assert!(
        rl.has_bucket(ip(102)),
        "the sweep after the interval made room"
    );
}

#[test]
fn a_flood_of_spoofed_ipv6_sources_is_bounded_in_memory() {
    let mut gw = with_default_limit();
    gw.set_interfaces(interfaces_with_v6(Some(EXT)));
    let gw6 = IpAddr::V6(ip6(GW_LAN6));
    let base = u128::from(ip6("fd00:88::"));
    // One datagram from each of 80 000 addresses of the LAN's /64, in batches, at one instant.
    // The payload is junk the front ends drop, so only the limiter works.
    let junk = [0u8];
    let mut out = Vec::new();
    for chunk in 0..80u128 {
        let sources: Vec<SocketAddr> = (0..1000u128)
            .map(|i| {
                SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(base + 2 + chunk * 1000 + i)),
                    5350,
                )
            })
            .collect();
        let batch = sources.iter().map(|&source| Datagram {
            source,
            destination: gw6,
            ifindex: LAN_INDEX,
            payload: &junk,
        });
        gw.gateway.handle_datagrams(gw.now, batch, &mut out);
    }
    assert!(out.is_empty());
    let limiter = gw.gateway.rate_limiter();
    assert_eq!(limiter.buckets(), MAX_BUCKETS);
    assert_eq!(
        limiter.admitted_without_bucket(),
        80_000 - MAX_BUCKETS as u64
    );
    assert_eq!(gw.gateway.rate_limited_datagrams(), 0);
    // A real client is served meanwhile.
    assert_eq!(answered(&mut gw, A, 3), 3);
    // A second later the spoofed buckets are full again, and the next new client's sweep
    // prunes them all.
    gw.advance(FULL_SWEEP_INTERVAL);
    assert!(gw.send6("fd00:88::1:0:0:abcd", 5350, &[0]).is_none());
    assert_eq!(gw.gateway.rate_limiter().buckets(), 1);
}

/// The sizing rule: a client that maps its whole default quota at start-up, after an
/// address request, does it inside the default burst.
#[test]
fn the_default_quota_fits_in_the_default_burst() {
    let engine = EngineConfig::default();
    assert_eq!(GatewayConfig::default().rate_limit.rate, DEFAULT_RATE);
    assert_eq!(GatewayConfig::default().rate_limit.burst, DEFAULT_BURST);
    assert!(engine.max_mappings_per_client < DEFAULT_BURST as usize);
    let mut gw = with_default_limit();
    assert_eq!(gw.config().rate_limit, RateLimitConfig::default());
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 0, EXT));
    // All in one batch, as a client's burst arrives in one wake-up of the daemon.
    let requests: Vec<[u8; 12]> = (0..engine.max_mappings_per_client as u16)
        .map(|i| map_request(UDP, 10_000 + i, 0, 3600))
        .collect();
    let port = gw.source_port();
    let source = SocketAddr::new(v4(A), port);
    let batch: Vec<(SocketAddr, &[u8])> = requests.iter().map(|r| (source, &r[..])).collect();
    let out = gw.send_batch(&batch);
    assert_eq!(out.len(), requests.len());
    for o in &out {
        assert_eq!(parse_map_reply(&o.payload).result, SUCCESS);
    }
    assert_eq!(gw.mappings().len(), engine.max_mappings_per_client);
    // One more is over the quota, and still answered (result 4, not the rate limit).
    assert_eq!(gw.map(A, UDP, 9, 0, 3600).result, OUT_OF_RESOURCES);
    assert_eq!(gw.gateway.rate_limited_datagrams(), 0);
}

#[test]
fn one_address_flooding_does_not_touch_another() {
    let mut gw = with_default_limit();
    // A floods 10 000 map requests in 100 ms (100 000 a second), in batches of 100; B sends one
    // every 10 ms in between and gets every answer.
    let mut flood_answered = 0;
    for step in 0..10u16 {
        let requests: Vec<[u8; 12]> = (0..1000u16)
            .map(|i| map_request(TCP, 1 + step * 1000 + i, 0, 600))
            .collect();
        let port = gw.source_port();
        let source = SocketAddr::new(v4(A), port);
        for chunk in requests.chunks(100) {
            let batch: Vec<(SocketAddr, &[u8])> = chunk.iter().map(|r| (source, &r[..])).collect();
            flood_answered += gw.send_batch(&batch).len();
        }
        assert_eq!(gw.map(B, UDP, 100 + step, 0, 600).result, SUCCESS);
        gw.advance_ms(10);
    }
    // The burst, then 1 per 10 ms (after the first step's 0 ms).
    assert_eq!(flood_answered, DEFAULT_BURST as usize + 9);
    assert_eq!(
        gw.gateway.rate_limited_datagrams(),
        10_000 - flood_answered as u64
    );
}

proptest! {
    /// For any arrival times of one client's datagrams (in order), what is admitted never
    /// exceeds the burst plus the rate times the time spanned, and datagrams spaced at least
    /// 1/rate apart after a full bucket are all admitted.
    #[test]
    fn admitted_never_exceeds_burst_plus_rate_times_time(
        rate in 1u32..2000,
        burst in 1u32..50,
        gaps in proptest::collection::vec(0u64..50, 1..400),
    ) {
        let mut rl = RateLimiter::new(RateLimitConfig { rate, burst });
        let mut now = 1_000u64;
        let start = now;
        let mut admitted = 0u64;
        for gap in gaps {
            now += gap;
            if rl.admit(at(now), ip(1)) {
                admitted += 1;
            }
            let bound = u64::from(burst) + (now - start) * u64::from(rate) / 1000;
            prop_assert!(admitted <= bound, "{admitted} admitted > {bound}");
        }
        // Spaced at the rate (rounded up to whole ms): nothing is dropped.
        let spacing = 1000u64.div_ceil(u64::from(rate));
        now += u64::from(burst) * 1000;
        for _ in 0..50 {
            now += spacing;
            prop_assert!(rl.admit(at(now), ip(1)));
        }
    }
}
