//! [`NullForwarder`]: protocol-only mode (`backend = "none"`).

use super::element::{Change, Element};
use super::forwarder::{
    validate_interface, validate_lan_nets, ApplyError, Forwarder, Health, KernelError, TableSpec,
};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Installs nothing in the kernel and never fails: the gateway answers requests, but no traffic
/// is forwarded. Useful to test clients against the protocol alone, or where another tool owns
/// the firewall.
///
/// It remembers what it was asked to apply, so `list` returns the elements that would be in
/// the kernel (timeouts as given, not counting down) and reconciliation finds nothing to
/// repair. Unlike the kernel it is lenient: adding an element that exists replaces it, and
/// removing one that does not exist is ignored. `prepare` and `teardown` forget everything,
/// as replacing or removing the real table would.
#[derive(Debug, Default, Clone)]
pub struct NullForwarder {
    elements: Vec<(Element, Duration)>,
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
    fn prepare(&mut self, table: &TableSpec) -> Result<(), KernelError> {
        validate_interface(&table.external_interface)?;
        self.elements.clear();
        self.hairpin = Default::default();
        Ok(())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        for c in changes {
            match c {
                Change::Add { element, timeout } => {
                    self.elements.retain(|(g, _)| !g.same_key(element));
                    self.elements.push((*element, *timeout));
                }
                Change::Remove(element) => self.elements.retain(|(g, _)| !g.same_key(element)),
            }
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError> {
        Ok(self.elements.clone())
    }

    fn teardown(&mut self) -> Result<(), KernelError> {
        self.elements.clear();
        self.hairpin = Default::default();
        Ok(())
    }

    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError> {
        validate_lan_nets(lan_nets)?;
        self.hairpin = (external_addr, lan_nets.to_vec());
        Ok(())
    }

    fn check(&mut self) -> Result<Health, KernelError> {
        Ok(Health::Intact)
    }

    fn clear_flows(&mut self, _removed: &[Element]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Protocol;
    use std::net::SocketAddrV4;

    #[test]
    fn remembers_and_never_fails() {
        let e = Element::Inbound {
            protocol: Protocol::Tcp,
            external_port: 80,
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 2), 8080),
        };
        let add = |secs| Change::Add {
            element: e,
            timeout: Duration::from_secs(secs),
        };
        let mut n = NullForwarder::new();
        n.prepare(&TableSpec::new("eth0")).unwrap();
        n.apply(&[Change::Remove(e)]).unwrap();
        n.apply(&[add(10)]).unwrap();
        n.apply(&[Change::Remove(e), add(20)]).unwrap();
        assert_eq!(n.list().unwrap(), vec![(e, Duration::from_secs(20))]);
        let lan = vec![(Ipv4Addr::new(192, 168, 88, 1), 24)];
        n.set_hairpin(Some(Ipv4Addr::new(203, 0, 113, 1)), &lan)
            .unwrap();
        assert_eq!(n.hairpin().1, lan);
        assert_eq!(n.check().unwrap(), Health::Intact);
        n.teardown().unwrap();
        assert!(n.list().unwrap().is_empty());
    }
}
