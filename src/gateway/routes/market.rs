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
