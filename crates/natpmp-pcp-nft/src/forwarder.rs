//! The Forwarder trait: how the daemon changes the kernel's port forwards.

use natpmp_pcp_core::forward::{Change, Forward};
use std::net::Ipv4Addr;

/// What [`Forwarder::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Our table is there with all its maps, sets, chains and rules.
    Intact,
    /// Something of ours is missing, e.g. `table ip natpmpd is missing` or `chain prerouting
    /// has 0 of 2 rules` (another tool flushed the ruleset or reloaded a firewall). The cure
    /// is `prepare`, then `set_hairpin` and re-adding the forwards.
    Damaged(String),
}

/// Why a [`Forwarder`] call failed. After a failed `apply`, the kernel is as it was before the
/// call (the transaction is all or nothing), except where [`ForwardError::Kernel`] says the
/// outcome is unknown; `list` then tells the truth.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The netlink socket itself failed (open, send, receive, or no answer in time).
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused the transaction (or a dump): the text names the failing change and
    /// the kernel's errno, e.g. `change #0 (remove udp 4000 ...): No such file or directory`.
    #[error("kernel refused the change: {0}")]
    Kernel(String),
    /// `nft -f` could not be run or refused the ruleset; the text is nft's own message.
    #[error("`nft -f` failed to load the natpmpd table: {0}")]
    Load(String),
    /// An internal network given to `set_hairpin` has a prefix length over 32.
    #[error("invalid internal network {0}/{1}: the prefix length is over 32")]
    InvalidNetwork(Ipv4Addr, u8),
    /// The maps hold elements that are not halves of a whole forward (added or removed by
    /// hand, or undecodable). They cannot be listed as forwards, and a forward's removal would
    /// not reach them, so the caller should rebuild the table.
    #[error("the natpmpd maps hold elements that are not part of a whole forward: {0}")]
    Stray(String),
    /// The external interface name cannot be written into the ruleset safely.
    #[error("invalid external interface: {0}")]
    InvalidInterface(#[from] crate::template::InterfaceNameError),
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
    /// time left as the kernel reports it. Elements that do not pair into whole forwards make
    /// this fail with `ForwardError::Stray`: such drift can only be repaired by a rebuild.
    fn list(&mut self) -> Result<Vec<Forward>, ForwardError>;

    /// Remove our table (used on shutdown when forwards are not kept).
    fn teardown(&mut self) -> Result<(), ForwardError>;

    /// Set what hairpin (RFC 6886 section 4.3.4) needs: the current external address and the
    /// internal interfaces' networks, as (address, prefix length); host bits are ignored, and
    /// overlapping networks are fine. Replaces both earlier contents in one transaction; `None`
    /// or an empty list empties that set. `None` turns hairpin off. With an address but no
    /// networks, LAN flows to the address are still translated but not masqueraded, which
    /// works only when the client and the mapped host are on different subnets (the answer
    /// must come back through us). `prepare` empties both sets, so call this after every
    /// `prepare`, and whenever the external address or an internal network changes.
    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), ForwardError> {
        let _ = (external_addr, lan_nets);
        Ok(())
    }

    /// Whether our table is still whole: another tool may have deleted or flushed it. Cheap
    /// (no process is spawned, and the cost does not grow with the number of forwards), so
    /// it can be polled every few seconds. Elements are not checked: compare `list` with the
    /// forwards you expect for that.
    fn check(&mut self) -> Result<Health, ForwardError> {
        Ok(Health::Intact)
    }

    /// Clear the conntrack entries of forwards an earlier `apply` removed, for a backend whose
    /// `apply` was set to leave that for later (so clients get their replies first: a clearing
    /// walks the whole conntrack table). Failures are logged, not returned: a flow that keeps
    /// its translation until it times out is not worth failing anything for. Default: nothing.
    fn clear_flows(&mut self, removed: &[Forward]) {
        let _ = removed;
    }
}
