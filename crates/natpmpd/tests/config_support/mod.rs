//! What the configuration tests share: parsing a file that must be valid, and checking an
//! error's whole `FILE:LINE:COL: key: problem` form.

use natpmpd::config::{Config, ConfigError};

pub fn parse(text: &str) -> Config {
    Config::parse(text, "/etc/natpmpd.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `text`, expects an error at `line` about `key`, whose message contains `needle`;
/// also checks the whole `FILE:LINE:COL: key: problem` form.
#[track_caller]
pub fn expect_error(text: &str, line: usize, key: &str, needle: &str) -> ConfigError {
    let err = match Config::parse(text, "/etc/natpmpd.toml") {
        Ok(c) => panic!("expected an error about {key}, got {c:?}"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert_eq!(err.line(), Some(line), "{message}");
    assert_eq!(err.key(), Some(key), "{message}");
    let column = err.column().expect("a column");
    assert!(
        message.starts_with(&format!("/etc/natpmpd.toml:{line}:{column}: {key}: ")),
        "{message}"
    );
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert!(!message.contains('\n'), "one line: {message:?}");
    err
}
