//! End-to-end with iroh's `portmapper` crate, a client nobody here wrote (the one iroh
//! endpoints use): it finds the gateway from the LAN host's default route, maps its UDP port
//! with PCP, or with NAT-PMP when PCP is switched off in the client, real datagrams from the
//! internet host reach it, and deactivating the client releases the mapping.

use std::net::SocketAddrV4;
use std::num::NonZeroU16;
use std::sync::mpsc;
use std::time::Duration;

use crate::lab::*;

/// The crate's client, running in the LAN namespace until told to deactivate.
struct Mapper {
    external: SocketAddrV4,
    deactivate: mpsc::Sender<()>,
    task: NsTask<()>,
}

impl Mapper {
    /// Starts the client for UDP `port` and waits for the external address it obtains.
    fn start(lab: &Lab, port: u16, pcp: bool, nat_pmp: bool) -> Mapper {
        let (found_tx, found_rx) = mpsc::channel();
        let (deactivate, deactivate_rx) = mpsc::channel::<()>();
        let task = spawn_in_ns(&lab.lan, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = portmapper::Client::new(portmapper::Config {
                    enable_upnp: false,
                    enable_pcp: pcp,
                    enable_nat_pmp: nat_pmp,
                    protocol: portmapper::Protocol::Udp,
                });
                let mut external = client.watch_external_address();
                client.update_local_port(NonZeroU16::new(port).unwrap());
                client.procure_mapping();
                let got = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        if let Some(addr) = *external.borrow_and_update() {
                            return addr;
                        }
                        external.changed().await.expect("portmapper service ended");
                    }
                })
                .await
                .expect("portmapper found no mapping within 10 s");
                found_tx.send(got).unwrap();
                // Keep the service running until the test is done looking.
                while deactivate_rx.try_recv().is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                client.deactivate();
                // The release is sent by the service task: give it the moment it needs.
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
        });
        let external = found_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("portmapper reported no external address");
        Mapper {
            external,
            deactivate,
            task,
        }
    }

    fn stop(self) {
        self.deactivate.send(()).unwrap();
        self.task.join(Duration::from_secs(10));
    }
}

fn assert_datagram_passes(lab: &Lab, port: u16, external: SocketAddrV4) {
    let lan_sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, port));
    let inet_sock = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST, 0));
    inet_sock.send_to(b"iroh", external).unwrap();
    let (b, from) = recv(&lan_sock)
        .unwrap_or_else(|| panic!("a datagram to {external} did not reach the LAN host"));
    assert_eq!(b, b"iroh");
    assert_eq!(from, inet_sock.local_addr().unwrap());
}

fn check(via: &str, pcp: bool, nat_pmp: bool, port: u16) {
    let mut lab = Lab::new();
    lab.start_default();
    let mapper = Mapper::start(&lab, port, pcp, nat_pmp);
    assert_eq!(*mapper.external.ip(), GW_EXT);
    assert_datagram_passes(&lab, port, mapper.external);
    let listed = lab.mappings();
    assert!(
        listed.iter().any(|m| m["via"] == via
            && m["dst-port"] == mapper.external.port()
            && m["to-ports"] == port),
        "{listed:?}"
    );
    mapper.stop();
    assert!(
        Lab::eventually(Duration::from_secs(3), || lab.mappings().is_empty()),
        "mapping still listed after the crate released it: {:?}",
        lab.mappings()
    );
}

#[test]
fn iroh_portmapper_maps_with_pcp_and_udp_passes() {
    check("pcp", true, false, 9300);
}

#[test]
fn iroh_portmapper_maps_with_natpmp_and_udp_passes() {
    check("nat-pmp", false, true, 9301);
}
