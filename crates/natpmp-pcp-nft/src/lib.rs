//! natpmp-pcp-nft: the kernel backend.
//!
//! - `forwarder`: the [`Forwarder`] trait the daemon drives, and [`ForwardError`].
//! - `nft_forwarder`: [`NftForwarder`], the real one: nftables map elements and conntrack over
//!   netlink.
//! - `template`: the `nft -f` text of our own table `ip natpmpd`, and interface name checks.
//! - `nftables`: nf_tables batch, set element and dump messages, encoded and decoded by hand.
//! - `health`: the messages and rules of [`Forwarder::check`]: is our table still whole?
//! - `conntrack`: ctnetlink dump and delete messages, to end the flows of removed forwards.
//! - `nl`: netlink framing (builder, checked parsers) and the netlink socket.
//! - `null`: [`NullForwarder`], protocol-only mode: nothing reaches the kernel.
//! - `fake`: [`FakeForwarder`], an in-memory kernel with the same rules, for tests.

pub mod conntrack;
pub mod fake;
pub mod forwarder;
pub mod health;
pub mod nft_forwarder;
pub mod nftables;
pub mod nl;
pub mod null;
pub mod template;

pub use fake::FakeForwarder;
pub use forwarder::{ForwardError, Forwarder, Health};
pub use nft_forwarder::NftForwarder;
pub use null::NullForwarder;
pub use template::InterfaceNameError;
