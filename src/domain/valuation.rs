//! Portfolio valuation and performance (sans-IO).
//!
//! A portfolio's value is its cash plus its holdings at the latest prices. The value is sampled
//! into a series of [`ValuePoint`]s; each point also carries the portfolio's cumulative net
//! contributions (deposits − withdrawals), so the external cash flow between two points is the
//! difference of their contributions and performance can be measured without it.
//!
//! Time-weighted return chain-links the sub-period returns between points, treating each flow as
//! arriving at the start of its sub-period: `r_i = V_i / (V_{i−1} + F_i) − 1`,
//! `TWR = Π(1 + r_i) − 1`. A sub-period that starts with no capital (`V_{i−1} + F_i ≤ 0`) has no
//! return and is skipped.

use crate::domain::portfolio::{Holding, Portfolio};
use crate::domain::time::{Timestamp, MS_PER_DAY, MS_PER_MINUTE};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Intraday samples kept per portfolio: one per minute for a day.
pub const INTRADAY_POINTS: usize = 1440;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuePoint {
    pub at: Timestamp,
    pub value: Decimal,
    /// Cumulative deposits − withdrawals up to this point.
    pub contributions: Decimal,
}

/// Time-weighted return of a series (oldest first), as a fraction rounded to 6 places
/// (`0.05` is +5%). Fewer than two points: zero.
pub fn twr(points: &[ValuePoint]) -> Decimal {
    let mut growth = Decimal::ONE;
    for w in points.windows(2) {
        let flow = w[1].contributions - w[0].contributions;
        let start = w[0].value + flow;
        if start <= Decimal::ZERO {
            continue;
        }
        match w[1].value.checked_div(start).and_then(|r| growth.checked_mul(r)) {
            Some(g) => growth = g,
            None => continue,
        }
    }
    (growth - Decimal::ONE).round_dp(6)
}

/// What a valuation needs of a portfolio.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    pub cash: Decimal,
    pub holdings: BTreeMap<String, Holding>,
    pub contributions: Decimal,
}

impl Positions {
    pub fn of(p: &Portfolio) -> Positions {
        Positions {
            cash: p.cash,
            holdings: p.holdings.clone(),
            contributions: p.totals.deposits - p.totals.withdrawals,
        }
    }

    /// Cash plus holdings at `price_of` (a holding without a price counts at cost).
    pub fn value(&self, price_of: impl Fn(&str) -> Option<Decimal>) -> Decimal {
        self.cash + self.holdings.iter().map(|(s, h)| h.market_value(price_of(s))).sum::<Decimal>()
    }
}

/// A price of a held instrument moved by at least the configured threshold since the reference
/// price (the price when advice was last computed, or when the valuation started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharpMove {
    pub symbol: String,
    /// Relative change, e.g. `-0.12`.
    pub change: Decimal,
}

/// The live valuation of one portfolio, driven by price updates and position changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveValuation {
    pub positions: Positions,
    pub prices: BTreeMap<String, Decimal>,
    pub value: Decimal,
    pub as_of: Timestamp,
    /// One point per minute (the last value in that minute), the last day.
    pub intraday: VecDeque<ValuePoint>,
    reference: BTreeMap<String, Decimal>,
    /// Price updates applied (after coalescing).
    pub updates: u64,
}

impl LiveValuation {
    pub fn new(positions: Positions, prices: BTreeMap<String, Decimal>, now: Timestamp) -> LiveValuation {
        let mut v = LiveValuation {
            reference: prices.clone(),
            prices,
            ..LiveValuation::default()
        };
        v.set_positions(positions, now);
        v
    }

    /// New cash or holdings (after a deposit, withdrawal, order or day close).
    pub fn set_positions(&mut self, positions: Positions, now: Timestamp) {
        self.positions = positions;
        self.revalue(now);
    }

    /// Applies the latest prices (already coalesced: one per symbol). Returns the sharpest move
    /// of a held instrument at or beyond `threshold` (a fraction), if any; the reference price of
    /// a symbol that moved sharply is reset, so one move triggers once.
    pub fn on_prices<S: AsRef<str>>(&mut self, updates: impl IntoIterator<Item = (S, Decimal)>, now: Timestamp, threshold: Decimal) -> Option<SharpMove> {
        let mut sharpest: Option<SharpMove> = None;
        for (symbol, price) in updates {
            let symbol = symbol.as_ref();
            if price <= Decimal::ZERO {
                continue;
            }
            // The hot path of the fan-out: no allocation for a symbol already known.
            match self.prices.get_mut(symbol) {
                Some(p) => *p = price,
                None => {
                    self.prices.insert(symbol.to_string(), price);
                }
            }
            if !self.positions.holdings.contains_key(symbol) {
                continue;
            }
            let Some(&reference) = self.reference.get(symbol) else {
                self.reference.insert(symbol.to_string(), price);
                continue;
            };
            // |p − ref| ≥ threshold × ref, without a division unless it triggers.
            if threshold > Decimal::ZERO && (price - reference).abs() >= threshold * reference {
                let Some(change) = (price - reference).checked_div(reference) else {
                    continue;
                };
                self.reference.insert(symbol.to_string(), price);
                if sharpest.as_ref().is_none_or(|s| change.abs() > s.change.abs()) {
                    sharpest = Some(SharpMove {
                        symbol: symbol.to_string(),
                        change: change.round_dp(4),
                    });
                }
            }
        }
        self.updates += 1;
        self.revalue(now);
        sharpest
    }

    /// The price of a newly held instrument (also the reference its moves are measured from).
    pub fn seed_price(&mut self, symbol: &str, price: Decimal) {
        self.prices.insert(symbol.to_string(), price);
        self.reference.insert(symbol.to_string(), price);
    }

    /// The reference prices become the current ones (advice was just recomputed).
    pub fn rebase(&mut self) {
        self.reference = self.prices.clone();
    }

    /// Every holding has a market price (a value at cost would be a false return).
    pub fn fully_priced(&self) -> bool {
        self.positions.holdings.keys().all(|s| self.prices.contains_key(s))
    }

    /// Values only at market prices: until every holding has one, neither the value nor the
    /// series moves (no point at cost).
    fn revalue(&mut self, now: Timestamp) {
        if !self.fully_priced() {
            return;
        }
        let prices = &self.prices;
        self.value = self.positions.value(|s| prices.get(s).copied());
        self.as_of = now;
        let minute = Timestamp(now.millis() - now.millis().rem_euclid(MS_PER_MINUTE));
        let point = ValuePoint {
            at: now,
            value: self.value,
            contributions: self.positions.contributions,
        };
        // The last point of a minute is overwritten by later values of that minute — unless it is
        // the first point after a cash flow: TWR needs the value right after every flow.
        let n = self.intraday.len();
        let rolling = n >= 2 && self.intraday[n - 2].contributions == self.intraday[n - 1].contributions;
        match self.intraday.back_mut() {
            Some(last) if last.at > now => {}
            Some(last)
                if rolling && last.contributions == point.contributions && last.at.millis() - last.at.millis().rem_euclid(MS_PER_MINUTE) == minute.millis() =>
            {
                *last = point
            }
            _ => self.intraday.push_back(point),
        }
        while self.intraday.len() > INTRADAY_POINTS || self.intraday.front().is_some_and(|p| p.at.millis() < now.millis() - MS_PER_DAY) {
            self.intraday.pop_front();
        }
    }

    /// The current value as a point; None until every holding has a market price.
    pub fn point(&self) -> Option<ValuePoint> {
        self.fully_priced().then_some(ValuePoint {
            at: self.as_of,
            value: self.value,
            contributions: self.positions.contributions,
        })
    }
}

/// The value series of a performance period from `from` to `current`: the daily closes, then the
/// intraday samples after the last close (see [`period_series`] for the base point).
pub fn performance_series(closes: Vec<ValuePoint>, intraday: &VecDeque<ValuePoint>, from: Timestamp, current: ValuePoint) -> Vec<ValuePoint> {
    let mut points = closes;
    let last_close = points.last().map_or(Timestamp(i64::MIN), |p| p.at);
    points.extend(intraday.iter().filter(|p| p.at > last_close).cloned());
    points.sort_by_key(|p| p.at);
    period_series(&points, from, current)
}

/// The points of a performance period: the last point before `from` (the base the first
/// return is measured from), the points in `[from, ..]`, and `now` last. `points` is oldest first.
pub fn period_series(points: &[ValuePoint], from: Timestamp, now: ValuePoint) -> Vec<ValuePoint> {
    let first_in = points.partition_point(|p| p.at < from);
    let start = first_in.saturating_sub(1);
    let mut out: Vec<ValuePoint> = points[start..].iter().filter(|p| p.at < now.at).cloned().collect();
    out.push(now);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn p(t: i64, value: &str, contributions: &str) -> ValuePoint {
        ValuePoint {
            at: Timestamp(t),
            value: d(value),
            contributions: d(contributions),
        }
    }

    #[test]
    fn a_holding_without_a_market_price_makes_no_point_at_cost() {
        let mut holdings = BTreeMap::new();
        holdings.insert(
            "ACME".to_string(),
            crate::domain::portfolio::Holding {
                quantity: d("30"),
                cost_basis: d("5490"),
            },
        );
        let positions = Positions {
            cash: d("4500.64"),
            holdings,
            contributions: d("10000"),
        };
        // After a restart, before the first price: no value, no point.
        let mut v = LiveValuation::new(positions, BTreeMap::new(), Timestamp(1_000));
        assert!(v.point().is_none() && v.intraday.is_empty(), "{v:?}");
        // The first market price makes the first point, at market.
        v.on_prices([("ACME", d("200"))], Timestamp(1_001), Decimal::ZERO);
        assert_eq!(v.point().map(|p| p.value), Some(d("10500.64")));
    }

    #[test]
    fn twr_of_a_known_series_ignores_flows() {
        // 1000 → 1100 (+10%); deposit 500 at the start of the next period: 1600 → 1440 (−10%);
        // withdraw 440: 1000 → 1050 (+5%). TWR = 1.1 × 0.9 × 1.05 − 1 = 0.0395.
        let series = [p(0, "1000", "1000"), p(1, "1100", "1000"), p(2, "1440", "1500"), p(3, "1050", "1060")];
        assert_eq!(twr(&series), d("0.0395"));
        // The money-weighted gain differs (flows count), the TWR does not.
        assert_eq!(twr(&series[..2]), d("0.1"));
        assert_eq!(twr(&series[..1]), Decimal::ZERO);
        assert_eq!(twr(&[]), Decimal::ZERO);
    }

    #[test]
    fn twr_starts_when_money_arrives_and_skips_empty_periods() {
        // Empty portfolio, then a deposit of 100 that grows to 120, then all withdrawn.
        let series = [p(0, "0", "0"), p(1, "100", "100"), p(2, "120", "100"), p(3, "0", "-20")];
        assert_eq!(twr(&series), d("0.2"));
    }

    #[test]
    fn live_valuation_tracks_prices_and_flags_sharp_moves_once() {
        let mut holdings = BTreeMap::new();
        holdings.insert(
            "AAA".to_string(),
            Holding {
                quantity: d("10"),
                cost_basis: d("1000"),
            },
        );
        let positions = Positions {
            cash: d("50"),
            holdings,
            contributions: d("1050"),
        };
        let mut prices = BTreeMap::new();
        prices.insert("AAA".to_string(), d("100"));
        let mut v = LiveValuation::new(positions, prices, Timestamp(0));
        assert_eq!(v.value, d("1050"));
        let t = d("0.1");
        assert_eq!(v.on_prices([("AAA".to_string(), d("95"))], Timestamp(1000), t), None);
        assert_eq!(v.value, d("1000"));
        // An instrument not held moves the value of nothing and triggers nothing.
        assert_eq!(v.on_prices([("BBB".to_string(), d("1"))], Timestamp(2000), t), None);
        let m = v.on_prices([("AAA".to_string(), d("89"))], Timestamp(3000), t).unwrap();
        assert_eq!(m.symbol, "AAA");
        assert_eq!(m.change, d("-0.11"));
        // The reference moved with it: the same level does not trigger again.
        assert_eq!(v.on_prices([("AAA".to_string(), d("88"))], Timestamp(4000), t), None);
        // All samples fell in one minute: the first (the value the positions started from) and
        // the latest.
        assert_eq!(v.intraday.len(), 2);
        assert_eq!((v.intraday[0].value, v.intraday[1].value), (d("1050"), d("930")));
        v.on_prices([("AAA".to_string(), d("90"))], Timestamp(MS_PER_MINUTE), t);
        assert_eq!(v.intraday.len(), 3);
        // A flow within the minute keeps the value right after it.
        let mut p = v.positions.clone();
        p.cash += d("100");
        p.contributions += d("100");
        v.set_positions(p, Timestamp(MS_PER_MINUTE + 1));
        v.on_prices([("AAA".to_string(), d("91"))], Timestamp(MS_PER_MINUTE + 2), t);
        v.on_prices([("AAA".to_string(), d("92"))], Timestamp(MS_PER_MINUTE + 3), t);
        let tail: Vec<Decimal> = v.intraday.iter().skip(3).map(|p| p.value).collect();
        assert_eq!(tail, vec![d("1050"), d("1070")]);
        // A day later the old samples are gone.
        v.on_prices([("AAA".to_string(), d("90"))], Timestamp(MS_PER_DAY + 2 * MS_PER_MINUTE), t);
        assert_eq!(v.intraday.len(), 1);
    }

    #[test]
    fn period_series_keeps_the_base_point() {
        let points = [p(10, "1", "1"), p(20, "2", "1"), p(30, "3", "1")];
        let s = period_series(&points, Timestamp(25), p(40, "4", "1"));
        assert_eq!(s.iter().map(|p| p.at.millis()).collect::<Vec<_>>(), vec![20, 30, 40]);
        let all = period_series(&points, Timestamp(0), p(40, "4", "1"));
        assert_eq!(all.len(), 4);
    }
}
