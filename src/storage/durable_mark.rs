//! The data folder's high-water mark, kept outside sled: how many writes of the raft states
//! record (`storage::raft_states`, one per round that changes a group's hard state or
//! applied index) the node had flushed.
//!
//! sled recovers its log up to the first message that does not decode and takes the rest for
//! a write torn by a crash. A folder damaged in the middle of its log (a bad disk block, a
//! stray write) therefore opens "cleanly" holding only what came before the damage: records a
//! client was told are done would be gone without a word, and a raft replica would come back
//! having forgotten its votes and acknowledgements, which raft's safety does not survive. The
//! mark catches that: the writer records, at most once a second and after a flush returns,
//! the write count the flushed batch carried; a folder opened with a count below its mark
//! lost what it had made durable and is refused as corrupt.
//!
//! The mark only ever trails the folder: it is written after sled's flush, with the count of
//! a flushed batch, so a crash at any point leaves it at or below what sled holds. A folder
//! without a mark (new, restored from a backup, or written by an earlier build) is not
//! checked until the writer writes one. Layout (16 bytes): `b"MDM1" ‖ count u64 BE ‖ CRC-32
//! of the first 12 bytes, u32 BE`.

use crate::storage::StoreError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The mark's file, beside sled's `db` folder in the data folder.
pub const FILE: &str = "durable.mark";

const MAGIC: &[u8; 4] = b"MDM1";
const LEN: usize = 16;

/// How often the writer records a new mark at most.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn encode(seq: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..4].copy_from_slice(MAGIC);
    b[4..12].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32fast::hash(&b[..12]);
    b[12..].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The folder's mark: None without one; a file that does not read as a mark is corrupt.
pub fn read(dir: &Path) -> Result<Option<u64>, StoreError> {
    let bytes = match std::fs::read(path(dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(format!("cannot read {}: {e}", path(dir).display()))),
    };
    let damaged = || StoreError::Corrupt {
        location: path(dir).display().to_string(),
        reason: format!(
            "the data folder's high-water mark does not read ({} bytes). If the folder is known to be whole, delete this file and start again",
            bytes.len()
        ),
    };
    if bytes.len() != LEN || &bytes[..4] != MAGIC {
        return Err(damaged());
    }
    let crc = u32::from_be_bytes(bytes[12..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..12]) != crc {
        return Err(damaged());
    }
    Ok(Some(u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes"))))
}

/// Records the mark, never lowering one: written to a file of its own, synced, then renamed
/// over the last one, so a crash leaves the old mark or the new one, never a part of either.
/// One write at a time in a process (the writer's and a stop's may meet).
pub fn write(dir: &Path, seq: u64) -> std::io::Result<()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if read(dir).ok().flatten().is_some_and(|m| m >= seq) {
        return Ok(());
    }
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&encode(seq))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path(dir))
}

/// Checks a folder whose raft states record carries `on_disk` writes against its mark.
pub fn check(dir: &Path, on_disk: u64) -> Result<(), StoreError> {
    match read(dir)? {
        Some(mark) if mark > on_disk => Err(StoreError::Corrupt {
            location: format!("the data folder {}", dir.join("db").display()),
            reason: format!(
                "the folder holds less than this node had made durable (its raft states were written {on_disk} times, {mark} were flushed): \
                 sled's log is damaged and everything after the damage is missing. Restore the node from a backup, or, in a cluster, \
                 start it on an empty folder (its {FILE} included) to rebuild from the others"
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_one_that_does_not_read_or_runs_ahead_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "no mark yet");
        check(dir.path(), 0).unwrap();
        write(dir.path(), 41).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(41));
        write(dir.path(), 40).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(41), "a mark is never lowered");
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
        check(dir.path(), 41).unwrap();
        check(dir.path(), 99).unwrap();
        assert!(matches!(check(dir.path(), 40), Err(StoreError::Corrupt { .. })));
        // A flipped bit, a cut file, another file's bytes.
        let good = encode(41);
        for (i, bad) in [
            {
                let mut b = good;
                b[7] ^= 1;
                b.to_vec()
            },
            good[..15].to_vec(),
            b"not a mark at all".to_vec(),
        ]
        .into_iter()
        .enumerate()
        {
            std::fs::write(path(dir.path()), bad).unwrap();
            assert!(matches!(read(dir.path()), Err(StoreError::Corrupt { .. })), "case {i}");
            assert!(check(dir.path(), u64::MAX).is_err(), "case {i}: a damaged mark is never taken for none");
        }
    }
}
