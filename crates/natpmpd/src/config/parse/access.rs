//! `[[access]]` rules and `reserved-ports`: the lists of who may map what, and which external
//! ports the router keeps for itself. Every error names the key path (`access[2].clients[0]`)
//! and points at the line.

use super::{describe, in_document_order, Parser, Value};
use crate::config::{ConfigError, ACCESS_KEYS};
use natpmp_pcp_core::addr::{Prefix, Protocol};
use natpmp_pcp_core::engine::access::{AccessRule, Action, PortRange};
use std::net::IpAddr;
use toml::de::DeValue;

impl Parser<'_> {
    pub(super) fn access_rules(&self, value: &Value<'_>) -> Result<Vec<AccessRule>, ConfigError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                "access",
                format!(
                    "expected an array of tables ([[access]]), found {}",
                    describe(value.get_ref())
                ),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| self.access_rule(index, item))
            .collect()
    }

    fn access_rule(&self, index: usize, item: &Value<'_>) -> Result<AccessRule, ConfigError> {
        let prefix = format!("access[{index}]");
        let DeValue::Table(table) = item.get_ref() else {
            return Err(self.error(
                item.span(),
                &prefix,
                format!("expected a table, found {}", describe(item.get_ref())),
            ));
        };
        let mut action = None;
        let mut rule = AccessRule {
            action: Action::Allow,
            clients: Vec::new(),
            protocols: Vec::new(),
            internal_ports: Vec::new(),
            external_ports: Vec::new(),
        };
        for (key, value) in in_document_order(table) {
            let path = format!("{prefix}.{}", key.get_ref());
            match key.get_ref().as_ref() {
                "action" => {
                    action = Some(match self.string(&path, value)? {
                        "allow" => Action::Allow,
                        "deny" => Action::Deny,
                        other => {
                            return Err(self.error(
                                value.span(),
                                &path,
                                format!(
                                    "{other:?} is not an action (expected \"allow\" or \"deny\")"
                                ),
                            ))
                        }
                    })
                }
                "clients" => rule.clients = self.list(&path, value, |p, v| self.client(p, v))?,
                "protocols" => {
                    rule.protocols = self.list(&path, value, |p, v| self.protocol(p, v))?
                }
                "internal-ports" => rule.internal_ports = self.port_list(&path, value)?,
                "external-ports" => rule.external_ports = self.port_list(&path, value)?,
                // A note for the operator, as RouterOS rules have; natpmpd only logs it.
                "comment" => {
                    self.string(&path, value)?;
                }
                _ => return Err(self.unknown_key(key, &format!("{prefix}."), ACCESS_KEYS)),
            }
        }
        rule.action = action.ok_or_else(|| {
            self.error(
                item.span(),
                &prefix,
                "missing `action` (\"allow\" or \"deny\")",
            )
        })?;
        Ok(rule)
    }

    /// A list of ports and port ranges: integers, or strings `"PORT"` / `"LOW-HIGH"`.
    pub(super) fn port_list(
        &self,
        path: &str,
        value: &Value<'_>,
    ) -> Result<Vec<PortRange>, ConfigError> {
        self.list(path, value, |p, v| match v.get_ref() {
            DeValue::Integer(_) => {
                let port = self.positive(p, v, 65535)? as u16;
                Ok(PortRange::single(port))
            }
            DeValue::String(_) => {
                let r = self.port_range(p, v)?;
                Ok(PortRange::new(*r.start(), *r.end()))
            }
            other => Err(self.type_error(
                v.span(),
                p,
                "a port (8080) or a range (\"8000-8100\")",
                other,
            )),
        })
    }

    /// An array whose items `item` parses; each item's path is `path[i]`. Empty arrays are
    /// refused: an empty list would silently match everything.
    fn list<T>(
        &self,
        path: &str,
        value: &Value<'_>,
        item: impl Fn(&str, &Value<'_>) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.type_error(value.span(), path, "an array", value.get_ref()));
        };
        if items.is_empty() {
            return Err(self.error(
                value.span(),
                path,
                "an empty list; leave the key out to match everything",
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| item(&format!("{path}[{i}]"), v))
            .collect()
    }

    /// `"192.168.88.10"`, `"192.168.88.0/24"`, `"2001:db8:1::/64"`.
    fn client(&self, path: &str, value: &Value<'_>) -> Result<Prefix, ConfigError> {
        let text = self.string(path, value)?;
        let bad = |why: &str| self.error(value.span(), path, format!("{text:?} {why}"));
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| bad("is not an address or a prefix (e.g. \"192.168.88.0/24\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(&format!("has a bad prefix length (0 to {max})"))),
            },
        };
        let prefix = Prefix::new(addr, len).ok_or_else(|| bad("is not a prefix"))?;
        if prefix.addr() != addr {
            return Err(bad(&format!(
                "has host bits set; the prefix is {}/{len}",
                prefix.addr()
            )));
        }
        Ok(prefix)
    }

    fn protocol(&self, path: &str, value: &Value<'_>) -> Result<Protocol, ConfigError> {
        match self.string(path, value)? {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(self.error(
                value.span(),
                path,
                format!("{other:?} is not a protocol (expected \"tcp\" or \"udp\")"),
            )),
        }
    }
}
