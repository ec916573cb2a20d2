//! natpmp-core: the pure NAT-PMP protocol core. No sockets, no clock, no async runtime.
//!
//! - `forward`: the kernel projection of a mapping (`Forward`, `Change`), staged as data.

pub mod forward;
