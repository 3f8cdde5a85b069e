//! Which keys a data folder's data is written under. People's data is sealed under the master
//! key and found by the email index's HMAC key; a node started with another key file (a
//! mistyped path, a key restored from another node, a file overwritten) would serve 503 for
//! every person, seal new people under the wrong key, and let an address already taken register
//! again. So the folder records a digest of each key ([`keys::KEY_CHECK_KEY`], written once,
//! flushed) and every later open compares: another key is refused before anything is served or
//! written. A digest reveals nothing of its key (SHA-256 over a domain label and the key).
//! A folder written before this record gets it on its first open.

use super::codec;
use super::keys;
use super::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyDigests {
    master: [u8; 32],
    email_index: [u8; 32],
}

fn digest(label: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"moneta key check v1\0");
    h.update(label);
    h.update([0u8]);
    h.update(key);
    h.finalize().into()
}

/// A key that is not the one the folder's data is written under.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    Master,
    EmailIndex,
    /// The record itself does not decode.
    Corrupt(String),
}

/// Compares the keys with the folder's record, or records them when it has none (flushed
/// before this returns). Err names the key that differs.
pub fn check_or_record(store: &Store, master: &[u8], email_index: &[u8]) -> Result<(), Mismatch> {
    let mine = digests(master, email_index);
    match compare(store, &mine)? {
        Some(()) => Ok(()),
        None => {
            store
                .tree()
                .insert(keys::KEY_CHECK_KEY, codec::encode(&mine))
                .map_err(|e| Mismatch::Corrupt(e.to_string()))?;
            store.flush().map(|_| ()).map_err(|e| Mismatch::Corrupt(e.to_string()))
        }
    }
}

/// Compares the keys with the folder's record and writes nothing: a folder with no record
/// (written before it existed) passes. For tools that read a stopped folder.
pub fn check(store: &Store, master: &[u8], email_index: &[u8]) -> Result<(), Mismatch> {
    compare(store, &digests(master, email_index)).map(|_| ())
}

fn digests(master: &[u8], email_index: &[u8]) -> KeyDigests {
    KeyDigests {
        master: digest(b"master", master),
        email_index: digest(b"email-index", email_index),
    }
}

/// Some(()) when the record matches `mine`, None when the folder has no record.
fn compare(store: &Store, mine: &KeyDigests) -> Result<Option<()>, Mismatch> {
    let Some(bytes) = store.tree().get(keys::KEY_CHECK_KEY).map_err(|e| Mismatch::Corrupt(e.to_string()))? else {
        return Ok(None);
    };
    let recorded: KeyDigests = codec::decode(&bytes).map_err(|e| Mismatch::Corrupt(e.to_string()))?;
    if recorded.master != mine.master {
        return Err(Mismatch::Master);
    }
    if recorded.email_index != mine.email_index {
        return Err(Mismatch::EmailIndex);
    }
    Ok(Some(()))
}
