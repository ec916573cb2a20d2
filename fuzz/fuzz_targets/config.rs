//! The configuration parser (Config::parse).
//! The body lives in `natpmpd::fuzzing`, which the stable corpus replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| natpmpd::fuzzing::config(data));
