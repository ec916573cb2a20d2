//! One client's requests in one batch (gateway/batch.rs): staged on top of each other in one
//! kernel transaction while they touch different endpoints; the batch settled first when a
//! request may touch an endpoint a waiting request touched, so that it reads committed state.
//! A client that maps its whole quota at start-up sends exactly such a burst.

mod common;
use common::*;
use natpmp_pcp_core::Element;
use std::net::SocketAddr;

fn from(port: u16) -> SocketAddr {
    SocketAddr::new(v4(A), port)
}

#[test]
fn a_burst_of_one_clients_mappings_is_one_transaction() {
    let mut gw = Gw::new();
    let requests: Vec<[u8; 12]> = (1..=16u16)
        .flat_map(|p| [map_request(TCP, p, 0, 600), map_request(UDP, p, 0, 600)])
        .collect();
    let batch: Vec<(SocketAddr, &[u8])> = requests.iter().map(|r| (from(40000), &r[..])).collect();
    let out = gw.send_batch(&batch);
    assert_eq!(out.len(), 32);
    for o in &out {
        assert_eq!(parse_map_reply(&o.payload).result, SUCCESS);
    }
    assert_eq!(gw.transactions.len(), 1, "{:?}", gw.transactions);
    assert_eq!(gw.mappings().len(), 32);
    gw.assert_kernel_matches_engine();
}

#[test]
fn a_request_for_a_waiting_endpoint_settles_the_batch_first() {
    // A map, its retransmission and its delete in one batch: each reads what the one before
    // it committed, so the retransmission is answered with the same port and the delete
    // finds the mapping. Three transactions.
    let mut gw = Gw::new();
    let map = map_request(TCP, 7, 0, 600);
    let delete = map_request(TCP, 7, 0, 0);
    let out = gw.send_batch(&[
        (from(40000), &map[..]),
        (from(40000), &map[..]),
        (from(40000), &delete[..]),
    ]);
    let replies: Vec<MapReply> = out.iter().map(|o| parse_map_reply(&o.payload)).collect();
    assert_eq!(replies[0].result, SUCCESS);
    assert_eq!(replies[1].result, SUCCESS);
    assert_eq!(replies[1].eport, replies[0].eport, "the retransmission");
    assert_eq!((replies[2].result, replies[2].eport), (SUCCESS, 0));
    assert_eq!(gw.transactions.len(), 3, "{:?}", gw.transactions);
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
}

#[test]
fn a_delete_of_all_waits_for_the_clients_waiting_requests_and_they_for_it() {
    // Port 0, lifetime 0 deletes all of the client's mappings: it may touch any of its
    // endpoints, so the maps before it are settled first, and the map after it waits for it.
    let mut gw = Gw::new();
    let keep = gw.map_ok(B, UDP, 1, 0, 600);
    let (m1, m2, all, m3) = (
        map_request(TCP, 1, 0, 600),
        map_request(UDP, 2, 0, 600),
        map_request(TCP, 0, 0, 0),
        map_request(TCP, 3, 0, 600),
    );
    let out = gw.send_batch(&[
        (from(40000), &m1[..]),
        (from(40000), &m2[..]),
        (from(40000), &all[..]),
        (from(40000), &m3[..]),
    ]);
    assert_eq!(out.len(), 4);
    for o in &out {
        assert_eq!(parse_map_reply(&o.payload).result, SUCCESS);
    }
    assert_eq!(gw.transactions.len(), 3, "{:?}", gw.transactions);
    // NAT-PMP's delete-all removes the mappings of the request's protocol (RFC 6886 §3.4):
    // TCP 1 goes, UDP 2 stays; TCP 3 comes after it.
    let left: Vec<(u8, u16)> = gw
        .mappings()
        .iter()
        .filter(|m| m.client == v4(A))
        .map(|m| {
            (
                if m.protocol == proto(TCP) { TCP } else { UDP },
                m.internal_port,
            )
        })
        .collect();
    assert_eq!(left, vec![(UDP, 2), (TCP, 3)]);
    assert_eq!(gw.mapping(B, UDP, 1).unwrap().external_port, keep);
    gw.assert_kernel_matches_engine();
}

#[test]
fn a_refused_request_in_a_burst_is_reverted_alone() {
    // Someone put an element by hand where A's TCP 2 would go, and the table cannot be
    // rebuilt: of A's three requests in one batch, only that one fails (result 3) and is
    // reverted; the two staged beside it keep their mappings.
    let mut gw = Gw::new();
    gw.break_rebuilds();
    let squatter = outbound(TCP, EXT, 9999, A, 2);
    gw.kernel.insert_by_hand(squatter, secs(3600));
    let requests: Vec<[u8; 12]> = (1..=3).map(|p| map_request(TCP, p, 0, 600)).collect();
    let batch: Vec<(SocketAddr, &[u8])> = requests.iter().map(|r| (from(40000), &r[..])).collect();
    let out = gw.send_batch(&batch);
    let results: Vec<u16> = out
        .iter()
        .map(|o| parse_map_reply(&o.payload).result)
        .collect();
    assert_eq!(results, vec![SUCCESS, NETWORK_FAILURE, SUCCESS]);
    let ports: Vec<u16> = gw.mappings().iter().map(|m| m.internal_port).collect();
    assert_eq!(ports, vec![1, 3]);
    let mut want: Vec<Element> = [1, 3]
        .iter()
        .flat_map(|&p| {
            let e = gw.mapping(A, TCP, p).unwrap().external_port;
            pair(TCP, EXT, e, A, p)
        })
        .collect();
    want.push(squatter);
    want.sort();
    assert_eq!(gw.elements(), want);
}

#[test]
fn pcp_maps_of_one_client_share_a_transaction_and_a_retransmission_waits() {
    let mut gw = Gw::new();
    let any = [0u8; 16];
    let m1 = pcp_map_request(A, 600, [1; 12], 6, 1000, 0, any);
    let m2 = pcp_map_request(A, 600, [2; 12], 17, 1000, 0, any);
    let m3 = pcp_map_request(A, 600, [3; 12], 6, 1001, 0, any);
    let out = gw.send_batch(&[
        (from(40000), &m1[..]),
        (from(40000), &m2[..]),
        (from(40000), &m3[..]),
        (from(40000), &m1[..]),
    ]);
    assert_eq!(out.len(), 4);
    for o in &out {
        assert_eq!(pcp_result(&o.payload), PCP_SUCCESS);
    }
    // The first three in one transaction; the retransmission of the first after it, with the
    // port the first was given.
    assert_eq!(gw.transactions.len(), 2, "{:?}", gw.transactions);
    assert_eq!(pcp_eport(&out[3].payload), pcp_eport(&out[0].payload));
    assert_eq!(gw.mappings().len(), 3);
    gw.assert_kernel_matches_engine();
}
