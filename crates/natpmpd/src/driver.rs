//! The daemon's event loop: UDP requests, timers, interface events, the control socket and
//! signals, all on one current-thread tokio runtime.
//!
//! How a batch flows (design.md §2): drain up to `BATCH` datagrams -> the engine answers each,
//! staging kernel changes -> all staged changes go to the kernel in one transaction -> replies
//! are sent. If the transaction fails, each request's changes are retried alone, and a request
//! whose forward the kernel refused is told Network Failure (result 3) and forgotten by the
//! engine, so no client is promised a forward the kernel does not hold.

use crate::config::{Backend, Config, InterfaceConfig};
use crate::control::{self, Request, Response};
use crate::netif::{self, Interface, Monitor};
use crate::udp::{Datagram, NatPmpSocket};
use anyhow::Context;
use natpmp_core::wire::natpmp::{self, ResultCode};
use natpmp_core::{Change, Outcome, Server, Timestamp};
use natpmp_nft::{Forwarder, NftForwarder, NullForwarder};
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Datagrams handled per wake-up before timers, events and the control socket get a turn.
const BATCH: usize = 64;

/// A reply waiting for its batch's kernel transaction.
struct PendingReply {
    reply: Vec<u8>,
    from: Ipv4Addr,
    ifindex: u32,
    to: SocketAddrV4,
    changes: Range<usize>,
}

pub struct Daemon {
    config: Config,
    server: Server,
    forwarder: Box<dyn Forwarder>,
    origin: Instant,
    /// The latest snapshot of the namespace's interfaces, by name.
    interfaces: BTreeMap<String, Interface>,
    /// Configured interfaces already reported missing, so the log says it once.
    reported_missing: HashSet<String>,
    warned_private: Option<Ipv4Addr>,
}

/// Build the kernel backend the configuration names.
pub fn make_forwarder(backend: Backend) -> anyhow::Result<Box<dyn Forwarder>> {
    Ok(match backend {
        Backend::Nftables => Box::new(
            NftForwarder::new().context("opening the nftables netlink socket (are you root?)")?,
        ),
        Backend::None => Box::new(NullForwarder::new()),
    })
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    warn_if_not_forwarding(&config);
    let mut forwarder = make_forwarder(config.backend)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let Some(external) = config.external().cloned().filter(|_| config.enabled) else {
        // RouterOS default and rfc-checklist §6 A16: switched off means not listening at all,
        // so clients get ICMP port unreachable, the "pre-NAT-PMP behaviour" of RFC 6886 §5.
        info!("nat-pmp is disabled (enabled = false): not listening on port 5351");
        if config.backend == Backend::Nftables {
            if let Err(e) = forwarder.teardown() {
                debug!("no natpmpd table to remove: {e}");
            }
        }
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        return Ok(());
    };

    forwarder
        .prepare(&external.interface)
        .context("installing the natpmpd nftables table")?;
    let socket = NatPmpSocket::bind(natpmp::SERVER_PORT).context("binding UDP port 5351")?;
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
        config,
        server,
        forwarder,
        origin,
        interfaces: BTreeMap::new(),
        reported_missing: HashSet::new(),
        warned_private: None,
    };
    daemon.refresh_interfaces();
    info!(
        "natpmpd listening on 0.0.0.0:5351 (external {}, internal {})",
        external.interface,
        daemon.internal_names().join(", ")
    );

    let mut buf = vec![0u8; 2048];
    loop {
        daemon.on_timers(&socket);
        let sleep = match daemon.server.poll_timeout() {
            Some(t) => daemon.instant_of(t),
            None => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            r = socket.readable() => {
                r.context("waiting for requests")?;
                daemon.on_requests(&socket, &mut buf);
            }
            _ = tokio::time::sleep_until(sleep.into()) => {}
            r = monitor.changed() => {
                r.context("reading interface events")?;
                daemon.refresh_interfaces();
            }
            Some((request, reply)) = control_rx.recv() => {
                let _ = reply.send(daemon.on_control(request));
            }
            _ = sighup.recv() => {
                warn!("SIGHUP: configuration reload is not implemented yet; restart natpmpd to apply a changed configuration");
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

    fn internal_configs(&self) -> impl Iterator<Item = &InterfaceConfig> {
        self.config.internals()
    }

    fn internal_names(&self) -> Vec<String> {
        self.internal_configs()
            .map(|i| i.interface.clone())
            .collect()
    }

    /// The enabled internal interfaces that exist now.
    fn internal_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.internal_configs()
            .filter_map(|c| self.interfaces.get(&c.interface))
    }

    /// Read the interfaces again and act on what changed: the external address (epoch reset,
    /// announcements, forwards moved) and interfaces that appeared or vanished.
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
            self.apply_or_resync(&changes);
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

    /// Expire mappings and send due announcement copies.
    fn on_timers(&mut self, socket: &NatPmpSocket) {
        let now = self.now();
        let mut changes = Vec::new();
        self.server.handle_timeout(now, &mut changes);
        if !changes.is_empty() {
            debug!("expired {} forward(s)", changes.len());
            self.apply_or_resync(&changes);
        }
        let mut packet = Vec::with_capacity(natpmp::EXTERNAL_ADDRESS_RESPONSE_LEN);
        while self.server.poll_announcement(now, &mut packet) {
            let to = SocketAddrV4::new(natpmp::ANNOUNCE_GROUP, natpmp::CLIENT_PORT);
            for iface in self.internal_interfaces() {
                // Sent from the interface's own address: clients check the source (§3.2.1).
                let Some(from) = iface.addrs.first() else {
                    continue;
                };
                if let Err(e) = socket.send_from(&packet, from.addr, iface.index, to) {
                    debug!("announcement on {} not sent: {e}", iface.name);
                }
            }
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
                for p in &mut pending {
                    let mine = &changes[p.changes.clone()];
                    if mine.is_empty() {
                        continue;
                    }
                    if let Err(e) = self.apply_tolerant(mine) {
                        error!("forward for {} not installed: {e}", p.to.ip());
                        self.server.revert(mine);
                        natpmp::rewrite_map_as_failure(&mut p.reply, ResultCode::NetworkFailure);
                    }
                }
            }
        }
        for p in &pending {
            if let Err(e) = socket.send_from(&p.reply, p.from, p.ifindex, p.to) {
                debug!("reply to {} not sent: {e}", p.to);
            }
        }
        for c in &changes {
            match c {
                Change::Add(f) => debug!(
                    "forward {} {}:{} -> {}:{}",
                    f.protocol, f.external_addr, f.external_port, f.internal_addr, f.internal_port
                ),
                Change::Remove(f) => debug!(
                    "remove {} {}:{} -> {}:{}",
                    f.protocol, f.external_addr, f.external_port, f.internal_addr, f.internal_port
                ),
            }
        }
    }

    /// Apply one request's changes; if the kernel refuses them together, apply each removal
    /// alone (a forward already gone from the kernel, e.g. after another tool flushed it, must
    /// not block the renewal that follows) and then the additions together. Only a refused
    /// addition is an error.
    fn apply_tolerant(&mut self, changes: &[Change]) -> Result<(), natpmp_nft::ForwardError> {
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
    }

    /// Reload our table and install every forward the engine holds, in one transaction.
    fn resync(&mut self) {
        let Some(ext) = self.config.external().map(|e| e.interface.clone()) else {
            return;
        };
        let forwards = self.server.forwards(self.now());
        let adds: Vec<Change> = forwards.into_iter().map(Change::Add).collect();
        match self
            .forwarder
            .prepare(&ext)
            .and_then(|()| self.forwarder.apply(&adds))
        {
            Ok(()) => info!("natpmpd table rebuilt with {} forward(s)", adds.len()),
            Err(e) => error!("cannot rebuild the natpmpd table: {e}"),
        }
    }

    fn on_control(&mut self, request: Request) -> Response {
        match request {
            Request::Print => Response {
                ok: true,
                error: None,
                external_interface: self.config.external().map(|e| e.interface.clone()),
                mappings: self.server.mappings(self.now()),
            },
        }
    }

    fn shutdown(&mut self) {
        if self.config.backend == Backend::None {
            info!("stopping");
        } else if self.config.keep_forwards_on_exit {
            info!("stopping; forwards stay in the kernel until their own timeouts (keep-forwards-on-exit)");
        } else {
            match self.forwarder.teardown() {
                Ok(()) => info!("stopping; natpmpd table removed"),
                Err(e) => error!("stopping; could not remove the natpmpd table: {e}"),
            }
        }
        let _ = std::fs::remove_file(&self.config.control_socket);
    }
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
