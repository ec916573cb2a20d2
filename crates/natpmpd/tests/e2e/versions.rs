//! End-to-end: version dispatch on the wire. With PCP on (the default), version 2 is answered
//! as PCP and versions 1 and 3+ get PCP's UNSUPP_VERSION naming version 2; with `pcp = false`,
//! every version but 0 gets the 8-byte NAT-PMP Unsupported Version reply. Packets too short to
//! parse get nothing.

use std::net::SocketAddrV4;

use crate::lab::*;

/// A PCP MAP request (RFC 6887 §11.1), 60 bytes, from 192.168.88.10 for TCP 8080.
fn pcp_map() -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 2; // version
    p[1] = 1; // MAP
    p[4..8].copy_from_slice(&7200u32.to_be_bytes());
    p[8..24].copy_from_slice(&LAN_HOST.to_ipv6_mapped().octets());
    p[24..36].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // nonce
    p[36] = 6; // TCP
    p[40..42].copy_from_slice(&8080u16.to_be_bytes());
    p
}

fn assert_unsupported_version(what: &str, reply: Option<(Vec<u8>, std::net::SocketAddr)>) {
    let (b, from) = reply.unwrap_or_else(|| panic!("{what}: no reply"));
    assert_eq!(
        from,
        SocketAddrV4::new(GW_LAN, NATPMP_PORT).into(),
        "{what}: reply source"
    );
    assert_eq!(b.len(), 8, "{what}: reply must be 8 bytes, got {b:02x?}");
    assert_eq!(&b[..4], &[0x00, 0x80, 0x00, 0x01], "{what}: reply {b:02x?}");
}

/// A PCP UNSUPP_VERSION (RFC 6887 §9): version 2 (the nearest supported), R set, result 1,
/// the long error lifetime, at least a whole header.
fn assert_pcp_unsupported_version(what: &str, reply: Option<(Vec<u8>, std::net::SocketAddr)>) {
    let (b, from) = reply.unwrap_or_else(|| panic!("{what}: no reply"));
    assert_eq!(
        from,
        SocketAddrV4::new(GW_LAN, NATPMP_PORT).into(),
        "{what}: source"
    );
    assert!(
        b.len() >= 24 && b.len().is_multiple_of(4),
        "{what}: length {}: {b:02x?}",
        b.len()
    );
    assert_eq!(b[0], 2, "{what}: version {b:02x?}");
    assert!(b[1] & 0x80 != 0, "{what}: R bit {b:02x?}");
    assert_eq!(b[3], 1, "{what}: result {b:02x?}");
    assert_eq!(
        &b[4..8],
        &1800u32.to_be_bytes(),
        "{what}: lifetime {b:02x?}"
    );
}

#[test]
fn with_pcp_on_version_2_is_pcp_and_others_hear_of_version_2() {
    let mut lab = Lab::new();
    lab.start_default();
    let to = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
    let (b, _) = udp_exchange(&lab.lan, LAN_HOST, to, &pcp_map()).expect("no reply to PCP MAP");
    assert_eq!(b.len(), 60, "{b:02x?}");
    assert_eq!(&b[..4], &[2, 0x81, 0, 0], "PCP MAP success: {b:02x?}");
    let v1 = [1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_pcp_unsupported_version("version 1", udp_exchange(&lab.lan, LAN_HOST, to, &v1));
    let mut v3 = pcp_map();
    v3[0] = 3;
    assert_pcp_unsupported_version("version 3", udp_exchange(&lab.lan, LAN_HOST, to, &v3));
    // The MAP made one mapping, shown as PCP's.
    let m = lab.mappings();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0]["via"], "pcp");
    assert_eq!(m[0]["to-ports"], 8080);
}

#[test]
fn with_pcp_off_pcp_and_version_1_requests_get_the_natpmp_unsupported_version_reply() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), "pcp = false\n");
    let to = SocketAddrV4::new(GW_LAN, NATPMP_PORT);

    assert_unsupported_version("PCP MAP", udp_exchange(&lab.lan, LAN_HOST, to, &pcp_map()));
    let mut announce = vec![0u8; 24];
    announce[0] = 2;
    announce[8..24].copy_from_slice(&LAN_HOST.to_ipv6_mapped().octets());
    assert_unsupported_version(
        "PCP ANNOUNCE",
        udp_exchange(&lab.lan, LAN_HOST, to, &announce),
    );
    let v1 = [1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_unsupported_version("version 1", udp_exchange(&lab.lan, LAN_HOST, to, &v1));

    // Nothing was created by any of them.
    assert!(lab.mappings().is_empty(), "{:?}", lab.mappings());
}

#[test]
fn packets_too_short_or_marked_as_responses_get_no_reply() {
    let mut lab = Lab::new();
    lab.start_default();
    let to = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
    for (what, payload) in [
        ("1 byte 00", vec![0u8]),
        ("1 byte 02", vec![2u8]),
        (
            "short tcp map",
            vec![0u8, 2, 0, 0, 0x1f, 0x90, 0x1f, 0x90, 0, 0],
        ),
        (
            "response opcode 0x80",
            vec![0u8, 0x80, 0, 0, 0, 0, 0, 1, 203, 0, 113, 9],
        ),
    ] {
        let r = udp_exchange(&lab.lan, LAN_HOST, to, &payload);
        assert!(r.is_none(), "{what}: unexpected reply {r:?}");
    }
    // The daemon is still alive and answering.
    lab.wait_ready();
}

#[test]
fn unknown_opcode_gets_result_5() {
    let mut lab = Lab::new();
    lab.start_default();
    let to = SocketAddrV4::new(GW_LAN, NATPMP_PORT);
    let (b, _) = udp_exchange(&lab.lan, LAN_HOST, to, &[0, 3]).expect("no reply to opcode 3");
    assert!(b.len() >= 4, "{b:02x?}");
    assert_eq!(&b[..4], &[0, 0x83, 0, 5], "{b:02x?}");
}
