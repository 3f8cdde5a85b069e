//! An independent statement of the portfolio rules (API.md, DESIGN.md §3): given the state before
//! a fresh request, what must the answer be? The simulator compares every decision with it. And
//! the advice engine's rules: what every piece of advice must satisfy.
//!
//! Rounding is taken from `domain::money` (the one place that defines it); everything else is
//! restated here rather than called, so a change to the rules in `src/domain` shows up as a
//! disagreement.

use crate::workload::Request;
use moneta::domain::advice::{Advice, AdvicePolicy, Product};
use moneta::domain::compliance::{ComplianceRefusal, InvestorStatus};
use moneta::domain::fees::FeeSchedule;
use moneta::domain::kyc::KycStatus;
use moneta::domain::money::round_cash;
use moneta::domain::portfolio::{OrderQuote, Portfolio, PortfolioRejection, Side};
use moneta::domain::screening::ScreeningStatus;
use moneta::domain::suitability::RiskProfile;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

fn limit() -> Decimal {
    Decimal::from(1_000_000_000u64)
}

fn dp(v: Decimal) -> u32 {
    v.normalize().scale()
}

fn valid_cash(v: Decimal) -> bool {
    v > Decimal::ZERO && dp(v) <= 2 && v <= limit()
}

fn valid_quantity(v: Decimal) -> bool {
    v > Decimal::ZERO && dp(v) <= 6 && v <= limit()
}

/// `max(minimum, round_cash(notional × bps / 10 000))`.
pub fn fee(fees: &FeeSchedule, notional: Decimal) -> Decimal {
    round_cash(notional * fees.commission_bps / Decimal::from(10_000)).max(fees.minimum)
}

/// The expected answer to a request whose key the portfolio does not remember: `Ok` is one
/// event that executes it; `Err(r)` is a business refusal — one `Refused` event carrying `r`,
/// the reply `Refused(r)`, no money moved, and the key remembered so that a retry replays the
/// refusal. (A key reused for another request never reaches this: it is refused before.)
pub fn predict(p: &Portfolio, investor: &InvestorStatus, req: &Request, quote: Option<&OrderQuote>, fees: &FeeSchedule) -> Result<(), PortfolioRejection> {
    use PortfolioRejection::*;
    match req {
        Request::Deposit { amount } => {
            if !valid_cash(*amount) {
                return Err(InvalidAmount);
            }
            Ok(())
        }
        Request::Withdraw { amount } => {
            if !valid_cash(*amount) {
                return Err(InvalidAmount);
            }
            // A sanctions match or an unresolved potential match freezes the cash; KYC is not
            // needed to take it back.
            if investor.screening != ScreeningStatus::Clear {
                return Err(Compliance(ComplianceRefusal::SanctionsBlock));
            }
            if *amount > p.cash {
                return Err(InsufficientFunds);
            }
            Ok(())
        }
        Request::Order { symbol, side, quantity } => {
            if !valid_quantity(*quantity) {
                return Err(InvalidQuantity);
            }
            let Some(quote) = quote else { return Err(UnknownInstrument) };
            // The compliance rules (API.md order codes), in their order: verified identity,
            // clear screening, questionnaire answered; for buys, appropriateness of complex
            // products and the risk class within the risk score.
            if investor.kyc != KycStatus::Verified {
                return Err(Compliance(ComplianceRefusal::KycRequired));
            }
            if investor.screening != ScreeningStatus::Clear {
                return Err(Compliance(ComplianceRefusal::SanctionsBlock));
            }
            let Some(score) = investor.risk_score else {
                return Err(Compliance(ComplianceRefusal::SuitabilityRequired));
            };
            if *side == Side::Buy {
                if quote.product.complex && !investor.complex_products_allowed {
                    return Err(Compliance(ComplianceRefusal::NotAppropriate));
                }
                if quote.product.risk_class > score {
                    return Err(Compliance(ComplianceRefusal::Unsuitable));
                }
            }
            // The notional is bounded like every other amount (money::max_amount).
            let notional = match quantity.checked_mul(quote.price) {
                Some(n) if n <= limit() => round_cash(n),
                _ => return Err(InvalidQuantity),
            };
            if notional <= Decimal::ZERO {
                return Err(InvalidQuantity);
            }
            let fee = fee(fees, notional);
            match side {
                Side::Buy if notional + fee > p.cash => Err(InsufficientFunds),
                Side::Buy => Ok(()),
                Side::Sell => {
                    let held = p.holdings.get(symbol).map(|h| h.quantity).unwrap_or_default();
                    if held < *quantity {
                        return Err(InsufficientHoldings);
                    }
                    if p.cash + notional - fee < Decimal::ZERO {
                        return Err(InsufficientFunds);
                    }
                    Ok(())
                }
            }
        }
    }
}

/// The advice engine's rules (`domain::advice` module docs), restated: what any advice for this
/// profile, cash and holdings must satisfy. `Err` says which rule it breaks.
///
/// This check found an engine defect, since fixed: buys scaled down to the cash by
/// `available / wanted` could still exceed it, as a minimum fee does not scale and notionals
/// round to cents — the portfolio then refused the buy that no longer fit. Any shortfall now
/// fails the run.
pub fn check_advice(
    profile: &RiskProfile,
    universe: &[Product],
    cash: Decimal,
    holdings: &BTreeMap<String, Decimal>,
    fees: &FeeSchedule,
    policy: &AdvicePolicy,
    advice: &Advice,
) -> Result<(), String> {
    let product = |s: &str| universe.iter().find(|p| p.symbol == s);
    // Advise-purpose eligibility: within the risk score, complex only when appropriate.
    let may_hold = |p: &Product| p.price > Decimal::ZERO && p.risk_class <= profile.risk_score && (!p.kind.is_complex() || profile.complex_products_allowed);
    if advice.risk_band != profile.risk_band {
        return Err(format!("advice for band {:?}, the profile is {:?}", advice.risk_band, profile.risk_band));
    }
    // 1. The model: only products the investor may hold, the weights summing to the invested share.
    let mut weights = Decimal::ZERO;
    for (symbol, w) in &advice.target_allocation {
        match product(symbol) {
            Some(p) if may_hold(p) && *w > Decimal::ZERO => weights += w,
            _ => return Err(format!("target {symbol} at {w} is not a product this investor may be advised to hold")),
        }
    }
    let investable = Decimal::ONE - policy.cash_buffer;
    let slack = Decimal::new(1, 6) * Decimal::from(advice.target_allocation.len().max(1));
    if universe.iter().any(may_hold) && (weights - investable).abs() > slack {
        return Err(format!("target weights sum to {weights}, not {investable}"));
    }
    let target = |s: &str| advice.target_allocation.iter().find(|(t, _)| t == s).map(|(_, w)| *w);
    let value = |s: &str, q: Decimal| product(s).map(|p| round_cash(p.price * q)).unwrap_or_default();
    let total = cash + holdings.iter().map(|(s, q)| value(s, *q)).sum::<Decimal>();

    // 2. The orders: sells first, each symbol once, whole ticks of 0.0001, at least the minimum
    // trade, sells within the holding, buys only of the model, and only where the position drifted.
    let mut seen = std::collections::BTreeSet::new();
    let mut buying = false;
    let [mut bought, mut sold, mut buy_cost, mut sell_proceeds] = [Decimal::ZERO; 4];
    for o in &advice.proposed_orders {
        let Some(p) = product(&o.symbol) else {
            return Err(format!("order for {} which is not listed", o.symbol));
        };
        if !seen.insert(o.symbol.as_str()) {
            return Err(format!("two orders for {}", o.symbol));
        }
        if o.quantity <= Decimal::ZERO || dp(o.quantity) > 4 {
            return Err(format!("order quantity {} for {}", o.quantity, o.symbol));
        }
        let notional = round_cash(o.quantity * p.price);
        if notional < policy.min_trade {
            return Err(format!("order of {notional} for {} is below the minimum trade {}", o.symbol, policy.min_trade));
        }
        let held = holdings.get(&o.symbol).copied().unwrap_or_default();
        let goal = target(&o.symbol).unwrap_or_default();
        let outside_model = goal.is_zero() && held > Decimal::ZERO;
        let drift = if total > Decimal::ZERO {
            (value(&o.symbol, held) / total - goal).abs()
        } else {
            Decimal::ZERO
        };
        // The 5/25 band: within the absolute threshold and within the relative share of the target.
        if !outside_model && drift <= policy.drift_threshold && drift <= goal * policy.relative_drift_threshold {
            return Err(format!("order for {} whose weight is within the drift band ({drift})", o.symbol));
        }
        match o.side {
            Side::Sell => {
                if buying {
                    return Err("a sale after a purchase".into());
                }
                if o.quantity > held {
                    return Err(format!("sells {} of {} but holds {held}", o.quantity, o.symbol));
                }
                if outside_model && o.quantity != held {
                    return Err(format!("{} is outside the model but only {} of {held} is sold", o.symbol, o.quantity));
                }
                sold += notional;
                sell_proceeds += notional - fee(fees, notional);
            }
            Side::Buy => {
                buying = true;
                if goal.is_zero() {
                    return Err(format!("buys {} which is not in the model", o.symbol));
                }
                bought += notional;
                buy_cost += notional + fee(fees, notional);
            }
        }
    }
    // A product outside the model is sold whole (unless that is below the minimum trade).
    for (symbol, held) in holdings {
        let outside = target(symbol).is_none() && *held > Decimal::ZERO && product(symbol).is_some();
        if outside && value(symbol, *held) >= policy.min_trade && !seen.contains(symbol.as_str()) {
            return Err(format!("{symbol} is outside the model but is not sold"));
        }
    }
    // 3. Affordable: the buys and every fee within the cash there is after the sales.
    if buy_cost > cash + sell_proceeds {
        return Err(format!(
            "buys cost {buy_cost} with fees, but only {} is available after the sales",
            cash + sell_proceeds
        ));
    }
    // 4. Turnover (the smaller of purchases and sales over the value) and the review flag.
    let turnover = if total > Decimal::ZERO {
        (bought.min(sold) / total).round_dp(4)
    } else {
        Decimal::ZERO
    };
    if advice.turnover != turnover {
        return Err(format!("turnover {} but the orders turn over {turnover}", advice.turnover));
    }
    if advice.review_reason.is_some() != (turnover > policy.review_turnover) {
        return Err(format!(
            "turnover {turnover} against the review threshold {}, review reason {:?}",
            policy.review_turnover, advice.review_reason
        ));
    }
    Ok(())
}
