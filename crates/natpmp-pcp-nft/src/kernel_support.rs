//! Which kernels can hold natpmpd's table, and what to tell the operator of one that cannot.
//!
//! The prerouting rules test `meta l4proto . th dport @inbound` (is there a mapping?) before
//! they mark the connection and DNAT it through the same map. A lookup of a map without
//! taking its value is what Linux refuses before 6.5 ("netfilter: nf_tables: relax set/map
//! validation checks"): on Debian 12's own 6.1 kernel `nft -f` fails with "Invalid argument"
//! on those rules and natpmpd cannot start. Found on a Debian 12 VM by scripts/systemd-vm.sh.
//! Until the ruleset keeps a plain set of the mapped ports beside the map, natpmpd needs 6.5,
//! and says so when the table is refused on an older kernel.

/// The first kernel that accepts the table.
pub const MINIMUM: (u32, u32) = (6, 5);

/// The major and minor number of a kernel release string such as `6.1.0-50-amd64`.
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What to add to nft's refusal `message` on kernel `release`, if the kernel is the reason.
pub fn hint(release: &str, message: &str) -> Option<String> {
    let v = version(release)?;
    (v < MINIMUM && message.contains("Invalid argument")).then(|| {
        format!(
            "this kernel ({release}) is older than Linux {}.{}, which natpmpd's table needs \
             (it looks its maps up as sets); on Debian 12 install the bookworm-backports \
             kernel: apt install -t bookworm-backports linux-image-amd64, then reboot",
            MINIMUM.0, MINIMUM.1
        )
    })
}

/// This machine's kernel release (`uname -r`), if it can be read.
pub fn running_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(version("6.1.0-50-amd64"), Some((6, 1)));
        assert_eq!(version("6.12.95+deb12-amd64"), Some((6, 12)));
        assert_eq!(version("5.10"), Some((5, 10)));
        assert_eq!(version("garbage"), None);
        assert_eq!(version(""), None);
    }

    #[test]
    fn an_old_kernel_refusing_the_table_gets_the_reason_and_the_fix() {
        let refusal = "/dev/stdin:67:46-108: Error: Could not process rule: Invalid argument";
        let h = hint("6.1.0-50-amd64", refusal).expect("a hint on 6.1");
        assert!(h.contains("6.1.0-50-amd64") && h.contains("6.5"), "{h}");
        assert!(h.contains("bookworm-backports"), "{h}");
        assert!(hint("6.4.9", refusal).is_some());
        // A new kernel, or another refusal, is not the kernel's age.
        assert_eq!(hint("6.5.0", refusal), None);
        assert_eq!(hint("6.12.95+deb12-amd64", refusal), None);
        assert_eq!(
            hint(
                "6.1.0",
                "Error: Could not process rule: No such file or directory"
            ),
            None
        );
        assert_eq!(hint("unknown", refusal), None);
    }
}
