//! `metrics-listen`: off by default, an address and port when given, and a clear error naming
//! the key and the line otherwise.

use natpmpd::config::Config;

const BASE: &str = "enabled = true\n\n[[interfaces]]\ninterface = \"ether1\"\ntype = \"external\"\n\n[[interfaces]]\ninterface = \"ether2\"\ntype = \"internal\"\n";

fn with(line: &str) -> String {
    format!("{line}\n{BASE}")
}

#[test]
fn metrics_are_off_by_default() {
    let c = Config::parse(BASE, "/etc/natpmpd.toml").unwrap();
    assert_eq!(c.metrics_listen, None);
}

#[test]
fn metrics_listen_takes_an_address_and_port_of_either_family() {
    for (text, want) in [
        ("127.0.0.1:9851", "127.0.0.1:9851"),
        ("[::1]:9851", "[::1]:9851"),
        ("0.0.0.0:19851", "0.0.0.0:19851"),
    ] {
        let c = Config::parse(
            &with(&format!("metrics-listen = \"{text}\"")),
            "/etc/natpmpd.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.metrics_listen, Some(want.parse().unwrap()));
    }
}

#[test]
fn a_bad_metrics_listen_names_the_key_and_the_line() {
    for (value, needle) in [
        ("\"localhost:9851\"", "is not an address and port"),
        ("\"127.0.0.1\"", "is not an address and port"),
        ("\"127.0.0.1:99999\"", "is not an address and port"),
        ("\"127.0.0.1:0\"", "port 0"),
        ("9851", "string"),
    ] {
        // On line 3, after two other keys.
        let text =
            format!("# metrics\nlease-file = \"/tmp/l.json\"\nmetrics-listen = {value}\n{BASE}");
        let e = Config::parse(&text, "/etc/natpmpd.toml").unwrap_err();
        let message = e.to_string();
        assert_eq!(e.line(), Some(3), "{message}");
        assert_eq!(e.key(), Some("metrics-listen"), "{message}");
        assert!(message.starts_with("/etc/natpmpd.toml:3:"), "{message}");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

#[test]
fn a_misspelt_metrics_key_suggests_the_right_one() {
    let e = Config::parse(
        &with("metrics_listen = \"127.0.0.1:9851\""),
        "/etc/natpmpd.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("metrics-listen"), "{e}");
}
