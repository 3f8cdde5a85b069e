//! End of day and reconciliation: the node's scheduled trading jobs.
//!
//! - `end_of_day_job` closes each day at `[statements] close_time` (UTC): every portfolio with
//!   something to state gets a statement (holdings at the closing prices, value, trades, fees),
//!   which is also the point of its daily value series. A close missed while the node was down
//!   is caught up when it starts. `moneta eod run [--date]` closes a day on demand.
//! - `reconciliation_job` compares the broker's confirmations with every booked order each
//!   `[broker] reconcile_interval` and raises each discrepancy once as a
//!   `security.reconciliation_discrepancy` alert (listed by GET /v1/admin/security-events).
//! - `track_all` starts the live valuation of every portfolio when the node starts.

use super::periodically;
use super::portfolio::history;
use crate::actors::{wall_clock_now, RequestMeta};
use crate::cluster::RouteError;
use crate::domain::audit::AuditDraft;
use crate::domain::ids::EntityKind;
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::{Portfolio, PortfolioCommand, PortfolioRejection};
use crate::domain::reconcile::{reconcile, Discrepancy};
use crate::domain::time::{Date, Timestamp, MS_PER_DAY};
use crate::gateway::AppState;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Booked orders younger than this are not expected to be confirmed yet.
const CONFIRMATION_GRACE_MS: i64 = 5_000;
pub use crate::storage::trees::{ALERTED_TREE, JOBS_TREE};
const LAST_CLOSE_KEY: &[u8] = b"eod/last_close";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CloseSummary {
    pub statements: usize,
    pub already_closed: usize,
    pub nothing_to_state: usize,
    pub failed: usize,
}

fn portfolio_ids(state: &AppState) -> Result<Vec<String>, String> {
    state.router.store().entity_ids(EntityKind::Portfolio).map_err(|e| e.to_string())
}

/// The closing price of every listed instrument for `date`: the last daily close on or before
/// that day, or the latest price when the history has none.
async fn closing_prices(state: &AppState, date: Date) -> BTreeMap<String, Decimal> {
    let day_start = Timestamp(date.days_since_epoch() * MS_PER_DAY);
    let mut prices = BTreeMap::new();
    for symbol in state.symbols() {
        let close = state
            .router
            .query::<Instrument, _>(&symbol, crate::domain::queries::CloseOn { day_start })
            .await;
        match close {
            Ok(Some(p)) => {
                prices.insert(symbol, p);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(symbol = %symbol, error = %e, "no closing price; holdings count at cost"),
        }
    }
    prices
}

/// Closes `date` for every portfolio (a portfolio already closed for it is left alone): each
/// statement holds what stood at the day's close time and what happened up to it, however late
/// the close runs (a close caught up after a restart, a slow pass over many portfolios, a
/// past day closed on demand).
pub async fn close_day(state: &AppState, date: Date) -> Result<CloseSummary, String> {
    let prices = closing_prices(state, date).await;
    let offset = state.config.statements.close_offset_ms().unwrap_or(MS_PER_DAY);
    // Not after now: the journal read below then holds every event up to the cutoff, whatever
    // is appended while the close runs.
    let cutoff = Timestamp(date.days_since_epoch() * MS_PER_DAY + offset).min(wall_clock_now());
    let mut summary = CloseSummary::default();
    for user in portfolio_ids(state)? {
        // Already closed (a catch-up or a re-run): no need to read its whole journal. The
        // portfolio's own decision below still refuses a second close.
        if let Ok(true) = state.router.query::<Portfolio, _>(&user, crate::domain::queries::ClosedThrough { date }).await {
            summary.already_closed += 1;
            continue;
        }
        let journal = match state.router.read_journal::<Portfolio>(&user).await {
            Ok(j) => j.into_iter().map(|e| e.event).collect(),
            Err(e) => {
                summary.failed += 1;
                tracing::error!(error = %e, "end of day: a portfolio's journal could not be read");
                continue;
            }
        };
        let cmd = PortfolioCommand::CloseDay {
            date,
            prices: prices.clone(),
            cutoff,
            journal,
        };
        match state.router.execute::<Portfolio>(&user, cmd, RequestMeta::system(format!("eod-{date}"))).await {
            Ok(_) => summary.statements += 1,
            Err(RouteError::Rejected(PortfolioRejection::DayAlreadyClosed)) => summary.already_closed += 1,
            Err(RouteError::Rejected(PortfolioRejection::NothingToState)) => summary.nothing_to_state += 1,
            Err(e) => {
                summary.failed += 1;
                tracing::error!(error = ?e, "end of day: a portfolio could not be closed");
            }
        }
    }
    // The node's record moves forward only (closing a past day again does not rewind it).
    if summary.failed == 0 && last_closed(state).is_none_or(|d| d < date) {
        let jobs = state.router.store().open_tree(JOBS_TREE).map_err(|e| e.to_string())?;
        jobs.insert(LAST_CLOSE_KEY, date.to_string().as_bytes()).map_err(|e| e.to_string())?;
        jobs.flush_async().await.map_err(|e| e.to_string())?;
    }
    let _ = state
        .router
        .audit(
            AuditDraft::ok("eod.closed")
                .detail("date", date.to_string())
                .detail("statements", summary.statements.to_string())
                .detail("failed", summary.failed.to_string()),
            "eod",
            &RequestMeta::system(format!("eod-{date}")),
            true,
        )
        .await;
    Ok(summary)
}

fn last_closed(state: &AppState) -> Option<Date> {
    let jobs = state.router.store().open_tree(JOBS_TREE).ok()?;
    let v = jobs.get(LAST_CLOSE_KEY).ok()??;
    Date::parse(std::str::from_utf8(&v).ok()?)
}

/// The latest close that is due at `now`: today's if its close time has passed, else yesterday's.
fn due_close(now: Timestamp, offset_ms: i64) -> (Date, Timestamp) {
    let day = now.millis().div_euclid(MS_PER_DAY);
    let today_close = day * MS_PER_DAY + offset_ms;
    let close_day = if now.millis() >= today_close { day } else { day - 1 };
    (
        Date::from_timestamp(Timestamp(close_day * MS_PER_DAY)),
        Timestamp(close_day * MS_PER_DAY + offset_ms),
    )
}

/// The latest day whose close time has passed.
pub fn due_date(state: &AppState) -> Date {
    due_close(wall_clock_now(), state.config.statements.close_offset_ms().unwrap_or(0)).0
}

pub async fn end_of_day_job(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(offset) = state.config.statements.close_offset_ms() else {
        return;
    };
    loop {
        let now = wall_clock_now();
        let (date, _) = due_close(now, offset);
        if last_closed(&state).is_none_or(|d| d < date) {
            match close_day(&state, date).await {
                Ok(s) => tracing::info!(date = %date, statements = s.statements, failed = s.failed, "end of day closed"),
                Err(e) => tracing::error!(date = %date, error = %e, "end of day failed; retrying at the next close"),
            }
        }
        let next = due_close(now, offset).1.millis() + MS_PER_DAY;
        let wait = std::time::Duration::from_millis((next - wall_clock_now().millis()).clamp(1_000, MS_PER_DAY) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// What one reconciliation run found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    pub orders: usize,
    pub confirmations: usize,
    pub discrepancies: usize,
    pub alerted: usize,
}

/// Compares every booked order with the broker's confirmations; raises each new discrepancy.
pub async fn reconcile_now(state: &AppState) -> Result<ReconcileSummary, String> {
    let cutoff = Timestamp(wall_clock_now().millis() - CONFIRMATION_GRACE_MS);
    let mut booked = Vec::new();
    for user in portfolio_ids(state)? {
        let h = history(state, &user).await.map_err(|e| format!("portfolio history of a user: {e:?}"))?;
        booked.extend(h.orders.into_values().map(|o| (user.clone(), o)));
    }
    let mut confirmations = Vec::new();
    let mut discrepancies = Vec::new();
    for c in state.broker.confirmations()? {
        match c {
            Ok(c) => confirmations.push(c),
            Err((key, error)) => discrepancies.push(Discrepancy::Unreadable { key, error }),
        }
    }
    discrepancies.extend(reconcile(&booked, &confirmations, cutoff));
    let alerted_tree = state.router.store().open_tree(ALERTED_TREE).map_err(|e| e.to_string())?;
    let mut summary = ReconcileSummary {
        orders: booked.len(),
        confirmations: confirmations.len(),
        discrepancies: discrepancies.len(),
        alerted: 0,
    };
    for d in &discrepancies {
        if alerted_tree.contains_key(d.key()).map_err(|e| e.to_string())? {
            continue;
        }
        let mut draft = AuditDraft::refused("security.reconciliation_discrepancy", d.kind());
        let subject = match d {
            Discrepancy::Missing { order_id, user_id } | Discrepancy::Unknown { order_id, user_id } => {
                draft = draft.detail("order_id", order_id);
                format!("portfolio/{user_id}")
            }
            Discrepancy::Mismatch {
                order_id,
                user_id,
                field,
                booked,
                confirmed,
            } => {
                draft = draft
                    .detail("order_id", order_id)
                    .detail("field", *field)
                    .detail("booked", booked)
                    .detail("confirmed", confirmed);
                format!("portfolio/{user_id}")
            }
            Discrepancy::Unreadable { key, error } => {
                draft = draft.detail("record", key).detail("error", error);
                "broker".to_string()
            }
        };
        tracing::error!(kind = d.kind(), "reconciliation discrepancy");
        state.router.audit(draft, &subject, &RequestMeta::system("reconciliation"), true).await?;
        alerted_tree.insert(d.key(), &[]).map_err(|e| e.to_string())?;
        summary.alerted += 1;
    }
    alerted_tree.flush_async().await.map_err(|e| e.to_string())?;
    Ok(summary)
}

pub async fn reconciliation_job(state: Arc<AppState>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.broker.reconcile_interval;
    periodically(every, stop, || async {
        match reconcile_now(&state).await {
            Ok(s) if s.alerted > 0 => tracing::warn!(alerts = s.alerted, orders = s.orders, "reconciliation raised alerts"),
            Ok(s) => tracing::debug!(orders = s.orders, confirmations = s.confirmations, "reconciliation clean"),
            Err(e) => tracing::error!(error = %e, "reconciliation failed; retrying at the next run"),
        }
    })
    .await
}

/// Starts the live valuation of every stored portfolio (in the background at start).
pub async fn track_all(state: Arc<AppState>) {
    let ids = match portfolio_ids(&state) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot list portfolios to value");
            return;
        }
    };
    for user in ids {
        refresh_valuation(&state, &user).await;
    }
}

/// Reads the portfolio's positions into its live valuation (after anything that moved them).
pub async fn refresh_valuation(state: &AppState, user: &str) {
    match state.router.query::<Portfolio, _>(user, crate::domain::queries::PositionsOf).await {
        Ok(positions) => state.valuations.update(user, positions, wall_clock_now()),
        Err(e) => tracing::warn!(error = %e, "portfolio could not be valued"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_close_is_todays_after_close_time_else_yesterdays() {
        let offset = 22 * 3_600_000;
        let day = 20_000 * MS_PER_DAY;
        assert_eq!(
            due_close(Timestamp(day + offset - 1), offset).0,
            Date::from_timestamp(Timestamp(day - MS_PER_DAY))
        );
        assert_eq!(due_close(Timestamp(day + offset), offset).0, Date::from_timestamp(Timestamp(day)));
        assert_eq!(due_close(Timestamp(day + offset), offset).1, Timestamp(day + offset));
    }
}
