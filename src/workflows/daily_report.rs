//! The compliance daily report: trades, refusals, screening hits, erasures, advice events,
//! statements and reconciliation alerts of one day, composed from the audit trail (a pure
//! function of the records, so it can be checked on its own) and itself audited.

use super::services::Services;
use crate::actors::RequestMeta;
use crate::domain::audit::{AuditDraft, AuditRecord};
use crate::domain::time::{Date, Timestamp};

/// The report of `date` (UTC) from the whole trail; `generated_at` is stamped on it.
pub fn compose(records: &[AuditRecord], date: Date, generated_at: Timestamp) -> serde_json::Value {
    let start = Timestamp(date.days_since_epoch() * crate::domain::price_history::MS_PER_DAY);
    let end = Timestamp(start.millis() + crate::domain::price_history::MS_PER_DAY);
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
    // Oldest first: the trail is read group by group, each in its own order (a stable sort
    // keeps that order for records of one moment).
    let mut day_records: Vec<&AuditRecord> = records.iter().filter(|r| r.at >= start && r.at < end).collect();
    day_records.sort_by_key(|r| r.at);
    for r in day_records {
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
    serde_json::json!({
        "date": date.to_string(),
        "generated_at": generated_at.to_rfc3339(),
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
    })
}

/// Reads the trail of every shard group (the other members' for groups this node holds no
/// replica of: a report is whole or refused), composes the report of `date` and audits that it
/// was produced.
pub async fn daily_report(state: &Services, date: Date, meta: &RequestMeta) -> Result<serde_json::Value, String> {
    let records = state
        .router
        .audit_where(
            crate::domain::audit::AuditQuery::Day(date.days_since_epoch()),
            crate::cluster::peer::AUDIT_OF_MAX,
        )
        .await?;
    // A read stops at its bound: a day that reaches it is refused rather than reported short.
    if records.len() >= crate::cluster::peer::AUDIT_OF_MAX {
        return Err(format!(
            "the day holds {} or more audit records, more than one report reads",
            crate::cluster::peer::AUDIT_OF_MAX
        ));
    }
    let report = compose(&records, date, state.now());
    let draft = AuditDraft::ok("compliance.report").detail("date", date);
    let _ = state.router.audit(draft, "reports", meta, false).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::Outcome;

    /// The trail comes group by group; the report's lists are oldest first across groups.
    #[test]
    fn the_days_lists_are_oldest_first_across_groups() {
        let date = Date::parse("2026-12-03").unwrap();
        let day = date.days_since_epoch() * crate::domain::price_history::MS_PER_DAY;
        let fill = |group: u32, seq: u64, minute: i64, order: &str| AuditRecord {
            seq,
            group,
            at: Timestamp(day + minute * 60_000),
            actor: "usr_a".into(),
            action: "order.filled".into(),
            entity: "portfolio/usr_a".into(),
            request_id: format!("req_{order}"),
            outcome: Outcome::Ok,
            details: [("order_id".to_string(), order.to_string())].into_iter().collect(),
        };
        // Group 0's chain first (minutes 30, 40), then group 1's (minutes 10, 35).
        let records = [
            fill(0, 0, 30, "ord_c"),
            fill(0, 1, 40, "ord_e"),
            fill(1, 0, 10, "ord_a"),
            fill(1, 1, 35, "ord_d"),
        ];
        let report = compose(&records, date, Timestamp(day));
        let orders: Vec<&str> = report["trades"].as_array().unwrap().iter().map(|t| t["order_id"].as_str().unwrap()).collect();
        assert_eq!(orders, ["ord_a", "ord_c", "ord_d", "ord_e"]);
    }
}
