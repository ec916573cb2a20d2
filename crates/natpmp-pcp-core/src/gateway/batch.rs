//! Requests, a batch at a time (design.md §2): each accepted datagram goes to its front end,
//! which answers at once or stages kernel changes; all staged changes go to the kernel in one
//! transaction; each request is then committed or reverted, and only then are its reply
//! bytes written.
//!
//! If the transaction is refused, each request's changes are tried alone (in one transaction,
//! without the removals of elements already gone), so one bad request does not fail the
//! others. A refused addition means the kernel holds something we did not put
//! there (an element added by hand on the same port, say): the table is rebuilt from the
//! engine, which repairs both. Only if that fails are those requests reverted and their
//! clients told the request failed.
//!
//! A request is staged on top of uncommitted ones from the same client only when it touches
//! other endpoints than they did (front/scope.rs reads that from its bytes before it is
//! handled); when it may touch the same one, the batch is settled first. So a request never
//! reads state that a refusal could still take back, and the undo records, snapshots of the
//! endpoints each request touched, stay exact, as no two waiting requests share an endpoint.
//! A client that maps its whole quota in one burst gets one transaction per batch rather than
//! one per request.
//!
//! What a request reads beyond its own endpoints may still be uncommitted: its client's quota
//! count and which external ports are taken, by its own earlier requests as by other clients'.
//! Should the kernel refuse one of those, a request that was refused for lack of room was
//! refused too early; the error is a short-lived one (NAT-PMP result 4, PCP
//! USER_EX_QUOTA or NO_RESOURCES with a 30 s lifetime) and the client asks again.

use super::{Gateway, Outgoing};
use crate::addr::Protocol;
use crate::front::scope::{self, Scope};
use crate::front::{self, Dispatch, Handled, Pending};
use crate::kernel::{removed_for_good, Change, Errno, Forwarder};
use crate::time::Timestamp;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use tracing::{debug, warn};

/// A received datagram and where it came in.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub source: SocketAddr,
    /// The destination address in the IP header (may be broadcast or multicast).
    pub destination: IpAddr,
    /// The interface it arrived on.
    pub ifindex: u32,
    pub payload: &'a [u8],
}

struct Waiting<'a> {
    pending: Pending,
    request: &'a [u8],
    reply_to: SocketAddr,
    from: IpAddr,
    ifindex: u32,
    changes: Range<usize>,
}

#[derive(Default)]
struct Batch<'a> {
    waiting: Vec<Waiting<'a>>,
    changes: Vec<Change>,
    /// The clients with a waiting request.
    clients: HashSet<IpAddr>,
    /// What their waiting requests touched: one endpoint (protocol, internal port), or `None`
    /// for any of the client's.
    touched: HashSet<(IpAddr, Option<(Protocol, u16)>)>,
}

impl Batch<'_> {
    /// Whether a request of `client` with `scope` may touch what a waiting request did.
    fn overlaps(&self, client: IpAddr, scope: Scope) -> bool {
        match scope {
            Scope::Nothing => false,
            Scope::Client => self.clients.contains(&client),
            Scope::Endpoint {
                protocol,
                internal_port,
            } => {
                self.touched.contains(&(client, None))
                    || self
                        .touched
                        .contains(&(client, Some((protocol, internal_port))))
            }
        }
    }

    /// A request of `client` with `scope` is waiting, having touched `pending.touched()`.
    fn record(&mut self, client: IpAddr, scope: Scope, pending: &Pending) {
        self.clients.insert(client);
        let within = pending.touched().all(|k| scope.covers(client, k));
        // A request that touched more than its bytes said is a bug in front/scope.rs; in a
        // release build, at least nothing more is stacked on this client until the batch is
        // settled.
        debug_assert!(
            within,
            "{scope:?} does not cover {:?}",
            pending.touched().collect::<Vec<_>>()
        );
        let endpoint = match scope {
            Scope::Endpoint {
                protocol,
                internal_port,
            } if within => Some((protocol, internal_port)),
            _ => None,
        };
        self.touched.insert((client, endpoint));
    }

    fn clear(&mut self) {
        self.clients.clear();
        self.touched.clear();
    }
}

impl<F: Forwarder> Gateway<F> {
    /// Accept a datagram only if it came in on an enabled internal interface, addressed to
    /// one of that interface's own addresses (not broadcast, not multicast), from a source on
    /// that interface's subnets (RFC 6886 §3.3, RFC 6887 §8.2; rfc-checklist §2 A). Everything
    /// else, the external side included, is dropped without a word.
    pub fn accepts(&self, d: &Datagram) -> bool {
        self.internal_interfaces().any(|iface| {
            iface.index == d.ifindex
                && iface.addrs.iter().any(|a| a.addr == d.destination)
                && iface.addrs.iter().any(|a| a.contains(d.source.ip()))
        })
    }

    /// Answer a batch of datagrams, appending the replies to `out`.
    pub fn handle_datagrams<'a>(
        &mut self,
        now: Timestamp,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
        out: &mut Vec<Outgoing>,
    ) {
        if !self.serving {
            return;
        }
        let mut batch = Batch::default();
        for d in datagrams {
            if !self.accepts(&d) {
                debug!(
                    "dropped a datagram from {} to {} on ifindex {}",
                    d.source, d.destination, d.ifindex
                );
                self.stats.dropped += 1;
                continue;
            }
            // Over the client's rate limit: dropped without a word, before any parsing (why
            // silent, for PCP too: gateway/rate_limit.rs). Only admitted datagrams get here, so
            // what the gateway drops anyway never makes a bucket.
            if !self.rate_limiter.admit(now, d.source.ip()) {
                continue;
            }
            let client = d.source.ip().to_canonical();
            let scope = scope::scope(d.payload, self.config.pcp);
            if batch.overlaps(client, scope) {
                self.settle(now, &mut batch, out);
            }
            let start = batch.changes.len();
            match self.handle_one(now, &d, &mut batch.changes) {
                Handled::Drop => self.stats.dropped += 1,
                Handled::Reply(payload) => {
                    self.stats.count_reply(&payload);
                    out.push(Outgoing {
                        payload,
                        from: d.destination,
                        ifindex: d.ifindex,
                        to: d.source,
                    })
                }
                Handled::Pending(pending) => {
                    batch.record(client, scope, &pending);
                    batch.waiting.push(Waiting {
                        pending,
                        request: d.payload,
                        reply_to: d.source,
                        from: d.destination,
                        ifindex: d.ifindex,
                        changes: start..batch.changes.len(),
                    });
                }
            }
        }
        self.settle(now, &mut batch, out);
    }

    fn handle_one(&mut self, now: Timestamp, d: &Datagram, changes: &mut Vec<Change>) -> Handled {
        match front::dispatch(d.payload, self.config.pcp) {
            Dispatch::Drop => Handled::Drop,
            // NAT-PMP is IPv4-only (RFC 6886 §1): with PCP off nothing at all is served over
            // IPv6, as with everything off (§6 A16).
            _ if d.source.is_ipv6() && !self.config.pcp => Handled::Drop,
            Dispatch::NatPmp => match d.source.ip() {
                IpAddr::V4(client) => {
                    front::natpmp::handle(&mut self.engine, now, client, d.payload, changes)
                }
                // Over IPv6 only PCP is spoken, and the nearest version it speaks is 2
                // (rfc-checklist §4 case 71).
                IpAddr::V6(_) => Handled::Reply(front::unsupported_version(
                    d.payload,
                    self.engine.epoch_seconds(now),
                    true,
                )),
            },
            Dispatch::Pcp => front::pcp::handle(
                &mut self.engine,
                now,
                d.source,
                d.destination,
                d.payload,
                self.config.pcp_policy,
                changes,
            ),
            Dispatch::UnsupportedVersion => Handled::Reply(front::unsupported_version(
                d.payload,
                self.engine.epoch_seconds(now),
                self.config.pcp,
            )),
        }
    }

    /// Apply the batch's changes, commit or revert each waiting request, write its reply.
    fn settle(&mut self, now: Timestamp, batch: &mut Batch<'_>, out: &mut Vec<Outgoing>) {
        let waiting = std::mem::take(&mut batch.waiting);
        let changes = std::mem::take(&mut batch.changes);
        batch.clear();
        if waiting.is_empty() {
            return;
        }
        let mut committed = vec![true; waiting.len()];
        if let Err(e) = self.kernel_apply(&changes) {
            warn!(
                "{e}; trying the batch's {} request(s) one by one",
                waiting.len()
            );
            let refused: Vec<usize> = waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| !self.apply_tolerant(&changes[w.changes.clone()]))
                .map(|(i, _)| i)
                .collect();
            if !refused.is_empty() {
                match self.rebuild(now) {
                    Ok(n) => warn!("natpmpd table rebuilt with {n} element(s) after a refusal"),
                    Err(e) => {
                        warn!(
                            "cannot rebuild the natpmpd table ({e}): {} request(s) fail",
                            refused.len()
                        );
                        for i in refused {
                            committed[i] = false;
                        }
                    }
                }
            }
        }
        for (w, ok) in waiting.into_iter().zip(committed) {
            if ok {
                self.flows_to_clear
                    .extend(removed_for_good(&changes[w.changes.clone()]));
                for c in &changes[w.changes.clone()] {
                    debug!("{c}");
                }
            } else {
                warn!(
                    "request from {} reverted: the kernel refused its changes",
                    w.reply_to
                );
            }
            let payload = w.pending.finish(&mut self.engine, now, ok, w.request);
            self.stats.count_reply(&payload);
            out.push(Outgoing {
                payload,
                from: w.from,
                ifindex: w.ifindex,
                to: w.reply_to,
            });
        }
        self.leases_changed(now);
    }

    /// Apply one request's changes; if the kernel refuses them, try once more without the
    /// removals it refused as already gone (ENOENT: an element another tool flushed must not
    /// block the renewal that follows). Still one transaction, so a refusal leaves the kernel
    /// exactly as it was, which is what reverting the request assumes. Only refused additions
    /// (or a transaction refused as a whole) count as a failure.
    pub(super) fn apply_tolerant(&mut self, changes: &[Change]) -> bool {
        if changes.is_empty() {
            return true;
        }
        let gone: Vec<usize> = match self.kernel_apply(changes) {
            Ok(()) => return true,
            Err(e) => e
                .refused()
                .iter()
                .filter(|r| {
                    r.errno == Errno::ENOENT && changes.get(r.index).is_some_and(|c| !c.is_add())
                })
                .map(|r| r.index)
                .collect(),
        };
        for &i in &gone {
            debug!("{} not applied (already gone)", changes[i]);
        }
        let rest: Vec<Change> = (0..changes.len())
            .filter(|i| !gone.contains(i))
            .map(|i| changes[i])
            .collect();
        rest.is_empty() || self.kernel_apply(&rest).is_ok()
    }
}
