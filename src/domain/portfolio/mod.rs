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
        price
            .and_then(|p| p.checked_mul(self.quantity))
            .map(round_cash)
            .unwrap_or_else(|| round_cash(self.cost_basis))
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
        /// The investor's screening (and the rest of their facts), read from their account:
        /// a sanctioned investor's cash is frozen.
        investor: InvestorStatus,
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

mod decide;
mod entity;

#[cfg(test)]
mod tests;
