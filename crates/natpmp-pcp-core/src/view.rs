//! A read-only view of one mapping, for `natpmpctl print` and logs.

use crate::forward::Protocol;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingView {
    /// The LAN host that asked (the request's source address, RFC 6886 §3.3).
    pub client: Ipv4Addr,
    pub protocol: Protocol,
    pub internal_port: u16,
    /// The public address the mapping is reachable on; `None` while there is none.
    pub external_addr: Option<Ipv4Addr>,
    pub external_port: u16,
    /// The lifetime granted by the last request, in seconds.
    pub lifetime: u32,
    /// Seconds left before the mapping expires.
    pub expires_in: u32,
    /// What the mapping is for, as RouterOS shows it after `nat-pmp <client>: `.
    pub description: String,
}
