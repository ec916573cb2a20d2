//! `natpmpctl remove`: which mappings (a number from `print`, a client, all), the daemon's
//! side (the gateway's removal, then one log line saying who removed what), and the answer.
//!
//! A number is resolved by natpmpctl against a fresh `print`, and sent as the mapping
//! itself (client, protocol, internal port, PEER remote), never as a number: the table may
//! change between the two calls, and a number that now names another mapping must not
//! remove it.

use super::print::rules;
use super::{Peer, Response};
use natpmp_pcp_core::gateway::{Removal, Removed};
use natpmp_pcp_core::{Forwarder, Gateway, MappingView, Timestamp};
use tracing::{info, warn};

/// The mapping number `number` of a `print` answer, as a removal.
pub fn removal_of_number(listing: &Response, number: usize) -> Result<Removal, String> {
    match listing.mappings.get(number) {
        Some(view) => Ok(Removal::of(view)),
        None => Err(match rules(listing).len() {
            0 => format!("there is no mapping {number}: natpmpd has no mappings"),
            n => format!(
                "there is no mapping {number}: `natpmpctl print` numbers them 0 to {}",
                n - 1
            ),
        }),
    }
}

/// The daemon's side: remove, log who did it, answer. The caller clears the flows after.
pub fn answer<F: Forwarder>(
    gateway: &mut Gateway<F>,
    now: Timestamp,
    removal: &Removal,
    by: Option<Peer>,
) -> Response {
    let who = by.map_or_else(|| "an unknown peer".to_owned(), |p| p.to_string());
    match gateway.remove(now, removal) {
        Removed::Done(views) => {
            for v in &views {
                info!("natpmpctl remove by {who}: {}", describe(v));
            }
            Response {
                ok: true,
                removed: views,
                ..Response::default()
            }
        }
        Removed::NothingMatched => Response::error(match removal {
            Removal::One { .. } => "no such mapping (it may have expired or been removed \
                                    already; see `natpmpctl print`)"
                .to_owned(),
            Removal::Client { client } => format!("{client} has no mappings"),
            Removal::All => "there are no mappings to remove".to_owned(),
        }),
        Removed::Refused => {
            warn!("natpmpctl remove by {who}: the kernel refused; nothing removed");
            Response::error(
                "the kernel refused the changes; nothing was removed (see natpmpd's log)",
            )
        }
        Removed::NotServing => {
            Response::error("natpmpd is not serving (enabled = false): there are no mappings")
        }
    }
}

/// One mapping in a log line or natpmpctl's confirmation.
pub fn describe(v: &MappingView) -> String {
    let external = match v.external_addr {
        Some(a) if a.is_ipv6() => format!("[{a}]:{}", v.external_port),
        Some(a) => format!("{a}:{}", v.external_port),
        None => format!("port {}", v.external_port),
    };
    let internal = if v.client.is_ipv6() {
        format!("[{}]:{}", v.client, v.internal_port)
    } else {
        format!("{}:{}", v.client, v.internal_port)
    };
    let peer = v.remote.map(|r| format!(" peer {r}")).unwrap_or_default();
    format!(
        "{} {external} -> {internal}{peer} (via {})",
        v.protocol,
        v.via.as_str()
    )
}
