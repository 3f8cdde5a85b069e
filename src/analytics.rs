//! Anonymised analytics for the warehouse: `moneta analytics export --out DIR`.
//!
//! Only people who gave `analytics` consent are included (withdrawing it excludes them from the
//! next export). Rows carry a stable pseudonymous id — HMAC-SHA256 of the user id under the
//! analytics key (`<data_dir>/keys/analytics.key`, 0600), so exports can be joined over time but
//! not linked back to a user id without the key — and coarse bands instead of exact values: an
//! age band (never the date of birth), the country, the risk band. No name, email, date of birth,
//! document number or address is ever written.
//!
//! Files (CSV, with a header): `investors.csv` (one row per consenting investor) and
//! `orders.csv` (their orders: day, symbol, side, quantity, price, fees).

use crate::domain::account::{age_years, Account, Profile, Role};
use crate::domain::ids::{EntityId, EntityKind};
use crate::domain::money::{cash_string, plain_string};
use crate::domain::portfolio::{History, Portfolio};
use crate::domain::time::{Date, Timestamp};
use crate::storage::vault::Vault;
use crate::storage::Store;
use std::io::Write;
use std::path::Path;

/// What an export wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub investors: usize,
    pub excluded_without_consent: usize,
    pub orders: usize,
}

/// The analytics pseudonymisation key, read or created (0600) under `keys_dir`.
pub fn load_or_create_key(keys_dir: &Path) -> Result<aws_lc_rs::hmac::Key, String> {
    let path = keys_dir.join("analytics.key");
    if !path.exists() {
        crate::storage::files::create_private_dir(keys_dir).map_err(|e| e.to_string())?;
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| "no system randomness".to_string())?;
        crate::storage::files::write_private_file(&path, &k).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() != 32 {
        return Err(format!("{}: expected 32 bytes", path.display()));
    }
    Ok(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes))
}

pub fn pseudonym(key: &aws_lc_rs::hmac::Key, user_id: &str) -> String {
    format!("anon_{}", hex::encode(&aws_lc_rs::hmac::sign(key, user_id.as_bytes()).as_ref()[..12]))
}

/// Ten-year bands from 18: `18-24`, `25-34`, … `75+`.
pub fn age_band(dob: Date, today: Date) -> &'static str {
    match age_years(dob, today) {
        ..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=54 => "45-54",
        55..=64 => "55-64",
        65..=74 => "65-74",
        _ => "75+",
    }
}

fn csv(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("\"{}\"", f.replace('"', "\"\""))).collect();
    quoted.join(",") + "\n"
}

/// Writes the export from the store (the node's durable state) into `out_dir`.
pub fn export(store: &Store, vault: &Vault, key: &aws_lc_rs::hmac::Key, out_dir: &Path, now: Timestamp) -> Result<ExportSummary, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let today = Date::from_timestamp(now);
    let mut investors = String::from(
        "investor,age_band,country,kyc_status,screening,risk_band,complex_products_allowed,ai_profiling,marketing,registered_month,cash,holdings,orders\n",
    );
    let mut orders = String::from("investor,day,symbol,side,quantity,price,fees\n");
    let mut summary = ExportSummary::default();
    for uid in store.entity_ids(EntityKind::Account).map_err(|e| e.to_string())? {
        let account: Account = store.load(&EntityId::new(EntityKind::Account, &uid)).map_err(|e| e.to_string())?.state;
        if !account.exists() || !account.roles.contains(&Role::User) {
            continue;
        }
        if !account.consents.analytics {
            summary.excluded_without_consent += 1;
            continue;
        }
        let profile: Profile = vault.open_json(&uid, "profile", &account.sealed_profile).map_err(|e| format!("{uid}: {e}"))?;
        let pid = EntityId::new(EntityKind::Portfolio, &uid);
        let portfolio: Portfolio = store.load(&pid).map_err(|e| e.to_string())?.state;
        let journal = store.journal::<Portfolio>(&pid, u64::MAX).map_err(|e| e.to_string())?;
        let history = History::from_events(journal.iter().map(|e| &e.event));
        let anon = pseudonym(key, &uid);
        let created = account.created_at.to_rfc3339();
        investors.push_str(&csv(&[
            anon.clone(),
            profile.date_of_birth.map(|d| age_band(d, today)).unwrap_or("unknown").to_string(),
            profile.country.unwrap_or_default(),
            account.kyc_status().as_str().to_string(),
            account
                .screening_status()
                .map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
                .unwrap_or_default(),
            account.suitability.as_ref().map(|s| s.profile.risk_band.as_str()).unwrap_or("").to_string(),
            account.suitability.as_ref().is_some_and(|s| s.profile.complex_products_allowed).to_string(),
            account.consents.ai_profiling.to_string(),
            account.consents.marketing.to_string(),
            created.get(..7).unwrap_or_default().to_string(),
            cash_string(portfolio.cash),
            portfolio.holdings.len().to_string(),
            history.orders.len().to_string(),
        ]));
        for o in history.orders.values() {
            orders.push_str(&csv(&[
                anon.clone(),
                o.executed_at.to_rfc3339().get(..10).unwrap_or_default().to_string(),
                o.symbol.clone(),
                o.side.as_str().to_string(),
                plain_string(o.quantity),
                plain_string(o.price),
                cash_string(o.fees),
            ]));
            summary.orders += 1;
        }
        summary.investors += 1;
    }
    for (name, body) in [("investors.csv", investors), ("orders.csv", orders)] {
        let path = out_dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(body.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_bands_are_coarse() {
        let today = Date::parse("2026-11-22").unwrap();
        let band = |dob: &str| age_band(Date::parse(dob).unwrap(), today);
        assert_eq!(band("2008-11-22"), "18-24");
        assert_eq!(band("2001-11-23"), "18-24");
        assert_eq!(band("2001-11-22"), "25-34");
        assert_eq!(band("1990-12-10"), "35-44");
        assert_eq!(band("1940-01-01"), "75+");
    }

    #[test]
    fn pseudonyms_are_stable_and_keyed() {
        let a = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[1u8; 32]);
        let b = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[2u8; 32]);
        assert_eq!(pseudonym(&a, "usr_1"), pseudonym(&a, "usr_1"));
        assert_ne!(pseudonym(&a, "usr_1"), pseudonym(&a, "usr_2"));
        assert_ne!(pseudonym(&a, "usr_1"), pseudonym(&b, "usr_1"));
        assert!(!pseudonym(&a, "usr_1").contains("usr_1"));
    }
}
