//! The daemon's event loop: sockets, timers and signals, all on one current-thread tokio
//! runtime, around the sans-IO [`Gateway`] of the core.
//!
//! Everything with a decision in it (which datagram is accepted, what the kernel is told,
//! commit or revert, expiry, announcements, drift repair, reload) is the gateway's. This file
//! turns the world into calls on it: datagrams from port 5351, the time, interface events, the
//! control socket and signals; and sends what it hands back, writes the lease file when it is
//! due, and opens or closes port 5351 as the gateway starts or stops serving.

use crate::config::{Backend, Config};
use crate::control::{self, Request, Response};
use crate::lease_writer::{self, LeaseWriter};
use crate::leases;
use crate::local_sockets;
use crate::metrics::{self, Metrics};
use crate::netif::{self, Monitor};
use crate::notify::{self, Notifier};
use crate::socket_scanner::{Scan, SocketScanner};
use crate::udp::{Outbound, RequestSocket};
use anyhow::Context;
use natpmp_pcp_core::kernel::{Forwarder, KernelError, NullForwarder};
use natpmp_pcp_core::wire::natpmp::SERVER_PORT;
use natpmp_pcp_core::{Datagram, Gateway, Outgoing, Timestamp};
use natpmp_pcp_nft::NftForwarder;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Build the kernel backend the configuration names.
pub fn make_forwarder(backend: Backend) -> anyhow::Result<Box<dyn Forwarder>> {
    Ok(match backend {
        Backend::Nftables => Box::new(
            NftForwarder::new().context("opening the nftables netlink socket (are you root?)")?,
        ),
        Backend::None => Box::new(NullForwarder::new()),
    })
}

/// Port 5351 on both families. IPv6 may be missing (disabled in the kernel): then PCP is
/// served over IPv4 only, and the log says so.
struct Sockets {
    v4: Rc<RequestSocket>,
    v6: Option<Rc<RequestSocket>>,
}

struct Daemon {
    config_path: PathBuf,
    config: Config,
    gateway: Gateway<Box<dyn Forwarder>>,
    /// `None` while not serving: then port 5351 is not even open.
    sockets: Option<Sockets>,
    origin: Instant,
    /// Whether reading the router's own sockets failed last time (logged once).
    local_sockets_failing: bool,
    lease_writer: LeaseWriter,
    /// `None` unless `metrics-listen` is set.
    metrics: Option<Metrics>,
    /// systemd's notification socket (nothing when not run by systemd).
    notify: Notifier,
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
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let (metrics, registry) = Metrics::new();
            let bound = metrics::start(addr, registry)
                .with_context(|| format!("metrics-listen: cannot listen on {addr}"))?;
            info!("metrics on http://{bound}/metrics");
            Some(metrics)
        }
    };

    let origin = Instant::now();
    let gateway = Gateway::new(
        config.gateway_config(random_seed()),
        forwarder,
        Timestamp::ZERO,
    );
    let lease_writer =
        LeaseWriter::new(config.lease_file.clone()).context("starting the lease-writer thread")?;
    let mut daemon = Daemon {
        config_path,
        config,
        gateway,
        sockets: None,
        origin,
        local_sockets_failing: false,
        lease_writer,
        metrics,
        notify: Notifier::from_env(),
    };
    daemon.refresh_interfaces();
    // Before serving, so restored mappings on the router's own ports are taken back at once.
    daemon.local_sockets_scanned(local_sockets::scan());
    let mut scanner = SocketScanner::start(local_sockets::SCAN_INTERVAL)
        .context("starting the socket-scan thread")?;
    if daemon.config.enabled {
        daemon.start()?;
    } else {
        info!("nat-pmp is disabled (enabled = false): not listening on port 5351");
        daemon.gateway.remove_table();
    }
    // Port 5351 is open and the table installed (or natpmpd is up and idle): tell systemd.
    daemon.notify.ready(&notify::status_line(&daemon.gateway));
    let mut watchdog = daemon.notify.watchdog_timer();

    loop {
        daemon.on_timers();
        daemon
            .notify
            .set_status(|| notify::status_line(&daemon.gateway));
        let v4 = daemon.sockets.as_ref().map(|s| s.v4.clone());
        let v6 = daemon.sockets.as_ref().and_then(|s| s.v6.clone());
        let receive = |socket: Option<Rc<RequestSocket>>| async move {
            match &socket {
                Some(s) => s.receive().await.map(|()| socket.clone()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = receive(v4) => {
                if let Some(s) = r.context("waiting for IPv4 requests")? {
                    daemon.on_requests(&s);
                }
            }
            r = receive(v6) => {
                if let Some(s) = r.context("waiting for IPv6 requests")? {
                    daemon.on_requests(&s);
                }
            }
            _ = tokio::time::sleep_until(daemon.next_wakeup().into()) => {}
            scan = scanner.next() => daemon.local_sockets_scanned(scan),
            result = daemon.lease_writer.written() => daemon.lease_written(result),
            // From the loop itself: a loop that is stuck stops the pings.
            _ = notify::tick(&mut watchdog) => daemon.notify.watchdog(),
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
    daemon.notify.stopping();
    daemon.shutdown();
    Ok(())
}

impl Daemon {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    /// The wall-clock time (Unix milliseconds) of the loop's past time `t`: a lease
    /// snapshot's expiries count from when it was taken, not from when it is written.
    fn unix_ms_of(&self, t: Timestamp) -> u64 {
        let ago = self.now().since(t).as_millis() as u64;
        leases::now_unix_ms().saturating_sub(ago)
    }

    fn instant_of(&self, t: Timestamp) -> Instant {
        self.origin + Duration::from_millis(t.as_millis())
    }

    fn next_wakeup(&self) -> Instant {
        let idle = Instant::now() + Duration::from_secs(3600);
        match self.gateway.poll_timeout() {
            Some(t) => self.instant_of(t).min(idle),
            None => idle,
        }
    }

    /// Bring back the leases, start the gateway, open port 5351.
    fn start(&mut self) -> anyhow::Result<()> {
        let path = self.config.lease_file.clone();
        let leases = match leases::load(&path, leases::now_unix_ms()) {
            Ok(Some(loaded)) => {
                info!(
                    "lease file {}: {} mapping(s), {} expired while stopped",
                    path.display(),
                    loaded.leases.records.len(),
                    loaded.expired
                );
                Some(loaded.leases)
            }
            Ok(None) => {
                info!(
                    "no lease file at {}: starting with no mappings",
                    path.display()
                );
                None
            }
            Err(e) => {
                // Never fatal: a clean start is better than no gateway.
                error!("{e}");
                None
            }
        };
        let had_leases = leases.is_some();
        let started = self
            .gateway
            .start(self.now(), leases)
            .context("installing the natpmpd nftables table")?;
        if had_leases {
            let dropped = started.recovery.as_ref().map_or(0, |r| r.dropped);
            info!(
                "restored {} mapping(s){}{}",
                started.restored.saturating_sub(dropped),
                match (started.epoch_continued, &started.recovery) {
                    (true, _) => "; the epoch continues",
                    (false, Some(r)) if r.lost.is_some() =>
                        "; state was lost in a crash, epoch reset",
                    (false, _) => "; external address changed, epoch reset",
                },
                match &started.recovery {
                    Some(r) if r.dropped + r.adopted > 0 => format!(
                        "; after an unclean stop, {} leased mapping(s) the kernel no longer held were dropped and {} the kernel held were taken over",
                        r.dropped, r.adopted
                    ),
                    _ => String::new(),
                }
            );
        } else if let Some(r) = &started.recovery {
            info!(
                "no lease file, but natpmpd's kernel table held mappings of an earlier run: {} taken over",
                r.adopted
            );
        }
        self.open_sockets()?;
        let config = self.gateway.config();
        let v6 = self.sockets.as_ref().is_some_and(|s| s.v6.is_some());
        info!(
            "natpmpd listening on 0.0.0.0:5351{} for NAT-PMP{} (external {}, internal {}), {} kernel element(s)",
            if v6 { " and [::]:5351" } else { "" },
            if config.pcp { " and PCP" } else { "" },
            self.gateway.external_interface().unwrap_or("none"),
            config.internal.join(", "),
            started.installed
        );
        Ok(())
    }

    fn open_sockets(&mut self) -> anyhow::Result<()> {
        if self.sockets.is_some() {
            return Ok(());
        }
        let v4 = RequestSocket::bind_v4(SERVER_PORT).context("binding UDP port 5351")?;
        self.sockets = Some(Sockets {
            v4: Rc::new(v4),
            v6: None,
        });
        self.sync_v6_socket();
        Ok(())
    }

    /// [::]:5351 is open exactly while PCP is on: NAT-PMP is IPv4-only, so with PCP off there
    /// is nothing to serve over IPv6, and the port stays closed (as with everything off).
    fn sync_v6_socket(&mut self) {
        let pcp = self.gateway.config().pcp;
        let Some(sockets) = self.sockets.as_mut() else {
            return;
        };
        match (pcp, sockets.v6.is_some()) {
            (true, false) => match RequestSocket::bind_v6(SERVER_PORT) {
                Ok(s) => sockets.v6 = Some(Rc::new(s)),
                Err(e) => warn!("cannot open [::]:5351 ({e}): PCP is served over IPv4 only"),
            },
            (false, true) => {
                sockets.v6 = None;
                info!("pcp = false: [::]:5351 closed");
            }
            _ => {}
        }
    }

    fn refresh_interfaces(&mut self) {
        match netif::snapshot() {
            Ok(s) => {
                let now = self.now();
                self.gateway.set_interfaces(now, s);
            }
            Err(e) => error!("cannot read the interfaces: {e}"),
        }
    }

    /// A scan of the router's own sockets (see `local_sockets`) came in.
    fn local_sockets_scanned(&mut self, (sockets, error): Scan) {
        match error {
            Some(e) if !self.local_sockets_failing => {
                warn!("{e}; the router's own ports there are not protected from mappings");
                self.local_sockets_failing = true;
            }
            Some(_) => {}
            None => self.local_sockets_failing = false,
        }
        let now = self.now();
        self.gateway.set_local_sockets(now, sockets);
    }

    /// The datagrams `socket` just read (up to BATCH, one recvmmsg): answered in one pass of
    /// the gateway, one kernel transaction and one sendmmsg per socket.
    fn on_requests(&mut self, socket: &RequestSocket) {
        let read_at = Instant::now();
        let received = socket.received();
        if received.is_empty() {
            return;
        }
        let datagrams = received.datagrams().map(|(r, payload)| Datagram {
            source: r.source,
            destination: r.destination,
            ifindex: r.ifindex,
            payload,
        });
        let mut out = Vec::with_capacity(received.len());
        let now = self.now();
        self.gateway.handle_datagrams(now, datagrams, &mut out);
        let count = received.len();
        drop(received);
        if let Some(sockets) = &self.sockets {
            send_all(sockets, &out);
        }
        if let Some(m) = &mut self.metrics {
            m.update(&self.gateway, now, Some((read_at, count)), false);
        }
        // After the replies: a conntrack clearing walks the whole conntrack table.
        self.gateway.clear_flows();
    }

    /// Expiry, announcements, Mapping Updates, drift; then the lease file when it is due.
    fn on_timers(&mut self) {
        let now = self.now();
        let mut out = Vec::new();
        self.gateway.handle_timeout(now, &mut out);
        if let Some(sockets) = &self.sockets {
            send_all(sockets, &out);
        }
        self.gateway.clear_flows();
        if let Some(snapshot) = self.gateway.take_lease_snapshot(now) {
            let taken_at = self.unix_ms_of(snapshot.taken_at);
            self.lease_writer.submit(snapshot, taken_at);
        }
        if let Some(m) = &mut self.metrics {
            m.update(&self.gateway, now, None, false);
        }
    }

    /// The lease-writer thread finished a write.
    fn lease_written(&mut self, result: lease_writer::WriteResult) {
        if let Ok(n) = &result {
            debug!("saved {n} lease(s)");
        }
        if let Some(m) = &self.metrics {
            m.lease_saved(result.is_ok());
        }
        self.gateway.lease_saved(self.now(), result.map(|_| ()));
    }

    fn on_control(&mut self, request: Request) -> Response {
        match request {
            Request::Print => Response {
                ok: true,
                error: None,
                external_interface: self.gateway.external_interface().map(str::to_owned),
                mappings: self.gateway.mappings(self.now()),
                ..Response::default()
            },
            Request::Status => Response {
                ok: true,
                status: Some(control::status::gather(
                    &self.gateway,
                    self.now(),
                    self.origin.elapsed(),
                )),
                ..Response::default()
            },
            Request::Remove { removal, by } => {
                let now = self.now();
                let response = control::remove::answer(&mut self.gateway, now, &removal, by);
                // The answer is written after this returns; the clearing is quick next to a
                // person typing, and ends the removed mappings' traffic at once.
                self.gateway.clear_flows();
                if let Some(m) = &mut self.metrics {
                    m.update(&self.gateway, now, None, true);
                }
                response
            }
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
        // RELOADING=1 now, READY=1 on every way out (a refused file keeps the old one running).
        let _reloading = self.notify.reloading();
        let mut new = Config::load(&self.config_path)
            .map_err(|e| format!("configuration not reloaded: {e}"))?;
        // These are fixed for the life of the process; say so instead of half-applying them.
        for (what, changed) in [
            ("backend", new.backend != self.config.backend),
            // The lease-writer thread was given its path at start.
            ("lease-file", new.lease_file != self.config.lease_file),
            (
                "control-socket",
                new.control_socket != self.config.control_socket,
            ),
            (
                "control-socket-group",
                new.control_socket_group != self.config.control_socket_group,
            ),
            (
                "metrics-listen",
                new.metrics_listen != self.config.metrics_listen,
            ),
        ] {
            if changed {
                warn!("{what} changed: takes effect at the next restart");
            }
        }
        new.backend = self.config.backend;
        new.lease_file = self.config.lease_file.clone();
        new.control_socket = self.config.control_socket.clone();
        new.control_socket_group = self.config.control_socket_group.clone();
        new.metrics_listen = self.config.metrics_listen;
        let was_serving = self.gateway.serving();
        let gateway_config = new.gateway_config(random_seed());
        self.config = new;
        let now = self.now();
        let result = self.gateway.reconfigure(now, gateway_config);
        self.refresh_interfaces();
        match (was_serving, self.gateway.serving()) {
            (true, false) => {
                self.sockets = None;
                info!("nat-pmp is disabled (enabled = false): not listening on port 5351");
            }
            (false, true) => self.open_sockets().map_err(|e| format!("{e:#}"))?,
            _ => self.sync_v6_socket(),
        }
        result.map_err(|e: KernelError| format!("configuration reloaded, but {e}"))?;
        info!("configuration reloaded from {}", self.config_path.display());
        Ok(())
    }

    fn shutdown(&mut self) {
        let now = self.now();
        let serving = self.gateway.serving();
        let keep = self.config.keep_forwards_on_exit && self.config.backend == Backend::Nftables;
        let snapshot = self.gateway.shutdown(now, keep);
        // The writes under way end first, so no older snapshot overwrites the clean one.
        self.lease_writer.finish();
        let taken_at = self.unix_ms_of(snapshot.taken_at);
        if let Err(e) = leases::save(&self.config.lease_file, taken_at, &snapshot) {
            error!(
                "cannot write the lease file {}: {e}",
                self.config.lease_file.display()
            );
        }
        if keep && serving {
            info!("stopping; forwards stay in the kernel until their own timeouts or the next start (keep-forwards-on-exit)");
        } else {
            info!("stopping");
        }
        let _ = std::fs::remove_file(&self.config.control_socket);
    }
}

/// Send each datagram on the socket of its family (a reply to an IPv6 request, or an
/// announcement to ff02::1, on the IPv6 one), a batch per socket.
fn send_all(sockets: &Sockets, out: &[Outgoing]) {
    let (v4, v6): (Vec<Outbound<'_>>, Vec<Outbound<'_>>) = out
        .iter()
        .map(|o| Outbound {
            payload: &o.payload,
            from: o.from,
            ifindex: o.ifindex,
            to: o.to,
        })
        .partition(|o| o.to.is_ipv4());
    if !v4.is_empty() {
        sockets.v4.send(&v4);
    }
    if let (Some(socket), false) = (&sockets.v6, v6.is_empty()) {
        socket.send(&v6);
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
    if config.pcp {
        match std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding") {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => warn!("net.ipv6.conf.all.forwarding is 0: IPv6 pinholes will carry no traffic; enable it with `sysctl -w net.ipv6.conf.all.forwarding=1`"),
            // No IPv6 in this kernel: PCP is served over IPv4 only.
            Err(e) => debug!("cannot read IPv6 forwarding: {e}"),
        }
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
