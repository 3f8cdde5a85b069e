//! The compliance rules engine: the one place that decides whether an investor may place an
//! order (and, with the advice work, receive a recommendation) for a product.
//!
//! Rules run in this order and the first that fails is the answer (API.md codes):
//! 1. KYC verified — `kyc_required`;
//! 2. screening neither `match` nor an unresolved `potential_match` — `sanctions_block`;
//! 3. the suitability questionnaire answered — `suitability_required`;
//! 4. a complex product (derivative, leveraged ETF) only when the appropriateness assessment
//!    allows complex products — `not_appropriate`;
//! 5. the product's risk class (1–7) within the investor's risk score — `unsuitable`.
//!
//! Funds and holdings are checked afterwards by the portfolio. Rules 4 and 5 apply to what adds
//! exposure (buys, advice): a sell only reduces it, and MiFID II does not trap a client in a
//! position they may no longer buy — but a sanctioned or unverified client may not sell either
//! (their assets are frozen until KYC and screening are settled).

use crate::domain::kyc::KycStatus;
use crate::domain::screening::ScreeningStatus;
use serde::{Deserialize, Serialize};

/// What the rules need to know about the investor, taken from their account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvestorStatus {
    pub kyc: KycStatus,
    /// The effective screening result (a reviewed potential match counts as its resolution).
    pub screening: ScreeningStatus,
    /// The suitability risk score 1–7, when the questionnaire has been answered.
    pub risk_score: Option<u8>,
    pub complex_products_allowed: bool,
}

impl InvestorStatus {
    /// A fully onboarded investor with the given profile (tests and the simulator use it).
    pub fn onboarded(risk_score: u8, complex_products_allowed: bool) -> InvestorStatus {
        InvestorStatus {
            kyc: KycStatus::Verified,
            screening: ScreeningStatus::Clear,
            risk_score: Some(risk_score),
            complex_products_allowed,
        }
    }
}

/// What the rules need to know about the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductFacts {
    pub complex: bool,
    /// 1 (lowest) to 7.
    pub risk_class: u8,
}

/// What the investor wants to do with the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A buy: adds exposure.
    Acquire,
    /// A sell: reduces exposure.
    Dispose,
    /// A recommendation shown to the investor.
    Advise,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComplianceRefusal {
    KycRequired,
    SanctionsBlock,
    SuitabilityRequired,
    NotAppropriate,
    Unsuitable,
}

impl ComplianceRefusal {
    pub fn code(self) -> &'static str {
        match self {
            ComplianceRefusal::KycRequired => "kyc_required",
            ComplianceRefusal::SanctionsBlock => "sanctions_block",
            ComplianceRefusal::SuitabilityRequired => "suitability_required",
            ComplianceRefusal::NotAppropriate => "not_appropriate",
            ComplianceRefusal::Unsuitable => "unsuitable",
        }
    }
    /// The rule in words, for the audit record and the problem detail.
    pub fn reason(self) -> &'static str {
        match self {
            ComplianceRefusal::KycRequired => "identity verification (KYC) is not complete",
            ComplianceRefusal::SanctionsBlock => "sanctions screening has a match or an unresolved potential match",
            ComplianceRefusal::SuitabilityRequired => "the suitability questionnaire has not been answered",
            ComplianceRefusal::NotAppropriate => "complex products are not appropriate for this investor's knowledge and experience",
            ComplianceRefusal::Unsuitable => "the product's risk class exceeds the investor's risk score",
        }
    }
}

/// Whether an investor may take cash out: not while sanctions screening has a match or an
/// unresolved potential match (their funds are frozen until a reviewer settles it). KYC is
/// not needed: money deposited before identity was verified goes back to its owner.
pub fn check_withdrawal(investor: &InvestorStatus) -> Result<(), ComplianceRefusal> {
    if investor.screening != ScreeningStatus::Clear {
        return Err(ComplianceRefusal::SanctionsBlock);
    }
    Ok(())
}

/// Applies the rules in order; `Ok` means the compliance rules allow it.
pub fn check(investor: &InvestorStatus, product: ProductFacts, purpose: Purpose) -> Result<(), ComplianceRefusal> {
    if investor.kyc != KycStatus::Verified {
        return Err(ComplianceRefusal::KycRequired);
    }
    if investor.screening != ScreeningStatus::Clear {
        return Err(ComplianceRefusal::SanctionsBlock);
    }
    let Some(score) = investor.risk_score else {
        return Err(ComplianceRefusal::SuitabilityRequired);
    };
    if purpose == Purpose::Dispose {
        return Ok(());
    }
    if product.complex && !investor.complex_products_allowed {
        return Err(ComplianceRefusal::NotAppropriate);
    }
    if product.risk_class > score {
        return Err(ComplianceRefusal::Unsuitable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: ProductFacts = ProductFacts { complex: false, risk_class: 3 };
    const LEVERAGED: ProductFacts = ProductFacts { complex: true, risk_class: 7 };

    #[test]
    fn every_rule_in_order() {
        let ok = InvestorStatus::onboarded(5, false);
        assert_eq!(check(&ok, PLAIN, Purpose::Acquire), Ok(()));
        // Each failing rule shadows the ones after it.
        let mut i = InvestorStatus {
            kyc: KycStatus::Review,
            screening: ScreeningStatus::Match,
            risk_score: None,
            complex_products_allowed: false,
        };
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Err(ComplianceRefusal::KycRequired));
        i.kyc = KycStatus::Verified;
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Err(ComplianceRefusal::SanctionsBlock));
        i.screening = ScreeningStatus::PotentialMatch;
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Err(ComplianceRefusal::SanctionsBlock));
        i.screening = ScreeningStatus::Clear;
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Err(ComplianceRefusal::SuitabilityRequired));
        i.risk_score = Some(6);
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Err(ComplianceRefusal::NotAppropriate));
        i.complex_products_allowed = true;
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Err(ComplianceRefusal::Unsuitable));
        assert_eq!(check(&i, LEVERAGED, Purpose::Advise), Err(ComplianceRefusal::Unsuitable));
        i.risk_score = Some(7);
        assert_eq!(check(&i, LEVERAGED, Purpose::Acquire), Ok(()));
    }

    #[test]
    fn sells_only_need_kyc_screening_and_questionnaire() {
        let low = InvestorStatus::onboarded(1, false);
        assert_eq!(check(&low, LEVERAGED, Purpose::Dispose), Ok(()));
        let mut frozen = low.clone();
        frozen.screening = ScreeningStatus::Match;
        assert_eq!(check(&frozen, PLAIN, Purpose::Dispose), Err(ComplianceRefusal::SanctionsBlock));
        let unverified = InvestorStatus {
            kyc: KycStatus::Pending,
            ..low
        };
        assert_eq!(check(&unverified, PLAIN, Purpose::Dispose), Err(ComplianceRefusal::KycRequired));
    }
}
