//! Access rules (`[[access]]` in the configuration): an ordered list of allow and deny rules,
//! each matching on client prefixes, protocols, internal ports and external ports. The first
//! rule that matches a candidate mapping decides; with none, the mapping is allowed.
//!
//! A rule is judged per candidate (client, protocol, internal port, external port), so the
//! allocator can look for another external port when the suggested one is denied. For that
//! [`AccessRules::allowed_external`] turns the rules that match a client, protocol and internal
//! port into the set of external ports they allow, as sorted disjoint ranges.

use crate::addr::{Prefix, Protocol};
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: 65535,
    };

    pub fn new(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    pub fn single(port: u16) -> PortRange {
        PortRange::new(port, port)
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// One rule. An empty list matches everything (a rule with only `action` matches every
/// candidate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub action: Action,
    pub clients: Vec<Prefix>,
    pub protocols: Vec<Protocol>,
    pub internal_ports: Vec<PortRange>,
    pub external_ports: Vec<PortRange>,
}

impl AccessRule {
    /// Whether everything but the external port matches.
    fn matches_request(&self, client: IpAddr, protocol: Protocol, internal_port: u16) -> bool {
        (self.clients.is_empty() || self.clients.iter().any(|p| p.contains(client)))
            && (self.protocols.is_empty() || self.protocols.contains(&protocol))
            && (self.internal_ports.is_empty()
                || self
                    .internal_ports
                    .iter()
                    .any(|r| r.contains(internal_port)))
    }

    fn matches_external(&self, port: u16) -> bool {
        self.external_ports.is_empty() || self.external_ports.iter().any(|r| r.contains(port))
    }
}

/// The ordered rule list. Empty (the default): everything is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules(pub Vec<AccessRule>);

impl AccessRules {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `client` may have `protocol`/`internal_port` on `external_port`: the first rule
    /// that matches decides, and with none it may.
    pub fn allows(
        &self,
        client: IpAddr,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
    ) -> bool {
        self.0
            .iter()
            .find(|r| {
                r.matches_request(client, protocol, internal_port)
                    && r.matches_external(external_port)
            })
            .is_none_or(|r| r.action == Action::Allow)
    }

    /// Every external port `client` may have for `protocol`/`internal_port`, as sorted,
    /// disjoint, non-adjacent ranges. Empty when the client, the protocol or the internal port
    /// is denied outright.
    ///
    /// The rules that match the request cut 0–65535 into segments at their range edges; inside
    /// a segment every rule either covers all of it or none of it, so the first rule covering
    /// a segment's first port decides the whole segment. Cost: O(rules × edges), paid only for
    /// a new mapping, and only when there are rules.
    pub fn allowed_external(
        &self,
        client: IpAddr,
        protocol: Protocol,
        internal_port: u16,
    ) -> Vec<PortRange> {
        let matching: Vec<&AccessRule> = self
            .0
            .iter()
            .filter(|r| r.matches_request(client, protocol, internal_port))
            .collect();
        let mut cuts: Vec<u32> = vec![0, 65536];
        for r in &matching {
            for range in &r.external_ports {
                cuts.push(u32::from(range.first));
                cuts.push(u32::from(range.last) + 1);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut allowed: Vec<PortRange> = Vec::new();
        for w in cuts.windows(2) {
            let (first, last) = (w[0] as u16, (w[1] - 1) as u16);
            let allow = matching
                .iter()
                .find(|r| r.matches_external(first))
                .is_none_or(|r| r.action == Action::Allow);
            if !allow {
                continue;
            }
            match allowed.last_mut() {
                Some(prev) if u32::from(prev.last) + 1 == u32::from(first) => prev.last = last,
                _ => allowed.push(PortRange::new(first, last)),
            }
        }
        allowed
    }
}

/// `ranges` (sorted, disjoint) cut down to `first..=last`.
pub fn clip(ranges: &[PortRange], first: u16, last: u16) -> Vec<PortRange> {
    ranges
        .iter()
        .filter(|r| r.last >= first && r.first <= last)
        .map(|r| PortRange::new(r.first.max(first), r.last.min(last)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn prefix(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    fn rule(action: Action) -> AccessRule {
        AccessRule {
            action,
            clients: Vec::new(),
            protocols: Vec::new(),
            internal_ports: Vec::new(),
            external_ports: Vec::new(),
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 10));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 88, 20));

    #[test]
    fn no_rules_allow_everything() {
        let rules = AccessRules::default();
        assert!(rules.allows(A, Protocol::Tcp, 22, 22));
        assert_eq!(
            rules.allowed_external(A, Protocol::Udp, 1),
            vec![PortRange::ALL]
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        // Allow A everything; deny everyone else the privileged ports.
        let rules = AccessRules(vec![
            AccessRule {
                clients: vec![prefix("192.168.88.10/32")],
                ..rule(Action::Allow)
            },
            AccessRule {
                external_ports: vec![PortRange::new(0, 1023)],
                ..rule(Action::Deny)
            },
        ]);
        assert!(rules.allows(A, Protocol::Tcp, 80, 80));
        assert!(!rules.allows(B, Protocol::Tcp, 80, 80));
        assert!(rules.allows(B, Protocol::Tcp, 80, 8080));
        assert_eq!(
            rules.allowed_external(B, Protocol::Tcp, 80),
            vec![PortRange::new(1024, 65535)]
        );
        assert_eq!(
            rules.allowed_external(A, Protocol::Tcp, 80),
            vec![PortRange::ALL]
        );
    }

    #[test]
    fn a_denied_client_protocol_or_internal_port_has_no_external_port_at_all() {
        let rules = AccessRules(vec![
            AccessRule {
                clients: vec![prefix("192.168.88.20/32")],
                ..rule(Action::Deny)
            },
            AccessRule {
                protocols: vec![Protocol::Udp],
                internal_ports: vec![PortRange::single(53)],
                ..rule(Action::Deny)
            },
        ]);
        assert!(rules.allowed_external(B, Protocol::Tcp, 8080).is_empty());
        assert!(rules.allowed_external(A, Protocol::Udp, 53).is_empty());
        assert_eq!(
            rules.allowed_external(A, Protocol::Tcp, 53),
            vec![PortRange::ALL]
        );
    }

    #[test]
    fn allowed_ranges_are_exactly_the_ports_allows_accepts() {
        // Nested and overlapping ranges in both directions, checked port by port.
        let rules = AccessRules(vec![
            AccessRule {
                external_ports: vec![PortRange::new(2000, 2010), PortRange::single(65535)],
                ..rule(Action::Allow)
            },
            AccessRule {
                external_ports: vec![PortRange::new(1000, 3000)],
                ..rule(Action::Deny)
            },
            AccessRule {
                protocols: vec![Protocol::Tcp],
                external_ports: vec![PortRange::new(40000, 65535)],
                ..rule(Action::Deny)
            },
        ]);
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let ranges = rules.allowed_external(A, protocol, 7);
            for w in ranges.windows(2) {
                assert!(
                    u32::from(w[0].last) + 1 < u32::from(w[1].first),
                    "{ranges:?}"
                );
            }
            for port in 0..=65535u16 {
                assert_eq!(
                    ranges.iter().any(|r| r.contains(port)),
                    rules.allows(A, protocol, 7, port),
                    "{protocol} port {port}: {ranges:?}"
                );
            }
        }
    }

    #[test]
    fn clip_keeps_the_part_inside() {
        let r = vec![PortRange::new(0, 100), PortRange::new(2000, 3000)];
        assert_eq!(
            clip(&r, 50, 2500),
            vec![PortRange::new(50, 100), PortRange::new(2000, 2500)]
        );
        assert!(clip(&r, 101, 1999).is_empty());
    }
}
