//! The Forwarder trait, how the gateway changes the kernel, and its typed errors.

use super::element::{Change, Element};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// What [`Forwarder::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Our table is there with all its maps, sets, chains and rules.
    Intact,
    /// Something of ours is missing, e.g. `table inet natpmpd is missing` or `chain prerouting
    /// has 0 of 4 rules` (another tool flushed the ruleset or reloaded a firewall). The cure
    /// is `prepare`, then `set_hairpin` and adding the elements again.
    Damaged(String),
}

/// An errno the kernel answered with. Kept as a number so that callers can tell "already
/// there" from "not there" from the rest without parsing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const ENOENT: Errno = Errno(2);
    pub const ENOMEM: Errno = Errno(12);
    pub const EEXIST: Errno = Errno(17);
    pub const EPERM: Errno = Errno(1);
    pub const ENOSPC: Errno = Errno(28);
    pub const EBUSY: Errno = Errno(16);
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // std knows the C library's text for every errno.
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// The kernel refused one change of a transaction (and so the whole transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeRefused {
    /// Index into the `changes` given to `apply`.
    pub index: usize,
    pub errno: Errno,
}

/// Why [`Forwarder::apply`] failed. In every case but `Unknown` the kernel is as it was
/// before the call: a transaction is all or nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// These changes were refused, each with its errno (EEXIST: the key is taken, by an
    /// element someone added by hand, say; ENOENT: the element to remove is gone already, or
    /// our table is). Nothing was applied.
    #[error("the kernel refused {} change(s): {}", .0.len(), describe_refusals(.0))]
    Refused(Vec<ChangeRefused>),
    /// The transaction failed as a whole (no table, no permission, out of memory), before any
    /// single change could be blamed. Nothing was applied.
    #[error("the kernel refused the transaction: {0}")]
    Failed(KernelError),
    /// The answer was lost (socket error mid-way, overflowing acknowledgements): the outcome is
    /// unknown, and `list` tells the truth.
    #[error("the outcome of the transaction is unknown: {0}")]
    Unknown(KernelError),
}

fn describe_refusals(refused: &[ChangeRefused]) -> String {
    let mut parts: Vec<String> = refused
        .iter()
        .take(3)
        .map(|r| format!("change #{}: {}", r.index, r.errno))
        .collect();
    if refused.len() > 3 {
        parts.push(format!("and {} more", refused.len() - 3));
    }
    parts.join("; ")
}

impl ApplyError {
    /// The changes the kernel blamed (empty unless `Refused`).
    pub fn refused(&self) -> &[ChangeRefused] {
        match self {
            ApplyError::Refused(r) => r,
            _ => &[],
        }
    }
}

/// A failure of any other kernel call.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The netlink socket itself failed (open, send, receive, or no answer in time).
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel answered `what` with an errno, e.g. reading a map of a table that is gone.
    #[error("{what}: {errno}")]
    Refused { what: String, errno: Errno },
    /// The kernel's answer made no sense (cut short, or too many answers).
    #[error("{0}")]
    Protocol(String),
    /// A request could not be encoded (an attribute over netlink's 16-bit length, say): it
    /// was not sent, and the kernel is as it was.
    #[error("netlink request not sent: {0}")]
    Encode(String),
    /// `nft -f` could not be run or refused the ruleset; the text is nft's own message.
    #[error("`nft -f` failed to load the natpmpd table: {0}")]
    Load(String),
    /// An internal network given to `set_hairpin` has a prefix length over 32.
    #[error("invalid internal network {0}/{1}: the prefix length is over 32")]
    InvalidNetwork(Ipv4Addr, u8),
    /// The external interface name cannot be written into the ruleset safely.
    #[error("invalid external interface: {0}")]
    InvalidInterface(String),
}

/// What our table is built around: the external interface its rules name, and the conntrack
/// mark bit it sets on every connection it lets in (the firewall contract: the operator's
/// forward chain accepts `ct mark & MARK == MARK`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableSpec {
    pub external_interface: String,
    pub connection_mark: u32,
}

impl TableSpec {
    /// The default mark (design.md §3): bit 20, clear of the low bits other tools use.
    pub const DEFAULT_CONNECTION_MARK: u32 = 0x0010_0000;

    pub fn new(external_interface: &str) -> TableSpec {
        TableSpec {
            external_interface: external_interface.to_owned(),
            connection_mark: Self::DEFAULT_CONNECTION_MARK,
        }
    }
}

/// A kernel backend. Implementations: `NftForwarder` (nftables over netlink, crate
/// natpmp-pcp-nft), [`NullForwarder`](super::NullForwarder) (protocol-only mode,
/// `backend = "none"`), [`FakeForwarder`](super::FakeForwarder) (tests).
pub trait Forwarder {
    /// Install our own table (naming `table.external_interface` in its rules and setting
    /// `table.connection_mark`), replacing any table of ours left by an earlier run, so that no
    /// element the gateway does not track survives. Never touches any other table.
    fn prepare(&mut self, table: &TableSpec) -> Result<(), KernelError>;

    /// Apply all `changes`, in order, as one atomic transaction: all or nothing. Conntrack is
    /// left alone: call [`Forwarder::clear_flows`] for the elements removed for good, once the
    /// clients have their replies (a clearing walks the whole conntrack table).
    fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError>;

    /// The elements in the kernel now, each with the time left before the kernel expires it
    /// (for reconciliation and tests).
    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError>;

    /// Remove our table (on shutdown, when forwards are not kept).
    fn teardown(&mut self) -> Result<(), KernelError>;

    /// Set what hairpin (RFC 6886 §4.3.4) needs: the current external address and the internal
    /// interfaces' networks, as (address, prefix length); host bits are ignored, and
    /// overlapping networks are fine. Replaces both earlier contents in one transaction; `None`
    /// or an empty list empties that set; `None` turns hairpin off. `prepare` empties both, so
    /// call this after every `prepare`, and whenever the address or a network changes.
    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError>;

    /// Whether our table is still whole: another tool may have deleted or flushed it. Cheap
    /// (the cost does not grow with the number of elements), so it can be polled every few
    /// seconds. Elements are not checked: compare `list` with what you expect for that.
    fn check(&mut self) -> Result<Health, KernelError>;

    /// End the tracked flows of `removed` elements (removed for good, see
    /// [`removed_for_good`](super::removed_for_good)), so open connections through them stop.
    /// Failures are logged, not returned: a flow that keeps its translation until it times out
    /// is not worth failing anything for.
    fn clear_flows(&mut self, removed: &[Element]);
}

impl<F: Forwarder + ?Sized> Forwarder for Box<F> {
    fn prepare(&mut self, table: &TableSpec) -> Result<(), KernelError> {
        (**self).prepare(table)
    }
    fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        (**self).apply(changes)
    }
    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError> {
        (**self).list()
    }
    fn teardown(&mut self) -> Result<(), KernelError> {
        (**self).teardown()
    }
    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError> {
        (**self).set_hairpin(external_addr, lan_nets)
    }
    fn check(&mut self) -> Result<Health, KernelError> {
        (**self).check()
    }
    fn clear_flows(&mut self, removed: &[Element]) {
        (**self).clear_flows(removed)
    }
}

/// Linux interface names: at most `IFNAMSIZ - 1` bytes.
const IFNAMSIZ_MAX: usize = 15;

/// Check that `name` can be placed inside an nft string literal as is. The name goes into our
/// ruleset text, so a quote or newline in it would let configuration inject nft statements;
/// Linux itself allows almost any byte, but real interface names stay within this set. Every
/// forwarder refuses what this refuses, so tests with the fake catch it too.
pub fn validate_interface(name: &str) -> Result<(), KernelError> {
    let problem = if name.is_empty() {
        "the external interface name is empty".to_owned()
    } else if name.len() > IFNAMSIZ_MAX {
        format!("interface name {name:?} is longer than {IFNAMSIZ_MAX} bytes")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        format!("interface name {name:?} has a character other than A-Z a-z 0-9 . _ @ -")
    } else {
        return Ok(());
    };
    Err(KernelError::InvalidInterface(problem))
}

/// Validate hairpin networks as every forwarder does: a prefix over 32 is refused.
pub fn validate_lan_nets(lan_nets: &[(Ipv4Addr, u8)]) -> Result<(), KernelError> {
    match lan_nets.iter().find(|(_, len)| *len > 32) {
        Some(&(addr, len)) => Err(KernelError::InvalidNetwork(addr, len)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_each_refused_change_and_its_errno() {
        let e = ApplyError::Refused(vec![
            ChangeRefused {
                index: 3,
                errno: Errno::EEXIST,
            },
            ChangeRefused {
                index: 5,
                errno: Errno::ENOENT,
            },
        ]);
        let text = e.to_string();
        assert!(text.contains("change #3: File exists"), "{text}");
        assert!(
            text.contains("change #5: No such file or directory"),
            "{text}"
        );
        assert_eq!(e.refused().len(), 2);
    }

    #[test]
    fn interface_names_that_could_inject_nft_text_are_refused() {
        for good in ["eth0", "enp3s0", "wan.100", "br-lan", "veth_1", "ppp0@x"] {
            assert!(validate_interface(good).is_ok(), "{good}");
        }
        assert!(validate_interface("abcdefghijklmno").is_ok()); // 15 bytes
        for bad in [
            "",
            "abcdefghijklmnop",
            "eth0\" accept",
            "eth0\n",
            "eth 0",
            "eth0;",
            "eth0}",
            "é",
        ] {
            assert!(
                matches!(
                    validate_interface(bad),
                    Err(KernelError::InvalidInterface(_))
                ),
                "{bad:?}"
            );
        }
    }
}
