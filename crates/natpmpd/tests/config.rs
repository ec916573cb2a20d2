//! The configuration file: the documented example, defaults, and every kind of error, each
//! checked for the key path and the line it names.

mod config_support;

use config_support::{expect_error, parse};
use natpmpd::config::{Backend, Config, InterfaceConfig, InterfaceKind};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

const EXAMPLE: &str = r#"enabled = true                      # default false, as in RouterOS: then nothing is answered
lease-file = "/var/lib/natpmpd/leases.json"
control-socket = "/run/natpmpd/natpmpd.sock"

[[interfaces]]
interface = "ether1"
type = "external"                   # external | internal
forced-ip = "203.0.113.7"           # optional: which address of the external interface is public
disabled = false

[[interfaces]]
interface = "ether2"
type = "internal"
"#;

/// The minimal enabled configuration, for tests that add one key to it.
const MINIMAL: &str = r#"enabled = true

[[interfaces]]
interface = "ether1"
type = "external"

[[interfaces]]
interface = "ether2"
type = "internal"
"#;

#[test]
fn example_parses_with_its_values_and_defaults() {
    let c = parse(EXAMPLE);
    assert!(c.enabled);
    assert_eq!(c.lease_file, PathBuf::from("/var/lib/natpmpd/leases.json"));
    assert_eq!(c.control_socket, PathBuf::from("/run/natpmpd/natpmpd.sock"));
    assert_eq!(c.control_socket_group, None);
    assert_eq!(c.backend, Backend::Nftables);
    assert_eq!(c.port_range, 1024..=65535);
    assert_eq!(c.max_lifetime, 86400);
    assert_eq!(c.max_mappings_per_client, 256);
    assert!(!c.keep_forwards_on_exit);
    assert_eq!(
        c.interfaces,
        vec![
            InterfaceConfig {
                interface: "ether1".into(),
                kind: InterfaceKind::External,
                forced_ip: Some(Ipv4Addr::new(203, 0, 113, 7)),
                disabled: false,
            },
            InterfaceConfig {
                interface: "ether2".into(),
                kind: InterfaceKind::Internal,
                forced_ip: None,
                disabled: false,
            },
        ]
    );
    assert_eq!(c.external().map(|i| i.interface.as_str()), Some("ether1"));
    let internals: Vec<_> = c.internals().map(|i| i.interface.as_str()).collect();
    assert_eq!(internals, ["ether2"]);
}

#[test]
fn every_key_set() {
    let c = parse(
        r#"
enabled = true
lease-file = "/tmp/l.json"
control-socket = "/tmp/c.sock"
control-socket-group = "natpmp"
backend = "none"
port-range = "20000-29999"
max-lifetime = 3600
max-mappings-per-client = 16
keep-forwards-on-exit = true
pcp = false
pcp-peer = false
pcp-min-lifetime = 300
pcp-max-filters = 4

[[interfaces]]
interface = "wan0"
type = "external"

[[interfaces]]
interface = "wan1"
type = "external"
disabled = true

[[interfaces]]
interface = "br-lan"
type = "internal"

[[interfaces]]
interface = "eth0.100"
type = "internal"

[[interfaces]]
interface = "eth3"
type = "internal"
disabled = true
"#,
    );
    assert_eq!(c.lease_file, Path::new("/tmp/l.json"));
    assert_eq!(c.control_socket, Path::new("/tmp/c.sock"));
    assert_eq!(c.control_socket_group.as_deref(), Some("natpmp"));
    assert_eq!(c.backend, Backend::None);
    assert_eq!(c.port_range, 20000..=29999);
    assert_eq!(c.max_lifetime, 3600);
    assert_eq!(c.max_mappings_per_client, 16);
    assert!(c.keep_forwards_on_exit);
    assert_eq!(c.interfaces.len(), 5);
    assert_eq!(c.external().unwrap().interface, "wan0");
    let internals: Vec<_> = c.internals().map(|i| i.interface.as_str()).collect();
    assert_eq!(internals, ["br-lan", "eth0.100"]);

    assert!(!c.pcp);
    assert!(!c.pcp_peer);
    assert_eq!(c.pcp_min_lifetime, 300);
    assert_eq!(c.pcp_max_filters, 4);

    let g = c.gateway_config(42);
    assert!(g.enabled);
    assert_eq!(g.engine.port_range, 20000..=29999);
    assert_eq!(g.engine.max_lifetime, 3600);
    assert_eq!(g.engine.pcp_min_lifetime, 300);
    assert_eq!(g.engine.max_filters, 4);
    assert_eq!(g.engine.max_mappings_per_client, 16);
    assert_eq!(g.engine.seed, 42);
    assert!(!g.pcp);
    assert!(!g.pcp_policy.peer);
    assert_eq!(g.external.unwrap().name, "wan0");
    assert_eq!(g.internal, ["br-lan", "eth0.100"]);
    // backend = "none": nothing to compare the kernel with.
    assert!(!g.drift_check);
}

#[test]
fn pcp_is_on_by_default_with_the_rfc_minimum_lifetime() {
    let c = parse(MINIMAL);
    assert!(c.pcp && c.pcp_peer);
    assert_eq!(c.pcp_min_lifetime, 120);
    assert_eq!(c.pcp_max_filters, 8);
    let g = c.gateway_config(1);
    assert!(g.pcp && g.pcp_policy.peer && g.drift_check);
}

#[test]
fn connection_mark_is_one_bit() {
    assert_eq!(parse(MINIMAL).connection_mark, 0x0010_0000);
    let c = parse("connection-mark = 0x00000100\n");
    assert_eq!(c.connection_mark, 0x100);
    assert_eq!(c.gateway_config(1).connection_mark, 0x100);
    expect_error(
        "connection-mark = 0x00300000\n",
        1,
        "connection-mark",
        "sets 2 bits; natpmpd sets exactly one bit",
    );
    expect_error(
        "connection-mark = 0\n",
        1,
        "connection-mark",
        "out of range",
    );
    expect_error(
        "connection-mark = \"0x100\"\n",
        1,
        "connection-mark",
        "an integer",
    );
}

#[test]
fn pcp_keys_are_checked() {
    expect_error("pcp = \"yes\"\n", 1, "pcp", "boolean");
    expect_error("pcp-peer = 1\n", 1, "pcp-peer", "boolean");
    expect_error(
        "pcp-min-lifetime = 0\n",
        1,
        "pcp-min-lifetime",
        "out of range",
    );
    expect_error(
        "pcp-max-filters = 0\n",
        1,
        "pcp-max-filters",
        "out of range",
    );
    expect_error("pcp-max-filters = 65\n", 1, "pcp-max-filters", "1 to 64");
    expect_error(
        "max-lifetime = 600\npcp-min-lifetime = 601\n",
        2,
        "pcp-min-lifetime",
        "longer than max-lifetime (600)",
    );
    // Order in the file does not matter.
    expect_error(
        "pcp-min-lifetime = 601\nmax-lifetime = 600\n",
        1,
        "pcp-min-lifetime",
        "longer than max-lifetime",
    );
    assert_eq!(
        parse("pcp-min-lifetime = 600\nmax-lifetime = 600\n").pcp_min_lifetime,
        600
    );
}

#[test]
fn empty_file_is_the_defaults_and_disabled() {
    let c = parse("");
    assert_eq!(c, Config::default());
    assert!(!c.enabled);
    assert!(c.external().is_none());
    assert_eq!(c.internals().count(), 0);
}

#[test]
fn disabled_service_needs_no_interfaces() {
    let c = parse("enabled = false\n");
    assert!(!c.enabled);
}

#[test]
fn unknown_top_level_key() {
    expect_error(
        "enabled = false\nfrobnicate = 1\n",
        2,
        "frobnicate",
        "unknown key",
    );
}

#[test]
fn unknown_key_in_an_interface() {
    expect_error(
        "[[interfaces]]\ninterface = \"ether1\"\ntype = \"external\"\n\n[[interfaces]]\n\
         interface = \"ether2\"\ntype = \"internal\"\nmtu = 1500\n",
        8,
        "interfaces[1].mtu",
        "unknown key",
    );
}

#[test]
fn snake_case_key_gets_a_hint() {
    expect_error(
        "max_lifetime = 60\n",
        1,
        "max_lifetime",
        "did you mean `max-lifetime`",
    );
}

#[test]
fn wrong_types() {
    let e = expect_error("enabled = \"yes\"\n", 1, "enabled", "expected a boolean");
    assert_eq!(e.column(), Some(11));
    expect_error("lease-file = 5\n", 1, "lease-file", "expected a string");
    expect_error(
        "max-lifetime = \"1h\"\n",
        1,
        "max-lifetime",
        "expected an integer",
    );
    expect_error("port-range = 1024\n", 1, "port-range", "expected a string");
    expect_error(
        "keep-forwards-on-exit = 1\n",
        1,
        "keep-forwards-on-exit",
        "expected a boolean",
    );
    expect_error(
        "[[interfaces]]\ninterface = \"e\"\ntype = \"internal\"\ndisabled = \"no\"\n",
        4,
        "interfaces[0].disabled",
        "expected a boolean",
    );
    expect_error(
        "[[interfaces]]\ninterface = 1\ntype = \"internal\"\n",
        2,
        "interfaces[0].interface",
        "expected a string",
    );
}

#[test]
fn interfaces_must_be_an_array_of_tables() {
    expect_error(
        "[interfaces]\ninterface = \"ether1\"\n",
        1,
        "interfaces",
        "array of tables",
    );
    expect_error("interfaces = [1]\n", 1, "interfaces[0]", "expected a table");
}

#[test]
fn bad_forced_ip() {
    let e = expect_error(
        &MINIMAL.replace(
            "type = \"external\"",
            "type = \"external\"\nforced-ip = \"203.0.113\"",
        ),
        6,
        "interfaces[0].forced-ip",
        "\"203.0.113\" is not an IPv4 address",
    );
    assert_eq!(e.column(), Some(13));
    expect_error(
        &MINIMAL.replace(
            "type = \"external\"",
            "type = \"external\"\nforced-ip = \"2001:db8::1\"",
        ),
        6,
        "interfaces[0].forced-ip",
        "not an IPv4 address",
    );
}

#[test]
fn bad_port_ranges() {
    for (range, needle) in [
        ("\"0-100\"", "0 is not a port"),
        ("\"1024-70000\"", "70000 is not a port"),
        (
            "\"2000-1000\"",
            "the low port 2000 is above the high port 1000",
        ),
        ("\"low-high\"", "\"low\" is not a port number"),
        ("\"\"", "expected \"LOW-HIGH\""),
    ] {
        expect_error(
            &format!("enabled = false\nport-range = {range}\n"),
            2,
            "port-range",
            needle,
        );
    }
    assert_eq!(parse("port-range = \"5351\"\n").port_range, 5351..=5351);
}

#[test]
fn numbers_must_be_positive_and_fit() {
    expect_error("max-lifetime = 0\n", 1, "max-lifetime", "out of range");
    expect_error("max-lifetime = -5\n", 1, "max-lifetime", "out of range");
    expect_error(
        "max-lifetime = 4294967296\n",
        1,
        "max-lifetime",
        "out of range",
    );
    expect_error(
        "max-mappings-per-client = 0\n",
        1,
        "max-mappings-per-client",
        "out of range",
    );
    assert_eq!(parse("max-lifetime = 4294967295\n").max_lifetime, u32::MAX);
}

#[test]
fn bad_enumerations() {
    expect_error("backend = \"iptables\"\n", 1, "backend", "not a backend");
    expect_error(
        "[[interfaces]]\ninterface = \"ether1\"\ntype = \"wan\"\n",
        3,
        "interfaces[0].type",
        "\"wan\" is not an interface type",
    );
}

#[test]
fn bad_interface_names() {
    for name in ["", "ether 1", "a-name-longer-than-15", "..", "eth0/1"] {
        expect_error(
            &format!("[[interfaces]]\ninterface = {name:?}\ntype = \"internal\"\n"),
            2,
            "interfaces[0].interface",
            "not an interface name",
        );
    }
}

#[test]
fn missing_required_interface_keys() {
    expect_error(
        "enabled = false\n\n[[interfaces]]\ntype = \"internal\"\n",
        3,
        "interfaces[0]",
        "missing the required key `interface`",
    );
    expect_error(
        "enabled = false\n\n[[interfaces]]\ninterface = \"ether2\"\n",
        3,
        "interfaces[0]",
        "missing the required key `type`",
    );
}

#[test]
fn two_enabled_external_interfaces_name_the_second() {
    let text = format!("{MINIMAL}\n[[interfaces]]\ninterface = \"ether3\"\ntype = \"external\"\n");
    expect_error(
        &text,
        13,
        "interfaces[2].type",
        "a second enabled external interface (\"ether3\"); interfaces[0] (\"ether1\", line 5)",
    );
    // A disabled second external interface is fine: it is a standby, as in RouterOS.
    let standby = format!("{text}disabled = true\n");
    assert_eq!(parse(&standby).external().unwrap().interface, "ether1");
}

#[test]
fn forced_ip_on_an_internal_interface() {
    expect_error(
        &MINIMAL.replace(
            "type = \"internal\"",
            "type = \"internal\"\nforced-ip = \"192.168.88.1\"",
        ),
        10,
        "interfaces[1].forced-ip",
        "only allowed on an interface with type = \"external\"",
    );
}

#[test]
fn the_same_interface_twice() {
    let text = format!("{MINIMAL}\n[[interfaces]]\ninterface = \"ether2\"\ntype = \"internal\"\n");
    expect_error(
        &text,
        12,
        "interfaces[2].interface",
        "\"ether2\" is listed twice (first as interfaces[1], line 8)",
    );
}

#[test]
fn enabled_without_an_external_interface() {
    expect_error(
        "# service on\nenabled = true\n\n[[interfaces]]\ninterface = \"ether2\"\ntype = \"internal\"\n",
        2,
        "enabled",
        "type = \"external\"",
    );
    // A disabled one does not count.
    expect_error(
        &MINIMAL.replace(
            "type = \"external\"",
            "type = \"external\"\ndisabled = true",
        ),
        1,
        "enabled",
        "type = \"external\"",
    );
}

#[test]
fn enabled_without_an_internal_interface() {
    expect_error(
        "enabled = true\n[[interfaces]]\ninterface = \"ether1\"\ntype = \"external\"\n",
        1,
        "enabled",
        "type = \"internal\"",
    );
}

#[test]
fn control_socket_path_limits() {
    let long = format!("/run/{}/s.sock", "x".repeat(120));
    expect_error(
        &format!("control-socket = {long:?}\n"),
        1,
        "control-socket",
        "limited to 107",
    );
    expect_error(
        "control-socket = \"\"\n",
        1,
        "control-socket",
        "not a file path",
    );
    expect_error(
        "control-socket-group = \"a b\"\n",
        1,
        "control-socket-group",
        "not a group name",
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let e = Config::parse("enabled = true\nport-range = \"1-2\n", "x.toml").unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert_eq!(e.key(), None);
    assert!(e.to_string().starts_with("x.toml:2:"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e:?}");

    // TOML itself refuses a key given twice.
    let e = Config::parse("enabled = true\nenabled = false\n", "x.toml").unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn first_error_in_document_order() {
    // Keys are stored sorted by name; the error must still be the first one in the file.
    expect_error("zzz = 1\naaa = 2\n", 1, "zzz", "unknown key");
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("natpmpd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    assert_eq!(Config::load(&good).unwrap(), parse(EXAMPLE));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "enabled = 1\n").unwrap();
    let e = Config::load(&bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:11: enabled: ", bad.display())),
        "{e}"
    );

    let missing = dir.join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.line(), None);
    assert_eq!(e.origin(), missing.display().to_string());
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{e}"
    );
    assert!(e.to_string().contains("No such file or directory"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn access_rules_and_reserved_ports_parse_in_order() {
    use natpmp_pcp_core::engine::access::{Action, PortRange};
    use natpmp_pcp_core::Protocol;
    let text = format!(
        r#"reserved-ports = [1194, "51820", "8000-8100"]
{MINIMAL}
[[access]]
action = "allow"
clients = ["192.168.88.10", "2001:db8:1::/64"]
external-ports = ["40000-40099"]
comment = "the game console"

[[access]]
action = "deny"
protocols = ["udp"]
internal-ports = [53, "67-68"]
"#
    );
    let c = parse(&text);
    assert_eq!(
        c.reserved_ports,
        vec![
            PortRange::single(1194),
            PortRange::single(51820),
            PortRange::new(8000, 8100)
        ]
    );
    let rules = &c.access.0;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].action, Action::Allow);
    assert_eq!(
        rules[0]
            .clients
            .iter()
            .map(|p| format!("{}/{}", p.addr(), p.prefix_len()))
            .collect::<Vec<_>>(),
        vec!["192.168.88.10/32", "2001:db8:1::/64"]
    );
    assert_eq!(rules[0].external_ports, vec![PortRange::new(40000, 40099)]);
    assert!(rules[0].protocols.is_empty() && rules[0].internal_ports.is_empty());
    assert_eq!(rules[1].action, Action::Deny);
    assert_eq!(rules[1].protocols, vec![Protocol::Udp]);
    assert_eq!(
        rules[1].internal_ports,
        vec![PortRange::single(53), PortRange::new(67, 68)]
    );
    // They reach the engine as they are.
    let g = c.gateway_config(0);
    assert_eq!(g.engine.access, c.access);
    assert_eq!(g.engine.reserved_ports, c.reserved_ports);
}

#[test]
fn bad_access_rules_name_the_rule_the_key_and_the_line() {
    let rule = |body: &str| format!("{MINIMAL}\n[[access]]\n{body}\n");
    // MINIMAL is 9 lines; a blank line, then `[[access]]` on line 11 and the body from 12.
    expect_error(
        &rule("clients = [\"10.0.0.1\"]"),
        11,
        "access[0]",
        "missing `action`",
    );
    expect_error(
        &rule("action = \"drop\""),
        12,
        "access[0].action",
        "\"allow\" or \"deny\"",
    );
    expect_error(
        &rule("action = \"deny\"\nclients = [\"192.168.88.0/33\"]"),
        13,
        "access[0].clients[0]",
        "prefix length",
    );
    expect_error(
        &rule("action = \"deny\"\nclients = [\"192.168.88.1/24\"]"),
        13,
        "access[0].clients[0]",
        "host bits set; the prefix is 192.168.88.0/24",
    );
    expect_error(
        &rule("action = \"deny\"\nclients = [\"lan\"]"),
        13,
        "access[0].clients[0]",
        "is not an address",
    );
    expect_error(
        &rule("action = \"deny\"\nprotocols = [\"icmp\"]"),
        13,
        "access[0].protocols[0]",
        "\"tcp\" or \"udp\"",
    );
    expect_error(
        &rule("action = \"deny\"\nexternal-ports = [\"9-1\"]"),
        13,
        "access[0].external-ports[0]",
        "above the high port",
    );
    expect_error(
        &rule("action = \"deny\"\ninternal-ports = [70000]"),
        13,
        "access[0].internal-ports[0]",
        "out of range",
    );
    expect_error(
        &rule("action = \"deny\"\nclients = []"),
        13,
        "access[0].clients",
        "leave the key out",
    );
    expect_error(
        &rule("action = \"deny\"\nclient = [\"10.0.0.1\"]"),
        13,
        "access[0].client",
        "unknown key",
    );
    expect_error(
        &format!("reserved-ports = [\"x\"]\n{MINIMAL}"),
        1,
        "reserved-ports[0]",
        "not a port",
    );
    expect_error(
        &format!("access = 1\n{MINIMAL}"),
        1,
        "access",
        "array of tables ([[access]])",
    );
}
