//! natpmp-pcp-core: the pure core of a NAT-PMP (RFC 6886) and PCP (RFC 6887) gateway. No
//! sockets, no clock, no async runtime: time is an argument and kernel changes are data.
//!
//! - `wire`: NAT-PMP and PCP message formats, parsed and emitted from byte buffers.
//! - `engine`: the protocol-neutral engine: one mapping table (IPv4 and IPv6 clients, IANA
//!   protocol numbers, owners with nonces), one port allocator, one epoch; staged changes with
//!   undo.
//! - `front`: one front end per protocol: wire messages to engine operations, outcomes to
//!   that protocol's result codes; PCP options, nonces and Mapping Updates.
//! - `gateway`: admission, batches (stage, apply, commit or revert, then reply), expiry,
//!   announcements, leases to save, drift repair and reload, over a `Forwarder`.
//! - `kernel`: the kernel projection as data (`Element`, `Change`), the `Forwarder` trait with
//!   typed errors, and the fake and null forwarders.
//! - `addr`: protocols, prefixes, the IPv4-mapped wire form.
//! - `time`: `Timestamp`, the virtual monotonic time everything is given.
//! - `view`: `MappingView`, what `natpmpctl print` shows.

pub mod addr;
pub mod engine;
pub mod front;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod kernel;
pub mod time;
pub mod view;
pub mod wire;

pub use addr::Protocol;
pub use engine::{Engine, EngineConfig};
pub use gateway::{Datagram, Gateway, GatewayConfig, Outgoing};
pub use kernel::{Change, Element, FakeForwarder, Forwarder, NullForwarder};
pub use time::Timestamp;
pub use view::MappingView;
