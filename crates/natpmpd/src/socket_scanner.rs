//! The router's own sockets are rescanned on a thread of their own. Reading `/proc/net/tcp`
//! walks the kernel's whole table of established connections, which is host-wide and sized by
//! the machine's memory, not by this namespace: 262 144 buckets on a 2-core test machine,
//! 11 ms a scan in an empty namespace, up to 18 ms under load (perf, during a fill). On the
//! event loop that was a stall every 2 s. The scan now asks the kernel's socket diagnostics
//! for listeners instead (local_sockets.rs), but falls back to `/proc` where they are missing,
//! so it stays off the loop: the loop takes the newest finished scan when it has one.

use crate::local_sockets;
use natpmp_pcp_core::gateway::router_ports::LocalSocket;
use std::time::Duration;
use tokio::sync::mpsc as tokio_mpsc;

/// What one scan found, and the first error it met (see `local_sockets::scan`).
pub type Scan = (Vec<LocalSocket>, Option<String>);

pub struct SocketScanner {
    results: tokio_mpsc::UnboundedReceiver<Scan>,
}

impl SocketScanner {
    /// Scan every `interval` on a new thread, the first time after one interval. The thread
    /// ends after the scan that finds the scanner dropped.
    pub fn start(interval: Duration) -> std::io::Result<SocketScanner> {
        let (tx, results) = tokio_mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("socket-scan".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                if tx.send(local_sockets::scan()).is_err() {
                    break;
                }
            })?;
        Ok(SocketScanner { results })
    }

    /// The newest scan not yet taken (pending until there is one). Older ones that piled up
    /// while the loop was busy are dropped: each scan holds everything.
    pub async fn next(&mut self) -> Scan {
        let Some(mut scan) = self.results.recv().await else {
            return std::future::pending().await;
        };
        while let Ok(newer) = self.results.try_recv() {
            scan = newer;
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::Protocol;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn a_scan_arrives_with_a_listener_opened_before_it() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (sockets, error) = runtime.block_on(async {
            let mut scanner = SocketScanner::start(Duration::from_millis(10)).unwrap();
            tokio::time::timeout(Duration::from_secs(10), scanner.next())
                .await
                .expect("no scan within 10 s")
        });
        assert_eq!(error, None);
        assert!(
            sockets.iter().any(|s| s.protocol == Protocol::Tcp
                && s.port == port
                && s.addr == Ipv4Addr::LOCALHOST),
            "127.0.0.1:{port} not in {sockets:?}"
        );
    }
}
