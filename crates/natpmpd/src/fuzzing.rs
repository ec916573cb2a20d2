//! Fuzzing entry point for the configuration parser, shared by the cargo-fuzz target in
//! `fuzz/` (nightly, libFuzzer) and the corpus replay test `tests/fuzz_corpus.rs` (stable,
//! `cargo test`). Not part of the API.

use crate::config::Config;

/// The name errors carry for the fuzzed document.
const ORIGIN: &str = "fuzz.toml";

/// One document through `Config::parse`. A configuration that parses satisfies what
/// validation promises (at most one external interface, a port range, PCP's minimum lifetime
/// under the cap); an error names the document and, when it has a place, a line and column
/// inside it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, ORIGIN) {
        Ok(config) => {
            let gateway = config.gateway_config(0);
            assert!(
                config
                    .interfaces
                    .iter()
                    .filter(|i| !i.disabled && i.kind == crate::config::InterfaceKind::External)
                    .count()
                    <= 1,
                "two enabled external interfaces passed validation"
            );
            let engine = &gateway.engine;
            assert!(
                !engine.port_range.is_empty(),
                "empty port range {:?}",
                engine.port_range
            );
            assert!(
                engine.pcp_min_lifetime <= engine.max_lifetime,
                "pcp minimum {} over the cap {}",
                engine.pcp_min_lifetime,
                engine.max_lifetime
            );
            assert!(
                engine.max_lifetime > 0,
                "a lifetime cap of 0 passed validation"
            );
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with(ORIGIN),
                "error without its origin: {shown}"
            );
            assert!(!e.problem().is_empty(), "error without a problem: {shown}");
            if let (Some(line), Some(column)) = (e.line(), e.column()) {
                let lines = text.split('\n').count();
                assert!(
                    line >= 1 && line <= lines && column >= 1,
                    "error at {line}:{column} in a document of {lines} lines: {shown}"
                );
            }
        }
    }
}
