//! Life-cycle events: external address change, reset, and what happens when the kernel refuses
//! a request's changes (rfc-checklist §2 J items 51, 53, §2 E item 22, §4 cases 65, 66).
//!
//! A refused request: the gateway tries each request of the batch alone, and if an addition
//! is still refused (the kernel holds something natpmpd did not put there), it rebuilds its
//! table from the engine, which repairs both, and the client gets its mapping. Only if the
//! rebuild fails too is the request reverted and the client told result 3. The `revert_*`
//! tests make rebuilds fail (`Gw::break_rebuilds`) to reach that path.

mod common;
use common::*;
use natpmp_pcp_core::engine::mapping::EndpointKey;
use natpmp_pcp_core::engine::{
    Claim, DescriptionUpdate, FilterUpdate, Lifetime, MapOutcome, MapRequest,
};
use natpmp_pcp_core::kernel::{Errno, RemoteRange};
use natpmp_pcp_core::{Change, Element, Engine, EngineConfig, Protocol};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

#[test]
fn address_change_moves_every_forward_to_the_new_address() {
    // Only the outbound rewrites name the external address: each is removed and added again
    // with the new one, in one transaction, removal first (same key); inbound elements (keyed
    // by protocol and external port) stay as they are.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.map_ok(A, UDP, 8080, 8080, 7200);
    gw.map_ok(B, UDP, 53, 40053, 600);
    gw.advance_secs(60);
    let before = gw.elements();
    assert_eq!(before.len(), 6);
    gw.set_address(Some(EXT2));
    let changes = gw.changes.clone();
    assert_eq!(gw.transactions.len(), 1, "{:?}", gw.transactions);
    assert_eq!(removes(&changes).len(), 3, "{changes:?}");
    assert_eq!(adds(&changes).len(), 3, "{changes:?}");
    for old in before
        .iter()
        .filter(|e| matches!(e, Element::Outbound { .. }))
    {
        let ri = changes
            .iter()
            .position(|c| *c == Change::Remove(*old))
            .unwrap_or_else(|| panic!("no Remove of {old}"));
        let Element::Outbound {
            internal,
            protocol,
            external,
        } = *old
        else {
            unreachable!()
        };
        assert_eq!(*external.ip(), EXT);
        let new = Element::Outbound {
            internal,
            protocol,
            external: SocketAddrV4::new(EXT2, external.port()),
        };
        let ai = changes
            .iter()
            .position(|c| c.is_add() && *c.element() == new)
            .unwrap_or_else(|| panic!("no Add of {new}"));
        assert!(
            ri < ai,
            "the Remove of {old} must come before its Add (same outbound key)"
        );
        // The kernel timeout still covers the rest of the lifetime, and no more than the grant.
        let Change::Add { timeout: t, .. } = changes[ai] else {
            unreachable!()
        };
        let view = gw
            .mappings()
            .into_iter()
            .find(|m| {
                m.client == v4(*internal.ip())
                    && m.protocol == protocol
                    && m.internal_port == internal.port()
            })
            .expect("mapping survives the change");
        assert!(
            t <= secs(u64::from(view.lifetime) + 2),
            "{t:?} longer than the grant"
        );
        assert!(
            t >= secs(u64::from(view.expires_in)),
            "{t:?} shorter than what is left"
        );
    }
    for m in gw.mappings() {
        assert_eq!(m.external_addr, Some(v4(EXT2)));
    }
    // Every element that names an address names the new one; the inbound ones are untouched.
    for e in gw.elements() {
        match e {
            Element::Outbound { external, .. } => assert_eq!(*external.ip(), EXT2),
            inbound => assert!(before.contains(&inbound), "{inbound} changed"),
        }
    }
    assert_eq!(gw.elements(), gw.elements_of_views());
    // A move is no removal: no flows were ended.
    assert!(gw.kernel.cleared_flows().is_empty());
}

#[test]
fn address_change_keeps_external_ports_and_lifetimes() {
    let mut gw = Gw::new();
    let p = gw.map_ok(A, TCP, 22, 0, 100);
    gw.advance_secs(40);
    gw.set_address(Some(EXT2));
    let v = gw.mapping(A, TCP, 22).unwrap();
    assert_eq!((v.external_port, v.lifetime, v.expires_in), (p, 100, 60));
    // A renewal after the change gets the same port, with the new epoch.
    gw.advance_secs(1);
    let r = gw.reply(A, &map_request(TCP, 22, p, 100));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 1, 22, p, 100));
    assert_eq!(gw.changes.len(), 4);
    let mut want = removed(TCP, EXT2, p, A, 22);
    want.extend(created(TCP, EXT2, p, A, 22, 100));
    assert_same_changes(&gw.changes, &want);
    assert_removes_before_adds(&gw.changes);
    assert_eq!(gw.elements(), pair(TCP, EXT2, p, A, 22));
}

#[test]
fn mappings_still_expire_after_an_address_change() {
    let mut gw = Gw::new();
    let p = gw.map_ok(A, UDP, 1, 0, 30);
    gw.advance_secs(10);
    gw.set_address(Some(EXT2));
    gw.advance_ms(19_999);
    assert!(gw.timeout().is_empty());
    gw.advance_ms(1);
    let c = gw.timeout();
    assert_same_changes(&c, &removed(UDP, EXT2, p, A, 1));
    assert!(gw.elements().is_empty());
}

#[test]
fn same_address_again_stages_nothing() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 0, 30);
    let before = gw.elements();
    gw.set_address(Some(EXT));
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    assert_eq!(gw.elements(), before);
}

#[test]
fn reset_forgets_every_mapping_and_stages_their_removal() {
    // §2 E item 22 / §3.7: a configuration change that clears mapping state (natpmpd switched
    // off and on). The table is removed and installed again, empty.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.map_ok(B, UDP, 2, 0, 600);
    assert_eq!(gw.elements().len(), 4);
    let prepares = gw.kernel.prepares();
    gw.advance_secs(3);
    gw.reset();
    assert!(gw.elements().is_empty(), "{:?}", gw.elements());
    assert_eq!(
        gw.kernel.prepares(),
        prepares + 1,
        "the table is installed afresh"
    );
    assert!(
        adds(&gw.changes).is_empty(),
        "nothing comes back: {:?}",
        gw.changes
    );
    assert!(gw.mappings().is_empty());
    // Nothing left to expire.
    gw.advance_secs(600);
    assert!(gw.timeout().is_empty());
    assert!(gw.elements().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The kernel refuses a request's changes.

/// An element typed in by hand (`nft add element`) on the key of `element`, pointing elsewhere.
fn squatter(element: Element) -> Element {
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 99), 9);
    match element {
        Element::Inbound {
            protocol,
            external_port,
            ..
        } => Element::Inbound {
            protocol,
            external_port,
            internal: elsewhere,
        },
        Element::Outbound {
            internal, protocol, ..
        } => Element::Outbound {
            internal,
            protocol,
            external: SocketAddrV4::new(EXT, 9),
        },
        other => other,
    }
}

/// Put a hand-typed element on the key `element` will need.
fn squat(gw: &Gw, element: Element) -> Element {
    let s = squatter(element);
    gw.kernel.insert_by_hand(s, secs(3600));
    s
}

#[test]
fn kernel_refusal_is_repaired_by_a_rebuild_and_the_request_succeeds() {
    // Someone typed in an element on the inbound key A's mapping needs: the kernel refuses the
    // addition, the gateway rebuilds its table from the engine (which removes the stranger),
    // and A gets its mapping, in the kernel too.
    let mut gw = Gw::new();
    gw.map_ok(B, UDP, 1, 0, 600);
    let s = squat(&gw, inbound(TCP, 8080, A, 8080));
    let prepares = gw.kernel.prepares();
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 8080, 8080, 7200));
    assert_eq!(gw.kernel.prepares(), prepares + 1, "no rebuild");
    assert!(!gw.elements().contains(&s), "the stranger survived");
    gw.assert_kernel_matches_engine();
    assert_eq!(gw.elements(), gw.elements_of_views());
    assert_eq!(gw.elements().len(), 4);
}

#[test]
fn kernel_failure_once_is_retried_and_the_request_succeeds() {
    // A transaction that fails as a whole (ENOMEM) is tried again for each request alone.
    let mut gw = Gw::new();
    gw.kernel.fail_next_apply(Errno::ENOMEM);
    let prepares = gw.kernel.prepares();
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 8080, 8080, 7200));
    assert_eq!(gw.transactions.len(), 2, "{:?}", gw.transactions);
    assert_eq!(gw.transactions[0], gw.transactions[1]);
    assert_eq!(gw.kernel.prepares(), prepares, "no rebuild needed");
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
}

#[test]
fn revert_forgets_a_created_mapping() {
    // The kernel refuses A's new mapping and the table cannot be rebuilt: A is told result 3
    // (internal port echoed, external port and lifetime 0), the engine forgets the mapping,
    // and nothing of it is left in the kernel.
    let mut gw = Gw::new();
    gw.break_rebuilds();
    let s = squat(&gw, inbound(TCP, 8080, A, 8080));
    gw.advance_secs(2);
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 7200));
    assert_bytes(&r, &map_reply(TCP, NETWORK_FAILURE, 2, 8080, 0, 0));
    assert!(gw.mappings().is_empty());
    assert_eq!(gw.elements(), vec![s], "something of A's mapping is left");
    // Once the stranger is gone, the port is free; a later request creates anew (Adds only).
    gw.kernel.remove_by_hand(&s);
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 2, 8080, 8080, 7200));
    assert_same_changes(&gw.changes, &created(TCP, EXT, 8080, A, 8080, 7200));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
}

#[test]
fn revert_frees_the_port_for_another_client() {
    let mut gw = Gw::new();
    gw.break_rebuilds();
    // The stranger sits on A's outbound key only, so B's mapping can still be installed.
    squat(&gw, outbound(UDP, EXT, 30000, A, 1));
    let m = gw.map(A, UDP, 1, 30000, 600);
    assert_eq!((m.result, m.eport, m.lifetime), (NETWORK_FAILURE, 0, 0));
    assert_eq!(gw.map_ok(B, UDP, 1, 30000, 600), 30000);
}

#[test]
fn revert_drops_the_companion_reservation() {
    let mut gw = Gw::new();
    gw.break_rebuilds();
    squat(&gw, outbound(UDP, EXT, 30000, A, 1));
    assert_eq!(gw.map(A, UDP, 1, 30000, 600).result, NETWORK_FAILURE);
    assert_eq!(
        gw.map_ok(C, TCP, 1, 30000, 600),
        30000,
        "A's companion reservation outlived the revert"
    );
}

#[test]
fn revert_of_a_renewal_forgets_the_mapping() {
    // Changed: a refused renewal now puts the mapping back as it was (its port, lifetime and
    // expiry), where the old engine forgot it. Through the gateway a NAT-PMP renewal cannot be
    // refused (its additions reuse the keys its removals free; removals of elements already gone
    // are tolerated), so the revert is driven through the engine API the gateway uses: stage,
    // then revert with the undo record.
    let mut engine = Engine::new(EngineConfig::default(), T0);
    let mut changes = Vec::new();
    engine.set_external_address(T0, Some(EXT), &mut changes);
    let key = EndpointKey {
        client: v4(A),
        protocol: Protocol::Udp,
        internal_port: 5,
    };
    let request = |lifetime| MapRequest {
        key,
        lifetime: Lifetime::AtMost(lifetime),
        claim: Claim::NatPmp,
        suggested_port: 5005,
        suggested_addr: None,
        prefer_failure: false,
        filters: FilterUpdate::default(),
        description: DescriptionUpdate::Keep,
    };
    let (outcome, undo) = engine.map(T0, request(60), &mut changes);
    assert!(matches!(outcome, MapOutcome::Granted(_)));
    drop(undo); // committed
    let before = engine.mappings(T0);
    let later = T0 + secs(10);
    changes.clear();
    let (outcome, undo) = engine.map(later, request(600), &mut changes);
    assert!(matches!(outcome, MapOutcome::Granted(ref g) if g.lifetime == 600));
    assert_eq!(changes.len(), 4, "{changes:?}");
    engine.revert(undo);
    assert_eq!(engine.mappings(T0), before, "the renewal was not undone");
    assert_eq!(engine.mappings(later)[0].expires_in, 50);
    // Through the gateway: a renewal whose elements someone deleted by hand puts them back.
    let mut gw = Gw::new();
    let p = gw.map_ok(A, UDP, 5, 5005, 60);
    for e in pair(UDP, EXT, p, A, 5) {
        gw.kernel.remove_by_hand(&e);
    }
    gw.advance_secs(10);
    let r = gw.reply(A, &map_request(UDP, 5, 5005, 60));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 10, 5, p, 60));
    assert_eq!(gw.elements(), pair(UDP, EXT, p, A, 5));
}

#[test]
fn revert_leaves_other_mappings_alone() {
    // A holds a mapping; B and C ask in one batch with D, the kernel refuses B's and C's
    // additions, the table cannot be rebuilt: B and C get result 3, D and A keep theirs.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    let a_elements = gw.elements();
    gw.break_rebuilds();
    let sb = squat(&gw, outbound(TCP, EXT, 1, B, 1));
    let sc = squat(&gw, outbound(TCP, EXT, 1, C, 1));
    let req = map_request(TCP, 1, 0, 600);
    let from = |c: Ipv4Addr| SocketAddr::new(v4(c), 40000);
    let out = gw.send_batch(&[(from(B), &req), (from(C), &req), (from(D), &req)]);
    assert_eq!(out.len(), 3);
    for (o, client) in out.iter().zip([B, C, D]) {
        assert_eq!(o.to, from(client));
        let m = parse_map_reply(&o.payload);
        let want = if client == D {
            SUCCESS
        } else {
            NETWORK_FAILURE
        };
        assert_eq!(m.result, want, "{client}: {m:?}");
    }
    let left: Vec<_> = gw.mappings().iter().map(|m| m.client).collect();
    assert_eq!(left, vec![v4(A), v4(D)]);
    let d = gw.mapping(D, TCP, 1).unwrap().external_port;
    let mut want = a_elements;
    want.extend(pair(TCP, EXT, d, D, 1));
    want.extend([sb, sc]);
    want.sort();
    assert_eq!(gw.elements(), want);
}

#[test]
fn revert_of_removals_only_changes_nothing() {
    // A delete never fails for the kernel's sake: removals of elements already gone are
    // tolerated, and a transaction that fails as a whole is tried again.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    let p2 = gw.map_ok(A, TCP, 2, 0, 600);
    gw.map_ok(A, TCP, 3, 0, 600);
    gw.kernel.fail_next_apply(Errno::ENOMEM);
    let r = gw.reply(A, &map_request(TCP, 1, 0, 0));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 1, 0, 0));
    assert!(adds(&gw.changes).is_empty());
    // The elements of 3 were deleted by hand: its delete succeeds all the same.
    let p3 = gw.mapping(A, TCP, 3).unwrap().external_port;
    for e in pair(TCP, EXT, p3, A, 3) {
        gw.kernel.remove_by_hand(&e);
    }
    let r = gw.reply(A, &map_request(TCP, 3, 0, 0));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 3, 0, 0));
    let left: Vec<_> = gw.mappings().iter().map(|m| m.internal_port).collect();
    assert_eq!(left, vec![2]);
    assert_eq!(gw.elements(), pair(TCP, EXT, p2, A, 2));
}

#[test]
fn revert_of_an_empty_batch_is_harmless() {
    // A batch that changes nothing never reaches the kernel: an injected failure waits for the
    // next real transaction, and the mappings stay.
    let mut gw = Gw::new();
    let p = gw.map_ok(A, UDP, 1, 0, 600);
    gw.kernel.fail_next_apply(Errno::ENOMEM);
    let seen = gw.kernel.applied().len();
    let from = SocketAddr::new(v4(B), 40000);
    let out = gw.send_batch(&[
        (from, &addr_request()),
        (from, &map_request(UDP, 77, 0, 0)),
        (from, &map_request(TCP, 0, 0, 0)),
    ]);
    assert_eq!(out.len(), 3);
    assert_eq!(gw.kernel.applied().len(), seen);
    assert_eq!(gw.mappings().len(), 1);
    assert_eq!(gw.elements(), pair(UDP, EXT, p, A, 1));
    // The failure is still armed, and the next request gets past it.
    assert_eq!(
        gw.map_ok(B, UDP, 2, 0, 600),
        gw.mapping(B, UDP, 2).unwrap().external_port
    );
    assert_eq!(gw.transactions.len(), 2, "{:?}", gw.transactions);
    gw.assert_kernel_matches_engine();
}

#[test]
fn refused_renewal_that_cannot_be_rebuilt_leaves_the_kernel_as_it_was() {
    // A PCP renewal that adds a FILTER: its outbound and inbound elements are removed and its
    // filtered one added, in one transaction. A stranger overlaps the filtered box, so the
    // kernel refuses; the table cannot be rebuilt, so the request is reverted and the client
    // told NETWORK_FAILURE. The kernel must still hold the mapping as it was (the engine does):
    // no part of the refused request may stay applied.
    let mut gw = Gw::new();
    let nonce = [1u8; 12];
    let r = gw.reply(A, &pcp_map_request(A, 600, nonce, 6, 8080, 0, [0; 16]));
    assert_eq!(r[3], PCP_SUCCESS, "{}", hex(&r));
    let eport = u16::from_be_bytes([r[42], r[43]]);
    let before = gw.elements();
    assert_eq!(before, pair(TCP, EXT, eport, A, 8080));
    gw.break_rebuilds();
    let stranger = Element::FilteredInbound {
        protocol: Protocol::Tcp,
        external_port: eport,
        remote: RemoteRange::single(Ipv4Addr::new(198, 51, 100, 7), 1),
        internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 99), 9),
    };
    gw.kernel.insert_by_hand(stranger, secs(100));
    let mut req = pcp_map_request(A, 600, nonce, 6, 8080, 0, [0; 16]);
    req.extend(pcp_filter(96 + 24, 0, Ipv4Addr::new(198, 51, 100, 0)));
    gw.advance_secs(5);
    let r = gw.reply(A, &req);
    assert_eq!(
        (r[1], r[3]),
        (0x81, 7),
        "NETWORK_FAILURE expected: {}",
        hex(&r)
    );
    let v = gw
        .mapping(A, TCP, 8080)
        .expect("the mapping is kept as it was");
    assert_eq!(
        (v.external_port, v.lifetime, v.expires_in),
        (eport, 600, 595)
    );
    assert!(v.filters.is_empty());
    let mut want = before;
    want.push(stranger);
    want.sort();
    assert_eq!(
        gw.elements(),
        want,
        "part of the refused renewal stayed applied"
    );
}
