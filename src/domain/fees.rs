//! The fee schedule applied to every executed order (configured in `[fees]`).

use crate::domain::money::round_cash;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    /// Commission in basis points of the order's notional.
    pub commission_bps: Decimal,
    /// The smallest fee charged on any order.
    pub minimum: Decimal,
}

impl Default for FeeSchedule {
    fn default() -> Self {
        FeeSchedule {
            commission_bps: Decimal::from(10),
            minimum: Decimal::new(100, 2),
        }
    }
}

impl FeeSchedule {
    /// `max(minimum, notional × bps / 10 000)`, rounded to cents.
    /// The largest notional whose cost, fee included, fits in `budget` (a cent of margin for
    /// rounding the notional): `n + fee_for(n) ≤ budget` for every `n` up to it, as the fee
    /// never falls when the notional grows.
    pub fn affordable_notional(&self, budget: Decimal) -> Decimal {
        (budget - self.fee_for(budget.max(Decimal::ZERO)) - Decimal::new(1, 2)).max(Decimal::ZERO)
    }

    pub fn fee_for(&self, notional: Decimal) -> Decimal {
        let proportional = round_cash(notional * self.commission_bps / Decimal::from(10_000));
        proportional.max(self.minimum)
    }
    pub fn is_valid(&self) -> bool {
        self.commission_bps >= Decimal::ZERO
            && self.commission_bps <= Decimal::from(1000)
            && self.minimum >= Decimal::ZERO
            && crate::domain::money::has_at_most_dp(self.minimum, 2)
    }
}

/// An order's notional (quantity × fill price, to cents) and its fee, as the portfolio charges
/// them; `None` for a quantity that is not valid or whose notional is out of bounds or zero.
pub fn order_cost(fees: &FeeSchedule, quantity: Decimal, price: Decimal) -> Option<(Decimal, Decimal)> {
    if !crate::domain::money::is_valid_quantity(quantity) {
        return None;
    }
    // Bounded like every other amount; checked so that an absurd price × quantity is refused
    // rather than overflowing.
    let notional = match quantity.checked_mul(price) {
        Some(n) if n <= crate::domain::money::max_amount() => round_cash(n),
        _ => return None,
    };
    (notional > Decimal::ZERO).then(|| (notional, fees.fee_for(notional)))
}

/// What a market order would cost (a buy) or bring (a sell) at the market price `market`,
/// priced exactly as the order path prices it: the client's estimate before it orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderEstimate {
    pub price: Decimal,
    pub notional: Decimal,
    pub fee: Decimal,
    /// notional + fee for a buy, notional − fee for a sell.
    pub total: Decimal,
}

pub fn estimate(fees: &FeeSchedule, side: crate::domain::portfolio::Side, market: Decimal, quantity: Decimal, slippage_bps: Decimal) -> Option<OrderEstimate> {
    let price = fill_price(side, market, slippage_bps);
    let (notional, fee) = order_cost(fees, quantity, price)?;
    let total = match side {
        crate::domain::portfolio::Side::Buy => notional + fee,
        crate::domain::portfolio::Side::Sell => notional - fee,
    };
    Some(OrderEstimate { price, notional, fee, total })
}

/// The price a market order fills at when the broker moves it against the client by
/// `slippage_bps`: up for buys, down for sells, to four places, never below 0.0001.
pub fn fill_price(side: crate::domain::portfolio::Side, market: Decimal, slippage_bps: Decimal) -> Decimal {
    let slip = market * slippage_bps / Decimal::from(10_000);
    let price = match side {
        crate::domain::portfolio::Side::Buy => market + slip,
        crate::domain::portfolio::Side::Sell => market - slip,
    };
    crate::domain::money::round_price(price).max(Decimal::new(1, 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn an_estimate_prices_as_the_order_path_does() {
        use crate::domain::portfolio::Side;
        let f = FeeSchedule::default();
        let d = |s: &str| Decimal::from_str(s).unwrap();
        // 5 bps of slippage on 100.00: 100.05 a unit; 80 units 8004.00; fee 10 bps 8.00.
        let buy = estimate(&f, Side::Buy, d("100"), d("80"), d("5")).unwrap();
        assert_eq!(
            (buy.price, buy.notional, buy.fee, buy.total),
            (d("100.05"), d("8004.00"), d("8.00"), d("8012.00"))
        );
        let sell = estimate(&f, Side::Sell, d("100"), d("2"), d("5")).unwrap();
        assert_eq!(
            (sell.price, sell.notional, sell.fee, sell.total),
            (d("99.95"), d("199.90"), d("1.00"), d("198.90"))
        );
        for bad in ["0", "-1", "0.0000001", "100000000000000"] {
            assert_eq!(estimate(&f, Side::Buy, d("100"), d(bad), d("5")), None, "{bad}");
        }
    }

    #[test]
    fn minimum_and_proportional() {
        let f = FeeSchedule::default();
        assert_eq!(f.fee_for(Decimal::from(100)), Decimal::from_str("1.00").unwrap());
        assert_eq!(f.fee_for(Decimal::from(20_000)), Decimal::from_str("20.00").unwrap());
        assert_eq!(f.fee_for(Decimal::from_str("12345.67").unwrap()), Decimal::from_str("12.35").unwrap());
    }
}
