//! A portfolio's value series, rebuilt from what is durable and replicated: its journal (every
//! deposit, withdrawal, fill and daily statement) and its instruments' price histories. So the
//! series — and the time-weighted return chain-linked over it — is the same before and after a
//! restart, after a close, and at every node of a cluster; only the last point (the live value)
//! comes from memory, and only once every holding has a market price.
//!
//! Points: one right after each cash flow or fill (valued at the prices known then — the fill
//! price for the traded instrument), each daily statement (at its cutoff, at the closing
//! prices), and a sample at each price known for a held instrument in between (minute bars of
//! the last day, daily closes before). A point is never valued at cost: while a holding has no
//! market price yet, no point is made.

use crate::domain::portfolio::{History, Statement, TransactionKind};
use crate::domain::time::Timestamp;
use crate::domain::valuation::ValuePoint;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Prices of one instrument as they became known, oldest first (`PricesKnown`).
pub type PriceTrack = Vec<(Timestamp, Decimal)>;

/// At most this many samples between flows enter a series (the newest are kept).
pub const SAMPLES_MAX: usize = 5_000;

#[derive(Clone, Debug)]
enum Step {
    /// A cash movement (deposit positive, withdrawal negative).
    Flow { at: Timestamp, amount: Decimal },
    /// A fill: cash moved, holding moved, at this price.
    Fill {
        at: Timestamp,
        symbol: String,
        quantity: Decimal,
        price: Decimal,
        cash: Decimal,
    },
    /// A daily statement, at its cutoff.
    Close { at: Timestamp, value: Decimal, contributions: Decimal },
    /// A price of a held instrument became known.
    Sample { at: Timestamp },
}

impl Step {
    fn at(&self) -> Timestamp {
        match self {
            Step::Flow { at, .. } | Step::Fill { at, .. } | Step::Close { at, .. } | Step::Sample { at } => *at,
        }
    }

    /// At one instant: flows and fills first, then the close that includes them, then samples.
    fn rank(&self) -> u8 {
        match self {
            Step::Flow { .. } | Step::Fill { .. } => 0,
            Step::Close { .. } => 1,
            Step::Sample { .. } => 2,
        }
    }
}

/// The points of a portfolio's value series up to `now` (oldest first). `cutoff_of` gives the
/// moment a statement stands at (its day's close time, or when it ran if earlier).
pub fn rebuild(history: &History, cutoff_of: impl Fn(&Statement) -> Timestamp, prices: &BTreeMap<String, PriceTrack>, now: Timestamp) -> Vec<ValuePoint> {
    let mut steps: Vec<Step> = Vec::new();
    for t in &history.transactions {
        match t.kind {
            TransactionKind::Deposit | TransactionKind::Withdrawal => steps.push(Step::Flow { at: t.at, amount: t.amount }),
            TransactionKind::Buy | TransactionKind::Sell => {
                let Some(o) = t.order_id.as_ref().and_then(|id| history.orders.get(id)) else {
                    continue;
                };
                let signed = if t.kind == TransactionKind::Buy { o.quantity } else { -o.quantity };
                steps.push(Step::Fill {
                    at: t.at,
                    symbol: o.symbol.clone(),
                    quantity: signed,
                    price: o.price,
                    cash: o.cash_effect,
                });
            }
        }
    }
    for s in &history.statements {
        steps.push(Step::Close {
            at: cutoff_of(s),
            value: s.value,
            contributions: s.contributions,
        });
    }
    let first = steps.iter().map(Step::at).min();
    let mut samples: Vec<Timestamp> = prices
        .values()
        .flatten()
        .map(|(t, _)| *t)
        .filter(|t| first.is_some_and(|f| *t > f) && *t <= now)
        .collect();
    samples.sort_unstable();
    samples.dedup();
    if samples.len() > SAMPLES_MAX {
        samples.drain(..samples.len() - SAMPLES_MAX);
    }
    steps.extend(samples.into_iter().map(|at| Step::Sample { at }));
    // Stable: steps of one kind at one instant keep the journal's order.
    steps.sort_by_key(|s| (s.at(), s.rank()));

    let mut cash = Decimal::ZERO;
    let mut contributions = Decimal::ZERO;
    let mut held: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut fills: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut points: Vec<ValuePoint> = Vec::new();
    for step in &steps {
        let at = step.at();
        match step {
            Step::Flow { amount, .. } => {
                cash += *amount;
                contributions += *amount;
            }
            Step::Fill {
                symbol,
                quantity,
                price,
                cash: c,
                ..
            } => {
                cash += *c;
                let q = held.entry(symbol.clone()).or_default();
                *q += *quantity;
                if q.is_zero() {
                    held.remove(symbol);
                }
                fills.insert(symbol.clone(), *price);
            }
            Step::Close { value, contributions: c, .. } => {
                points.push(ValuePoint {
                    at,
                    value: *value,
                    contributions: *c,
                });
                continue;
            }
            Step::Sample { .. } if held.is_empty() => continue,
            Step::Sample { .. } => {}
        }
        let traded = match step {
            Step::Fill { symbol, price, .. } => Some((symbol.as_str(), *price)),
            _ => None,
        };
        let mut value = cash;
        let mut priced = true;
        for (symbol, quantity) in &held {
            let price = match traded {
                Some((s, p)) if s == symbol => Some(p),
                _ => known_at(prices.get(symbol), at).or_else(|| fills.get(symbol).copied()),
            };
            match price {
                Some(p) => value += *quantity * p,
                None => priced = false,
            }
        }
        if priced {
            points.push(ValuePoint { at, value, contributions });
        }
    }
    points
}

/// The last price known at `at` (None before the track's first).
fn known_at(track: Option<&PriceTrack>, at: Timestamp) -> Option<Decimal> {
    let track = track?;
    let i = track.partition_point(|(t, _)| *t <= at);
    (i > 0).then(|| track[i - 1].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::portfolio::{Order, Side, Transaction};
    use crate::domain::valuation::{period_series, twr};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn flow(at: i64, amount: &str) -> Transaction {
        let amount = d(amount);
        Transaction {
            tx_id: format!("tx{at}"),
            kind: if amount > Decimal::ZERO {
                TransactionKind::Deposit
            } else {
                TransactionKind::Withdrawal
            },
            amount,
            order_id: None,
            at: Timestamp(at),
        }
    }

    fn buy(h: &mut History, at: i64, symbol: &str, quantity: &str, price: &str, fees: &str) {
        let (q, p, f) = (d(quantity), d(price), d(fees));
        let order = Order {
            order_id: format!("ord{at}"),
            symbol: symbol.into(),
            side: Side::Buy,
            quantity: q,
            price: p,
            fees: f,
            cash_effect: -(q * p + f),
            realised_pnl: Decimal::ZERO,
            executed_at: Timestamp(at),
        };
        h.transactions.push(Transaction {
            tx_id: format!("tx{at}"),
            kind: TransactionKind::Buy,
            amount: order.cash_effect,
            order_id: Some(order.order_id.clone()),
            at: Timestamp(at),
        });
        h.orders.insert(order.order_id.clone(), order);
    }

    #[test]
    fn flows_fills_and_prices_give_the_hand_computed_return() {
        // Deposit 1000; buy 10 at 100 (fee 1): value 999. Price 110: 1099. Deposit 500: 1599.
        // Price 121: 1709. TWR = 999/1000 × 1099/999 × 1599/(1099 + 500) × 1709/1599 − 1.
        let mut h = History::default();
        h.transactions.push(flow(1_000, "1000"));
        buy(&mut h, 2_000, "ACME", "10", "100", "1");
        h.transactions.push(flow(4_000, "500"));
        let prices = BTreeMap::from([("ACME".to_string(), vec![(Timestamp(3_000), d("110")), (Timestamp(5_000), d("121"))])]);
        let points = rebuild(&h, |s| s.closed_at, &prices, Timestamp(6_000));
        let values: Vec<(i64, Decimal)> = points.iter().map(|p| (p.at.millis(), p.value)).collect();
        assert_eq!(
            values,
            vec![
                (1_000, d("1000")),
                (2_000, d("999")),
                (3_000, d("1099")),
                (4_000, d("1599")),
                (5_000, d("1709"))
            ]
        );
        let expected = (d("1099") / d("1000") * d("1709") / d("1599") - Decimal::ONE).round_dp(6);
        let now = points.last().cloned().unwrap();
        assert_eq!(twr(&period_series(&points, Timestamp(i64::MIN), now)), expected);
    }

    #[test]
    fn no_point_is_valued_at_cost_and_no_price_is_seen_before_it_was_known() {
        let mut h = History::default();
        h.transactions.push(flow(1_000, "100"));
        buy(&mut h, 2_000, "NEWCO", "1", "10", "0");
        // The only price of NEWCO known before 9_000 is the fill; a later price is not used early.
        let prices = BTreeMap::from([("NEWCO".to_string(), vec![(Timestamp(9_000), d("20"))])]);
        let points = rebuild(&h, |s| s.closed_at, &prices, Timestamp(10_000));
        let values: Vec<(i64, Decimal)> = points.iter().map(|p| (p.at.millis(), p.value)).collect();
        assert_eq!(values, vec![(1_000, d("100")), (2_000, d("100")), (9_000, d("110"))]);
    }

    #[test]
    fn a_close_adds_its_point_and_keeps_the_points_before_it() {
        let mut h = History::default();
        h.transactions.push(flow(1_000, "1000"));
        buy(&mut h, 2_000, "ACME", "10", "100", "0");
        let prices = BTreeMap::from([("ACME".to_string(), vec![(Timestamp(3_000), d("90"))])]);
        let before = rebuild(&h, |s| s.closed_at, &prices, Timestamp(4_000));
        h.statements.push(Statement {
            statement_id: "st1".into(),
            date: crate::domain::time::Date::from_timestamp(Timestamp(0)),
            closed_at: Timestamp(3_500),
            cash: Decimal::ZERO,
            holdings: Vec::new(),
            value: d("900"),
            contributions: d("1000"),
            deposits: d("1000"),
            withdrawals: Decimal::ZERO,
            fees: Decimal::ZERO,
            trades: Vec::new(),
        });
        let after = rebuild(&h, |s| s.closed_at, &prices, Timestamp(4_000));
        assert_eq!(&after[..before.len()], &before[..], "the close only adds its own point");
        let all = |p: &[ValuePoint]| twr(&period_series(p, Timestamp(i64::MIN), p.last().cloned().unwrap()));
        assert_eq!(all(&before), all(&after));
        assert_eq!(all(&after), d("-0.1"));
    }
}
