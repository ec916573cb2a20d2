//! End-to-end: UDP mappings made with the `natpmp` crate (a third-party client): datagrams
//! from the internet reach the LAN host while the mapping lives and stop once it expires
//! (including the flow that was already open); renewals keep the port; lifetimes are capped.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::*;

/// (internal port, external port, lifetime) as the `natpmp` crate reports them.
type Granted = (u16, u16, u32);

/// Maps with the `natpmp` crate from inside namespace `ns`.
fn natpmp_crate_map(
    ns: &str,
    gw: Ipv4Addr,
    proto: Proto,
    private: u16,
    public: u16,
    lifetime: u32,
) -> Granted {
    in_ns(ns, move || {
        let mut n = natpmp::Natpmp::new_with(gw).expect("natpmp client");
        let p = match proto {
            Proto::Udp => natpmp::Protocol::UDP,
            Proto::Tcp => natpmp::Protocol::TCP,
        };
        n.send_port_mapping_request(p, private, public, lifetime)
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            thread::sleep(Duration::from_millis(20));
            match n.read_response_or_retry() {
                Ok(natpmp::Response::UDP(m)) if proto == Proto::Udp => {
                    return (
                        m.private_port(),
                        m.public_port(),
                        m.lifetime().as_secs() as u32,
                    )
                }
                Ok(natpmp::Response::TCP(m)) if proto == Proto::Tcp => {
                    return (
                        m.private_port(),
                        m.public_port(),
                        m.lifetime().as_secs() as u32,
                    )
                }
                Ok(other) => panic!("unexpected natpmp response {other:?}"),
                Err(natpmp::Error::NATPMP_TRYAGAIN) if Instant::now() < deadline => {}
                Err(e) => panic!("natpmp crate mapping failed: {e:?}"),
            }
        }
    })
}

/// Whether `payload` sent from `from` to 203.0.113.1:`ext` arrives at `to` (within the read timeout).
fn delivered(
    from: &std::net::UdpSocket,
    to: &std::net::UdpSocket,
    ext: u16,
    payload: &[u8],
) -> bool {
    from.send_to(payload, SocketAddrV4::new(GW_EXT, ext))
        .expect("send from inet");
    while let Some((b, _)) = recv(to) {
        if b == payload {
            return true;
        }
    }
    false
}

#[test]
fn natpmp_crate_udp_mapping_passes_traffic_until_it_expires() {
    let mut lab = Lab::new();
    lab.start_default();

    let (internal, ext, lifetime) = natpmp_crate_map(&lab.lan, GW_LAN, Proto::Udp, 6000, 0, 2);
    assert_eq!(internal, 6000);
    assert!(
        ext >= 1024,
        "suggested port 0 must give a high port, got {ext}"
    );
    assert!(
        (1..=2).contains(&lifetime),
        "granted lifetime {lifetime} for a request of 2 s"
    );

    let lan_sock = udp_socket(&lab.lan, SocketAddrV4::new(LAN_HOST, 6000));
    let inet_sock = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST, 0));
    assert!(
        delivered(&inet_sock, &lan_sock, ext, b"while mapped"),
        "UDP did not reach the LAN host"
    );
    // And the LAN host's answer goes back through the same mapping.
    lan_sock
        .send_to(b"answer", inet_sock.local_addr().unwrap())
        .unwrap();
    let (b, from) = recv(&inet_sock).expect("no answer from the LAN host");
    assert_eq!(b, b"answer");
    assert_eq!(
        from,
        SocketAddrV4::new(GW_EXT, ext).into(),
        "answer left from the wrong address"
    );

    // Expiry: gone from the table, and nothing passes any more, neither the open flow
    // (conntrack entry) nor a new one.
    thread::sleep(Duration::from_secs(4));
    let left = lab.mappings();
    assert!(
        !left.iter().any(|e| e["dst-port"] == ext),
        "expired mapping still listed: {left:?}"
    );
    assert!(
        !delivered(&inet_sock, &lan_sock, ext, b"after expiry, old flow"),
        "datagrams of the already-open flow still reach the LAN host after expiry \
         (conntrack entry not removed?)"
    );
    let fresh = udp_socket(&lab.inet, SocketAddrV4::new(INET_HOST, 0));
    assert!(
        !delivered(&fresh, &lan_sock, ext, b"after expiry, new flow"),
        "a new flow still reaches the LAN host after expiry"
    );
}

#[test]
fn natpmp_crate_renewal_keeps_the_port_and_lifetime_is_capped() {
    let mut lab = Lab::new();
    lab.start_daemon(&DaemonConfig {
        max_lifetime: 100,
        ..DaemonConfig::default()
    });

    let (_, ext, lifetime) = natpmp_crate_map(&lab.lan, GW_LAN, Proto::Tcp, 6100, 43000, 7200);
    assert!(
        lifetime > 0 && lifetime <= 100,
        "max-lifetime 100 not applied: {lifetime}"
    );
    // Renewal as RFC clients do it: same request suggesting the granted port.
    let (_, again, _) = natpmp_crate_map(&lab.lan, GW_LAN, Proto::Tcp, 6100, ext, 50);
    assert_eq!(again, ext, "renewal moved the mapping");
    // A re-request suggesting another port still returns the existing mapping.
    let (_, third, l3) = natpmp_crate_map(&lab.lan, GW_LAN, Proto::Tcp, 6100, 44000, 30);
    assert_eq!(
        third, ext,
        "a re-request for the same internal port got a second mapping"
    );
    assert!(l3 <= 30, "lifetime {l3} longer than the 30 s asked");
    let maps = lab.mappings();
    assert_eq!(
        maps.iter().filter(|e| e["to-ports"] == 6100).count(),
        1,
        "renewals created duplicates: {maps:?}"
    );
}
