//! Parsing the TOML document into a [`Config`]: walked by hand over `toml::de::DeTable`, so
//! that every error names the key path and points at the line (see the module docs of
//! `config`).

mod access;

use super::*;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

type Value<'i> = Spanned<DeValue<'i>>;

/// An interface entry with the spans the cross-entry rules point at.
struct ParsedInterface {
    config: InterfaceConfig,
    name_span: Range<usize>,
    type_span: Range<usize>,
}

pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

impl Parser<'_> {
    pub(super) fn parse(&self) -> Result<Config, ConfigError> {
        let root = DeTable::parse(self.text).map_err(|e| self.syntax_error(&e))?;
        let mut config = Config::default();
        let mut enabled_span = None;
        let mut min_lifetime_span = None;
        let mut burst_span = None;
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
                "metrics-listen" => {
                    let text = self.string(name, value)?;
                    let addr = text.parse::<std::net::SocketAddr>().map_err(|_| {
                        self.error(
                            value.span(),
                            name,
                            format!(
                                "{text:?} is not an address and port (e.g. \"127.0.0.1:9851\" \
                                 or \"[::1]:9851\")"
                            ),
                        )
                    })?;
                    if addr.port() == 0 {
                        return Err(self.error(
                            value.span(),
                            name,
                            "port 0 is not a port Prometheus can scrape; name one (e.g. 9851)",
                        ));
                    }
                    config.metrics_listen = Some(addr);
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
                "connection-mark" => {
                    let mark = self.positive(name, value, u64::from(u32::MAX))? as u32;
                    if !mark.is_power_of_two() {
                        return Err(self.error(
                            value.span(),
                            name,
                            format!(
                                "{mark:#010x} sets {} bits; natpmpd sets exactly one bit of the \
                                 conntrack mark and keeps the others (e.g. 0x00100000)",
                                mark.count_ones()
                            ),
                        ));
                    }
                    config.connection_mark = mark;
                }
                "pcp-max-filters" => {
                    config.pcp_max_filters =
                        self.positive(name, value, MAX_PCP_MAX_FILTERS)? as usize
                }
                "interfaces" => interfaces = self.interfaces(value)?,
                "access" => config.access = AccessRules(self.access_rules(value)?),
                "reserved-ports" => config.reserved_ports = self.port_list(name, value)?,
                "rate-limit" => {
                    config.rate_limit = self.non_negative(name, value, u64::from(u32::MAX))? as u32
                }
                "rate-limit-burst" => {
                    config.rate_limit_burst =
                        self.non_negative(name, value, u64::from(u32::MAX))? as u32;
                    burst_span = Some(value.span());
                }
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
        // Only an explicit 0 can be 0 (the default is not), so its span is known.
        if let (0, Some(span)) = (config.rate_limit_burst, burst_span) {
            if config.rate_limit != 0 {
                return Err(self.error(
                    span,
                    "rate-limit-burst",
                    format!(
                        "0 with rate-limit = {}: no request could ever pass; the burst must be \
                         at least 1 (rate-limit = 0 turns the limit off)",
                        config.rate_limit
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

    /// An integer in `0..=max`.
    fn non_negative(&self, key: &str, value: &Value<'_>, max: u64) -> Result<u64, ConfigError> {
        let DeValue::Integer(int) = value.get_ref() else {
            return Err(self.type_error(value.span(), key, "an integer", value.get_ref()));
        };
        match i128::from_str_radix(int.as_str(), int.radix()).ok() {
            Some(n) if n >= 0 && n <= i128::from(max) => Ok(n as u64),
            _ => Err(self.error(
                value.span(),
                key,
                format!("{} is out of range (0 to {max})", int.as_str()),
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
