//! `moneta backup create` and `moneta backup restore`.

use super::*;

pub(super) fn backup_create(path: Option<PathBuf>, out: PathBuf) -> ExitCode {
    use crate::storage::backup;
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = absolute(out);
    let data_dir = &config.node.data_dir;
    if let Err(code) = existing_data_folder(&config) {
        return code;
    }
    let digest = match Store::open(data_dir) {
        // The node is stopped: read the folder ourselves.
        Ok(store) => {
            // The backup carries the folder's email-index key, and a restore needs its master
            // key: keys other than the ones its data is written under would restore a folder
            // no node can serve.
            if let Err(e) = crate::node::check_stopped_folder_keys(&config, &store) {
                return fail(e, 2);
            }
            // A member of a larger cluster may hold replicas of some groups only: a backup of
            // its folder would leave everyone else out without a word. (A folder with no raft
            // state at all was restored and never served: it holds every group's data.)
            let held = match store.raft_groups() {
                Ok(g) => g.keys().filter(|g| **g < store.groups()).count(),
                Err(e) => return fail(e, 2),
            };
            if let Some(why) = crate::storage::backup::partial_holding(held, store.groups()).filter(|_| held != 0) {
                return fail(format!("{why} (take it at such a node while it runs)"), 1);
            }
            let key = match backup::load_key(&config.backup.key_file, true) {
                Ok(k) => k,
                Err(e) => return fail(e, 2),
            };
            match backup::write_backup_file(&store, &config.security.secrets_path(data_dir), &key, &out) {
                Ok(d) => d,
                Err(e) => return fail(e, 1),
            }
        }
        // A node holds the folder: ask it.
        Err(StoreError::Locked(_)) => match crate::control::call(data_dir, &crate::control::Request::Backup { out: out.clone() }) {
            Ok(crate::control::Response { ok: true, digest: Some(d), .. }) => d,
            Ok(r) => return fail(format!("the node could not take the backup: {}", r.error.unwrap_or_default()), 1),
            Err(e) => return fail(e, 1),
        },
        Err(e) => return fail(e, 2),
    };
    println!("backup written to {}", out.display());
    println!("state digest {digest}");
    ExitCode::SUCCESS
}

pub(super) fn backup_restore(path: Option<PathBuf>, from: PathBuf) -> ExitCode {
    use crate::storage::backup;
    use crate::storage::store::{read_erasure_list, PendingErasure};
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let key = match backup::load_key(&config.backup.key_file, false) {
        Ok(k) => k,
        Err(e) => return fail(e, 2),
    };
    // No list file is not an error (on a node where no one was ever erased there is none), but
    // it may also be a list lost with the data volume: the restore goes on and says so below.
    let list_path = &config.gdpr.erasure_list;
    let (erasures, list_missing) = match read_erasure_list(list_path) {
        Ok(Some(l)) => (l, false),
        Ok(None) => (Vec::new(), true),
        Err(e) => return fail(e, 2),
    };
    let data_dir = &config.node.data_dir;
    let digest = match backup::restore(&from, &key, data_dir, &config.security.secrets_path(data_dir)) {
        Ok(d) => d,
        Err(e) => return fail(e, 1),
    };
    // Replay the erasure list: nobody erased since the backup comes back. Their data keys go
    // now; the node finishes the erasure (account, email index) when it next starts.
    let replayed = (|| -> Result<usize, String> {
        let store = Store::open(data_dir).map_err(|e| e.to_string())?;
        let master_path = config.security.master_key_path(data_dir);
        if !master_path.exists() {
            return Err(format!(
                "the master key {} is missing (key `security.master_key_file`): the restored personal data cannot be read without it",
                master_path.display()
            ));
        }
        let master = crate::storage::vault::load_or_create_master_key(&master_path).map_err(|e| e.to_string())?;
        let vault = crate::storage::vault::Vault::new(&store, &master).map_err(|e| e.to_string())?;
        let now = crate::actors::wall_clock_now();
        for (user_id, email_hash) in &erasures {
            // The identity regulation needs behind the person's trades first: the backup may
            // predate the erasure that kept it, and without the key it is gone for good.
            crate::workflows::erasure::keep_regulatory_identity_offline(&store, &vault, user_id, now, config.retention.regulatory_records)
                .map_err(|e| format!("keeping the regulatory identity of {user_id}: {e}"))?;
            store.apply_offline(&vault.destroy_data_key(user_id)).map_err(|e| e.to_string())?;
            let pending = PendingErasure {
                due_at: crate::domain::time::Timestamp(0),
                email_hash: email_hash.clone(),
                replay: true,
            };
            store
                .apply_offline(&crate::storage::records::schedule_erasure(user_id, &pending))
                .map_err(|e| e.to_string())?;
        }
        let report = store.verify_audit();
        if !report.ok {
            return Err(format!(
                "the restored audit chain does not verify: {}",
                report.problem.as_deref().unwrap_or("no entry named")
            ));
        }
        Ok(erasures.len())
    })();
    match replayed {
        Ok(n) => {
            println!("restored into {}", data_dir.display());
            println!("state digest {digest}");
            println!("erasures replayed: {n}; audit chain OK");
            if list_missing {
                // On stderr, so that scripts reading the summary above still read it unchanged.
                eprintln!(
                    "moneta: warning: the erasure list {} (key `gdpr.erasure_list`) does not exist, so no erasures were replayed: \
                     anyone erased since this backup was made would come back when the node starts. Unless no one was ever \
                     erased, do not start the node: put the erasure list back first, empty the data folder and restore again.",
                    list_path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The erasures were not all replayed (or the chain does not verify): a node started
            // on this folder could bring an erased person back. Nothing of the refused restore
            // stays in the data folder.
            let removed = std::fs::remove_dir_all(data_dir).is_ok();
            fail(format!("{e}{}", if removed { "; the restored data folder was removed" } else { "" }), 1)
        }
    }
}
