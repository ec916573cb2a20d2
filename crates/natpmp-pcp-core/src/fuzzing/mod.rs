//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) and
//! by the corpus replay test `tests/fuzz_corpus.rs` (stable, `cargo test`), so that one body
//! of code runs each input and checks its invariants in both places. Not part of the API.
//!
//! Every function takes the raw fuzzer input and panics only when an invariant breaks (a
//! panic inside the code under test is the other kind of finding).
//!
//! - `wire`: the NAT-PMP request parser and the PCP header, opcode and option parsers.
//! - `gateway`: a whole `Gateway<FakeForwarder>` driven by a sequence of steps decoded from
//!   the input, with the invariants checked after every step.
//! - `input`: the byte reader the structure-aware target decodes its steps with.

mod gateway;
mod input;
mod requests;
mod wire;

pub use gateway::gateway;
pub use input::Input;
pub use wire::{natpmp_request, pcp_wire};
