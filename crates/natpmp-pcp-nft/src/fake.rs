//! [`FakeForwarder`]: an in-memory kernel for engine and daemon tests.

use crate::forwarder::{ForwardError, Forwarder, Health};
use crate::{health, nftables, template};
use natpmp_pcp_core::forward::{Change, Forward};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Keeps forwards in memory and applies changes in order, with the kernel's rules, so a test
/// catches what the real backend would refuse:
/// - a transaction is all or nothing;
/// - `Remove` of a forward that is not there (compared with [`Forward::same_elements`], so the
///   timeout does not matter) fails with "No such file or directory";
/// - `Add` fails with "File exists" when either of its map keys is taken: the same protocol and
///   external port, or the same internal address, protocol and internal port.
///
/// Clones share one state, so a test can keep a clone to look inside while the daemon owns
/// the other. `prepare` does not have to be called before `apply`.
///
/// Drift: [`FakeForwarder::wipe`] acts as if another tool deleted our table. Until the next
/// `prepare`, `apply`, `list` and `set_hairpin` fail as the kernel's would ("No such file or
/// directory") and `check` reports the table missing.
#[derive(Debug, Default, Clone)]
pub struct FakeForwarder {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    forwards: Vec<Forward>,
    fail_next: bool,
    applied: Vec<Vec<Change>>,
    interface: Option<String>,
    hairpin: (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>),
    wiped: bool,
}

fn table_gone(what: &str) -> ForwardError {
    ForwardError::Kernel(format!(
        "{what}: table ip natpmpd is missing: No such file or directory (os error 2)"
    ))
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

    /// Make the next `apply` fail (with `ForwardError::Kernel`) without changing anything.
    pub fn fail_next_apply(&self) {
        self.state().fail_next = true;
    }

    /// Every transaction handed to `apply`, in order, including those that failed.
    pub fn applied(&self) -> Vec<Vec<Change>> {
        self.state().applied.clone()
    }

    /// The forwards held now (what `list` returns), without needing `&mut`.
    pub fn forwards(&self) -> Vec<Forward> {
        self.state().forwards.clone()
    }

    /// The interface given to the last `prepare`, or `None` before it and after `teardown`.
    pub fn interface(&self) -> Option<String> {
        self.state().interface.clone()
    }

    /// What the last `set_hairpin` was given (as given: host bits kept, not merged), or
    /// `(None, [])` when nothing has been set since `prepare`, `teardown` or `wipe`.
    pub fn hairpin(&self) -> (Option<Ipv4Addr>, Vec<(Ipv4Addr, u8)>) {
        self.state().hairpin.clone()
    }

    /// Act as if another tool deleted our table (`nft flush ruleset`, a firewall reload): the
    /// forwards and hairpin sets are gone, and everything but `prepare`, `check` and
    /// `teardown` fails until the next `prepare`.
    pub fn wipe(&self) {
        let mut s = self.state();
        s.forwards.clear();
        s.hairpin = Default::default();
        s.wiped = true;
    }
}

fn conflicts(a: &Forward, b: &Forward) -> bool {
    let inbound = a.protocol == b.protocol && a.external_port == b.external_port;
    let outbound = a.protocol == b.protocol
        && a.internal_addr == b.internal_addr
        && a.internal_port == b.internal_port;
    inbound || outbound
}

impl Forwarder for FakeForwarder {
    fn prepare(&mut self, external_interface: &str) -> Result<(), ForwardError> {
        template::validate_interface(external_interface)?;
        let mut s = self.state();
        s.forwards.clear();
        s.interface = Some(external_interface.to_owned());
        s.hairpin = Default::default();
        s.wiped = false;
        Ok(())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ForwardError> {
        let mut s = self.state();
        s.applied.push(changes.to_vec());
        if std::mem::take(&mut s.fail_next) {
            return Err(ForwardError::Kernel(
                "injected failure (fail_next_apply)".into(),
            ));
        }
        if s.wiped {
            return Err(table_gone("apply"));
        }
        let mut next = s.forwards.clone();
        for (i, c) in changes.iter().enumerate() {
            match c {
                Change::Add(f) => {
                    if next.iter().any(|g| conflicts(f, g)) {
                        return Err(ForwardError::Kernel(format!(
                            "change #{i} (add {f:?}): File exists (os error 17)"
                        )));
                    }
                    next.push(*f);
                }
                Change::Remove(f) => match next.iter().position(|g| g.same_elements(f)) {
                    Some(at) => {
                        next.remove(at);
                    }
                    None => {
                        return Err(ForwardError::Kernel(format!(
                            "change #{i} (remove {f:?}): No such file or directory (os error 2)"
                        )))
                    }
                },
            }
        }
        s.forwards = next;
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<Forward>, ForwardError> {
        let s = self.state();
        if s.wiped {
            return Err(table_gone("listing map inbound"));
        }
        Ok(s.forwards.clone())
    }

    fn teardown(&mut self) -> Result<(), ForwardError> {
        let mut s = self.state();
        s.forwards.clear();
        s.interface = None;
        s.hairpin = Default::default();
        Ok(())
    }

    fn set_hairpin(
        &mut self,
        external_addr: Option<Ipv4Addr>,
        lan_nets: &[(Ipv4Addr, u8)],
    ) -> Result<(), ForwardError> {
        // Refuse what the real one refuses, before looking at the table, as it does.
        nftables::lan_ranges(lan_nets)
            .map_err(|(addr, len)| ForwardError::InvalidNetwork(addr, len))?;
        let mut s = self.state();
        if s.wiped {
            return Err(table_gone("setting hairpin"));
        }
        s.hairpin = (external_addr, lan_nets.to_vec());
        Ok(())
    }

    fn check(&mut self) -> Result<Health, ForwardError> {
        Ok(if self.state().wiped {
            health::table_missing()
        } else {
            Health::Intact
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::forward::Protocol;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn f(ext: u16, int: u16) -> Forward {
        Forward {
            protocol: Protocol::Udp,
            external_addr: Ipv4Addr::new(203, 0, 113, 1),
            external_port: ext,
            internal_addr: Ipv4Addr::new(192, 168, 88, 2),
            internal_port: int,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn applies_in_order_and_records_transactions() {
        let mut fake = FakeForwarder::new();
        let probe = fake.clone();
        fake.prepare("eth0").unwrap();
        fake.apply(&[Change::Add(f(1, 1)), Change::Add(f(2, 2))])
            .unwrap();
        let renewed = Forward {
            timeout: Duration::from_secs(5),
            ..f(1, 1)
        };
        fake.apply(&[Change::Remove(f(1, 1)), Change::Add(renewed)])
            .unwrap();
        assert_eq!(probe.forwards(), vec![f(2, 2), renewed]);
        assert_eq!(probe.applied().len(), 2);
        assert_eq!(probe.interface().as_deref(), Some("eth0"));
    }

    #[test]
    fn failures_change_nothing() {
        let mut fake = FakeForwarder::new();
        fake.apply(&[Change::Add(f(1, 1))]).unwrap();
        fake.fail_next_apply();
        assert!(fake.apply(&[Change::Add(f(2, 2))]).is_err());
        // Only the next one fails.
        fake.apply(&[Change::Add(f(3, 3))]).unwrap();
        // Missing remove: the add before it is undone too.
        assert!(fake
            .apply(&[Change::Add(f(4, 4)), Change::Remove(f(9, 9))])
            .is_err());
        // Either key taken.
        assert!(fake.apply(&[Change::Add(f(1, 7))]).is_err());
        assert!(fake.apply(&[Change::Add(f(7, 1))]).is_err());
        assert_eq!(fake.list().unwrap(), vec![f(1, 1), f(3, 3)]);
        assert_eq!(fake.applied().len(), 6);
    }

    #[test]
    fn wipe_breaks_everything_until_prepare() {
        let mut fake = FakeForwarder::new();
        let probe = fake.clone();
        fake.prepare("eth0").unwrap();
        fake.apply(&[Change::Add(f(1, 1))]).unwrap();
        let lan = [(Ipv4Addr::new(192, 168, 88, 1), 24)];
        let wan = Some(Ipv4Addr::new(203, 0, 113, 1));
        fake.set_hairpin(wan, &lan).unwrap();
        assert_eq!(probe.hairpin(), (wan, lan.to_vec()));
        assert_eq!(fake.check().unwrap(), Health::Intact);

        probe.wipe();
        assert_eq!(
            fake.check().unwrap(),
            Health::Damaged("table ip natpmpd is missing".into())
        );
        assert!(matches!(fake.list(), Err(ForwardError::Kernel(_))));
        assert!(matches!(
            fake.apply(&[Change::Add(f(2, 2))]),
            Err(ForwardError::Kernel(_))
        ));
        assert!(fake.set_hairpin(wan, &lan).is_err());
        assert_eq!(probe.hairpin(), (None, vec![]));
        assert!(probe.forwards().is_empty());

        fake.prepare("eth0").unwrap();
        assert_eq!(fake.check().unwrap(), Health::Intact);
        assert_eq!(fake.list().unwrap(), vec![]);
        fake.apply(&[Change::Add(f(2, 2))]).unwrap();
        fake.set_hairpin(None, &[]).unwrap();
        assert_eq!(probe.hairpin(), (None, vec![]));
    }

    #[test]
    fn hairpin_refuses_a_prefix_over_32() {
        let addr = Ipv4Addr::new(10, 0, 0, 0);
        assert!(matches!(
            FakeForwarder::new().set_hairpin(None, &[(addr, 33)]),
            Err(ForwardError::InvalidNetwork(a, 33)) if a == addr
        ));
    }

    #[test]
    fn refuses_bad_interface_names_like_the_real_one() {
        assert!(matches!(
            FakeForwarder::new().prepare("eth0\"; flush ruleset"),
            Err(ForwardError::InvalidInterface(_))
        ));
    }
}
