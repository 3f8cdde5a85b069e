//! The account's envelope: commands, events, replies and rejections (all serialisable).

use super::*;

/// A new refresh-token family, created by the driver (which holds the token's plaintext).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSession {
    pub family: String,
    pub token_hash: TokenHash,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AccountCommand {
    Register {
        sealed_profile: Vec<u8>,
        password_hash: String,
        roles: Vec<Role>,
        screening: Option<ScreeningOutcome>,
    },
    /// A password check passed; `totp_step` is the time step of a valid code, when one was sent.
    Login {
        device: Option<TokenHash>,
        totp_step: Option<u64>,
        session: NewSession,
    },
    Refresh {
        family: String,
        presented: TokenHash,
        next: TokenHash,
        expires_at: Timestamp,
    },
    Logout {
        family: String,
    },
    EnrolTotp {
        sealed_secret: Vec<u8>,
    },
    /// A code of the pending secret was valid for `step`.
    ConfirmTotp {
        step: u64,
    },
    SetConsents(Consents),
    SubmitKyc {
        document_type: DocumentType,
        sealed_document: Vec<u8>,
        provider: String,
        status: KycStatus,
        screening: ScreeningOutcome,
    },
    Rescreen(ScreeningOutcome),
    /// A compliance officer decides identity documents the provider sent to review.
    ReviewKyc {
        approve: bool,
        note: String,
    },
    ResolveScreening {
        entry: String,
        decision: ScreeningDecision,
        note: String,
    },
    SetSuitability {
        profile: RiskProfile,
        sealed_answers: Vec<u8>,
    },
    /// The holder asks to be erased; carried out at `due_at` (after the grace period).
    RequestErasure {
        due_at: Timestamp,
    },
    /// Carries out a due erasure: personal data, credentials and sessions go; the decision
    /// facts regulation needs (KYC outcome, screening, risk profile) stay, without identity.
    /// `replayed`: an erasure carried out before, replayed after a restore from a backup older
    /// than it — due whatever this (older) state says.
    Erase {
        replayed: bool,
    },
    /// Retention: notifications from before this time go.
    PruneNotifications {
        before: Timestamp,
    },
    /// Records freshly computed advice (unchanged advice keeps its id and status). `held`:
    /// the holdings it was computed from; advice decided on is kept only while its orders fit
    /// them.
    IssueAdvice {
        advice: crate::domain::advice::Advice,
        held: std::collections::BTreeMap<String, rust_decimal::Decimal>,
    },
    /// A compliance officer's decision on advice held for review.
    ReviewAdvice {
        advice_id: String,
        approve: bool,
        note: String,
    },
    /// The investor accepted the advice (its orders go through the normal order path).
    /// `replay`: the client's idempotency key already accepted it, so accepted advice is
    /// answered again; with a new key, accepted advice cannot be acted on a second time.
    /// `held`: the investor's holdings now; advice whose sales no longer fit them is refused
    /// (`AdviceOutdated`), not accepted, and is replaced the next time advice is computed.
    AcceptAdvice {
        advice_id: String,
        replay: bool,
        held: std::collections::BTreeMap<String, rust_decimal::Decimal>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Registered {
        sealed_profile: Vec<u8>,
        password_hash: String,
        roles: Vec<Role>,
        at: Timestamp,
    },
    LoggedIn {
        family: String,
        token_hash: TokenHash,
        expires_at: Timestamp,
        amr: Vec<String>,
        totp_step: Option<u64>,
        at: Timestamp,
    },
    DeviceAdded {
        device: TokenHash,
        notification: Notification,
    },
    TokenRotated {
        family: String,
        next: TokenHash,
        expires_at: Timestamp,
    },
    SessionRevoked {
        family: String,
        reason: String,
    },
    TotpEnrolled {
        sealed_secret: Vec<u8>,
    },
    TotpConfirmed {
        step: u64,
    },
    ConsentsChanged {
        consents: Consents,
        at: Timestamp,
    },
    KycDecided {
        kyc: Kyc,
    },
    Screened {
        outcome: ScreeningOutcome,
        at: Timestamp,
    },
    ScreeningResolved {
        entry: String,
        decision: ScreeningDecision,
        note: String,
    },
    SuitabilityAssessed {
        suitability: Suitability,
    },
    ErasureRequested {
        at: Timestamp,
        due_at: Timestamp,
    },
    Erased {
        at: Timestamp,
    },
    NotificationsPruned {
        before: Timestamp,
    },
    AdviceIssued {
        record: AdviceRecord,
    },
    AdviceStatusChanged {
        advice_id: String,
        status: AdviceStatus,
        note: Option<String>,
    },
    AdviceDeleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountReply {
    Done,
    LoggedIn {
        roles: Vec<Role>,
        amr: Vec<String>,
        new_device: bool,
    },
    Refreshed {
        roles: Vec<Role>,
        amr: Vec<String>,
    },
    /// A spent token was presented: the family is now revoked (answer 401 refresh_token_reused).
    Reused,
    Consents(Consents),
    /// The erasure is (or was already) scheduled for this time.
    ErasureDue(Timestamp),
    Advice(AdviceRecord),
    /// Erased now, or earlier; the sessions that were open (their access tokens must stop).
    Erased {
        sessions: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountRejection {
    AlreadyRegistered,
    NotRegistered,
    /// TOTP is enabled and no valid, unused code came with the login.
    MfaRequired,
    /// The refresh token is unknown, expired or of a revoked family.
    InvalidRefreshToken,
    MfaAlreadyEnabled,
    /// The code is wrong, already used, or there is no pending enrolment.
    InvalidCode,
    KycAlreadyVerified,
    /// The documents sent are with a compliance officer: another submission waits for the
    /// decision (it would otherwise go round the review).
    KycInReview,
    /// No identity documents wait for a review.
    KycNotInReview,
    /// No screening result names that entry (stale review).
    NothingToResolve,
    /// Erasure not requested, or its grace period has not ended.
    ErasureNotDue,
    /// No such advice (or not the latest).
    UnknownAdvice,
    /// The advice is not in a state that allows this (e.g. accepting advice under review).
    AdviceNotActionable(AdviceStatus),
    /// The advice sells more than the investor holds now: their trades since took it.
    AdviceOutdated,
    /// A full match (name and date of birth on the list) is not cleared by a review: only a
    /// potential match is a reviewer's to clear.
    MatchNotClearable,
}

impl AccountRejection {
    pub fn code(&self) -> &'static str {
        match self {
            AccountRejection::AlreadyRegistered => "email_taken",
            AccountRejection::NotRegistered => "not_found",
            AccountRejection::MfaRequired => "mfa_required",
            AccountRejection::InvalidRefreshToken => "invalid_refresh_token",
            AccountRejection::MfaAlreadyEnabled => "mfa_already_enabled",
            AccountRejection::InvalidCode => "invalid_code",
            AccountRejection::KycAlreadyVerified => "kyc_already_verified",
            AccountRejection::KycInReview => "kyc_in_review",
            AccountRejection::KycNotInReview => "kyc_not_in_review",
            AccountRejection::NothingToResolve => "nothing_to_resolve",
            AccountRejection::ErasureNotDue => "erasure_not_due",
            AccountRejection::UnknownAdvice => "not_found",
            AccountRejection::AdviceNotActionable(AdviceStatus::PendingReview) => "advice_pending_review",
            AccountRejection::AdviceNotActionable(AdviceStatus::Rejected) => "advice_rejected",
            AccountRejection::AdviceNotActionable(_) => "advice_already_accepted",
            AccountRejection::AdviceOutdated => "advice_outdated",
            AccountRejection::MatchNotClearable => "match_not_clearable",
        }
    }
}
