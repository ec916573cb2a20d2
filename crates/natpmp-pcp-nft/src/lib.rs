//! natpmp-pcp-nft: the kernel backend of natpmpd, [`NftForwarder`], which implements the
//! core's [`Forwarder`](natpmp_pcp_core::kernel::Forwarder) with nftables map and set
//! elements and conntrack over netlink: IPv4 port forwards (NAT) and IPv6 pinholes, in one
//! table, under one firewall contract (the connection mark, see `template`).
//!
//! - `nft_forwarder`: [`NftForwarder`] itself.
//! - `template`: the `nft -f` text of our own table `inet natpmpd`, and why it is one table.
//! - `nftables`: nf_tables messages, encoded and decoded by hand: key and data layouts
//!   (`keys`), element transactions (`element`), element dumps (`dump`), the hairpin sets
//!   (`hairpin`).
//! - `health`: the messages and rules of `Forwarder::check`: is our table still whole?
//! - `conntrack`: ctnetlink dump and delete messages (IPv4 and IPv6), to end the flows of
//!   removed elements; `flow_match` finds those flows in a dump ([`RemovedElements`]), and
//!   `flow_cleaner` does it on a thread of its own.
//! - `session`: requests and answers over our netlink socket.
//! - `sock_diag`: the router's own listening TCP sockets, which the daemon keeps out of the
//!   port allocator ([`tcp_listeners`]).
//! - `nl`: netlink framing (builder, checked parsers) and the netlink socket.
//!
//! Only [`NftForwarder`], the conntrack entries it reports and [`RemovedElements`] (for its
//! benchmark) are public: the messages are an implementation detail, tested byte for byte
//! here.

mod conntrack;
mod flow_cleaner;
mod flow_match;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod kernel_support;
mod nft_forwarder;
mod nftables;
mod nl;
mod session;
mod sock_diag;
mod template;

pub use conntrack::{Entry as ConntrackEntry, Tuple as ConntrackTuple};
pub use flow_match::RemovedElements;
pub use nft_forwarder::NftForwarder;
pub use sock_diag::tcp_listeners;
