//! End-to-end: `[[access]]` rules. An allowed host's natpmpc mapping is confined to its ports
//! and carries traffic; a denied host (which natpmpc cannot speak for: it has no source
//! option, so raw NAT-PMP and PCP) gets result 2 and NOT_AUTHORIZED; PCP over IPv6 obeys the
//! same list.

use std::net::SocketAddrV4;

use crate::lab::pcp::{self, Request};
use crate::lab::*;

const RULES: &str = r#"
[[access]]
action = "deny"
clients = ["192.168.88.11"]
comment = "the guest laptop"

[[access]]
action = "allow"
clients = ["192.168.88.10"]
external-ports = ["40000-40009"]

[[access]]
action = "deny"
protocols = ["tcp"]
clients = ["2001:db8:1::/64"]
internal-ports = [22]

[[access]]
action = "deny"
clients = ["192.168.88.0/24"]
"#;

#[test]
fn denied_hosts_get_not_authorized_and_allowed_ones_stay_inside_their_ports() {
    let mut lab = Lab::new();
    lab.start_daemon_with(&DaemonConfig::default(), RULES);
    let _srv = tcp_echo_server(&lab.lan, SocketAddrV4::new(LAN_HOST, 8080), "lan-tcp");

    // LAN_HOST may have 40000-40009 only: a suggestion outside gets a port inside.
    let m = natpmpc_map(&lab.lan, GW_LAN, 8080, 8080, Proto::Tcp, 3600);
    assert!((40000..=40009).contains(&m.public_port), "{m:?}");
    assert!(tcp_probe(
        &lab.inet,
        SocketAddrV4::new(GW_EXT, m.public_port),
        "lan-tcp",
        std::time::Duration::from_secs(2)
    ));

    // The guest laptop (LAN_HOST_SECOND): NAT-PMP result 2 (Not Authorized) and nothing listed.
    let reply = map_raw(
        &lab.lan,
        LAN_HOST_SECOND,
        GW_LAN,
        Proto::Tcp,
        8081,
        8081,
        3600,
    );
    assert_eq!(reply.result, 2, "{reply:?}");
    let r = pcp::exchange(
        &lab.lan,
        LAN_HOST_SECOND,
        GW_LAN,
        &Request::map(LAN_HOST_SECOND, 0x22, pcp::TCP, 8081, 600),
    )
    .0
    .expect("a reply");
    assert_eq!((r.result, r.lifetime), (pcp::NOT_AUTHORIZED, 1800));

    // IPv6: SSH is denied for the LAN prefix, HTTPS is not.
    let ssh = Request::map(LAN_HOST6, 0x23, pcp::TCP, 22, 600);
    let r = pcp::exchange(&lab.lan, LAN_HOST6, GW_LAN6, &ssh)
        .0
        .expect("a reply");
    assert_eq!(r.result, pcp::NOT_AUTHORIZED);
    pcp::ok(
        &lab.lan,
        LAN_HOST6,
        GW_LAN6,
        &Request::map(LAN_HOST6, 0x23, pcp::TCP, 443, 600),
    );
    let listed = lab.mappings();
    assert_eq!(listed.len(), 2, "{listed:?}");
}
