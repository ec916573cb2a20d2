//! ANNOUNCE and Mapping Update (rfc-checklist §3.7, RFC 6887 §14; §4 cases 25, 65, 66; §6
//! A12): the ANNOUNCE request, the start-up train carrying both the NAT-PMP and the PCP
//! announcement on the RFC 6886 schedule, state loss, and the unicast Mapping Updates an
//! external address change sends (3 copies at 0, 250 and 750 ms, to the client's last address
//! and port, from the address it used, with the new address, the remaining lifetime, the nonce
//! and the FILTERs; none for a client that refreshed, none for NAT-PMP mappings).

mod common;
use common::*;
use natpmp_pcp_core::gateway::interfaces::IfAddr;
use natpmp_pcp_core::{Outgoing, Timestamp};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// A second gateway address on the LAN interface.
const GW_LAN2: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 2);

/// Wake the gateway as the daemon would, up to `until`, and return everything sent with the
/// milliseconds since `base` at which it was sent.
fn sent_until(gw: &mut Gw, base: Timestamp, until: Timestamp) -> Vec<(u64, Outgoing)> {
    let mut all = Vec::new();
    while let Some(due) = gw.poll_timeout().filter(|d| *d <= until) {
        gw.now = gw.now.max(due);
        gw.timeout();
        let at = gw.now.as_millis() - base.as_millis();
        all.extend(gw.out.drain(..).map(|o| (at, o)));
    }
    gw.now = until;
    all
}

/// The unicast datagrams (not to 224.0.0.1:5350) in `sent`.
fn unicast(sent: &[(u64, Outgoing)]) -> Vec<(u64, Outgoing)> {
    sent.iter()
        .filter(|(_, o)| o.to != ANNOUNCE_TO)
        .cloned()
        .collect()
}

/// Run the start-up train out, so what follows sees only new events.
fn quiet(mut gw: Gw) -> Gw {
    let start = gw.now;
    sent_until(&mut gw, start, start + secs(200));
    gw
}

// ---------------------------------------------------------------------------------------------
// The ANNOUNCE request.

#[test]
fn an_announce_request_gets_success_with_lifetime_0_and_changes_nothing() {
    // §4 case 25, §3.7: 24 bytes `02 80 00 00`, lifetime 0, the epoch, 12 zero bytes; the
    // requested lifetime (12345 here) is ignored.
    let mut gw = Gw::new();
    gw.pcp_ok(A, &tcp_map(A, 8080, 600));
    gw.advance_secs(42);
    let before = gw.state();
    for lifetime in [0u32, 12345] {
        let r = gw.reply(A, &pcp_header(PCP_ANNOUNCE, lifetime, mapped(A)));
        let mut expected = vec![2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42];
        expected.extend([0; 12]);
        assert_bytes(&r, &expected);
        assert!(gw.changes.is_empty());
    }
    assert_eq!(gw.state(), before);
}

#[test]
fn an_announce_request_is_checked_like_any_other() {
    // §3.7: a client IP mismatch or a length below 24 is an error (under 24: dropped, §3.2
    // step 5); a length that is not a multiple of 4 is MALFORMED_REQUEST; options are read
    // (an ignored optional one still gives the 24-byte SUCCESS).
    let mut gw = Gw::new();
    let req = pcp_header(PCP_ANNOUNCE, 0, mapped(B));
    gw.assert_refused(
        A,
        &req,
        &pcp_error_reply(&req, PCP_ADDRESS_MISMATCH, 1800, 0, false),
    );
    let ok = pcp_header(PCP_ANNOUNCE, 0, mapped(A));
    gw.assert_dropped(A, &ok[..20]);
    let mut odd = ok.clone();
    odd.extend([0, 0]);
    gw.assert_refused(
        A,
        &odd,
        &pcp_error_reply(&odd, PCP_MALFORMED_REQUEST, 1800, 0, false),
    );
    let mut with_option = ok.clone();
    with_option.extend(pcp_option(200, &[1, 2, 3, 4]));
    assert_bytes(&gw.reply(A, &with_option), &pcp_announce(0));
}

// ---------------------------------------------------------------------------------------------
// The start-up train and state loss.

#[test]
fn the_start_up_train_sends_both_announcements_on_the_rfc_schedule() {
    // §3.7, §6 A12: at 0, 0.25, 0.75, …, 127.75 s, one 12-byte NAT-PMP announcement and one
    // 24-byte PCP ANNOUNCE, both to 224.0.0.1:5350 (nothing to 5351), from the LAN address,
    // each with the epoch of its moment; nothing else, and nothing after the tenth.
    let mut gw = Gw::new();
    let sent = sent_until(&mut gw, T0, T0 + secs(1000));
    let mut expected = Vec::new();
    for off in ANNOUNCE_OFFSETS_MS {
        let epoch = (off / 1000) as u32;
        expected.push((off, addr_reply(SUCCESS, epoch, EXT)));
        expected.push((off, pcp_announce(epoch)));
    }
    let got: Vec<(u64, Vec<u8>)> = sent.iter().map(|(t, o)| (*t, o.payload.clone())).collect();
    assert_eq!(got, expected);
    for (_, o) in &sent {
        assert_eq!(o.to, ANNOUNCE_TO);
        assert_sent_on_lan(o);
    }
}

#[test]
fn losing_the_mapping_state_restarts_both_trains_with_epoch_0() {
    // §4 case 65: the table cleared (switched off and on): mappings and kernel elements gone,
    // the epoch restarts from 0 in replies, and 10 copies of both announcements follow.
    let mut gw = quiet(Gw::new());
    gw.pcp_ok(A, &tcp_map(A, 8080, 3600));
    gw.map_ok(B, UDP, 53, 53, 3600);
    gw.advance_secs(500);
    let event = gw.now;
    gw.reset();
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
    let sent = sent_until(&mut gw, event, event + secs(200));
    let pmp: Vec<_> = sent.iter().filter(|(_, o)| o.payload[0] == 0).collect();
    let pcp: Vec<_> = sent.iter().filter(|(_, o)| o.payload[0] == 2).collect();
    assert_eq!(pmp.len(), 10);
    assert_eq!(pcp.len(), 10);
    for (i, off) in ANNOUNCE_OFFSETS_MS.iter().enumerate() {
        let epoch = (off / 1000) as u32;
        assert_eq!(pcp[i].0, *off);
        assert_bytes(&pcp[i].1.payload, &pcp_announce(epoch));
        assert_bytes(&pmp[i].1.payload, &addr_reply(SUCCESS, epoch, EXT));
    }
    assert!(unicast(&sent).is_empty(), "{sent:?}");
    // A PCP reply now carries the restarted epoch, and the old nonce owns nothing.
    let r = gw.pcp_ok(A, &pcp_map_request(A, 600, NONCE2, IP_TCP, 8080, 0, ZERO4));
    assert_eq!(pcp_epoch(&r), 200);
}

// ---------------------------------------------------------------------------------------------
// External address change: NAT-PMP announcements, epoch reset, Mapping Update.

#[test]
fn an_external_address_change_announces_the_new_address_and_resets_the_epoch() {
    // §4 case 66: the 10-copy NAT-PMP train with EXT2; PCP replies start again from epoch 0;
    // PCP clients hear through Mapping Updates, not a new ANNOUNCE train.
    let mut gw = quiet(Gw::new());
    gw.advance_secs(1000);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = sent_until(&mut gw, event, event + secs(200));
    let got: Vec<(u64, Vec<u8>)> = sent.iter().map(|(t, o)| (*t, o.payload.clone())).collect();
    let expected: Vec<(u64, Vec<u8>)> = ANNOUNCE_OFFSETS_MS
        .iter()
        .map(|off| (*off, addr_reply(SUCCESS, (off / 1000) as u32, EXT2)))
        .collect();
    assert_eq!(got, expected);
    let r = gw.reply(A, &pcp_header(PCP_ANNOUNCE, 0, mapped(A)));
    assert_bytes(&r, &pcp_announce(200));
}

#[test]
fn a_mapping_update_is_three_copies_with_the_new_address_lifetime_nonce_and_filters() {
    // §3.7 Mapping Update: A's MAP (from port 40001, with a FILTER and a DESCRIPTION) is told
    // at 0, 250 and 750 ms after the change: SUCCESS, the remaining lifetime, epoch 0, its
    // nonce, protocol and ports, EXT2, the FILTER; no DESCRIPTION (never in a response whose
    // request had none). Sent to A:40001 from GW_LAN on the LAN, and nothing more after.
    let mut gw = quiet(Gw::new());
    let base = tcp_map(A, 8080, 600);
    let filter = pcp_filter(120, 0, Ipv4Addr::new(198, 51, 100, 0));
    let mut req = base.clone();
    req.extend(&filter);
    req.extend(pcp_description(b"web"));
    let source = SocketAddr::new(v4(A), 40001);
    let eport = pcp_eport(&gw.pcp_ok_from(source, &req));
    gw.advance_secs(100);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = unicast(&sent_until(&mut gw, event, event + secs(10)));
    let update = pcp_success_reply(&base, 500, 0, eport, mapped(EXT2), &filter);
    assert_eq!(sent.len(), 3, "{sent:?}");
    for ((at, o), want_at) in sent.iter().zip([0u64, 250, 750]) {
        assert_eq!(*at, want_at);
        assert_eq!(o.to, source);
        assert_sent_on_lan(o);
        assert_bytes(&o.payload, &update);
    }
    // The kernel followed the address.
    assert!(gw.elements().contains(&outbound(TCP, EXT2, eport, A, 8080)));
    gw.assert_kernel_matches_engine();
}

#[test]
fn a_mapping_update_for_a_peer_is_an_80_byte_peer_response() {
    let mut gw = quiet(Gw::new());
    let req = pcp_peer_request(A, 900, NONCE, IP_UDP, 5000, 0, 4000, REMOTE);
    let source = SocketAddr::new(v4(A), 40005);
    let eport = pcp_eport(&gw.pcp_ok_from(source, &req));
    gw.advance_secs(300);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = unicast(&sent_until(&mut gw, event, event + secs(10)));
    assert_eq!(sent.len(), 3);
    for (_, o) in &sent {
        assert_eq!(o.to, source);
        assert_bytes(
            &o.payload,
            &pcp_success_reply(&req, 600, 0, eport, mapped(EXT2), &[]),
        );
    }
}

#[test]
fn a_mapping_update_goes_to_the_last_port_from_the_address_the_client_used() {
    // "to the client's last address and port, from the address it used": the LAN interface
    // has two addresses; A talks to the second, first from port 40001, then renews from 40002.
    let mut gw = Gw::new();
    let mut ifs = interfaces(Some(EXT));
    ifs.get_mut(LAN_IF)
        .unwrap()
        .addrs
        .push(IfAddr::v4(GW_LAN2, LAN_PREFIX_LEN));
    gw.set_interfaces(ifs);
    let mut gw = quiet(gw);
    let req = tcp_map(A, 8080, 600);
    for port in [40001u16, 40002] {
        let source = SocketAddr::new(v4(A), port);
        let out = gw.deliver(&[(source, v4(GW_LAN2), LAN_INDEX, &req)]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].from, out[0].to), (v4(GW_LAN2), source));
        assert_eq!(pcp_result(&out[0].payload), PCP_SUCCESS);
    }
    let eport = gw.mapping(A, TCP, 8080).unwrap().external_port;
    gw.advance_secs(10);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = unicast(&sent_until(&mut gw, event, event + secs(10)));
    assert_eq!(sent.len(), 3);
    for (_, o) in &sent {
        assert_eq!(
            (o.from, o.ifindex, o.to),
            (v4(GW_LAN2), LAN_INDEX, SocketAddr::new(v4(A), 40002))
        );
        assert_bytes(
            &o.payload,
            &pcp_success_reply(&req, 590, 0, eport, mapped(EXT2), &[]),
        );
    }
}

#[test]
fn no_further_mapping_update_for_a_client_that_refreshed() {
    // §3.7 "SHOULD stop once the client has refreshed": A renews 100 ms after the change and
    // gets no second or third copy; B, who did not, gets all three.
    let mut gw = quiet(Gw::new());
    let a_src = SocketAddr::new(v4(A), 40001);
    let b_src = SocketAddr::new(v4(B), 40002);
    gw.pcp_ok_from(a_src, &tcp_map(A, 8080, 600));
    gw.pcp_ok_from(b_src, &tcp_map(B, 8080, 600));
    gw.advance_secs(5);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let first = unicast(&sent_until(&mut gw, event, event));
    assert_eq!(first.len(), 2);
    gw.advance_ms(100);
    let r = gw.pcp_ok_from(a_src, &tcp_map(A, 8080, 600));
    assert_eq!(&r[44..60], &mapped(EXT2));
    let rest = unicast(&sent_until(&mut gw, event, event + secs(10)));
    let to: Vec<(u64, SocketAddr)> = rest.iter().map(|(t, o)| (*t, o.to)).collect();
    assert_eq!(to, vec![(250, b_src), (750, b_src)]);
}

#[test]
fn no_mapping_update_for_nat_pmp_mappings() {
    // NAT-PMP clients hear of the address from the announcement; they get no unicast.
    let mut gw = quiet(Gw::new());
    gw.map_ok(A, TCP, 8080, 8080, 3600);
    gw.map_ok(B, UDP, 53, 0, 3600);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = sent_until(&mut gw, event, event + secs(200));
    assert!(unicast(&sent).is_empty(), "{sent:?}");
    assert_eq!(sent.len(), 10);
}

#[test]
fn a_mapping_update_keeps_the_port_of_a_prefer_failure_mapping() {
    // The doc: mappings keep their external port across an address change, so PREFER_FAILURE
    // never turns an update into CANNOT_PROVIDE_EXTERNAL.
    let mut gw = quiet(Gw::new());
    let base = pcp_map_request(A, 600, NONCE, IP_TCP, 8080, 45000, ZERO4);
    let mut req = base.clone();
    req.extend(pcp_prefer_failure());
    let source = SocketAddr::new(v4(A), 40001);
    gw.pcp_ok_from(source, &req);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = unicast(&sent_until(&mut gw, event, event + secs(10)));
    assert_eq!(sent.len(), 3);
    assert_bytes(
        &sent[0].1.payload,
        &pcp_success_reply(&base, 600, 0, 45000, mapped(EXT2), &[]),
    );
}

#[test]
fn no_mapping_update_without_an_address_and_one_when_it_returns() {
    // Losing the address stops the updates (nothing true to tell); the next address starts
    // them, carrying it.
    let mut gw = quiet(Gw::new());
    let req = tcp_map(A, 8080, 600);
    let source = SocketAddr::new(v4(A), 40001);
    let eport = pcp_eport(&gw.pcp_ok_from(source, &req));
    gw.advance_secs(10);
    let event = gw.now;
    gw.set_address(None);
    assert!(unicast(&sent_until(&mut gw, event, event + secs(10))).is_empty());
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = unicast(&sent_until(&mut gw, event, event + secs(10)));
    assert_eq!(sent.len(), 3);
    assert_bytes(
        &sent[0].1.payload,
        &pcp_success_reply(&req, 580, 0, eport, mapped(EXT2), &[]),
    );
}

#[test]
fn no_mapping_update_for_an_ipv6_pinhole() {
    // An IPv6 client's mapping is on its own address: an IPv4 address change does not move it.
    let mut gw = quiet(Gw::with_ipv6());
    let req = pcp_map_request_field(wire6(A6), 600, NONCE, IP_TCP, 8443, 0, ZERO6);
    assert_eq!(pcp_result(&gw.send6(A6, 40000, &req).unwrap()), PCP_SUCCESS);
    let event = gw.now;
    gw.set_address(Some(EXT2));
    let sent = sent_until(&mut gw, event, event + secs(10));
    assert!(
        sent.iter()
            .all(|(_, o)| !matches!(o.to.ip(), IpAddr::V6(_))),
        "{sent:?}"
    );
    assert!(unicast(&sent).is_empty());
}
