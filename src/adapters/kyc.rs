//! Identity verification (KYC) providers.

use crate::domain::kyc::{sandbox_decision, KycDocument, KycStatus};
use std::future::Future;
use std::pin::Pin;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the verification provider is unavailable: {0}")]
    Unavailable(String),
}

/// Verifies a person's identity document. A real provider calls out over the network; the
/// outcome is recorded on the account, which the compliance rules engine reads.
pub trait KycProvider: Send + Sync {
    /// A short name recorded with each decision (audit trail).
    fn name(&self) -> &'static str;
    fn verify<'a>(&'a self, user_id: &'a str, document: &'a KycDocument) -> Pin<Box<dyn Future<Output = Result<KycStatus, ProviderError>> + Send + 'a>>;
}

/// The built-in sandbox with the documented test values (API.md).
pub struct SandboxKyc;

impl KycProvider for SandboxKyc {
    fn name(&self) -> &'static str {
        "sandbox"
    }
    fn verify<'a>(&'a self, _user_id: &'a str, document: &'a KycDocument) -> Pin<Box<dyn Future<Output = Result<KycStatus, ProviderError>> + Send + 'a>> {
        Box::pin(async move { Ok(sandbox_decision(document)) })
    }
}

/// The provider named by `[compliance] kyc_provider`; config validation admits only the names
/// built in here (today `sandbox`).
pub fn from_config(_name: &str) -> Box<dyn KycProvider> {
    Box::new(SandboxKyc)
}
