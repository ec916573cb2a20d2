//! The NAT-PMP request parser and reply emitters.
//! The body lives in `natpmp_pcp_core::fuzzing`, which the stable corpus replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natpmp_pcp_core::fuzzing::natpmp_request(data));
