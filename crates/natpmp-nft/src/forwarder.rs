//! The Forwarder trait: how the daemon changes the kernel's port forwards.

use natpmp_core::forward::{Change, Forward};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("kernel refused the change: {0}")]
    Kernel(String),
    #[error("`nft -f` failed to load the natpmpd table: {0}")]
    Load(String),
}

/// A kernel backend. Implementations: `NftForwarder` (nftables over netlink), `NullForwarder`
/// (protocol-only mode, `backend = "none"`), `FakeForwarder` (tests).
pub trait Forwarder {
    /// Install our own table (naming `external_interface` in its rules), replacing any table of
    /// ours left by an earlier run, so that no forward the daemon does not track survives.
    /// Never touches any other table.
    fn prepare(&mut self, external_interface: &str) -> Result<(), ForwardError>;

    /// Apply all `changes`, in order, as one atomic transaction: all or nothing. After removing
    /// a forward, its conntrack entries are removed too, so open flows stop.
    fn apply(&mut self, changes: &[Change]) -> Result<(), ForwardError>;

    /// The forwards currently in the kernel (for reconciliation and tests). Timeouts are the
    /// time left as the kernel reports it.
    fn list(&mut self) -> Result<Vec<Forward>, ForwardError>;

    /// Remove our table (used on shutdown when forwards are not kept).
    fn teardown(&mut self) -> Result<(), ForwardError>;
}
