//! The configuration file: TOML with RouterOS `/ip nat-pmp` property names.
//!
//! The document is walked by hand over `toml::de::DeTable` (every key and value carries its
//! byte span) instead of derived with serde: serde's errors carry a span but not the key path,
//! and the semantic rules (one external interface, `forced-ip` only on it, no interface twice)
//! need the span of the value that broke them. Walking the tree ourselves gives every error a
//! `FILE:LINE:COL: key.path: problem` message. Unknown keys are refused, like serde's
//! `deny_unknown_fields`, so a typo never silently falls back to a default.

use natpmp_pcp_core::front::pcp::PcpPolicy;
use natpmp_pcp_core::gateway::interfaces::ExternalInterface;
use natpmp_pcp_core::{EngineConfig, GatewayConfig};
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

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

/// `sun_path` holds 108 bytes including the terminating NUL; a longer path cannot be bound, so
/// it is refused here where the error can point at the line.
const MAX_SOCKET_PATH: usize = 107;

/// Linux's IFNAMSIZ is 16 including the NUL.
const MAX_INTERFACE_NAME: usize = 15;

const TOP_LEVEL_KEYS: &[&str] = &[
    "enabled",
    "lease-file",
    "control-socket",
    "control-socket-group",
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
    "interfaces",
];

const INTERFACE_KEYS: &[&str] = &["interface", "type", "forced-ip", "disabled"];

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The global switch; while false nothing is answered (RouterOS default).
    pub enabled: bool,
    pub lease_file: PathBuf,
    pub control_socket: PathBuf,
    /// `None`: the socket is 0600, root only. `Some(group)`: 0660 and owned by that group.
    pub control_socket_group: Option<String>,
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
    pub interfaces: Vec<InterfaceConfig>,
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
            interfaces: Vec::new(),
        }
    }
}

impl Config {
    /// Parse and validate a configuration document. `origin` names it in error messages
    /// (normally the file name).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Parser { text, origin }.parse()
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
        }
    }
}

/// A configuration error: `FILE:LINE:COL: key.path: problem`, or `FILE: problem` when the file
/// could not be read.
#[derive(Debug)]
pub struct ConfigError {
    origin: String,
    /// 1-based line and column (in characters) of the offending key or value.
    location: Option<(usize, usize)>,
    key: Option<String>,
    problem: String,
    source: Option<std::io::Error>,
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

type Value<'i> = Spanned<DeValue<'i>>;

/// An interface entry with the spans the cross-entry rules point at.
struct ParsedInterface {
    config: InterfaceConfig,
    name_span: Range<usize>,
    type_span: Range<usize>,
}

struct Parser<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Parser<'_> {
    fn parse(&self) -> Result<Config, ConfigError> {
        let root = DeTable::parse(self.text).map_err(|e| self.syntax_error(&e))?;
        let mut config = Config::default();
        let mut enabled_span = None;
        let mut min_lifetime_span = None;
        let mut interfaces = Vec::new();

        for (key, value) in in_document_order(root.get_ref()) {
            let name: &str = key.get_ref();
            match name {
                "enabled" => {
                    config.enabled = self.boolean(name, value)?;
                    enabled_span = Some(value.span());
                }
                "lease-file" => config.lease_file = self.path(name, value)?,
                "control-socket" => {
                    let path = self.path(name, value)?;
                    let len = path.as_os_str().len();
                    if len > MAX_SOCKET_PATH {
                        return Err(self.error(
                            value.span(),
                            name,
                            format!(
                                "the path is {len} bytes long; Unix socket paths are limited \
                                 to {MAX_SOCKET_PATH}"
                            ),
                        ));
                    }
                    config.control_socket = path;
                }
                "control-socket-group" => {
                    let group = self.string(name, value)?;
                    if group.is_empty()
                        || group
                            .chars()
                            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
                    {
                        return Err(self.error(
                            value.span(),
                            name,
                            format!("{group:?} is not a group name"),
                        ));
                    }
                    config.control_socket_group = Some(group.to_owned());
                }
                "backend" => {
                    config.backend = match self.string(name, value)? {
                        "nftables" => Backend::Nftables,
                        "none" => Backend::None,
                        other => {
                            return Err(self.error(
                                value.span(),
                                name,
                                format!(
                                "{other:?} is not a backend (expected \"nftables\" or \"none\")"
                            ),
                            ))
                        }
                    }
                }
                "port-range" => config.port_range = self.port_range(name, value)?,
                "max-lifetime" => {
                    config.max_lifetime = self.positive(name, value, u64::from(u32::MAX))? as u32
                }
                "max-mappings-per-client" => {
                    // Bounded well below usize::MAX so the value also fits on 32-bit targets.
                    config.max_mappings_per_client =
                        self.positive(name, value, u64::from(u32::MAX))? as usize
                }
                "keep-forwards-on-exit" => {
                    config.keep_forwards_on_exit = self.boolean(name, value)?
                }
                "hairpin" => config.hairpin = self.boolean(name, value)?,
                "pcp" => config.pcp = self.boolean(name, value)?,
                "pcp-peer" => config.pcp_peer = self.boolean(name, value)?,
                "pcp-min-lifetime" => {
                    config.pcp_min_lifetime =
                        self.positive(name, value, u64::from(u32::MAX))? as u32;
                    min_lifetime_span = Some(value.span());
                }
                "pcp-max-filters" => {
                    config.pcp_max_filters =
                        self.positive(name, value, MAX_PCP_MAX_FILTERS)? as usize
                }
                "interfaces" => interfaces = self.interfaces(value)?,
                _ => return Err(self.unknown_key(key, "", TOP_LEVEL_KEYS)),
            }
        }

        if let Some(span) = min_lifetime_span {
            if config.pcp_min_lifetime > config.max_lifetime {
                return Err(self.error(
                    span,
                    "pcp-min-lifetime",
                    format!(
                        "{} is longer than max-lifetime ({}); the shortest PCP lifetime cannot \
                         exceed the longest",
                        config.pcp_min_lifetime, config.max_lifetime
                    ),
                ));
            }
        }
        self.check_interfaces(&interfaces)?;
        config.interfaces = interfaces.into_iter().map(|i| i.config).collect();

        if config.enabled {
            // Only reachable with `enabled` present, so its span is known; fall back to the
            // start of the file rather than panic if that ever changes.
            let span = enabled_span.unwrap_or(0..0);
            if config.external().is_none() {
                return Err(self.error(
                    span,
                    "enabled",
                    "enabled = true needs an [[interfaces]] entry with type = \"external\" \
                     that is not disabled",
                ));
            }
            if config.internals().next().is_none() {
                return Err(self.error(
                    span,
                    "enabled",
                    "enabled = true needs at least one [[interfaces]] entry with \
                     type = \"internal\" that is not disabled",
                ));
            }
        }
        Ok(config)
    }

    fn interfaces(&self, value: &Value<'_>) -> Result<Vec<ParsedInterface>, ConfigError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                "interfaces",
                format!(
                    "expected an array of tables ([[interfaces]]), found {}",
                    describe(value.get_ref())
                ),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| self.interface(index, item))
            .collect()
    }

    fn interface(&self, index: usize, item: &Value<'_>) -> Result<ParsedInterface, ConfigError> {
        let prefix = format!("interfaces[{index}]");
        let DeValue::Table(table) = item.get_ref() else {
            return Err(self.error(
                item.span(),
                &prefix,
                format!("expected a table, found {}", describe(item.get_ref())),
            ));
        };
        let mut name = None;
        let mut kind = None;
        let mut forced_ip = None;
        let mut disabled = false;

        for (key, value) in in_document_order(table) {
            let path = format!("{prefix}.{}", key.get_ref());
            match key.get_ref().as_ref() {
                "interface" => {
                    let text = self.string(&path, value)?;
                    if let Err(problem) = check_interface_name(text) {
                        return Err(self.error(value.span(), &path, problem));
                    }
                    name = Some((text.to_owned(), value.span()));
                }
                "type" => {
                    let k = match self.string(&path, value)? {
                        "external" => InterfaceKind::External,
                        "internal" => InterfaceKind::Internal,
                        other => {
                            return Err(self.error(
                                value.span(),
                                &path,
                                format!(
                                    "{other:?} is not an interface type \
                                     (expected \"external\" or \"internal\")"
                                ),
                            ))
                        }
                    };
                    kind = Some((k, value.span()));
                }
                "forced-ip" => {
                    let text = self.string(&path, value)?;
                    let addr = text.parse::<Ipv4Addr>().map_err(|_| {
                        self.error(
                            value.span(),
                            &path,
                            format!("{text:?} is not an IPv4 address"),
                        )
                    })?;
                    forced_ip = Some((addr, value.span()));
                }
                "disabled" => disabled = self.boolean(&path, value)?,
                _ => return Err(self.unknown_key(key, &format!("{prefix}."), INTERFACE_KEYS)),
            }
        }

        let Some((interface, name_span)) = name else {
            return Err(self.error(
                item.span(),
                &prefix,
                "missing the required key `interface` (the Linux interface name)",
            ));
        };
        let Some((kind, type_span)) = kind else {
            return Err(self.error(
                item.span(),
                &prefix,
                "missing the required key `type` (\"external\" or \"internal\")",
            ));
        };
        if let (InterfaceKind::Internal, Some((_, span))) = (kind, &forced_ip) {
            return Err(self.error(
                span.clone(),
                &format!("{prefix}.forced-ip"),
                "only allowed on an interface with type = \"external\"",
            ));
        }
        Ok(ParsedInterface {
            config: InterfaceConfig {
                interface,
                kind,
                forced_ip: forced_ip.map(|(addr, _)| addr),
                disabled,
            },
            name_span,
            type_span,
        })
    }

    /// Rules across entries; each error points at the later of the two entries involved, which
    /// is the one the operator most likely just added.
    fn check_interfaces(&self, interfaces: &[ParsedInterface]) -> Result<(), ConfigError> {
        let mut external: Option<usize> = None;
        for (index, entry) in interfaces.iter().enumerate() {
            let name = &entry.config.interface;
            if let Some(first) = interfaces[..index]
                .iter()
                .position(|e| e.config.interface == *name)
            {
                return Err(self.error(
                    entry.name_span.clone(),
                    &format!("interfaces[{index}].interface"),
                    format!(
                        "{name:?} is listed twice (first as interfaces[{first}], line {})",
                        self.line_col(interfaces[first].name_span.start).0
                    ),
                ));
            }
            if entry.config.kind == InterfaceKind::External && !entry.config.disabled {
                if let Some(first) = external {
                    return Err(self.error(
                        entry.type_span.clone(),
                        &format!("interfaces[{index}].type"),
                        format!(
                            "a second enabled external interface ({name:?}); \
                             interfaces[{first}] ({:?}, line {}) is already external and only \
                             one can be active (set disabled = true on one of them)",
                            interfaces[first].config.interface,
                            self.line_col(interfaces[first].type_span.start).0
                        ),
                    ));
                }
                external = Some(index);
            }
        }
        Ok(())
    }

    fn boolean(&self, path: &str, value: &Value<'_>) -> Result<bool, ConfigError> {
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            other => Err(self.type_error(value.span(), path, "a boolean (true or false)", other)),
        }
    }

    fn string<'v>(&self, path: &str, value: &'v Value<'_>) -> Result<&'v str, ConfigError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s),
            other => Err(self.type_error(value.span(), path, "a string", other)),
        }
    }

    fn path(&self, key: &str, value: &Value<'_>) -> Result<PathBuf, ConfigError> {
        let text = self.string(key, value)?;
        if text.is_empty() || text.contains('\0') {
            return Err(self.error(value.span(), key, format!("{text:?} is not a file path")));
        }
        Ok(PathBuf::from(text))
    }

    /// An integer in `1..=max`.
    fn positive(&self, key: &str, value: &Value<'_>, max: u64) -> Result<u64, ConfigError> {
        let DeValue::Integer(int) = value.get_ref() else {
            return Err(self.type_error(value.span(), key, "an integer", value.get_ref()));
        };
        // `as_str` is the digits without the radix prefix (but with a sign), in `radix`.
        let parsed = i128::from_str_radix(int.as_str(), int.radix()).ok();
        match parsed {
            Some(n) if n >= 1 && n <= i128::from(max) => Ok(n as u64),
            _ => Err(self.error(
                value.span(),
                key,
                format!("{} is out of range (1 to {max})", int.as_str()),
            )),
        }
    }

    fn port_range(&self, key: &str, value: &Value<'_>) -> Result<RangeInclusive<u16>, ConfigError> {
        let text = self.string(key, value)?;
        parse_port_range(text).map_err(|problem| {
            self.error(
                value.span(),
                key,
                format!("{text:?} is not a port range: {problem}"),
            )
        })
    }

    fn type_error(
        &self,
        span: Range<usize>,
        path: &str,
        expected: &str,
        found: &DeValue<'_>,
    ) -> ConfigError {
        self.error(
            span,
            path,
            format!("expected {expected}, found {}", describe(found)),
        )
    }

    fn unknown_key(
        &self,
        key: &Spanned<toml::de::DeString<'_>>,
        prefix: &str,
        known: &[&str],
    ) -> ConfigError {
        let name: &str = key.get_ref();
        // Most typos in practice are snake_case or RouterOS's own spellings with underscores.
        let hint = match known.iter().find(|k| **k == name.replace('_', "-")) {
            Some(k) => format!(" (did you mean `{k}`?)"),
            None => format!(" (expected one of: {})", known.join(", ")),
        };
        self.error(
            key.span(),
            &format!("{prefix}{}", display_key(name)),
            format!("unknown key{hint}"),
        )
    }

    fn syntax_error(&self, err: &toml::de::Error) -> ConfigError {
        // The parser's message is the bare problem; its Display would add a multi-line excerpt
        // that does not fit the one-line `FILE:LINE:COL:` form.
        let location = err.span().map(|span| self.line_col(span.start));
        ConfigError {
            origin: self.origin.to_owned(),
            location,
            key: None,
            problem: format!("invalid TOML: {}", err.message().trim_end()),
            source: None,
        }
    }

    fn error(&self, span: Range<usize>, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.to_owned(),
            location: Some(self.line_col(span.start)),
            key: Some(key.to_owned()),
            problem: problem.into(),
            source: None,
        }
    }

    /// 1-based line and column (counted in characters, as editors do) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// Table entries sorted by where their key appears, so the first error reported is the first in
/// the file (the map itself is ordered by key name).
fn in_document_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<toml::de::DeString<'i>>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// A key as it would be written in TOML: bare when it can be, quoted otherwise, so control
/// characters in a bad key cannot garble the message.
fn display_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the float {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        other => format!("a {}", other.type_str()),
    }
}

/// `"LOW-HIGH"` (or a single port) with `1 <= LOW <= HIGH <= 65535`. Port 0 is excluded: it is
/// not a port a mapping can be reached on.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (low.trim(), high.trim()),
        None => (text.trim(), text.trim()),
    };
    let port = |s: &str| -> Result<u16, String> {
        match s.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("{n} is not a port (1 to 65535)")),
            Err(_) if s.is_empty() => Err("expected \"LOW-HIGH\", e.g. \"1024-65535\"".into()),
            Err(_) => Err(format!("{s:?} is not a port number")),
        }
    };
    let (low, high) = (port(low)?, port(high)?);
    if low > high {
        return Err(format!("the low port {low} is above the high port {high}"));
    }
    Ok(low..=high)
}

/// Linux interface names: 1 to 15 characters of `[A-Za-z0-9._@-]`, and not `.` or `..`
/// (the kernel refuses those because they would clash with /sys and /proc paths).
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "{name:?} is not an interface name (1 to {MAX_INTERFACE_NAME} characters)"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not an interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        return Err(format!(
            "{name:?} is not an interface name ({c:?} is not allowed; use A-Z a-z 0-9 . _ @ -)"
        ));
    }
    Ok(())
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
