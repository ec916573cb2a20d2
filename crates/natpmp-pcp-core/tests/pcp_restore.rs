//! PCP mappings across a restart (the doc's "Epoch across restarts": the lease file keeps PCP
//! mappings whole): records keep the nonce, the reply path, FILTERs, PEER remotes and the
//! description; a restore brings them back into the table and the kernel (which then holds
//! exactly the engine's projection), and every rule that depends on them still holds.

mod common;
use common::*;
use natpmp_pcp_core::engine::mapping::{Nonce, Owner, PcpClient, ReplyPath};
use natpmp_pcp_core::engine::records::{MappingRecord, RecordKind};
use natpmp_pcp_core::gateway::{RestoredLeases, Started};
use natpmp_pcp_core::{EngineConfig, Protocol, Timestamp};
use std::net::{Ipv4Addr, SocketAddr};

const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
/// The restarted gateway's clock (a new process: a new origin).
const RESTART: Timestamp = Timestamp::from_secs(5);
const A_PORT: u16 = 40001;
const B_PORT: u16 = 40002;

/// What was built before the restart, and the mapping's ports.
struct Before {
    gw: Gw,
    map_req: Vec<u8>,
    peer_req: Vec<u8>,
    map_port: u16,
    peer_port: u16,
    pmp_port: u16,
}

/// A's PCP MAP (TCP 8080, from A:40001, a FILTER /24 and a DESCRIPTION, 3600 s), B's PEER
/// (UDP 5000 to REMOTE:4000, from B:40002, a DESCRIPTION, 1800 s), C's NAT-PMP TCP 22; 100 s
/// later.
fn before() -> Before {
    let mut gw = Gw::new();
    let map_req = pcp_map_request(A, 3600, NONCE, IP_TCP, 8080, 0, ZERO4);
    let mut req = map_req.clone();
    req.extend(pcp_filter(120, 0, NET));
    req.extend(pcp_description(b"web server"));
    let map_port = pcp_eport(&gw.pcp_ok_from(SocketAddr::new(v4(A), A_PORT), &req));
    let peer_req = pcp_peer_request(B, 1800, NONCE2, IP_UDP, 5000, 0, 4000, REMOTE);
    let mut req = peer_req.clone();
    req.extend(pcp_description(b"call"));
    let peer_port = pcp_eport(&gw.pcp_ok_from(SocketAddr::new(v4(B), B_PORT), &req));
    let pmp_port = gw.map_ok(C, TCP, 22, 0, 600);
    gw.advance_secs(100);
    Before {
        gw,
        map_req,
        peer_req,
        map_port,
        peer_port,
        pmp_port,
    }
}

/// The records the daemon would save at shutdown (keeping the kernel's table).
fn saved(b: &mut Before) -> (Vec<MappingRecord>, u32) {
    let now = b.gw.now;
    let snapshot = b.gw.gateway.shutdown(now, true);
    (snapshot.records, snapshot.epoch_seconds)
}

fn restarted(records: &[MappingRecord], epoch_seconds: u32) -> (Gw, Started) {
    Gw::started(
        gateway_config(EngineConfig::default()),
        RESTART,
        Some(EXT),
        Some(RestoredLeases {
            external_addr: Some(EXT),
            epoch_seconds,
            records: records.to_vec(),
            clean: true,
        }),
    )
}

#[test]
fn records_keep_nonce_reply_path_filters_peers_and_description() {
    let mut b = before();
    let (records, epoch) = saved(&mut b);
    assert_eq!(epoch, 100);
    let lan = ReplyPath {
        client_port: A_PORT,
        server: v4(GW_LAN),
    };
    let find = |client: Ipv4Addr| records.iter().find(|r| r.client == v4(client)).unwrap();
    let a = find(A);
    assert_eq!(
        (
            a.protocol,
            a.internal_port,
            a.external_port,
            a.lifetime,
            a.expires_in_ms
        ),
        (Protocol::Tcp, 8080, b.map_port, 3600, 3_500_000)
    );
    match &a.kind {
        RecordKind::Map { owner, filters } => {
            assert_eq!(
                *owner,
                Owner::Pcp(PcpClient {
                    nonce: Nonce(NONCE),
                    reply_path: lan
                })
            );
            assert_eq!(filters.len(), 1);
            assert_eq!(filters[0].to_string(), "198.51.100.0/24");
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(a.description.as_deref(), Some("web server"));
    let p = find(B);
    match &p.kind {
        RecordKind::Peer { remote, owner } => {
            assert_eq!(*remote, SocketAddr::new(v4(REMOTE), 4000));
            assert_eq!(owner.nonce, Nonce(NONCE2));
            assert_eq!(owner.reply_path.client_port, B_PORT);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(p.description.as_deref(), Some("call"));
    assert!(matches!(
        find(C).kind,
        RecordKind::Map {
            owner: Owner::NatPmp,
            ..
        }
    ));
}

#[test]
fn records_survive_the_lease_file_as_json() {
    let mut b = before();
    let (records, _) = saved(&mut b);
    let json = serde_json::to_string(&records).unwrap();
    let back: Vec<MappingRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, records);
}

#[test]
fn a_restore_brings_everything_back_and_the_kernel_matches_the_engine() {
    // Same mappings, same ports, remaining lifetimes; the kernel gets the same elements as the
    // old one held (outbound rewrites, C's open inbound, A's /24 box, B's PEER box) in one
    // transaction, each timing out 2 s after its mapping.
    let mut b = before();
    let old_elements = b.gw.elements();
    let old_views = b.gw.mappings();
    let (records, epoch) = saved(&mut b);
    let (r, started) = restarted(&records, epoch);
    assert_eq!(started.restored, 3);
    assert!(started.epoch_continued);
    assert_eq!(r.elements(), old_elements);
    r.assert_kernel_matches_engine();
    assert_eq!(r.transactions.len(), 1, "{:?}", r.transactions);
    let projection = r.gateway.engine().projection();
    for (element, timeout) in r.kernel_elements() {
        let (_, expires) = projection.iter().find(|(e, _)| *e == element).unwrap();
        assert_eq!(timeout, expires.since(RESTART) + GRACE, "{element}");
    }
    assert!(r.elements().contains(&filtered(
        TCP,
        b.map_port,
        remotes(NET, Ipv4Addr::new(198, 51, 100, 255), 0, 65535),
        A,
        8080
    )));
    assert!(r.elements().contains(&filtered(
        UDP,
        b.peer_port,
        remotes(REMOTE, REMOTE, 4000, 4000),
        B,
        5000
    )));
    assert!(r.elements().contains(&inbound(TCP, b.pmp_port, C, 22)));
    assert_eq!(r.mappings(), old_views);
}

#[test]
fn a_restored_nonce_still_owns_its_mapping() {
    // The same nonce renews (same port, epoch continued); another is NOT_AUTHORIZED with the
    // remaining lifetime; NAT-PMP is still read-only and its delete refused.
    let mut b = before();
    let (records, epoch) = saved(&mut b);
    let (mut r, _) = restarted(&records, epoch);
    let other = pcp_map_request(A, 600, NONCE2, IP_TCP, 8080, 0, ZERO4);
    r.assert_refused(
        A,
        &other,
        &pcp_error_reply(&other, PCP_NOT_AUTHORIZED, 3500, 100, true),
    );
    let peer_other = pcp_peer_request(B, 600, NONCE, IP_UDP, 5000, 0, 4000, REMOTE);
    r.assert_refused(
        B,
        &peer_other,
        &pcp_error_reply(&peer_other, PCP_NOT_AUTHORIZED, 1700, 100, true),
    );
    let del = r.reply(A, &map_request(TCP, 8080, 0, 0));
    assert_bytes(&del, &map_reply(TCP, REFUSED, 100, 8080, b.map_port, 0));
    let req = b.map_req.clone();
    let reply = r.pcp_ok(A, &req);
    assert_bytes(
        &reply,
        &pcp_success_reply(&req, 3600, 100, b.map_port, mapped(EXT), &[]),
    );
    let reply = r.pcp_ok(B, &b.peer_req);
    assert_eq!(pcp_eport(&reply), b.peer_port);
}

#[test]
fn restored_filters_and_descriptions_are_kept_by_a_renewal() {
    // A renewal without FILTER or DESCRIPTION keeps both (and echoes neither).
    let mut b = before();
    let (records, epoch) = saved(&mut b);
    let (mut r, _) = restarted(&records, epoch);
    let boxes = r.elements();
    r.pcp_ok(A, &b.map_req);
    assert_eq!(r.elements(), boxes);
    let v = r.mapping(A, TCP, 8080).unwrap();
    assert_eq!(v.filters, vec!["198.51.100.0/24".to_owned()]);
    assert_eq!(v.description.as_deref(), Some("web server"));
}

#[test]
fn a_restored_mapping_gets_its_mapping_updates_at_the_saved_reply_path() {
    // After the restart an address change tells A at A:40001 and B at B:40002, from the LAN
    // address they talked to, with their FILTERs; C (NAT-PMP) gets none.
    let mut b = before();
    let (records, epoch) = saved(&mut b);
    let (mut r, _) = restarted(&records, epoch);
    r.run_for(secs(200));
    r.set_address(Some(EXT2));
    let sent: Vec<_> = r
        .run_for(secs(1))
        .into_iter()
        .filter(|o| o.to != ANNOUNCE_TO)
        .collect();
    assert_eq!(sent.len(), 6, "{sent:?}");
    let to_a: Vec<_> = sent
        .iter()
        .filter(|o| o.to == SocketAddr::new(v4(A), A_PORT))
        .collect();
    let to_b: Vec<_> = sent
        .iter()
        .filter(|o| o.to == SocketAddr::new(v4(B), B_PORT))
        .collect();
    assert_eq!((to_a.len(), to_b.len()), (3, 3));
    for o in &sent {
        assert_sent_on_lan(o);
    }
    assert_bytes(
        &to_a[0].payload,
        &pcp_success_reply(
            &b.map_req,
            3300,
            0,
            b.map_port,
            mapped(EXT2),
            &pcp_filter(120, 0, NET),
        ),
    );
    assert_bytes(
        &to_b[0].payload,
        &pcp_success_reply(&b.peer_req, 1500, 0, b.peer_port, mapped(EXT2), &[]),
    );
}
