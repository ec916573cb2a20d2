//! Opcode 0, the external-address request (rfc-checklist §2 C items 11–13, §4 cases 3, 62).

mod common;
use common::*;

#[test]
fn external_address_reply_is_p2_with_the_address_bytes() {
    // §1.1 example: `00 80 0000 ssssssss CB 00 71 05` for 203.0.113.5.
    let mut gw = Gw::new();
    gw.advance_secs(0x0102);
    let r = gw.reply(A, &addr_request());
    assert_bytes(
        &r,
        &[
            0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0xCB, 0x00, 0x71, 0x05,
        ],
    );
}

#[test]
fn external_address_request_stages_no_changes_and_creates_nothing() {
    let mut gw = Gw::new();
    gw.reply(A, &addr_request());
    assert!(gw.changes.is_empty());
    assert!(gw.mappings().is_empty());
    assert!(gw.elements().is_empty());
}

#[test]
fn external_address_without_address_is_result_3_and_zero_address() {
    // §2 C items 12–13, §4 case 62: result 3 Network Failure, address 0.0.0.0.
    let mut gw = Gw::without_address();
    gw.advance_secs(12);
    let r = gw.reply(A, &addr_request());
    assert_bytes(
        &r,
        &[0x00, 0x80, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0C, 0, 0, 0, 0],
    );
}

#[test]
fn external_address_after_address_is_lost_is_result_3_and_zero_address() {
    let mut gw = Gw::new();
    gw.advance_secs(30);
    gw.set_address(None);
    gw.advance_secs(2);
    let r = gw.reply(A, &addr_request());
    assert_bytes(
        &r,
        &addr_reply(NETWORK_FAILURE, gw.sssoe(), std::net::Ipv4Addr::UNSPECIFIED),
    );
}

#[test]
fn external_address_reply_follows_address_change() {
    // §2 J item 51: the new address is reported, with the epoch restarted at the change.
    let mut gw = Gw::new();
    gw.advance_secs(100);
    gw.set_address(Some(EXT2));
    gw.advance_secs(7);
    let r = gw.reply(B, &addr_request());
    assert_bytes(&r, &addr_reply(SUCCESS, 7, EXT2));
}

#[test]
fn external_address_appears_after_startup_without_one() {
    let mut gw = Gw::without_address();
    gw.advance_secs(5);
    assert_bytes(
        &gw.reply(A, &addr_request()),
        &addr_reply(NETWORK_FAILURE, 5, std::net::Ipv4Addr::UNSPECIFIED),
    );
    gw.set_address(Some(EXT));
    gw.advance_secs(1);
    assert_bytes(&gw.reply(A, &addr_request()), &addr_reply(SUCCESS, 1, EXT));
}

#[test]
fn external_address_is_the_same_for_every_client() {
    let mut gw = Gw::new();
    for client in [A, B, C] {
        assert_bytes(
            &gw.reply(client, &addr_request()),
            &addr_reply(SUCCESS, 0, EXT),
        );
    }
}

#[test]
fn server_reports_the_address_it_was_given() {
    let mut gw = Gw::without_address();
    assert_eq!(gw.gateway.engine().external_address(), None);
    gw.set_address(Some(EXT));
    assert_eq!(gw.gateway.engine().external_address(), Some(EXT));
    gw.set_address(Some(EXT2));
    assert_eq!(gw.gateway.engine().external_address(), Some(EXT2));
    gw.set_address(None);
    assert_eq!(gw.gateway.engine().external_address(), None);
}
