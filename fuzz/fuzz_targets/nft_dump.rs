//! Dumped nf_tables set elements (nftables/dump.rs).
//! The body lives in `natpmp_pcp_nft::fuzzing`, which the stable corpus replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natpmp_pcp_nft::fuzzing::nft_dump(data));
