//! Ending the open flows of removed elements, off the request path (issue 9 item 3).
//!
//! A removed element stops new flows at once (the kernel no longer finds it), but flows that
//! are already open keep their translation or pinhole in conntrack until their entries are
//! deleted. Finding them takes one dump of the whole conntrack table (about 11 ms with
//! 262 144 buckets, however few entries), so doing it after every batch held churn to
//! ~2 500 requests/s. Here a thread of its own does it: the loop hands over the removed
//! elements and goes on; the thread takes everything queued since its last pass and clears
//! it with one dump.
//!
//! After each pass the thread pauses for three times as long as the pass took, so it uses at
//! most a quarter of a core however fast elements are removed. Back to back, the dumps took
//! 72 % of a core during the load benchmark's churn; on a 2-core machine that starved the
//! request loop (36 ms without the CPU, perf) and set the probe's p99. Bound: an element's
//! flows end at most five passes after its removal (the pass under way, its pause, then its
//! own pass), about 55 ms at that table size, 11 ms a pass. A pass costs the dump however many
//! elements it clears: each entry is matched with one lookup (`flow_match`), where asking
//! every element of every entry took 3.8 s for 100 000 flows and 5 000 removed mappings.
//!
//! The thread has its own netlink socket, opened by [`FlowCleaner::new`] on the caller's
//! thread, so it lives in the caller's network namespace like the forwarder's.

use crate::conntrack::{self, Entry};
use crate::flow_match::RemovedElements;
use crate::nl::{ErrorMsg, MsgBuilder};
use crate::session::{refused, Acks, Session};
use natpmp_pcp_core::kernel::{Element, KernelError};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

/// How long the thread rests after a pass, in multiples of the pass's own time.
const PAUSE_PER_PASS: u32 = 3;

enum Job {
    Clear(Vec<Element>),
    /// Answer once everything queued before it is done.
    Barrier(mpsc::Sender<()>),
}

pub struct FlowCleaner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl FlowCleaner {
    pub fn new() -> std::io::Result<FlowCleaner> {
        let mut session = Session::open()?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("conntrack-cleaner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let mut gone = Vec::new();
                    let mut barriers = Vec::new();
                    let mut take = |job| match job {
                        Job::Clear(e) => gone.extend(e),
                        Job::Barrier(b) => barriers.push(b),
                    };
                    take(job);
                    // Coalesce whatever piled up meanwhile into this one pass.
                    while let Ok(job) = rx.try_recv() {
                        take(job);
                    }
                    let started = Instant::now();
                    if !gone.is_empty() {
                        match clear_conntrack(&mut session, &gone) {
                            Ok(n) => tracing::debug!(
                                entries = n,
                                elements = gone.len(),
                                "cleared conntrack"
                            ),
                            Err(e) => tracing::warn!(
                                error = %e,
                                elements = gone.len(),
                                "removed elements, but could not clear their conntrack \
                                 entries; open flows keep their translation or pinhole until \
                                 they time out"
                            ),
                        }
                    }
                    for b in barriers {
                        let _ = b.send(());
                    }
                    if !gone.is_empty() {
                        std::thread::sleep(started.elapsed() * PAUSE_PER_PASS);
                    }
                }
            })?;
        Ok(FlowCleaner {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queue the flows of `gone` to be ended.
    pub fn clear(&self, gone: &[Element]) {
        if gone.is_empty() {
            return;
        }
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Clear(gone.to_vec()));
        }
    }

    /// Wait until everything queued so far is done.
    pub fn wait(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (tx, rx) = mpsc::channel();
        if jobs.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

impl Drop for FlowCleaner {
    /// What was queued is still cleared before the thread ends.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Delete the conntrack entries of `gone` (see `conntrack.rs`) with one dump of the conntrack
/// table, whatever the number of elements. Returns how many entries were deleted.
pub fn clear_conntrack(session: &mut Session, gone: &[Element]) -> Result<usize, KernelError> {
    if gone.is_empty() {
        return Ok(0);
    }
    let removed = RemovedElements::new(gone);
    let mut doomed: Vec<Entry> = Vec::new();
    session.dump(
        conntrack::encode_dump,
        |p| {
            if let Some(e) = conntrack::parse_entry(p) {
                if removed.own(&e) {
                    doomed.push(e);
                }
            }
        },
        "listing conntrack entries",
    )?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let first = session.peek_seq();
    let mut b = MsgBuilder::with_capacity(doomed.len() * 80);
    for e in &doomed {
        let seq = session.next_seq();
        conntrack::encode_delete(&mut b, e, seq);
    }
    let errors = session.exchange(b.as_bytes()?, first, doomed.len(), None, Acks::Every)?;
    // ENOENT: the flow ended by itself between the dump and the delete. Fine.
    let failed: Vec<&ErrorMsg> = errors.iter().filter(|e| e.errno != libc::ENOENT).collect();
    if let Some(first_err) = failed.first() {
        let what = format!(
            "deleting {} of {} conntrack entries",
            failed.len(),
            doomed.len()
        );
        return Err(refused(what, first_err));
    }
    Ok(doomed.len() - errors.len())
}
