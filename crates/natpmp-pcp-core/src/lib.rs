//! natpmp-pcp-core: the pure NAT-PMP protocol core. No sockets, no clock, no async runtime.
//!
//! - `wire`: NAT-PMP message formats, parsed and emitted from byte buffers.
//! - `server`: the protocol engine (`Server::handle(now, client, datagram)`).
//! - `table`: the mapping table with its indexes, and the port allocator.
//! - `announce`: the 10-copy announcement schedule.
//! - `forward`: the kernel projection of a mapping (`Forward`, `Change`), staged as data.
//! - `time`: `Timestamp`, the virtual monotonic time the engine is given.
//! - `view`: `MappingView`, what `natpmpctl print` shows.

pub mod announce;
pub mod forward;
pub mod server;
pub mod table;
pub mod time;
pub mod view;
pub mod wire;

pub use forward::{Change, Forward, Protocol};
pub use server::{MappingRecord, Outcome, Server, ServerConfig};
pub use time::Timestamp;
pub use view::MappingView;
