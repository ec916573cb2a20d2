//! End-to-end: the `crab_nat` crate (PCP first, then NAT-PMP) gets the daemon's
//! unsupported-version answer, falls back to NAT-PMP, maps a port, and traffic passes.

mod lab;

use std::net::{IpAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType, TimeoutConfig};
use lab::*;

fn options(lifetime: u32) -> PortMappingOptions {
    PortMappingOptions {
        external_port: None,
        lifetime_seconds: Some(lifetime),
        timeout_config: Some(TimeoutConfig {
            initial_timeout: Duration::from_millis(250),
            max_retries: 3,
            max_retry_timeout: Some(Duration::from_secs(1)),
        }),
    }
}

fn crab_map(ns: &str, proto: InternetProtocol, internal: u16, lifetime: u32) -> PortMapping {
    in_ns_async(ns, move || async move {
        PortMapping::new(
            GW_LAN.into(),
            IpAddr::V4(LAN_HOST),
            proto,
            NonZeroU16::new(internal).unwrap(),
            options(lifetime),
        )
        .await
        .unwrap_or_else(|e| panic!("crab_nat mapping failed: {e}"))
    })
}

#[test]
fn crab_nat_falls_back_to_natpmp_and_tcp_traffic_passes() {
    let mut lab = Lab::new();
    lab.start_default();

    let m = crab_map(&lab.lan, InternetProtocol::Tcp, 9090, 600);
    assert!(
        matches!(m.mapping_type(), PortMappingType::NatPmp),
        "expected the NAT-PMP fallback, got {:?}",
        m.mapping_type()
    );
    assert_eq!(m.internal_port().get(), 9090);
    assert!(
        m.lifetime() > 0 && m.lifetime() <= 600,
        "lifetime {}",
        m.lifetime()
    );
    let ext = m.external_port().get();

    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, 9090));
    let server = serve_tcp_once(listener, "crab", Duration::from_secs(5));
    let reply = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, ext), "ping")
        .unwrap_or_else(|e| panic!("TCP to the crab_nat mapping failed: {e}"));
    assert_eq!(reply, "crab:ping");
    assert!(server.join().unwrap().is_some());

    // Renew and drop through the crate as well.
    let dropped = in_ns_async(&lab.lan, move || async move {
        let mut m = m;
        m.renew().await.map_err(|e| format!("renew: {e}"))?;
        if m.external_port().get() != ext {
            return Err(format!(
                "renew moved the port {ext} -> {}",
                m.external_port()
            ));
        }
        m.try_drop().await.map_err(|(e, _)| format!("drop: {e}"))
    });
    dropped.unwrap();
    assert!(
        Lab::eventually(Duration::from_secs(2), || !lab
            .mappings()
            .iter()
            .any(|e| e["dst-port"] == ext)),
        "mapping still listed after crab_nat dropped it"
    );
}

#[test]
fn crab_nat_udp_mapping_passes_datagrams() {
    let mut lab = Lab::new();
    lab.start_default();

    let m = crab_map(&lab.lan, InternetProtocol::Udp, 9091, 300);
    let ext = m.external_port().get();
    let lan_sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 9091));
    let inet_sock = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST, 0));
    inet_sock
        .send_to(b"crab-udp", SocketAddrV4::new(GW_EXT, ext))
        .unwrap();
    let (b, from) = recv(&lan_sock).expect("datagram did not reach the LAN host");
    assert_eq!(b, b"crab-udp");
    assert_eq!(from, inet_sock.local_addr().unwrap());
}
