//! An independent statement of the portfolio rules (API.md, DESIGN.md §3): given the state before
//! a fresh request, what must the answer be? The simulator compares every decision with it.
//!
//! Rounding is taken from `domain::money` (the one place that defines it); everything else is
//! restated here rather than called, so a change to the rules in `src/domain` shows up as a
//! disagreement.

use crate::workload::Request;
use moneta::domain::compliance::{ComplianceRefusal, InvestorStatus};
use moneta::domain::fees::FeeSchedule;
use moneta::domain::kyc::KycStatus;
use moneta::domain::money::round_cash;
use moneta::domain::portfolio::{OrderQuote, Portfolio, PortfolioRejection, Side};
use moneta::domain::screening::ScreeningStatus;
use rust_decimal::Decimal;

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
