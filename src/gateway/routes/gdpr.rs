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
use crate::domain::account::{Account, Profile};
use crate::domain::audit::{AuditDraft, AuditRecord};
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
    let v = &state.services;
    let profile: Profile = v.open_json(user_id, "profile", &account.sealed_profile).await.map_err(unavailable)?;
    let document: Option<KycDocument> = match account.kyc.as_ref().and_then(|k| k.sealed_document.as_ref()) {
        Some(sealed) => Some(v.open_json(user_id, "kyc", sealed).await.map_err(unavailable)?),
        None => None,
    };
    let answers: Option<Answers> = match account.suitability.as_ref() {
        Some(s) => Some(v.open_json(user_id, "suitability", &s.sealed_answers).await.map_err(unavailable)?),
        None => None,
    };
    let (cash, holdings) = state
        .router
        .query::<Portfolio, _>(user_id, crate::domain::queries::Holdings)
        .await
        .map_err(unavailable)?;
    let hist = history(state, user_id).await?;
    // Every group's records about the person, wherever this node's replicas are (oldest first).
    let audit: Vec<AuditRecord> = state.router.audit_of(user_id).await.map_err(unavailable)?;
    let audit: Vec<Value> = audit
        .iter()
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
        "generated_at": state.now().to_rfc3339(),
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
            "holdings": holdings.iter().map(|(s, h)| json!({"symbol": s, "quantity": plain_string(h.quantity), "average_cost": crate::domain::money::price_string(h.average_cost())})).collect::<Vec<_>>(),
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
    req.no_fields()?;
    let sealed = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::RegisteredProfile)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))?;
    let profile: Profile = state.open_json(&claims.sub, "profile", &sealed).await.map_err(unavailable)?;
    let now = state.now();
    let due_at = Timestamp(now.millis() + state.config.gdpr.erasure_grace_period.as_millis() as i64);
    // The schedule first (with the email index key the job will need once the profile is
    // gone), then the account's record of the request: a crash between leaves a schedule entry
    // the job drops, never a request the job would miss.
    let pending = PendingErasure {
        due_at,
        email_hash: state.email_hash(&profile.email),
        replay: false,
    };
    let flow = crate::workflows::erasure_request::RequestErasure::new(claims.sub.clone(), pending, meta(req, &claims.sub));
    use crate::workflows::erasure_request::ErasureRequest;
    let due = match crate::workflows::run(&state.router, &crate::workflows::flow::NodeEffects(state), flow)
        .await
        .map_err(unavailable)?
    {
        ErasureRequest::Due(d) => d,
        ErasureRequest::Refused(_) => return Err(ApiError::unauthorized("the account of this token no longer exists")),
        ErasureRequest::Unavailable(e) => return Err(unavailable(e)),
    };
    Ok(private_json(StatusCode::ACCEPTED, &json!({ "erasure_due_at": due.to_rfc3339() })))
}
