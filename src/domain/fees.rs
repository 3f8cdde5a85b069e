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
    fn minimum_and_proportional() {
        let f = FeeSchedule::default();
        assert_eq!(f.fee_for(Decimal::from(100)), Decimal::from_str("1.00").unwrap());
        assert_eq!(f.fee_for(Decimal::from(20_000)), Decimal::from_str("20.00").unwrap());
        assert_eq!(f.fee_for(Decimal::from_str("12345.67").unwrap()), Decimal::from_str("12.35").unwrap());
    }
}
