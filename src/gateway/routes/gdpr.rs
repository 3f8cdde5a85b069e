//! Data subject rights: access (`GET /v1/me/export`) and erasure (`DELETE /v1/me`, carried out
//! by the erasure job after the grace period).
//!
//! Erasure, in an order that is safe to repeat after a crash at any step (the schedule entry is
//! removed last, and every step is idempotent):
//! 1. the account forgets personal data, credentials and sessions (`Erase`, audited);
//! 2. the email index entry is released (so the email can neither log in nor be found);
//! 3. the user's data key is destroyed (crypto-shredding: every sealed copy of their personal
//!    data anywhere — older journal entries, snapshots — becomes unreadable);
//! 4. the schedule entry goes.
//!
//! Kept, identified only by the random user id: the portfolio with its orders and transactions
//! and the audit trail (regulatory records), and the account's decision facts (KYC outcome,
//! screening, risk profile).

use super::meta;
use super::periodically;
use super::portfolio::{history, statement_view, transaction_view, OrderView};

/// The lists of an export and the field that identifies their items (one CSV row group each).
const EXPORT_LISTS: [(&str, &str); 8] = [
    ("transactions", "tx_id"),
    ("orders", "order_id"),
    ("statements", "statement_id"),
    ("security_events", "seq"),
    ("audit_records", "seq"),
    ("notifications", "id"),
    ("sessions", "session"),
    ("advice", "advice_id"),
];
use super::unavailable;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply, Profile};
use crate::domain::audit::{AuditDraft, AuditRecord};
use crate::domain::email_index::{EmailIndex, EmailIndexCommand};
use crate::domain::kyc::KycDocument;
use crate::domain::money::{cash_string, plain_string};
use crate::domain::portfolio::Portfolio;
use crate::domain::suitability::Answers;
use crate::domain::time::Timestamp;
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use crate::storage::store::PendingErasure;
use bytes::Bytes;
use serde_json::{json, Value};
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use warp::http::{Response, StatusCode};

/// Everything held about one user, decrypted, as one JSON document.
async fn collect(state: &AppState, user_id: &str) -> Result<Value, ApiError> {
    let account = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::Registered)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))?;
    let v = &state.vault;
    let profile: Profile = v.open_json(user_id, "profile", &account.sealed_profile).map_err(unavailable)?;
    let document: Option<KycDocument> = match account.kyc.as_ref().and_then(|k| k.sealed_document.as_ref()) {
        Some(sealed) => Some(v.open_json(user_id, "kyc", sealed).map_err(unavailable)?),
        None => None,
    };
    let answers: Option<Answers> = match account.suitability.as_ref() {
        Some(s) => Some(v.open_json(user_id, "suitability", &s.sealed_answers).map_err(unavailable)?),
        None => None,
    };
    let (cash, holdings) = state
        .router
        .query::<Portfolio, _>(user_id, crate::domain::queries::Holdings)
        .await
        .map_err(unavailable)?;
    let hist = history(state, user_id).await?;
    let store = state.router.store().clone();
    let uid = user_id.to_string();
    let subjects = [format!("account/{uid}"), format!("portfolio/{uid}")];
    let audit: Vec<AuditRecord> = tokio::task::spawn_blocking(move || {
        store.audit_records_rev(usize::MAX, move |r| {
            r.actor == uid || subjects.contains(&r.entity) || r.details.get("user_id") == Some(&uid)
        })
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(unavailable)?;
    let audit: Vec<Value> = audit
        .iter()
        .rev()
        .map(|r| {
            json!({
                "seq": r.seq, "at": r.at.to_rfc3339(), "action": r.action, "outcome": r.outcome.as_text(),
                "actor": r.actor, "subject": r.entity, "request_id": r.request_id, "details": r.details,
            })
        })
        .collect();
    let security_events: Vec<Value> = audit
        .iter()
        .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("security.")))
        .cloned()
        .collect();
    Ok(json!({
        "user_id": user_id,
        "generated_at": crate::actors::wall_clock_now().to_rfc3339(),
        "profile": {
            "email": profile.email,
            "full_name": profile.full_name,
            "date_of_birth": profile.date_of_birth.map(|d| d.to_string()),
            "country": profile.country,
            "roles": account.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "created_at": account.created_at.to_rfc3339(),
        },
        "kyc": {
            "status": account.kyc_status().as_str(),
            "provider": account.kyc.as_ref().map(|k| k.provider.clone()),
            "decided_at": account.kyc.as_ref().map(|k| k.decided_at.to_rfc3339()),
            "document_type": document.as_ref().map(|d| d.document_type.as_str()),
            "document_number": document.as_ref().map(|d| d.document_number.clone()),
            "address": document.as_ref().map(|d| d.address.clone()),
        },
        "screening": account.screening.as_ref().map(|s| json!({
            "status": account.screening_status(),
            "screened_at": s.screened_at.to_rfc3339(),
            "list_version": s.outcome.list_version,
            "score": s.outcome.score,
            "reviewed": s.resolution.is_some(),
        })),
        "consents": account.consents,
        "suitability": account.suitability.as_ref().map(|s| json!({
            "risk_profile": s.profile,
            "assessed_at": s.assessed_at.to_rfc3339(),
            "answers": answers,
        })),
        "mfa_enabled": account.mfa_enabled(),
        "sessions": account.sessions.iter().map(|(id, s)| json!({
            "session": id, "created_at": s.created_at.to_rfc3339(), "expires_at": s.expires_at.to_rfc3339(), "revoked": s.revoked,
        })).collect::<Vec<_>>(),
        "known_devices": account.devices.len(),
        "notifications": account.notifications.iter().map(|n| json!({"id": n.id, "at": n.at.to_rfc3339(), "kind": n.kind, "message": n.message})).collect::<Vec<_>>(),
        "erasure": account.erasure.map(|e| json!({"requested_at": e.requested_at.to_rfc3339(), "due_at": e.due_at.to_rfc3339()})),
        "portfolio": {
            "currency": state.config.portfolio.currency,
            "cash": cash_string(cash),
            "holdings": holdings.iter().map(|(s, h)| json!({"symbol": s, "quantity": plain_string(h.quantity), "average_cost": plain_string(h.average_cost())})).collect::<Vec<_>>(),
        },
        "transactions": hist.transactions.iter().map(transaction_view).collect::<Vec<_>>(),
        "orders": hist.orders.values().map(|o| serde_json::to_value(OrderView::from(o)).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        "statements": hist.statements.iter().map(statement_view).collect::<Vec<_>>(),
        "advice": account.advice.as_ref().map(super::advice::view).into_iter().collect::<Vec<_>>(),
        "security_events": security_events,
        "audit_records": audit,
    }))
}

fn csv_field(s: &str) -> String {
    // Quote every field; neutralise spreadsheet formulas (CSV injection).
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Flattens the export into one CSV with a kind column: `kind,id,field,value`.
pub fn to_csv(doc: &Value) -> String {
    fn walk(out: &mut Vec<[String; 4]>, kind: &str, id: &str, prefix: &str, v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let field = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(out, kind, id, &field, x);
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    walk(out, kind, id, &format!("{prefix}[{i}]"), x);
                }
            }
            Value::Null => out.push([kind.into(), id.into(), prefix.into(), String::new()]),
            Value::String(s) => out.push([kind.into(), id.into(), prefix.into(), s.clone()]),
            other => out.push([kind.into(), id.into(), prefix.into(), other.to_string()]),
        }
    }
    let mut rows = Vec::new();
    let uid = doc["user_id"].as_str().unwrap_or_default();
    for (kind, id_field) in EXPORT_LISTS {
        for item in doc[kind].as_array().into_iter().flatten() {
            let id = match &item[id_field] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            walk(&mut rows, kind.trim_end_matches('s'), &id, "", item);
        }
    }
    if let Value::Object(m) = doc {
        for (k, v) in m {
            if !EXPORT_LISTS.iter().any(|(list, _)| list == k) {
                walk(&mut rows, k, uid, "", v);
            }
        }
    }
    let mut out = String::from("kind,id,field,value\n");
    for r in rows {
        out.push_str(&r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// GET /v1/me/export?format=json|csv — everything held about the caller (audited).
pub async fn export(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let format = req.query_param("format").unwrap_or_else(|| "json".into());
    if format != "json" && format != "csv" {
        return Err(ApiError::bad_request("format must be json or csv"));
    }
    let doc = collect(state, &claims.sub).await?;
    state
        .router
        .audit(
            AuditDraft::ok("gdpr.export").detail("format", &format),
            &format!("account/{}", claims.sub),
            &meta(req, &claims.sub),
            true,
        )
        .await
        .map_err(unavailable)?;
    if format == "json" {
        return Ok(private_json(StatusCode::OK, &doc));
    }
    let mut r = Response::new(Bytes::from(to_csv(&doc)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"moneta-export.csv\""));
    Ok(r)
}

/// DELETE /v1/me — schedules the caller's erasure after the grace period.
pub async fn delete_me(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let sealed = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::RegisteredProfile)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))?;
    let profile: Profile = state.vault.open_json(&claims.sub, "profile", &sealed).map_err(unavailable)?;
    let now = crate::actors::wall_clock_now();
    let due_at = Timestamp(now.millis() + state.config.gdpr.erasure_grace_period.as_millis() as i64);
    // The schedule first (with the email index key the job will need once the profile is
    // gone), then the account's record of the request: a crash between leaves a schedule entry
    // the job drops, never a request the job would miss.
    let pending = PendingErasure {
        due_at,
        email_hash: state.email_hash(&profile.email),
        replay: false,
    };
    let existing = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::ErasureDue)
        .await
        .map_err(unavailable)?;
    if existing.is_none() {
        let store = state.router.store().clone();
        let uid = claims.sub.clone();
        tokio::task::spawn_blocking(move || store.put_erasure(&uid, &pending))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(unavailable)?;
    }
    let due = match state
        .router
        .execute::<Account>(&claims.sub, AccountCommand::RequestErasure { due_at }, meta(req, &claims.sub))
        .await
    {
        Ok(AccountReply::ErasureDue(d)) => d,
        Ok(_) => return Err(ApiError::internal()),
        Err(RouteError::Rejected(_)) => return Err(ApiError::unauthorized("the account of this token no longer exists")),
        Err(RouteError::Failed(e)) => return Err(unavailable(e)),
    };
    Ok(private_json(StatusCode::ACCEPTED, &json!({ "erasure_due_at": due.to_rfc3339() })))
}

/// Before an erasure: seals the identity regulation needs behind the person's trades under a
/// retention key of its own (`retention:<user id>`), kept until `[retention] regulatory_records`
/// has passed. Idempotent; skipped when the person's data is already unreadable.
async fn keep_regulatory_identity(state: &AppState, user_id: &str, replay: bool, now: Timestamp) -> Result<(), String> {
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
    state.vault.create_data_key(&key_id).map_err(|e| e.to_string())?;
    let sealed = state.vault.seal_json(&key_id, "regulatory", &identity).map_err(|e| e.to_string())?;
    let record = crate::storage::store::RegulatoryRecord {
        expires_at: Timestamp(now.millis() + state.config.retention.regulatory_records.as_millis() as i64),
        key_id,
        sealed,
    };
    state.router.store().put_regulatory(user_id, &record).map_err(|e| e.to_string())
}

/// Carries out every erasure that is due; returns how many were completed.
pub async fn run_due_erasures(state: &AppState) -> Result<usize, String> {
    let store = state.router.store().clone();
    let pending = tokio::task::spawn_blocking(move || store.erasures())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let now = crate::actors::wall_clock_now();
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
                    state.router.store().remove_erasure(&user_id).map_err(|e| e.to_string())?;
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
        state.vault.destroy_data_key(&user_id).map_err(|e| e.to_string())?;
        state.router.store().remove_erasure(&user_id).map_err(|e| e.to_string())?;
        tracing::info!(user_id = %user_id, "personal data erased");
        done += 1;
    }
    Ok(done)
}

/// The erasure job: checks every `[gdpr] erasure_check_interval` until `stop` is set.
pub async fn erasure_job(state: std::sync::Arc<AppState>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.gdpr.erasure_check_interval;
    periodically(every, stop, || async {
        if let Err(e) = run_due_erasures(&state).await {
            tracing::error!(error = %e, "erasure job failed; retrying at the next check");
        }
    })
    .await
}

/// What one retention run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetentionSummary {
    pub security_events_redacted: usize,
    pub regulatory_records_expired: usize,
    pub accounts_checked: usize,
}

/// Enforces `[retention]` as of `now`: security events past their period are redacted from
/// the audit chain (after a `retention.redact` record lists them), old notifications deleted.
pub async fn run_retention(state: &AppState, now: Timestamp) -> Result<RetentionSummary, String> {
    let cfg = &state.config.retention;
    let mut summary = RetentionSummary::default();
    let store = state.router.store().clone();
    let cutoff = Timestamp(now.millis() - cfg.security_events.as_millis() as i64);
    let due = tokio::task::spawn_blocking(move || store.audit_due_for_redaction(cutoff, |r| r.action.starts_with("security.")))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for chunk in due.chunks(10_000) {
        let draft = AuditDraft::ok(crate::storage::audit_log::REDACT_ACTION)
            .detail("class", "security_events")
            .detail("count", chunk.len())
            .detail("before", cutoff.to_rfc3339())
            .detail("seqs", crate::storage::audit_log::ranges(chunk));
        state.router.audit(draft, "audit", &RequestMeta::system("retention-job"), true).await?;
        let store = state.router.store().clone();
        let chunk = chunk.to_vec();
        summary.security_events_redacted += tokio::task::spawn_blocking(move || store.redact_audit(&chunk))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    // Regulatory identities whose retention ended: their retention key goes (crypto-shredding).
    let store = state.router.store().clone();
    let records = tokio::task::spawn_blocking(move || store.regulatory_records())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let expired: Vec<_> = records.into_iter().filter(|(_, r)| r.expires_at <= now).collect();
    if !expired.is_empty() {
        let draft = AuditDraft::ok("retention.expire")
            .detail("class", "regulatory_records")
            .detail("count", expired.len())
            .detail("user_ids", expired.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(","));
        state.router.audit(draft, "retention", &RequestMeta::system("retention-job"), true).await?;
        for (uid, r) in &expired {
            state.vault.destroy_data_key(&r.key_id).map_err(|e| e.to_string())?;
            state.router.store().remove_regulatory(uid).map_err(|e| e.to_string())?;
            summary.regulatory_records_expired += 1;
        }
    }
    let store = state.router.store().clone();
    let ids = tokio::task::spawn_blocking(move || store.entity_ids(crate::domain::ids::EntityKind::Account))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let before = Timestamp(now.millis() - cfg.notifications.as_millis() as i64);
    for uid in ids {
        match state
            .router
            .execute::<Account>(&uid, AccountCommand::PruneNotifications { before }, RequestMeta::system("retention-job"))
            .await
        {
            Ok(_) | Err(RouteError::Rejected(_)) => summary.accounts_checked += 1,
            Err(RouteError::Failed(e)) => return Err(format!("{uid}: {e}")),
        }
    }
    Ok(summary)
}

/// The retention job: runs every `[retention] check_interval` until `stop` is set.
pub async fn retention_job(state: std::sync::Arc<AppState>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.retention.check_interval;
    periodically(every, stop, || async {
        match run_retention(&state, crate::actors::wall_clock_now()).await {
            Ok(s) if s.security_events_redacted > 0 => tracing::info!(redacted = s.security_events_redacted, "retention: security events redacted"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention job failed; retrying at the next run"),
        }
    })
    .await
}
