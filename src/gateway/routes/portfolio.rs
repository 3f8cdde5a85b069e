//! Portfolio and order routes. Money-moving requests need an `Idempotency-Key`; the portfolio
//! entity remembers each key with a fingerprint of the request and its first answer.

use super::market::quote;
use super::unavailable;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::Role;
use crate::domain::money::{cash_string, plain_string, round_cash};
use crate::domain::portfolio::{History, IdemTag, Order, Portfolio, PortfolioCommand, PortfolioRejection, PortfolioReply, Side, TransactionKind};
use crate::domain::steps::{StepAnswer, UserStep, WithdrawalRequest};
use crate::gateway::auth::Claims;
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use crate::workflows::order::{OrderOutcome, OrderRequest};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use warp::http::StatusCode;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AmountBody {
    amount: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderBody {
    symbol: String,
    /// "buy" or "sell".
    #[schema(value_type = String)]
    side: Side,
    quantity: String,
}

/// A decimal string (`"12.50"`): exactly `-?digits(.digits)?` — no exponent, spaces, or a point
/// without digits on both sides (`"100."`, `".5"`). A sign is accepted so that a negative
/// amount reaches the domain and is refused there (with its own code), rather than looking
/// like malformed JSON.
pub(super) fn parse_decimal(field: &str, s: &str) -> Result<Decimal, ApiError> {
    let t = s.strip_prefix('-').unwrap_or(s);
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    let well_formed = t.len() <= 40
        && match t.split_once('.') {
            Some((int, frac)) => digits(int) && digits(frac),
            None => digits(t),
        };
    if !well_formed {
        return Err(ApiError::bad_request(format!("{field} must be a decimal string such as \"12.50\"")));
    }
    Decimal::from_str(s).map_err(|_| ApiError::bad_request(format!("{field} is out of range")))
}

/// A refused amount or quantity says which limit it broke (the domain refuses with one code).
fn naming_the_limit(mut e: ApiError, field: &str, problem: Option<String>) -> ApiError {
    if e.code == "invalid_amount" || e.code == "invalid_quantity" {
        e.detail = match problem {
            Some(p) => format!("{field} {p}"),
            // Valid on its own: its value (quantity × price) is what is out of bounds.
            None => format!(
                "the order's value (quantity × price) must be at least 0.01 and at most {}",
                crate::domain::money::max_amount()
            ),
        };
    }
    e
}

fn user(state: &AppState, req: &Req) -> Result<Claims, ApiError> {
    let claims = state.claims(req)?;
    if !claims.roles.contains(&Role::User) {
        return Err(ApiError::forbidden("only investors have a portfolio"));
    }
    Ok(claims)
}

pub(super) fn rejection(r: PortfolioRejection) -> ApiError {
    match r {
        PortfolioRejection::UnknownInstrument => ApiError::new(StatusCode::NOT_FOUND, "unknown_instrument", "no such instrument is listed"),
        PortfolioRejection::InsufficientFunds => ApiError::unprocessable("insufficient_funds", "there is not enough cash for this"),
        PortfolioRejection::InsufficientHoldings => ApiError::unprocessable("insufficient_holdings", "the portfolio does not hold that many units"),
        PortfolioRejection::InvalidQuantity => ApiError::unprocessable(
            "invalid_quantity",
            format!(
                "quantity must be positive, with at most 6 decimal places, at most {}",
                crate::domain::money::max_amount()
            ),
        ),
        PortfolioRejection::InvalidAmount => ApiError::unprocessable(
            "invalid_amount",
            format!(
                "amount must be positive, with at most 2 decimal places, at most {}",
                crate::domain::money::max_amount()
            ),
        ),
        PortfolioRejection::IdempotencyKeyReused => ApiError::unprocessable("idempotency_key_reused", "this Idempotency-Key was used for a different request"),
        PortfolioRejection::Compliance(rule) => ApiError::unprocessable(rule.code(), rule.reason()),
        PortfolioRejection::DayAlreadyClosed | PortfolioRejection::NothingToState | PortfolioRejection::JournalMismatch => ApiError::internal(),
    }
}

async fn execute(state: &AppState, claims: &Claims, req: &Req, cmd: PortfolioCommand) -> Result<PortfolioReply, ApiError> {
    let meta = RequestMeta {
        request_id: req.request_id.clone(),
        actor: claims.sub.clone(),
    };
    let reply = state.router.execute::<Portfolio>(&claims.sub, cmd, meta).await.map_err(|e| match e {
        RouteError::Rejected(r) => rejection(r),
        RouteError::Failed(e) => unavailable(e),
    })?;
    state.valuations.mark_stale(&claims.sub);
    Ok(reply)
}

fn cash_reply(reply: PortfolioReply) -> Result<Reply, ApiError> {
    match reply {
        PortfolioReply::Cash { cash } => Ok(private_json(StatusCode::CREATED, &serde_json::json!({ "cash": cash_string(cash) }))),
        PortfolioReply::Refused(r) => Err(rejection(r)),
        PortfolioReply::Order(_) | PortfolioReply::Statement(_) => Err(rejection(PortfolioRejection::IdempotencyKeyReused)),
    }
}

async fn move_cash(state: &AppState, req: &Req, deposit: bool) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let key = req.idempotency_key()?;
    let body: AmountBody = req.json()?;
    let amount = parse_decimal("amount", &body.amount)?;
    let idem = IdemTag {
        key,
        fingerprint: if deposit {
            crate::domain::fingerprint::deposit(amount)
        } else {
            crate::domain::fingerprint::withdrawal(amount)
        },
    };
    let outcome = if deposit {
        execute(state, &claims, req, PortfolioCommand::Deposit { amount, idem }).await
    } else {
        // One hop: the withdrawal runs at the leader of the user's group, where the investor's
        // screening is read for the portfolio's decision (a sanctioned investor's cash is frozen).
        let request = WithdrawalRequest {
            user_id: claims.sub.clone(),
            amount,
            idem,
            meta: RequestMeta {
                request_id: req.request_id.clone(),
                actor: claims.sub.clone(),
            },
        };
        match state.router.step(UserStep::Withdraw(request)).await.map_err(unavailable)? {
            StepAnswer::Cash(outcome) => {
                state.valuations.mark_stale(&claims.sub);
                outcome.map_err(rejection)
            }
            _ => Err(ApiError::internal()),
        }
    };
    let reply = cash_reply(outcome.map_err(|e| naming_the_limit(e, "amount", crate::domain::money::cash_amount_problem(amount)))?)?;
    state.valuations.trigger(&claims.sub, crate::domain::advice::AdviceTrigger::PortfolioChanged);
    Ok(reply)
}

pub async fn deposit(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    move_cash(state, req, true).await
}

pub async fn withdraw(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    move_cash(state, req, false).await
}

#[derive(Serialize)]
pub(super) struct OrderView {
    order_id: String,
    status: &'static str,
    symbol: String,
    side: &'static str,
    quantity: String,
    price: String,
    fees: String,
    executed_at: String,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            order_id: o.order_id.clone(),
            status: "filled",
            symbol: o.symbol.clone(),
            side: o.side.as_str(),
            quantity: plain_string(o.quantity),
            price: plain_string(o.price),
            fees: cash_string(o.fees),
            executed_at: o.executed_at.to_rfc3339(),
        }
    }
}

pub async fn place_order(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let key = req.idempotency_key()?;
    let body: OrderBody = req.json()?;
    let quantity = parse_decimal("quantity", &body.quantity)?;
    if body.symbol.is_empty() || body.symbol.len() > 16 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_instrument", "no such instrument is listed"));
    }
    let fp = crate::domain::fingerprint::order(&body.symbol, body.side, quantity);
    let meta = RequestMeta {
        request_id: req.request_id.clone(),
        actor: claims.sub.clone(),
    };
    let order = place(state, &claims.sub, meta, body.symbol, body.side, quantity, IdemTag { key, fingerprint: fp })
        .await
        .map_err(|e| naming_the_limit(e, "quantity", crate::domain::money::quantity_problem(quantity)))?;
    // Not for orders placed by accepting advice (`place` alone): that advice is what they follow.
    state.valuations.trigger(&claims.sub, crate::domain::advice::AdviceTrigger::PortfolioChanged);
    Ok(private_json(StatusCode::CREATED, &order))
}

/// An order through the order workflow (quote, compliance facts, the portfolio's decision,
/// the broker's confirmation); the live valuation is refreshed after a fill.
pub(super) async fn place(
    state: &AppState,
    user_id: &str,
    meta: RequestMeta,
    symbol: String,
    side: Side,
    quantity: Decimal,
    idem: IdemTag,
) -> Result<OrderView, ApiError> {
    let request = OrderRequest {
        user_id: user_id.to_string(),
        symbol,
        side,
        quantity,
        idem,
        meta,
    };
    // One hop: the order runs at the leader of the user's group.
    let outcome = match state.router.step(UserStep::PlaceOrder(request)).await.map_err(unavailable)? {
        StepAnswer::Order(outcome) => outcome,
        _ => return Err(ApiError::internal()),
    };
    let view = order_view(outcome)?;
    state.valuations.mark_stale(user_id);
    Ok(view)
}

/// A fill as the client sees it, or the refusal as a problem.
pub(super) fn order_view(outcome: OrderOutcome) -> Result<OrderView, ApiError> {
    match outcome {
        Ok(PortfolioReply::Order(o)) => Ok(OrderView::from(&o)),
        Ok(PortfolioReply::Refused(r)) | Err(r) => Err(rejection(r)),
        Ok(PortfolioReply::Cash { .. }) | Ok(PortfolioReply::Statement(_)) => Err(rejection(PortfolioRejection::IdempotencyKeyReused)),
    }
}

pub async fn view(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let (cash, holdings) = state
        .router
        .query::<Portfolio, _>(&claims.sub, crate::domain::queries::Holdings)
        .await
        .map_err(unavailable)?;
    let mut rows = Vec::new();
    let mut total = cash;
    let mut as_of = crate::domain::time::Timestamp(0);
    for (symbol, h) in holdings {
        let q = quote(state, &symbol).await?;
        let price = q.as_ref().map(|q| q.price).unwrap_or_else(|| h.average_cost());
        if let Some(q) = &q {
            as_of = as_of.max(q.as_of);
        }
        let value = round_cash(price * h.quantity);
        total += value;
        rows.push(serde_json::json!({
            "symbol": symbol,
            "quantity": plain_string(h.quantity),
            "average_cost": crate::domain::money::price_string(h.average_cost()),
            "price": plain_string(price),
            "market_value": cash_string(value),
        }));
    }
    let as_of = if as_of.millis() == 0 { state.now() } else { as_of };
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({
            "currency": state.config.portfolio.currency,
            "cash": cash_string(cash),
            "holdings": rows,
            "total_value": cash_string(total),
            "as_of": as_of.to_rfc3339(),
        }),
    ))
}

/// The caller's history, from the portfolio's journal.
pub(super) async fn history(state: &AppState, user_id: &str) -> Result<History, ApiError> {
    crate::workflows::portfolio_history(&state.router, user_id).await.map_err(unavailable)
}

pub(super) fn transaction_view(t: &crate::domain::portfolio::Transaction) -> serde_json::Value {
    serde_json::json!({
        "tx_id": t.tx_id,
        "kind": match t.kind { TransactionKind::Deposit => "deposit", TransactionKind::Withdrawal => "withdrawal", TransactionKind::Buy => "buy", TransactionKind::Sell => "sell" },
        "amount": cash_string(t.amount),
        "order_id": t.order_id,
        "at": t.at.to_rfc3339(),
    })
}

pub async fn transactions(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let history = history(state, &claims.sub).await?;
    let list: Vec<_> = history.transactions.iter().rev().map(transaction_view).collect();
    Ok(private_json(StatusCode::OK, &list))
}

pub async fn orders(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let history = history(state, &claims.sub).await?;
    let mut v: Vec<&Order> = history.orders.values().collect();
    v.sort_by(|a, b| b.executed_at.cmp(&a.executed_at).then_with(|| b.order_id.cmp(&a.order_id)));
    let list: Vec<OrderView> = v.into_iter().map(OrderView::from).collect();
    Ok(private_json(StatusCode::OK, &list))
}

pub async fn order(state: &AppState, req: &Req, order_id: &str) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let history = history(state, &claims.sub).await?;
    match history.orders.get(order_id) {
        Some(o) => Ok(private_json(StatusCode::OK, &OrderView::from(o))),
        None => Err(ApiError::not_found("no such order")),
    }
}

/// GET /v1/portfolio/performance?period=1d|1m|1y|all (default 1m): the time-weighted return and
/// the value series of the period — rebuilt from the journal and the price histories (a point
/// after every flow and fill, each daily statement, a sample at each price known in between),
/// ending with the current value (`workflows::performance`).
pub async fn performance(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    use crate::domain::time::{Timestamp, MS_PER_DAY};
    use crate::domain::valuation::twr;
    let claims = user(state, req)?;
    let period = req.query_param("period").unwrap_or_else(|| "1m".to_string());
    let days = match period.as_str() {
        "1d" => Some(1),
        "1m" => Some(30),
        "1y" => Some(365),
        "all" => None,
        _ => return Err(ApiError::bad_request("period must be one of 1d, 1m, 1y, all")),
    };
    let now = state.now();
    let from = days.map_or(Timestamp(i64::MIN), |d: i64| Timestamp(now.millis() - d * MS_PER_DAY));
    let series = crate::workflows::performance::value_series(state, &claims.sub, from)
        .await
        .map_err(unavailable)?;
    let view: Vec<_> = series
        .iter()
        .map(|p| serde_json::json!({ "at": p.at.to_rfc3339(), "value": cash_string(p.value) }))
        .collect();
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({
            "period": period,
            "currency": state.config.portfolio.currency,
            "twr": twr(&series).normalize().to_string(),
            "series": view,
        }),
    ))
}

pub(super) fn statement_view(s: &crate::domain::portfolio::Statement) -> serde_json::Value {
    serde_json::json!({
        "statement_id": s.statement_id,
        "date": s.date.to_string(),
        "closed_at": s.closed_at.to_rfc3339(),
        "cash": cash_string(s.cash),
        "holdings": s.holdings.iter().map(|l| serde_json::json!({
            "symbol": l.symbol,
            "quantity": plain_string(l.quantity),
            "average_cost": crate::domain::money::price_string(l.average_cost),
            "price": l.price.map(plain_string),
            "market_value": cash_string(l.market_value),
        })).collect::<Vec<_>>(),
        "total_value": cash_string(s.value),
        "deposits": cash_string(s.deposits),
        "withdrawals": cash_string(s.withdrawals),
        "fees": cash_string(s.fees),
        "trades": s.trades.iter().map(OrderView::from).collect::<Vec<_>>(),
    })
}

/// GET /v1/portfolio/statements: the daily statements, newest first.
pub async fn statements(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let history = history(state, &claims.sub).await?;
    let list: Vec<_> = history.statements.iter().rev().map(statement_view).collect();
    Ok(private_json(StatusCode::OK, &list))
}

/// GET /v1/portfolio/statements/{date}: one day's statement; 404 when that day has none.
pub async fn statement(state: &AppState, req: &Req, date: &str) -> Result<Reply, ApiError> {
    let claims = user(state, req)?;
    let date = crate::domain::time::Date::parse(date).ok_or_else(|| ApiError::bad_request("the date must be YYYY-MM-DD"))?;
    let history = history(state, &claims.sub).await?;
    match history.statements.iter().find(|s| s.date == date) {
        Some(s) => Ok(private_json(StatusCode::OK, &statement_view(s))),
        None => Err(ApiError::not_found("no statement for that day")),
    }
}
