//! GDPR erasure: after `[gdpr] erasure_grace_period`, the identity regulation needs is sealed
//! under a retention key of its own, the account forgets the person (personal data,
//! credentials, sessions, advice), the email is freed, the erasure is listed outside the data
//! folder and the person's data key is destroyed (crypto-shredding). Trades and the audit chain
//! stay.

use super::periodically;
use super::services::Services;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply, Profile};
use crate::domain::email_index::{EmailIndex, EmailIndexCommand};
use crate::domain::kyc::KycDocument;
use crate::domain::time::Timestamp;
use serde_json::json;

/// Before an erasure: seals the identity regulation needs behind the person's trades under a
/// retention key of its own (`retention:<user id>`), kept until `[retention] regulatory_records`
/// has passed. Idempotent; skipped when the person's data is already unreadable.
async fn keep_regulatory_identity(state: &Services, user_id: &str, replay: bool, now: Timestamp) -> Result<(), String> {
    let crate::domain::queries::RegulatoryFacts {
        exists,
        sealed_profile,
        sealed_document,
        due,
    } = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::Regulatory { now })
        .await
        .map_err(|e| e.to_string())?;
    if !exists || !(due || replay) || state.router.store().regulatory(user_id).map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    let profile: Profile = match state.vault.open_json(user_id, "profile", &sealed_profile) {
        Ok(p) => p,
        Err(crate::storage::vault::VaultError::NoKey) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let document: Option<KycDocument> = match sealed_document {
        Some(s) => state.vault.open_json(user_id, "kyc", &s).ok(),
        None => None,
    };
    let identity = json!({
        "user_id": user_id,
        "full_name": profile.full_name,
        "date_of_birth": profile.date_of_birth.map(|d| d.to_string()),
        "country": profile.country,
        "document_type": document.as_ref().map(|d| d.document_type.as_str()),
        "document_number": document.as_ref().map(|d| d.document_number.clone()),
        "address": document.as_ref().map(|d| d.address.clone()),
        "erased_at": now.to_rfc3339(),
    });
    let key_id = format!("retention:{user_id}");
    state.create_data_key(&key_id).await?;
    let sealed = state.vault.seal_json(&key_id, "regulatory", &identity).map_err(|e| e.to_string())?;
    let record = crate::storage::store::RegulatoryRecord {
        expires_at: Timestamp(now.millis() + state.config.retention.regulatory_records.as_millis() as i64),
        key_id,
        sealed,
    };
    state
        .router
        .journal()
        .write(crate::storage::records::put_regulatory(user_id, &record))
        .await
        .map_err(|e| e.to_string())
}

/// Carries out every erasure that is due; returns how many were completed.
pub async fn run_due_erasures(state: &Services) -> Result<usize, String> {
    let store = state.router.store().clone();
    let pending = tokio::task::spawn_blocking(move || store.erasures())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let now = state.now();
    let mut done = 0;
    for (user_id, p) in pending {
        if p.due_at > now {
            continue;
        }
        let m = RequestMeta::system("gdpr-erasure-job");
        keep_regulatory_identity(state, &user_id, p.replay, now).await?;
        let erase = AccountCommand::Erase { replayed: p.replay };
        match state.router.execute::<Account>(&user_id, erase, m.clone()).await {
            Ok(AccountReply::Erased { sessions }) => {
                for s in sessions {
                    state.revoke_session(&s);
                }
            }
            Ok(_) => {}
            // Scheduled but never recorded on the account (a crash between the two): drop it.
            Err(RouteError::Rejected(AccountRejection::ErasureNotDue)) => {
                let requested = state
                    .router
                    .query::<Account, _>(&user_id, crate::domain::queries::ErasureRequested)
                    .await
                    .map_err(|e| e.to_string())?;
                if !requested {
                    state
                        .router
                        .journal()
                        .write(crate::storage::records::remove_erasure(&user_id))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                continue;
            }
            // Replayed after a restore for someone the backup never knew (registered later).
            Err(RouteError::Rejected(AccountRejection::NotRegistered)) if p.replay => {}
            Err(e) => return Err(format!("erasing {user_id}: {e:?}")),
        }
        state
            .router
            .execute::<EmailIndex>(&p.email_hash, EmailIndexCommand::Release { user_id: user_id.clone() }, m.clone())
            .await
            .map_err(|e| format!("releasing the email of {user_id}: {e:?}"))?;
        // On the erasure list (outside the data folder) before the key goes, so that a restore
        // of any earlier backup erases this person again.
        if !p.replay {
            crate::storage::store::append_erasure_list(&state.config.gdpr.erasure_list, &user_id, &p.email_hash)
                .map_err(|e| format!("erasure list {}: {e}", state.config.gdpr.erasure_list.display()))?;
        }
        state.destroy_data_key(&user_id).await?;
        state
            .router
            .journal()
            .write(crate::storage::records::remove_erasure(&user_id))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(user_id = %user_id, "personal data erased");
        done += 1;
    }
    Ok(done)
}

/// The erasure job: checks every `[gdpr] erasure_check_interval` until `stop` is set.
pub async fn erasure_job(state: std::sync::Arc<Services>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.gdpr.erasure_check_interval;
    periodically(every, stop, || async {
        if let Err(e) = run_due_erasures(&state).await {
            tracing::error!(error = %e, "erasure job failed; retrying at the next check");
        }
    })
    .await
}
