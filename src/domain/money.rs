//! Money and quantities: `rust_decimal::Decimal`, never floating point. Every rounding rule of
//! the platform lives in this file so there is exactly one answer to "how is this rounded?".

use rust_decimal::{Decimal, RoundingStrategy};

/// Cash amounts carry two decimal places (minor units of the portfolio currency).
pub const CASH_DP: u32 = 2;
/// Prices carry four decimal places.
pub const PRICE_DP: u32 = 4;
/// Quantities may be fractional down to six decimal places.
pub const QUANTITY_DP: u32 = 6;
/// The largest single deposit, withdrawal or order notional accepted (a sanity bound, not a
/// business limit): keeps every sum far from `Decimal`'s 96-bit range.
pub fn max_amount() -> Decimal {
    Decimal::from(1_000_000_000u64)
}

/// The highest price an instrument may have (a sanity bound that keeps price × quantity far
/// from overflow).
pub fn max_price() -> Decimal {
    Decimal::from(1_000_000_000u64)
}

/// A positive price with at most four decimal places, within the sanity bound.
pub fn is_valid_price(v: Decimal) -> bool {
    v > Decimal::ZERO && has_at_most_dp(v, PRICE_DP) && v <= max_price()
}

/// Rounds a cash amount to cents, half away from zero (the convention on contract notes).
pub fn round_cash(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(CASH_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// A holding's cost basis carries twelve decimal places: a partial sale takes its share of
/// the basis to that precision, so the units left keep their average cost (to cents, a sale
/// leaving 0.000001 units took the whole basis with it: an average cost of 0.0000).
pub const COST_DP: u32 = 12;

/// Rounds a share of a cost basis to [`COST_DP`] places, half away from zero.
pub fn round_cost(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(COST_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// Rounds a price to the platform's price precision.
pub fn round_price(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(PRICE_DP, RoundingStrategy::MidpointNearestEven)
}

/// True when `v` has no more than `dp` significant decimal places (trailing zeros ignored).
pub fn has_at_most_dp(v: Decimal, dp: u32) -> bool {
    v.normalize().scale() <= dp
}

/// A positive cash amount with at most two decimal places, within the sanity bound.
pub fn is_valid_cash_amount(v: Decimal) -> bool {
    v > Decimal::ZERO && has_at_most_dp(v, CASH_DP) && v <= max_amount()
}

/// A positive quantity with at most six decimal places, within the sanity bound.
pub fn is_valid_quantity(v: Decimal) -> bool {
    v > Decimal::ZERO && has_at_most_dp(v, QUANTITY_DP) && v <= max_amount()
}

/// Why `v` is no valid cash amount, naming the limit it broke (`None` when it is valid).
pub fn cash_amount_problem(v: Decimal) -> Option<String> {
    limit_problem(v, CASH_DP)
}

/// Why `v` is no valid quantity, naming the limit it broke (`None` when it is valid).
pub fn quantity_problem(v: Decimal) -> Option<String> {
    limit_problem(v, QUANTITY_DP)
}

fn limit_problem(v: Decimal, dp: u32) -> Option<String> {
    if v <= Decimal::ZERO {
        Some("must be positive".to_string())
    } else if !has_at_most_dp(v, dp) {
        Some(format!("must have at most {dp} decimal places"))
    } else if v > max_amount() {
        Some(format!("must be at most {}", max_amount()))
    } else {
        None
    }
}

/// Canonical text for JSON and digests: cash always with two places (`"10.50"`).
pub fn cash_string(v: Decimal) -> String {
    let mut r = round_cash(v);
    r.rescale(CASH_DP);
    r.to_string()
}

/// Text of a per-unit cost (`average_cost`): always `PRICE_DP` (4) decimal places, rounded
/// half to even (`"182.6000"`, `"182.5920"`), whatever the cost basis divides to.
pub fn price_string(v: Decimal) -> String {
    let mut r = round_price(v);
    r.rescale(PRICE_DP);
    r.to_string()
}

/// Canonical text for quantities and prices: no trailing zeros (`"3.5"`, `"12"`).
pub fn plain_string(v: Decimal) -> String {
    v.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn a_unit_cost_always_has_four_decimal_places() {
        assert_eq!(price_string(d("182.6")), "182.6000");
        assert_eq!(price_string(d("182.592")), "182.5920");
        assert_eq!(price_string(d("10")), "10.0000");
        assert_eq!(price_string(d("1.00005")), "1.0000");
        assert_eq!(price_string(d("1.00015")), "1.0002");
        assert_eq!(price_string(Decimal::ZERO), "0.0000");
    }

    #[test]
    fn rounding_rules() {
        assert_eq!(round_cash(d("1.005")), d("1.01"));
        assert_eq!(round_cash(d("-1.005")), d("-1.01"));
        assert_eq!(cash_string(d("10.5")), "10.50");
        assert_eq!(plain_string(d("3.500")), "3.5");
        assert!(has_at_most_dp(d("1.2300"), 2));
        assert!(!has_at_most_dp(d("1.234"), 2));
        assert!(is_valid_cash_amount(d("0.01")));
        assert!(!is_valid_cash_amount(d("0")));
        assert!(!is_valid_cash_amount(d("0.001")));
        assert!(!is_valid_quantity(d("-1")));
        assert!(is_valid_quantity(d("0.000001")));
    }
}
