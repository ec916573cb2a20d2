//! Dumped sets, chains and rules of the health check (health.rs).
//! The body lives in `natpmp_pcp_nft::fuzzing`, which the stable corpus replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natpmp_pcp_nft::fuzzing::health(data));
