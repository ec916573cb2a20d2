//! The lease file: every dynamic mapping with its expiry, so mappings survive a restart or a
//! crash (RFC 6886 §3.7 allows keeping mappings in persistent storage).
//!
//! Format: one JSON document, versioned (`"format": "natpmpd-leases", "version": 1`), with
//! expiries as wall-clock Unix milliseconds, since nothing else survives a restart. Written
//! atomically: a temporary file in the same directory, fsync, rename over the old file, fsync
//! of the directory; a crash at any point leaves either the old or the new file whole.
//!
//! Epoch rule (written down here because the RFC leaves it to us): when the lease file is read
//! back whole, the mapping state survived, so the epoch continues from the saved value plus the
//! wall-clock time the daemon was down. When the file is missing or unreadable, state was lost
//! and the epoch starts again from 0 (RFC 6886 §3.6). Announcements go out at every start.
//!
//! Only the file written at a clean shutdown says `"clean": true`. A file without it was
//! written by a periodic save, so the run that wrote it crashed (or was killed) and mappings
//! acknowledged after that save are missing; the gateway then asks the kernel's table what
//! the file missed and restarts the epoch if anything was (core `gateway::recovery`).

use natpmp_pcp_core::engine::mapping::Owner;
use natpmp_pcp_core::engine::records::{MappingRecord, RecordKind};
use natpmp_pcp_core::gateway::{LeaseSnapshot, RestoredLeases};
use natpmp_pcp_core::Protocol;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const FORMAT: &str = "natpmpd-leases";
/// Version 2 holds PCP mappings too (nonce, filters, PEER remotes, description); version 3
/// adds `clean`. Versions 1 (NAT-PMP only) and 2 (read as not clean) are still read.
const VERSION: u32 = 3;

/// Just enough to tell which layout the rest of the file has.
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct LeaseFile<M> {
    format: String,
    version: u32,
    saved_at_unix_ms: u64,
    external_addr: Option<Ipv4Addr>,
    epoch_seconds: u32,
    /// Written at a clean shutdown: nothing was acknowledged after it.
    #[serde(default)]
    clean: bool,
    /// `Vec<Lease>` (or `Vec<LeaseV1>`) when read; [`LeasesOut`] when written.
    mappings: M,
}

/// A version-2 lease: a core `MappingRecord` with its expiry as wall-clock time. Owned when
/// read; borrowing its kind and description from the record when written ([`LeaseOut`]).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Lease<K = RecordKind, D = String> {
    client: IpAddr,
    protocol: Protocol,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
    expires_at_unix_ms: u64,
    #[serde(flatten)]
    kind: K,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<D>,
}

/// The records of a snapshot as they are written: each becomes a [`Lease`] on the fly, so a
/// save holds neither a second copy of the table nor the whole text in memory.
struct LeasesOut<'a> {
    records: &'a [MappingRecord],
    now_unix_ms: u64,
}

/// A [`Lease`] that borrows from its record.
type LeaseOut<'a> = Lease<&'a RecordKind, &'a str>;

impl Serialize for LeasesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.records.iter().map(|r| LeaseOut {
            client: r.client,
            protocol: r.protocol,
            internal_port: r.internal_port,
            external_port: r.external_port,
            lifetime: r.lifetime,
            expires_at_unix_ms: self.now_unix_ms.saturating_add(r.expires_in_ms),
            kind: &r.kind,
            description: r.description.as_deref(),
        }))
    }
}

/// A version-1 lease (NAT-PMP only).
#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct LeaseV1 {
    client: Ipv4Addr,
    protocol: Protocol,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
    expires_at_unix_ms: u64,
}

impl From<LeaseV1> for Lease {
    fn from(l: LeaseV1) -> Lease {
        Lease {
            client: l.client.into(),
            protocol: l.protocol,
            internal_port: l.internal_port,
            external_port: l.external_port,
            lifetime: l.lifetime,
            expires_at_unix_ms: l.expires_at_unix_ms,
            kind: RecordKind::Map {
                owner: Owner::NatPmp,
                filters: Vec::new(),
            },
            description: None,
        }
    }
}

/// What a lease file says, converted to the time of reading.
#[derive(Debug, PartialEq)]
pub struct Loaded {
    pub leases: RestoredLeases,
    /// How many saved mappings had expired while the daemon was down.
    pub expired: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot read the lease file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the lease file {path} is not a valid natpmpd lease file ({reason}); starting with no mappings")]
    Corrupt { path: PathBuf, reason: String },
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Read the lease file. `Ok(None)` when there is none (a first start).
pub fn load(path: &Path, now_unix_ms: u64) -> Result<Option<Loaded>, LeaseError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LeaseError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let corrupt = |reason: String| LeaseError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let header: Header = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if header.format != FORMAT {
        return Err(corrupt(format!(
            "format is {:?}, not {FORMAT:?}",
            header.format
        )));
    }
    let file: LeaseFile<Vec<Lease>> = match header.version {
        1 => {
            let v1: LeaseFile<Vec<LeaseV1>> =
                serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
            LeaseFile {
                format: v1.format,
                version: v1.version,
                saved_at_unix_ms: v1.saved_at_unix_ms,
                external_addr: v1.external_addr,
                epoch_seconds: v1.epoch_seconds,
                clean: false,
                mappings: v1.mappings.into_iter().map(Lease::from).collect(),
            }
        }
        2 | VERSION => serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?,
        other => {
            return Err(corrupt(format!(
                "version {other} is not supported (this natpmpd reads versions 1 to {VERSION})"
            )))
        }
    };
    // A wall clock stepped backwards counts as no time passed, never as negative time.
    let down_ms = now_unix_ms.saturating_sub(file.saved_at_unix_ms);
    let epoch_seconds = file
        .epoch_seconds
        .saturating_add(u32::try_from(down_ms / 1000).unwrap_or(u32::MAX));
    let mut records = Vec::new();
    let mut expired = 0;
    for l in file.mappings {
        // Never more than was left at the save, whatever the wall clock did since.
        let left = l
            .expires_at_unix_ms
            .saturating_sub(now_unix_ms)
            .min(l.expires_at_unix_ms.saturating_sub(file.saved_at_unix_ms));
        if left == 0 {
            expired += 1;
            continue;
        }
        records.push(MappingRecord {
            client: l.client,
            protocol: l.protocol,
            internal_port: l.internal_port,
            external_port: l.external_port,
            lifetime: l.lifetime,
            expires_in_ms: left,
            kind: l.kind,
            description: l.description,
        });
    }
    Ok(Some(Loaded {
        leases: RestoredLeases {
            external_addr: file.external_addr,
            epoch_seconds,
            records,
            clean: file.clean,
        },
        expired,
    }))
}

/// Write the lease file atomically.
pub fn save(path: &Path, now_unix_ms: u64, snapshot: &LeaseSnapshot) -> io::Result<()> {
    let file = LeaseFile {
        format: FORMAT.to_owned(),
        version: VERSION,
        saved_at_unix_ms: now_unix_ms,
        external_addr: snapshot.external_addr,
        epoch_seconds: snapshot.epoch_seconds,
        clean: snapshot.clean,
        mappings: LeasesOut {
            records: &snapshot.records,
            now_unix_ms,
        },
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "lease-file names no file"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        // Streamed: 100 000 leases are ~25 MB of text, which never needs to be in memory.
        let mut f = io::BufWriter::with_capacity(64 << 10, std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, &file).map_err(io::Error::other)?;
        f.write_all(b"\n")?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use natpmp_pcp_core::addr::Prefix;
    use natpmp_pcp_core::engine::mapping::{Filter, Nonce, PcpClient, ReplyPath};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("natpmpd-leases-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rec(port: u16, left_ms: u64) -> MappingRecord {
        MappingRecord {
            client: Ipv4Addr::new(192, 168, 88, 10).into(),
            protocol: Protocol::Tcp,
            internal_port: port,
            external_port: port + 1000,
            lifetime: 3600,
            expires_in_ms: left_ms,
            kind: RecordKind::Map {
                owner: Owner::NatPmp,
                filters: Vec::new(),
            },
            description: None,
        }
    }

    fn pcp_client() -> PcpClient {
        PcpClient {
            nonce: Nonce([7; 12]),
            reply_path: ReplyPath {
                client_port: 40001,
                server: Ipv4Addr::new(192, 168, 88, 1).into(),
            },
        }
    }

    fn snapshot(addr: Option<Ipv4Addr>, epoch: u32, records: Vec<MappingRecord>) -> LeaseSnapshot {
        LeaseSnapshot {
            external_addr: addr,
            epoch_seconds: epoch,
            records,
            taken_at: natpmp_pcp_core::Timestamp::ZERO,
            clean: false,
        }
    }

    #[test]
    fn round_trip_counts_down_expiries_and_the_epoch_goes_on() {
        let d = tmpdir("rt");
        let path = d.join("sub/leases.json");
        let addr = Some(Ipv4Addr::new(203, 0, 113, 1));
        save(
            &path,
            1_000_000,
            &snapshot(addr, 50, vec![rec(80, 10_000), rec(81, 60_000)]),
        )
        .unwrap();
        let r = load(&path, 1_020_000).unwrap().unwrap();
        assert_eq!(r.leases.external_addr, addr);
        assert_eq!(r.leases.epoch_seconds, 70);
        assert_eq!(r.expired, 1);
        assert_eq!(r.leases.records, vec![rec(81, 40_000)]);
        // No temporary file is left next to it.
        let names: Vec<_> = std::fs::read_dir(d.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn pcp_mappings_keep_nonce_filters_peers_and_description() {
        let d = tmpdir("pcp");
        let path = d.join("leases.json");
        let mut map = rec(80, 30_000);
        map.kind = RecordKind::Map {
            owner: Owner::Pcp(pcp_client()),
            filters: vec![Filter {
                prefix: Prefix::new(Ipv4Addr::new(198, 51, 100, 0).into(), 24).unwrap(),
                port: 443,
            }],
        };
        map.description = Some("ApplicationX".into());
        let mut peer = rec(81, 30_000);
        peer.kind = RecordKind::Peer {
            remote: "198.51.100.7:4000".parse().unwrap(),
            owner: pcp_client(),
        };
        save(
            &path,
            1000,
            &snapshot(None, 0, vec![map.clone(), peer.clone()]),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"nonce\": \"070707070707070707070707\""),
            "{text}"
        );
        let r = load(&path, 1000).unwrap().unwrap();
        assert_eq!(r.leases.records, vec![map, peer]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn only_a_shutdown_snapshot_is_clean_and_version_2_files_are_not() {
        let d = tmpdir("clean");
        let path = d.join("leases.json");
        let mut shut = snapshot(None, 0, vec![rec(80, 10_000)]);
        shut.clean = true;
        save(&path, 1000, &shut).unwrap();
        assert!(load(&path, 1000).unwrap().unwrap().leases.clean);
        save(&path, 1000, &snapshot(None, 0, vec![rec(80, 10_000)])).unwrap();
        assert!(!load(&path, 1000).unwrap().unwrap().leases.clean);
        // Version 2 had no flag: such a file may come from a crash.
        std::fs::write(
            &path,
            r#"{"format":"natpmpd-leases","version":2,"saved_at_unix_ms":1000,
                "external_addr":null,"epoch_seconds":5,"mappings":[]}"#,
        )
        .unwrap();
        let r = load(&path, 1000).unwrap().unwrap();
        assert!(!r.leases.clean);
        assert_eq!(r.leases.epoch_seconds, 5);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn version_1_files_are_still_read() {
        let d = tmpdir("v1");
        let path = d.join("leases.json");
        std::fs::write(
            &path,
            r#"{"format":"natpmpd-leases","version":1,"saved_at_unix_ms":1000,
                "external_addr":"203.0.113.1","epoch_seconds":5,"mappings":[
                {"client":"192.168.88.10","protocol":"tcp","internal_port":80,
                 "external_port":1080,"lifetime":3600,"expires_at_unix_ms":11000}]}"#,
        )
        .unwrap();
        let r = load(&path, 1000).unwrap().unwrap();
        assert_eq!(r.leases.records, vec![rec(80, 10_000)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_file_is_a_first_start() {
        let d = tmpdir("missing");
        assert_eq!(load(&d.join("none.json"), 0).unwrap(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn truncated_garbage_and_foreign_files_are_corrupt_not_a_crash() {
        let d = tmpdir("corrupt");
        let path = d.join("leases.json");
        save(&path, 1000, &snapshot(None, 0, vec![rec(80, 10_000)])).unwrap();
        let whole = std::fs::read(&path).unwrap();
        for cut in [1, whole.len() / 2, whole.len() - 3] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let e = load(&path, 1000).unwrap_err();
            assert!(
                e.to_string().contains("not a valid natpmpd lease file"),
                "{e}"
            );
        }
        std::fs::write(&path, b"\xff\x00binary").unwrap();
        assert!(matches!(load(&path, 0), Err(LeaseError::Corrupt { .. })));
        let other = String::from_utf8(whole.clone())
            .unwrap()
            .replace("\"version\": 3", "\"version\": 9");
        std::fs::write(&path, other).unwrap();
        let e = load(&path, 0).unwrap_err().to_string();
        assert!(e.contains("version 9 is not supported"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_clock_stepped_back_adds_no_time() {
        let d = tmpdir("clock");
        let path = d.join("leases.json");
        save(&path, 1_000_000, &snapshot(None, 5, vec![rec(80, 10_000)])).unwrap();
        let r = load(&path, 900_000).unwrap().unwrap();
        assert_eq!(r.leases.epoch_seconds, 5);
        assert_eq!(r.leases.records[0].expires_in_ms, 10_000);
        let _ = std::fs::remove_dir_all(&d);
    }
}
