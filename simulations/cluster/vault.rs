//! The members' vault in the simulator: one master key from the seed (every member holds it,
//! as production's members do), and production's `keep_regulatory_identity` over a leader's
//! replica.

use super::{ClusterSim, GroupId, RaftId};
use moneta::domain::account::Profile;
use moneta::domain::time::Timestamp;
use moneta::storage::keys::{self, ShardRecord};
use moneta::storage::store::{RegulatoryRecord, WriteSet};
use moneta::storage::vault::Vault;

/// The master key the simulated members share (from the seed: runs replay).
pub(super) fn sim_vault(seed: u64) -> Vault {
    use sha2::{Digest, Sha256};
    let master: [u8; 32] = Sha256::digest(format!("moneta-sim-master-{seed}")).into();
    Vault::detached(&master, seed ^ 0x0056_4155_4c54).expect("a 32-byte master key")
}

impl ClusterSim {
    /// Production's `keep_regulatory_identity` over the leader's replica: nothing when the record
    /// is there or the person's data is unreadable already; else the retention key (unless it
    /// exists) and the sealed identity, in one write of the user's shard.
    pub(super) fn regulatory_writes(
        &self,
        leader: RaftId,
        group: GroupId,
        user_id: &str,
        facts: &moneta::domain::queries::RegulatoryFacts,
        now: Timestamp,
    ) -> Option<WriteSet> {
        let records = &self.replicas.get(&(leader, group))?.host.records;
        let shard = moneta::storage::records::user_shard(user_id);
        if records.contains_key(&keys::shard_record_key(shard, ShardRecord::Regulatory, user_id)) {
            return None;
        }
        let wrapped = records.get(&Vault::key_location(user_id))?;
        let profile: Profile = serde_json::from_slice(&self.vault.open_with(user_id, wrapped, "profile", &facts.sealed_profile).ok()?).ok()?;
        let document = facts
            .sealed_document
            .as_ref()
            .and_then(|s| self.vault.open_with(user_id, wrapped, "kyc", s).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        let identity = moneta::workflows::erasure::regulatory_identity(user_id, &profile, document.as_ref(), now);
        let key_id = format!("retention:{user_id}");
        let mut writes = WriteSet::default();
        let retention = match records.get(&Vault::key_location(&key_id)) {
            Some(w) => w.clone(),
            None => {
                let created = self.vault.wrap_new(&key_id).expect("the simulator's vault wraps a key");
                let w = created.puts[0].1.clone();
                writes.puts.extend(created.puts);
                w
            }
        };
        let sealed = self
            .vault
            .seal_with(&key_id, &retention, "regulatory", &serde_json::to_vec(&identity).expect("json"))
            .expect("the simulator's vault seals");
        let record = RegulatoryRecord {
            expires_at: Timestamp(now.millis() + 7 * 365 * 24 * 3_600_000),
            key_id,
            sealed,
        };
        let put = moneta::storage::records::put_regulatory(user_id, &record);
        writes.puts.extend(put.puts);
        Some(writes)
    }
}
