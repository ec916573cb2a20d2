//! Deleting mappings (rfc-checklist §2 H items 41–48, §4 cases 52, 53, 54, 56, 59).

mod common;
use common::*;

#[test]
fn delete_example_from_checklist_gets_the_success_reply() {
    // §1.1: `00 02 0000 1F90 0000 00000000` -> `00 82 0000 ssssssss 1F90 0000 00000000`.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.advance_secs(0x0304);
    let r = gw.reply(
        A,
        &[
            0x00, 0x02, 0x00, 0x00, 0x1F, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
    );
    assert_bytes(
        &r,
        &[
            0x00, 0x82, 0x00, 0x00, 0x00, 0x00, 0x03, 0x04, 0x1F, 0x90, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ],
    );
}

#[test]
fn delete_of_existing_mapping_stages_its_removal() {
    // §2 H item 42, §4 case 52.
    for op in [UDP, TCP] {
        let mut gw = Gw::new();
        gw.map_ok(A, op, 5000, 5000, 600);
        let added = pair(op, EXT, 5000, A, 5000);
        gw.advance_secs(20);
        let r = gw.reply(A, &map_request(op, 5000, 0, 0));
        assert_bytes(&r, &map_reply(op, SUCCESS, 20, 5000, 0, 0));
        assert_eq!(gw.transactions.len(), 1, "{:?}", gw.transactions);
        assert_same_changes(&gw.changes, &removed(op, EXT, 5000, A, 5000));
        assert!(gw.mappings().is_empty());
        assert!(gw.elements().is_empty());
        // Their flows end too, after the reply.
        assert_eq!(gw.kernel.cleared_flows().len(), 2);
        for e in &added {
            assert!(gw.kernel.cleared_flows().contains(e), "flows of {e} kept");
        }
    }
}

#[test]
fn repeated_delete_gets_an_identical_reply_and_stages_nothing() {
    // §2 H item 43, §4 case 52: a retransmitted delete gets the same reply.
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 5000, 5000, 600);
    let first = gw.reply(A, &map_request(UDP, 5000, 0, 0));
    let second = gw.reply(A, &map_request(UDP, 5000, 0, 0));
    assert_bytes(&second, &first);
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
}

#[test]
fn delete_of_a_mapping_that_does_not_exist_is_answered_as_success() {
    // §2 H item 43, §4 case 53.
    let mut gw = Gw::new();
    gw.advance_secs(2);
    for op in [UDP, TCP] {
        let r = gw.reply(A, &map_request(op, 4242, 0, 0));
        assert_bytes(&r, &map_reply(op, SUCCESS, 2, 4242, 0, 0));
        assert!(gw.changes.is_empty());
    }
}

#[test]
fn delete_ignores_the_suggested_external_port() {
    // §2 H item 41, §4 case 54.
    let mut gw = Gw::new();
    let p = gw.map_ok(A, TCP, 8080, 8080, 7200);
    let r = gw.reply(A, &map_request(TCP, 8080, 1234, 0));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 8080, 0, 0));
    assert_eq!(removes(&gw.changes).len(), 2);
    assert!(removes(&gw.changes).iter().all(|e| e.external_port() == p));
    assert!(gw.mapping(A, TCP, 8080).is_none());
    assert!(gw.elements().is_empty());
}

#[test]
fn delete_with_reserved_bytes_set_still_deletes() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 77, 7777, 60);
    let mut req = map_request(UDP, 77, 0, 0);
    req[2] = 0xAB;
    req[3] = 0xCD;
    assert_bytes(&gw.reply(A, &req), &map_reply(UDP, SUCCESS, 0, 77, 0, 0));
    assert!(gw.mappings().is_empty());
}

#[test]
fn delete_only_affects_the_given_protocol() {
    // §2 H item 48.
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 9000, 9000, 600);
    gw.map_ok(A, TCP, 9000, 9000, 600);
    gw.reply(A, &map_request(UDP, 9000, 0, 0));
    assert!(gw.mapping(A, UDP, 9000).is_none());
    assert_eq!(gw.mapping(A, TCP, 9000).unwrap().external_port, 9000);
    assert!(gw
        .changes
        .iter()
        .all(|c| c.element().protocol() == proto(UDP)));
    assert_eq!(gw.elements(), pair(TCP, EXT, 9000, A, 9000));
}

#[test]
fn delete_of_another_clients_mapping_succeeds_and_leaves_it() {
    // §2 H item 48, §4 case 59.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.advance_secs(1);
    let r = gw.reply(B, &map_request(TCP, 8080, 8080, 0));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 1, 8080, 0, 0));
    assert!(gw.changes.is_empty(), "B's delete staged {:?}", gw.changes);
    assert_eq!(gw.mapping(A, TCP, 8080).unwrap().external_port, 8080);
    assert_eq!(gw.elements(), pair(TCP, EXT, 8080, A, 8080));
}

#[test]
fn delete_all_tcp_removes_only_that_clients_tcp_mappings() {
    // §2 H item 46, §4 case 56: `00 02 0000 0000 0000 00000000`.
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 1000, 0, 600);
    gw.map_ok(A, TCP, 2000, 0, 600);
    gw.map_ok(A, UDP, 1000, 0, 600);
    gw.map_ok(B, TCP, 1000, 0, 600);
    let before = gw.elements();
    gw.advance_secs(5);
    let r = gw.reply(
        A,
        &[
            0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
    );
    assert_bytes(
        &r,
        &[
            0x00, 0x82, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    let removed = removes(&gw.changes);
    assert_eq!(removed.len(), 4, "{:?}", gw.changes);
    assert!(adds(&gw.changes).is_empty());
    for e in &removed {
        assert_eq!(
            (e.internal_ip(), e.protocol()),
            (std::net::IpAddr::from(A), proto(TCP))
        );
        assert!(
            before.contains(e),
            "removed an element that was not there: {e}"
        );
    }
    let left: Vec<_> = gw
        .mappings()
        .iter()
        .map(|m| (m.client, m.protocol, m.internal_port))
        .collect();
    assert_eq!(
        left,
        vec![(v4(A), proto(UDP), 1000), (v4(B), proto(TCP), 1000)]
    );
    assert_eq!(gw.elements(), gw.elements_of_views());
    assert_eq!(gw.elements().len(), 4);
}

#[test]
fn delete_all_udp_removes_only_that_clients_udp_mappings() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 1, 0, 600);
    gw.map_ok(A, UDP, 2, 0, 600);
    gw.map_ok(A, UDP, 3, 0, 600);
    gw.map_ok(A, TCP, 1, 0, 600);
    gw.map_ok(C, UDP, 1, 0, 600);
    let r = gw.reply(A, &map_request(UDP, 0, 0, 0));
    assert_bytes(&r, &map_reply(UDP, SUCCESS, 0, 0, 0, 0));
    assert_eq!(removes(&gw.changes).len(), 6);
    assert!(adds(&gw.changes).is_empty());
    let left: Vec<_> = gw
        .mappings()
        .iter()
        .map(|m| (m.client, m.protocol, m.internal_port))
        .collect();
    assert_eq!(left, vec![(v4(C), proto(UDP), 1), (v4(A), proto(TCP), 1)]);
    assert_eq!(gw.elements(), gw.elements_of_views());
}

#[test]
fn delete_all_with_nonzero_suggested_port_is_still_delete_all() {
    // §2 H item 47.
    let mut gw = Gw::new();
    let p = gw.map_ok(A, TCP, 1000, 0, 600);
    gw.map_ok(A, TCP, 2000, 0, 600);
    let r = gw.reply(A, &map_request(TCP, 0, p, 0));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 0, 0, 0));
    assert!(gw.mappings().is_empty());
    assert_eq!(removes(&gw.changes).len(), 4);
    assert!(gw.elements().is_empty());
}

#[test]
fn delete_all_with_nothing_mapped_is_success() {
    let mut gw = Gw::new();
    gw.advance_secs(9);
    for op in [UDP, TCP] {
        assert_bytes(
            &gw.reply(B, &map_request(op, 0, 0, 0)),
            &map_reply(op, SUCCESS, 9, 0, 0, 0),
        );
        assert!(gw.changes.is_empty());
    }
}

#[test]
fn deletes_work_without_an_external_address() {
    // Brief: with no external address, deletes still succeed (result 0).
    let mut gw = Gw::without_address();
    gw.advance_secs(4);
    for op in [UDP, TCP] {
        assert_bytes(
            &gw.reply(A, &map_request(op, 8080, 0, 0)),
            &map_reply(op, SUCCESS, 4, 8080, 0, 0),
        );
        assert_bytes(
            &gw.reply(A, &map_request(op, 0, 0, 0)),
            &map_reply(op, SUCCESS, 4, 0, 0, 0),
        );
    }
}

#[test]
fn delete_after_the_address_is_lost_succeeds_and_forgets_the_mapping() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 7200);
    gw.advance_secs(1);
    gw.set_address(None);
    gw.advance_secs(1);
    let r = gw.reply(A, &map_request(TCP, 8080, 0, 0));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, gw.sssoe(), 8080, 0, 0));
    assert!(gw.mapping(A, TCP, 8080).is_none());
    // It was not in the kernel (no address); it does not come back with the next address.
    assert!(gw.changes.is_empty(), "{:?}", gw.changes);
    gw.set_address(Some(EXT));
    assert!(gw.elements().is_empty(), "{:?}", gw.elements());
}

#[test]
fn deleted_port_is_free_for_another_client() {
    let mut gw = Gw::new();
    gw.map_ok(A, UDP, 3478, 3478, 600);
    gw.reply(A, &map_request(UDP, 3478, 0, 0));
    assert_eq!(gw.map_ok(B, UDP, 3478, 3478, 600), 3478);
}

#[test]
fn request_after_delete_creates_a_fresh_mapping() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 443, 8443, 600);
    gw.reply(A, &map_request(TCP, 443, 0, 0));
    let r = gw.reply(A, &map_request(TCP, 443, 8443, 30));
    assert_bytes(&r, &map_reply(TCP, SUCCESS, 0, 443, 8443, 30));
    assert_same_changes(&gw.changes, &created(TCP, EXT, 8443, A, 443, 30));
    assert_eq!(gw.elements(), pair(TCP, EXT, 8443, A, 443));
}
