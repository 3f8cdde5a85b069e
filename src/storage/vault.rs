//! Personal data encryption at rest: envelope encryption with per-user data keys.
//!
//! - The **master key** (AES-256) is read from `[security] master_key_file`, or from
//!   `<data_dir>/keys/master.key`, generated there on first start with 0600 permissions. It never
//!   leaves this module and is never logged.
//! - Each user has a random **data key** (AES-256), stored only wrapped by the master key, as a
//!   shard record of the user's shard (so it is group-committed, in a backup's consistent view,
//!   and moves with the user's shard). The vault builds the writes; the caller commits them
//!   through the journal (or, offline, applies them). Destroying it (GDPR erasure by crypto-shredding) makes every
//!   ciphertext of that user unreadable, wherever copies of it remain (journals, snapshots).
//! - Every **ciphertext** names the data key that sealed it and binds the user id and field name
//!   as associated data, so a ciphertext moved to another user or field does not open.
//!
//! Formats (all versioned): wrapped data key `1 ‖ master kid(8) ‖ data kid(8) ‖ nonce(12) ‖
//! AES-GCM(key)`; sealed field `1 ‖ data kid(8) ‖ nonce(12) ‖ AES-GCM(plaintext)`.

use crate::storage::keys::{self, ShardRecord};
use crate::storage::records;
use crate::storage::store::WriteSet;
use crate::storage::{Store, StoreError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};
use std::path::Path;

const VERSION: u8 = 1;
const KID_LEN: usize = 8;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("no data key for this user (erased or never created)")]
    NoKey,
    /// (Its text starts with `domain::envelope::CORRUPT_MARK`: the gateway answers it 500
    /// `corrupt_record`, not "retry".)
    #[error("corrupt record: ciphertext or wrapped key is corrupt or belongs elsewhere: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for VaultError {
    fn from(e: sled::Error) -> Self {
        VaultError::Store(e.into())
    }
}

/// Envelope encryption over the node's store. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    master: std::sync::Arc<LessSafeKey>,
    master_kid: [u8; KID_LEN],
    /// Where this node's data keys are; `None` for a detached vault (the simulator's: it keeps
    /// its replicas' keys itself and hands them in).
    store: Option<Store>,
    /// Keys and nonces from a seeded generator instead of the system's (the simulator's runs
    /// replay from their seed); `None` in production.
    seeded: Option<std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha20Rng>>>,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b
}

fn kid_of(key: &[u8]) -> [u8; KID_LEN] {
    let d = Sha256::digest([b"moneta-kid:".as_slice(), key].concat());
    let mut kid = [0u8; KID_LEN];
    kid.copy_from_slice(&d[..KID_LEN]);
    kid
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

/// Reads the master key file, or creates it (0600, parent folder 0700) when it does not exist.
pub fn load_or_create_master_key(path: &Path) -> Result<Vec<u8>, VaultError> {
    let err = |reason: String| VaultError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        if let Some(dir) = path.parent() {
            crate::storage::files::create_private_dir(dir).map_err(|e| err(e.to_string()))?;
        }
        crate::storage::files::write_private_file(path, &random::<KEY_LEN>()).map_err(|e| err(e.to_string()))?;
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.len() != KEY_LEN {
        return Err(err(format!("expected {KEY_LEN} bytes, found {}", bytes.len())));
    }
    crate::storage::files::check_private_file(path).map_err(err)?;
    Ok(bytes)
}

impl Vault {
    pub fn new(store: &Store, master_key: &[u8]) -> Result<Vault, VaultError> {
        if master_key.len() != KEY_LEN {
            return Err(VaultError::Corrupt("master key length"));
        }
        Ok(Vault {
            master: std::sync::Arc::new(aes_key(master_key)),
            master_kid: kid_of(master_key),
            store: Some(store.clone()),
            seeded: None,
        })
    }

    /// A vault with no store whose keys and nonces come from `seed`: the simulator seals and
    /// opens with it through [`Vault::wrap_new`], [`Vault::seal_with`] and [`Vault::open_with`],
    /// holding the wrapped keys in its replicas. Never for personal data of real people.
    pub fn detached(master_key: &[u8], seed: u64) -> Result<Vault, VaultError> {
        use rand::SeedableRng;
        if master_key.len() != KEY_LEN {
            return Err(VaultError::Corrupt("master key length"));
        }
        Ok(Vault {
            master: std::sync::Arc::new(aes_key(master_key)),
            master_kid: kid_of(master_key),
            store: None,
            seeded: Some(std::sync::Arc::new(std::sync::Mutex::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)))),
        })
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        match &self.seeded {
            Some(rng) => {
                use rand::RngCore;
                let mut b = [0u8; N];
                rng.lock().expect("vault rng").fill_bytes(&mut b);
                b
            }
            None => random::<N>(),
        }
    }

    fn store(&self) -> Result<&Store, VaultError> {
        self.store.as_ref().ok_or(VaultError::Corrupt("a detached vault has no store"))
    }

    fn wrap_aad(user_id: &str, data_kid: &[u8]) -> Vec<u8> {
        [b"moneta-dk\0".as_slice(), user_id.as_bytes(), b"\0", data_kid].concat()
    }

    /// Where the data key `key_id` lives: the shard of the user it belongs to (`usr_…`, or
    /// `retention:usr_…` for the key of an erased person's regulatory record).
    pub fn key_location(key_id: &str) -> Vec<u8> {
        let user = key_id.strip_prefix("retention:").unwrap_or(key_id);
        keys::shard_record_key(records::user_shard(user), ShardRecord::DataKey, key_id)
    }

    /// The writes that create `user_id`'s data key, or `None` when it has one. The caller commits
    /// them, one creation per key at a time (a second concurrent creation would replace the key
    /// the first one sealed with).
    pub fn new_data_key(&self, user_id: &str) -> Result<Option<WriteSet>, VaultError> {
        if self.has_data_key(user_id)? {
            return Ok(None);
        }
        self.wrap_new(user_id).map(Some)
    }

    /// The writes that create a fresh data key `user_id`, whether or not one exists (the caller
    /// checked, at the leader of the key's group).
    pub fn wrap_new(&self, user_id: &str) -> Result<WriteSet, VaultError> {
        let key = self.random::<KEY_LEN>();
        let data_kid = self.random::<KID_LEN>();
        let nonce = self.random::<NONCE_LEN>();
        let mut ct = key.to_vec();
        self.master
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(Self::wrap_aad(user_id, &data_kid)), &mut ct)
            .map_err(|_| VaultError::Corrupt("wrap failed"))?;
        let wrapped = [&[VERSION][..], &self.master_kid, &data_kid, &nonce, &ct].concat();
        let mut writes = WriteSet::default();
        writes.puts.push((Self::key_location(user_id), wrapped));
        Ok(writes)
    }

    /// The writes that destroy the user's data key (crypto-shredding): once committed, their
    /// ciphertexts can never be opened again.
    pub fn destroy_data_key(&self, user_id: &str) -> WriteSet {
        WriteSet {
            deletes: vec![Self::key_location(user_id)],
            ..WriteSet::default()
        }
    }

    pub fn has_data_key(&self, user_id: &str) -> Result<bool, VaultError> {
        Ok(self.store()?.tree().contains_key(Self::key_location(user_id))?)
    }

    /// The data key `key_id` as this node's store holds it (wrapped by the master key), if it
    /// does. In a cluster only a replica of the key's group holds it: callers there read it
    /// linearizably (see `Services::wrapped_key`) and seal or open with [`Vault::seal_with`]
    /// and [`Vault::open_with`].
    pub fn wrapped(&self, key_id: &str) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self.store()?.tree().get(Self::key_location(key_id))?.map(|v| v.to_vec()))
    }

    /// Unwraps the data key `user_id` from its stored form.
    fn unwrap_key(&self, user_id: &str, wrapped: &[u8]) -> Result<([u8; KID_LEN], LessSafeKey), VaultError> {
        let w = wrapped;
        if w.len() != 1 + 2 * KID_LEN + NONCE_LEN + KEY_LEN + 16 || w[0] != VERSION {
            return Err(VaultError::Corrupt("wrapped key format"));
        }
        if w[1..1 + KID_LEN] != self.master_kid {
            return Err(VaultError::Corrupt("wrapped under another master key"));
        }
        let mut data_kid = [0u8; KID_LEN];
        data_kid.copy_from_slice(&w[1 + KID_LEN..1 + 2 * KID_LEN]);
        let nonce_at = 1 + 2 * KID_LEN;
        let nonce = Nonce::try_assume_unique_for_key(&w[nonce_at..nonce_at + NONCE_LEN]).map_err(|_| VaultError::Corrupt("nonce"))?;
        let mut ct = w[nonce_at + NONCE_LEN..].to_vec();
        let key = self
            .master
            .open_in_place(nonce, Aad::from(Self::wrap_aad(user_id, &data_kid)), &mut ct)
            .map_err(|_| VaultError::Corrupt("wrapped key does not authenticate"))?;
        Ok((data_kid, aes_key(key)))
    }

    fn stored(&self, user_id: &str) -> Result<Vec<u8>, VaultError> {
        self.wrapped(user_id)?.ok_or(VaultError::NoKey)
    }

    fn field_aad(user_id: &str, field: &str) -> Vec<u8> {
        [b"moneta-pd\0".as_slice(), user_id.as_bytes(), b"\0", field.as_bytes()].concat()
    }

    /// Encrypts one field of one user's personal data (the key from this node's store).
    pub fn seal(&self, user_id: &str, field: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.seal_with(user_id, &self.stored(user_id)?, field, plaintext)
    }

    /// Encrypts one field of one user's personal data under their data key `wrapped`.
    pub fn seal_with(&self, user_id: &str, wrapped: &[u8], field: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (kid, key) = self.unwrap_key(user_id, wrapped)?;
        let nonce = self.random::<NONCE_LEN>();
        let mut ct = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(Self::field_aad(user_id, field)), &mut ct)
            .map_err(|_| VaultError::Corrupt("seal failed"))?;
        Ok([&[VERSION][..], &kid, &nonce, &ct].concat())
    }

    /// Decrypts one field (the key from this node's store); fails when the key was destroyed
    /// or the bytes were moved or altered.
    pub fn open(&self, user_id: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < 1 + KID_LEN + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(VaultError::Corrupt("ciphertext format"));
        }
        self.open_with(user_id, &self.stored(user_id)?, field, sealed)
    }

    /// Decrypts one field under the user's data key `wrapped`.
    pub fn open_with(&self, user_id: &str, wrapped: &[u8], field: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < 1 + KID_LEN + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(VaultError::Corrupt("ciphertext format"));
        }
        let (kid, key) = self.unwrap_key(user_id, wrapped)?;
        if sealed[1..1 + KID_LEN] != kid {
            return Err(VaultError::Corrupt("sealed under another data key"));
        }
        let nonce_at = 1 + KID_LEN;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[nonce_at..nonce_at + NONCE_LEN]).map_err(|_| VaultError::Corrupt("nonce"))?;
        let mut ct = sealed[nonce_at + NONCE_LEN..].to_vec();
        let pt = key
            .open_in_place(nonce, Aad::from(Self::field_aad(user_id, field)), &mut ct)
            .map_err(|_| VaultError::Corrupt("ciphertext does not authenticate"))?;
        Ok(pt.to_vec())
    }

    pub fn seal_json<T: serde::Serialize>(&self, user_id: &str, field: &str, value: &T) -> Result<Vec<u8>, VaultError> {
        let bytes = serde_json::to_vec(value).map_err(|_| VaultError::Corrupt("serialise"))?;
        self.seal(user_id, field, &bytes)
    }

    pub fn open_json<T: serde::de::DeserializeOwned>(&self, user_id: &str, field: &str, sealed: &[u8]) -> Result<T, VaultError> {
        let bytes = self.open(user_id, field, sealed)?;
        serde_json::from_slice(&bytes).map_err(|_| VaultError::Corrupt("plaintext is not the expected record"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> (tempfile::TempDir, Store, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let master = load_or_create_master_key(&dir.path().join("keys/master.key")).unwrap();
        let v = Vault::new(&store, &master).unwrap();
        (dir, store, v)
    }

    fn create(store: &Store, v: &Vault, id: &str) {
        store.apply_offline(&v.new_data_key(id).unwrap().expect("a new key")).unwrap();
        assert!(v.new_data_key(id).unwrap().is_none(), "a key is created once");
    }

    #[test]
    fn seal_open_and_binding() {
        let (_d, store, v) = vault();
        create(&store, &v, "usr_a");
        create(&store, &v, "usr_b");
        let sealed = v.seal("usr_a", "profile", b"Ada Lovelace").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"Ada"));
        assert_eq!(v.open("usr_a", "profile", &sealed).unwrap(), b"Ada Lovelace");
        // Bound to the user and to the field.
        assert!(v.open("usr_b", "profile", &sealed).is_err());
        assert!(v.open("usr_a", "kyc", &sealed).is_err());
        // Any altered byte fails.
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(v.open("usr_a", "profile", &t).is_err(), "byte {i}");
        }
        // Crypto-shredding.
        store.apply_offline(&v.destroy_data_key("usr_a")).unwrap();
        assert!(matches!(v.open("usr_a", "profile", &sealed), Err(VaultError::NoKey)));
    }

    #[test]
    fn another_master_key_cannot_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v1 = Vault::new(&store, &[7u8; 32]).unwrap();
        create(&store, &v1, "usr_a");
        let sealed = v1.seal("usr_a", "profile", b"x").unwrap();
        let v2 = Vault::new(&store, &[8u8; 32]).unwrap();
        assert!(matches!(v2.open("usr_a", "profile", &sealed), Err(VaultError::Corrupt(_))));
    }

    #[cfg(unix)]
    #[test]
    fn master_key_file_is_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/master.key");
        let k = load_or_create_master_key(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_master_key(&p).unwrap(), k);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_master_key(&p).is_err());
        std::fs::write(dir.path().join("short.key"), b"abc").unwrap();
        std::fs::set_permissions(dir.path().join("short.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create_master_key(&dir.path().join("short.key")).is_err());
    }
}

#[cfg(test)]
mod mark_tests {
    #[test]
    fn a_corrupt_vault_record_reads_as_a_corrupt_record_at_the_gateway() {
        let text = super::VaultError::Corrupt("nonce").to_string();
        assert!(text.starts_with(crate::domain::envelope::CORRUPT_MARK), "{text}");
    }
}
