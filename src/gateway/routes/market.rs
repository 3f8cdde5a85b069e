//! Market routes: the instrument list and one instrument, at their latest prices.

use super::unavailable;
use crate::domain::instrument::{Instrument, Quote};
use crate::domain::money::plain_string;
use crate::gateway::http::{json_response, Reply};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use serde::Serialize;
use warp::http::StatusCode;

#[derive(Serialize)]
pub struct InstrumentView {
    symbol: String,
    name: String,
    kind: &'static str,
    complex: bool,
    currency: String,
    risk_class: u8,
    price: String,
    as_of: String,
}

impl From<Quote> for InstrumentView {
    fn from(q: Quote) -> Self {
        InstrumentView {
            symbol: q.listing.symbol,
            name: q.listing.name,
            kind: q.listing.kind.as_str(),
            complex: q.listing.complex,
            currency: q.listing.currency,
            risk_class: q.listing.risk_class,
            price: plain_string(q.price),
            as_of: q.as_of.to_rfc3339(),
        }
    }
}

/// The latest quote of a listed instrument; `None` when the symbol is not listed.
pub async fn quote(state: &AppState, symbol: &str) -> Result<Option<Quote>, ApiError> {
    if !state.is_listed(symbol) {
        return Ok(None);
    }
    state.router.read::<Instrument, _>(symbol, |i| i.quote()).await.map_err(unavailable)
}

pub async fn list(state: &AppState) -> Result<Reply, ApiError> {
    let mut out = Vec::new();
    for symbol in state.symbols() {
        if let Some(q) = quote(state, &symbol).await? {
            out.push(InstrumentView::from(q));
        }
    }
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn one(state: &AppState, symbol: &str) -> Result<Reply, ApiError> {
    match quote(state, symbol).await? {
        Some(q) => Ok(json_response(StatusCode::OK, &InstrumentView::from(q))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_instrument",
            format!("no instrument is listed as {symbol:?}"),
        )),
    }
}

/// GET /v1/instruments/{symbol}/history?from&to — `[{at, price}]`, oldest first; `to` defaults
/// to now and `from` to a day before `to`. Days older than the last day come as daily closes.
pub async fn history(state: &AppState, req: &crate::gateway::http::Req, symbol: &str) -> Result<Reply, ApiError> {
    use crate::domain::time::Timestamp;
    let time = |name: &str| -> Result<Option<Timestamp>, ApiError> {
        match req.query_param(name) {
            None => Ok(None),
            Some(s) => Timestamp::parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 time such as 2026-11-22T10:00:00Z"))),
        }
    };
    let to = time("to")?.unwrap_or_else(crate::actors::wall_clock_now);
    let from = time("from")?.unwrap_or(Timestamp(to.millis() - crate::domain::price_history::MS_PER_DAY));
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    if !state.is_listed(symbol) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_instrument", "no such instrument is listed"));
    }
    let points = state
        .router
        .read::<Instrument, _>(symbol, move |i| i.history.range(from, to))
        .await
        .map_err(unavailable)?;
    let view: Vec<_> = points
        .into_iter()
        .map(|(at, price)| serde_json::json!({ "at": at.to_rfc3339(), "price": plain_string(price) }))
        .collect();
    Ok(json_response(StatusCode::OK, &view))
}
