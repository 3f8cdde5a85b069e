//! Staff routes: support's limited, audited view of a user; compliance's screening review and
//! list reloads; the audit chain's status; security events. No staff route shows a date of
//! birth, a document number or a full email address; `admin` reaches no personal data at all.

use super::identity::account_error_pub as account_error;
use super::meta;
use super::unavailable;
use crate::adapters::sanctions;
use crate::domain::account::{Account, AccountCommand, Profile, ScreeningDecision};
use crate::domain::audit::{AuditDraft, AuditRecord};
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use serde::Deserialize;
use std::sync::Arc;
use warp::http::StatusCode;

const EVENTS_LIMIT_MAX: usize = 1000;

/// `a***@example.com`: enough to recognise, not enough to contact.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

fn access_reason(req: &Req) -> Result<String, ApiError> {
    let reason = req.header("x-access-reason").map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request("send X-Access-Reason: why you need this user's data (1–200 characters)").with_code("access_reason_required"));
    }
    Ok(reason.to_string())
}

/// GET /v1/support/users/{user_id}: the limited view, each read audited (durably, before the
/// data is shown) with the reason given.
pub async fn support_user(state: &AppState, req: &Req, user_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let reason = access_reason(req)?;
    let not_found = || ApiError::not_found("no such user");
    if user_id.is_empty() || user_id.len() > 64 || !user_id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return Err(not_found());
    }
    let account = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::Investor)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    let draft = AuditDraft::ok("support.read").detail("reason", &reason).detail("view", "limited");
    state
        .router
        .audit(draft, &format!("account/{user_id}"), &meta(req, &claims.sub), true)
        .await
        .map_err(unavailable)?;
    let profile: Profile = state.vault.open_json(user_id, "profile", &account.sealed_profile).map_err(unavailable)?;
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({
            "user_id": account.user_id,
            "email": mask_email(&profile.email),
            "full_name": profile.full_name,
            "country": profile.country,
            "kyc_status": account.kyc_status().as_str(),
            "screening": account.screening_status(),
            "mfa_enabled": account.mfa_enabled(),
            "created_at": account.created_at.to_rfc3339(),
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    /// "clear" or "match".
    #[schema(value_type = String)]
    decision: ScreeningDecision,
    #[serde(default)]
    note: String,
}

/// POST /v1/compliance/screening/{user_id}: a reviewer resolves a potential match.
pub async fn resolve_screening(state: &AppState, req: &Req, user_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: ResolveBody = req.json()?;
    if b.note.chars().count() > 1000 {
        return Err(ApiError::bad_request("note is limited to 1000 characters"));
    }
    let entry = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::ScreeningEntry)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("this user has no screening hit to resolve"))?;
    let cmd = AccountCommand::ResolveScreening {
        entry,
        decision: b.decision,
        note: b.note,
    };
    state
        .router
        .execute::<Account>(user_id, cmd, meta(req, &claims.sub))
        .await
        .map_err(account_error)?;
    let status = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::ScreeningState)
        .await
        .map_err(unavailable)?;
    Ok(private_json(StatusCode::OK, &serde_json::json!({ "user_id": user_id, "screening": status })))
}

fn record_view(r: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq,
        "at": r.at.to_rfc3339(),
        "action": r.action,
        "outcome": r.outcome.as_text(),
        "actor": r.actor,
        "subject": r.entity,
        "request_id": r.request_id,
        "details": r.details,
    })
}

fn limit(req: &Req) -> Result<usize, ApiError> {
    match req.query_param("limit") {
        None => Ok(100),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=EVENTS_LIMIT_MAX).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1–{EVENTS_LIMIT_MAX}"))),
    }
}

async fn audit_query(state: &AppState, n: usize, keep: impl Fn(&AuditRecord) -> bool + Send + 'static) -> Result<Vec<serde_json::Value>, ApiError> {
    let store = state.router.store().clone();
    let records = tokio::task::spawn_blocking(move || store.audit_records_rev(n, keep))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(unavailable)?;
    Ok(records.iter().map(record_view).collect())
}

/// GET /v1/admin/security-events: failed logins, lockouts, refresh-token reuse, new devices,
/// denied requests — newest first.
pub async fn security_events(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    let n = limit(req)?;
    let events = audit_query(state, n, |r| r.action.starts_with("security.")).await?;
    Ok(private_json(StatusCode::OK, &events))
}

/// GET /v1/compliance/screening-hits: screening results that were not clear, newest first.
pub async fn screening_hits(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    let n = limit(req)?;
    let hits = audit_query(state, n, |r| {
        r.action == "screening.check" && r.details.get("status").is_some_and(|s| s != "clear")
    })
    .await?;
    Ok(private_json(StatusCode::OK, &hits))
}

/// GET /v1/admin/audit/verify: walks the whole chain.
pub async fn audit_verify(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let report = state.router.journal().verify().await.map_err(unavailable)?;
    let _ = state
        .router
        .audit(
            AuditDraft::ok("audit.verify").detail("ok", report.ok).detail("entries", report.entries),
            "audit",
            &meta(req, &claims.sub),
            false,
        )
        .await;
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({
            "ok": report.ok,
            "entries": report.entries,
            "head_hash": report.head_hash,
            "first_bad_entry": report.first_bad_entry,
            "problem": report.problem,
        }),
    ))
}

/// POST /v1/compliance/sanctions/reload: reads the configured list again and re-screens everyone.
pub async fn reload_sanctions(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let loaded = sanctions::load(&state.config.compliance).map_err(|e| ApiError::unprocessable("invalid_sanctions_list", e))?;
    let (version, entries, source) = (loaded.version.clone(), loaded.list.len(), loaded.source.clone());
    *state.sanctions.write().expect("sanctions lock") = Arc::new(loaded);
    let (screened, hits) = crate::workflows::rescreen::rescreen_all(state, &req.request_id).await.map_err(unavailable)?;
    let draft = AuditDraft::ok("screening.list_reload")
        .detail("list_version", &version)
        .detail("entries", entries)
        .detail("screened", screened)
        .detail("not_clear", hits);
    state
        .router
        .audit(draft, "sanctions", &meta(req, &claims.sub), true)
        .await
        .map_err(unavailable)?;
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({ "list_version": version, "source": source, "entries": entries, "screened": screened, "not_clear": hits }),
    ))
}

/// GET /v1/compliance/reports/daily?date=YYYY-MM-DD (UTC; default today): the day's trades,
/// order rejections (with the rule), screening hits, erasures and advice, from the audit trail.
pub async fn daily_report(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    use crate::domain::time::{Date, Timestamp};
    let claims = state.claims(req)?;
    let date = match req.query_param("date") {
        None => Date::from_timestamp(state.now()),
        Some(s) => Date::parse(&s).ok_or_else(|| ApiError::bad_request("date must be a real date written YYYY-MM-DD"))?,
    };
    let start = Timestamp::parse_rfc3339(&format!("{date}T00:00:00Z")).ok_or_else(ApiError::internal)?;
    let end = Timestamp(start.millis() + crate::domain::price_history::MS_PER_DAY);
    let store = state.router.store().clone();
    let records = tokio::task::spawn_blocking(move || store.audit_records())
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(unavailable)?;
    let subject_user = |r: &AuditRecord| r.entity.split_once('/').map(|(_, id)| id.to_string()).unwrap_or_default();
    let detail = |r: &AuditRecord, k: &str| r.details.get(k).cloned().unwrap_or_default();
    let (mut trades, mut rejections, mut hits, mut erasures, mut advice) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut alerts = Vec::new();
    // Statements of that day, whenever they were written (a close can run after midnight).
    let day = date.to_string();
    let statements = records
        .iter()
        .filter(|r| r.action == "statement.issued" && r.details.get("date").is_some_and(|d| *d == day))
        .count();
    let mut by_code: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let (mut notional, mut fees) = (rust_decimal::Decimal::ZERO, rust_decimal::Decimal::ZERO);
    for r in records.iter().filter(|r| r.at >= start && r.at < end) {
        let at = r.at.to_rfc3339();
        match (r.action.as_str(), &r.outcome) {
            ("order.filled", _) => {
                let q: rust_decimal::Decimal = detail(r, "quantity").parse().unwrap_or_default();
                let p: rust_decimal::Decimal = detail(r, "price").parse().unwrap_or_default();
                notional += crate::domain::money::round_cash(q * p);
                fees += detail(r, "fees").parse::<rust_decimal::Decimal>().unwrap_or_default();
                trades.push(serde_json::json!({
                    "at": at, "user_id": subject_user(r), "order_id": detail(r, "order_id"), "symbol": detail(r, "symbol"),
                    "side": detail(r, "side"), "quantity": detail(r, "quantity"), "price": detail(r, "price"), "fees": detail(r, "fees"),
                }));
            }
            ("order.place" | "portfolio.withdrawal" | "portfolio.deposit", crate::domain::audit::Outcome::Refused(code)) => {
                *by_code.entry(code.clone()).or_default() += 1;
                rejections.push(serde_json::json!({
                    "at": at, "user_id": subject_user(r), "action": r.action, "code": code, "rule": r.details.get("rule"),
                    "reason": r.details.get("reason"), "symbol": r.details.get("symbol"), "side": r.details.get("side"),
                    "quantity": r.details.get("quantity"),
                }));
            }
            ("screening.check", _) if r.details.get("status").is_some_and(|s| s != "clear") => hits.push(serde_json::json!({
                "at": at, "user_id": subject_user(r), "status": detail(r, "status"), "entry": r.details.get("entry"),
                "score": detail(r, "score"), "list_version": detail(r, "list_version"),
            })),
            ("gdpr.erasure", _) => erasures.push(serde_json::json!({ "at": at, "user_id": subject_user(r) })),
            ("security.reconciliation_discrepancy", crate::domain::audit::Outcome::Refused(kind)) => alerts.push(serde_json::json!({
                "at": at, "subject": r.entity, "kind": kind, "order_id": r.details.get("order_id"), "field": r.details.get("field"),
                "booked": r.details.get("booked"), "confirmed": r.details.get("confirmed"),
            })),
            ("advice.issued" | "advice.reviewed" | "advice.accepted" | "advice.recomputed", _) => advice.push(serde_json::json!({
                "at": at, "user_id": subject_user(r), "event": r.action, "advice_id": detail(r, "advice_id"),
                "status": r.details.get("status"), "decision": r.details.get("decision"), "risk_band": r.details.get("risk_band"),
                "orders": r.details.get("orders"), "turnover": r.details.get("turnover"), "model_version": r.details.get("model_version"),
                "note": r.details.get("note"), "by": r.actor,
            })),
            _ => {}
        }
    }
    let draft = AuditDraft::ok("compliance.report").detail("date", date);
    let _ = state.router.audit(draft, "reports", &meta(req, &claims.sub), false).await;
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({
            "date": date.to_string(),
            "generated_at": state.now().to_rfc3339(),
            "totals": {
                "trades": trades.len(), "notional": crate::domain::money::cash_string(notional), "fees": crate::domain::money::cash_string(fees),
                "rejections": rejections.len(), "rejections_by_code": by_code, "screening_hits": hits.len(), "erasures": erasures.len(), "advice": advice.len(),
                "statements": statements, "reconciliation_alerts": alerts.len(),
            },
            "trades": trades,
            "rejections": rejections,
            "screening_hits": hits,
            "erasures": erasures,
            "advice": advice,
            "reconciliation_alerts": alerts,
        }),
    ))
}
