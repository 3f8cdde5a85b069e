//! The keys a data folder's data is written under: the email index's HMAC key and the master
//! key, found where the config says, made only for a folder that holds nothing yet, and
//! compared with the digests the folder recorded (`storage::key_check`).

use crate::config::Config;
use crate::gateway::auth::{create_private_dir, write_private_file};
use crate::storage::key_check::{self, Mismatch};
use crate::storage::vault::load_or_create_master_key;
use crate::storage::Store;
use std::path::Path;

/// The HMAC key behind the email index, read from `keys/email-index.key` or generated (0600).
/// Returns the key and its bytes (for the data folder's key check).
pub(super) fn load_or_create_index_key(keys_dir: &Path) -> Result<(aws_lc_rs::hmac::Key, Vec<u8>), String> {
    let path = keys_dir.join("email-index.key");
    let bytes = if path.exists() {
        std::fs::read(&path).map_err(|e| format!("key file {}: {e}", path.display()))?
    } else {
        create_private_dir(keys_dir).map_err(|e| format!("cannot create {}: {e}", keys_dir.display()))?;
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| "system randomness unavailable".to_string())?;
        write_private_file(&path, &k).map_err(|e| format!("key file {}: {e}", path.display()))?;
        k.to_vec()
    };
    if bytes.len() != 32 {
        return Err(format!("key file {}: expected 32 bytes, found {}", path.display(), bytes.len()));
    }
    crate::storage::files::check_private_file(&path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    Ok((aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes), bytes))
}

/// Whether the store holds any shard state (an entity, a record): shard keys sort before the
/// node's own bookkeeping, so the first key tells.
pub(super) fn holds_data(store: &Store) -> Result<bool, String> {
    match store.tree().first() {
        Ok(first) => Ok(first.is_some_and(|(k, _)| !crate::storage::keys::is_reserved(&k))),
        Err(e) => Err(format!("reading the data folder {}: {e}", store.path().display())),
    }
}
/// A key is made only for a data folder that holds nothing yet. Made anew for one that holds
/// data, it would make every person's data unreadable (the master key) or every address
/// unknown (the email index): a missing key file there is an operator's mistake to be told of
/// — a wrong `[security] secrets_dir`, or keys not restored with the data.
pub(super) fn require_key_files(config: &Config, store: &Store) -> Result<(), String> {
    if !holds_data(store)? {
        return Ok(());
    }
    key_files_present(config)
}

/// The folder's key files are where the config says (the folder holds data).
fn key_files_present(config: &Config) -> Result<(), String> {
    let data_dir = &config.node.data_dir;
    for (path, key) in [
        (config.security.secrets_path(data_dir).join("email-index.key"), "security.secrets_dir"),
        (config.security.master_key_path(data_dir), "security.master_key_file"),
    ] {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(format!("the key file {} (key `{key}`) is not a file", path.display())),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot read the key file {} (key `{key}`): {e}", path.display()));
            }
            Err(_) => {
                return Err(format!(
                    "the data folder {} holds data, but its key file {} is missing (key `{key}`): restore the node's keys with its data; a new key would leave the data unreadable",
                    data_dir.display(),
                    path.display()
                ))
            }
        }
    }
    Ok(())
}

/// Compares the keys with the folder's recorded digests; `record`: a folder with none gets
/// them (a serving node), else it passes (an offline reader writes nothing).
pub(super) fn keys_fit(config: &Config, store: &Store, master: &[u8], email_index: &[u8], record: bool) -> Result<(), String> {
    let data_dir = &config.node.data_dir;
    let result = if record {
        key_check::check_or_record(store, master, email_index)
    } else {
        key_check::check(store, master, email_index)
    };
    match result {
        Ok(()) => Ok(()),
        Err(Mismatch::Master) => Err(format!(
            "the master key {} (key `security.master_key_file`) is not the key this data folder's data is written under: give the node its own master key; with another one every person's data is unreadable",
            config.security.master_key_path(data_dir).display()
        )),
        Err(Mismatch::EmailIndex) => Err(format!(
            "the email-index key {} (key `security.secrets_dir`) is not the key this data folder's data is written under: give the node its own key; with another one nobody can sign in and a taken address registers again",
            config.security.secrets_path(data_dir).join("email-index.key").display()
        )),
        Err(Mismatch::Corrupt(e)) => Err(format!("the data folder's key check record does not read: {e}")),
    }
}

/// For a tool reading a stopped folder without serving it (`backup create`): the folder's key
/// files are there and are the ones its data is written under. Writes nothing, makes no key.
pub fn check_stopped_folder_keys(config: &Config, store: &Store) -> Result<(), String> {
    if !holds_data(store)? {
        return Ok(());
    }
    key_files_present(config)?;
    let keys_dir = config.security.secrets_path(&config.node.data_dir);
    let (_, email_index) = load_or_create_index_key(&keys_dir)?;
    let master =
        load_or_create_master_key(&config.security.master_key_path(&config.node.data_dir)).map_err(|e| format!("{e} (key `security.master_key_file`)"))?;
    keys_fit(config, store, &master, &email_index, false)
}
