//! `natpmpctl print`: the mappings in the shape of RouterOS's `/ip firewall nat print` (IPv4
//! port forwards, dynamic dst-nat rules) and `/ipv6 firewall filter print` (IPv6 pinholes,
//! dynamic forward accept rules), as text for people and as JSON for scripts and tests. Pure
//! functions over a `Response`.

use super::Response;
use natpmp_pcp_core::view::{MappingKind, Via};
use natpmp_pcp_core::{MappingView, Protocol};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The header RouterOS prints above every rule listing.
pub const FLAGS_HEADER: &str = "Flags: X - disabled, I - invalid, D - dynamic";

/// One mapping as a RouterOS rule: a dst-nat rule for an IPv4 forward, a forward accept rule for
/// an IPv6 pinhole. Field order and names are the JSON output's keys, which other tools parse:
/// change them only together with everything that reads them.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct NatRule {
    pub number: usize,
    pub flags: &'static str,
    pub comment: String,
    pub chain: &'static str,
    pub action: &'static str,
    /// Where a forward translates to; absent for a pinhole (no translation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_addresses: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<u16>,
    pub protocol: Protocol,
    /// The remotes admitted: a PEER's one address, a FILTERed MAP's prefixes; absent when
    /// anyone may connect.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub src_address: Vec<String>,
    /// A PEER's remote port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dst_address: Option<IpAddr>,
    pub in_interface: Option<String>,
    pub dst_port: u16,
    pub lifetime: u32,
    pub lifetime_left: u32,
    pub client: IpAddr,
    /// The protocol that made the mapping: `nat-pmp` or `pcp`.
    pub via: Via,
    pub kind: MappingKind,
    /// Whether a PCP nonce owns it: only requests carrying that nonce may change it.
    pub nonce_owned: bool,
    /// The client's own DESCRIPTION (RFC 7220), if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `ipv4` (a port forward) or `ipv6` (a pinhole).
    pub family: &'static str,
}

impl NatRule {
    pub fn new(number: usize, mapping: &MappingView, external_interface: Option<&str>) -> Self {
        let (src_address, src_port) = match mapping.remote {
            Some(r) => (vec![r.ip().to_string()], Some(r.port())),
            None => (mapping.filters.clone(), None),
        };
        let pinhole = mapping.client.is_ipv6();
        NatRule {
            number,
            // Every mapping is dynamic: made by the daemon, gone when it expires.
            flags: "D",
            comment: format!("nat-pmp {}: {}", mapping.client, mapping.comment_text()),
            chain: if pinhole { "forward" } else { "dstnat" },
            action: if pinhole { "accept" } else { "dst-nat" },
            to_addresses: (!pinhole).then_some(mapping.client),
            to_ports: (!pinhole).then_some(mapping.internal_port),
            protocol: mapping.protocol,
            src_address,
            src_port,
            dst_address: mapping.external_addr,
            in_interface: external_interface.map(str::to_owned),
            dst_port: mapping.external_port,
            lifetime: mapping.lifetime,
            lifetime_left: mapping.expires_in,
            client: mapping.client,
            via: mapping.via,
            kind: mapping.kind,
            nonce_owned: mapping.nonce_owned,
            description: mapping.description.clone(),
            family: if pinhole { "ipv6" } else { "ipv4" },
        }
    }
}

/// The rules for a response's mappings, numbered from 0 in the daemon's order.
pub fn rules(response: &Response) -> Vec<NatRule> {
    response
        .mappings
        .iter()
        .enumerate()
        .map(|(n, m)| NatRule::new(n, m, response.external_interface.as_deref()))
        .collect()
}

/// `{"mappings":[...]}` on one line (no trailing newline).
pub fn format_json(response: &Response) -> String {
    #[derive(Serialize)]
    struct Listing {
        mappings: Vec<NatRule>,
    }
    serde_json::to_string(&Listing {
        mappings: rules(response),
    })
    // Only plain strings and numbers: serialisation cannot fail, but never panic on it.
    .unwrap_or_else(|_| r#"{"mappings":[]}"#.to_owned())
}

/// The RouterOS-style listing, one header line and two lines per mapping, each ending in a
/// newline.
pub fn format_text(response: &Response) -> String {
    let rules = rules(response);
    // RouterOS right-aligns rule numbers to the widest one, at least two columns.
    let width = rules.len().saturating_sub(1).to_string().len().max(2);
    let indent = " ".repeat(width + 4);
    let mut out = String::new();
    out.push_str(FLAGS_HEADER);
    out.push('\n');
    for rule in &rules {
        let _ = writeln!(
            out,
            "{:>width$}  {} ;;; {}",
            rule.number,
            rule.flags,
            printable(&rule.comment)
        );
        let _ = write!(out, "{indent}chain={} action={}", rule.chain, rule.action);
        if let (Some(addr), Some(port)) = (rule.to_addresses, rule.to_ports) {
            let _ = write!(out, " to-addresses={addr} to-ports={port}");
        }
        let _ = write!(out, " protocol={}", rule.protocol);
        if !rule.src_address.is_empty() {
            let _ = write!(out, " src-address={}", rule.src_address.join(","));
        }
        if let Some(port) = rule.src_port {
            let _ = write!(out, " src-port={port}");
        }
        if let Some(addr) = rule.dst_address {
            let _ = write!(out, " dst-address={addr}");
        }
        if let Some(interface) = &rule.in_interface {
            let _ = write!(out, " in-interface={}", printable(interface));
        }
        let _ = writeln!(
            out,
            " dst-port={} lifetime={} left={} via={}{}",
            rule.dst_port,
            format_duration(u64::from(rule.lifetime)),
            format_duration(u64::from(rule.lifetime_left)),
            rule.via.as_str(),
            if rule.nonce_owned {
                " nonce-owned=yes"
            } else {
                ""
            }
        );
    }
    out
}

/// A duration as RouterOS writes it: `1w2d3h4m5s`, zero units left out, `0s` for nothing.
pub fn format_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let units = [
        (7 * 24 * 3600, 'w'),
        (24 * 3600, 'd'),
        (3600, 'h'),
        (60, 'm'),
        (1, 's'),
    ];
    let mut rest = seconds;
    let mut out = String::new();
    for (size, unit) in units {
        let count = rest / size;
        rest %= size;
        if count > 0 {
            let _ = write!(out, "{count}{unit}");
        }
    }
    out
}

/// Control characters replaced, so a description from the network cannot move the cursor or
/// forge extra lines in an operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::Ipv4Addr;

    fn mapping(client: [u8; 4], protocol: Protocol, internal: u16, external: u16) -> MappingView {
        MappingView {
            client: Ipv4Addr::from(client).into(),
            protocol,
            internal_port: internal,
            external_addr: Some(Ipv4Addr::new(203, 0, 113, 1).into()),
            external_port: external,
            lifetime: 7200,
            expires_in: 7198,
            via: Via::NatPmp,
            kind: MappingKind::Map,
            nonce_owned: false,
            remote: None,
            filters: Vec::new(),
            description: None,
        }
    }

    fn response(mappings: Vec<MappingView>) -> Response {
        Response {
            ok: true,
            error: None,
            external_interface: Some("ether1".into()),
            status: None,
            removed: Vec::new(),
            mappings,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(60), "1m");
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(7198), "1h59m58s");
        assert_eq!(format_duration(86400), "1d");
        assert_eq!(format_duration(93784), "1d2h3m4s");
        assert_eq!(format_duration(8 * 86400 + 1), "1w1d1s");
        assert_eq!(format_duration(u64::from(u32::MAX)), "7101w3d6h28m15s");
    }

    #[test]
    fn text_matches_routeros_shape() {
        let r = response(vec![mapping(
            [192, 168, 88, 10],
            Protocol::Tcp,
            8080,
            40000,
        )]);
        assert_eq!(
            format_text(&r),
            "Flags: X - disabled, I - invalid, D - dynamic\n\
             \x200  D ;;; nat-pmp 192.168.88.10: NAT-PMP tcp 8080\n\
             \x20     chain=dstnat action=dst-nat to-addresses=192.168.88.10 to-ports=8080 \
             protocol=tcp dst-address=203.0.113.1 in-interface=ether1 dst-port=40000 \
             lifetime=2h left=1h59m58s via=nat-pmp\n"
        );
    }

    #[test]
    fn pinholes_print_as_routeros_ipv6_forward_accept_rules() {
        let host: IpAddr = "2001:db8:1::10".parse().unwrap();
        let mut m = mapping([0, 0, 0, 0], Protocol::Tcp, 8080, 8080);
        m.client = host;
        m.external_addr = Some(host);
        m.via = Via::Pcp;
        m.nonce_owned = true;
        m.filters = vec!["2001:db8:ff::/64".into()];
        let text = format_text(&response(vec![m]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], " 0  D ;;; nat-pmp 2001:db8:1::10: PCP tcp 8080");
        assert_eq!(
            lines[2],
            "      chain=forward action=accept protocol=tcp src-address=2001:db8:ff::/64 \
             dst-address=2001:db8:1::10 in-interface=ether1 dst-port=8080 lifetime=2h \
             left=1h59m58s via=pcp nonce-owned=yes"
        );
        let json: serde_json::Value =
            serde_json::from_str(&format_json(&response(vec![MappingView {
                client: host,
                external_addr: Some(host),
                ..mapping([0, 0, 0, 0], Protocol::Udp, 5000, 5000)
            }])))
            .unwrap();
        let rule = &json["mappings"][0];
        assert_eq!(rule["family"], "ipv6");
        assert_eq!(rule["chain"], "forward");
        assert_eq!(rule["action"], "accept");
        assert_eq!(rule["dst-address"], "2001:db8:1::10");
        assert!(rule.get("to-addresses").is_none() && rule.get("to-ports").is_none());
    }

    #[test]
    fn pcp_mappings_show_description_filters_peer_and_nonce() {
        let mut map = mapping([192, 168, 88, 10], Protocol::Tcp, 8080, 8080);
        map.via = Via::Pcp;
        map.nonce_owned = true;
        map.description = Some("ApplicationX".into());
        map.filters = vec!["198.51.100.0/24".into(), "203.0.113.7/32:4000".into()];
        let mut peer = mapping([192, 168, 88, 10], Protocol::Udp, 5000, 5000);
        peer.via = Via::Pcp;
        peer.kind = MappingKind::Peer;
        peer.nonce_owned = true;
        peer.remote = Some("198.51.100.7:4000".parse().unwrap());
        let text = format_text(&response(vec![map, peer]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], " 0  D ;;; nat-pmp 192.168.88.10: ApplicationX");
        assert!(
            lines[2].contains(
                " protocol=tcp src-address=198.51.100.0/24,203.0.113.7/32:4000 dst-address="
            ),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].ends_with(" via=pcp nonce-owned=yes"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], " 1  D ;;; nat-pmp 192.168.88.10: PCP udp 5000");
        assert!(
            lines[4].contains(" protocol=udp src-address=198.51.100.7 src-port=4000 dst-address="),
            "{}",
            lines[4]
        );
        let v: serde_json::Value = serde_json::from_str(&format_json(&response(vec![]))).unwrap();
        assert_eq!(v["mappings"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn text_without_external_address_or_interface() {
        let mut m = mapping([192, 168, 88, 11], Protocol::Udp, 5000, 5001);
        m.external_addr = None;
        let r = Response {
            external_interface: None,
            ..response(vec![m])
        };
        let text = format_text(&r);
        assert!(!text.contains("dst-address"), "{text}");
        assert!(!text.contains("in-interface"), "{text}");
        assert!(text.contains("protocol=udp dst-port=5001 "), "{text}");
    }

    #[test]
    fn text_empty_is_just_the_header() {
        assert_eq!(format_text(&response(vec![])), format!("{FLAGS_HEADER}\n"));
    }

    #[test]
    fn numbers_widen_past_two_digits() {
        let many: Vec<_> = (0..101)
            .map(|i| mapping([192, 168, 88, 10], Protocol::Udp, 1000 + i, 2000 + i))
            .collect();
        let text = format_text(&response(many));
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[1].starts_with("  0  D ;;;"), "{}", lines[1]);
        assert!(lines[2].starts_with("       chain="), "{}", lines[2]);
        assert!(lines[201].starts_with("100  D ;;;"), "{}", lines[201]);
    }

    #[test]
    fn control_characters_are_not_printed() {
        let mut m = mapping([192, 168, 88, 10], Protocol::Tcp, 1, 2);
        m.description = Some("evil\n 1  D ;;; forged\x1b[2J".into());
        let text = format_text(&response(vec![m]));
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn json_exact() {
        let r = response(vec![mapping(
            [192, 168, 88, 10],
            Protocol::Tcp,
            8080,
            40000,
        )]);
        assert_eq!(
            format_json(&r),
            r#"{"mappings":[{"number":0,"flags":"D","comment":"nat-pmp 192.168.88.10: NAT-PMP tcp 8080","chain":"dstnat","action":"dst-nat","to-addresses":"192.168.88.10","to-ports":8080,"protocol":"tcp","dst-address":"203.0.113.1","in-interface":"ether1","dst-port":40000,"lifetime":7200,"lifetime-left":7198,"client":"192.168.88.10","via":"nat-pmp","kind":"map","nonce-owned":false,"family":"ipv4"}]}"#
        );
    }

    #[test]
    fn json_null_address_and_order() {
        let mut second = mapping([192, 168, 88, 12], Protocol::Udp, 53, 5353);
        second.external_addr = None;
        let r = response(vec![
            mapping([192, 168, 88, 11], Protocol::Tcp, 22, 2222),
            second,
        ]);
        let v: serde_json::Value = serde_json::from_str(&format_json(&r)).unwrap();
        let list = v["mappings"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["number"], 0);
        assert_eq!(list[0]["client"], "192.168.88.11");
        assert_eq!(list[1]["number"], 1);
        assert_eq!(list[1]["dst-address"], serde_json::Value::Null);
        assert_eq!(list[1]["protocol"], "udp");
        assert_eq!(format_json(&response(vec![])), r#"{"mappings":[]}"#);
    }
}
