//! Staff routes: support's limited, audited view of a user; compliance's screening review and
//! list reloads; the audit chain's status; security events. No staff route shows a date of
//! birth, a document number or a full email address; `admin` reaches no personal data at all.

use super::identity::account_error_pub as account_error;
use super::meta;
use super::unavailable;
use crate::adapters::sanctions;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, Profile, ScreeningDecision};
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
    let profile: Profile = state.open_json(user_id, "profile", &account.sealed_profile).await.map_err(unavailable)?;
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
    /// Why: required, 1–1000 characters.
    #[schema(required = true)]
    note: Option<String>,
}

/// POST /v1/compliance/screening/{user_id}: a reviewer resolves a potential match.
pub async fn resolve_screening(state: &AppState, req: &Req, user_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: ResolveBody = req.json()?;
    let note = super::decision_note(b.note)?;
    let entry = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::ScreeningEntry)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("this user has no screening hit to resolve"))?;
    let cmd = AccountCommand::ResolveScreening {
        entry,
        decision: b.decision,
        note,
    };
    state
        .router
        .execute::<Account>(user_id, cmd, meta(req, &claims.sub))
        .await
        .map_err(|e| match e {
            RouteError::Rejected(AccountRejection::MatchNotClearable) => ApiError::new(
                StatusCode::CONFLICT,
                "match_not_clearable",
                "the user's name and date of birth are on the sanctions list (a full match): a review clears only a potential match",
            ),
            e => account_error(e),
        })?;
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

/// The newest `n` records a query picks, newest first, from every shard group (the other
/// members' for groups this node holds no replica of).
async fn newest(state: &AppState, n: usize, query: crate::domain::audit::AuditQuery) -> Result<Vec<AuditRecord>, ApiError> {
    let mut records = state.router.audit_where(query, n).await.map_err(unavailable)?;
    records.reverse();
    records.truncate(n);
    Ok(records)
}

/// GET /v1/admin/security-events: failed logins, lockouts, refresh-token reuse, new devices,
/// denied requests — newest first.
/// A client address is personal data, and `admin` reads none: each event names the address's
/// network instead (IPv4 /24, IPv6 /48), enough to see attempts come from one place.
pub async fn security_events(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    let n = limit(req)?;
    let records = newest(state, n, crate::domain::audit::AuditQuery::Action("security.".into())).await?;
    let mut events: Vec<serde_json::Value> = records.iter().map(record_view).collect();
    for e in &mut events {
        if let Some(details) = e.get_mut("details").and_then(|d| d.as_object_mut()) {
            if let Some(address) = details.remove("address") {
                details.insert("network".into(), network_of(address.as_str().unwrap_or_default()).into());
            }
        }
    }
    Ok(private_json(StatusCode::OK, &events))
}

/// The network an address lies in: `203.0.113.0/24`, `2001:db8:1::/48`; "unknown" for text
/// that is not an address.
pub(crate) fn network_of(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            let [x, y, z, _] = a.octets();
            format!("{x}.{y}.{z}.0/24")
        }
        Ok(std::net::IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => network_of(&v4.to_string()),
            None => {
                let s = a.segments();
                format!("{}/48", std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        },
        Err(_) => "unknown".into(),
    }
}

/// The most reviewers' decisions on screening hits read to mark the hits resolved.
const RESOLUTIONS_READ_MAX: usize = 10_000;

/// GET /v1/compliance/screening-hits: screening results that were not clear, newest first, each
/// with its `resolution` (`{decision, at, by}`) once a reviewer has decided it, else null.
pub async fn screening_hits(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    let n = limit(req)?;
    let query = crate::domain::audit::AuditQuery::ActionWithStatus {
        action: "screening.check".into(),
        status: "clear".into(),
        equal: false,
    };
    let records = newest(state, n, query).await?;
    // Each hit says whether a reviewer has resolved it since, from the trail like the hits.
    let decided = state
        .router
        .audit_where(crate::domain::audit::AuditQuery::Action("screening.resolve".into()), RESOLUTIONS_READ_MAX)
        .await
        .map_err(unavailable)?;
    let hits: Vec<serde_json::Value> = records
        .iter()
        .map(|hit| {
            let mut view = record_view(hit);
            view["resolution"] = crate::domain::audit::resolution_of(hit, &decided).map_or(
                serde_json::Value::Null,
                |r| serde_json::json!({"decision": r.details.get("decision"), "at": r.at.to_rfc3339(), "by": r.actor}),
            );
            view
        })
        .collect();
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
            "groups": report.groups,
            "first_bad_entry": report.first_bad_entry,
            "problem": report.problem,
        }),
    ))
}

/// GET /v1/cluster: the cluster as this node sees it.
pub async fn cluster(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    Ok(private_json(StatusCode::OK, &state.router.cluster_view(&state.node_id)))
}

/// POST /v1/cluster/nodes/{node_id}/decommission: starts moving everything off the node
/// (202); 404 for a node that is not a member, 409 `cluster_too_small` when too few would be
/// left for the replication factor.
pub async fn decommission(state: &AppState, req: &Req, node_id: &str) -> Result<Reply, ApiError> {
    use crate::cluster::coordinator::{decommission, DecommissionError};
    let claims = state.claims(req)?;
    req.no_fields()?;
    match decommission(&state.router, node_id, &meta(req, &claims.sub)).await {
        Ok(s) => Ok(private_json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "node_id": node_id, "state": s.as_str() }),
        )),
        Err(e @ DecommissionError::UnknownNode(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ DecommissionError::TooSmall { .. }) => Err(ApiError::new(StatusCode::CONFLICT, "cluster_too_small", e.to_string())),
        Err(DecommissionError::Unavailable(e)) => Err(ApiError::unavailable(e)),
    }
}

/// POST /v1/compliance/sanctions/reload: reads the configured list again and re-screens everyone.
pub async fn reload_sanctions(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    req.no_fields()?;
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
    use crate::domain::time::Date;
    let claims = state.claims(req)?;
    let date = match req.query_param("date") {
        None => Date::from_timestamp(state.now()),
        Some(s) => Date::parse(&s).ok_or_else(|| ApiError::bad_request("date must be a real date written YYYY-MM-DD"))?,
    };
    let report = crate::workflows::daily_report::daily_report(state, date, &meta(req, &claims.sub))
        .await
        .map_err(unavailable)?;
    Ok(private_json(StatusCode::OK, &report))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_is_shown_as_its_network() {
        assert_eq!(super::network_of("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(super::network_of("2001:db8:1:2:3:4:5:6"), "2001:db8:1::/48");
        assert_eq!(super::network_of("::ffff:198.51.100.9"), "198.51.100.0/24");
        assert_eq!(super::network_of("not an address"), "unknown");
    }
}
