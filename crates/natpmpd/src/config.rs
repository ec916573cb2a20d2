//! The configuration file: TOML with RouterOS `/ip nat-pmp` property names.
//!
//! The document is walked by hand over `toml::de::DeTable` (every key and value carries its
//! byte span) instead of derived with serde: serde's errors carry a span but not the key path,
//! and the semantic rules (one external interface, `forced-ip` only on it, no interface twice)
//! need the span of the value that broke them. Walking the tree ourselves gives every error a
//! `FILE:LINE:COL: key.path: problem` message. Unknown keys are refused, like serde's
//! `deny_unknown_fields`, so a typo never silently falls back to a default.

use natpmp_pcp_core::engine::access::{AccessRules, PortRange};
use natpmp_pcp_core::front::pcp::PcpPolicy;
use natpmp_pcp_core::gateway::interfaces::ExternalInterface;
use natpmp_pcp_core::gateway::rate_limit::{self, RateLimitConfig};
use natpmp_pcp_core::kernel::TableSpec;
use natpmp_pcp_core::{EngineConfig, GatewayConfig};
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

mod parse;

pub use parse::{check_interface_name, parse_port_range};

pub const DEFAULT_LEASE_FILE: &str = "/var/lib/natpmpd/leases.json";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/natpmpd/natpmpd.sock";
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 1024..=65535;
pub const DEFAULT_MAX_LIFETIME: u32 = 86400;
pub const DEFAULT_MAX_MAPPINGS_PER_CLIENT: usize = 256;
/// RFC 6887 §15: the minimum PCP lifetime SHOULD be 120 s.
pub const DEFAULT_PCP_MIN_LIFETIME: u32 = 120;
pub const DEFAULT_PCP_MAX_FILTERS: usize = 8;
/// Each FILTER can become a few kernel elements; this bounds what one mapping can cost.
pub const MAX_PCP_MAX_FILTERS: u64 = 64;
/// Requests per second per client address (`rate-limit`; 0 = off) and the burst.
pub const DEFAULT_RATE_LIMIT: u32 = rate_limit::DEFAULT_RATE;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = rate_limit::DEFAULT_BURST;

/// `sun_path` holds 108 bytes including the terminating NUL; a longer path cannot be bound, so
/// it is refused here where the error can point at the line.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Linux's IFNAMSIZ is 16 including the NUL.
pub(crate) const MAX_INTERFACE_NAME: usize = 15;

pub(crate) const TOP_LEVEL_KEYS: &[&str] = &[
    "enabled",
    "lease-file",
    "control-socket",
    "control-socket-group",
    "metrics-listen",
    "backend",
    "port-range",
    "max-lifetime",
    "max-mappings-per-client",
    "keep-forwards-on-exit",
    "hairpin",
    "pcp",
    "pcp-peer",
    "pcp-min-lifetime",
    "pcp-max-filters",
    "connection-mark",
    "reserved-ports",
    "rate-limit",
    "rate-limit-burst",
    "interfaces",
    "access",
];

pub(crate) const ACCESS_KEYS: &[&str] = &[
    "action",
    "clients",
    "protocols",
    "internal-ports",
    "external-ports",
    "comment",
];

pub(crate) const INTERFACE_KEYS: &[&str] = &["interface", "type", "forced-ip", "disabled"];

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The global switch; while false nothing is answered (RouterOS default).
    pub enabled: bool,
    pub lease_file: PathBuf,
    pub control_socket: PathBuf,
    /// `None`: the socket is 0600, root only. `Some(group)`: 0660 and owned by that group.
    pub control_socket_group: Option<String>,
    /// Where `GET /metrics` is served (Prometheus text format); `None`: no metrics (the
    /// default).
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub backend: Backend,
    pub port_range: RangeInclusive<u16>,
    pub max_lifetime: u32,
    pub max_mappings_per_client: usize,
    pub keep_forwards_on_exit: bool,
    /// LAN hosts reach mappings through the external address too (RFC 6886 §4.3.4).
    pub hairpin: bool,
    /// PCP (RFC 6887) beside NAT-PMP on port 5351.
    pub pcp: bool,
    /// PCP PEER requests served (RFC 6887 §12 asks for a switch).
    pub pcp_peer: bool,
    /// The shortest lifetime a PCP mapping is granted, seconds (RFC 6887 §15).
    pub pcp_min_lifetime: u32,
    /// How many FILTERs one PCP MAP may hold (RFC 6887 §13.3).
    pub pcp_max_filters: usize,
    /// The conntrack mark bit set on every connection natpmpd lets in: the operator's forward
    /// chain accepts `ct mark & MARK == MARK`.
    pub connection_mark: u32,
    pub interfaces: Vec<InterfaceConfig>,
    /// External ports the router keeps for itself (both protocols): never handed out.
    pub reserved_ports: Vec<PortRange>,
    /// `[[access]]`: the first matching rule decides; with none, a mapping is allowed.
    pub access: AccessRules,
    /// `rate-limit`: requests per second per client address; 0 turns the limit off.
    pub rate_limit: u32,
    /// `rate-limit-burst`: requests a client may send at once.
    pub rate_limit_burst: u32,
}

/// Where mappings go in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Real port forwards in our own nftables table.
    Nftables,
    /// Protocol only: answers clients but changes nothing in the kernel, so it needs no root.
    None,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::None => "none",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[interfaces]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The Linux interface name.
    pub interface: String,
    pub kind: InterfaceKind,
    /// Which address of the external interface is the public one, when it has several.
    pub forced_ip: Option<Ipv4Addr>,
    pub disabled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceKind {
    /// Faces the internet; mappings are reachable on its address.
    External,
    /// Where clients live; requests are answered only here.
    Internal,
}

impl InterfaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::External => "external",
            InterfaceKind::Internal => "internal",
        }
    }
}

impl fmt::Display for InterfaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            lease_file: PathBuf::from(DEFAULT_LEASE_FILE),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_socket_group: None,
            metrics_listen: None,
            backend: Backend::Nftables,
            port_range: DEFAULT_PORT_RANGE,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            max_mappings_per_client: DEFAULT_MAX_MAPPINGS_PER_CLIENT,
            keep_forwards_on_exit: false,
            hairpin: true,
            pcp: true,
            pcp_peer: true,
            pcp_min_lifetime: DEFAULT_PCP_MIN_LIFETIME,
            pcp_max_filters: DEFAULT_PCP_MAX_FILTERS,
            connection_mark: TableSpec::DEFAULT_CONNECTION_MARK,
            interfaces: Vec::new(),
            reserved_ports: Vec::new(),
            access: AccessRules::default(),
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
        }
    }
}

impl Config {
    /// Parse and validate a configuration document. `origin` names it in error messages
    /// (normally the file name).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse::Parser { text, origin }.parse()
    }

    /// Read and parse a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(err) => Err(ConfigError {
                origin,
                location: None,
                key: None,
                problem: format!("cannot read the configuration file: {err}"),
                source: Some(err),
            }),
        }
    }

    /// The enabled external interface (validation guarantees there is at most one).
    pub fn external(&self) -> Option<&InterfaceConfig> {
        self.interfaces
            .iter()
            .find(|i| !i.disabled && i.kind == InterfaceKind::External)
    }

    /// The enabled internal interfaces, in file order.
    pub fn internals(&self) -> impl Iterator<Item = &InterfaceConfig> {
        self.interfaces
            .iter()
            .filter(|i| !i.disabled && i.kind == InterfaceKind::Internal)
    }

    /// What the gateway is told. `seed` randomises the port allocator so external ports are
    /// not predictable; the daemon draws it at start-up.
    pub fn gateway_config(&self, seed: u64) -> GatewayConfig {
        GatewayConfig {
            enabled: self.enabled,
            engine: EngineConfig {
                port_range: self.port_range.clone(),
                max_lifetime: self.max_lifetime,
                pcp_min_lifetime: self.pcp_min_lifetime,
                max_mappings_per_client: self.max_mappings_per_client,
                max_filters: self.pcp_max_filters,
                seed,
                access: self.access.clone(),
                reserved_ports: self.reserved_ports.clone(),
            },
            pcp: self.pcp,
            pcp_policy: PcpPolicy {
                peer: self.pcp_peer,
            },
            external: self.external().map(|e| ExternalInterface {
                name: e.interface.clone(),
                forced_ip: e.forced_ip,
            }),
            internal: self.internals().map(|i| i.interface.clone()).collect(),
            hairpin: self.hairpin,
            drift_check: self.backend == Backend::Nftables,
            connection_mark: self.connection_mark,
            rate_limit: RateLimitConfig {
                rate: self.rate_limit,
                burst: self.rate_limit_burst,
            },
        }
    }
}

/// A configuration error: `FILE:LINE:COL: key.path: problem`, or `FILE: problem` when the file
/// could not be read.
#[derive(Debug)]
pub struct ConfigError {
    pub(crate) origin: String,
    /// 1-based line and column (in characters) of the offending key or value.
    pub(crate) location: Option<(usize, usize)>,
    pub(crate) key: Option<String>,
    pub(crate) problem: String,
    pub(crate) source: Option<std::io::Error>,
}

impl ConfigError {
    /// The file (or other origin) the error is in.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// 1-based line, when the error is at a place in the document.
    pub fn line(&self) -> Option<usize> {
        self.location.map(|(line, _)| line)
    }

    /// 1-based column in characters, when the error is at a place in the document.
    pub fn column(&self) -> Option<usize> {
        self.location.map(|(_, column)| column)
    }

    /// The key path, e.g. `interfaces[1].forced-ip`; `None` for syntax and I/O errors.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong, without the location prefix.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        match Config::parse(text, "t.toml") {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_document_is_all_defaults() {
        assert_eq!(Config::parse("", "t.toml").unwrap(), Config::default());
    }

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        let e = err("# é\n  enabled = \"ü\"\n");
        assert_eq!((e.line(), e.column()), (Some(2), Some(13)));
    }

    #[test]
    fn port_range_forms() {
        assert_eq!(parse_port_range("1024-65535"), Ok(1024..=65535));
        assert_eq!(parse_port_range("5000"), Ok(5000..=5000));
        assert_eq!(parse_port_range(" 10 - 20 "), Ok(10..=20));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10-65536").is_err());
        assert!(parse_port_range("20-10").is_err());
        assert!(parse_port_range("a-b").is_err());
        assert!(parse_port_range("-").is_err());
        assert!(parse_port_range("").is_err());
        assert!(parse_port_range("1-2-3").is_err());
    }

    #[test]
    fn interface_names() {
        for ok in [
            "eth0",
            "ether1",
            "br-lan",
            "eth0.100",
            "veth@1",
            "a",
            "abcdefghijklmno",
        ] {
            assert_eq!(check_interface_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "eth 0",
            "eth/0",
            "é",
            "eth0:1",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_key_suggests_the_kebab_spelling() {
        let e = err("lease_file = \"/x\"\n");
        assert_eq!(e.key(), Some("lease_file"));
        assert!(e.problem().contains("did you mean `lease-file`"), "{e}");
    }

    #[test]
    fn odd_key_is_quoted() {
        let e = err("\"a\\nb\" = 1\n");
        assert_eq!(e.key(), Some("\"a\\nb\""));
    }

    #[test]
    fn integer_radix_and_bounds() {
        let c = Config::parse("max-lifetime = 0x10\n", "t.toml").unwrap();
        assert_eq!(c.max_lifetime, 16);
        assert!(Config::parse("max-lifetime = 4294967296\n", "t.toml").is_err());
        assert!(Config::parse("max-lifetime = -1\n", "t.toml").is_err());
        assert!(Config::parse("max-lifetime = 99999999999999999999999\n", "t.toml").is_err());
    }
}
