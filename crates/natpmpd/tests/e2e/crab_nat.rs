//! End-to-end with the `crab_nat` crate, a client nobody here wrote: it tries PCP first, so it
//! maps with PCP MAP (and PEER through its `pcp` module); with `pcp = false` in natpmpd's
//! configuration it gets the NAT-PMP Unsupported Version answer and falls back to NAT-PMP.
//! Real TCP and UDP traffic passes through what it maps.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use crate::lab::*;
use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType, TimeoutConfig};

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

/// The mapping carries TCP from the internet host to the LAN host.
fn assert_tcp_passes(lab: &Lab, internal: u16, external: u16, tag: &'static str) {
    let listener = tcp_listener(&lab.lan, SocketAddrV4::new(LAN_HOST, internal));
    let server = serve_tcp_once(listener, tag, Duration::from_secs(5));
    let reply = tcp_roundtrip(&lab.inet, SocketAddrV4::new(GW_EXT, external), "ping")
        .unwrap_or_else(|e| panic!("TCP to the crab_nat mapping failed: {e}"));
    assert_eq!(reply, format!("{tag}:ping"));
    assert!(server.join().unwrap().is_some());
}

#[test]
fn crab_nat_maps_with_pcp_and_tcp_traffic_passes() {
    let mut lab = Lab::new();
    lab.start_default();

    let m = crab_map(&lab.lan, InternetProtocol::Tcp, 9090, 600);
    let PortMappingType::Pcp { external_ip, .. } = m.mapping_type() else {
        panic!("expected a PCP mapping, got {:?}", m.mapping_type());
    };
    assert_eq!(external_ip, IpAddr::V4(GW_EXT));
    assert_eq!(m.internal_port().get(), 9090);
    assert!(
        (120..=600).contains(&m.lifetime()),
        "lifetime {}",
        m.lifetime()
    );
    let ext = m.external_port().get();
    let listed = lab.mappings();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["via"], "pcp");
    assert_eq!(listed[0]["nonce-owned"], true);
    assert_tcp_passes(&lab, 9090, ext, "crab");

    // Renew (same nonce: the same port comes back) and drop through the crate as well.
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
        Lab::eventually(Duration::from_secs(2), || lab.mappings().is_empty()),
        "mapping still listed after crab_nat dropped it: {:?}",
        lab.mappings()
    );
    assert!(
        !tcp_probe(
            &lab.inet,
            SocketAddrV4::new(GW_EXT, ext),
            "gone",
            Duration::from_secs(1)
        ),
        "TCP still passes after the PCP delete"
    );
}

#[test]
fn crab_nat_udp_pcp_mapping_passes_datagrams() {
    let mut lab = Lab::new();
    lab.start_default();

    let m = crab_map(&lab.lan, InternetProtocol::Udp, 9091, 300);
    assert!(matches!(m.mapping_type(), PortMappingType::Pcp { .. }));
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

#[test]
fn crab_nat_peer_mapping_carries_traffic_both_ways() {
    let mut lab = Lab::new();
    lab.start_default();
    let peer_addr = SocketAddrV4::new(INET_HOST, 4000);
    let peer = in_ns_async(&lab.lan, move || async move {
        crab_nat::pcp::peer_mapping(
            crab_nat::pcp::BaseMapRequest::new(
                GW_LAN.into(),
                IpAddr::V4(LAN_HOST),
                InternetProtocol::Udp,
                NonZeroU16::new(9200).unwrap(),
            ),
            None,
            None,
            SocketAddr::V4(peer_addr),
            options(600),
        )
        .await
        .unwrap_or_else(|e| panic!("crab_nat PEER failed: {e:?}"))
    });
    assert_eq!(peer.external_ip(), IpAddr::V4(GW_EXT));
    assert_eq!(peer.remote_address(), SocketAddr::V4(peer_addr));
    let ext = peer.external_port().get();
    let listed = lab.mappings();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["kind"], "peer");
    assert_eq!(listed[0]["src-address"][0], INET_HOST.to_string());
    assert_eq!(listed[0]["src-port"], 4000);

    let lan_sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 9200));
    let inet_sock = udp_socket(&lab.inet, peer_addr);
    // The peer's traffic to the external port reaches the host...
    inet_sock
        .send_to(b"from-peer", SocketAddrV4::new(GW_EXT, ext))
        .unwrap();
    let (b, from) = recv(&lan_sock).expect("the peer's datagram did not reach the LAN host");
    assert_eq!(b, b"from-peer");
    assert_eq!(from, SocketAddr::V4(peer_addr));
    // ...and the host's traffic to the peer leaves from the external port.
    lan_sock.send_to(b"to-peer", peer_addr).unwrap();
    let (b, from) = recv(&inet_sock).expect("the host's datagram did not reach the peer");
    assert_eq!(b, b"to-peer");
    assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(GW_EXT, ext)));
    // Another internet host is not that peer: nothing reaches the LAN host from it.
    let stranger = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST, 4001));
    stranger
        .send_to(b"stranger", SocketAddrV4::new(GW_EXT, ext))
        .unwrap();
    assert!(
        recv(&lan_sock).is_none(),
        "a datagram from another remote port got through the PEER mapping"
    );
}

#[test]
fn crab_nat_falls_back_to_natpmp_when_pcp_is_off() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), "pcp = false\n");

    let m = crab_map(&lab.lan, InternetProtocol::Tcp, 9090, 600);
    assert!(
        matches!(m.mapping_type(), PortMappingType::NatPmp),
        "expected the NAT-PMP fallback, got {:?}",
        m.mapping_type()
    );
    assert!(
        m.lifetime() > 0 && m.lifetime() <= 600,
        "lifetime {}",
        m.lifetime()
    );
    let ext = m.external_port().get();
    assert_tcp_passes(&lab, 9090, ext, "crab");
    let dropped = in_ns_async(&lab.lan, move || async move {
        m.try_drop().await.map_err(|(e, _)| format!("drop: {e}"))
    });
    dropped.unwrap();
    assert!(
        Lab::eventually(Duration::from_secs(2), || lab.mappings().is_empty()),
        "mapping still listed after crab_nat dropped it"
    );
}
