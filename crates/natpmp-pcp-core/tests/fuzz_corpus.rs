//! The saved fuzzing corpora (`fuzz/corpus/<target>/`), replayed on stable: every file of the
//! core's three targets goes through the same code the cargo-fuzz target runs
//! (`natpmp_pcp_core::fuzzing`), invariant checks included. A missing or empty corpus fails,
//! so a renamed directory cannot turn this into a test of nothing.
//!
//! `write_seeds` (ignored; run it by name) writes the starting corpora from the requests the
//! other tests build (`common`), before `cargo fuzz cmin` minimises them; see docs/fuzzing.md.

mod common;
use common::*;
use natpmp_pcp_core::fuzzing;

#[path = "../../../fuzz/corpus_replay.rs"]
mod corpus_replay;
use corpus_replay::{corpus, replay};

#[test]
fn natpmp_request_corpus() {
    replay("natpmp_request", fuzzing::natpmp_request);
}

#[test]
fn pcp_wire_corpus() {
    replay("pcp_wire", fuzzing::pcp_wire);
}

#[test]
fn gateway_corpus() {
    replay("gateway", fuzzing::gateway);
}

/// The gateway target's one finding (2 December 2026): a PEER mapping granted 3 600 s, the cap
/// reloaded down to 1 s, then a PEER refresh, which reports the 3 591 s left (a refresh never
/// shortens). The invariant took that for a new grant over the cap; it now counts only an
/// expiry moved later as a grant.
#[test]
fn gateway_regression_peer_refresh_under_a_lowered_cap() {
    let file = corpus("gateway").join("regression-peer-refresh-under-a-lowered-cap");
    fuzzing::gateway(&std::fs::read(&file).expect("the regression input"));
}

/// Requests the conformance tests send, as starting points.
fn seed_requests() -> Vec<Vec<u8>> {
    let client = A;
    let mut out = vec![
        addr_request().to_vec(),
        map_request(UDP, 5000, 5000, 3600).to_vec(),
        map_request(TCP, 8080, 0, 7200).to_vec(),
        map_request(TCP, 8080, 0, 0).to_vec(),
        vec![0, 3, 0, 0],
        vec![1, 0],
        vec![0, 0x80, 0, 0, 0, 0, 0, 1, 203, 0, 113, 5],
        tcp_map(client, 8080, 3600),
        pcp_map_request(client, 0, NONCE, IP_UDP, 5000, 0, ZERO4),
        pcp_map_request(client, 7200, NONCE2, 0, 0, 0, ZERO4),
        pcp_peer_request(
            client,
            600,
            NONCE,
            IP_TCP,
            8080,
            0,
            40000,
            std::net::Ipv4Addr::new(198, 51, 100, 7),
        ),
        pcp_announce(0),
        pcp_header(PCP_ANNOUNCE, 0, mapped(client)),
        pcp_header(5, 0, mapped(client)),
    ];
    let mut filtered = tcp_map(client, 22, 3600);
    filtered.extend(pcp_filter(120, 0, std::net::Ipv4Addr::new(198, 51, 100, 0)));
    filtered.extend(pcp_prefer_failure());
    filtered.extend(pcp_description(b"ssh"));
    out.push(filtered);
    let mut third = tcp_map(client, 22, 3600);
    third.extend(pcp_third_party(mapped(B)));
    third.extend(pcp_option(200, &[1, 2, 3]));
    out.push(third);
    let mut v6 =
        pcp_map_request_field(wire6("2001:db8:1::10"), 3600, NONCE, IP_TCP, 8080, 0, ZERO6);
    v6.extend(pcp_option(OPT_FILTER, &[0; 20]));
    out.push(v6);
    out
}

#[test]
#[ignore = "writes the starting corpora; run by name"]
fn write_seeds() {
    for (i, request) in seed_requests().iter().enumerate() {
        for target in ["natpmp_request", "pcp_wire"] {
            let dir = corpus(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i:02}")), request).unwrap();
        }
    }
    // Step sequences for the gateway target: the configuration (cap 86400 s, the default
    // port range, PCP minimum 120 s, quota 256, seed 0, PCP on), then each seed request in a
    // datagram step (tag 0, one datagram, client 0, port 0, kind 7 = raw bytes, then its
    // length and bytes), then a timer tick (tag 6).
    let dir = corpus("gateway");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, request) in seed_requests().iter().enumerate() {
        let mut steps = vec![
            4,
            0,
            2,
            4,
            0,
            0,
            0,
            0,
            0,
            0,
            7,
            request.len().min(255) as u8,
        ];
        steps.extend_from_slice(&request[..request.len().min(255)]);
        steps.push(6);
        std::fs::write(dir.join(format!("seed-{i:02}")), steps).unwrap();
    }
}
