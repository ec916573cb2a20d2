//! The end-to-end suite: the real `natpmpd` in a namespace lab (`lab/`), with real nftables,
//! real clients and real traffic. One test binary, so the lab is compiled once.
//!
//! Root only, and built only with the `root-tests` feature: `cargo test` as a normal user
//! leaves it out, `scripts/test.sh` (and CI) runs it as a separate step, and run without root
//! every test fails loudly (it never skips).

mod lab;

mod access;
mod access_rules;
mod address_change;
mod announce;
mod backend_none;
mod check_config;
mod conflicts;
mod crab_nat;
mod crash_loop;
mod drift;
mod hairpin;
mod ipv6;
mod journal;
mod lab_safety;
mod late_interface;
mod lifecycle;
mod link;
mod metrics;
mod natpmpc_tcp;
mod natpmpctl_status;
mod notify;
mod outbound;
mod pcp;
mod portmapper;
mod rate_limit;
mod reload;
mod restart;
mod router_ports;
mod udp_expiry;
mod unprivileged;
mod versions;
