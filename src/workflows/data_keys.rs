//! Personal data keys in a cluster. A user's data key is a shard record of the user's shard, so
//! only the replicas of the user's group hold it. Sealing and opening happen wherever the
//! request is (every member holds the master key), with the wrapped key read linearizably: from
//! this node's store after a read barrier when it holds a replica, else from the group's leader
//! (a user step, one hop). A key is created only at the group's leader, one creation at a time
//! there: a creation anywhere else could not see a key the group already holds and would
//! replace it, making everything sealed under it unreadable.

use super::services::Services;
use crate::domain::envelope::EntityFailure;
use crate::domain::steps::{key_owner, StepAnswer, UserStep};
use crate::storage::store::StoreError;
use crate::storage::vault::VaultError;

fn unavailable(why: impl std::fmt::Display) -> VaultError {
    VaultError::Store(StoreError::Unavailable(why.to_string()))
}

impl Services {
    /// The group that holds the data key `key_id`.
    fn key_group(&self, key_id: &str) -> u32 {
        crate::domain::ids::group_of(crate::domain::ids::shard_of(key_owner(key_id)), self.router.store().groups())
    }

    /// The data key `key_id` exists (created unless it did), durably: at the leader of its group.
    pub async fn create_data_key(&self, key_id: &str) -> Result<(), String> {
        match self.router.step(UserStep::DataKey { key_id: key_id.to_string() }).await {
            Ok(StepAnswer::KeyReady) => Ok(()),
            Ok(other) => Err(format!("creating a data key was answered {other:?}")),
            Err(f) => Err(f.to_string()),
        }
    }

    /// Creates the data key here — the leader of its group (a step brought it here): after a
    /// read barrier, so that a key the group committed under an earlier leader is seen.
    pub(super) async fn create_data_key_here(&self, key_id: &str) -> Result<StepAnswer, EntityFailure> {
        let _one_at_a_time = self.data_key_creation.lock(key_id).await;
        let group = self.key_group(key_id);
        let failed = |e: String| EntityFailure::Unavailable(format!("data key: {e}"));
        self.router.journal().read_index(group).await.map_err(|e| failed(e.to_string()))?;
        if let Some(writes) = self.vault.new_data_key(key_id).map_err(|e| failed(e.to_string()))? {
            self.router.journal().write(writes).await.map_err(|e| failed(e.to_string()))?;
        }
        Ok(StepAnswer::KeyReady)
    }

    /// The wrapped data key `key_id` from this node's replica, after a read barrier.
    pub(super) async fn wrapped_key_here(&self, key_id: &str) -> Result<Option<Vec<u8>>, VaultError> {
        self.router.journal().read_index(self.key_group(key_id)).await?;
        self.vault.wrapped(key_id)
    }

    /// The wrapped data key `key_id`, read linearizably wherever this node stands.
    pub async fn wrapped_key(&self, key_id: &str) -> Result<Option<Vec<u8>>, VaultError> {
        if self.router.journal().leadership(self.key_group(key_id)).replica {
            return self.wrapped_key_here(key_id).await;
        }
        match self.router.step(UserStep::WrappedKey { key_id: key_id.to_string() }).await {
            Ok(StepAnswer::Wrapped(w)) => Ok(w),
            Ok(other) => Err(unavailable(format!("reading a data key was answered {other:?}"))),
            Err(f) => Err(unavailable(f)),
        }
    }

    /// Seals one field of `key_id`'s personal data under its data key.
    pub async fn seal(&self, key_id: &str, field: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let wrapped = self.wrapped_key(key_id).await?.ok_or(VaultError::NoKey)?;
        self.vault.seal_with(key_id, &wrapped, field, plaintext)
    }

    /// Opens one sealed field of `key_id`'s personal data (`NoKey` once the key is destroyed).
    pub async fn open(&self, key_id: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let wrapped = self.wrapped_key(key_id).await?.ok_or(VaultError::NoKey)?;
        let opened = self.vault.open_with(key_id, &wrapped, field, sealed);
        if let Err(VaultError::Corrupt(why)) = &opened {
            // Counted once per person's field, however often it is read.
            self.router.metrics().corrupt_record(&format!("sealed {field} of {key_id}: {why}"));
        }
        opened
    }

    pub async fn seal_json<T: serde::Serialize>(&self, key_id: &str, field: &str, value: &T) -> Result<Vec<u8>, VaultError> {
        let bytes = serde_json::to_vec(value).map_err(|_| VaultError::Corrupt("serialise"))?;
        self.seal(key_id, field, &bytes).await
    }

    pub async fn open_json<T: serde::de::DeserializeOwned>(&self, key_id: &str, field: &str, sealed: &[u8]) -> Result<T, VaultError> {
        let bytes = self.open(key_id, field, sealed).await?;
        serde_json::from_slice(&bytes).map_err(|_| VaultError::Corrupt("plaintext is not the expected record"))
    }
}
