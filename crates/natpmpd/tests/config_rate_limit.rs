//! The `rate-limit` and `rate-limit-burst` keys: defaults, values, errors (each with its
//! `FILE:LINE:COL: key: problem`), and what reaches the gateway.

mod config_support;

use config_support::{expect_error, parse};
use natpmp_pcp_core::gateway::rate_limit::RateLimitConfig;
use natpmpd::config::{
    DEFAULT_MAX_MAPPINGS_PER_CLIENT, DEFAULT_RATE_LIMIT, DEFAULT_RATE_LIMIT_BURST,
};

#[test]
fn defaults_are_100_a_second_with_a_burst_of_300() {
    let c = parse("");
    assert_eq!((c.rate_limit, c.rate_limit_burst), (100, 300));
    assert_eq!((DEFAULT_RATE_LIMIT, DEFAULT_RATE_LIMIT_BURST), (100, 300));
    assert_eq!(
        c.gateway_config(1).rate_limit,
        RateLimitConfig {
            rate: 100,
            burst: 300
        }
    );
    // A client mapping its whole default quota at once (after an address request) fits in the
    // default burst (docs/configuration.md says so).
    assert!(DEFAULT_MAX_MAPPINGS_PER_CLIENT < DEFAULT_RATE_LIMIT_BURST as usize);
}

#[test]
fn values_reach_the_gateway() {
    let c = parse("rate-limit = 20\nrate-limit-burst = 0x40\n");
    assert_eq!((c.rate_limit, c.rate_limit_burst), (20, 64));
    assert_eq!(
        c.gateway_config(1).rate_limit,
        RateLimitConfig {
            rate: 20,
            burst: 64
        }
    );
    let max = parse("rate-limit = 4294967295\nrate-limit-burst = 4294967295\n");
    assert_eq!((max.rate_limit, max.rate_limit_burst), (u32::MAX, u32::MAX));
}

#[test]
fn zero_turns_the_limit_off() {
    let c = parse("rate-limit = 0\n");
    assert!(c.gateway_config(1).rate_limit.is_off());
    assert_eq!(c.rate_limit_burst, 300);
    // With the limit off, a burst of 0 means nothing and is accepted.
    let c = parse("rate-limit-burst = 0\nrate-limit = 0\n");
    assert!(c.gateway_config(1).rate_limit.is_off());
}

#[test]
fn a_burst_of_zero_with_a_rate_is_refused() {
    expect_error(
        "rate-limit-burst = 0\n",
        1,
        "rate-limit-burst",
        "at least 1",
    );
    expect_error(
        "# comment\nrate-limit = 50\nrate-limit-burst = 0\n",
        3,
        "rate-limit-burst",
        "rate-limit = 50",
    );
    // The order in the file does not matter.
    expect_error(
        "rate-limit-burst = 0\nrate-limit = 5\n",
        1,
        "rate-limit-burst",
        "at least 1",
    );
}

#[test]
fn bad_values_name_the_key_and_the_line() {
    expect_error("\nrate-limit = -1\n", 2, "rate-limit", "out of range (0 to");
    expect_error("rate-limit = 4294967296\n", 1, "rate-limit", "out of range");
    expect_error(
        "rate-limit = 99999999999999999999999999\n",
        1,
        "rate-limit",
        "out of range",
    );
    expect_error("rate-limit = 1.5\n", 1, "rate-limit", "expected an integer");
    expect_error(
        "rate-limit = \"100\"\n",
        1,
        "rate-limit",
        "expected an integer",
    );
    expect_error(
        "rate-limit-burst = -300\n",
        1,
        "rate-limit-burst",
        "out of range",
    );
    expect_error(
        "rate-limit-burst = true\n",
        1,
        "rate-limit-burst",
        "expected an integer",
    );
    expect_error(
        "rate_limit = 5\n",
        1,
        "rate_limit",
        "did you mean `rate-limit`",
    );
}
