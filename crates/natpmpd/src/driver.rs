//! The daemon's event loop: UDP requests, timers, interface events, the control socket and
//! signals, all on one current-thread tokio runtime.
//!
//! How a batch flows (design.md §2): drain up to `BATCH` datagrams -> the engine answers each,
//! staging kernel changes -> all staged changes go to the kernel in one transaction -> replies
//! are sent. If the transaction fails, each request's changes are retried alone, and a request
//! whose forward the kernel refused is told Network Failure (result 3) and forgotten by the
//! engine, so no client is promised a forward the kernel does not hold.
//!
//! What keeps the kernel and the engine together (design.md §7 item 1):
//! - the engine is the truth; the lease file keeps it across restarts (`leases.rs`);
//! - every `DRIFT_CHECK` the table's shape is checked over netlink and its elements compared
//!   with the engine's forwards; anything another tool flushed or deleted is put back;
//! - interface and address changes arrive as netlink events (`netif.rs`), never by polling.

use crate::config::{Backend, Config, InterfaceConfig};
use crate::control::{self, Request, Response};
use crate::leases;
use crate::netif::{self, Interface, Monitor};
use crate::udp::{Datagram, NatPmpSocket};
use anyhow::Context;
use natpmp_pcp_core::wire::natpmp::{self, ResultCode};
use natpmp_pcp_core::{Change, Forward, Outcome, Server, Timestamp};
use natpmp_pcp_nft::nft_forwarder::removed_for_good;
use natpmp_pcp_nft::{ForwardError, Forwarder, Health, NftForwarder, NullForwarder};
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Datagrams handled per wake-up before timers, events and the control socket get a turn.
const BATCH: usize = 64;
/// How often the kernel table is compared with the engine. The promise in the README: a
/// flushed or deleted table is back within this time (plus the time to reload it).
pub const DRIFT_CHECK: Duration = Duration::from_secs(2);
/// The lease file is written at most this often under load, and this long after a change.
const LEASE_SAVE_DELAY: Duration = Duration::from_secs(1);

/// What the hairpin sets hold: the external address (none = hairpin off) and the LAN subnets.
type HairpinSets = (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>);

/// A reply waiting for its batch's kernel transaction.
struct PendingReply {
    reply: Vec<u8>,
    from: Ipv4Addr,
    ifindex: u32,
    to: SocketAddrV4,
    changes: Range<usize>,
}

pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    server: Server,
    forwarder: Box<dyn Forwarder>,
    /// `None` while NAT-PMP is switched off: then port 5351 is not even open.
    socket: Option<Rc<NatPmpSocket>>,
    origin: Instant,
    /// The latest snapshot of the namespace's interfaces, by name.
    interfaces: BTreeMap<String, Interface>,
    /// Configured interfaces already reported missing, so the log says it once.
    reported_missing: HashSet<String>,
    warned_private: Option<Ipv4Addr>,
    /// The hairpin sets as last given to the kernel, to skip redundant updates.
    hairpin_applied: Option<HairpinSets>,
    /// When the lease file is next due to be written (a change is waiting).
    lease_save_due: Option<Instant>,
    lease_save_failing: bool,
    next_drift_check: Instant,
}

/// Build the kernel backend the configuration names.
pub fn make_forwarder(backend: Backend) -> anyhow::Result<Box<dyn Forwarder>> {
    Ok(match backend {
        Backend::Nftables => {
            let mut nft = NftForwarder::new()
                .context("opening the nftables netlink socket (are you root?)")?;
            // Clearing conntrack walks the kernel's whole conntrack table (~11 ms here): do it
            // after the replies are sent (`clear_flows`), not inside `apply`.
            nft.set_conntrack_clearing(false);
            Box::new(nft)
        }
        Backend::None => Box::new(NullForwarder::new()),
    })
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    warn_if_not_forwarding(&config);
    let forwarder = make_forwarder(config.backend)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let listener = control::bind(
        &config.control_socket,
        config.control_socket_group.as_deref(),
    )
    .with_context(|| {
        format!(
            "binding the control socket {}",
            config.control_socket.display()
        )
    })?;
    let (control_tx, mut control_rx) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(16);
    tokio::spawn(control::serve(listener, control_tx));
    let monitor = Monitor::new().context("subscribing to interface events")?;

    let origin = Instant::now();
    let server = Server::new(config.server_config(random_seed()), Timestamp::ZERO);
    let mut daemon = Daemon {
        config_path,
        config,
        server,
        forwarder,
        socket: None,
        origin,
        interfaces: BTreeMap::new(),
        reported_missing: HashSet::new(),
        warned_private: None,
        hairpin_applied: None,
        lease_save_due: None,
        lease_save_failing: false,
        next_drift_check: origin + DRIFT_CHECK,
    };
    daemon.refresh_interfaces();
    if daemon.config.enabled {
        daemon.restore_leases();
        daemon.start_serving()?;
    } else {
        daemon.stop_serving();
    }

    let mut buf = vec![0u8; 2048];
    loop {
        daemon.on_timers();
        let socket = daemon.socket.clone();
        let readable = async {
            match &socket {
                Some(s) => s.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = readable => {
                r.context("waiting for requests")?;
                if let Some(s) = &socket {
                    daemon.on_requests(s, &mut buf);
                }
            }
            _ = tokio::time::sleep_until(daemon.next_wakeup().into()) => {}
            r = monitor.changed() => {
                r.context("reading interface events")?;
                daemon.refresh_interfaces();
            }
            Some((request, reply)) = control_rx.recv() => {
                let _ = reply.send(daemon.on_control(request));
            }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading {}", daemon.config_path.display());
                if let Err(e) = daemon.reload() {
                    error!("{e}");
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    daemon.shutdown();
    Ok(())
}

impl Daemon {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    fn instant_of(&self, t: Timestamp) -> Instant {
        self.origin + Duration::from_millis(t.as_millis())
    }

    fn serving(&self) -> bool {
        self.socket.is_some()
    }

    fn internal_configs(&self) -> impl Iterator<Item = &InterfaceConfig> {
        self.config.internals()
    }

    /// The enabled internal interfaces that exist now.
    fn internal_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.internal_configs()
            .filter_map(|c| self.interfaces.get(&c.interface))
    }

    fn external_name(&self) -> Option<String> {
        self.config.external().map(|e| e.interface.clone())
    }

    /// The earliest of: engine work (expiry, announcements), the lease save, the drift check.
    fn next_wakeup(&self) -> Instant {
        let mut t = Instant::now() + Duration::from_secs(3600);
        if let Some(e) = self.server.poll_timeout() {
            t = t.min(self.instant_of(e));
        }
        if let Some(l) = self.lease_save_due {
            t = t.min(l);
        }
        if self.serving() && self.config.backend == Backend::Nftables {
            t = t.min(self.next_drift_check);
        }
        t
    }

    /// Open port 5351 and install our table with every forward the engine holds.
    fn start_serving(&mut self) -> anyhow::Result<()> {
        let ext = self
            .external_name()
            .context("no enabled external interface")?;
        let installed = self
            .rebuild_table(&ext)
            .context("installing the natpmpd nftables table")?;
        let socket = NatPmpSocket::bind(natpmp::SERVER_PORT).context("binding UDP port 5351")?;
        self.socket = Some(Rc::new(socket));
        self.next_drift_check = Instant::now() + DRIFT_CHECK;
        let internals: Vec<&str> = self
            .internal_configs()
            .map(|i| i.interface.as_str())
            .collect();
        info!(
            "natpmpd listening on 0.0.0.0:5351 (external {ext}, internal {}), {} mapping(s)",
            internals.join(", "),
            installed
        );
        Ok(())
    }

    /// Close port 5351 and remove our forwards (RouterOS default and rfc-checklist §6 A16:
    /// switched off means not listening at all, the "pre-NAT-PMP behaviour" of RFC 6886 §5).
    fn stop_serving(&mut self) {
        self.socket = None;
        info!("nat-pmp is disabled (enabled = false): not listening on port 5351");
        if self.config.backend == Backend::Nftables {
            if let Err(e) = self.forwarder.teardown() {
                debug!("no natpmpd table to remove: {e}");
            }
        }
    }

    /// Read the interfaces again and act on what changed: the external address (epoch reset,
    /// announcements, forwards moved), interfaces that appeared or vanished, hairpin subnets.
    fn refresh_interfaces(&mut self) {
        match netif::snapshot() {
            Ok(s) => self.interfaces = s,
            Err(e) => {
                error!("cannot read the interfaces: {e}");
                return;
            }
        }
        let configured: Vec<(String, &'static str)> = self
            .config
            .external()
            .map(|e| (e.interface.clone(), "external"))
            .into_iter()
            .chain(
                self.internal_configs()
                    .map(|i| (i.interface.clone(), "internal")),
            )
            .collect();
        for (name, kind) in configured {
            let present = self.interfaces.contains_key(&name);
            if !present && self.reported_missing.insert(name.clone()) {
                warn!(
                    "{kind} interface {name} does not exist (yet); it will be used when it appears"
                );
            } else if present && self.reported_missing.remove(&name) {
                info!("{kind} interface {name} appeared");
            }
        }
        let addr = self.current_external_address();
        if addr != self.server.external_address() {
            match addr {
                Some(a) => {
                    info!("external address is now {a}");
                    self.warn_if_private(a);
                }
                None => warn!(
                    "no external address: requests get result 3 (network failure) until one appears"
                ),
            }
            let now = self.now();
            let mut changes = Vec::new();
            self.server.set_external_address(now, addr, &mut changes);
            if self.serving() {
                self.apply_or_resync(&changes);
            }
            self.leases_changed();
        }
        if self.serving() {
            self.sync_hairpin();
        }
    }

    /// The external interface's primary address, or `forced-ip` while the interface has it.
    fn current_external_address(&self) -> Option<Ipv4Addr> {
        let ext = self.config.external()?;
        let iface = self.interfaces.get(&ext.interface)?;
        match ext.forced_ip {
            Some(forced) => iface
                .addrs
                .iter()
                .any(|a| a.addr == forced)
                .then_some(forced),
            None => iface.addrs.first().map(|a| a.addr),
        }
    }

    /// Private and reserved external addresses are allowed, as RouterOS allows them (double
    /// NAT, CGNAT, labs): say so once, since mappings are then not reachable from the internet.
    fn warn_if_private(&mut self, a: Ipv4Addr) {
        let special = a.is_private()
            || a.is_loopback()
            || a.is_link_local()
            || a.is_documentation()
            || (a.octets()[0] == 100 && (a.octets()[1] & 0xC0) == 64);
        if special && self.warned_private != Some(a) {
            warn!("external address {a} is private or reserved: mappings are reachable only from networks that route to it (double NAT?)");
            self.warned_private = Some(a);
        }
    }

    /// Give the kernel the current hairpin sets: the external address (none when hairpin is
    /// off) and the internal subnets.
    fn sync_hairpin(&mut self) {
        let addr = self
            .server
            .external_address()
            .filter(|_| self.config.hairpin);
        let mut nets: Vec<(Ipv4Addr, u8)> = self
            .internal_interfaces()
            .flat_map(|i| i.addrs.iter())
            .map(|a| (a.network(), a.prefix_len))
            .collect();
        nets.sort();
        nets.dedup();
        let wanted: HairpinSets = (addr, nets);
        if self.hairpin_applied.as_ref() == Some(&wanted) {
            return;
        }
        match self.forwarder.set_hairpin(wanted.0, &wanted.1) {
            Ok(()) => self.hairpin_applied = Some(wanted),
            Err(e) => error!("cannot update the hairpin sets: {e}"),
        }
    }

    /// Expire mappings, send due announcement copies, save leases, check for drift.
    fn on_timers(&mut self) {
        let now = self.now();
        let mut changes = Vec::new();
        self.server.handle_timeout(now, &mut changes);
        if !changes.is_empty() {
            debug!("expired {} forward(s)", changes.len());
            if self.serving() {
                self.apply_or_resync(&changes);
            }
            self.leases_changed();
        }
        self.send_announcements(now);
        if self.lease_save_due.is_some_and(|t| t <= Instant::now()) {
            self.save_leases();
        }
        if self.serving()
            && self.config.backend == Backend::Nftables
            && self.next_drift_check <= Instant::now()
        {
            self.check_drift();
            self.next_drift_check = Instant::now() + DRIFT_CHECK;
        }
    }

    fn send_announcements(&mut self, now: Timestamp) {
        let Some(socket) = self.socket.clone() else {
            return;
        };
        let mut packet = Vec::with_capacity(natpmp::EXTERNAL_ADDRESS_RESPONSE_LEN);
        while self.server.poll_announcement(now, &mut packet) {
            let to = SocketAddrV4::new(natpmp::ANNOUNCE_GROUP, natpmp::CLIENT_PORT);
            let mut sent = 0;
            for iface in self.internal_interfaces() {
                // Sent from the interface's own address: clients check the source (§3.2.1).
                let Some(from) = iface.addrs.first() else {
                    continue;
                };
                match socket.send_from(&packet, from.addr, iface.index, to) {
                    Ok(()) => sent += 1,
                    Err(e) => debug!("announcement on {} not sent: {e}", iface.name),
                }
            }
            debug!("announcement sent on {sent} interface(s)");
        }
    }

    /// Accept a datagram only if it came in on an enabled internal interface, addressed to
    /// one of that interface's own addresses (not broadcast, not multicast), from a source on
    /// that interface's subnets (RFC 6886 §3.3; rfc-checklist §2 A). Everything else, the
    /// external side included, is dropped without a word.
    fn accepts(&self, d: &Datagram) -> bool {
        self.internal_interfaces().any(|iface| {
            iface.index == d.ifindex
                && iface.addrs.iter().any(|a| a.addr == d.destination)
                && iface.addrs.iter().any(|a| a.contains(*d.source.ip()))
        })
    }

    fn on_requests(&mut self, socket: &NatPmpSocket, buf: &mut [u8]) {
        let mut pending: Vec<PendingReply> = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        for _ in 0..BATCH {
            let d = match socket.try_recv(buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    warn!("receiving: {e}");
                    break;
                }
            };
            if !self.accepts(&d) {
                debug!(
                    "dropped a datagram from {} to {} on ifindex {}",
                    d.source, d.destination, d.ifindex
                );
                continue;
            }
            let now = self.now();
            let start = changes.len();
            let mut reply = Vec::with_capacity(natpmp::MAP_RESPONSE_LEN);
            let outcome =
                self.server
                    .handle(now, *d.source.ip(), &buf[..d.len], &mut reply, &mut changes);
            if outcome == Outcome::Reply {
                pending.push(PendingReply {
                    reply,
                    from: d.destination,
                    ifindex: d.ifindex,
                    to: d.source,
                    changes: start..changes.len(),
                });
            }
        }
        if !changes.is_empty() {
            if let Err(e) = self.forwarder.apply(&changes) {
                warn!(
                    "kernel refused a batch of {} change(s): {e}; retrying request by request",
                    changes.len()
                );
                let mut refused = Vec::new();
                for (i, p) in pending.iter().enumerate() {
                    let mine = &changes[p.changes.clone()];
                    if !mine.is_empty() {
                        if let Err(e) = self.apply_tolerant(mine) {
                            warn!("forward for {} refused: {e}", p.to.ip());
                            refused.push(i);
                        }
                    }
                }
                // A refusal means the kernel holds something we did not put there (an element
                // added by hand on the same port, say). Rebuilding the table from the engine,
                // which already counts these requests' mappings, repairs both; only if that
                // fails are the clients told result 3 and their mappings forgotten.
                if !refused.is_empty() && !self.resync() {
                    for i in refused {
                        let p = &mut pending[i];
                        error!("forward for {} not installed", p.to.ip());
                        self.server.revert(&changes[p.changes.clone()]);
                        natpmp::rewrite_map_as_failure(&mut p.reply, ResultCode::NetworkFailure);
                        // These changes never happened: keep the debug log below truthful.
                        p.changes = 0..0;
                    }
                }
            }
            self.leases_changed();
        }
        for p in &pending {
            if let Err(e) = socket.send_from(&p.reply, p.from, p.ifindex, p.to) {
                debug!("reply to {} not sent: {e}", p.to);
            }
        }
        let applied: Vec<Change> = pending
            .iter()
            .flat_map(|p| &changes[p.changes.clone()])
            .copied()
            .collect();
        self.forwarder.clear_flows(&removed_for_good(&applied));
        for c in &applied {
            let (what, f) = match c {
                Change::Add(f) => ("forward", f),
                Change::Remove(f) => ("remove", f),
            };
            debug!(
                "{what} {} {}:{} -> {}:{}",
                f.protocol, f.external_addr, f.external_port, f.internal_addr, f.internal_port
            );
        }
    }

    /// Apply one request's changes; if the kernel refuses them together, apply each removal
    /// alone (a forward already gone from the kernel, e.g. after another tool flushed it, must
    /// not block the renewal that follows) and then the additions together. Only a refused
    /// addition is an error.
    fn apply_tolerant(&mut self, changes: &[Change]) -> Result<(), ForwardError> {
        if self.forwarder.apply(changes).is_ok() {
            return Ok(());
        }
        let mut adds = Vec::new();
        for c in changes {
            match c {
                Change::Remove(_) => {
                    if let Err(e) = self.forwarder.apply(std::slice::from_ref(c)) {
                        debug!("removal not applied (already gone?): {e}");
                    }
                }
                Change::Add(_) => adds.push(*c),
            }
        }
        self.forwarder.apply(&adds)
    }

    /// Apply changes that no client is waiting on (expiry, address change). If the kernel
    /// refuses, rebuild our table from the engine's truth rather than leave them apart.
    fn apply_or_resync(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.forwarder.apply(changes) {
            warn!(
                "kernel refused {} change(s): {e}; rebuilding the natpmpd table",
                changes.len()
            );
            self.resync();
        }
        // Flows of removed forwards end either way: the rebuild does not bring them back.
        self.forwarder.clear_flows(&removed_for_good(changes));
    }

    /// Reload our table, install every forward the engine holds in one transaction, and fill
    /// the hairpin sets (which the reload emptied). Returns how many forwards it installed.
    fn rebuild_table(&mut self, external_interface: &str) -> Result<usize, ForwardError> {
        let adds: Vec<Change> = self
            .server
            .forwards(self.now())
            .into_iter()
            .map(Change::Add)
            .collect();
        self.forwarder.prepare(external_interface)?;
        self.hairpin_applied = None;
        self.forwarder.apply(&adds)?;
        self.sync_hairpin();
        Ok(adds.len())
    }

    /// `rebuild_table` for repairs, logging the outcome. Returns whether it worked.
    fn resync(&mut self) -> bool {
        let Some(ext) = self.external_name() else {
            return false;
        };
        match self.rebuild_table(&ext) {
            Ok(n) => {
                info!("natpmpd table rebuilt with {n} forward(s)");
                true
            }
            Err(e) => {
                error!("cannot rebuild the natpmpd table: {e}");
                false
            }
        }
    }

    /// Compare the kernel with the engine; put back what another tool removed, remove what
    /// nobody tracks.
    fn check_drift(&mut self) {
        match self.forwarder.check() {
            Ok(Health::Intact) => {}
            Ok(Health::Damaged(why)) => {
                warn!("natpmpd's nftables table was changed by someone else ({why}); restoring it");
                self.resync();
                return;
            }
            Err(e) => {
                warn!("cannot check the natpmpd table: {e}; restoring it");
                self.resync();
                return;
            }
        }
        let kernel = match self.forwarder.list() {
            Ok(k) => k,
            Err(e) => {
                warn!("cannot list the natpmpd forwards: {e}; restoring the table");
                self.resync();
                return;
            }
        };
        let wanted = self.server.forwards(self.now());
        let repair = drift_repair(&wanted, &kernel);
        if repair.is_empty() {
            return;
        }
        let (added, removed) = repair.iter().fold((0, 0), |(a, r), c| match c {
            Change::Add(_) => (a + 1, r),
            Change::Remove(_) => (a, r + 1),
        });
        warn!("natpmpd's forwards drifted from its table: restoring {added} missing, removing {removed} unknown");
        if let Err(e) = self.forwarder.apply(&repair) {
            warn!("repair refused ({e}); rebuilding the natpmpd table");
            self.resync();
        }
        self.forwarder.clear_flows(&removed_for_good(&repair));
    }

    fn on_control(&mut self, request: Request) -> Response {
        match request {
            Request::Print => Response {
                ok: true,
                error: None,
                external_interface: self.external_name(),
                mappings: self.server.mappings(self.now()),
            },
            Request::Reload => match self.reload() {
                Ok(()) => Response {
                    ok: true,
                    ..Response::default()
                },
                Err(e) => {
                    error!("natpmpctl reload: {e}");
                    Response::error(e)
                }
            },
        }
    }

    /// Re-read the configuration file and apply it. An invalid file changes nothing.
    fn reload(&mut self) -> Result<(), String> {
        let new = Config::load(&self.config_path)
            .map_err(|e| format!("configuration not reloaded: {e}"))?;
        let mut new = new;
        // These are fixed for the life of the process; say so instead of half-applying them.
        for (what, changed) in [
            ("backend", new.backend != self.config.backend),
            (
                "control-socket",
                new.control_socket != self.config.control_socket,
            ),
            (
                "control-socket-group",
                new.control_socket_group != self.config.control_socket_group,
            ),
        ] {
            if changed {
                warn!("{what} changed: takes effect at the next restart");
            }
        }
        new.backend = self.config.backend;
        new.control_socket = self.config.control_socket.clone();
        new.control_socket_group = self.config.control_socket_group.clone();

        let was_enabled = self.config.enabled && self.serving();
        let old_external = self.external_name();
        let seed = random_seed();
        self.server.set_config(new.server_config(seed));
        self.config = new;
        self.reported_missing.clear();

        if was_enabled && !self.config.enabled {
            // Switched off: forget the mappings (their forwards go with our table).
            let mut dropped = Vec::new();
            self.server.reset(self.now(), &mut dropped);
            self.stop_serving();
            self.leases_changed();
        } else if !was_enabled && self.config.enabled {
            self.refresh_interfaces();
            self.start_serving().map_err(|e| format!("{e:#}"))?;
        } else if self.config.enabled && old_external != self.external_name() {
            // A new external interface: our rules name it, so reload the table.
            info!(
                "external interface changed from {} to {}",
                old_external.as_deref().unwrap_or("none"),
                self.external_name().as_deref().unwrap_or("none")
            );
            self.refresh_interfaces();
            self.resync();
        } else {
            self.refresh_interfaces();
        }
        info!("configuration reloaded from {}", self.config_path.display());
        Ok(())
    }

    /// Bring back the mappings of the previous run from the lease file.
    fn restore_leases(&mut self) {
        let path = self.config.lease_file.clone();
        let restored = match leases::load(&path, leases::now_unix_ms()) {
            Ok(Some(r)) => r,
            Ok(None) => {
                info!(
                    "no lease file at {}: starting with no mappings",
                    path.display()
                );
                return;
            }
            Err(e) => {
                // Never fatal: a clean start is better than no gateway.
                error!("{e}");
                return;
            }
        };
        let now = self.now();
        // The epoch continues only while the external address is the one the leases knew.
        let same_address = restored.external_addr == self.server.external_address();
        let epoch = if same_address {
            restored.epoch_seconds
        } else {
            0
        };
        let mut changes = Vec::new();
        let n = self
            .server
            .restore(now, epoch, &restored.records, &mut changes);
        info!(
            "restored {n} mapping(s) from {} ({} expired while stopped{})",
            path.display(),
            restored.expired,
            if same_address {
                ""
            } else {
                "; external address changed, epoch reset"
            }
        );
        self.leases_changed();
    }

    /// The mapping state changed: write the lease file soon (at most once per
    /// LEASE_SAVE_DELAY, so a flood of requests costs one write per second, not one each).
    fn leases_changed(&mut self) {
        if self.lease_save_due.is_none() {
            self.lease_save_due = Some(Instant::now() + LEASE_SAVE_DELAY);
        }
    }

    fn save_leases(&mut self) {
        self.lease_save_due = None;
        let now = self.now();
        let records = self.server.records(now);
        match leases::save(
            &self.config.lease_file,
            leases::now_unix_ms(),
            self.server.external_address(),
            self.server.epoch_seconds(now),
            &records,
        ) {
            Ok(()) => {
                if self.lease_save_failing {
                    info!(
                        "lease file {} written again",
                        self.config.lease_file.display()
                    );
                }
                self.lease_save_failing = false;
                debug!("saved {} lease(s)", records.len());
            }
            Err(e) => {
                if !self.lease_save_failing {
                    error!(
                        "cannot write the lease file {}: {e}; mappings will not survive a restart until it works (retrying)",
                        self.config.lease_file.display()
                    );
                }
                self.lease_save_failing = true;
                self.lease_save_due = Some(Instant::now() + LEASE_SAVE_DELAY * 5);
            }
        }
    }

    fn shutdown(&mut self) {
        self.save_leases();
        if self.config.backend == Backend::None || !self.serving() {
            info!("stopping");
        } else if self.config.keep_forwards_on_exit {
            info!("stopping; forwards stay in the kernel until their own timeouts or the next start (keep-forwards-on-exit)");
        } else {
            match self.forwarder.teardown() {
                Ok(()) => info!("stopping; natpmpd table removed"),
                Err(e) => error!("stopping; could not remove the natpmpd table: {e}"),
            }
        }
        let _ = std::fs::remove_file(&self.config.control_socket);
    }
}

/// The changes that turn the kernel's forwards into the wanted ones: add what is missing,
/// remove what nobody tracks. Timeouts are not compared (the kernel's count down).
pub fn drift_repair(wanted: &[Forward], kernel: &[Forward]) -> Vec<Change> {
    let key = |f: &Forward| {
        (
            f.protocol,
            f.external_addr,
            f.external_port,
            f.internal_addr,
            f.internal_port,
        )
    };
    let have: HashSet<_> = kernel.iter().map(key).collect();
    let want: HashSet<_> = wanted.iter().map(key).collect();
    let mut out: Vec<Change> = kernel
        .iter()
        .filter(|f| !want.contains(&key(f)))
        .map(|f| Change::Remove(*f))
        .collect();
    out.extend(
        wanted
            .iter()
            .filter(|f| !have.contains(&key(f)))
            .map(|f| Change::Add(*f)),
    );
    out
}

/// Forwarding must be on for mappings to work; say so at start-up rather than let users
/// guess why packets vanish.
fn warn_if_not_forwarding(config: &Config) {
    if config.backend == Backend::None || !config.enabled {
        return;
    }
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => warn!("net.ipv4.ip_forward is 0: forwarded traffic will not pass; enable it with `sysctl -w net.ipv4.ip_forward=1`"),
        Err(e) => debug!("cannot read ip_forward: {e}"),
    }
}

/// A seed for the port allocator, so external ports are not predictable.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Not fatal: fall back to the clock; ports are then merely less unpredictable.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::Protocol;

    fn fwd(port: u16, timeout_s: u64) -> Forward {
        Forward {
            protocol: Protocol::Tcp,
            external_addr: Ipv4Addr::new(203, 0, 113, 1),
            external_port: port,
            internal_addr: Ipv4Addr::new(192, 168, 88, 10),
            internal_port: port,
            timeout: Duration::from_secs(timeout_s),
        }
    }

    #[test]
    fn drift_repair_adds_missing_and_removes_unknown_ignoring_timeouts() {
        let wanted = [fwd(1, 100), fwd(2, 100)];
        let kernel = [fwd(2, 37), fwd(3, 50)];
        let repair = drift_repair(&wanted, &kernel);
        assert_eq!(
            repair,
            vec![Change::Remove(fwd(3, 50)), Change::Add(fwd(1, 100))]
        );
    }

    #[test]
    fn drift_repair_of_an_intact_table_is_empty() {
        let wanted = [fwd(1, 100)];
        assert!(drift_repair(&wanted, &[fwd(1, 3)]).is_empty());
        assert!(drift_repair(&[], &[]).is_empty());
    }

    #[test]
    fn drift_repair_moves_forwards_to_a_new_external_address() {
        let old = fwd(1, 100);
        let new = Forward {
            external_addr: Ipv4Addr::new(198, 51, 100, 1),
            ..old
        };
        assert_eq!(
            drift_repair(&[new], &[old]),
            vec![Change::Remove(old), Change::Add(new)]
        );
    }
}
