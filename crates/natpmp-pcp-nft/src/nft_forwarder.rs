//! [`NftForwarder`]: the real backend, nftables map and set elements and conntrack over
//! netlink.

use crate::conntrack::{self, Entry};
use crate::flow_cleaner::{self, FlowCleaner};
use crate::health;
use crate::nftables::dump::{self, Unreadable};
use crate::nftables::element::{self, Transaction};
use crate::nftables::{hairpin, ElementSet};
use crate::nl::ErrorMsg;
use crate::session::{refused, Acks, ExchangeFailure, Session};
use crate::template;
use natpmp_pcp_core::kernel::{
    validate_lan_nets, ApplyError, Change, ChangeRefused, Element, Errno, Forwarder, Health,
    KernelError, TableSpec,
};
use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How many times `dump_set_whole` takes a set's dump that repeats elements, and how long it
/// waits between two (the kernel's rehash of a set of thousands takes milliseconds).
const DUMP_REPEATS: u32 = 5;
const DUMP_REPEAT_PAUSE: Duration = Duration::from_millis(20);

/// nftables over netlink, in one `table inet natpmpd` for both families (see `template.rs`
/// for why, and for the firewall contract: the connection mark).
///
/// - `prepare` runs `nft -f -` once with [`template::ruleset`]; nothing else spawns a process.
///   It also removes the `table ip natpmpd` of an older natpmpd.
/// - `apply` sends one nf_tables batch per call, one element message per change, IPv4 map
///   elements and IPv6 pinholes alike, and never touches conntrack: `clear_flows` does, later.
/// - `list` dumps the three maps and the two pinhole sets and decodes every element (see
///   there for what it does with elements natpmpd did not write).
/// - `set_hairpin` replaces the two hairpin sets' elements in one batch.
/// - `check` reads our table's sets, chains and rules (not elements) in four small requests.
/// - `clear_flows` hands the elements to a thread of its own (`flow_cleaner.rs`), which dumps
///   conntrack once (both families) for everything queued and deletes the entries of those
///   elements.
///
/// Namespace rule: the netlink socket belongs to the network namespace of the thread that
/// called [`NftForwarder::new`], for its whole life. `nft` is run in that same namespace even
/// if a later call comes from a thread in another one (then it needs CAP_SYS_ADMIN to enter
/// it; in the usual case of one namespace, no extra privilege is used).
///
/// Errors: a refused transaction changes nothing. The kernel expires elements by itself when
/// their timeout passes; a later `Remove` of such an element is refused with ENOENT and takes
/// the whole transaction down with it. Keep the kernel timeout longer than the mapping (as the
/// engine does) and, on a refused apply, reconcile against `list` rather than retry blindly.
/// Without our table, every change is refused with ENOENT.
///
/// The interval map and set (measured on kernel 6.18): the kernel finds the box to remove by
/// its first corner alone and ignores the last. A box that is there is always removed exactly
/// (the kernel holds no overlapping boxes), but removing a box that is not there, whose first
/// corner lies inside another box of the same protocol and external port (for a pinhole: the
/// same host address, protocol and port), removes that other box and succeeds, where ENOENT
/// would be expected. The core never holds overlapping boxes, so this can only hit a box
/// added by hand, which drift repair would remove anyway.
///
/// Cost (measured with `examples/bench_apply.rs` at 1000 elements on kernel 6.18; nearly all
/// of it in the kernel): a box costs far more than a hash element, the 44-byte pinhole boxes
/// most: about 0.6 ms for a transaction of one box, and 0.5 ms per box removed even in a
/// batch, against 15 us for a one-pinhole transaction. Batch what can be batched.
///
/// Not thread-safe by design (`&mut self`): one owner drives it, as the daemon's loop does. It
/// is `Send`, so it may move to another thread, as long as that thread is in the same network
/// namespace (the socket keeps its namespace anyway; see above for `nft`).
pub struct NftForwarder {
    session: Session,
    cleaner: FlowCleaner,
    /// The namespace the socket lives in, to run `nft` there too.
    netns: Option<File>,
    nft: PathBuf,
    /// The last transaction's bytes, kept for the next one to write into.
    tx_buf: Vec<u8>,
}

/// The largest transaction buffer kept for the next transaction: a batch of 64 requests
/// needs about 20 KiB.
const KEPT_TX_BUF: usize = 64 * 1024;

impl NftForwarder {
    /// Open the netlink socket in the calling thread's network namespace. Needs
    /// CAP_NET_ADMIN only when the kernel is asked to change something.
    pub fn new() -> Result<Self, KernelError> {
        Ok(NftForwarder {
            session: Session::open()?,
            cleaner: FlowCleaner::new()?,
            netns: File::open("/proc/thread-self/ns/net").ok(),
            nft: PathBuf::from("nft"),
            tx_buf: Vec::new(),
        })
    }

    /// Use this `nft` program instead of the one found on `PATH`.
    pub fn with_nft_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.nft = path.into();
        self
    }

    /// Feed `script` to `nft -f -` in our namespace.
    fn run_nft(&self, script: &str) -> Result<(), KernelError> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = self.netns.as_ref().filter(|ns| !in_namespace(ns)) {
            let fd = ns.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and only makes one
            // async-signal-safe system call.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| KernelError::Load(format!("cannot run {}: {e}", self.nft.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // nft reads all its input before it answers, so writing first cannot deadlock.
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| KernelError::Load(format!("writing to nft: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| KernelError::Load(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if msg.is_empty() {
                msg = format!("nft exited with {}", out.status);
            }
            let release = crate::kernel_support::running_release().unwrap_or_default();
            if let Some(hint) = crate::kernel_support::hint(&release, &msg) {
                msg = format!("{msg}; {hint}");
            }
            return Err(KernelError::Load(msg));
        }
        Ok(())
    }

    /// Add the elements of `set` to `ok`, and those natpmpd cannot read to `unreadable`.
    fn dump_set(
        &mut self,
        set: ElementSet,
        ok: &mut Vec<(Element, Duration)>,
        unreadable: &mut Vec<Unreadable>,
    ) -> Result<(), KernelError> {
        let kind = if set.is_map() { "map" } else { "set" };
        self.session.dump(
            |seq| dump::encode_dump(set, seq),
            |p| {
                for raw in dump::parse_elements(p) {
                    match dump::decode(set, &raw) {
                        Ok(e) => ok.push(e),
                        Err(u) => unreadable.push(u),
                    }
                }
            },
            &format!("listing {kind} {}", set.name()),
        )
    }

    /// `dump_set`, taken again while it reports an element twice. Each message of a dump
    /// resumes the kernel's walk of the set by skipping the elements already sent; when the
    /// kernel rehashes the set between two messages (it grows its hash table after thousands
    /// of adds, without flagging the dump as interrupted), the order changes, so the dump
    /// repeats some elements and leaves out as many others. A clean-clone CI run saw both. A
    /// key is in a set once, so a repeat shows that elements may be missing: the dump is taken
    /// again, after a pause for the rehash to end. After `DUMP_REPEATS` tries, the last
    /// dump's repeats are dropped (and what it missed comes back at the next drift check).
    fn dump_set_whole(
        &mut self,
        set: ElementSet,
        ok: &mut Vec<(Element, Duration)>,
        unreadable: &mut Vec<Unreadable>,
    ) -> Result<(), KernelError> {
        let (ok_from, unreadable_from) = (ok.len(), unreadable.len());
        for attempt in 1..=DUMP_REPEATS {
            self.dump_set(set, ok, unreadable)?;
            let dumped = ok.split_off(ok_from);
            let mut seen = std::collections::HashSet::with_capacity(dumped.len());
            let before = dumped.len();
            ok.extend(dumped.into_iter().filter(|(e, _)| seen.insert(*e)));
            if ok.len() - ok_from == before || attempt == DUMP_REPEATS {
                return Ok(());
            }
            ok.truncate(ok_from);
            unreadable.truncate(unreadable_from);
            std::thread::sleep(DUMP_REPEAT_PAUSE);
        }
        Ok(())
    }

    /// The IPv4 and IPv6 TCP and UDP conntrack entries of our namespace, with their marks (for
    /// diagnostics and tests).
    pub fn conntrack_entries(&mut self) -> Result<Vec<Entry>, KernelError> {
        let mut entries = Vec::new();
        self.session.dump(
            conntrack::encode_dump,
            |p| entries.extend(conntrack::parse_entry(p)),
            "listing conntrack entries",
        )?;
        Ok(entries)
    }

    /// Delete the conntrack entries of `gone` (see `conntrack.rs`) with one dump of the
    /// conntrack table, whatever the number of elements. Returns how many entries were
    /// deleted. [`Forwarder::clear_flows`] calls this and logs the outcome; it is public for
    /// repair tools and tests.
    pub fn clear_conntrack(&mut self, gone: &[Element]) -> Result<usize, KernelError> {
        flow_cleaner::clear_conntrack(&mut self.session, gone)
    }

    /// Wait until the flows of every element handed to [`Forwarder::clear_flows`] so far are
    /// ended (the cleaning runs on a thread of its own, see `flow_cleaner.rs`).
    pub fn wait_for_flow_clearing(&self) {
        self.cleaner.wait();
    }
}

/// The verdict on a transaction from the kernel's errors: every change it blamed, by index,
/// or else the batch-wide error, or else success.
fn verdict(tx: &Transaction, errors: &[ErrorMsg]) -> Result<(), ApplyError> {
    let mut blamed: Vec<ChangeRefused> = errors
        .iter()
        .filter_map(|e| {
            Some(ChangeRefused {
                index: tx.change_of(e.seq)?,
                errno: Errno(e.errno),
            })
        })
        .collect();
    if !blamed.is_empty() {
        blamed.sort_by_key(|r| r.index);
        return Err(ApplyError::Refused(blamed));
    }
    match errors.iter().find(|e| e.seq == tx.begin_seq) {
        Some(e) => Err(ApplyError::Failed(refused("the transaction".into(), e))),
        None => Ok(()),
    }
}

impl std::fmt::Debug for NftForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftForwarder")
            .field("port", &self.session.port())
            .field("seq", &self.session.seq())
            .field("nft", &self.nft)
            .finish_non_exhaustive()
    }
}

/// Is the calling thread in the namespace `ns` refers to? (Compared by inode, as `ip netns
/// identify` does.) When in doubt, say yes: entering a namespace needs privileges.
fn in_namespace(ns: &File) -> bool {
    let Ok(here) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return true;
    };
    let Ok(there) = ns.metadata() else {
        return true;
    };
    use std::os::unix::fs::MetadataExt;
    here.ino() == there.ino() && here.dev() == there.dev()
}

impl Forwarder for NftForwarder {
    fn prepare(&mut self, table: &TableSpec) -> Result<(), KernelError> {
        let script = template::ruleset(table)?;
        self.run_nft(&script)
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        if changes.is_empty() {
            return Ok(());
        }
        // Over netlink's length limits nothing is sent: a failed transaction, nothing applied.
        let buf = std::mem::take(&mut self.tx_buf);
        let mut tx = element::encode_transaction_into(buf, changes, self.session.peek_seq())
            .map_err(|e| ApplyError::Failed(e.into()))?;
        self.session.used_until(tx.next_seq);
        let answers = self.session.exchange(
            &tx.bytes,
            tx.first_member_seq(),
            tx.members,
            Some(tx.begin_seq),
            Acks::Last,
        );
        let errors = match answers {
            Ok(errors) => errors,
            Err(ExchangeFailure::NotSent(e)) => return Err(ApplyError::Failed(e.into())),
            Err(ExchangeFailure::Lost(e)) => return Err(ApplyError::Unknown(e)),
        };
        // Keep a request batch's buffer, not a rebuild's of the whole table.
        if tx.bytes.capacity() <= KEPT_TX_BUF {
            self.tx_buf = std::mem::take(&mut tx.bytes);
        }
        // The refusal names changes by index only; the kernel's words go to the debug log.
        for e in &errors {
            match tx
                .change_of(e.seq)
                .and_then(|i| changes.get(i).map(|c| (i, c)))
            {
                Some((i, c)) => tracing::debug!(change = i, "{c}: {}", e.describe()),
                None => tracing::debug!("transaction: {}", e.describe()),
            }
        }
        verdict(&tx, &errors)
    }

    /// Every element of the three maps and the two pinhole sets, with the time left as the
    /// kernel reports it (zero for an element without a timeout).
    ///
    /// An element natpmpd cannot read (added by hand: a catch-all, a protocol other than TCP or
    /// UDP; see `nftables/dump.rs`) is not an `Element`, so neither could the caller compare
    /// it nor remove it with a `Change`. It is never dropped: the whole listing fails with
    /// `KernelError::Protocol` naming the first such element and how many there are. The
    /// gateway's drift check answers a failed listing by rebuilding the table, which removes
    /// them (and puts back every element it tracks, in one transaction). Every element natpmpd
    /// writes decodes.
    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError> {
        let mut elements = Vec::new();
        let mut unreadable = Vec::new();
        for set in ElementSet::ALL {
            self.dump_set_whole(set, &mut elements, &mut unreadable)?;
        }
        match unreadable.first() {
            None => Ok(elements),
            Some(first) => Err(KernelError::Protocol(format!(
                "natpmpd's maps and sets hold {} element(s) it did not write and cannot read, \
                 the first in {first}",
                unreadable.len()
            ))),
        }
    }

    fn teardown(&mut self) -> Result<(), KernelError> {
        self.run_nft(&template::teardown())
    }

    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError> {
        validate_lan_nets(lan_nets)?;
        let ranges = hairpin::lan_ranges(lan_nets)
            .map_err(|(addr, len)| KernelError::InvalidNetwork(addr, len))?;
        // Thousands of internal networks overflow the 64 KiB element list: refused, not sent.
        let tx = hairpin::encode_hairpin(external_addr, &ranges, self.session.peek_seq())?;
        self.session.used_until(tx.next_seq);
        let first = tx.members.first().map(|m| m.0).unwrap_or(tx.begin_seq);
        let errors = self.session.exchange(
            &tx.bytes,
            first,
            tx.members.len(),
            Some(tx.begin_seq),
            Acks::Every,
        )?;
        match errors.first() {
            None => Ok(()),
            Some(e) => {
                let what = tx
                    .members
                    .iter()
                    .find(|m| m.0 == e.seq)
                    .map(|m| m.1)
                    .unwrap_or("transaction");
                Err(refused(format!("setting hairpin: {what}"), e))
            }
        }
    }

    fn check(&mut self) -> Result<Health, KernelError> {
        let mut table_seen = false;
        match self.session.query(
            health::encode_get_table,
            |_| table_seen = true,
            "reading our table",
        )? {
            Ok(()) if table_seen => {}
            Ok(()) => return Ok(health::table_missing()),
            Err(e) if e.errno == libc::ENOENT => return Ok(health::table_missing()),
            Err(e) => return Err(refused("reading our table".into(), &e)),
        }
        // The table may vanish between these dumps; then a set or chain is reported missing,
        // which is still the truth a moment ago, and the next check says the table is gone.
        let mut found = health::Found::default();
        self.session.dump(
            |seq| health::encode_dump(health::NFT_MSG_GETSET, seq),
            |p| found.sets.extend(health::parse_set(p)),
            "listing our sets",
        )?;
        self.session.dump(
            |seq| health::encode_dump(health::NFT_MSG_GETCHAIN, seq),
            |p| found.chains.extend(health::parse_chain(p)),
            "listing our chains",
        )?;
        self.session.dump(
            |seq| health::encode_dump(health::NFT_MSG_GETRULE, seq),
            |p| found.rules.extend(health::parse_rule(p)),
            "listing our rules",
        )?;
        Ok(health::evaluate(&found))
    }

    /// Queued for the cleaner thread: the caller's loop does not wait for the conntrack dump.
    fn clear_flows(&mut self, removed: &[Element]) {
        self.cleaner.clear(removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::Protocol;
    use std::net::SocketAddrV4;

    #[test]
    fn forwarders_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<NftForwarder>();
        is_send::<KernelError>();
        is_send::<ApplyError>();
    }

    fn err(seq: u32, errno: i32) -> ErrorMsg {
        ErrorMsg {
            errno,
            seq,
            text: None,
        }
    }

    #[test]
    fn the_verdict_blames_changes_by_index_before_the_batch() {
        let e = Element::Inbound {
            protocol: Protocol::Udp,
            external_port: 1,
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 2), 1),
        };
        let changes = [Change::Remove(e), Change::Remove(e), Change::Remove(e)];
        let tx = element::encode_transaction(&changes, 10).unwrap(); // changes are 11, 12, 13
        assert!(verdict(&tx, &[]).is_ok());
        // Answers may come in any order; the refusal lists them by index.
        let refused = verdict(&tx, &[err(13, libc::EEXIST), err(11, libc::ENOENT)]).unwrap_err();
        assert_eq!(
            refused.refused(),
            &[
                ChangeRefused {
                    index: 0,
                    errno: Errno::ENOENT
                },
                ChangeRefused {
                    index: 2,
                    errno: Errno::EEXIST
                }
            ]
        );
        // Only the batch was blamed (no memory, no permission, a failed commit).
        match verdict(&tx, &[err(10, libc::EPERM)]) {
            Err(ApplyError::Failed(KernelError::Refused { errno, .. })) => {
                assert_eq!(errno, Errno::EPERM)
            }
            other => panic!("{other:?}"),
        }
        // Both: the changes blamed are the more useful answer.
        assert!(matches!(
            verdict(&tx, &[err(10, libc::ENOMEM), err(12, libc::ENOENT)]),
            Err(ApplyError::Refused(r)) if r.len() == 1 && r[0].index == 1
        ));
    }
}
