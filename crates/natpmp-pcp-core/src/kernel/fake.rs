//! [`FakeForwarder`]: an in-memory kernel for gateway and daemon tests.

use super::element::{Change, Element};
use super::forwarder::{
    validate_interface, validate_lan_nets, ApplyError, ChangeRefused, Errno, Forwarder, Health,
    KernelError, TableSpec,
};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Keeps elements in memory and applies changes in order, with the kernel's rules, so a test
/// catches what the real backend would refuse:
/// - a transaction is all or nothing, and every refused change is reported with its errno;
/// - `Remove` of an element whose key is not there fails with ENOENT;
/// - `Add` fails with EEXIST when its key is taken (in the interval map: when it overlaps).
///
/// Clones share one state, so a test keeps a clone to look inside while the gateway owns the
/// other. `prepare` does not have to be called before `apply`.
///
/// Drift: [`FakeForwarder::wipe`] acts as if another tool deleted our table. Until the next
/// `prepare`, `apply`, `list` and `set_hairpin` fail as the kernel's would (ENOENT) and
/// `check` reports the table missing. [`FakeForwarder::insert_by_hand`] and
/// [`FakeForwarder::remove_by_hand`] act as `nft add/delete element` typed by an operator.
#[derive(Debug, Default, Clone)]
pub struct FakeForwarder {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    elements: Vec<(Element, Duration)>,
    fail_next: Option<Errno>,
    applied: Vec<Vec<Change>>,
    table: Option<TableSpec>,
    hairpin: (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>),
    wiped: bool,
    prepares: usize,
    cleared: Vec<Element>,
}

fn table_gone(what: &str) -> KernelError {
    KernelError::Refused {
        what: format!("{what} (table inet natpmpd is missing)"),
        errno: Errno::ENOENT,
    }
}

impl FakeForwarder {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock has failed already; keep the state
        // readable for the rest of it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the next `apply` fail as a whole with `errno` (e.g. ENOMEM), changing nothing.
    pub fn fail_next_apply(&self, errno: Errno) {
        self.state().fail_next = Some(errno);
    }

    /// Every transaction handed to `apply`, in order, including those that failed.
    pub fn applied(&self) -> Vec<Vec<Change>> {
        self.state().applied.clone()
    }

    /// The elements held now, with the timeouts they were added with (the fake has no clock).
    pub fn elements(&self) -> Vec<(Element, Duration)> {
        self.state().elements.clone()
    }

    /// The elements held now, without timeouts, sorted: easy to compare.
    pub fn element_set(&self) -> Vec<Element> {
        let mut v: Vec<Element> = self.state().elements.iter().map(|(e, _)| *e).collect();
        v.sort();
        v
    }

    /// The interface given to the last `prepare`, or `None` before it and after `teardown`.
    pub fn interface(&self) -> Option<String> {
        self.state()
            .table
            .as_ref()
            .map(|t| t.external_interface.clone())
    }

    /// What the last `prepare` was given, or `None` before it and after `teardown`.
    pub fn table(&self) -> Option<TableSpec> {
        self.state().table.clone()
    }

    /// How many times `prepare` ran (each is a table rebuild).
    pub fn prepares(&self) -> usize {
        self.state().prepares
    }

    /// What the last `set_hairpin` was given, or `(None, [])` since `prepare`, `teardown` or
    /// `wipe`.
    pub fn hairpin(&self) -> (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>) {
        self.state().hairpin.clone()
    }

    /// Every element whose flows `clear_flows` was asked to end, in order.
    pub fn cleared_flows(&self) -> Vec<Element> {
        self.state().cleared.clone()
    }

    /// Act as if another tool deleted our table (`nft flush ruleset`, a firewall reload).
    pub fn wipe(&self) {
        let mut s = self.state();
        s.elements.clear();
        s.hairpin = Default::default();
        s.wiped = true;
    }

    /// Let `d` pass in the kernel: every element's timeout counts down (one that reaches zero
    /// is gone, as the kernel's own expiry would remove it).
    pub fn age(&self, d: Duration) {
        let mut s = self.state();
        s.elements
            .retain_mut(|(_, left)| match left.checked_sub(d) {
                Some(l) if !l.is_zero() => {
                    *left = l;
                    true
                }
                _ => false,
            });
    }

    /// An element added behind natpmpd's back (`nft add element`); it may collide with ours.
    pub fn insert_by_hand(&self, element: Element, timeout: Duration) {
        self.state().elements.push((element, timeout));
    }

    /// An element deleted behind natpmpd's back (`nft delete element`), if present.
    pub fn remove_by_hand(&self, element: &Element) {
        self.state().elements.retain(|(e, _)| !e.same_key(element));
    }
}

impl Forwarder for FakeForwarder {
    fn prepare(&mut self, table: &TableSpec) -> Result<(), KernelError> {
        validate_interface(&table.external_interface)?;
        let mut s = self.state();
        s.elements.clear();
        s.table = Some(table.clone());
        s.hairpin = Default::default();
        s.wiped = false;
        s.prepares += 1;
        Ok(())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        let mut s = self.state();
        s.applied.push(changes.to_vec());
        if let Some(errno) = s.fail_next.take() {
            return Err(ApplyError::Failed(KernelError::Refused {
                what: "injected failure (fail_next_apply)".into(),
                errno,
            }));
        }
        if s.wiped {
            return Err(ApplyError::Failed(table_gone("apply")));
        }
        let mut next = s.elements.clone();
        let mut refused = Vec::new();
        for (index, c) in changes.iter().enumerate() {
            match c {
                Change::Add { element, timeout } => {
                    if next.iter().any(|(g, _)| element.collides_with(g)) {
                        refused.push(ChangeRefused {
                            index,
                            errno: Errno::EEXIST,
                        });
                    } else {
                        next.push((*element, *timeout));
                    }
                }
                Change::Remove(element) => match next.iter().position(|(g, _)| g.same_key(element))
                {
                    Some(at) => {
                        next.remove(at);
                    }
                    None => refused.push(ChangeRefused {
                        index,
                        errno: Errno::ENOENT,
                    }),
                },
            }
        }
        if !refused.is_empty() {
            return Err(ApplyError::Refused(refused));
        }
        s.elements = next;
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<(Element, Duration)>, KernelError> {
        let s = self.state();
        if s.wiped || s.table.is_none() {
            return Err(table_gone("listing the maps"));
        }
        Ok(s.elements.clone())
    }

    fn teardown(&mut self) -> Result<(), KernelError> {
        let mut s = self.state();
        s.elements.clear();
        s.table = None;
        s.hairpin = Default::default();
        Ok(())
    }

    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), KernelError> {
        // Refuse what the real one refuses, before looking at the table, as it does.
        validate_lan_nets(lan_nets)?;
        let mut s = self.state();
        if s.wiped {
            return Err(table_gone("setting hairpin"));
        }
        s.hairpin = (external_addr, lan_nets.to_vec());
        Ok(())
    }

    fn check(&mut self) -> Result<Health, KernelError> {
        Ok(if self.state().wiped {
            Health::Damaged("table inet natpmpd is missing".into())
        } else {
            Health::Intact
        })
    }

    fn clear_flows(&mut self, removed: &[Element]) {
        self.state().cleared.extend_from_slice(removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Protocol;
    use std::net::SocketAddrV4;

    fn e(ext: u16, int: u16) -> Element {
        Element::Inbound {
            protocol: Protocol::Udp,
            external_port: ext,
            internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 88, 2), int),
        }
    }

    fn add(el: Element) -> Change {
        Change::Add {
            element: el,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn applies_in_order_and_records_transactions() {
        let mut fake = FakeForwarder::new();
        let probe = fake.clone();
        fake.prepare(&TableSpec::new("eth0")).unwrap();
        fake.apply(&[add(e(1, 1)), add(e(2, 2))]).unwrap();
        fake.apply(&[Change::Remove(e(1, 1)), add(e(1, 1))])
            .unwrap();
        assert_eq!(probe.element_set(), vec![e(1, 1), e(2, 2)]);
        assert_eq!(probe.applied().len(), 2);
        assert_eq!(probe.interface().as_deref(), Some("eth0"));
    }

    #[test]
    fn refusals_name_every_bad_change_and_change_nothing() {
        let mut fake = FakeForwarder::new();
        fake.apply(&[add(e(1, 1))]).unwrap();
        fake.fail_next_apply(Errno::ENOMEM);
        assert!(matches!(
            fake.apply(&[add(e(2, 2))]),
            Err(ApplyError::Failed(_))
        ));
        let err = fake
            .apply(&[add(e(4, 4)), Change::Remove(e(9, 9)), add(e(1, 7))])
            .unwrap_err();
        assert_eq!(
            err.refused(),
            &[
                ChangeRefused {
                    index: 1,
                    errno: Errno::ENOENT
                },
                ChangeRefused {
                    index: 2,
                    errno: Errno::EEXIST
                }
            ]
        );
        assert_eq!(fake.element_set(), vec![e(1, 1)]);
    }

    #[test]
    fn wipe_breaks_everything_until_prepare() {
        let mut fake = FakeForwarder::new();
        let probe = fake.clone();
        fake.prepare(&TableSpec::new("eth0")).unwrap();
        fake.apply(&[add(e(1, 1))]).unwrap();
        let lan = [(Ipv4Addr::new(192, 168, 88, 1), 24)];
        let wan = Some(Ipv4Addr::new(203, 0, 113, 1));
        fake.set_hairpin(wan, &lan).unwrap();
        probe.wipe();
        assert_eq!(
            fake.check().unwrap(),
            Health::Damaged("table inet natpmpd is missing".into())
        );
        assert!(fake.list().is_err());
        assert!(fake.apply(&[add(e(2, 2))]).is_err());
        assert!(fake.set_hairpin(wan, &lan).is_err());
        fake.prepare(&TableSpec::new("eth0")).unwrap();
        assert_eq!(fake.check().unwrap(), Health::Intact);
        assert!(fake.list().unwrap().is_empty());
        assert_eq!(probe.prepares(), 2);
    }

    #[test]
    fn refuses_what_the_real_one_refuses() {
        assert!(matches!(
            FakeForwarder::new().prepare(&TableSpec::new("eth0\"; flush ruleset")),
            Err(KernelError::InvalidInterface(_))
        ));
        let addr = Ipv4Addr::new(10, 0, 0, 0);
        assert!(matches!(
            FakeForwarder::new().set_hairpin(None, &[(addr, 33)]),
            Err(KernelError::InvalidNetwork(a, 33)) if a == addr
        ));
    }

    #[test]
    fn elements_added_by_hand_collide() {
        let mut fake = FakeForwarder::new();
        fake.insert_by_hand(e(5, 5), Duration::from_secs(9));
        assert_eq!(
            fake.apply(&[add(e(5, 6))]).unwrap_err().refused()[0].errno,
            Errno::EEXIST
        );
        fake.remove_by_hand(&e(5, 5));
        fake.apply(&[add(e(5, 6))]).unwrap();
    }
}
