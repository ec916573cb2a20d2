//! The saved fuzzing corpora (`fuzz/corpus/<target>/`), replayed on stable: every file of the
//! netlink targets goes through the same code the cargo-fuzz target runs
//! (`natpmp_pcp_nft::fuzzing`), invariant checks included. A missing or empty corpus fails.
//!
//! `write_seeds` (ignored; run it by name) writes the starting corpora from the crate's own
//! encoders, before `cargo fuzz cmin` minimises them; see docs/fuzzing.md.

use natpmp_pcp_nft::fuzzing;

#[path = "../../../fuzz/corpus_replay.rs"]
mod corpus_replay;
use corpus_replay::{corpus, replay};

#[test]
fn netlink_corpus() {
    replay("netlink", fuzzing::netlink);
}

#[test]
fn nft_dump_corpus() {
    replay("nft_dump", fuzzing::nft_dump);
}

#[test]
fn conntrack_corpus() {
    replay("conntrack", fuzzing::conntrack);
}

#[test]
fn health_corpus() {
    replay("health", fuzzing::health);
}

#[test]
fn every_seed_passes_its_target() {
    let seeds = fuzzing::seeds();
    for target in ["netlink", "nft_dump", "conntrack", "health"] {
        assert!(
            seeds.iter().any(|(t, _)| *t == target),
            "no seed for {target}"
        );
    }
    for (target, bytes) in &seeds {
        match *target {
            "netlink" => fuzzing::netlink(bytes),
            "nft_dump" => fuzzing::nft_dump(bytes),
            "conntrack" => fuzzing::conntrack(bytes),
            "health" => fuzzing::health(bytes),
            other => panic!("seed for unknown target {other}"),
        }
    }
}

#[test]
#[ignore = "writes the starting corpora; run by name"]
fn write_seeds() {
    for (i, (target, bytes)) in fuzzing::seeds().iter().enumerate() {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
    }
}
