//! natpmp-nft: the kernel backend.
//!
//! - `forwarder`: the [`Forwarder`] trait the daemon drives.

pub mod forwarder;

pub use forwarder::{ForwardError, Forwarder};
