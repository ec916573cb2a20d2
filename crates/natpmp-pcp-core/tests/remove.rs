//! Mappings removed by hand (`natpmpctl remove`): one mapping, a client's, all; staged and
//! committed like a request (kernel elements gone, flows cleared, leases due), reverted whole
//! when the kernel refuses, and nothing at all when nothing matches.

mod common;
use common::*;
use natpmp_pcp_core::gateway::{Removal, Removed};
use std::net::{Ipv4Addr, SocketAddr};

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn removed_views(r: Removed) -> Vec<natpmp_pcp_core::MappingView> {
    match r {
        Removed::Done(v) => v,
        other => panic!("expected a removal, got {other:?}"),
    }
}

fn remove(gw: &mut Gw, removal: Removal) -> Removed {
    let r = gw.gateway.remove(gw.now, &removal);
    gw.gateway.clear_flows();
    r
}

#[test]
fn removing_one_mapping_takes_it_from_the_engine_and_the_kernel_and_ends_its_flows() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.map_ok(A, UDP, 5000, 5000, 600);
    let view = gw.mapping(A, TCP, 8080).unwrap();
    let epoch_before = gw.gateway.engine().epoch_seconds(gw.now);
    let views = removed_views(remove(&mut gw, Removal::of(&view)));
    assert_eq!(views, vec![view]);
    assert!(gw.mapping(A, TCP, 8080).is_none());
    assert!(
        gw.mapping(A, UDP, 5000).is_some(),
        "the other mapping stays"
    );
    gw.assert_kernel_matches_engine();
    for e in pair(TCP, EXT, 8080, A, 8080) {
        assert!(!gw.elements().contains(&e), "{e} still in the kernel");
        assert!(gw.kernel.cleared_flows().contains(&e), "flows of {e} kept");
    }
    // The epoch goes on: the other mappings are intact.
    assert_eq!(gw.gateway.engine().epoch_seconds(gw.now), epoch_before);
    assert_eq!(gw.gateway.stats().removed_by_hand, 1);
    // The lease file is due with the mapping gone.
    gw.advance_secs(2);
    gw.timeout();
    let saved = gw.leases.last().expect("leases saved after a removal");
    assert_eq!(saved.records.len(), 1);
}

#[test]
fn removing_a_client_takes_all_its_mappings_and_no_one_elses() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.pcp_ok(A, &tcp_map(A, 9000, 600));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 600, NONCE2, IP_TCP, 7000, 0, 4000, REMOTE),
    );
    gw.map_ok(B, TCP, 8081, 8081, 600);
    let views = removed_views(remove(&mut gw, Removal::Client { client: v4(A) }));
    assert_eq!(views.len(), 3, "{views:?}");
    let left = gw.mappings();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].client, v4(B));
    gw.assert_kernel_matches_engine();
}

#[test]
fn removing_a_peer_leaves_the_map_of_the_same_endpoint() {
    let mut gw = Gw::new();
    gw.pcp_ok(A, &tcp_map(A, 7000, 600));
    gw.pcp_ok(
        A,
        &pcp_peer_request(A, 600, NONCE, IP_TCP, 7000, 0, 4000, REMOTE),
    );
    assert_eq!(gw.mappings().len(), 2);
    let removal = Removal::One {
        client: v4(A),
        protocol: proto(TCP),
        internal_port: 7000,
        remote: Some(SocketAddr::new(v4(REMOTE), 4000)),
    };
    let views = removed_views(remove(&mut gw, removal));
    assert_eq!(views.len(), 1);
    let left = gw.mappings();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].remote, None, "the MAP stays");
    gw.assert_kernel_matches_engine();
}

#[test]
fn removing_all_empties_the_table() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.map_ok(B, UDP, 5000, 5000, 600);
    gw.pcp_ok(C, &tcp_map(C, 9000, 600));
    let views = removed_views(remove(&mut gw, Removal::All));
    assert_eq!(views.len(), 3);
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty(), "{:?}", gw.elements());
    assert_eq!(gw.gateway.stats().removed_by_hand, 3);
}

#[test]
fn nothing_matched_changes_nothing() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    let applied = gw.kernel.applied().len();
    assert_eq!(
        remove(&mut gw, Removal::Client { client: v4(B) }),
        Removed::NothingMatched
    );
    // The MAP of a different port, and a PEER that does not exist.
    let wrong = Removal::One {
        client: v4(A),
        protocol: proto(UDP),
        internal_port: 8080,
        remote: None,
    };
    assert_eq!(remove(&mut gw, wrong), Removed::NothingMatched);
    assert_eq!(gw.kernel.applied().len(), applied, "the kernel was asked");
    assert_eq!(gw.mappings().len(), 1);
}

#[test]
fn a_refused_removal_is_reverted_whole() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.map_ok(B, TCP, 8081, 8081, 600);
    let before = gw.mappings();
    // Every apply fails while the table is gone.
    gw.kernel.wipe();
    assert_eq!(remove(&mut gw, Removal::All), Removed::Refused);
    assert_eq!(gw.mappings(), before, "the engine must be as it was");
    assert!(gw.kernel.cleared_flows().is_empty());
    assert_eq!(gw.gateway.stats().removed_by_hand, 0);
}

#[test]
fn an_element_already_deleted_by_someone_else_does_not_block_the_removal() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    gw.kernel.remove_by_hand(&inbound(TCP, 8080, A, 8080));
    let view = gw.mapping(A, TCP, 8080).unwrap();
    removed_views(remove(&mut gw, Removal::of(&view)));
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty(), "{:?}", gw.elements());
}

#[test]
fn not_serving_has_nothing_to_remove() {
    let mut gw = Gw::new();
    gw.map_ok(A, TCP, 8080, 8080, 600);
    let mut config = gw.config().clone();
    config.enabled = false;
    gw.reconfigure(config).unwrap();
    assert_eq!(remove(&mut gw, Removal::All), Removed::NotServing);
}

#[test]
fn removal_wire_form_is_stable() {
    // natpmpctl and the daemon exchange it as JSON.
    let r = Removal::One {
        client: v4(A),
        protocol: proto(TCP),
        internal_port: 8080,
        remote: None,
    };
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(
        json,
        r#"{"which":"one","client":"192.168.88.10","protocol":"tcp","internal_port":8080}"#
    );
    assert_eq!(serde_json::from_str::<Removal>(&json).unwrap(), r);
    assert_eq!(
        serde_json::to_string(&Removal::All).unwrap(),
        r#"{"which":"all"}"#
    );
}
