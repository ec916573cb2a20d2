//! Life-cycle events: external address change, reset, and reverting changes the kernel refused
//! (rfc-checklist §2 J items 51, 53, §2 E item 22, §4 cases 65, 66).

mod common;
use common::*;
use natpmp_pcp_core::{Change, Forward};

#[test]
fn address_change_moves_every_forward_to_the_new_address() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.map_ok(A, UDP, 8080, 8080, 7200);
    gw.map_ok(B, UDP, 53, 40053, 600);
    gw.advance_secs(60);
    let before: Vec<Forward> = gw.server.forwards(gw.now);
    assert_eq!(before.len(), 3);
    gw.set_address(Some(EXT2));
    let changes = gw.changes.clone();
    assert_eq!(removes(&changes).len(), 3, "{changes:?}");
    assert_eq!(adds(&changes).len(), 3, "{changes:?}");
    for old in &before {
        let ri = changes
            .iter()
            .position(|c| matches!(c, Change::Remove(f) if f.same_elements(old)))
            .unwrap_or_else(|| panic!("no Remove of {old:?}"));
        let new = Forward {
            external_addr: EXT2,
            ..*old
        };
        let ai = changes
            .iter()
            .position(|c| matches!(c, Change::Add(f) if f.same_elements(&new)))
            .unwrap_or_else(|| panic!("no Add of {new:?}"));
        assert!(
            ri < ai,
            "the Remove of {old:?} must come before its Add (same inbound key)"
        );
        // The kernel timeout still covers the rest of the lifetime, and no more than the grant.
        let t = changes[ai].forward().timeout;
        let view = gw
            .mappings()
            .into_iter()
            .find(|m| {
                m.client == old.internal_addr
                    && m.protocol == old.protocol
                    && m.internal_port == old.internal_port
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
        assert_eq!(m.external_addr, Some(EXT2));
    }
    assert!(gw
        .server
        .forwards(gw.now)
        .iter()
        .all(|f| f.external_addr == EXT2));
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
    assert_eq!(gw.changes.len(), 2);
    assert_is_remove_of(&gw.changes[0], &forward(TCP, EXT2, p, A, 22, 100));
    assert_eq!(
        gw.changes[1],
        Change::Add(forward(TCP, EXT2, p, A, 22, 100))
    );
}

#[test]
fn mappings_still_expire_after_an_address_change() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 0, 30);
    gw.advance_secs(10);
    gw.set_address(Some(EXT2));
    gw.advance_ms(19_999);
    assert!(gw.timeout().is_empty());
    gw.advance_ms(1);
    let c = gw.timeout();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].forward().external_addr, EXT2);
}

#[test]
fn same_address_again_stages_nothing() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 0, 30);
    gw.set_address(Some(EXT));
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
}

#[test]
fn reset_forgets_every_mapping_and_stages_their_removal() {
    // §2 E item 22 / §3.7: a configuration change that clears mapping state.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.map_ok(B, UDP, 2, 0, 600);
    let before = gw.server.forwards(gw.now);
    gw.advance_secs(3);
    gw.changes.clear();
    gw.server.reset(gw.now, &mut gw.changes);
    assert_eq!(gw.changes.len(), 2, "{:?}", gw.changes);
    for old in &before {
        assert!(
            gw.changes
                .iter()
                .any(|c| matches!(c, Change::Remove(f) if f.same_elements(old))),
            "no Remove of {old:?}"
        );
    }
    assert!(gw.mappings().is_empty());
    assert!(gw.server.forwards(gw.now).is_empty());
    // Nothing left to expire.
    gw.advance_secs(600);
    assert!(gw.timeout().is_empty());
}

#[test]
fn revert_forgets_a_created_mapping() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    let failed = gw.changes.clone();
    gw.server.revert(&failed);
    assert!(gw.mappings().is_empty());
    assert!(gw.server.forwards(gw.now).is_empty());
    // The port is free again; a later request creates anew (an Add, no Remove).
    let r = gw.reply(A, &map_request(TCP, 8080, 8080, 7200));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 8080, 8080, 7200));
    assert_eq!(
        gw.changes,
        vec![Change::Add(forward(TCP, EXT, 8080, A, 8080, 7200))]
    );
}

#[test]
fn revert_frees_the_port_for_another_client() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 30000, 600);
    let failed = gw.changes.clone();
    gw.server.revert(&failed);
    assert_eq!(gw.map_ok(B, UDP, 1, 30000, 600), 30000);
}

#[test]
fn revert_drops_the_companion_reservation() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 30000, 600);
    let failed = gw.changes.clone();
    gw.server.revert(&failed);
    assert_eq!(
        gw.map_ok(C, TCP, 1, 30000, 600),
        30000,
        "A's companion reservation outlived the revert"
    );
}

#[test]
fn revert_of_a_renewal_forgets_the_mapping() {
    // The batch [Remove(old), Add(new)] failed: the mapping whose Add is in it is forgotten.
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 5, 5005, 60);
    gw.advance_secs(10);
    gw.map_ok(A, UDP, 5, 5005, 60);
    let failed = gw.changes.clone();
    gw.server.revert(&failed);
    assert!(gw.mapping(A, UDP, 5).is_none());
}

#[test]
fn revert_leaves_other_mappings_alone() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.map_ok(B, TCP, 1, 0, 600);
    let mut batch = gw.changes.clone();
    gw.map_ok(C, TCP, 1, 0, 600);
    batch.extend(gw.changes.iter().copied());
    gw.server.revert(&batch);
    let left: Vec<_> = gw.mappings().iter().map(|m| m.client).collect();
    assert_eq!(left, vec![A]);
}

#[test]
fn revert_of_removals_only_changes_nothing() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.map_ok(A, TCP, 2, 0, 600);
    gw.reply(A, &map_request(TCP, 1, 0, 0));
    let failed = gw.changes.clone();
    assert!(adds(&failed).is_empty());
    gw.server.revert(&failed);
    let left: Vec<_> = gw.mappings().iter().map(|m| m.internal_port).collect();
    assert_eq!(left, vec![2]);
}

#[test]
fn revert_of_an_empty_batch_is_harmless() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 0, 600);
    gw.server.revert(&[]);
    assert_eq!(gw.mappings().len(), 1);
}
