//! `natpmpctl status`: the daemon's state in brief, gathered from the gateway in the event
//! loop (a pure function of it) and formatted in natpmpctl, as text for people and JSON for
//! scripts.

use super::print::format_duration;
use natpmp_pcp_core::gateway::DriftFinding;
use natpmp_pcp_core::{Forwarder, Gateway, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// Mappings of one protocol and family.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MappingCount {
    /// `tcp`, `udp` (or another protocol's name).
    pub protocol: String,
    /// `ipv4` (port forwards) or `ipv6` (pinholes).
    pub family: String,
    pub count: usize,
}

/// The kernel table as the last drift check found it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TableState {
    /// Not checked (yet, or there is no kernel backend to check).
    Unchecked,
    /// Whole, and holding exactly natpmpd's elements.
    Intact,
    /// Found changed by someone else, and put right.
    Repaired,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub serving: bool,
    pub external_interface: Option<String>,
    /// The addresses mappings are reachable on (IPv6 pinholes use the host's own address).
    pub external_addresses: Vec<IpAddr>,
    /// Seconds since the start of the epoch.
    pub epoch: u32,
    /// Seconds since natpmpd started.
    pub uptime: u64,
    pub mappings_total: usize,
    pub mappings: Vec<MappingCount>,
    pub kernel_table: TableState,
    /// Seconds since the last drift check, and what it found in words.
    pub last_drift_check: Option<u64>,
    pub last_drift_finding: Option<String>,
    /// Seconds since the last drift repair; `None`: never repaired.
    pub last_drift_repair: Option<u64>,
    pub drift_repairs: u64,
}

/// What `status` answers, now.
pub fn gather<F: Forwarder>(gateway: &Gateway<F>, now: Timestamp, uptime: Duration) -> Status {
    let views = gateway.mappings(now);
    let mut mappings: Vec<MappingCount> = Vec::new();
    for v in &views {
        let protocol = v.protocol.to_string();
        let family = if v.client.is_ipv6() { "ipv6" } else { "ipv4" };
        match mappings
            .iter_mut()
            .find(|c| c.protocol == protocol && c.family == family)
        {
            Some(c) => c.count += 1,
            None => mappings.push(MappingCount {
                protocol,
                family: family.to_owned(),
                count: 1,
            }),
        }
    }
    mappings.sort_by(|a, b| (&a.family, &a.protocol).cmp(&(&b.family, &b.protocol)));
    let stats = gateway.stats();
    let ago = |t: Timestamp| now.since(t).as_secs();
    let (kernel_table, last_drift_check, last_drift_finding) = match &stats.last_drift_check {
        None => (TableState::Unchecked, None, None),
        Some((t, finding)) => {
            let (state, words) = match finding {
                DriftFinding::Intact => (TableState::Intact, "intact".to_owned()),
                DriftFinding::Repaired { added, removed } => (
                    TableState::Repaired,
                    format!("{added} element(s) put back, {removed} unknown removed"),
                ),
                DriftFinding::Rebuilt { why } => {
                    (TableState::Repaired, format!("rebuilt: the table {why}"))
                }
            };
            (state, Some(ago(*t)), Some(words))
        }
    };
    Status {
        serving: gateway.serving(),
        external_interface: gateway.external_interface().map(str::to_owned),
        external_addresses: gateway
            .engine()
            .external_address()
            .map(IpAddr::V4)
            .into_iter()
            .collect(),
        epoch: gateway.engine().epoch_seconds(now),
        uptime: uptime.as_secs(),
        mappings_total: views.len(),
        mappings,
        kernel_table,
        last_drift_check,
        last_drift_finding,
        last_drift_repair: stats.last_drift_repair.map(ago),
        drift_repairs: stats.drift_repairs,
    }
}

/// The status as one JSON line (no trailing newline).
pub fn format_json(status: &Status) -> String {
    serde_json::to_string(status).unwrap_or_else(|_| "{}".to_owned())
}

/// The status as `name: value` lines, each ending in a newline.
pub fn format_text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "serving: {}",
        if s.serving {
            "yes"
        } else {
            "no (enabled = false)"
        }
    );
    let _ = writeln!(
        out,
        "external-interface: {}",
        s.external_interface.as_deref().unwrap_or("none")
    );
    let addresses: Vec<String> = s.external_addresses.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "external-address: {}",
        if addresses.is_empty() {
            "none".to_owned()
        } else {
            addresses.join(", ")
        }
    );
    let _ = writeln!(out, "epoch: {}s", s.epoch);
    let _ = writeln!(out, "uptime: {}", format_duration(s.uptime));
    let _ = writeln!(out, "mappings: {}", s.mappings_total);
    for c in &s.mappings {
        let _ = writeln!(out, "  {} {}: {}", c.family, c.protocol, c.count);
    }
    let table = match (&s.kernel_table, s.last_drift_check) {
        (TableState::Unchecked, _) | (_, None) => "not checked".to_owned(),
        (TableState::Intact, Some(ago)) => format!("intact (checked {} ago)", format_duration(ago)),
        (TableState::Repaired, Some(ago)) => format!(
            "repaired {} ago: {}",
            format_duration(ago),
            s.last_drift_finding.as_deref().unwrap_or("")
        ),
    };
    let _ = writeln!(out, "kernel-table: {table}");
    let _ = writeln!(
        out,
        "last-drift-repair: {}",
        match s.last_drift_repair {
            None => "never".to_owned(),
            Some(ago) => format!("{} ago ({} in all)", format_duration(ago), s.drift_repairs),
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_field() {
        let s = Status {
            serving: true,
            external_interface: Some("ether1".into()),
            external_addresses: vec!["203.0.113.1".parse().unwrap()],
            epoch: 42,
            uptime: 3725,
            mappings_total: 3,
            mappings: vec![
                MappingCount {
                    protocol: "tcp".into(),
                    family: "ipv4".into(),
                    count: 2,
                },
                MappingCount {
                    protocol: "udp".into(),
                    family: "ipv6".into(),
                    count: 1,
                },
            ],
            kernel_table: TableState::Intact,
            last_drift_check: Some(1),
            last_drift_finding: Some("intact".into()),
            last_drift_repair: None,
            drift_repairs: 0,
        };
        assert_eq!(
            format_text(&s),
            "serving: yes\nexternal-interface: ether1\nexternal-address: 203.0.113.1\n\
             epoch: 42s\nuptime: 1h2m5s\nmappings: 3\n  ipv4 tcp: 2\n  ipv6 udp: 1\n\
             kernel-table: intact (checked 1s ago)\nlast-drift-repair: never\n"
        );
        let json: serde_json::Value = serde_json::from_str(&format_json(&s)).unwrap();
        assert_eq!(json["kernel_table"], "intact");
        assert_eq!(json["external_addresses"][0], "203.0.113.1");
        assert_eq!(json["mappings"][1]["family"], "ipv6");
    }
}
