//! Requests built from structured fields read off the fuzzer input: NAT-PMP and PCP requests
//! whose fields come mostly from small sets of values that collide with each other (so the
//! fuzzer reaches renewals, conflicts, quotas and deletes quickly), or raw bytes.

use super::input::Input;
use crate::wire::pcp::option;
use std::net::{IpAddr, Ipv6Addr};

/// Internal and suggested external ports: a few shared values, the reserved ones, the ends.
const PORTS: [u16; 8] = [0, 1, 80, 5350, 5351, 8080, 5000, 65535];
/// Requested lifetimes: delete, tiny, below and at the PCP minimum, common, the cap, huge.
const LIFETIMES: [u32; 8] = [0, 1, 60, 120, 3600, 7200, 86400, u32::MAX];
/// PCP protocol numbers: all, TCP, UDP, and one natpmpd does not map.
const PROTOCOLS: [u8; 4] = [0, 6, 17, 132];

/// The 128-bit wire form of an address (IPv4 as IPv4-mapped, RFC 6887 §5).
pub fn wire_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Addresses a request may name as a suggested external address or a remote peer.
fn some_addr(input: &mut Input<'_>, client: IpAddr) -> [u8; 16] {
    match input.below(6) {
        0 => [0; 16],
        1 => wire_addr(client),
        2 => wire_addr(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5))),
        3 => wire_addr(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7))),
        4 => Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 9).octets(),
        _ => input.array(),
    }
}

/// One request from `client`.
pub fn request(input: &mut Input<'_>, client: IpAddr) -> Vec<u8> {
    match input.below(8) {
        0 => vec![0, 0],
        1 | 2 => natpmp_map(input),
        3 | 4 => pcp(input, client, 1),
        5 => pcp(input, client, 2),
        6 => pcp(input, client, 0),
        _ => input.bytes(1200).to_vec(),
    }
}

fn natpmp_map(input: &mut Input<'_>) -> Vec<u8> {
    let opcode = 1 + input.below(2) as u8;
    let mut b = vec![0, opcode, 0, 0];
    b.extend_from_slice(&input.pick_u16(&PORTS).to_be_bytes());
    b.extend_from_slice(&input.pick_u16(&PORTS).to_be_bytes());
    b.extend_from_slice(&input.pick_u32(&LIFETIMES).to_be_bytes());
    b
}

/// A PCP request: header (the client field mostly matching the source), opcode data for MAP
/// or PEER, then up to four options.
fn pcp(input: &mut Input<'_>, client: IpAddr, opcode: u8) -> Vec<u8> {
    let mut b = vec![2, opcode, 0, 0];
    b.extend_from_slice(&input.pick_u32(&LIFETIMES).to_be_bytes());
    let client_field = if input.u8() < 240 {
        wire_addr(client)
    } else {
        some_addr(input, client)
    };
    b.extend_from_slice(&client_field);
    if opcode != 0 {
        // Four nonces, so that owners collide and differ.
        b.extend_from_slice(&[input.below(4) as u8; 12]);
        let i = input.below(PROTOCOLS.len() + 1);
        b.push(PROTOCOLS.get(i).copied().unwrap_or_else(|| input.u8()));
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&input.pick_u16(&PORTS).to_be_bytes());
        b.extend_from_slice(&input.pick_u16(&PORTS).to_be_bytes());
        b.extend_from_slice(&some_addr(input, client));
    }
    if opcode == 2 {
        b.extend_from_slice(&input.pick_u16(&PORTS).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&some_addr(input, client));
    }
    for _ in 0..input.below(5) {
        pcp_option(input, client, &mut b);
    }
    b
}

fn pcp_option(input: &mut Input<'_>, client: IpAddr, out: &mut Vec<u8>) {
    match input.below(6) {
        0 => {
            let mut data = vec![0, input.u8()];
            data.extend_from_slice(&input.pick_u16(&PORTS).to_be_bytes());
            data.extend_from_slice(&some_addr(input, client));
            option::emit(out, option::FILTER, &data);
        }
        1 => option::emit(out, option::PREFER_FAILURE, &[]),
        2 => {
            let text = input.bytes(300);
            option::emit(out, option::DESCRIPTION, text);
        }
        3 => {
            let addr = some_addr(input, client);
            option::emit(out, option::THIRD_PARTY, &addr);
        }
        _ => {
            let code = input.u8();
            let data = input.bytes(64);
            option::emit(out, code, data);
        }
    }
}
