//! Interfaces and their addresses: a snapshot read with getifaddrs, in the core's interface
//! model, and a netlink route socket that wakes the daemon whenever a link or an address of
//! either family changes.
//!
//! The monitor does not parse the events: any event means "read the snapshot again". That
//! keeps one source of truth (the kernel's current state), makes missed or reordered events
//! harmless, and costs one small dump per change, which is rare on a router.

use natpmp_pcp_core::gateway::interfaces::{IfAddr, Interface, Interfaces};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

/// Every interface of this network namespace, by name.
pub fn snapshot() -> io::Result<Interfaces> {
    let mut out = Interfaces::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let entry = match out.get_mut(&ifa.interface_name) {
            Some(e) => e,
            None => {
                let index = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0);
                out.entry(ifa.interface_name.clone()).or_insert(Interface {
                    name: ifa.interface_name.clone(),
                    index,
                    up: false,
                    addrs: Vec::new(),
                })
            }
        };
        entry.up |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let (Some(addr), Some(mask)) = (ifa.address.as_ref(), ifa.netmask.as_ref()) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            entry
                .addrs
                .push(IfAddr::v4(a.ip(), u32::from(m.ip()).count_ones() as u8));
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            entry
                .addrs
                .push(IfAddr::v6(a.ip(), u128::from(m.ip()).count_ones() as u8));
        }
    }
    Ok(out)
}

/// A netlink route socket subscribed to link, IPv4 and IPv6 address events.
pub struct Monitor {
    fd: AsyncFd<OwnedFd>,
}

impl Monitor {
    pub fn new() -> io::Result<Monitor> {
        // SAFETY: plain socket(2) call; the result is checked and owned at once.
        let raw: RawFd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: `sa` is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Monitor {
            fd: {
                // SAFETY: `fd` is an owned, open descriptor that moves into the AsyncFd and
                // stays open, unchanged, until the AsyncFd drops it.
                unsafe { AsyncFd::register(fd) }?
            },
        })
    }

    /// Wait for at least one event and drain all that are queued.
    pub async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 16384];
            let mut got = false;
            loop {
                // SAFETY: reading into a stack buffer of the given length.
                let n = unsafe {
                    libc::recv(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n >= 0 {
                    got = true;
                    continue;
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    // The kernel dropped events because we were slow: a re-read covers it.
                    Some(libc::ENOBUFS) => got = true,
                    _ => return Err(err),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_loopback() {
        let snap = snapshot().expect("getifaddrs");
        let lo = snap.get("lo").expect("lo exists in every namespace");
        assert!(lo.index > 0);
    }
}
