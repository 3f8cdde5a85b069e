//! The simulated clients: what a user asks for, how it is fingerprinted, and which requests the
//! workload generator draws. Everything random comes from the workload stream passed in.

use moneta::domain::compliance::InvestorStatus;
use moneta::domain::fees::FeeSchedule;
use moneta::domain::portfolio::{IdemTag, OrderQuote, Portfolio, PortfolioCommand, Side};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rust_decimal::{Decimal, RoundingStrategy};

/// What a client sends, before the driver adds the quote and the fee schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Deposit { amount: Decimal },
    Withdraw { amount: Decimal },
    Order { symbol: String, side: Side, quantity: Decimal },
}

impl Request {
    /// The request's fingerprint: the domain's, which the gateway computes too.
    pub fn fingerprint(&self) -> [u8; 32] {
        use moneta::domain::fingerprint;
        match self {
            Request::Deposit { amount } => fingerprint::deposit(*amount),
            Request::Withdraw { amount } => fingerprint::withdrawal(*amount),
            Request::Order { symbol, side, quantity } => fingerprint::order(symbol, *side, *quantity),
        }
    }

    pub fn symbol(&self) -> Option<&str> {
        match self {
            Request::Order { symbol, .. } => Some(symbol),
            _ => None,
        }
    }

    /// The audit action a successful request of this kind records.
    pub fn ok_action(&self) -> &'static str {
        match self {
            Request::Deposit { .. } => "portfolio.deposit",
            Request::Withdraw { .. } => "portfolio.withdrawal",
            Request::Order { .. } => "order.filled",
        }
    }

    /// The audit action a refused request of this kind records (a reused key aside).
    pub fn refused_action(&self) -> &'static str {
        match self {
            Request::Deposit { .. } => "portfolio.deposit",
            Request::Withdraw { .. } => "portfolio.withdrawal",
            Request::Order { .. } => "order.place",
        }
    }

    pub fn command(&self, idem: IdemTag, quote: Option<OrderQuote>, investor: InvestorStatus, fees: &FeeSchedule) -> PortfolioCommand {
        match self {
            Request::Deposit { amount } => PortfolioCommand::Deposit { amount: *amount, idem },
            Request::Withdraw { amount } => PortfolioCommand::Withdraw {
                amount: *amount,
                idem,
                investor,
            },
            Request::Order { symbol, side, quantity } => PortfolioCommand::PlaceOrder {
                symbol: symbol.clone(),
                side: *side,
                quantity: *quantity,
                quote,
                investor,
                fees: fees.clone(),
                idem,
            },
        }
    }
}

/// The kinds of thing a simulated user does, with their relative weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Deposit,
    Withdraw,
    Buy,
    Sell,
    /// Re-send an earlier request, accepted or refused: same key, same fingerprint.
    Resend,
    /// Reuse an earlier key (of an accepted or a refused request) for a different request.
    ReuseKey,
    /// Retry the latest refused request with its key: the refusal is remembered, so the retry
    /// answers it again and does not execute, even if the reason is gone since.
    RetryRefused,
    /// Buy more than the cash allows.
    Overspend,
    /// Sell more than is held, or something not held at all.
    Oversell,
    /// Withdraw more than the cash.
    Overdraw,
    BadAmount,
    BadQuantity,
    UnknownSymbol,
}

const MIX: &[(Action, u32)] = &[
    (Action::Deposit, 14),
    (Action::Withdraw, 8),
    (Action::Buy, 34),
    (Action::Sell, 24),
    (Action::Resend, 6),
    (Action::ReuseKey, 2),
    (Action::RetryRefused, 2),
    (Action::Overspend, 2),
    (Action::Oversell, 2),
    (Action::Overdraw, 2),
    (Action::BadAmount, 1),
    (Action::BadQuantity, 1),
    (Action::UnknownSymbol, 1),
];

/// A symbol no instrument has: orders for it get no quote.
pub const UNKNOWN_SYMBOL: &str = "NOPE";

pub fn draw_action(rng: &mut ChaCha20Rng, p: &Portfolio) -> Action {
    if p.cash.is_zero() && p.holdings.is_empty() && rng.random_ratio(4, 5) {
        return Action::Deposit;
    }
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (action, w) in MIX {
        if pick < *w {
            return *action;
        }
        pick -= w;
    }
    unreachable!("weights cover the range")
}

fn cents(rng: &mut ChaCha20Rng, lo: i64, hi: i64) -> Decimal {
    Decimal::new(rng.random_range(lo..=hi), 2)
}

fn floor_dp(v: Decimal, dp: u32) -> Decimal {
    v.round_dp_with_strategy(dp, RoundingStrategy::ToZero)
}

fn pick<'a, T>(rng: &mut ChaCha20Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub fn deposit(rng: &mut ChaCha20Rng) -> Request {
    Request::Deposit {
        amount: cents(rng, 5_000, 2_000_000),
    }
}

pub fn withdraw(rng: &mut ChaCha20Rng, p: &Portfolio) -> Request {
    let share = Decimal::new(rng.random_range(1..=80), 2);
    let amount = floor_dp(p.cash * share, 2).max(Decimal::new(1, 2));
    Request::Withdraw { amount }
}

/// A buy within (roughly) a share of the cash; fees may still make it unaffordable.
pub fn buy(rng: &mut ChaCha20Rng, p: &Portfolio, symbols: &[String], price_of: impl Fn(&str) -> Decimal) -> Request {
    let symbol = pick(rng, symbols).clone();
    let price = price_of(&symbol);
    let budget = p.cash * Decimal::new(rng.random_range(2..=50), 2);
    let dp = *pick(rng, &[0u32, 2, 6]);
    let mut quantity = floor_dp(budget / price, dp);
    if quantity.is_zero() {
        quantity = floor_dp(budget / price, 6);
    }
    if quantity.is_zero() {
        quantity = Decimal::new(1, 6);
    }
    Request::Order {
        symbol,
        side: Side::Buy,
        quantity,
    }
}

/// A sell of all or part of a holding; `None` when nothing is held.
pub fn sell(rng: &mut ChaCha20Rng, p: &Portfolio) -> Option<Request> {
    if p.holdings.is_empty() {
        return None;
    }
    let (symbol, holding) = p.holdings.iter().nth(rng.random_range(0..p.holdings.len()))?;
    let quantity = if rng.random_ratio(2, 5) {
        holding.quantity
    } else {
        let part = floor_dp(holding.quantity * Decimal::new(rng.random_range(5..=95), 2), 6);
        if part.is_zero() {
            holding.quantity
        } else {
            part
        }
    };
    Some(Request::Order {
        symbol: symbol.clone(),
        side: Side::Sell,
        quantity,
    })
}

pub fn overspend(rng: &mut ChaCha20Rng, p: &Portfolio, symbols: &[String], price_of: impl Fn(&str) -> Decimal) -> Request {
    let symbol = pick(rng, symbols).clone();
    let price = price_of(&symbol);
    let quantity = ((p.cash + Decimal::from(100)) / price).ceil() + Decimal::ONE;
    Request::Order {
        symbol,
        side: Side::Buy,
        quantity,
    }
}

pub fn oversell(rng: &mut ChaCha20Rng, p: &Portfolio, symbols: &[String]) -> Request {
    let not_held: Vec<&String> = symbols.iter().filter(|s| !p.holdings.contains_key(*s)).collect();
    if !p.holdings.is_empty() && (not_held.is_empty() || rng.random_bool(0.5)) {
        let (symbol, holding) = p.holdings.iter().nth(rng.random_range(0..p.holdings.len())).expect("non-empty");
        let extra = *pick(rng, &[Decimal::new(1, 6), Decimal::ONE, Decimal::from(1000)]);
        return Request::Order {
            symbol: symbol.clone(),
            side: Side::Sell,
            quantity: holding.quantity + extra,
        };
    }
    let symbol = (*pick(rng, &not_held)).clone();
    Request::Order {
        symbol,
        side: Side::Sell,
        quantity: Decimal::from(rng.random_range(1..=10)),
    }
}

pub fn overdraw(rng: &mut ChaCha20Rng, p: &Portfolio) -> Request {
    Request::Withdraw {
        amount: p.cash + cents(rng, 1, 100_000),
    }
}

pub fn bad_amount(rng: &mut ChaCha20Rng) -> Request {
    let amount = *pick(
        rng,
        &[
            Decimal::ZERO,
            Decimal::new(1, 3),
            Decimal::new(-1000, 2),
            Decimal::new(100_000_000_001, 2),
            Decimal::new(12_345, 4),
        ],
    );
    if rng.random_bool(0.5) {
        Request::Deposit { amount }
    } else {
        Request::Withdraw { amount }
    }
}

pub fn bad_quantity(rng: &mut ChaCha20Rng, symbols: &[String]) -> Request {
    let symbol = pick(rng, symbols).clone();
    let quantity = *pick(
        rng,
        &[
            Decimal::ZERO,
            Decimal::new(1, 7),
            Decimal::NEGATIVE_ONE,
            Decimal::from(1_000_000_001u64),
            Decimal::from(1_000_000_000u64),
        ],
    );
    let side = if rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
    Request::Order { symbol, side, quantity }
}

pub fn unknown_symbol(rng: &mut ChaCha20Rng) -> Request {
    let side = if rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
    Request::Order {
        symbol: UNKNOWN_SYMBOL.to_string(),
        side,
        quantity: Decimal::from(rng.random_range(1..=5)),
    }
}

/// A request that differs from `original` (so its fingerprint differs) for a key-reuse probe.
pub fn different_request(rng: &mut ChaCha20Rng, original: &Request) -> Request {
    let mut other = deposit(rng);
    if other.fingerprint() == original.fingerprint() {
        if let Request::Deposit { amount } = &mut other {
            *amount += Decimal::new(1, 2);
        }
    }
    other
}
