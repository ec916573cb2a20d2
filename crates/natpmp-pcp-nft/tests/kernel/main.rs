//! Tests against the real kernel: natpmpd's table, its elements with their timeouts and
//! refusals, pinholes, the health check, conntrack, and real packets through every path. One
//! test binary (`support/` is compiled once).
//!
//! Root only, and built only with the `root-tests` feature: `cargo test` as a normal user
//! leaves it out, `scripts/test.sh` (and CI) runs it as a separate step, and run without root
//! every test fails loudly (it never skips).
//!
//! Isolation: every test runs its body in a fresh thread that first calls
//! `unshare(CLONE_NEWNET)`. That thread alone moves into a new, anonymous network namespace,
//! which the kernel discards when the thread ends; the netlink sockets it opens and the `nft`
//! and `ip` processes it spawns live there too. Nothing here touches the host's namespace.

mod support;

mod contract;
mod ipv4_elements;
mod ipv6;
mod pinholes;
mod table;
mod traffic;
