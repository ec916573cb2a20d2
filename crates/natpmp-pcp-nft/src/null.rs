//! [`NullForwarder`]: protocol-only mode (`backend = "none"`).

use crate::forwarder::{ForwardError, Forwarder};
use natpmp_pcp_core::forward::{Change, Forward};
use std::net::Ipv4Addr;

/// Installs nothing in the kernel and never fails: the daemon answers NAT-PMP requests, but
/// no traffic is forwarded. Useful to test clients against the protocol alone, or where
/// another tool owns the firewall.
///
/// It remembers what it was asked to apply, so `list` returns the forwards that would be in
/// the kernel (with the timeouts as given, not counting down), and reconciliation against it
/// finds nothing to repair. Unlike the kernel it is lenient: adding an element that exists
/// replaces it, removing one that does not exist is ignored. `prepare` and `teardown` forget
/// everything, as replacing or removing the real table would. `set_hairpin` is remembered
/// as given (see [`NullForwarder::hairpin`]); `check` always finds the table intact.
#[derive(Debug, Default, Clone)]
pub struct NullForwarder {
    forwards: Vec<Forward>,
    hairpin: (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>),
}

impl NullForwarder {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the last `set_hairpin` was given, or nothing since `prepare`/`teardown`.
    pub fn hairpin(&self) -> (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>) {
        self.hairpin.clone()
    }
}

impl Forwarder for NullForwarder {
    fn prepare(&mut self, _external_interface: &str) -> Result<(), ForwardError> {
        self.forwards.clear();
        self.hairpin = Default::default();
        Ok(())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ForwardError> {
        for c in changes {
            match c {
                Change::Add(f) => {
                    self.forwards.retain(|g| !g.same_elements(f));
                    self.forwards.push(*f);
                }
                Change::Remove(f) => self.forwards.retain(|g| !g.same_elements(f)),
            }
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<Forward>, ForwardError> {
        Ok(self.forwards.clone())
    }

    fn teardown(&mut self) -> Result<(), ForwardError> {
        self.forwards.clear();
        self.hairpin = Default::default();
        Ok(())
    }

    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), ForwardError> {
        self.hairpin = (external_addr, lan_nets.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::forward::Protocol;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn remembers_and_never_fails() {
        let f = Forward {
            protocol: Protocol::Tcp,
            external_addr: Ipv4Addr::new(203, 0, 113, 1),
            external_port: 80,
            internal_addr: Ipv4Addr::new(192, 168, 88, 2),
            internal_port: 8080,
            timeout: Duration::from_secs(10),
        };
        let renewed = Forward {
            timeout: Duration::from_secs(20),
            ..f
        };
        let mut n = NullForwarder::new();
        n.prepare("anything at all").unwrap();
        n.apply(&[Change::Remove(f)]).unwrap();
        n.apply(&[Change::Add(f)]).unwrap();
        n.apply(&[Change::Remove(f), Change::Add(renewed)]).unwrap();
        assert_eq!(n.list().unwrap(), vec![renewed]);
        let lan = vec![(Ipv4Addr::new(192, 168, 88, 1), 24)];
        n.set_hairpin(Some(f.external_addr), &lan).unwrap();
        assert_eq!(n.hairpin(), (Some(f.external_addr), lan));
        assert_eq!(n.check().unwrap(), crate::Health::Intact);
        n.teardown().unwrap();
        assert!(n.list().unwrap().is_empty());
        assert_eq!(n.hairpin(), (None, vec![]));
    }
}
