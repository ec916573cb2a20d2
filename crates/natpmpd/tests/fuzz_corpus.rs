//! The saved fuzzing corpus of the configuration parser (`fuzz/corpus/config/`), replayed on
//! stable through the code the cargo-fuzz target runs (`natpmpd::fuzzing::config`). A missing
//! or empty corpus fails.
//!
//! `write_seeds` (ignored; run it by name) writes the starting corpus: every TOML example in
//! README.md and docs/configuration.md, before `cargo fuzz cmin`; see docs/fuzzing.md.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[path = "../../../fuzz/corpus_replay.rs"]
mod corpus_replay;
use corpus_replay::{corpus, replay};

#[test]
fn config_corpus() {
    replay("config", natpmpd::fuzzing::config);
}

/// The ```toml blocks of a Markdown file.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
#[ignore = "writes the starting corpus; run by name"]
fn write_seeds() {
    let dir = corpus("config");
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for doc in ["README.md", "docs/configuration.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for block in toml_blocks(&text) {
            std::fs::write(dir.join(format!("seed-{n:02}")), block).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "no TOML examples found");
}
