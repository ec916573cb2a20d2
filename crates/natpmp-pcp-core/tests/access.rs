//! Access rules (`[[access]]`, docs/protocol-choices.md "Access rules"): the first matching
//! rule decides per candidate (client, protocol, internal port, external port); with none, a
//! mapping is allowed. A denied suggestion gets another allowed port (CANNOT_PROVIDE_EXTERNAL
//! under PREFER_FAILURE); with no allowed port at all, NAT-PMP 2 or PCP NOT_AUTHORIZED and no
//! state. Both protocols, both families; a reload applies to new requests and renewals.

mod common;
use common::*;
use natpmp_pcp_core::addr::Prefix;
use natpmp_pcp_core::engine::access::{AccessRule, AccessRules, Action, PortRange};
use natpmp_pcp_core::{EngineConfig, Protocol};
use std::net::IpAddr;

fn rule(action: Action) -> AccessRule {
    AccessRule {
        action,
        clients: Vec::new(),
        protocols: Vec::new(),
        internal_ports: Vec::new(),
        external_ports: Vec::new(),
    }
}

fn host(a: IpAddr) -> Prefix {
    let len = if a.is_ipv4() { 32 } else { 128 };
    Prefix::new(a, len).unwrap()
}

fn with_rules(rules: Vec<AccessRule>) -> Gw {
    let mut gw = Gw::with_engine(EngineConfig {
        access: AccessRules(rules),
        ..EngineConfig::default()
    });
    gw.set_interfaces(interfaces_with_v6(Some(EXT)));
    gw
}

/// NAT-PMP refusal: result 2, the internal port, external port 0, lifetime 0, nothing changed.
#[track_caller]
fn natpmp_denied(gw: &mut Gw, client: std::net::Ipv4Addr, op: u8, iport: u16, eport: u16) {
    let before = gw.state();
    let req = map_request(op, iport, eport, 3600);
    let r = gw.reply(client, &req);
    assert_bytes(&r, &map_reply(op, 2, gw.sssoe(), iport, 0, 0));
    assert!(gw.changes.is_empty());
    assert_eq!(gw.state(), before);
}

#[test]
fn a_denied_client_gets_result_2_and_not_authorized_and_nothing_is_created() {
    let mut gw = with_rules(vec![AccessRule {
        clients: vec![host(v4(B))],
        ..rule(Action::Deny)
    }]);
    natpmp_denied(&mut gw, B, TCP, 8080, 8080);
    natpmp_denied(&mut gw, B, UDP, 9000, 0);
    let req = tcp_map(B, 8080, 600);
    let expected = pcp_error_reply(&req, PCP_NOT_AUTHORIZED, 1800, 0, true);
    gw.assert_refused(B, &req, &expected);
    let peer = pcp_peer_request(B, 600, NONCE, IP_UDP, 5000, 0, 4000, EXT2);
    let expected = pcp_error_reply(&peer, PCP_NOT_AUTHORIZED, 1800, 0, true);
    gw.assert_refused(B, &peer, &expected);
    // Everyone else is unaffected.
    assert_eq!(gw.map_ok(A, TCP, 8080, 8080, 3600), 8080);
}

#[test]
fn a_denied_protocol_or_internal_port_is_refused_and_the_rest_allowed() {
    let mut gw = with_rules(vec![
        AccessRule {
            protocols: vec![Protocol::Udp],
            ..rule(Action::Deny)
        },
        AccessRule {
            internal_ports: vec![PortRange::single(22)],
            ..rule(Action::Deny)
        },
    ]);
    natpmp_denied(&mut gw, A, UDP, 9000, 9000);
    natpmp_denied(&mut gw, A, TCP, 22, 2222);
    assert_eq!(gw.map_ok(A, TCP, 23, 2323, 3600), 2323);
}

#[test]
fn a_denied_external_port_gets_another_allowed_one() {
    // As with a taken port: another port, outside the denied range.
    let mut gw = with_rules(vec![AccessRule {
        external_ports: vec![PortRange::new(8000, 8999)],
        ..rule(Action::Deny)
    }]);
    for i in 0..20 {
        let eport = gw.map_ok(A, TCP, 8080 + i, 8080 + i, 3600);
        assert!(
            !(8000..=8999).contains(&eport),
            "got the denied port {eport}"
        );
    }
    let r = gw.pcp_ok(
        A,
        &pcp_map_request(A, 600, NONCE, IP_UDP, 8080, 8080, ZERO4),
    );
    assert!(!(8000..=8999).contains(&pcp_eport(&r)));
    // Under PREFER_FAILURE: CANNOT_PROVIDE_EXTERNAL, long-lived (the rule will not change by
    // itself).
    let mut req = pcp_map_request(A, 600, NONCE2, IP_UDP, 8181, 8181, ZERO4);
    req.extend(pcp_prefer_failure());
    let expected = pcp_error_reply(&req, PCP_CANNOT_PROVIDE_EXTERNAL, 1800, 0, true);
    gw.assert_refused(A, &req, &expected);
}

#[test]
fn an_allow_list_confines_a_client_to_its_ports_and_refuses_everyone_else() {
    // The RouterOS-style "allow this host these ports, deny the rest".
    let mut gw = with_rules(vec![
        AccessRule {
            clients: vec![host(v4(A))],
            external_ports: vec![PortRange::new(40000, 40004)],
            ..rule(Action::Allow)
        },
        rule(Action::Deny),
    ]);
    let mut got = Vec::new();
    for i in 0..5 {
        got.push(gw.map_ok(A, TCP, 1000 + i, 0, 3600));
    }
    got.sort();
    assert_eq!(got, vec![40000, 40001, 40002, 40003, 40004]);
    // All its allowed ports taken: out of resources (result 4), not "not authorized".
    let m = gw.map(A, TCP, 2000, 0, 3600);
    assert_eq!((m.result, m.eport), (OUT_OF_RESOURCES, 0));
    // Its UDP companions of those ports are still its own.
    assert!((40000..=40004).contains(&gw.map_ok(A, UDP, 1000, 0, 3600)));
    natpmp_denied(&mut gw, B, TCP, 1000, 40000);
}

#[test]
fn ipv6_pinholes_obey_the_rules_on_their_own_port() {
    // A pinhole's external port is its internal port: a denied one has no other port to go to.
    let mut gw = with_rules(vec![
        AccessRule {
            external_ports: vec![PortRange::single(22)],
            ..rule(Action::Deny)
        },
        AccessRule {
            clients: vec![host(IpAddr::V6(ip6(B6)))],
            ..rule(Action::Deny)
        },
    ]);
    let ssh = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 22, 0, ZERO6);
    let r = gw.send6(A6, 40000, &ssh).unwrap();
    assert_bytes(
        &r,
        &pcp_error_reply(&ssh, PCP_NOT_AUTHORIZED, 1800, 0, true),
    );
    let web = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 443, 0, ZERO6);
    assert_eq!(pcp_result(&gw.send6(A6, 40000, &web).unwrap()), PCP_SUCCESS);
    let other = pcp_map_request_field(wire6(B6), 600, NONCE, IP_TCP, 443, 0, ZERO6);
    assert_eq!(
        pcp_result(&gw.send6(B6, 40000, &other).unwrap()),
        PCP_NOT_AUTHORIZED
    );
    assert_eq!(gw.mappings().len(), 1);
}

#[test]
fn a_reload_applies_to_renewals_but_leaves_live_mappings_to_their_lifetime() {
    let mut gw = with_rules(Vec::new());
    let eport = gw.map_ok(B, TCP, 8080, 8080, 600);
    gw.pcp_ok(B, &tcp_map(B, 9090, 600));
    let mut config = gw.config().clone();
    config.engine.access = AccessRules(vec![AccessRule {
        clients: vec![host(v4(B))],
        ..rule(Action::Deny)
    }]);
    gw.reconfigure(config).unwrap();
    assert!(gw.changes.is_empty(), "a reload removed mappings");
    assert_eq!(gw.mappings().len(), 2);
    // The renewal is a request under the new rules.
    natpmp_denied(&mut gw, B, TCP, 8080, eport);
    let renew = tcp_map(B, 9090, 600);
    let expected = pcp_error_reply(&renew, PCP_NOT_AUTHORIZED, 1800, 0, true);
    gw.assert_refused(B, &renew, &expected);
    // A delete is never refused.
    let del = map_request(TCP, 8080, 0, 0);
    assert_bytes(
        &gw.reply(B, &del),
        &map_reply(TCP, SUCCESS, gw.sssoe(), 8080, 0, 0),
    );
    // The PCP mapping ends with its lifetime.
    gw.run_for(secs(601));
    assert!(gw.mappings().is_empty(), "{:?}", gw.mappings());
    assert!(gw.elements().is_empty());
}
