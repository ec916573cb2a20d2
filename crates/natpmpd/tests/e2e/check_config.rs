//! End-to-end: `natpmpd --check-config` validates a file and names the key and line of an
//! error. No namespace or root needed.

use std::path::PathBuf;
use std::process::Command;

/// Writes `text` to a temporary file, runs `natpmpd --check-config` on it and removes it.
/// Returns (exit status was success, stdout + stderr).
fn check(name: &str, text: &str) -> (bool, String) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("npd-check-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_natpmpd"))
        .arg("--check-config")
        .arg(&path)
        .output()
        .expect("run natpmpd --check-config");
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const GOOD: &str = r#"enabled = true
lease-file = "/tmp/npd-check/leases.json"
control-socket = "/tmp/npd-check/natpmpd.sock"
backend = "nftables"
port-range = "1024-65535"
max-lifetime = 86400
max-mappings-per-client = 256

[[interfaces]]
interface = "ether1"
type = "external"

[[interfaces]]
interface = "ether2"
type = "internal"
disabled = false
"#;

fn names_line(text: &str, line: u32) -> bool {
    text.contains(&format!("line {line}")) || text.contains(&format!(":{line}:"))
}

#[test]
fn check_config_accepts_a_good_file() {
    let (ok, text) = check("good.toml", GOOD);
    assert!(ok, "a valid config was rejected:\n{text}");
}

#[test]
fn check_config_rejects_an_unknown_key_naming_key_and_line() {
    let bad = GOOD.replace(
        "max-lifetime = 86400\n",
        "max-lifetime = 86400\nbogus-key = 5\n",
    );
    let (ok, text) = check("unknown.toml", &bad);
    assert!(!ok, "an unknown key was accepted:\n{text}");
    assert!(
        text.contains("bogus-key"),
        "message does not name the key:\n{text}"
    );
    assert!(
        names_line(&text, 7),
        "message does not name line 7:\n{text}"
    );
}

#[test]
fn check_config_rejects_a_wrong_type_naming_key_and_line() {
    let bad = GOOD.replace("max-lifetime = 86400", "max-lifetime = \"a day\"");
    let (ok, text) = check("type.toml", &bad);
    assert!(!ok, "a string lifetime was accepted:\n{text}");
    assert!(
        text.contains("max-lifetime"),
        "message does not name the key:\n{text}"
    );
    assert!(
        names_line(&text, 6),
        "message does not name line 6:\n{text}"
    );
}

#[test]
fn check_config_rejects_a_bad_interface_type_naming_the_line() {
    let bad = GOOD.replace("type = \"internal\"", "type = \"sideways\"");
    let (ok, text) = check("iftype.toml", &bad);
    assert!(!ok, "interface type `sideways` was accepted:\n{text}");
    assert!(
        text.contains("type") && names_line(&text, 15),
        "message does not name key and line 15:\n{text}"
    );
}
