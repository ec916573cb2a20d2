//! End-to-end: `kill -9` at random moments under load, 20 times. After every restart, each
//! mapping acknowledged to the client before the kill is either in natpmpd's table and the
//! kernel again, or the epoch went backwards so that the client knows to re-create it
//! (RFC 6886 §3.6). The rule that makes it so is in core `gateway/recovery.rs`: the lease
//! file is up to ~1 s old, and the kernel's surviving table tells what it missed.

use crate::lab::*;
use std::collections::BTreeMap;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KILLS: usize = 20;
/// The loader's mappings use internal UDP ports from here, one new port per request.
const FIRST_PORT: u16 = 20000;
/// How many of the loader's mappings are live at once (under the default quota of 256).
const LIVE: u16 = 100;
/// A mapping with real traffic checked after every restart.
const TRAFFIC_PORT: u16 = 9000;

/// What the client was told: internal port -> (external port, epoch in the reply).
type Acknowledged = Arc<Mutex<BTreeMap<u16, (u16, u32)>>>;

/// A LAN client making new mappings back to back, recording every success it receives.
/// It holds off while `paused` (during a check, so that it does not delete what is being
/// checked).
fn start_loader(
    lab: &Lab,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    acked: Acknowledged,
) -> NsTask<u32> {
    spawn_in_ns(&lab.lan, move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(LAN_HOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let gw = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
        let mut buf = [0u8; 64];
        let mut next = FIRST_PORT + LIVE;
        let mut sent = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if paused.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            // Create one, then delete the one made LIVE requests ago: the table keeps
            // changing (as after every lease save) without running into the client's quota.
            let (port, lifetime) = if sent.is_multiple_of(2) {
                (next, 3600)
            } else {
                (next.wrapping_sub(LIVE), 0)
            };
            if sent % 2 == 1 {
                next = if next == 60000 {
                    FIRST_PORT + LIVE
                } else {
                    next + 1
                };
            }
            if lifetime == 0 {
                // Once a delete is sent the client no longer counts on the mapping, answered
                // or not (a kill may fall between the kernel's removal and the reply).
                acked.lock().unwrap().remove(&port);
            }
            sock.send_to(&map_request(Proto::Udp, port, port, lifetime), gw)
                .unwrap();
            sent += 1;
            // Read until this request's answer or a timeout; late answers to earlier ones
            // count too (they were acknowledged).
            while let Ok((16, _)) = sock.recv_from(&mut buf) {
                let r = parse_map_reply(&buf[..16]);
                if r.result == 0 {
                    let mut acked = acked.lock().unwrap();
                    if r.lifetime > 0 {
                        acked.insert(r.internal, (r.external, r.epoch));
                    }
                }
                if r.internal == port {
                    break;
                }
            }
        }
        sent
    })
}

/// A small deterministic generator, seeded from the clock and printed, so a failing run can
/// be repeated.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_9_at_random_moments_under_load_loses_no_acknowledged_mapping_silently() {
    let mut lab = Lab::new();
    lab.start_default();
    let _udp_srv = udp_echo_server(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST, TRAFFIC_PORT),
        "lan-udp",
    );
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash loop seed {seed}");
    let mut rng = Lcg(seed);
    let mut traffic = natpmpc_map(&lab.lan, GW_LAN, 0, TRAFFIC_PORT, Proto::Udp, 3600).public_port;

    let acked: Acknowledged = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let loader = start_loader(&lab, stop.clone(), paused.clone(), acked.clone());
    let (mut checked, mut restarts, mut continued) = (0usize, 0usize, 0usize);
    let mut lost: Vec<String> = Vec::new();
    for round in 0..KILLS {
        thread::sleep(Duration::from_millis(200 + rng.below(1800)));
        lab.kill_daemon_hard().expect("kill -9");
        // Let the loader take in any answer that was already on its way, then hold it.
        paused.store(true, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(300));
        let before: BTreeMap<u16, (u16, u32)> = acked.lock().unwrap().clone();
        let last_epoch = before.values().map(|(_, e)| *e).max().unwrap_or(0);
        lab.respawn_daemon();
        lab.wait_ready();
        let (_, epoch, _) = lab
            .address_request()
            .expect("address request after restart");
        // A client's own test (RFC 6886 §3.6) allows 2 s of slack: the saved epoch is whole
        // seconds, so a restart may report a second less than the last reply did.
        if epoch + 2 < last_epoch {
            // State was lost and the client is told: it re-creates what it needs.
            restarts += 1;
            acked.lock().unwrap().clear();
            traffic = natpmpc_map(&lab.lan, GW_LAN, 0, TRAFFIC_PORT, Proto::Udp, 3600).public_port;
        } else {
            continued += 1;
            let maps = lab.mappings();
            let kernel = lab.inbound_map();
            for (iport, (eport, _)) in &before {
                checked += 1;
                let in_table = maps.iter().any(|m| {
                    m["protocol"] == "udp" && m["dst-port"] == *eport && m["to-ports"] == *iport
                });
                let in_kernel =
                    inbound_map_has(&kernel, "udp", *eport, &format!("{LAN_HOST} . {iport}"));
                if !(in_table && in_kernel) {
                    lost.push(format!(
                        "round {round}: udp {eport}->{iport} (table {in_table}, kernel {in_kernel}), epoch {epoch} after {last_epoch}"
                    ));
                }
            }
        }
        assert!(
            udp_passes(&lab, traffic, "lan-udp"),
            "round {round}: UDP through {traffic} did not pass after the restart\n{}",
            lab.daemon_log()
        );
        paused.store(false, Ordering::Relaxed);
    }
    // How many mappings the kernel alone knew of at a restart (made or renewed after the
    // last lease save), from the daemon's own log lines.
    let log = lab.daemon_log();
    let adopted: usize = log
        .lines()
        .filter_map(|l| {
            l.split(" the kernel held were taken over")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    for line in log.lines().filter(|l| l.contains("epoch restarts")) {
        eprintln!("{line}");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = loader.join(Duration::from_secs(5));
    eprintln!(
        "MEASURE crash loop: {KILLS} kills under load ({sent} requests), {checked} acknowledged mappings checked after {continued} restarts that kept the epoch, {restarts} restarts that reset it, {adopted} mappings taken over from the kernel, {} lost silently",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged mappings lost with the epoch going on:\n{}",
        lost.join("\n")
    );
    assert!(
        checked > 0,
        "no restart kept the epoch, so nothing was checked"
    );
}
