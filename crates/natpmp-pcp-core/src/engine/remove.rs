//! Mappings removed by hand (`natpmpctl remove`): one mapping, every mapping of a client, or
//! all of them. Like any request, the removal stages its kernel changes and returns an
//! [`Undo`], so the gateway can put everything back if the kernel refuses.
//!
//! The epoch does not reset: the other mappings are intact, and a reset would tell every
//! client to re-create what the operator just removed.

use super::{Engine, Undo};
use crate::addr::Protocol;
use crate::kernel::Change;
use crate::time::Timestamp;
use crate::view::{MappingKind, MappingView};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Which mappings to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "which", rename_all = "kebab-case")]
pub enum Removal {
    /// One mapping, named as `natpmpctl print` shows it: the MAP of an endpoint (`remote`
    /// absent) or one of its PEERs.
    One {
        client: IpAddr,
        protocol: Protocol,
        internal_port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<SocketAddr>,
    },
    /// Every mapping of one client (MAP and PEER, both protocols).
    Client { client: IpAddr },
    /// Every mapping.
    All,
}

impl Removal {
    /// Whether `view` is one of the mappings this removal takes.
    pub fn matches(&self, view: &MappingView) -> bool {
        match self {
            Removal::One {
                client,
                protocol,
                internal_port,
                remote,
            } => {
                view.client == *client
                    && view.protocol == *protocol
                    && view.internal_port == *internal_port
                    && match remote {
                        None => view.kind == MappingKind::Map,
                        Some(r) => view.kind == MappingKind::Peer && view.remote == Some(*r),
                    }
            }
            Removal::Client { client } => view.client == *client,
            Removal::All => true,
        }
    }

    /// The removal that takes exactly the mapping `view` shows.
    pub fn of(view: &MappingView) -> Removal {
        Removal::One {
            client: view.client,
            protocol: view.protocol,
            internal_port: view.internal_port,
            remote: match view.kind {
                MappingKind::Map => None,
                MappingKind::Peer => view.remote,
            },
        }
    }
}

impl Engine {
    /// Remove the mappings `removal` picks, staging the kernel changes. Returns what was
    /// removed (as `print` showed it a moment before) and how to put it back.
    pub fn remove_by_hand(
        &mut self,
        now: Timestamp,
        removal: &Removal,
        changes: &mut Vec<Change>,
    ) -> (Vec<MappingView>, Undo) {
        let removed: Vec<MappingView> = self
            .mappings(now)
            .into_iter()
            .filter(|v| removal.matches(v))
            .collect();
        let keys: Vec<_> = self
            .table
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| {
                removed.iter().any(|v| {
                    v.client == k.client
                        && v.protocol == k.protocol
                        && v.internal_port == k.internal_port
                })
            })
            .collect();
        let mut undo = Undo::default();
        for key in keys {
            let Some(old) = self.table.get(&key).cloned() else {
                continue;
            };
            let mut endpoint = old.clone();
            match removal {
                Removal::One { remote: None, .. } => endpoint.map = None,
                Removal::One {
                    remote: Some(r), ..
                } => endpoint.peers.retain(|p| p.remote != *r),
                Removal::Client { .. } | Removal::All => {
                    endpoint.map = None;
                    endpoint.peers.clear();
                }
            }
            self.put(now, key, Some(endpoint), changes);
            undo.push(key, Some(old));
        }
        (removed, undo)
    }
}
