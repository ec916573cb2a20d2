//! The kernel as the gateway sees it: elements and changes as data ([`element`]), the
//! [`Forwarder`] trait a backend implements, with typed errors ([`forwarder`]), and two
//! backends that need no kernel: [`FakeForwarder`] for tests and [`NullForwarder`] for
//! protocol-only mode. The real one, nftables over netlink, is crate natpmp-pcp-nft.

pub mod element;
pub mod fake;
pub mod forwarder;
pub mod null;

pub use element::{removed_for_good, Change, Element, RemoteRange};
pub use fake::FakeForwarder;
pub use forwarder::{
    validate_interface, validate_lan_nets, ApplyError, ChangeRefused, Errno, Forwarder, Health,
    KernelError, TableSpec,
};
pub use null::NullForwarder;
