//! A portfolio's performance series (`GET /v1/portfolio/performance`): rebuilt from its journal
//! and its instruments' price histories (`domain::performance`), so that neither a restart nor
//! a close nor the node that answers changes it; the live valuation adds the current value once
//! every holding has a market price.

use super::services::Services;
use crate::domain::instrument::Instrument;
use crate::domain::performance::{rebuild, PriceTrack};
use crate::domain::queries::PricesKnown;
use crate::domain::time::{Timestamp, MS_PER_DAY};
use crate::domain::valuation::{period_series, ValuePoint};
use std::collections::BTreeMap;

/// The series of the period that starts at `from` (the last point before it first, the current
/// value last). Empty before the first deposit.
pub async fn value_series(state: &Services, user_id: &str, from: Timestamp) -> Result<Vec<ValuePoint>, String> {
    let now = state.now();
    // The positions as the portfolio's group holds them now (an order or deposit made through
    // another node's gateway is applied at the group's leader, not in this node's valuation).
    super::end_of_day::refresh_valuation(state, user_id).await;
    let history = super::portfolio_history(&state.router, user_id).await.map_err(|e| e.to_string())?;
    let Some(first) = history.transactions.iter().map(|t| t.at).min() else {
        return Ok(Vec::new());
    };
    // Prices of every instrument the portfolio ever held, from a day before the period (or
    // before its first flow) on: what its flows and the points between them are valued at.
    let since = Timestamp(first.millis().max(from.millis()).saturating_sub(MS_PER_DAY));
    let mut prices: BTreeMap<String, PriceTrack> = BTreeMap::new();
    for order in history.orders.values() {
        if prices.contains_key(&order.symbol) {
            continue;
        }
        let track = state
            .router
            .query::<Instrument, _>(&order.symbol, PricesKnown { from: since, to: now })
            .await
            .map_err(|e| format!("prices of {}: {e}", order.symbol))?;
        prices.insert(order.symbol.clone(), track);
    }
    let offset = state.config.statements.close_offset_ms().unwrap_or(MS_PER_DAY);
    let cutoff = |s: &crate::domain::portfolio::Statement| Timestamp(s.date.days_since_epoch() * MS_PER_DAY + offset).min(s.closed_at);
    let points = rebuild(&history, cutoff, &prices, now);
    let live = state.valuations.get(user_id).and_then(|l| l.point());
    let current = match (live, points.last()) {
        (Some(mut p), _) => {
            p.at = p.at.max(now);
            p
        }
        (None, Some(last)) => last.clone(),
        (None, None) => return Ok(Vec::new()),
    };
    Ok(period_series(&points, from, current))
}
