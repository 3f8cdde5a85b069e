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

/// The latest quote of a listed instrument; `None` when the symbol is not listed. A symbol
/// this node's catalog does not know yet is asked of the instrument itself (at its group's
/// leader): one listed through another gateway a moment ago is served at once, as its orders
/// are, while the catalog here learns it (`feed::follow_catalog`).
pub async fn quote(state: &AppState, symbol: &str) -> Result<Option<Quote>, ApiError> {
    if !state.is_listed(symbol) && !crate::domain::instrument::is_symbol(symbol) {
        return Ok(None);
    }
    state
        .router
        .query::<Instrument, _>(symbol, crate::domain::queries::CurrentQuote)
        .await
        .map_err(unavailable)
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

/// GET /v1/fees: what every order is charged, so a client can show the cost before the order:
/// the commission (basis points of the notional, never under the minimum) and the broker's
/// slippage (the fill moves against the client by that many basis points of the market price).
pub fn fees(state: &AppState) -> Result<Reply, ApiError> {
    let fees = state.config.fees.schedule();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "currency": state.config.portfolio.currency,
            "commission_bps": plain_string(fees.commission_bps),
            "minimum": crate::domain::money::cash_string(fees.minimum),
            "slippage_bps": plain_string(state.config.broker.slippage_bps),
        }),
    ))
}

/// GET /v1/instruments/{symbol}/quote?side=buy|sell&quantity=Q: what such an order would cost
/// or bring now, priced as the order path prices it (`domain::fees::estimate`: the broker's
/// slippage, the notional to cents, the fee schedule). The confirmation step shows it; the fill
/// is at the price when the order reaches the market.
pub async fn order_quote(state: &AppState, req: &crate::gateway::http::Req, symbol: &str) -> Result<Reply, ApiError> {
    use crate::domain::portfolio::Side;
    let side = match req.query_param("side").as_deref() {
        Some("buy") => Side::Buy,
        Some("sell") => Side::Sell,
        _ => return Err(ApiError::bad_request("side must be buy or sell")),
    };
    let quantity = req.query_param("quantity").ok_or_else(|| ApiError::bad_request("quantity is required"))?;
    let quantity = super::portfolio::parse_decimal("quantity", &quantity)?;
    let Some(q) = quote(state, symbol).await? else {
        return Err(super::portfolio::rejection(crate::domain::portfolio::PortfolioRejection::UnknownInstrument));
    };
    let e = crate::domain::fees::estimate(&state.config.fees.schedule(), side, q.price, quantity, state.config.broker.slippage_bps)
        .ok_or_else(|| super::portfolio::rejection(crate::domain::portfolio::PortfolioRejection::InvalidQuantity))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "symbol": q.listing.symbol,
            "side": side.as_str(),
            "quantity": plain_string(quantity),
            "market_price": plain_string(q.price),
            "price": plain_string(e.price),
            "notional": crate::domain::money::cash_string(e.notional),
            "fees": crate::domain::money::cash_string(e.fee),
            "total": crate::domain::money::cash_string(e.total),
            "as_of": q.as_of.to_rfc3339(),
        }),
    ))
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
    let to = time("to")?.unwrap_or_else(|| state.now());
    let from = time("from")?.unwrap_or(Timestamp(to.millis() - crate::domain::price_history::MS_PER_DAY));
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    if !state.is_listed(symbol) && quote(state, symbol).await?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_instrument", "no such instrument is listed"));
    }
    let points = state
        .router
        .query::<Instrument, _>(symbol, crate::domain::queries::PriceRange { from, to })
        .await
        .map_err(unavailable)?;
    let view: Vec<_> = points
        .into_iter()
        .map(|(at, price)| serde_json::json!({ "at": at.to_rfc3339(), "price": plain_string(price) }))
        .collect();
    Ok(json_response(StatusCode::OK, &view))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewInstrumentBody {
    symbol: String,
    name: String,
    /// equity, etf, bond, fund, derivative or leveraged_etf (the last two are complex).
    #[schema(value_type = String)]
    kind: crate::domain::instrument::InstrumentKind,
    /// 1 (lowest) to 7.
    risk_class: u8,
    /// The opening price, a decimal string.
    price: String,
    /// How the simulated feed moves it (annual drift and volatility); defaults 0.05 and 0.2.
    #[serde(default)]
    drift: Option<f64>,
    #[serde(default)]
    volatility: Option<f64>,
}

/// POST /v1/admin/instruments — lists a new instrument (audited on the instrument), keeps it in
/// the catalog across restarts and hands it to the simulated feed.
pub async fn create(state: &AppState, req: &crate::gateway::http::Req) -> Result<Reply, ApiError> {
    use crate::domain::instrument::{InstrumentCommand, InstrumentRejection, Listing};
    let claims = state.claims(req)?;
    let b: NewInstrumentBody = req.json()?;
    if !crate::domain::instrument::is_symbol(&b.symbol) {
        return Err(ApiError::bad_request("symbol must be 1–16 characters of A–Z, 0–9, '-' or '.'"));
    }
    let name = b.name.trim();
    if !crate::domain::instrument::is_instrument_name(name) {
        return Err(ApiError::bad_request(
            "name must be 1–200 characters, without control, bidirectional-override or invisible characters",
        ));
    }
    if !(1..=7).contains(&b.risk_class) {
        return Err(ApiError::bad_request("risk_class must be between 1 and 7"));
    }
    // The money fields' parser: `1e2`, `1.` and `+1` are refused, as in amounts.
    let price = super::portfolio::parse_decimal("price", &b.price)?;
    if !crate::domain::money::is_valid_price(price) {
        return Err(ApiError::bad_request("price must be positive with at most 4 decimal places"));
    }
    let (drift, volatility) = (b.drift.unwrap_or(0.05), b.volatility.unwrap_or(0.2));
    if !drift.is_finite() || drift.abs() > 5.0 || !volatility.is_finite() || !(0.0..=5.0).contains(&volatility) {
        return Err(ApiError::bad_request("drift and volatility must be finite, |drift| ≤ 5 and 0 ≤ volatility ≤ 5"));
    }
    let listing = Listing {
        symbol: b.symbol.clone(),
        name: name.to_string(),
        kind: b.kind,
        complex: b.kind.is_complex(),
        currency: state.config.portfolio.currency.clone(),
        risk_class: b.risk_class,
    };
    let meta = crate::actors::RequestMeta {
        request_id: req.request_id.clone(),
        actor: claims.sub.clone(),
    };
    match state
        .router
        .execute::<Instrument>(&b.symbol, InstrumentCommand::List { listing, price }, meta)
        .await
    {
        Ok(()) => {}
        Err(crate::cluster::RouteError::Rejected(InstrumentRejection::ListingConflict)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "instrument_exists",
                "an instrument with this symbol is listed with other details",
            ));
        }
        Err(crate::cluster::RouteError::Rejected(r)) => return Err(ApiError::bad_request(format!("the listing was refused: {r:?}"))),
        Err(crate::cluster::RouteError::Failed(e)) => return Err(unavailable(e)),
    }
    let newly = !state.is_listed(&b.symbol);
    if newly {
        let entry = crate::storage::store::CatalogEntry { drift, volatility };
        state
            .router
            .journal()
            .write(crate::storage::records::put_catalog(&b.symbol, &entry))
            .await
            .map_err(unavailable)?;
        state.join_catalog(&b.symbol, price, &entry);
    }
    let q = quote(state, &b.symbol).await?.ok_or_else(ApiError::internal)?;
    Ok(json_response(
        if newly { StatusCode::CREATED } else { StatusCode::OK },
        &InstrumentView::from(q),
    ))
}
