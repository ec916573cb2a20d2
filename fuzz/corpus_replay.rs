//! Replaying a saved corpus on stable, shared by the `tests/fuzz_corpus.rs` of the three crates
//! (each includes this file with `#[path]`): every file of `fuzz/corpus/<target>/` through the
//! code its cargo-fuzz target runs, in name order, naming the file that fails. A missing or
//! empty corpus fails, so a renamed directory cannot turn a replay into a test of nothing.

use std::path::PathBuf;

/// `fuzz/corpus/<target>/`, from the including crate's directory (`crates/<crate>`).
pub fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Run every file of `target`'s corpus through `run`; returns how many there were.
pub fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for file in &files {
        let bytes = std::fs::read(file).expect("corpus file");
        let name = file.display().to_string();
        if let Err(panic) = std::panic::catch_unwind(|| run(&bytes)) {
            eprintln!("corpus file {name} failed");
            std::panic::resume_unwind(panic);
        }
    }
    files.len()
}
