//! Wire formats. One module per protocol; each parses from and emits into byte buffers and
//! never panics on any input (every read is bounds-checked first).

pub mod natpmp;
pub mod pcp;
