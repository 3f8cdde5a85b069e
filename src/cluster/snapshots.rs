//! Snapshot transfer between members, chunked, resumable and rate-limited (issue 12's limits).
//!
//! raft-rs hands a follower that fell behind (or a new replica) one `MsgSnapshot` carrying the
//! group's whole state. Sent as one frame it would be bounded by the frame limit, restart from
//! nothing after any failure and take all of a link's bandwidth. So the sender keeps the bytes
//! (`Outbox`) and sends the message with a small manifest in their place (group, index, term,
//! length, SHA-256); the receiver (`Inbox`) fetches the bytes in chunks of `CHUNK_BYTES`,
//! appending them to a file in its data folder — a transfer cut by a failure or a restart
//! resumes where the file ends — checks the hash, and only then hands raft the message with
//! the bytes back in. The sender serves chunks within `snapshot_bytes_per_second`.

use super::peer::{ask, PeerRequest, PeerResponse};
use super::transport::Transport;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One chunk of a transfer.
pub const CHUNK_BYTES: u64 = 1 << 20;
/// The largest snapshot a manifest may announce.
pub const SNAPSHOT_BYTES_MAX: u64 = 16 << 30;
const MAGIC: &[u8] = b"moneta-snapshot-manifest-v1\0";
/// The longest one chunk request may take before the transfer is retried (resuming).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// Snapshot transfers a node runs at once (a leader offers a snapshot again until it is taken).
pub const TRANSFERS_MAX: usize = 2;

/// What stands in a `MsgSnapshot` for the bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub group: u32,
    pub index: u64,
    pub term: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Manifest {
    fn key(&self) -> (u32, u64, u64) {
        (self.group, self.index, self.term)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&crate::storage::codec::encode(self));
        out
    }

    /// The manifest a snapshot's data holds (None: the data is not a manifest).
    pub fn decode(data: &[u8]) -> Option<Result<Manifest, String>> {
        let rest = data.strip_prefix(MAGIC)?;
        Some(
            crate::storage::codec::decode::<Manifest>(rest)
                .map_err(|e| format!("a snapshot manifest does not decode: {e}"))
                .and_then(|m| {
                    if m.len > SNAPSHOT_BYTES_MAX {
                        Err(format!("a snapshot of {} bytes is over the limit", m.len))
                    } else {
                        Ok(m)
                    }
                }),
        )
    }
}

/// Paces bytes sent to a rate (a token bucket one chunk deep).
pub struct Pace {
    bytes_per_second: u64,
    next_free: Mutex<Instant>,
}

impl Pace {
    pub fn new(bytes_per_second: u64) -> Pace {
        Pace {
            bytes_per_second: bytes_per_second.max(1),
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// How long to wait before `bytes` may go (and books them).
    pub fn book(&self, bytes: u64, now: Instant) -> Duration {
        let mut next = self.next_free.lock().expect("pace lock");
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        start - now
    }
}

/// A snapshot offered, with its bytes.
type Offered = (Manifest, Arc<Vec<u8>>);

/// The sender's side: the latest snapshot of each group offered to a follower.
pub struct Outbox {
    by_group: Mutex<BTreeMap<u32, Offered>>,
    pace: Pace,
}

impl Outbox {
    pub fn new(bytes_per_second: u64) -> Arc<Outbox> {
        Arc::new(Outbox {
            by_group: Mutex::new(BTreeMap::new()),
            pace: Pace::new(bytes_per_second),
        })
    }

    /// Keeps a snapshot message's bytes here and puts a manifest in their place.
    pub fn stand_in(&self, group: u32, m: &mut raft::prelude::Message) {
        if m.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
            return;
        }
        let s = m.mut_snapshot();
        let data = std::mem::take(&mut s.data);
        let meta = s.get_metadata();
        let manifest = Manifest {
            group,
            index: meta.index,
            term: meta.term,
            len: data.len() as u64,
            sha256: Sha256::digest(&data).into(),
        };
        s.data = manifest.encode().into();
        self.by_group.lock().expect("outbox lock").insert(group, (manifest, Arc::new(data.to_vec())));
    }

    /// One chunk of a snapshot kept here, paced to the node's snapshot bandwidth.
    pub async fn chunk(&self, group: u32, index: u64, term: u64, offset: u64) -> Result<Vec<u8>, String> {
        let data = {
            let by_group = self.by_group.lock().expect("outbox lock");
            match by_group.get(&group) {
                Some((m, d)) if m.index == index && m.term == term => d.clone(),
                _ => return Err(format!("no snapshot of group {group} at {index}/{term} here (a newer one replaced it)")),
            }
        };
        if offset > data.len() as u64 {
            return Err(format!("offset {offset} beyond the snapshot's {} bytes", data.len()));
        }
        let end = (offset + CHUNK_BYTES).min(data.len() as u64);
        let wait = self.pace.book(end - offset, Instant::now());
        tokio::time::sleep(wait).await;
        Ok(data[offset as usize..end as usize].to_vec())
    }
}

/// The receiver's side: transfers in progress, each resumable from its file.
pub struct Inbox {
    dir: PathBuf,
    fetching: Mutex<BTreeSet<(u32, u64, u64)>>,
}

impl Inbox {
    pub fn new(dir: PathBuf) -> Arc<Inbox> {
        Arc::new(Inbox {
            dir,
            fetching: Mutex::new(BTreeSet::new()),
        })
    }

    fn part(&self, m: &Manifest) -> PathBuf {
        self.dir.join(format!("{}-{}-{}.part", m.group, m.index, m.term))
    }

    /// Claims the transfer `m` names (false: one is already running for it, or
    /// `TRANSFERS_MAX` others are: each holds its bytes in memory until raft has them, so a
    /// peer offering snapshot after snapshot must not start a transfer for each).
    pub fn claim(&self, m: &Manifest) -> bool {
        let mut fetching = self.fetching.lock().expect("inbox lock");
        if fetching.len() >= TRANSFERS_MAX && !fetching.contains(&m.key()) {
            tracing::warn!(
                group = m.group,
                index = m.index,
                "a snapshot transfer waits: {TRANSFERS_MAX} are running; the leader offers it again"
            );
            return false;
        }
        fetching.insert(m.key())
    }

    pub fn release(&self, m: &Manifest) {
        self.fetching.lock().expect("inbox lock").remove(&m.key());
    }

    /// Fetches the bytes `m` names from `peer`, resuming what an earlier attempt kept, and
    /// checks them against the manifest. Older partial transfers of the group are dropped.
    pub async fn fetch(&self, transport: &Transport, peer: PeerId, m: &Manifest) -> Result<Vec<u8>, String> {
        self.fetch_with(m, |offset| {
            let req = PeerRequest::SnapshotChunk {
                group: m.group,
                index: m.index,
                term: m.term,
                offset,
            };
            async move {
                match tokio::time::timeout(CHUNK_TIMEOUT, ask(transport, peer, &req)).await {
                    Ok(Ok(PeerResponse::Chunk(c))) => Ok(c),
                    Ok(Ok(PeerResponse::Refused(why))) => Err(why),
                    Ok(Ok(_)) => Err("a snapshot chunk was answered with something else".into()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("a snapshot chunk did not arrive in time".into()),
                }
            }
        })
        .await
    }

    /// `fetch` over any source of chunks (`chunk(offset)`).
    pub async fn fetch_with<F, Fut>(&self, m: &Manifest, chunk: F) -> Result<Vec<u8>, String>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
    {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.part(m);
        let prefix = format!("{}-", m.group);
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && e.path() != path {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut have = std::fs::read(&path).unwrap_or_default();
        if have.len() as u64 > m.len {
            have.clear();
        }
        // Resume at a chunk boundary (a torn last write is fetched again).
        have.truncate((have.len() as u64 / CHUNK_BYTES * CHUNK_BYTES) as usize);
        if !have.is_empty() {
            tracing::info!(
                group = m.group,
                index = m.index,
                resumed_at = have.len(),
                of = m.len,
                "resuming a snapshot transfer"
            );
        }
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(&have).map_err(|e| format!("{}: {e}", path.display()))?;
        while (have.len() as u64) < m.len {
            let chunk = chunk(have.len() as u64).await?;
            let want = (m.len - have.len() as u64).min(CHUNK_BYTES);
            if chunk.len() as u64 != want {
                return Err(format!("a snapshot chunk of {} bytes where {want} were due", chunk.len()));
            }
            file.write_all(&chunk).map_err(|e| format!("{}: {e}", path.display()))?;
            have.extend_from_slice(&chunk);
        }
        drop(file);
        let _ = std::fs::remove_file(&path);
        if <[u8; 32]>::from(Sha256::digest(&have)) != m.sha256 {
            return Err(format!("the snapshot of group {} at {} does not match its manifest's hash", m.group, m.index));
        }
        Ok(have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_other_data_is_not_one() {
        let m = Manifest {
            group: 3,
            index: 40,
            term: 2,
            len: 5 << 20,
            sha256: [7; 32],
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(Ok(m.clone())));
        // At most TRANSFERS_MAX transfers at once; one claimed already is not claimed twice.
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().to_path_buf());
        let at = |index: u64| Manifest { index, ..m.clone() };
        assert!((0..TRANSFERS_MAX as u64).all(|i| inbox.claim(&at(i))));
        assert!(!inbox.claim(&at(0)), "running already");
        assert!(!inbox.claim(&at(100)), "over the limit");
        inbox.release(&at(0));
        assert!(inbox.claim(&at(100)), "room again once one ends");
        assert_eq!(Manifest::decode(b"plain snapshot bytes"), None);
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(b"\xff\xff");
        assert!(matches!(Manifest::decode(&bad), Some(Err(_))));
        let huge = Manifest {
            len: SNAPSHOT_BYTES_MAX + 1,
            ..m
        };
        assert!(matches!(Manifest::decode(&huge.encode()), Some(Err(_))));
    }

    #[test]
    fn the_pace_spreads_chunks_over_time() {
        let p = Pace::new(1 << 20);
        let now = Instant::now();
        assert_eq!(p.book(1 << 20, now), Duration::ZERO);
        let second = p.book(1 << 20, now);
        assert!(second >= Duration::from_millis(999) && second <= Duration::from_millis(1001), "{second:?}");
    }

    #[tokio::test]
    async fn a_transfer_cut_short_resumes_where_it_stopped_and_a_wrong_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().join("snapshots"));
        let bytes: Vec<u8> = (0..(3 * CHUNK_BYTES as usize + 5)).map(|i| (i * 7) as u8).collect();
        let m = Manifest {
            group: 1,
            index: 12,
            term: 3,
            len: bytes.len() as u64,
            sha256: Sha256::digest(&bytes).into(),
        };
        let asked = std::sync::Mutex::new(Vec::new());
        let serve = |fail_at: Option<u64>| {
            let (bytes, asked) = (&bytes, &asked);
            move |offset: u64| {
                asked.lock().unwrap().push(offset);
                let r = if Some(offset) == fail_at {
                    Err("the link broke".to_string())
                } else {
                    Ok(bytes[offset as usize..(offset + CHUNK_BYTES).min(bytes.len() as u64) as usize].to_vec())
                };
                async move { r }
            }
        };
        assert!(inbox.fetch_with(&m, serve(Some(2 * CHUNK_BYTES))).await.is_err());
        assert_eq!(*asked.lock().unwrap(), vec![0, CHUNK_BYTES, 2 * CHUNK_BYTES]);
        asked.lock().unwrap().clear();
        assert_eq!(inbox.fetch_with(&m, serve(None)).await.unwrap(), bytes);
        assert_eq!(*asked.lock().unwrap(), vec![2 * CHUNK_BYTES, 3 * CHUNK_BYTES], "it resumed, not restarted");
        // The same bytes under another hash: refused, and nothing is kept for a retry.
        let wrong = Manifest { sha256: [0; 32], ..m };
        assert!(inbox.fetch_with(&wrong, serve(None)).await.unwrap_err().contains("hash"));
        assert_eq!(std::fs::read_dir(dir.path().join("snapshots")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_outbox_serves_chunks_of_the_latest_snapshot_only() {
        let out = Outbox::new(u64::MAX);
        let mut msg = raft::prelude::Message::default();
        msg.set_msg_type(raft::prelude::MessageType::MsgSnapshot);
        let bytes: Vec<u8> = (0..(CHUNK_BYTES as usize + 10)).map(|i| i as u8).collect();
        msg.mut_snapshot().data = bytes.clone().into();
        msg.mut_snapshot().mut_metadata().index = 9;
        msg.mut_snapshot().mut_metadata().term = 2;
        out.stand_in(4, &mut msg);
        let m = Manifest::decode(&msg.get_snapshot().data).unwrap().unwrap();
        assert_eq!((m.group, m.index, m.term, m.len), (4, 9, 2, bytes.len() as u64));
        let first = out.chunk(4, 9, 2, 0).await.unwrap();
        let rest = out.chunk(4, 9, 2, CHUNK_BYTES).await.unwrap();
        assert_eq!([first, rest].concat(), bytes);
        assert!(out.chunk(4, 8, 2, 0).await.is_err(), "another snapshot is not served");
        assert!(out.chunk(4, 9, 2, bytes.len() as u64 + 1).await.is_err());
    }
}
