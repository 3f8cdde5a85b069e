//! The writer's part in GDPR erasure: every replica lists, beside its own folder (`[gdpr]
//! erasure_list`), the erasures it applies — from the log, or from a snapshot — so that a
//! restore of any node's backup replays them (`moneta backup restore`).

use super::Writer;
use crate::storage::codec;
use crate::storage::store::WriteSet;

impl Writer {
    /// Lists, in `[gdpr] erasure_list`, each person whose data key `set` destroys while their
    /// erasure is scheduled (a retention key going is not an erasure). Every replica of the
    /// group lists it, not only the node whose job ran the erasure: a restore of any node's
    /// backup replays the list kept beside that node, and an erasure missing from it would
    /// bring the person back. Listed before the round is applied (a crash in between lists it
    /// twice, which a restore reads as once); a list that cannot be written is logged, and the
    /// erasure goes on — the node that ran it listed it before destroying the key.
    pub(super) fn list_erasures(&self, set: &WriteSet) {
        let Some(list) = self.erasure_list.as_ref() else {
            return;
        };
        let people = set
            .deletes
            .iter()
            .filter(|k| crate::storage::keys::is_data_key_record(k))
            .filter_map(|k| std::str::from_utf8(&k[4..]).ok());
        for user_id in people {
            let shard = crate::storage::records::user_shard(user_id);
            let pending = self
                .store
                .record::<crate::storage::store::PendingErasure>(shard, crate::storage::keys::ShardRecord::Erasure, user_id);
            match pending {
                Ok(Some(p)) => {
                    if let Err(e) = crate::storage::store::append_erasure_list(list, user_id, &p.email_hash) {
                        tracing::error!(user_id, list = %list.display(), error = %e, "an applied erasure could not be listed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(user_id, error = %e, "the schedule of an applied erasure cannot be read"),
            }
        }
    }

    /// `list_erasures` for a replica brought up to date by a snapshot instead of the log (the
    /// log is compacted past an entry that destroys a data key at once, so a replica behind
    /// it is sent a snapshot, which happens whenever a replica is down or restarting during
    /// an erasure): each person the snapshot marks as erased (`ShardRecord::Erased`), and
    /// each whose erasure it has scheduled and whose data key it no longer holds (an erasure
    /// between its key's destruction and its end). A person listed already is not listed
    /// again.
    pub(super) fn list_installed_erasures(&self, data: &[u8]) {
        use crate::storage::keys::{is_shard_record, ShardRecord};
        let Some(list) = self.erasure_list.as_ref() else {
            return;
        };
        // Installed already: the snapshot decoded in `stage_install`.
        let Ok(pairs) = codec::decode::<Vec<(Vec<u8>, Vec<u8>)>>(data) else {
            return;
        };
        let of = |record: ShardRecord| {
            pairs
                .iter()
                .filter(move |(k, _)| is_shard_record(k) && k[3] == record as u8)
                .filter_map(|(k, v)| Some((std::str::from_utf8(&k[4..]).ok()?, v)))
        };
        let listed = |user_id: &str, email_hash: Result<String, codec::CodecError>, what: &str| match email_hash {
            Ok(hash) => {
                if let Err(e) = crate::storage::store::append_erasure_list(list, user_id, &hash) {
                    tracing::error!(user_id, list = %list.display(), error = %e, "an installed erasure could not be listed");
                }
            }
            Err(e) => tracing::error!(user_id, error = %e, "an erasure {what} in a snapshot does not decode"),
        };
        let keys: std::collections::HashSet<&str> = of(ShardRecord::DataKey).map(|(u, _)| u).collect();
        for (user_id, v) in of(ShardRecord::Erasure).filter(|(u, _)| !keys.contains(u)) {
            listed(
                user_id,
                codec::decode::<crate::storage::store::PendingErasure>(v).map(|p| p.email_hash),
                "schedule",
            );
        }
        for (user_id, v) in of(ShardRecord::Erased) {
            listed(user_id, codec::decode::<crate::storage::store::ErasedMarker>(v).map(|m| m.email_hash), "marker");
        }
    }
}
