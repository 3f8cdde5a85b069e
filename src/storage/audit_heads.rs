//! Where each group's audit chain stands (`ChainHead`), as recorded: every group's head in one
//! record (`keys::AUDIT_HEADS_KEY`), written in the batch of a round that moves any, so a round
//! writes one key for them however many groups it touches. Folders written before kept one key
//! per group; they are read as before, and `migrate_audit_heads` moves them into the record.

use crate::storage::audit_log::ChainHead;
use crate::storage::{codec, keys, Store, StoreError};
use std::collections::BTreeMap;

impl Store {
    /// The recorded head of one group's audit chain.
    pub fn chain_head(&self, group: u32) -> Result<Option<ChainHead>, StoreError> {
        Ok(self.chain_heads()?.remove(&group))
    }

    /// Every group's recorded chain head: the one record of them all, and the per-group keys
    /// of a folder written before it (`migrate_audit_heads` moves those into it).
    pub fn chain_heads(&self) -> Result<BTreeMap<u32, ChainHead>, StoreError> {
        let mut out = BTreeMap::new();
        let mut all = None;
        for item in self.tree().scan_prefix(keys::AUDIT_HEAD_PREFIX) {
            let (k, v) = item?;
            let corrupt = |reason: String| StoreError::Corrupt {
                location: format!("audit head key {}", hex::encode(&k)),
                reason,
            };
            if k.as_ref() == keys::AUDIT_HEADS_KEY {
                all = Some(codec::decode::<BTreeMap<u32, ChainHead>>(&v).map_err(|e| corrupt(e.to_string()))?);
                continue;
            }
            let group = k[keys::AUDIT_HEAD_PREFIX.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt("malformed key".into()))?;
            out.insert(group, codec::decode(&v).map_err(|e| corrupt(e.to_string()))?);
        }
        out.extend(all.unwrap_or_default());
        Ok(out)
    }

    /// Adds the record of every group's chain head (`chains`: all of this node's) to `batch`.
    pub fn stage_heads(&self, batch: &mut sled::Batch, chains: &BTreeMap<u32, ChainHead>) {
        batch.insert(&keys::AUDIT_HEADS_KEY[..], codec::encode(chains));
    }

    /// Moves the per-group chain heads of a folder written before the one record into it, in
    /// one flushed batch. Returns how many moved.
    pub fn migrate_audit_heads(&self) -> Result<usize, StoreError> {
        let legacy: Vec<sled::IVec> = self
            .tree()
            .scan_prefix(keys::AUDIT_HEAD_PREFIX)
            .keys()
            .filter(|k| k.as_ref().map_or(true, |k| k.as_ref() != keys::AUDIT_HEADS_KEY))
            .collect::<Result<_, _>>()?;
        if legacy.is_empty() {
            return Ok(0);
        }
        let heads = self.chain_heads()?;
        let mut batch = sled::Batch::default();
        for k in &legacy {
            batch.remove(k.clone());
        }
        self.stage_heads(&mut batch, &heads);
        self.tree().apply_batch(batch)?;
        self.flush()?;
        Ok(legacy.len())
    }
}
