//! [`NftForwarder`]: the real backend, nftables map elements and conntrack over netlink.

use crate::conntrack::{self, Entry};
use crate::forwarder::{ForwardError, Forwarder, Health};
use crate::health;
use crate::nftables::{self, InboundElement, Map, OutboundElement};
use crate::nl::{self, ErrorMsg, MsgBuilder, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP};
use crate::template;
use natpmp_pcp_core::forward::{Change, Forward};
use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Receive buffer: larger than the biggest datagram the kernel builds for a dump (32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// `NLM_F_DUMP_INTR`: the dumped object changed while it was being dumped.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// How many times a dump that was interrupted by a concurrent change is retried.
const DUMP_TRIES: usize = 3;
/// At most this many kernel errors are quoted in one error message.
const ERRORS_QUOTED: usize = 3;

/// nftables over netlink.
///
/// - `prepare` runs `nft -f -` once with [`template::ruleset`]; nothing else spawns a process.
/// - `apply` sends one nf_tables batch per call (one element message per change and map),
///   then, if forwards were removed for good, deletes their conntrack entries.
/// - `list` dumps both maps and pairs their elements back into forwards.
/// - `set_hairpin` replaces the two hairpin sets' elements in one batch.
/// - `check` reads our table's sets, chains and rules (not elements) in four small requests.
///
/// Namespace rule: the netlink socket belongs to the network namespace of the thread that
/// called [`NftForwarder::new`], for its whole life. `nft` is run in that same namespace even
/// if a later call comes from a thread in another one (then it needs CAP_SYS_ADMIN to enter
/// it; in the usual case of one namespace, no extra privilege is used).
///
/// Errors: a refused transaction changes nothing. Note that the kernel expires elements by
/// itself when their timeout passes; a later `Remove` of such a forward fails with "No such
/// file or directory" and takes the whole transaction down with it. Keep the kernel timeout
/// longer than the mapping lifetime (as `Forward::timeout` says) and, on a refused apply,
/// reconcile against `list` rather than retrying blindly.
///
/// Not thread-safe by design (`&mut self`): one owner drives it, as the daemon's loop does. It
/// is `Send`, so it may move to another thread, as long as that thread is in the same network
/// namespace (the socket keeps its namespace anyway; see above for `nft`).
pub struct NftForwarder {
    sock: nl::Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The namespace the socket lives in, to run `nft` there too.
    netns: Option<File>,
    nft: PathBuf,
    clear_conntrack: bool,
}

impl NftForwarder {
    /// Open the netlink socket in the calling thread's network namespace. Needs
    /// CAP_NET_ADMIN only when the kernel is asked to change something.
    pub fn new() -> Result<Self, ForwardError> {
        let sock = nl::Socket::open()?;
        // Start sequence numbers somewhere unlikely to repeat across restarts, which makes
        // reading a `nft monitor` or a packet capture of several runs less confusing.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NftForwarder {
            sock,
            seq,
            buf: vec![0; RECV_BUF],
            netns: File::open("/proc/thread-self/ns/net").ok(),
            nft: PathBuf::from("nft"),
            clear_conntrack: true,
        })
    }

    /// Use this `nft` program instead of the one found on `PATH`.
    pub fn with_nft_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.nft = path.into();
        self
    }

    /// Whether `apply` clears the conntrack entries of removed forwards itself (the default).
    ///
    /// Clearing costs one conntrack dump per transaction that removes forwards, and a dump
    /// walks the kernel's whole conntrack hash table (shared by all namespaces; 10-20 ms with
    /// 262144 buckets on the test machine), however few entries there are. A caller that wants
    /// that off its critical path turns it off here and calls [`NftForwarder::clear_conntrack`]
    /// with [`removed_for_good`] itself, later.
    pub fn set_conntrack_clearing(&mut self, on: bool) {
        self.clear_conntrack = on;
    }

    fn clear_and_log(&mut self, gone: &[Forward]) {
        if gone.is_empty() {
            return;
        }
        match self.clear_conntrack(gone) {
            Ok(n) => tracing::debug!(entries = n, forwards = gone.len(), "cleared conntrack"),
            Err(e) => tracing::warn!(
                error = %e,
                forwards = gone.len(),
                "removed forwards, but could not clear their conntrack entries; \
                 open flows keep their translation until they time out"
            ),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Feed `script` to `nft -f -` in our namespace.
    fn run_nft(&self, script: &str) -> Result<(), ForwardError> {
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
            .map_err(|e| ForwardError::Load(format!("cannot run {}: {e}", self.nft.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // nft reads all its input before it answers, so writing first cannot deadlock.
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| ForwardError::Load(format!("writing to nft: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ForwardError::Load(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if msg.is_empty() {
                msg = format!("nft exited with {}", out.status);
            }
            return Err(ForwardError::Load(msg));
        }
        Ok(())
    }

    /// Send one datagram and collect the kernel's answer to each of `expected` (the sequence
    /// numbers of messages that carry `NLM_F_ACK`). Returns the errors, each with its seq.
    /// `batch_seq` is where batch-wide errors are reported (nfnetlink answers failed commits,
    /// refused batches and lack of memory there); after such an error the remaining answers
    /// may never come, so we stop waiting and take only what is already queued.
    fn exchange(
        &mut self,
        bytes: &[u8],
        first_seq: u32,
        expected: usize,
        batch_seq: Option<u32>,
    ) -> Result<Vec<ErrorMsg>, ForwardError> {
        self.sock.reserve(bytes.len(), expected + 2);
        self.sock.drain(&mut self.buf);
        self.sock.send(bytes)?;
        let mut answered = vec![false; expected];
        let mut remaining = expected;
        let mut errors = Vec::new();
        let mut batch_failed = false;
        while remaining > 0 {
            let got = match self.sock.recv(&mut self.buf, !batch_failed) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(ForwardError::Kernel(
                        "the kernel's answers overflowed the socket buffer; the outcome is \
                         unknown (list the forwards to find out)"
                            .into(),
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            for msg in nl::messages(&self.buf[..got]) {
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(err) = ErrorMsg::parse(&msg) else {
                    continue;
                };
                if Some(err.seq) == batch_seq {
                    if err.errno != 0 {
                        batch_failed = true;
                        errors.push(err);
                    }
                    continue;
                }
                let idx = err.seq.wrapping_sub(first_seq) as usize;
                match answered.get_mut(idx) {
                    Some(seen) if !*seen => {
                        *seen = true;
                        remaining -= 1;
                        if err.errno != 0 {
                            errors.push(err);
                        }
                    }
                    // A stale or duplicate answer: not ours to count.
                    _ => {}
                }
            }
        }
        if remaining > 0 && errors.is_empty() {
            return Err(ForwardError::Kernel(format!(
                "the kernel answered only {} of {expected} messages; the outcome is unknown",
                expected - remaining
            )));
        }
        Ok(errors)
    }

    /// Run a dump request, handing each answer's payload to `each`. A dump that the kernel
    /// flags as interrupted (the map changed meanwhile) is started over.
    fn dump(
        &mut self,
        request: impl FnMut(u32) -> Vec<u8>,
        each: impl FnMut(&[u8]),
        what: &str,
    ) -> Result<(), ForwardError> {
        self.query(request, each, what)?
            .map_err(|e| ForwardError::Kernel(format!("{what}: {}", e.describe())))
    }

    /// [`NftForwarder::dump`], but a refusal by the kernel is handed back as the inner error,
    /// so a caller can tell "no such table" from a failure. Also serves plain gets sent with
    /// `NLM_F_ACK`: their answers come back the same way, ended by the ack.
    fn query(
        &mut self,
        mut request: impl FnMut(u32) -> Vec<u8>,
        mut each: impl FnMut(&[u8]),
        what: &str,
    ) -> Result<Result<(), ErrorMsg>, ForwardError> {
        for _ in 0..DUMP_TRIES {
            let seq = self.next_seq();
            let bytes = request(seq);
            self.sock.drain(&mut self.buf);
            self.sock.send(&bytes)?;
            let mut interrupted = false;
            let mut payloads: Vec<Vec<u8>> = Vec::new();
            'recv: loop {
                let got = match self.sock.recv(&mut self.buf, true)? {
                    Some(n) => n,
                    None => continue,
                };
                for msg in nl::messages(&self.buf[..got]) {
                    if msg.seq != seq || msg.ty == NLMSG_NOOP {
                        continue;
                    }
                    if msg.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match msg.ty {
                        NLMSG_DONE => {
                            // The payload, when present, is the dump's final status.
                            let status = msg
                                .payload
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .map(i32::from_ne_bytes)
                                .unwrap_or(0);
                            if status < 0 {
                                return Ok(Err(ErrorMsg {
                                    errno: status.checked_neg().unwrap_or(i32::MAX),
                                    seq,
                                    text: None,
                                }));
                            }
                            break 'recv;
                        }
                        NLMSG_ERROR => match ErrorMsg::parse(&msg) {
                            Some(e) if e.errno != 0 => return Ok(Err(e)),
                            _ => break 'recv,
                        },
                        _ => payloads.push(msg.payload.to_vec()),
                    }
                }
            }
            if !interrupted {
                payloads.iter().for_each(|p| each(p));
                return Ok(Ok(()));
            }
        }
        Err(ForwardError::Kernel(format!(
            "{what}: kept changing while being read ({DUMP_TRIES} tries)"
        )))
    }

    fn dump_map(&mut self, map: Map) -> Result<Vec<Vec<u8>>, ForwardError> {
        let mut payloads = Vec::new();
        self.dump(
            |seq| nftables::encode_dump(map, seq),
            |p| payloads.push(p.to_vec()),
            &format!("listing map {}", map.name()),
        )?;
        Ok(payloads)
    }

    /// The IPv4 TCP and UDP conntrack entries of our namespace (for diagnostics and tests).
    pub fn conntrack_entries(&mut self) -> Result<Vec<Entry>, ForwardError> {
        let mut entries = Vec::new();
        self.dump(
            conntrack::encode_dump,
            |p| entries.extend(conntrack::parse_entry(p)),
            "listing conntrack entries",
        )?;
        Ok(entries)
    }

    /// Delete the conntrack entries of `gone` (see `conntrack.rs`). Returns how many entries
    /// were deleted. `apply` calls this itself; it is public for repair tools and tests.
    pub fn clear_conntrack(&mut self, gone: &[Forward]) -> Result<usize, ForwardError> {
        if gone.is_empty() {
            return Ok(0);
        }
        let mut doomed: Vec<Entry> = Vec::new();
        self.dump(
            conntrack::encode_dump,
            |p| {
                if let Some(e) = conntrack::parse_entry(p) {
                    if gone.iter().any(|f| e.belongs_to(f)) {
                        doomed.push(e);
                    }
                }
            },
            "listing conntrack entries",
        )?;
        if doomed.is_empty() {
            return Ok(0);
        }
        let first = self.seq.wrapping_add(1);
        let mut b = MsgBuilder::with_capacity(doomed.len() * 80);
        for e in &doomed {
            let seq = self.next_seq();
            conntrack::encode_delete(&mut b, e, seq);
        }
        let errors = self.exchange(b.as_bytes(), first, doomed.len(), None)?;
        // ENOENT: the flow ended by itself between the dump and the delete. Fine.
        let failed: Vec<_> = errors.iter().filter(|e| e.errno != libc::ENOENT).collect();
        let gone_already = errors.len() - failed.len();
        if let Some(first_err) = failed.first() {
            return Err(ForwardError::Kernel(format!(
                "deleting {} of {} conntrack entries failed: {}",
                failed.len(),
                doomed.len(),
                first_err.describe()
            )));
        }
        Ok(doomed.len() - gone_already)
    }
}

impl std::fmt::Debug for NftForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftForwarder")
            .field("port", &self.sock.port)
            .field("seq", &self.seq)
            .field("nft", &self.nft)
            .field("clear_conntrack", &self.clear_conntrack)
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

/// The forwards `changes` remove for good: removed and not added back later in the same
/// transaction. A renewal (remove + add of the same elements) keeps its flows.
pub fn removed_for_good(changes: &[Change]) -> Vec<Forward> {
    let mut gone: Vec<Forward> = Vec::new();
    for c in changes {
        match c {
            Change::Remove(f) => gone.push(*f),
            Change::Add(f) => gone.retain(|g| !g.same_elements(f)),
        }
    }
    gone
}

fn describe_change(c: &Change) -> String {
    let (verb, f) = match c {
        Change::Add(f) => ("add", f),
        Change::Remove(f) => ("remove", f),
    };
    format!(
        "{verb} {} {}:{} -> {}:{}",
        f.protocol, f.external_addr, f.external_port, f.internal_addr, f.internal_port
    )
}

impl Forwarder for NftForwarder {
    fn prepare(&mut self, external_interface: &str) -> Result<(), ForwardError> {
        let script = template::ruleset(external_interface)?;
        self.run_nft(&script)
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ForwardError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = nftables::encode_transaction(changes, self.seq.wrapping_add(1));
        self.seq = tx.next_seq.wrapping_sub(1);
        let first = tx.members.first().map(|m| m.seq).unwrap_or(tx.begin_seq);
        let errors = self.exchange(&tx.bytes, first, tx.members.len(), Some(tx.begin_seq))?;
        if !errors.is_empty() {
            let mut parts: Vec<String> = errors
                .iter()
                .take(ERRORS_QUOTED)
                .map(|e| {
                    let idx = e.seq.wrapping_sub(first) as usize;
                    match tx.members.get(idx).filter(|_| e.seq != tx.begin_seq) {
                        Some(m) => format!(
                            "change #{} ({}, map {}): {}",
                            m.change,
                            changes
                                .get(m.change)
                                .map(describe_change)
                                .unwrap_or_default(),
                            m.map.name(),
                            e.describe()
                        ),
                        None => format!("transaction: {}", e.describe()),
                    }
                })
                .collect();
            if errors.len() > ERRORS_QUOTED {
                parts.push(format!("and {} more", errors.len() - ERRORS_QUOTED));
            }
            return Err(ForwardError::Kernel(parts.join("; ")));
        }
        let gone = if self.clear_conntrack {
            removed_for_good(changes)
        } else {
            Vec::new()
        };
        self.clear_and_log(&gone);
        Ok(())
    }

    fn clear_flows(&mut self, removed: &[Forward]) {
        // With clearing on, `apply` has done it already.
        if !self.clear_conntrack {
            self.clear_and_log(removed);
        }
    }

    fn list(&mut self) -> Result<Vec<Forward>, ForwardError> {
        let inbound_msgs = self.dump_map(Map::Inbound)?;
        let outbound_msgs = self.dump_map(Map::Outbound)?;
        let mut inbound = Vec::new();
        let mut outbound = Vec::new();
        let mut odd = 0usize;
        for p in &inbound_msgs {
            for raw in nftables::parse_elements(p) {
                match InboundElement::decode(&raw) {
                    Some(e) => inbound.push(e),
                    None => odd += 1,
                }
            }
        }
        for p in &outbound_msgs {
            for raw in nftables::parse_elements(p) {
                match OutboundElement::decode(&raw) {
                    Some(e) => outbound.push(e),
                    None => odd += 1,
                }
            }
        }
        let (forwards, lone_in, lone_out) = nftables::join(&inbound, &outbound);
        if odd > 0 || !lone_in.is_empty() || !lone_out.is_empty() {
            return Err(ForwardError::Stray(format!(
                "{} inbound-only, {} outbound-only, {odd} undecodable (changed by hand, or \
                 half expired)",
                lone_in.len(),
                lone_out.len()
            )));
        }
        Ok(forwards)
    }

    fn teardown(&mut self) -> Result<(), ForwardError> {
        self.run_nft(&template::teardown())
    }

    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), ForwardError> {
        let ranges = nftables::lan_ranges(lan_nets)
            .map_err(|(addr, len)| ForwardError::InvalidNetwork(addr, len))?;
        let tx = nftables::encode_hairpin(external_addr, &ranges, self.seq.wrapping_add(1));
        self.seq = tx.next_seq.wrapping_sub(1);
        let first = tx.members.first().map(|m| m.0).unwrap_or(tx.begin_seq);
        let errors = self.exchange(&tx.bytes, first, tx.members.len(), Some(tx.begin_seq))?;
        if let Some(e) = errors.first() {
            let what = tx
                .members
                .iter()
                .find(|m| m.0 == e.seq)
                .map(|m| m.1)
                .unwrap_or("transaction");
            return Err(ForwardError::Kernel(format!(
                "setting hairpin: {what}: {}",
                e.describe()
            )));
        }
        Ok(())
    }

    fn check(&mut self) -> Result<Health, ForwardError> {
        let mut table_seen = false;
        match self.query(
            health::encode_get_table,
            |_| table_seen = true,
            "reading our table",
        )? {
            Ok(()) if table_seen => {}
            Ok(()) => return Ok(health::table_missing()),
            Err(e) if e.errno == libc::ENOENT => return Ok(health::table_missing()),
            Err(e) => {
                return Err(ForwardError::Kernel(format!(
                    "reading our table: {}",
                    e.describe()
                )))
            }
        }
        // The table may vanish between these dumps; then a set or chain is reported missing,
        // which is still the truth a moment ago, and the next check says the table is gone.
        let mut found = health::Found::default();
        self.dump(
            |seq| health::encode_dump(health::NFT_MSG_GETSET, seq),
            |p| found.sets.extend(health::parse_set(p)),
            "listing our sets",
        )?;
        self.dump(
            |seq| health::encode_dump(health::NFT_MSG_GETCHAIN, seq),
            |p| found.chains.extend(health::parse_chain(p)),
            "listing our chains",
        )?;
        self.dump(
            |seq| health::encode_dump(health::NFT_MSG_GETRULE, seq),
            |p| found.rules.extend(health::parse_rule(p)),
            "listing our rules",
        )?;
        Ok(health::evaluate(&found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::forward::Protocol;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn f(port: u16, secs: u64) -> Forward {
        Forward {
            protocol: Protocol::Udp,
            external_addr: Ipv4Addr::new(203, 0, 113, 1),
            external_port: port,
            internal_addr: Ipv4Addr::new(192, 168, 88, 2),
            internal_port: port,
            timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn forwarders_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<NftForwarder>();
        is_send::<crate::NullForwarder>();
        is_send::<crate::FakeForwarder>();
        is_send::<ForwardError>();
    }

    #[test]
    fn renewals_keep_their_flows() {
        let changes = [
            Change::Remove(f(1, 10)),
            Change::Add(f(1, 20)), // renewal of 1
            Change::Remove(f(2, 10)),
            Change::Remove(f(3, 10)),
            Change::Add(f(3, 5)),
            Change::Remove(f(3, 5)), // 3 re-added, then removed again
        ];
        // 3's first removal was undone by its re-add; its last removal stands.
        assert_eq!(removed_for_good(&changes), vec![f(2, 10), f(3, 5)]);
    }
}
