//! The loaded sanctions list and screening of account holders against it.
//!
//! The list comes from `[compliance] sanctions_list` (OFAC SDN `sdn.csv` layout) or, when that
//! is empty, the bundled sample (`assets/sdn_sample.csv`). Its version is a digest of the bytes,
//! recorded with every screening result. Reloading re-screens every account holder.

use crate::config::ComplianceConfig;
use crate::domain::account::{Profile, ScreeningOutcome};
use crate::domain::screening::SanctionsList;
use sha2::{Digest, Sha256};

const BUNDLED: &str = include_str!("../../assets/sdn_sample.csv");

pub struct LoadedList {
    pub list: SanctionsList,
    /// First 16 hex digits of the SHA-256 of the file.
    pub version: String,
    pub source: String,
}

/// Reads and parses the configured list; a malformed line is an error naming it.
pub fn load(cfg: &ComplianceConfig) -> Result<LoadedList, String> {
    let (text, source) = if cfg.sanctions_list.as_os_str().is_empty() {
        (BUNDLED.to_string(), "bundled sample".to_string())
    } else {
        let path = &cfg.sanctions_list;
        let bytes = std::fs::read(path).map_err(|e| format!("sanctions list {} (key `compliance.sanctions_list`): {e}", path.display()))?;
        // OFAC publishes Latin-1 at times: accept UTF-8, else decode byte-for-byte as Latin-1.
        let text = String::from_utf8(bytes.clone()).unwrap_or_else(|_| bytes.iter().map(|&b| b as char).collect());
        (text, path.display().to_string())
    };
    let list = SanctionsList::parse(&text).map_err(|e| format!("sanctions list {source}: {e}"))?;
    let version = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
    Ok(LoadedList { list, version, source })
}

/// Screens a person's name and date of birth against the list.
pub fn screen(list: &LoadedList, profile: &Profile) -> ScreeningOutcome {
    let dob = profile.date_of_birth.map(|d| (d.year, d.month as u32, d.day as u32));
    let r = list.list.screen(&profile.full_name, dob);
    ScreeningOutcome {
        status: r.status,
        entry: r.matched_entry.filter(|_| r.status != crate::domain::screening::ScreeningStatus::Clear),
        score: format!("{:.3}", r.best_score),
        list_version: list.version.clone(),
    }
}
