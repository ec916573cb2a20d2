//! The operations the front ends ask for: create or renew a MAP mapping, create or refresh a
//! PEER mapping, delete. Each either changes nothing and says why ([`Refusal`]), or changes
//! the table, stages the kernel changes and returns an [`Undo`].
//!
//! Ownership rules (RFC 6887 §11.3, §12.3; rfc-checklist §3.13 and §6 A11), written here
//! because this is where they are enforced:
//! - a PCP MAP or PEER for a mapping that holds another nonce is refused (NOT_AUTHORIZED,
//!   with the mapping's remaining lifetime as the error lifetime);
//! - a PCP MAP for a mapping NAT-PMP made takes it over: the nonce is stored, the external
//!   port stays;
//! - a NAT-PMP request for a mapping that holds a nonce gets its external port and changes
//!   nothing (lifetime: what is left, never more than asked); a NAT-PMP delete of it is
//!   refused (result 2). Otherwise NAT-PMP, which carries no nonce, would undo the nonce's
//!   protection: anyone who can spoof the client's address could delete or shorten it.

use super::access::PortRange;
use super::mapping::{Endpoint, EndpointKey, Filter, MapMapping, Owner, PcpClient, PeerMapping};
use super::ports::{PortPolicy, Unusable};
use super::router_ports;
use super::thin_vec::ThinVec;
use super::{seconds_left, Engine, Undo};
use crate::kernel::Change;
use crate::time::Timestamp;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The lifetime a request asks for, with the rule of its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// NAT-PMP: never more than asked (RFC 6886 §3.3), never more than `max-lifetime`.
    AtMost(u32),
    /// PCP: clamped into `[pcp-min-lifetime, max-lifetime]` (RFC 6887 §15).
    Clamped(u32),
}

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    NatPmp,
    Pcp(PcpClient),
}

/// What to do with a MAP's FILTERs (RFC 6887 §13.3): new filters are added to the ones the
/// mapping has; a FILTER with prefix length 0 clears them first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterUpdate {
    pub clear: bool,
    pub add: Vec<Filter>,
}

/// What to do with a mapping's DESCRIPTION (RFC 7220).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DescriptionUpdate {
    /// The request carried none: keep what is stored.
    #[default]
    Keep,
    /// Store this (already truncated to what is kept); empty clears it.
    Set(Box<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRequest {
    pub key: EndpointKey,
    pub lifetime: Lifetime,
    pub claim: Claim,
    pub suggested_port: u16,
    /// `None`, or the unspecified address: no preference.
    pub suggested_addr: Option<IpAddr>,
    /// PCP PREFER_FAILURE: the exact suggestion or nothing.
    pub prefer_failure: bool,
    pub filters: FilterUpdate,
    pub description: DescriptionUpdate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRequest {
    pub key: EndpointKey,
    pub remote: SocketAddr,
    /// Requested seconds; 0 asks for the current lifetime (a PEER never shortens or deletes).
    pub lifetime: u32,
    pub client: PcpClient,
    pub suggested_port: u16,
    pub suggested_addr: Option<IpAddr>,
    pub description: DescriptionUpdate,
}

/// A granted MAP or PEER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub external: SocketAddr,
    pub lifetime: u32,
    /// The MAP's filters after the request (empty for PEER).
    pub filters: Vec<Filter>,
    /// The description stored after the request.
    pub description: Option<Box<str>>,
}

/// Why nothing was granted. The front ends turn these into their protocol's result codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No external address (no DHCP lease yet): NAT-PMP 3, PCP NETWORK_FAILURE.
    NoExternalAddress,
    /// Another nonce owns the mapping: NAT-PMP 2, PCP NOT_AUTHORIZED (error lifetime =
    /// `remaining`).
    NotOwner { remaining: u32 },
    /// The client holds `max-mappings-per-client`: NAT-PMP 4, PCP USER_EX_QUOTA.
    QuotaExceeded,
    /// No external port is free: NAT-PMP 4, PCP NO_RESOURCES.
    NoPortAvailable,
    /// The exact suggestion cannot be had (PREFER_FAILURE, or a PEER's suggestion): PCP
    /// CANNOT_PROVIDE_EXTERNAL. `retry_after`: seconds until it might (the holder's remaining
    /// lifetime), or `None` when it never will (reserved, outside the range, not our address).
    CannotProvideExternal { retry_after: Option<u32> },
    /// More FILTERs than `pcp-max-filters`: PCP EXCESSIVE_REMOTE_PEERS.
    TooManyFilters,
    /// The access rules allow this client no external port for this protocol and internal
    /// port (or, for a renewal or a pinhole, not the one it has): NAT-PMP 2, PCP
    /// NOT_AUTHORIZED.
    AccessDenied,
    /// The kernel refused the changes and the engine reverted them: NAT-PMP 3, PCP
    /// NETWORK_FAILURE.
    KernelRefused,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOutcome {
    Granted(Granted),
    Refused(Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// Nothing to delete: a success too (RFC 6886 §3.4, RFC 6887 §15.1).
    NotFound,
    /// The mapping stays: another nonce owns it, a NAT-PMP delete met a nonce, or a PCP MAP
    /// delete named an endpoint that holds only PEER mappings (RFC 6887 §15.1).
    NotOwner {
        remaining: u32,
        external_port: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteAllOutcome {
    pub deleted: usize,
    /// Mappings left in place because a nonce owns them.
    pub kept: usize,
}

fn unspecified(addr: Option<IpAddr>) -> bool {
    addr.is_none_or(|a| a.is_unspecified())
}

impl Engine {
    fn granted_lifetime(&self, lifetime: Lifetime) -> u32 {
        let max = self.config.max_lifetime;
        match lifetime {
            Lifetime::AtMost(asked) => asked.min(max),
            Lifetime::Clamped(asked) => asked.clamp(self.config.pcp_min_lifetime.min(max), max),
        }
    }

    /// The address a mapping of `key` is reachable on: ours for IPv4, the host's own for an
    /// IPv6 pinhole.
    pub(super) fn external_addr_for(&self, key: &EndpointKey) -> Result<IpAddr, Refusal> {
        match key.client {
            IpAddr::V4(_) => self
                .external
                .map(IpAddr::V4)
                .ok_or(Refusal::NoExternalAddress),
            v6 => Ok(v6),
        }
    }

    /// Why `port` cannot be given to a new mapping at `key` (whose allowed ports are
    /// `allowed`), as CANNOT_PROVIDE_EXTERNAL.
    fn cannot_provide(
        &self,
        now: Timestamp,
        key: &EndpointKey,
        port: u16,
        allowed: &[PortRange],
    ) -> Option<Refusal> {
        let why = self
            .ports
            .check(
                &self.table,
                key.client,
                key.protocol,
                port,
                self.policy(key, allowed),
            )
            .err()?;
        let retry_after = match why {
            Unusable::Forbidden => None,
            Unusable::Held => [key.protocol, key.protocol.companion()]
                .iter()
                .filter_map(|p| self.table.holder(*p, port))
                .filter_map(|k| self.table.get(k)?.last_expiry())
                .max()
                .map(|t| seconds_left(now, t)),
        };
        Some(Refusal::CannotProvideExternal { retry_after })
    }

    /// The access rules' verdict on a request at `key` (rfc-checklist has no rule for this;
    /// docs/protocol-choices.md "Access rules"). An endpoint that exists keeps its external
    /// port, so that port must be allowed; an IPv6 pinhole's external port is its internal
    /// one; a new IPv4 endpoint needs at least one allowed port, and gets the allowed ports
    /// to choose from.
    fn admit(
        &self,
        key: &EndpointKey,
        existing_port: Option<u16>,
    ) -> Result<Vec<PortRange>, Refusal> {
        let rules = &self.config.access;
        let port = match (existing_port, key.client.is_ipv6()) {
            (Some(p), _) => Some(p),
            (None, true) => Some(key.internal_port),
            (None, false) => None,
        };
        match port {
            Some(p) => rules
                .allows(key.client, key.protocol, key.internal_port, p)
                .then(Vec::new)
                .ok_or(Refusal::AccessDenied),
            None => {
                let allowed = self.allowed_ports(key);
                if allowed.is_empty() && !rules.is_empty() {
                    return Err(Refusal::AccessDenied);
                }
                Ok(allowed)
            }
        }
    }

    /// Create, renew or take over the MAP mapping of `req.key`.
    pub fn map(
        &mut self,
        now: Timestamp,
        req: MapRequest,
        changes: &mut Vec<Change>,
    ) -> (MapOutcome, Undo) {
        match self.try_map(now, req, changes) {
            Ok((granted, undo)) => (MapOutcome::Granted(granted), undo),
            Err(refusal) => (MapOutcome::Refused(refusal), Undo::default()),
        }
    }

    fn try_map(
        &mut self,
        now: Timestamp,
        req: MapRequest,
        changes: &mut Vec<Change>,
    ) -> Result<(Granted, Undo), Refusal> {
        let key = req.key;
        let external_addr = self.external_addr_for(&key)?;
        let old = self.table.get(&key).cloned();
        let lifetime = self.granted_lifetime(req.lifetime);

        if let Some((endpoint, m)) = old.as_ref().and_then(|e| Some((e, e.map.as_ref()?))) {
            match (&m.owner, &req.claim) {
                (Owner::Pcp(o), Claim::Pcp(c)) if o.nonce != c.nonce => {
                    return Err(Refusal::NotOwner {
                        remaining: seconds_left(now, m.expires),
                    })
                }
                (Owner::Pcp(_), Claim::NatPmp) => {
                    // Read-only for NAT-PMP (see the module comment).
                    return Ok((
                        Granted {
                            external: SocketAddr::new(external_addr, endpoint.external_port),
                            lifetime: lifetime.min(seconds_left(now, m.expires)),
                            filters: m.filters.to_vec(),
                            description: m.description.clone(),
                        },
                        Undo::default(),
                    ));
                }
                _ => {}
            }
        }

        let existing_port = old.as_ref().map(|e| e.external_port);
        let allowed = self.admit(&key, existing_port)?;
        let wants_other_addr =
            !unspecified(req.suggested_addr) && req.suggested_addr != Some(external_addr);
        if req.prefer_failure {
            if wants_other_addr {
                return Err(Refusal::CannotProvideExternal { retry_after: None });
            }
            match existing_port {
                // RFC 6887 §11.3 (1): an existing mapping with another port.
                Some(p) if p != req.suggested_port => {
                    return Err(Refusal::CannotProvideExternal {
                        retry_after: old
                            .as_ref()
                            .and_then(Endpoint::last_expiry)
                            .map(|t| seconds_left(now, t)),
                    })
                }
                Some(_) => {}
                None if key.client.is_ipv6() => {
                    if req.suggested_port != key.internal_port {
                        return Err(Refusal::CannotProvideExternal { retry_after: None });
                    }
                }
                None => {
                    if let Some(r) = self.cannot_provide(now, &key, req.suggested_port, &allowed) {
                        return Err(r);
                    }
                }
            }
        }

        let old_map = old.as_ref().and_then(|e| e.map.as_ref());
        let mut filters = old_map.map(|m| m.filters.to_vec()).unwrap_or_default();
        if req.filters.clear {
            filters.clear();
        }
        for f in req.filters.add {
            if !filters.contains(&f) {
                filters.push(f);
            }
        }
        if filters.len() > self.config.max_filters {
            return Err(Refusal::TooManyFilters);
        }
        if old_map.is_none()
            && self.table.count_for(key.client) >= self.config.max_mappings_per_client
        {
            return Err(Refusal::QuotaExceeded);
        }
        let external_port = match existing_port {
            Some(p) => p,
            None if key.client.is_ipv6() => key.internal_port,
            None => {
                // Field by field, so `ports` can be borrowed mutably beside it.
                let policy = PortPolicy {
                    allowed: &allowed,
                    unavailable: &self.unavailable[router_ports::index(key.protocol)],
                };
                self.ports
                    .allocate(
                        &self.table,
                        key.client,
                        key.protocol,
                        req.suggested_port,
                        policy,
                    )
                    .ok_or(Refusal::NoPortAvailable)?
            }
        };
        let owner = match req.claim {
            Claim::Pcp(c) => Owner::Pcp(c),
            Claim::NatPmp => old_map.map(|m| m.owner).unwrap_or(Owner::NatPmp),
        };
        let description = match req.description {
            DescriptionUpdate::Keep => old_map.and_then(|m| m.description.clone()),
            DescriptionUpdate::Set(d) => (!d.is_empty()).then_some(d),
        };
        let mut endpoint = old.clone().unwrap_or(Endpoint {
            external_port,
            map: None,
            peers: ThinVec::new(),
        });
        endpoint.map = Some(MapMapping {
            owner,
            lifetime,
            expires: now + Duration::from_secs(u64::from(lifetime)),
            filters: filters.clone().into(),
            description: description.clone(),
        });
        self.put(now, key, Some(endpoint), changes);
        Ok((
            Granted {
                external: SocketAddr::new(external_addr, external_port),
                lifetime,
                filters,
                description,
            },
            Undo::one(key, old),
        ))
    }

    /// Create or refresh the PEER mapping of `req.key` towards `req.remote` (RFC 6887 §12.3).
    pub fn peer(
        &mut self,
        now: Timestamp,
        req: PeerRequest,
        changes: &mut Vec<Change>,
    ) -> (MapOutcome, Undo) {
        match self.try_peer(now, req, changes) {
            Ok((granted, undo)) => (MapOutcome::Granted(granted), undo),
            Err(refusal) => (MapOutcome::Refused(refusal), Undo::default()),
        }
    }

    fn try_peer(
        &mut self,
        now: Timestamp,
        req: PeerRequest,
        changes: &mut Vec<Change>,
    ) -> Result<(Granted, Undo), Refusal> {
        let key = req.key;
        let external_addr = self.external_addr_for(&key)?;
        let old = self.table.get(&key).cloned();
        let existing = old.as_ref().and_then(|e| e.peer(req.remote)).cloned();
        if let Some(p) = &existing {
            if p.client.nonce != req.client.nonce {
                return Err(Refusal::NotOwner {
                    remaining: seconds_left(now, p.expires),
                });
            }
        }
        let allowed = self.admit(&key, old.as_ref().map(|e| e.external_port))?;
        let external_port = match &old {
            // The endpoint already leaves from its port (its implicit mapping exists, RFC 6887
            // §12.3): that is the port the peer sees, whatever was suggested.
            Some(e) => e.external_port,
            // A pinhole is the host's own address and port: any other suggestion cannot be
            // honoured (§12.3: then CANNOT_PROVIDE_EXTERNAL).
            None if key.client.is_ipv6() => {
                let other_port = req.suggested_port != 0 && req.suggested_port != key.internal_port;
                let other_addr =
                    !unspecified(req.suggested_addr) && req.suggested_addr != Some(key.client);
                if other_port || other_addr {
                    return Err(Refusal::CannotProvideExternal { retry_after: None });
                }
                key.internal_port
            }
            None => {
                let wants_other_addr =
                    !unspecified(req.suggested_addr) && req.suggested_addr != Some(external_addr);
                if wants_other_addr {
                    return Err(Refusal::CannotProvideExternal { retry_after: None });
                }
                if req.suggested_port != 0 {
                    if let Some(r) = self.cannot_provide(now, &key, req.suggested_port, &allowed) {
                        return Err(r);
                    }
                }
                // Field by field, so `ports` can be borrowed mutably beside it.
                let policy = PortPolicy {
                    allowed: &allowed,
                    unavailable: &self.unavailable[router_ports::index(key.protocol)],
                };
                self.ports
                    .allocate(
                        &self.table,
                        key.client,
                        key.protocol,
                        req.suggested_port,
                        policy,
                    )
                    .ok_or(Refusal::NoPortAvailable)?
            }
        };
        if existing.is_none()
            && self.table.count_for(key.client) >= self.config.max_mappings_per_client
        {
            return Err(Refusal::QuotaExceeded);
        }
        let asked = now
            + Duration::from_secs(u64::from(
                self.granted_lifetime(Lifetime::Clamped(req.lifetime)),
            ));
        // Never shortened: a refresh can only extend, and lifetime 0 asks what is left.
        let expires = match &existing {
            Some(p) if req.lifetime == 0 => p.expires,
            Some(p) => p.expires.max(asked),
            None => asked,
        };
        let lifetime = seconds_left(now, expires);
        let description = match req.description {
            DescriptionUpdate::Keep => existing.as_ref().and_then(|p| p.description.clone()),
            DescriptionUpdate::Set(d) => (!d.is_empty()).then_some(d),
        };
        let mut endpoint = old.clone().unwrap_or(Endpoint {
            external_port,
            map: None,
            peers: ThinVec::new(),
        });
        let peer = PeerMapping {
            remote: req.remote,
            client: req.client,
            lifetime,
            expires,
            description: description.clone(),
        };
        match endpoint.peers.iter_mut().find(|p| p.remote == req.remote) {
            Some(p) => *p = peer,
            None => endpoint.peers.push(peer),
        }
        self.put(now, key, Some(endpoint), changes);
        Ok((
            Granted {
                external: SocketAddr::new(external_addr, external_port),
                lifetime,
                filters: Vec::new(),
                description,
            },
            Undo::one(key, old),
        ))
    }

    /// Delete the MAP mapping of `key` (NAT-PMP lifetime 0, PCP MAP lifetime 0). PEER
    /// mappings of the endpoint stay: a PEER is never deleted by request (RFC 6887 §12.3).
    pub fn delete(
        &mut self,
        now: Timestamp,
        key: EndpointKey,
        claim: Claim,
        changes: &mut Vec<Change>,
    ) -> (DeleteOutcome, Undo) {
        let Some(old) = self.table.get(&key).cloned() else {
            return (DeleteOutcome::NotFound, Undo::default());
        };
        let not_owner = |t: Timestamp| DeleteOutcome::NotOwner {
            remaining: seconds_left(now, t),
            external_port: old.external_port,
        };
        let Some(m) = &old.map else {
            return match (claim, old.last_expiry()) {
                (Claim::Pcp(_), Some(t)) => (not_owner(t), Undo::default()),
                _ => (DeleteOutcome::NotFound, Undo::default()),
            };
        };
        match (&m.owner, claim) {
            (Owner::Pcp(o), Claim::Pcp(c)) if o.nonce != c.nonce => {
                return (not_owner(m.expires), Undo::default())
            }
            (Owner::Pcp(_), Claim::NatPmp) => return (not_owner(m.expires), Undo::default()),
            _ => {}
        }
        let mut endpoint = old.clone();
        endpoint.map = None;
        self.put(now, key, Some(endpoint), changes);
        (DeleteOutcome::Deleted, Undo::one(key, Some(old)))
    }

    /// NAT-PMP delete-all (RFC 6886 §3.4): every MAP mapping of `client` for `protocol` that
    /// NAT-PMP may delete (§6 A6: this client, this protocol only; nonce-owned ones stay and
    /// are counted in `kept`).
    pub fn delete_all(
        &mut self,
        now: Timestamp,
        client: IpAddr,
        protocol: crate::addr::Protocol,
        changes: &mut Vec<Change>,
    ) -> (DeleteAllOutcome, Undo) {
        let mut outcome = DeleteAllOutcome {
            deleted: 0,
            kept: 0,
        };
        let mut undo = Undo::default();
        for key in self.table.keys_of(client, protocol) {
            let (result, u) = self.delete(now, key, Claim::NatPmp, changes);
            match result {
                DeleteOutcome::Deleted => outcome.deleted += 1,
                DeleteOutcome::NotOwner { .. } => outcome.kept += 1,
                DeleteOutcome::NotFound => {}
            }
            undo.append(u);
        }
        (outcome, undo)
    }
}
