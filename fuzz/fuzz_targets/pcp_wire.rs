//! The PCP header, MAP/PEER opcode data and option parsers.
//! The body lives in `natpmp_pcp_core::fuzzing`, which the stable corpus replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natpmp_pcp_core::fuzzing::pcp_wire(data));
