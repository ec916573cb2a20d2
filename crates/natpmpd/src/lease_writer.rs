//! The lease file is written on a thread of its own: serializing and syncing 100 000 mappings
//! takes far longer than the event loop may stop answering requests. The loop hands over a
//! snapshot and goes on; when several pile up while a write is under way, only the newest is
//! written (it holds everything the older ones did). Each write's outcome comes back to the
//! loop, which tells the gateway (`lease_saved`), so retries and the log stay where they were.

use crate::leases;
use natpmp_pcp_core::gateway::LeaseSnapshot;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::mpsc as tokio_mpsc;

/// A snapshot, and the wall-clock time (Unix milliseconds) its expiries count from.
type Job = (LeaseSnapshot, u64);

/// How a write went: the number of leases written, or what failed.
pub type WriteResult = Result<usize, String>;

pub struct LeaseWriter {
    jobs: Option<mpsc::Sender<Job>>,
    results: tokio_mpsc::UnboundedReceiver<WriteResult>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseWriter {
    pub fn new(path: PathBuf) -> std::io::Result<LeaseWriter> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = tokio_mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || {
                while let Ok(mut job) = job_rx.recv() {
                    // Coalesce: only the newest snapshot matters.
                    while let Ok(newer) = job_rx.try_recv() {
                        job = newer;
                    }
                    let (snapshot, taken_at_unix_ms) = job;
                    let result = leases::save(&path, taken_at_unix_ms, &snapshot)
                        .map(|()| snapshot.records.len())
                        .map_err(|e| format!("{}: {e}", path.display()));
                    if result_tx.send(result).is_err() {
                        break;
                    }
                }
            })?;
        Ok(LeaseWriter {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
        })
    }

    /// Hand a snapshot to the writer thread, with the wall-clock time of its `taken_at`.
    pub fn submit(&self, snapshot: LeaseSnapshot, taken_at_unix_ms: u64) {
        if let Some(jobs) = &self.jobs {
            // The thread only ends when `finish` drops the sender.
            let _ = jobs.send((snapshot, taken_at_unix_ms));
        }
    }

    /// The next write's outcome (pending until there is one).
    pub async fn written(&mut self) -> WriteResult {
        match self.results.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Wait for the writes under way to end (before the final, clean write at shutdown,
    /// which must not be overtaken by an older snapshot).
    pub fn finish(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LeaseWriter {
    fn drop(&mut self) {
        self.finish();
    }
}
