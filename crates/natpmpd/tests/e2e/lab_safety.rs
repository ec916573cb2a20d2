//! Self-tests of the namespace lab (no daemon): the topology is wired as the other e2e files
//! assume, the internet host cannot reach the LAN by itself, and namespaces are removed again,
//! also when a test panics.

use std::net::{SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::lab::*;

#[test]
fn lab_topology_connects_neighbours_and_isolates_the_lan() {
    let lab = Lab::new();

    // lan -> gw (both of gw's LAN addresses), lan2 -> gw, inet -> gw.
    for (ns, src, dst) in [
        (&lab.lan, LAN_HOST, GW_LAN),
        (&lab.lan, LAN_HOST_SECOND, GW_LAN_SECOND),
        (&lab.lan2, LAN2_HOST, GW_LAN2),
        (&lab.inet, INET_HOST, GW_EXT),
    ] {
        let listener = tcp_listener(&lab.gw, SocketAddrV4::new(dst, 7000));
        let server = serve_tcp_once(listener, "gw", Duration::from_secs(3));
        let ns2 = ns.clone();
        let reply = in_ns(&ns2, move || -> std::io::Result<()> {
            // The source address exists in that namespace.
            std::net::UdpSocket::bind(SocketAddrV4::new(src, 0))?;
            TcpStream::connect_timeout(
                &SocketAddrV4::new(dst, 7000).into(),
                Duration::from_secs(2),
            )?;
            Ok(())
        });
        assert!(reply.is_ok(), "{ns} cannot reach {dst}: {reply:?}");
        assert!(server.join().unwrap().is_some());
    }

    // lan -> inet goes through gw's forwarding and masquerade.
    let listener = tcp_listener(&lab.inet, SocketAddrV4::new(INET_HOST, 7001));
    let server = serve_tcp_once(listener, "inet", Duration::from_secs(3));
    let reply = tcp_roundtrip(&lab.lan, SocketAddrV4::new(INET_HOST, 7001), "out").unwrap();
    assert_eq!(reply, "inet:out");
    let peer = server.join().unwrap().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(GW_EXT),
        "masquerade should hide the LAN host"
    );

    // inet has no route to the LAN: only forwards can reach it.
    let r = tcp_roundtrip(&lab.inet, SocketAddrV4::new(LAN_HOST, 7002), "in");
    assert!(r.is_err(), "inet reached the LAN without a forward: {r:?}");
}

#[test]
fn lab_removes_its_namespaces_even_after_a_panic() {
    let names = std::panic::catch_unwind(|| {
        let lab = Lab::new();
        let names = [
            lab.gw.clone(),
            lab.lan.clone(),
            lab.lan2.clone(),
            lab.inet.clone(),
        ];
        for n in &names {
            assert!(Path::new("/var/run/netns").join(n).exists(), "{n} missing");
        }
        std::panic::panic_any(names.to_vec());
    })
    .expect_err("the closure panics on purpose");
    let names = names.downcast::<Vec<String>>().expect("names");
    for n in names.iter() {
        assert!(
            !Path::new("/var/run/netns").join(n).exists(),
            "{n} left behind"
        );
    }
}

#[test]
fn natpmpc_output_parser_reads_the_mapping_line() {
    let out = "initnatpmp() returned 0 (SUCCESS)\nusing gateway : 192.168.88.1\n\
               sendpublicaddressrequest returned 2 (SUCCESS)\nreadnatpmpresponseorretry returned 0 (OK)\n\
               Public IP address : 203.0.113.1\nepoch = 3\n\
               sendnewportmappingrequest returned 12 (SUCCESS)\nreadnatpmpresponseorretry returned 0 (OK)\n\
               Mapped public port 40000 protocol TCP to local port 8080 liftime 3600\nepoch = 3\n";
    let m = parse_natpmpc(out).expect("parsed");
    assert_eq!(
        m,
        NatpmpcMapping {
            public_port: 40000,
            protocol: "TCP".into(),
            private_port: 8080,
            lifetime: 3600,
            public_ip: Some(GW_EXT),
        }
    );
}
