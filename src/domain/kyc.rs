//! Know-your-customer: what a person submits, its validation, and the decision of the built-in
//! sandbox verification provider (API.md): a document number of `000000000` is rejected, one
//! starting `REVIEW` goes to review, any other well-formed number is verified.
//!
//! The provider itself is an adapter (`crate::adapters::kyc::KycProvider`) so a real one can be
//! plugged in; the account records whatever outcome the provider gave.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    Passport,
    NationalId,
    DrivingLicence,
}

impl DocumentType {
    pub fn parse(s: &str) -> Option<DocumentType> {
        match s {
            "passport" => Some(DocumentType::Passport),
            "national_id" => Some(DocumentType::NationalId),
            "driving_licence" => Some(DocumentType::DrivingLicence),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentType::Passport => "passport",
            DocumentType::NationalId => "national_id",
            DocumentType::DrivingLicence => "driving_licence",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    /// Nothing submitted yet.
    Pending,
    Verified,
    Rejected,
    /// The provider wants a person to look at it.
    Review,
}

impl KycStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KycStatus::Pending => "pending",
            KycStatus::Verified => "verified",
            KycStatus::Rejected => "rejected",
            KycStatus::Review => "review",
        }
    }
}

/// A checked KYC submission (personal data: it is sealed before it is stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KycDocument {
    pub document_type: DocumentType,
    pub document_number: String,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KycInputError {
    #[error("document_type must be one of passport, national_id, driving_licence")]
    DocumentType,
    #[error("document_number must be 5–20 letters or digits")]
    DocumentNumber,
    #[error("address must be 5–500 characters without control or bidirectional-control characters")]
    Address,
}

/// Normalises and checks a submission: the number is upper-cased with spaces and dashes removed.
pub fn validate_document(document_type: &str, document_number: &str, address: &str) -> Result<KycDocument, KycInputError> {
    let document_type = DocumentType::parse(document_type).ok_or(KycInputError::DocumentType)?;
    let number: String = document_number.chars().filter(|c| *c != ' ' && *c != '-').collect::<String>().to_uppercase();
    if !(5..=20).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KycInputError::DocumentNumber);
    }
    let address = address.trim();
    let n = address.chars().count();
    let hidden = |c: char| c.is_control() || crate::domain::account::is_bidi_control(c);
    if !(5..=500).contains(&n) || address.chars().any(hidden) || !crate::domain::account::has_visible_text(address) {
        return Err(KycInputError::Address);
    }
    Ok(KycDocument {
        document_type,
        document_number: number,
        address: address.to_string(),
    })
}

/// The sandbox provider's documented decision for a well-formed document.
pub fn sandbox_decision(doc: &KycDocument) -> KycStatus {
    if doc.document_number == "000000000" {
        KycStatus::Rejected
    } else if doc.document_number.starts_with("REVIEW") {
        KycStatus::Review
    } else {
        KycStatus::Verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_shows_what_it_says() {
        let ok = validate_document("passport", "P1234567", " 1 Main Street ").unwrap();
        assert_eq!(ok.address, "1 Main Street");
        for bad in ["1 Main \u{202E}teertS", "\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}", "1 Main\u{0007}Street"] {
            assert_eq!(validate_document("passport", "P1234567", bad), Err(KycInputError::Address), "{bad:?}");
        }
    }

    #[test]
    fn sandbox_test_values() {
        let d = |n: &str| validate_document("passport", n, "1 High Street, London").unwrap();
        assert_eq!(sandbox_decision(&d("000000000")), KycStatus::Rejected);
        assert_eq!(sandbox_decision(&d("REVIEW123")), KycStatus::Review);
        assert_eq!(sandbox_decision(&d("review-42")), KycStatus::Review);
        assert_eq!(sandbox_decision(&d("123456789")), KycStatus::Verified);
        assert_eq!(sandbox_decision(&d("GB 1234 567")), KycStatus::Verified);
    }

    #[test]
    fn malformed_submissions() {
        assert_eq!(validate_document("visa", "123456789", "1 High Street"), Err(KycInputError::DocumentType));
        assert_eq!(validate_document("passport", "12", "1 High Street"), Err(KycInputError::DocumentNumber));
        assert_eq!(
            validate_document("passport", "12345678901234567890X", "1 High Street"),
            Err(KycInputError::DocumentNumber)
        );
        assert_eq!(validate_document("passport", "1234/5678", "1 High Street"), Err(KycInputError::DocumentNumber));
        assert_eq!(validate_document("passport", "123456789", "x"), Err(KycInputError::Address));
        assert_eq!(validate_document("passport", "123456789", "1 High\u{0}Street"), Err(KycInputError::Address));
    }
}
