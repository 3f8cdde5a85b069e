//! A user's portfolio: cash, holdings with average cost, and the idempotency memory.
//!
//! The state holds what decisions need and nothing that grows without bound: the history of
//! transactions and orders is the portfolio's journal itself, read back through [`History`].
//!
//! Invariants (checked after every applied event, in debug and release):
//! - cash ≥ 0, every holding's quantity > 0 and cost basis ≥ 0;
//! - cash + Σ cost basis = deposits − withdrawals − fees + realised P&L, exactly.
//!
//! Every money command carries an idempotency key and a fingerprint of the request: the same key
//! with the same fingerprint returns the first answer and changes nothing; with a different
//! fingerprint it is refused (`IdempotencyKeyReused`, the one refusal not remembered). A refused
//! request is remembered too (a `Refused` event): a stale retry of an order that was refused for
//! want of cash must not execute later, after a deposit — it answers the same refusal.

use crate::domain::audit::AuditDraft;
pub use crate::domain::compliance::ProductFacts;
use crate::domain::compliance::{self, ComplianceRefusal, InvestorStatus, Purpose};
use crate::domain::ctx::Ctx;
use crate::domain::entity::{Decision, Entity};
use crate::domain::fees::FeeSchedule;
use crate::domain::ids::EntityKind;
use crate::domain::money::{cash_string, is_valid_cash_amount, is_valid_quantity, plain_string, round_cash};
use crate::domain::time::{Date, Timestamp, MS_PER_HOUR};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long an idempotency key is remembered at least (pruning runs every 1024 new keys).
pub const IDEMPOTENCY_RETENTION_MS: i64 = 24 * MS_PER_HOUR;
/// The most idempotency keys one portfolio remembers at once (a bound on state size).
pub const IDEMPOTENCY_KEYS_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub quantity: Decimal,
    pub cost_basis: Decimal,
}

impl Holding {
    /// Quantity × price, to the cent; at cost when there is no price (or it overflows).
    pub fn market_value(&self, price: Option<Decimal>) -> Decimal {
        price.and_then(|p| p.checked_mul(self.quantity)).map(round_cash).unwrap_or(self.cost_basis)
    }

    /// Average cost per unit, to four places (display only; the cost basis is the truth).
    pub fn average_cost(&self) -> Decimal {
        if self.quantity.is_zero() {
            Decimal::ZERO
        } else {
            crate::domain::money::round_price(self.cost_basis / self.quantity)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub symbol: String,
    pub side: Side,
    pub quantity: Decimal,
    pub price: Decimal,
    pub fees: Decimal,
    /// Cash moved by the order including fees (negative for buys).
    pub cash_effect: Decimal,
    /// Realised profit or loss (sells only; zero for buys).
    pub realised_pnl: Decimal,
    pub executed_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Deposit,
    Withdrawal,
    Buy,
    Sell,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub tx_id: String,
    pub kind: TransactionKind,
    /// Signed cash effect, fees included.
    pub amount: Decimal,
    pub order_id: Option<String>,
    pub at: Timestamp,
}

/// The idempotency key of a request and a digest of what it asked (method, path, body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemTag {
    pub key: String,
    pub fingerprint: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub fingerprint: [u8; 32],
    pub reply: PortfolioReply,
    pub at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub deposits: Decimal,
    pub withdrawals: Decimal,
    pub fees: Decimal,
    pub realised_pnl: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Portfolio {
    pub owner: String,
    pub cash: Decimal,
    pub holdings: BTreeMap<String, Holding>,
    /// Stored with the state (the planted bug `ForgetIdempotencyOnRestart` leaves it out).
    #[serde(serialize_with = "crate::planted::idempotency_memory")]
    pub idempotency: BTreeMap<String, Remembered>,
    pub totals: Totals,
    /// What happened since the last day close (the next statement's trades and flows).
    pub day: DayBook,
    /// The last day closed (its statement is in the journal).
    pub last_close: Option<Closing>,
}

/// Activity since the last close.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayBook {
    pub orders: Vec<Order>,
    pub deposits: Decimal,
    pub withdrawals: Decimal,
    pub fees: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closing {
    pub date: Date,
    pub value: Decimal,
    pub contributions: Decimal,
    pub at: Timestamp,
}

/// One line of a statement: a holding valued at the closing price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub symbol: String,
    pub quantity: Decimal,
    pub average_cost: Decimal,
    /// Closing price; `None` when the instrument had no price (the line counts at cost).
    pub price: Option<Decimal>,
    pub market_value: Decimal,
}

/// A daily statement: the holdings and value at the close and everything since the last one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub statement_id: String,
    pub date: Date,
    pub closed_at: Timestamp,
    pub cash: Decimal,
    pub holdings: Vec<StatementLine>,
    pub value: Decimal,
    /// Cumulative deposits − withdrawals at the close (for performance measurement).
    pub contributions: Decimal,
    pub deposits: Decimal,
    pub withdrawals: Decimal,
    pub fees: Decimal,
    pub trades: Vec<Order>,
}

/// The history of a portfolio, derived from its journal (oldest first): every transaction and
/// every order exactly once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub transactions: Vec<Transaction>,
    pub orders: BTreeMap<String, Order>,
    /// Daily statements, oldest first.
    pub statements: Vec<Statement>,
}

impl History {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a PortfolioEvent>) -> History {
        let mut h = History::default();
        for e in events {
            h.transactions.extend(e.transaction());
            match e {
                PortfolioEvent::OrderFilled { order, .. } => {
                    h.orders.insert(order.order_id.clone(), order.clone());
                }
                PortfolioEvent::DayClosed { statement } => h.statements.push(statement.clone()),
                _ => {}
            }
        }
        h
    }
}

/// The price and listing facts an order needs, read from the instrument just before deciding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderQuote {
    pub price: Decimal,
    /// Complexity and risk class, for the compliance rules.
    pub product: ProductFacts,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PortfolioCommand {
    Deposit {
        amount: Decimal,
        idem: IdemTag,
    },
    Withdraw {
        amount: Decimal,
        idem: IdemTag,
    },
    PlaceOrder {
        symbol: String,
        side: Side,
        quantity: Decimal,
        quote: Option<OrderQuote>,
        /// The investor's KYC, screening and suitability, read from their account.
        investor: InvestorStatus,
        fees: FeeSchedule,
        idem: IdemTag,
    },
    /// The end-of-day job closes `date`: a statement of the holdings at `prices` (the closing
    /// prices) as they stood at `cutoff` (the day's close time, or now if that is later), and of
    /// the activity from the last close up to the cutoff — not what happened after it, however
    /// late the close runs: that belongs to the next statement. `journal` is the portfolio's
    /// journal, every event up to at least the cutoff, from which its state at the cutoff is
    /// folded. A date not after the last close is refused (`DayAlreadyClosed`), so the job can
    /// run again safely.
    CloseDay {
        date: Date,
        prices: BTreeMap<String, Decimal>,
        cutoff: Timestamp,
        journal: Vec<PortfolioEvent>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PortfolioEvent {
    Deposited {
        tx_id: String,
        amount: Decimal,
        at: Timestamp,
        idem: IdemTag,
    },
    Withdrawn {
        tx_id: String,
        amount: Decimal,
        at: Timestamp,
        idem: IdemTag,
    },
    OrderFilled {
        tx_id: String,
        order: Order,
        idem: IdemTag,
    },
    /// A refused request, remembered under its key so that a retry answers the same refusal.
    Refused {
        idem: IdemTag,
        rejection: PortfolioRejection,
        at: Timestamp,
    },
    DayClosed {
        statement: Statement,
    },
}

impl PortfolioEvent {
    /// The cash movement this event records (none for a refusal).
    pub fn transaction(&self) -> Option<Transaction> {
        Some(match self {
            PortfolioEvent::Refused { .. } | PortfolioEvent::DayClosed { .. } => return None,
            PortfolioEvent::Deposited { tx_id, amount, at, .. } => Transaction {
                tx_id: tx_id.clone(),
                kind: TransactionKind::Deposit,
                amount: *amount,
                order_id: None,
                at: *at,
            },
            PortfolioEvent::Withdrawn { tx_id, amount, at, .. } => Transaction {
                tx_id: tx_id.clone(),
                kind: TransactionKind::Withdrawal,
                amount: -*amount,
                order_id: None,
                at: *at,
            },
            PortfolioEvent::OrderFilled { tx_id, order, .. } => Transaction {
                tx_id: tx_id.clone(),
                kind: if order.side == Side::Buy {
                    TransactionKind::Buy
                } else {
                    TransactionKind::Sell
                },
                amount: order.cash_effect,
                order_id: Some(order.order_id.clone()),
                at: order.executed_at,
            },
        })
    }

    pub fn at(&self) -> Timestamp {
        match self {
            PortfolioEvent::Deposited { at, .. } | PortfolioEvent::Withdrawn { at, .. } | PortfolioEvent::Refused { at, .. } => *at,
            PortfolioEvent::OrderFilled { order, .. } => order.executed_at,
            PortfolioEvent::DayClosed { statement } => statement.closed_at,
        }
    }
    /// The idempotency key the event answers (none for a day close).
    pub fn idem(&self) -> Option<&IdemTag> {
        match self {
            PortfolioEvent::Deposited { idem, .. }
            | PortfolioEvent::Withdrawn { idem, .. }
            | PortfolioEvent::OrderFilled { idem, .. }
            | PortfolioEvent::Refused { idem, .. } => Some(idem),
            PortfolioEvent::DayClosed { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortfolioReply {
    Cash {
        cash: Decimal,
    },
    Order(Order),
    Statement(Box<Statement>),
    /// The request was refused; the refusal is remembered under its idempotency key.
    Refused(PortfolioRejection),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortfolioRejection {
    InvalidAmount,
    InvalidQuantity,
    InsufficientFunds,
    InsufficientHoldings,
    UnknownInstrument,
    /// Refused by the compliance rules engine (see `compliance::check`).
    Compliance(ComplianceRefusal),
    IdempotencyKeyReused,
    /// The end-of-day job asked to close a day that is already closed.
    DayAlreadyClosed,
    /// Nothing held and no activity since the last close: no statement.
    NothingToState,
    /// A day close was given a journal that is not this portfolio's (a driver defect).
    JournalMismatch,
}

impl PortfolioRejection {
    /// The stable code clients branch on (API.md).
    pub fn code(&self) -> &'static str {
        match self {
            PortfolioRejection::InvalidAmount => "invalid_amount",
            PortfolioRejection::InvalidQuantity => "invalid_quantity",
            PortfolioRejection::InsufficientFunds => "insufficient_funds",
            PortfolioRejection::InsufficientHoldings => "insufficient_holdings",
            PortfolioRejection::UnknownInstrument => "unknown_instrument",
            PortfolioRejection::Compliance(r) => r.code(),
            PortfolioRejection::IdempotencyKeyReused => "idempotency_key_reused",
            PortfolioRejection::DayAlreadyClosed => "day_already_closed",
            PortfolioRejection::NothingToState => "nothing_to_state",
            PortfolioRejection::JournalMismatch => "journal_mismatch",
        }
    }
}

/// The idempotency key of request `i` of a series a client sent under one key: the first is the
/// client's key itself (so the key is taken for every other request), then `<key> <i>`. The
/// space keeps the series apart from every key a client can send (visible ASCII only, see the
/// gateway's `idempotency_key`): with `/`, an order a client placed under `k/1` stood in for
/// order 1 of advice accepted under `k`, and the acceptance was refused after its first order
/// had filled.
pub fn series_key(key: &str, i: usize) -> String {
    if i == 0 {
        key.to_string()
    } else {
        format!("{key} {i}")
    }
}

impl Portfolio {
    /// The remembered replies of a numbered series of requests made under one client key —
    /// [`series_key`] 0, 1, … up to the first not remembered — each checked against the
    /// fingerprint request `i` must have. A key whose fingerprint differs was used for another
    /// request (`IdempotencyKeyReused`).
    pub fn remembered_series(&self, key: &str, fingerprint: impl Fn(usize) -> [u8; 32]) -> Result<Vec<PortfolioReply>, PortfolioRejection> {
        let mut replies = Vec::new();
        while let Some(r) = self.idempotency.get(&series_key(key, replies.len())) {
            if r.fingerprint != fingerprint(replies.len()) {
                return Err(PortfolioRejection::IdempotencyKeyReused);
            }
            replies.push(r.reply.clone());
        }
        Ok(replies)
    }

    fn remembered(&self, idem: &IdemTag) -> Option<Result<PortfolioReply, PortfolioRejection>> {
        self.idempotency.get(&idem.key).map(|r| {
            if r.fingerprint == idem.fingerprint {
                Ok(r.reply.clone())
            } else {
                Err(PortfolioRejection::IdempotencyKeyReused)
            }
        })
    }

    /// The portfolio as it stood at `cutoff`, folded from its journal: every cash flow and fill
    /// up to the cutoff, and every statement already issued (each takes what it stated out of
    /// the day book, whenever it was issued: statements state activity up to their own cutoff,
    /// which is never after a later day's).
    pub fn as_of(owner: &str, journal: &[PortfolioEvent], cutoff: Timestamp) -> Portfolio {
        let mut p = Portfolio::empty(owner);
        // Refusals move nothing (they only fill the idempotency memory, not needed here).
        let moves = |e: &&PortfolioEvent| !matches!(e, PortfolioEvent::DayClosed { .. } | PortfolioEvent::Refused { .. });
        // A prefix of the journal, up to the first move stamped after the cutoff: events are
        // stamped by the clock of the node that led the group then, so after a fail-over to a
        // node whose clock is behind, a later event can carry an earlier time. Picking events
        // by time alone could then take a buy without the deposit that paid for it (negative
        // cash, and the invariants stop the close); a prefix is a state the portfolio was in.
        for e in journal.iter().filter(moves).take_while(|e| e.at() <= cutoff) {
            p.apply(e);
        }
        for e in journal.iter().filter(|e| matches!(e, PortfolioEvent::DayClosed { .. })) {
            p.apply(e);
        }
        p
    }

    fn decide_close(
        &self,
        date: Date,
        prices: &BTreeMap<String, Decimal>,
        cutoff: Timestamp,
        journal: &[PortfolioEvent],
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if self.last_close.is_some_and(|c| c.date >= date) {
            return Err(PortfolioRejection::DayAlreadyClosed);
        }
        let at_close = Portfolio::as_of(&self.owner, journal, cutoff.min(ctx.now));
        // The journal is this portfolio's: it has stated what this portfolio stated.
        if at_close.last_close != self.last_close {
            return Err(PortfolioRejection::JournalMismatch);
        }
        if at_close.holdings.is_empty() && at_close.cash.is_zero() && at_close.day == DayBook::default() {
            return Err(PortfolioRejection::NothingToState);
        }
        let holdings: Vec<StatementLine> = at_close
            .holdings
            .iter()
            .map(|(symbol, h)| {
                let price = prices.get(symbol).copied().filter(|p| *p > Decimal::ZERO);
                StatementLine {
                    symbol: symbol.clone(),
                    quantity: h.quantity,
                    average_cost: h.average_cost(),
                    price,
                    market_value: h.market_value(price),
                }
            })
            .collect();
        let value = at_close.cash + holdings.iter().map(|l| l.market_value).sum::<Decimal>();
        let statement = Statement {
            statement_id: ctx.new_id("stm"),
            date,
            closed_at: ctx.now,
            cash: at_close.cash,
            holdings,
            value,
            contributions: at_close.totals.deposits - at_close.totals.withdrawals,
            deposits: at_close.day.deposits,
            withdrawals: at_close.day.withdrawals,
            fees: at_close.day.fees,
            trades: at_close.day.orders,
        };
        ctx.audit(
            AuditDraft::ok("statement.issued")
                .detail("statement_id", &statement.statement_id)
                .detail("date", date.to_string())
                .detail("value", cash_string(value))
                .detail("trades", statement.trades.len().to_string()),
        );
        let reply = PortfolioReply::Statement(Box::new(statement.clone()));
        Ok(Decision::new(vec![PortfolioEvent::DayClosed { statement }], reply))
    }

    /// Decides a client request once per idempotency key: a remembered key answers its first
    /// reply (or `IdempotencyKeyReused` for another request); a business refusal is remembered
    /// under the key (a `Refused` event) and answered as a refusal.
    fn once(
        &self,
        idem: IdemTag,
        ctx: &mut Ctx<'_>,
        decide: impl FnOnce(&Self, IdemTag, &mut Ctx<'_>) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if let Some(previous) = self.remembered(&idem) {
            if previous.is_err() {
                ctx.audit(AuditDraft::refused("idempotency.check", "idempotency_key_reused"));
            }
            return previous.map(Decision::replay);
        }
        match decide(self, idem.clone(), ctx) {
            Err(rejection) => {
                let event = PortfolioEvent::Refused {
                    idem,
                    rejection: rejection.clone(),
                    at: ctx.now,
                };
                Ok(Decision::new(vec![event], PortfolioReply::Refused(rejection)))
            }
            accepted => accepted,
        }
    }

    /// Market value of the holdings at the given prices plus cash (missing prices count at cost).
    pub fn total_value(&self, price_of: impl Fn(&str) -> Option<Decimal>) -> Decimal {
        self.cash + self.holdings.iter().map(|(s, h)| h.market_value(price_of(s))).sum::<Decimal>()
    }

    fn decide_deposit(&self, amount: Decimal, idem: IdemTag, ctx: &mut Ctx<'_>) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if !is_valid_cash_amount(amount) {
            ctx.audit(AuditDraft::refused("portfolio.deposit", "invalid_amount"));
            return Err(PortfolioRejection::InvalidAmount);
        }
        let tx_id = ctx.new_id("txn");
        let cash = self.cash + amount;
        ctx.audit(
            AuditDraft::ok("portfolio.deposit")
                .detail("tx_id", &tx_id)
                .detail("amount", cash_string(amount))
                .detail("cash_after", cash_string(cash)),
        );
        Ok(Decision::new(
            vec![PortfolioEvent::Deposited {
                tx_id,
                amount,
                at: ctx.now,
                idem,
            }],
            PortfolioReply::Cash { cash },
        ))
    }

    fn decide_withdrawal(&self, amount: Decimal, idem: IdemTag, ctx: &mut Ctx<'_>) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if !is_valid_cash_amount(amount) {
            ctx.audit(AuditDraft::refused("portfolio.withdrawal", "invalid_amount"));
            return Err(PortfolioRejection::InvalidAmount);
        }
        if amount > self.cash {
            ctx.audit(AuditDraft::refused("portfolio.withdrawal", "insufficient_funds").detail("amount", cash_string(amount)));
            return Err(PortfolioRejection::InsufficientFunds);
        }
        let tx_id = ctx.new_id("txn");
        let cash = self.cash - amount;
        ctx.audit(
            AuditDraft::ok("portfolio.withdrawal")
                .detail("tx_id", &tx_id)
                .detail("amount", cash_string(amount))
                .detail("cash_after", cash_string(cash)),
        );
        Ok(Decision::new(
            vec![PortfolioEvent::Withdrawn {
                tx_id,
                amount,
                at: ctx.now,
                idem,
            }],
            PortfolioReply::Cash { cash },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_order(
        &self,
        symbol: String,
        side: Side,
        quantity: Decimal,
        quote: Option<OrderQuote>,
        investor: &InvestorStatus,
        fees: &FeeSchedule,
        idem: IdemTag,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        let refuse = |ctx: &mut Ctx<'_>, r: PortfolioRejection| {
            let mut draft = AuditDraft::refused("order.place", r.code())
                .detail("symbol", &symbol)
                .detail("side", side.as_str())
                .detail("quantity", plain_string(quantity));
            if let PortfolioRejection::Compliance(rule) = r {
                draft = draft.detail("rule", rule.code()).detail("reason", rule.reason());
            }
            ctx.audit(draft);
            Err(r)
        };
        if !is_valid_quantity(quantity) {
            return refuse(ctx, PortfolioRejection::InvalidQuantity);
        }
        let Some(quote) = quote else {
            return refuse(ctx, PortfolioRejection::UnknownInstrument);
        };
        let purpose = match side {
            Side::Buy => Purpose::Acquire,
            Side::Sell => Purpose::Dispose,
        };
        if let Err(rule) = compliance::check(investor, quote.product, purpose) {
            return refuse(ctx, PortfolioRejection::Compliance(rule));
        }
        let Some((notional, fee)) = crate::domain::fees::order_cost(fees, quantity, quote.price) else {
            return refuse(ctx, PortfolioRejection::InvalidQuantity);
        };
        let (cash_effect, realised_pnl) = match side {
            Side::Buy => {
                if notional + fee > self.cash {
                    return refuse(ctx, PortfolioRejection::InsufficientFunds);
                }
                (-(notional + fee), Decimal::ZERO)
            }
            Side::Sell => {
                let Some(h) = self.holdings.get(&symbol).filter(|h| h.quantity >= quantity) else {
                    return refuse(ctx, PortfolioRejection::InsufficientHoldings);
                };
                if self.cash + notional - fee < Decimal::ZERO {
                    return refuse(ctx, PortfolioRejection::InsufficientFunds);
                }
                (notional - fee, notional - cost_removed(h, quantity))
            }
        };
        let order = Order {
            order_id: ctx.new_id("ord"),
            symbol,
            side,
            quantity,
            price: quote.price,
            fees: fee,
            cash_effect,
            realised_pnl,
            executed_at: ctx.now,
        };
        let tx_id = ctx.new_id("txn");
        ctx.audit(
            AuditDraft::ok("order.filled")
                .detail("order_id", &order.order_id)
                .detail("symbol", &order.symbol)
                .detail("side", side.as_str())
                .detail("quantity", plain_string(quantity))
                .detail("price", plain_string(order.price))
                .detail("fees", cash_string(fee))
                .detail("cash_after", cash_string(self.cash + cash_effect)),
        );
        let reply = PortfolioReply::Order(order.clone());
        Ok(Decision::new(vec![PortfolioEvent::OrderFilled { tx_id, order, idem }], reply))
    }

    fn remember(&mut self, idem: &IdemTag, reply: PortfolioReply, at: Timestamp) {
        // Forget keys past their retention, and bound the map: both depend only on the events,
        // so a replay of the journal prunes identically.
        let horizon = at.millis() - IDEMPOTENCY_RETENTION_MS;
        if self.idempotency.len() >= IDEMPOTENCY_KEYS_MAX || self.idempotency.len() % 1024 == 1023 {
            self.idempotency.retain(|_, r| r.at.millis() >= horizon);
            while self.idempotency.len() >= IDEMPOTENCY_KEYS_MAX {
                let oldest = self.idempotency.iter().min_by_key(|(k, r)| (r.at, (*k).clone())).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => self.idempotency.remove(&k),
                    None => break,
                };
            }
        }
        self.idempotency.insert(
            idem.key.clone(),
            Remembered {
                fingerprint: idem.fingerprint,
                reply,
                at,
            },
        );
    }
}

/// The share of a holding's cost basis that leaves with `quantity` units.
fn cost_removed(h: &Holding, quantity: Decimal) -> Decimal {
    if quantity == h.quantity {
        h.cost_basis
    } else {
        round_cash(h.cost_basis * quantity / h.quantity).min(h.cost_basis)
    }
}

/// A portfolio command as its request id stands for it ([`Entity::request_form`]): an order
/// without the quote, the investor's facts and the fee schedule its workflow read live for it.
/// What the client asked is all there: the symbol, side and quantity, and the idempotency tag
/// whose fingerprint covers the request's body. Untagged: any other command's form is the
/// command itself, so its digest is the one requests remembered before this form existed.
#[derive(Serialize)]
#[serde(untagged)]
enum RequestForm<'a> {
    Order {
        symbol: &'a str,
        side: Side,
        quantity: &'a Decimal,
        idem: &'a IdemTag,
    },
    Other(&'a PortfolioCommand),
}

impl Entity for Portfolio {
    type Command = PortfolioCommand;
    type Event = PortfolioEvent;
    type Reply = PortfolioReply;
    type Rejection = PortfolioRejection;
    type Query = crate::domain::queries::PortfolioQuery;
    type View = crate::domain::queries::PortfolioView;
    const KIND: EntityKind = EntityKind::Portfolio;

    fn request_form(cmd: &PortfolioCommand) -> impl Serialize + '_ {
        match cmd {
            PortfolioCommand::PlaceOrder {
                symbol, side, quantity, idem, ..
            } => RequestForm::Order {
                symbol,
                side: *side,
                quantity,
                idem,
            },
            other => RequestForm::Other(other),
        }
    }

    fn query(&self, query: &Self::Query) -> Self::View {
        query.run(self)
    }

    fn empty(id: &str) -> Self {
        Portfolio {
            owner: id.to_string(),
            cash: Decimal::ZERO,
            holdings: BTreeMap::new(),
            idempotency: BTreeMap::new(),
            totals: Totals::default(),
            day: DayBook::default(),
            last_close: None,
        }
    }

    fn decide(&self, cmd: PortfolioCommand, ctx: &mut Ctx<'_>) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        match cmd {
            PortfolioCommand::Deposit { amount, idem } => self.once(idem, ctx, |p, idem, ctx| p.decide_deposit(amount, idem, ctx)),
            PortfolioCommand::Withdraw { amount, idem } => self.once(idem, ctx, |p, idem, ctx| p.decide_withdrawal(amount, idem, ctx)),
            PortfolioCommand::PlaceOrder {
                symbol,
                side,
                quantity,
                quote,
                investor,
                fees,
                idem,
            } => self.once(idem, ctx, |p, idem, ctx| {
                p.decide_order(symbol, side, quantity, quote, &investor, &fees, idem, ctx)
            }),
            // A day close is not a client request: no key, and a refusal is not remembered.
            PortfolioCommand::CloseDay { date, prices, cutoff, journal } => self.decide_close(date, &prices, cutoff, &journal, ctx),
        }
    }

    fn apply(&mut self, event: &PortfolioEvent) {
        match event {
            PortfolioEvent::Refused { idem, rejection, at } => {
                self.remember(idem, PortfolioReply::Refused(rejection.clone()), *at);
            }
            PortfolioEvent::Deposited { amount, at, idem, .. } => {
                self.cash += amount;
                self.totals.deposits += amount;
                self.day.deposits += amount;
                self.remember(idem, PortfolioReply::Cash { cash: self.cash }, *at);
            }
            PortfolioEvent::Withdrawn { amount, at, idem, .. } => {
                self.cash -= amount;
                self.totals.withdrawals += amount;
                self.day.withdrawals += amount;
                self.remember(idem, PortfolioReply::Cash { cash: self.cash }, *at);
            }
            PortfolioEvent::OrderFilled { order, idem, .. } => {
                let notional = round_cash(order.quantity * order.price);
                let holding = self.holdings.entry(order.symbol.clone()).or_default();
                match order.side {
                    Side::Buy => {
                        holding.quantity += order.quantity;
                        holding.cost_basis += notional;
                    }
                    Side::Sell => {
                        let removed = cost_removed(holding, order.quantity);
                        holding.quantity -= order.quantity;
                        holding.cost_basis -= removed;
                        self.totals.realised_pnl += notional - removed;
                    }
                }
                if holding.quantity.is_zero() {
                    self.holdings.remove(&order.symbol);
                }
                self.cash += order.cash_effect;
                self.totals.fees += order.fees;
                self.day.fees += order.fees;
                self.day.orders.push(order.clone());
                self.remember(idem, PortfolioReply::Order(order.clone()), order.executed_at);
            }
            PortfolioEvent::DayClosed { statement } => {
                self.last_close = Some(Closing {
                    date: statement.date,
                    value: statement.value,
                    contributions: statement.contributions,
                    at: statement.closed_at,
                });
                // What the statement stated leaves the day book; activity after its cutoff
                // stays for the next one.
                self.day.orders.retain(|o| !statement.trades.iter().any(|t| t.order_id == o.order_id));
                self.day.deposits -= statement.deposits;
                self.day.withdrawals -= statement.withdrawals;
                self.day.fees -= statement.fees;
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        assert!(self.cash >= Decimal::ZERO, "portfolio {}: cash negative ({})", self.owner, self.cash);
        let mut basis = Decimal::ZERO;
        for (symbol, h) in &self.holdings {
            assert!(h.quantity > Decimal::ZERO, "portfolio {}: holding {symbol} not positive", self.owner);
            assert!(h.cost_basis >= Decimal::ZERO, "portfolio {}: cost basis of {symbol} negative", self.owner);
            basis += h.cost_basis;
        }
        let t = &self.totals;
        assert_eq!(
            self.cash + basis,
            t.deposits - t.withdrawals - t.fees + t.realised_pnl,
            "portfolio {}: cash + cost basis drifted from deposits − withdrawals − fees + realised P&L",
            self.owner
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::compliance::InvestorStatus;
    use rand::SeedableRng;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn idem(key: &str) -> IdemTag {
        IdemTag {
            key: key.into(),
            fingerprint: [0; 32],
        }
    }

    fn buy(symbol: &str, quantity: &str, price: &str, key: &str) -> PortfolioCommand {
        PortfolioCommand::PlaceOrder {
            symbol: symbol.into(),
            side: Side::Buy,
            quantity: d(quantity),
            quote: Some(OrderQuote {
                price: d(price),
                product: ProductFacts { complex: false, risk_class: 3 },
            }),
            investor: InvestorStatus::onboarded(5, false),
            fees: FeeSchedule {
                commission_bps: d("10"),
                minimum: d("1.00"),
            },
            idem: idem(key),
        }
    }

    /// A portfolio with its journal, as its actor keeps them (a day close reads the journal).
    struct Journaled {
        p: Portfolio,
        journal: Vec<PortfolioEvent>,
    }

    impl Journaled {
        fn new(owner: &str) -> Journaled {
            Journaled {
                p: Portfolio::empty(owner),
                journal: Vec::new(),
            }
        }

        fn run(&mut self, cmd: PortfolioCommand, now: i64) -> Result<PortfolioReply, PortfolioRejection> {
            // A seed per step, so ids differ as a real node's do.
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(self.journal.len() as u64);
            let mut ctx = Ctx::new(Timestamp(now), &mut rng);
            self.p.decide(cmd, &mut ctx).map(|dec| {
                for e in &dec.events {
                    self.p.apply(e);
                }
                self.journal.extend(dec.events);
                dec.reply
            })
        }

        /// Closes `date` with its close time at `cutoff`, at `now`.
        fn close_at(&mut self, date: &str, prices: &[(&str, &str)], cutoff: i64, now: i64) -> Result<PortfolioReply, PortfolioRejection> {
            let cmd = PortfolioCommand::CloseDay {
                date: Date::parse(date).unwrap(),
                prices: prices.iter().map(|(s, p)| (s.to_string(), d(p))).collect(),
                cutoff: Timestamp(cutoff),
                journal: self.journal.clone(),
            };
            self.run(cmd, now)
        }

        /// Closes `date` at `now`, everything so far before its close time.
        fn close(&mut self, date: &str, prices: &[(&str, &str)], now: i64) -> Result<PortfolioReply, PortfolioRejection> {
            self.close_at(date, prices, i64::MAX, now)
        }
    }

    fn deposit(amount: &str, key: &str) -> PortfolioCommand {
        PortfolioCommand::Deposit {
            amount: d(amount),
            idem: idem(key),
        }
    }

    fn statement(r: Result<PortfolioReply, PortfolioRejection>) -> Statement {
        match r {
            Ok(PortfolioReply::Statement(s)) => *s,
            other => panic!("expected a statement, got {other:?}"),
        }
    }

    /// Events are stamped by the clock of the node that led the group: after a fail-over to a
    /// node whose clock is behind, a buy can carry an earlier time than the deposit before it.
    /// A close between the two stamps states a prefix of the journal, never a buy without the
    /// deposit that paid for it (which broke the invariants and panicked before).
    #[test]
    fn a_close_after_the_clock_stepped_back_states_a_prefix_of_the_journal() {
        let mut j = Journaled::new("u");
        j.run(deposit("500", "k0"), 10).unwrap();
        j.run(deposit("1000", "k1"), 100).unwrap();
        // 500 and a fee: more than the first deposit alone.
        j.run(buy("AAA", "5", "100", "k2"), 50).unwrap();
        let s = statement(j.close_at("2026-11-21", &[("AAA", "100")], 75, 200));
        assert!(s.holdings.is_empty(), "neither the second deposit nor the buy after it: {s:?}");
        assert_eq!(s.cash, d("500"));
        // The next close states both.
        let s = statement(j.close_at("2026-11-22", &[("AAA", "100")], 150, 300));
        assert_eq!(s.holdings.len(), 1, "{s:?}");
    }

    /// Advice accepted under key `k` places order `i` under `series_key(k, i)`. A key a client
    /// sends (visible ASCII) never names one of them: an order the client placed under `k/1`
    /// neither stands in for the advice's second order nor is refused as a reuse of the key.
    #[test]
    fn the_orders_of_accepted_advice_have_keys_no_client_key_names() {
        use crate::domain::fingerprint::accepted_order;
        let mut j = Journaled::new("u");
        j.run(deposit("100000", "funding"), 1).unwrap();
        let client = |key: &str| IdemTag {
            key: key.into(),
            fingerprint: [7; 32],
        };
        let advised = |i: usize| IdemTag {
            key: series_key("k", i),
            fingerprint: accepted_order("adv_1", i),
        };
        // The test's `buy`, under another idempotency tag.
        let order = |idem: IdemTag| {
            let mut cmd = buy("AAA", "1", "100", "unused");
            if let PortfolioCommand::PlaceOrder { idem: tag, .. } = &mut cmd {
                *tag = idem;
            }
            cmd
        };
        j.run(order(client("k/1")), 2).unwrap();
        j.run(order(client("k/2")), 3).unwrap();
        assert_eq!(j.p.remembered_series("k", |i| accepted_order("adv_1", i)).map(|r| r.len()), Ok(0));
        j.run(order(advised(0)), 4).unwrap();
        j.run(order(advised(1)), 5)
            .expect("the advice's second order is not a reuse of the client's k/1");
        assert_eq!(j.p.remembered_series("k", |i| accepted_order("adv_1", i)).map(|r| r.len()), Ok(2));
        assert!(series_key("k", 1).bytes().any(|c| !c.is_ascii_graphic()));
    }

    #[test]
    fn a_day_close_states_holdings_value_trades_and_fees_once() {
        let mut j = Journaled::new("usr_a");
        assert_eq!(j.close("2026-11-20", &[], 0), Err(PortfolioRejection::NothingToState));
        j.run(deposit("1000", "k1"), 1).unwrap();
        j.run(buy("AAA", "5", "100", "k2"), 2).unwrap();
        let s = statement(j.close("2026-11-21", &[("AAA", "110"), ("BBB", "5")], 3));
        assert_eq!(s.date.to_string(), "2026-11-21");
        assert_eq!(s.cash, d("499.00"));
        assert_eq!(s.holdings.len(), 1);
        assert_eq!(
            (s.holdings[0].quantity, s.holdings[0].price, s.holdings[0].market_value),
            (d("5"), Some(d("110")), d("550"))
        );
        assert_eq!(s.value, d("1049.00"));
        assert_eq!((s.deposits, s.withdrawals, s.fees, s.contributions), (d("1000"), d("0"), d("1.00"), d("1000")));
        assert_eq!(s.trades.len(), 1);
        // The same day again, or an earlier one, is refused and changes nothing.
        let before = j.p.clone();
        assert_eq!(j.close("2026-11-21", &[], 4), Err(PortfolioRejection::DayAlreadyClosed));
        assert_eq!(j.close("2026-11-20", &[], 4), Err(PortfolioRejection::DayAlreadyClosed));
        assert_eq!(j.p, before);
        // The next statement holds only what happened since; a holding without a price counts at cost.
        j.run(
            PortfolioCommand::Withdraw {
                amount: d("100"),
                idem: idem("k3"),
            },
            5,
        )
        .unwrap();
        let s2 = statement(j.close("2026-11-22", &[], 6));
        assert!(s2.trades.is_empty());
        assert_eq!((s2.deposits, s2.withdrawals, s2.fees, s2.contributions), (d("0"), d("100"), d("0"), d("900")));
        assert_eq!((s2.holdings[0].price, s2.holdings[0].market_value), (None, d("500")));
        assert_eq!(s2.value, d("899.00"));
        // Statements are in the history, in order.
        assert_eq!(j.p.last_close.unwrap().date.to_string(), "2026-11-22");
    }

    #[test]
    fn a_late_close_states_the_day_as_it_stood_at_its_close_time() {
        let day = |date: &str, hours: i64| Date::parse(date).unwrap().days_since_epoch() * crate::domain::time::MS_PER_DAY + hours * MS_PER_HOUR;
        let close_21 = day("2026-11-21", 22);
        // A portfolio opened after the close time has nothing to state for that day.
        let mut late = Journaled::new("usr_late");
        late.run(deposit("100", "k1"), day("2026-11-22", 9)).unwrap();
        assert_eq!(
            late.close_at("2026-11-21", &[], close_21, day("2026-11-22", 10)),
            Err(PortfolioRejection::NothingToState)
        );

        let mut j = Journaled::new("usr_a");
        j.run(deposit("1000", "k1"), day("2026-11-21", 10)).unwrap();
        j.run(buy("AAA", "5", "100", "k2"), day("2026-11-21", 11)).unwrap();
        // After the close time, before the close runs.
        j.run(deposit("500", "k3"), day("2026-11-21", 23)).unwrap();
        j.run(buy("AAA", "2", "110", "k4"), day("2026-11-22", 9)).unwrap();
        let s = statement(j.close_at("2026-11-21", &[("AAA", "105")], close_21, day("2026-11-22", 10)));
        assert_eq!((s.cash, s.value, s.contributions), (d("499.00"), d("1024.00"), d("1000")));
        assert_eq!((s.holdings.len(), s.holdings[0].quantity), (1, d("5")));
        assert_eq!((s.deposits, s.fees, s.trades.len()), (d("1000"), d("1.00"), 1));
        assert_eq!(s.closed_at, Timestamp(day("2026-11-22", 10)));
        // What came after the close time is the next statement's, not lost.
        assert_eq!((j.p.day.deposits, j.p.day.orders.len()), (d("500"), 1));
        let s2 = statement(j.close_at("2026-11-22", &[("AAA", "110")], day("2026-11-22", 22), day("2026-11-22", 22)));
        assert_eq!((s2.deposits, s2.fees, s2.trades.len()), (d("500"), d("1.00"), 1));
        assert_eq!((s2.holdings[0].quantity, s2.cash, s2.contributions), (d("7"), d("778.00"), d("1500")));
        assert_eq!(j.p.day, DayBook::default());
        // A journal that is not this portfolio's is refused.
        let mut other = Journaled::new("usr_b");
        other.journal = late.journal.clone();
        other.p = Portfolio::as_of("usr_b", &j.journal, Timestamp(i64::MAX));
        assert_eq!(other.close("2026-11-23", &[], day("2026-11-23", 23)), Err(PortfolioRejection::JournalMismatch));
    }
}
