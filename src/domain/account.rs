//! A user account: credentials, roles, sessions, MFA, KYC, screening, suitability and consents.
//!
//! Personal data (name, email, date of birth, country, KYC document and address, questionnaire
//! answers, the TOTP secret) reaches the account only as ciphertext sealed by the vault under the
//! user's data key; the account decides on the non-personal facts beside it (statuses, scores,
//! hashes). Password hashes (Argon2id), TOTP checks and screening are computed by the driver and
//! arrive in commands; the account decides what they mean and remembers what must be remembered
//! (spent refresh tokens, the last TOTP step, known devices).

use crate::domain::audit::AuditDraft;
use crate::domain::compliance::InvestorStatus;
use crate::domain::ctx::Ctx;
use crate::domain::entity::{Decision, Entity};
use crate::domain::ids::EntityKind;
use crate::domain::kyc::{DocumentType, KycStatus};
use crate::domain::screening::ScreeningStatus;
use crate::domain::suitability::RiskProfile;
use crate::domain::time::{Date, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Support,
    Compliance,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::User, Role::Support, Role::Compliance, Role::Admin];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn is_staff(self) -> bool {
        self != Role::User
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Support => "support",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub email: String,
    pub full_name: String,
    /// Staff accounts carry no date of birth or country.
    pub date_of_birth: Option<Date>,
    pub country: Option<String>,
}

/// Passwords that are refused even when long enough (a bundled list of common choices).
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");
pub const PASSWORD_MIN_CHARS: usize = 12;
/// Investors must be adults.
pub const MIN_AGE_YEARS: i32 = 18;

/// Why registration data is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("email is not a valid address")]
    InvalidEmail,
    #[error("full_name must be 1–200 characters without control characters")]
    InvalidName,
    #[error("date_of_birth must be a real date written YYYY-MM-DD")]
    InvalidDateOfBirth,
    #[error("date_of_birth is not plausible")]
    ImplausibleDateOfBirth,
    #[error("investors must be 18 or older")]
    Underage,
    #[error("country must be an ISO 3166-1 alpha-2 code such as \"GB\"")]
    InvalidCountry,
}

/// Lower-cases and trims an email and checks its shape (not deliverability).
pub fn normalise_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty() && local.len() <= 64 && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    ok.then_some(e)
}

/// Under 12 characters, on the bundled list of common passwords, or one repeated character.
pub fn is_weak_password(p: &str) -> bool {
    if p.chars().count() < PASSWORD_MIN_CHARS {
        return true;
    }
    let lower = p.to_lowercase();
    COMMON_PASSWORDS.lines().map(str::trim).any(|c| !c.is_empty() && c == lower) || p.chars().all(|c| c == p.chars().next().unwrap_or(' '))
}

/// Completed years between `dob` and `today`.
pub fn age_years(dob: Date, today: Date) -> i32 {
    today.year - dob.year - i32::from((today.month, today.day) < (dob.month, dob.day))
}

/// Checks and normalises what a person registers with; `today` comes from the caller's clock.
pub fn validate_registration(email: &str, full_name: &str, date_of_birth: &str, country: &str, today: Date) -> Result<Profile, ProfileError> {
    let email = normalise_email(email).ok_or(ProfileError::InvalidEmail)?;
    let name = full_name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ProfileError::InvalidName);
    }
    let dob = Date::parse(date_of_birth).ok_or(ProfileError::InvalidDateOfBirth)?;
    let age = age_years(dob, today);
    if dob >= today || age > 130 {
        return Err(ProfileError::ImplausibleDateOfBirth);
    }
    if age < MIN_AGE_YEARS {
        return Err(ProfileError::Underage);
    }
    if country.len() != 2 || !country.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err(ProfileError::InvalidCountry);
    }
    Ok(Profile {
        email,
        full_name: name.to_string(),
        date_of_birth: Some(dob),
        country: Some(country.to_string()),
    })
}

/// How many refresh-token families (sessions) one account keeps; the oldest is dropped beyond.
pub const SESSIONS_MAX: usize = 20;
/// How many spent refresh-token hashes a session remembers to recognise reuse.
pub const SPENT_REMEMBERED: usize = 32;
/// How many notifications an account keeps (newest).
pub const NOTIFICATIONS_MAX: usize = 100;
/// How many devices an account remembers.
pub const DEVICES_MAX: usize = 200;

pub type TokenHash = [u8; 32];

/// One refresh-token family: a login and every rotation that followed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the one refresh token of this family that may be used next.
    pub current: TokenHash,
    /// Hashes of spent tokens (newest last): presenting one is reuse and revokes the family.
    pub spent: Vec<TokenHash>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked: bool,
    /// Authentication methods of the login that opened it (RFC 8176: `pwd`, `otp`).
    pub amr: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    pub ai_profiling: bool,
    pub marketing: bool,
    pub analytics: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kyc {
    pub status: KycStatus,
    pub document_type: Option<DocumentType>,
    /// The sealed `KycDocument` (number and address).
    pub sealed_document: Option<Vec<u8>>,
    pub provider: String,
    pub decided_at: Timestamp,
}

/// A screening result as computed against one version of the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreeningOutcome {
    pub status: ScreeningStatus,
    /// The list entry (ent_num) that scored best, when not clear.
    pub entry: Option<String>,
    /// The best name score, formatted (e.g. "0.973"): not personal data.
    pub score: String,
    /// A digest naming the list version screened against.
    pub list_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreeningDecision {
    /// A compliance officer found the potential match is not this person.
    Clear,
    /// A compliance officer confirmed the match: the account stays blocked.
    Match,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screening {
    pub outcome: ScreeningOutcome,
    pub screened_at: Timestamp,
    /// A reviewer's resolution of `entry` (a later result naming another entry is not covered).
    pub resolution: Option<(String, ScreeningDecision, String)>,
}

impl Screening {
    /// The status the rules engine uses: a reviewed potential match counts as its resolution.
    pub fn effective(&self) -> ScreeningStatus {
        match (&self.resolution, self.outcome.status) {
            (_, ScreeningStatus::Clear) => ScreeningStatus::Clear,
            (Some((reviewer_entry, decision, _)), ScreeningStatus::PotentialMatch) if Some(reviewer_entry) == self.outcome.entry.as_ref() => match decision {
                ScreeningDecision::Clear => ScreeningStatus::Clear,
                ScreeningDecision::Match => ScreeningStatus::Match,
            },
            (_, s) => s,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suitability {
    pub profile: RiskProfile,
    /// The sealed questionnaire answers.
    pub sealed_answers: Vec<u8>,
    pub assessed_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totp {
    /// The sealed base32 secret.
    pub sealed_secret: Vec<u8>,
    pub confirmed: bool,
    /// The last time step accepted: a code is usable once.
    pub last_step: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub at: Timestamp,
    pub kind: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub user_id: String,
    /// The sealed `Profile`; empty until registered.
    pub sealed_profile: Vec<u8>,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub created_at: Timestamp,
    pub kyc: Option<Kyc>,
    pub screening: Option<Screening>,
    pub suitability: Option<Suitability>,
    pub consents: Consents,
    pub totp: Option<Totp>,
    pub sessions: BTreeMap<String, Session>,
    /// SHA-256 of device ids seen at login.
    pub devices: BTreeSet<TokenHash>,
    pub notifications: Vec<Notification>,
    /// GDPR erasure: requested (with its due time), then carried out.
    pub erasure: Option<Erasure>,
    /// The latest advice given (derived data: deleted when `ai_profiling` consent goes).
    pub advice: Option<AdviceRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdviceStatus {
    Published,
    PendingReview,
    Approved,
    Rejected,
    Accepted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdviceRecord {
    pub advice_id: String,
    pub generated_at: Timestamp,
    pub advice: crate::domain::advice::Advice,
    pub status: AdviceStatus,
    pub review_note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub requested_at: Timestamp,
    pub due_at: Timestamp,
    pub erased_at: Option<Timestamp>,
}

/// A new refresh-token family, created by the driver (which holds the token's plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSession {
    pub family: String,
    pub token_hash: TokenHash,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug)]
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
    /// Records freshly computed advice (unchanged advice keeps its id and status).
    IssueAdvice {
        advice: crate::domain::advice::Advice,
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
    AcceptAdvice {
        advice_id: String,
        replay: bool,
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

#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// No screening result names that entry (stale review).
    NothingToResolve,
    /// Erasure not requested, or its grace period has not ended.
    ErasureNotDue,
    /// No such advice (or not the latest).
    UnknownAdvice,
    /// The advice is not in a state that allows this (e.g. accepting advice under review).
    AdviceNotActionable(AdviceStatus),
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
            AccountRejection::NothingToResolve => "nothing_to_resolve",
            AccountRejection::ErasureNotDue => "erasure_not_due",
            AccountRejection::UnknownAdvice => "not_found",
            AccountRejection::AdviceNotActionable(AdviceStatus::PendingReview) => "advice_pending_review",
            AccountRejection::AdviceNotActionable(AdviceStatus::Rejected) => "advice_rejected",
            AccountRejection::AdviceNotActionable(_) => "advice_already_accepted",
        }
    }
}

fn consent_text(c: Consents) -> String {
    format!("ai_profiling={},marketing={},analytics={}", c.ai_profiling, c.marketing, c.analytics)
}

impl Account {
    /// Registered and not erased.
    pub fn exists(&self) -> bool {
        !self.sealed_profile.is_empty()
    }

    pub fn is_erased(&self) -> bool {
        self.erasure.is_some_and(|e| e.erased_at.is_some())
    }

    pub fn mfa_enabled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.confirmed)
    }

    pub fn kyc_status(&self) -> KycStatus {
        self.kyc.as_ref().map_or(KycStatus::Pending, |k| k.status)
    }

    /// The screening status shown and used: `None` before the first screening.
    pub fn screening_status(&self) -> Option<ScreeningStatus> {
        self.screening.as_ref().map(Screening::effective)
    }

    /// What the compliance rules engine needs to know about this investor.
    pub fn investor_status(&self) -> InvestorStatus {
        InvestorStatus {
            kyc: self.kyc_status(),
            // Never screened counts as unresolved: nobody trades unscreened.
            screening: self.screening_status().unwrap_or(ScreeningStatus::PotentialMatch),
            risk_score: self.suitability.as_ref().map(|s| s.profile.risk_score),
            complex_products_allowed: self.suitability.as_ref().is_some_and(|s| s.profile.complex_products_allowed),
        }
    }

    fn live_session(&self, family: &str, now: Timestamp) -> Option<&Session> {
        self.sessions.get(family).filter(|s| !s.revoked && s.expires_at > now)
    }

    fn decide_login(
        &self,
        device: Option<TokenHash>,
        totp_step: Option<u64>,
        session: NewSession,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        let mut amr = vec!["pwd".to_string()];
        if let Some(totp) = self.totp.as_ref().filter(|t| t.confirmed) {
            match totp_step {
                Some(step) if step > totp.last_step => amr.push("otp".into()),
                _ => {
                    let why = if totp_step.is_some() { "code_reused" } else { "code_missing_or_wrong" };
                    ctx.audit(AuditDraft::refused("security.login", "mfa_required").detail("why", why));
                    return Err(AccountRejection::MfaRequired);
                }
            }
        }
        let mut events = vec![AccountEvent::LoggedIn {
            family: session.family.clone(),
            token_hash: session.token_hash,
            expires_at: session.expires_at,
            amr: amr.clone(),
            totp_step: if self.mfa_enabled() { totp_step } else { None },
            at: ctx.now,
        }];
        let new_device = device.is_some_and(|d| !self.devices.contains(&d));
        if let (true, Some(device)) = (new_device, device) {
            let notification = Notification {
                id: ctx.new_id("ntf"),
                at: ctx.now,
                kind: "new_device".into(),
                message: "A sign-in from a device not seen before on this account. If it was not you, change your password.".into(),
            };
            ctx.audit(AuditDraft::ok("security.new_device").detail("device", hex::encode(&device[..8])));
            events.push(AccountEvent::DeviceAdded { device, notification });
        }
        ctx.audit(AuditDraft::ok("security.login").detail("session", &session.family).detail("amr", amr.join(",")));
        Ok(Decision::new(
            events,
            AccountReply::LoggedIn {
                roles: self.roles.clone(),
                amr,
                new_device,
            },
        ))
    }

    fn decide_refresh(
        &self,
        family: String,
        presented: TokenHash,
        next: TokenHash,
        expires_at: Timestamp,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        let Some(session) = self.live_session(&family, ctx.now) else {
            ctx.audit(AuditDraft::refused("security.refresh", "invalid_refresh_token").detail("session", &family));
            return Err(AccountRejection::InvalidRefreshToken);
        };
        if session.current == presented {
            ctx.audit(AuditDraft::ok("security.refresh").detail("session", &family));
            let reply = AccountReply::Refreshed {
                roles: self.roles.clone(),
                amr: session.amr.clone(),
            };
            return Ok(Decision::new(vec![AccountEvent::TokenRotated { family, next, expires_at }], reply));
        }
        if session.spent.contains(&presented) {
            ctx.audit(AuditDraft::refused("security.refresh_token_reused", "refresh_token_reused").detail("session", &family));
            return Ok(Decision::new(
                vec![AccountEvent::SessionRevoked {
                    family,
                    reason: "refresh_token_reused".into(),
                }],
                AccountReply::Reused,
            ));
        }
        ctx.audit(AuditDraft::refused("security.refresh", "invalid_refresh_token").detail("session", &family));
        Err(AccountRejection::InvalidRefreshToken)
    }

    fn decide_registered(&self, cmd: AccountCommand, ctx: &mut Ctx<'_>) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        let done = |events: Vec<AccountEvent>| Ok(Decision::new(events, AccountReply::Done));
        match cmd {
            AccountCommand::Register { .. } => {
                ctx.audit(AuditDraft::refused("account.register", "email_taken"));
                Err(AccountRejection::AlreadyRegistered)
            }
            AccountCommand::Login { device, totp_step, session } => self.decide_login(device, totp_step, session, ctx),
            AccountCommand::Refresh {
                family,
                presented,
                next,
                expires_at,
            } => self.decide_refresh(family, presented, next, expires_at, ctx),
            AccountCommand::Logout { family } => {
                ctx.audit(AuditDraft::ok("security.logout").detail("session", &family));
                if self.sessions.get(&family).is_some_and(|s| !s.revoked) {
                    done(vec![AccountEvent::SessionRevoked {
                        family,
                        reason: "logout".into(),
                    }])
                } else {
                    done(vec![])
                }
            }
            AccountCommand::EnrolTotp { sealed_secret } => {
                if self.mfa_enabled() {
                    ctx.audit(AuditDraft::refused("mfa.totp.enrol", "mfa_already_enabled"));
                    return Err(AccountRejection::MfaAlreadyEnabled);
                }
                ctx.audit(AuditDraft::ok("mfa.totp.enrol"));
                done(vec![AccountEvent::TotpEnrolled { sealed_secret }])
            }
            AccountCommand::ConfirmTotp { step } => match &self.totp {
                Some(t) if !t.confirmed && step > t.last_step => {
                    ctx.audit(AuditDraft::ok("mfa.totp.confirm"));
                    done(vec![AccountEvent::TotpConfirmed { step }])
                }
                _ => {
                    ctx.audit(AuditDraft::refused("mfa.totp.confirm", "invalid_code"));
                    Err(AccountRejection::InvalidCode)
                }
            },
            AccountCommand::SetConsents(consents) => {
                ctx.audit(
                    AuditDraft::ok("consent.change")
                        .detail("before", consent_text(self.consents))
                        .detail("after", consent_text(consents)),
                );
                let mut events = if consents == self.consents {
                    vec![]
                } else {
                    vec![AccountEvent::ConsentsChanged { consents, at: ctx.now }]
                };
                // Without ai_profiling consent no advice is kept about the person.
                if !consents.ai_profiling && self.advice.is_some() {
                    ctx.audit(AuditDraft::ok("advice.deleted").detail("reason", "ai_profiling consent withdrawn"));
                    events.push(AccountEvent::AdviceDeleted);
                }
                Ok(Decision::new(events, AccountReply::Consents(consents)))
            }
            AccountCommand::SubmitKyc {
                document_type,
                sealed_document,
                provider,
                status,
                screening,
            } => {
                if self.kyc_status() == KycStatus::Verified {
                    ctx.audit(AuditDraft::refused("kyc.submit", "kyc_already_verified"));
                    return Err(AccountRejection::KycAlreadyVerified);
                }
                ctx.audit(
                    AuditDraft::ok("kyc.submit")
                        .detail("document_type", document_type.as_str())
                        .detail("provider", &provider)
                        .detail("status", status.as_str()),
                );
                let mut events = vec![AccountEvent::KycDecided {
                    kyc: Kyc {
                        status,
                        document_type: Some(document_type),
                        sealed_document: Some(sealed_document),
                        provider,
                        decided_at: ctx.now,
                    },
                }];
                events.extend(self.screen(screening, ctx));
                done(events)
            }
            AccountCommand::Rescreen(outcome) => done(self.screen(outcome, ctx).into_iter().collect()),
            AccountCommand::ResolveScreening { entry, decision, note } => {
                let pending = self
                    .screening
                    .as_ref()
                    .is_some_and(|s| s.outcome.entry.as_deref() == Some(entry.as_str()) && s.outcome.status != ScreeningStatus::Clear);
                if !pending {
                    ctx.audit(AuditDraft::refused("screening.resolve", "nothing_to_resolve").detail("entry", &entry));
                    return Err(AccountRejection::NothingToResolve);
                }
                let d = match decision {
                    ScreeningDecision::Clear => "clear",
                    ScreeningDecision::Match => "match",
                };
                ctx.audit(AuditDraft::ok("screening.resolve").detail("entry", &entry).detail("decision", d));
                done(vec![AccountEvent::ScreeningResolved { entry, decision, note }])
            }
            AccountCommand::RequestErasure { due_at } => {
                if let Some(e) = self.erasure {
                    return Ok(Decision::replay(AccountReply::ErasureDue(e.due_at)));
                }
                ctx.audit(AuditDraft::ok("gdpr.erasure_requested").detail("due_at", due_at.to_rfc3339()));
                Ok(Decision::new(
                    vec![AccountEvent::ErasureRequested { at: ctx.now, due_at }],
                    AccountReply::ErasureDue(due_at),
                ))
            }
            AccountCommand::Erase { replayed } => match self.erasure {
                _ if replayed => {
                    ctx.audit(AuditDraft::ok("gdpr.erasure").detail("replayed", "true"));
                    let sessions = self.sessions.keys().cloned().collect();
                    let at = ctx.now;
                    let mut events = Vec::new();
                    if self.erasure.is_none() {
                        events.push(AccountEvent::ErasureRequested { at, due_at: at });
                    }
                    events.push(AccountEvent::Erased { at });
                    Ok(Decision::new(events, AccountReply::Erased { sessions }))
                }
                Some(e) if e.due_at <= ctx.now => {
                    ctx.audit(AuditDraft::ok("gdpr.erasure").detail("requested_at", e.requested_at.to_rfc3339()));
                    let sessions = self.sessions.iter().filter(|(_, s)| !s.revoked).map(|(f, _)| f.clone()).collect();
                    Ok(Decision::new(vec![AccountEvent::Erased { at: ctx.now }], AccountReply::Erased { sessions }))
                }
                _ => Err(AccountRejection::ErasureNotDue),
            },
            AccountCommand::IssueAdvice { advice } => {
                // Unchanged advice keeps its record. A person's decision sticks while the advice
                // stays materially the same (prices moving a little change its numbers, not
                // what it recommends): held advice is not queued again, approved advice stays
                // acceptable, rejected advice stays rejected with its note. Advice acted on
                // (accepted) is followed by new advice.
                if let Some(r) = self.advice.as_ref().filter(|r| match r.status {
                    AdviceStatus::Published => r.advice == advice,
                    AdviceStatus::PendingReview | AdviceStatus::Approved | AdviceStatus::Rejected => r.advice.materially_same(&advice),
                    AdviceStatus::Accepted => false,
                }) {
                    return Ok(Decision::replay(AccountReply::Advice(r.clone())));
                }
                let status = if advice.review_reason.is_some() {
                    AdviceStatus::PendingReview
                } else {
                    AdviceStatus::Published
                };
                let record = AdviceRecord {
                    advice_id: ctx.new_id("adv"),
                    generated_at: ctx.now,
                    advice,
                    status,
                    review_note: None,
                };
                ctx.audit(
                    AuditDraft::ok("advice.issued")
                        .detail("advice_id", &record.advice_id)
                        .detail("model_version", crate::domain::advice::MODEL_VERSION)
                        .detail("risk_band", record.advice.risk_band.as_str())
                        .detail("orders", record.advice.proposed_orders.len())
                        .detail("turnover", record.advice.turnover)
                        .detail("status", if status == AdviceStatus::Published { "published" } else { "pending_review" }),
                );
                Ok(Decision::new(
                    vec![AccountEvent::AdviceIssued { record: record.clone() }],
                    AccountReply::Advice(record),
                ))
            }
            AccountCommand::ReviewAdvice { advice_id, approve, note } => {
                let Some(r) = self.advice.as_ref().filter(|r| r.advice_id == advice_id) else {
                    return Err(AccountRejection::UnknownAdvice);
                };
                if r.status != AdviceStatus::PendingReview {
                    return Err(AccountRejection::AdviceNotActionable(r.status));
                }
                let status = if approve { AdviceStatus::Approved } else { AdviceStatus::Rejected };
                ctx.audit(
                    AuditDraft::ok("advice.reviewed")
                        .detail("advice_id", &advice_id)
                        .detail("decision", if approve { "approve" } else { "reject" })
                        .detail("note", &note),
                );
                let mut record = r.clone();
                record.status = status;
                record.review_note = Some(note.clone());
                Ok(Decision::new(
                    vec![AccountEvent::AdviceStatusChanged {
                        advice_id,
                        status,
                        note: Some(note),
                    }],
                    AccountReply::Advice(record),
                ))
            }
            AccountCommand::AcceptAdvice { advice_id, replay } => {
                let Some(r) = self.advice.as_ref().filter(|r| r.advice_id == advice_id) else {
                    return Err(AccountRejection::UnknownAdvice);
                };
                match r.status {
                    AdviceStatus::Accepted if replay => Ok(Decision::replay(AccountReply::Advice(r.clone()))),
                    AdviceStatus::Published | AdviceStatus::Approved => {
                        ctx.audit(AuditDraft::ok("advice.accepted").detail("advice_id", &advice_id));
                        let mut record = r.clone();
                        record.status = AdviceStatus::Accepted;
                        Ok(Decision::new(
                            vec![AccountEvent::AdviceStatusChanged {
                                advice_id,
                                status: AdviceStatus::Accepted,
                                note: None,
                            }],
                            AccountReply::Advice(record),
                        ))
                    }
                    other => Err(AccountRejection::AdviceNotActionable(other)),
                }
            }
            AccountCommand::PruneNotifications { before } => {
                let due = self.notifications.iter().any(|n| n.at < before);
                Ok(Decision::new(
                    if due { vec![AccountEvent::NotificationsPruned { before }] } else { vec![] },
                    AccountReply::Done,
                ))
            }
            AccountCommand::SetSuitability { profile, sealed_answers } => {
                ctx.audit(
                    AuditDraft::ok("suitability.assess")
                        .detail("risk_score", profile.risk_score)
                        .detail("risk_band", profile.risk_band.as_str())
                        .detail("complex_products_allowed", profile.complex_products_allowed),
                );
                done(vec![AccountEvent::SuitabilityAssessed {
                    suitability: Suitability {
                        profile,
                        sealed_answers,
                        assessed_at: ctx.now,
                    },
                }])
            }
        }
    }

    /// Records a screening result (audited, also when unchanged: it shows the check ran).
    fn screen(&self, outcome: ScreeningOutcome, ctx: &mut Ctx<'_>) -> Option<AccountEvent> {
        let status = serde_json::to_value(outcome.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut draft = AuditDraft::ok("screening.check")
            .detail("status", status)
            .detail("score", &outcome.score)
            .detail("list_version", &outcome.list_version);
        if let Some(e) = &outcome.entry {
            draft = draft.detail("entry", e);
        }
        ctx.audit(draft);
        let unchanged = self.screening.as_ref().is_some_and(|s| s.outcome == outcome);
        (!unchanged).then_some(AccountEvent::Screened { outcome, at: ctx.now })
    }
}

impl Entity for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Reply = AccountReply;
    type Rejection = AccountRejection;
    const KIND: EntityKind = EntityKind::Account;

    fn empty(id: &str) -> Self {
        Account {
            user_id: id.to_string(),
            sealed_profile: Vec::new(),
            password_hash: String::new(),
            roles: Vec::new(),
            created_at: Timestamp(0),
            kyc: None,
            screening: None,
            suitability: None,
            consents: Consents::default(),
            totp: None,
            sessions: BTreeMap::new(),
            devices: BTreeSet::new(),
            notifications: Vec::new(),
            erasure: None,
            advice: None,
        }
    }

    fn decide(&self, cmd: AccountCommand, ctx: &mut Ctx<'_>) -> Result<Decision<AccountEvent, AccountReply>, AccountRejection> {
        if self.is_erased() {
            // Erasure is final; carrying it out again is a no-op (the job may retry).
            return match cmd {
                AccountCommand::Erase { .. } => Ok(Decision::replay(AccountReply::Erased { sessions: Vec::new() })),
                _ => Err(AccountRejection::NotRegistered),
            };
        }
        if self.exists() {
            return self.decide_registered(cmd, ctx);
        }
        match cmd {
            AccountCommand::Register {
                sealed_profile,
                password_hash,
                roles,
                screening,
            } => {
                let role_list = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
                ctx.audit(AuditDraft::ok("account.register").detail("roles", role_list));
                let mut events = vec![AccountEvent::Registered {
                    sealed_profile,
                    password_hash,
                    roles,
                    at: ctx.now,
                }];
                events.extend(screening.and_then(|s| self.screen(s, ctx)));
                Ok(Decision::new(events, AccountReply::Done))
            }
            _ => Err(AccountRejection::NotRegistered),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Registered {
                sealed_profile,
                password_hash,
                roles,
                at,
            } => {
                self.sealed_profile = sealed_profile.clone();
                self.password_hash = password_hash.clone();
                self.roles = roles.clone();
                self.created_at = *at;
            }
            AccountEvent::LoggedIn {
                family,
                token_hash,
                expires_at,
                amr,
                totp_step,
                at,
            } => {
                // Expired and revoked sessions are pruned; beyond the cap the oldest goes.
                self.sessions.retain(|_, s| !s.revoked && s.expires_at > *at);
                while self.sessions.len() >= SESSIONS_MAX {
                    let oldest = self.sessions.iter().min_by_key(|(_, s)| s.created_at).map(|(f, _)| f.clone());
                    if let Some(f) = oldest {
                        self.sessions.remove(&f);
                    }
                }
                self.sessions.insert(
                    family.clone(),
                    Session {
                        current: *token_hash,
                        spent: Vec::new(),
                        created_at: *at,
                        expires_at: *expires_at,
                        revoked: false,
                        amr: amr.clone(),
                    },
                );
                if let (Some(step), Some(t)) = (totp_step, self.totp.as_mut()) {
                    t.last_step = t.last_step.max(*step);
                }
            }
            AccountEvent::DeviceAdded { device, notification } => {
                if self.devices.len() < DEVICES_MAX {
                    self.devices.insert(*device);
                }
                self.notifications.push(notification.clone());
                if self.notifications.len() > NOTIFICATIONS_MAX {
                    self.notifications.remove(0);
                }
            }
            AccountEvent::TokenRotated { family, next, expires_at } => {
                if let Some(s) = self.sessions.get_mut(family) {
                    let spent = std::mem::replace(&mut s.current, *next);
                    s.spent.push(spent);
                    if s.spent.len() > SPENT_REMEMBERED {
                        s.spent.remove(0);
                    }
                    s.expires_at = *expires_at;
                }
            }
            AccountEvent::SessionRevoked { family, .. } => {
                if let Some(s) = self.sessions.get_mut(family) {
                    s.revoked = true;
                }
            }
            AccountEvent::TotpEnrolled { sealed_secret } => {
                let last_step = self.totp.as_ref().map_or(0, |t| t.last_step);
                self.totp = Some(Totp {
                    sealed_secret: sealed_secret.clone(),
                    confirmed: false,
                    last_step,
                });
            }
            AccountEvent::TotpConfirmed { step } => {
                if let Some(t) = self.totp.as_mut() {
                    t.confirmed = true;
                    t.last_step = *step;
                }
            }
            AccountEvent::ConsentsChanged { consents, .. } => self.consents = *consents,
            AccountEvent::KycDecided { kyc } => self.kyc = Some(kyc.clone()),
            AccountEvent::Screened { outcome, at } => {
                let resolution = self.screening.take().and_then(|s| s.resolution);
                self.screening = Some(Screening {
                    outcome: outcome.clone(),
                    screened_at: *at,
                    resolution,
                });
            }
            AccountEvent::ScreeningResolved { entry, decision, note } => {
                if let Some(s) = self.screening.as_mut() {
                    s.resolution = Some((entry.clone(), *decision, note.clone()));
                }
            }
            AccountEvent::SuitabilityAssessed { suitability } => self.suitability = Some(suitability.clone()),
            AccountEvent::NotificationsPruned { before } => self.notifications.retain(|n| n.at >= *before),
            AccountEvent::AdviceIssued { record } => self.advice = Some(record.clone()),
            AccountEvent::AdviceStatusChanged { advice_id, status, note } => {
                if let Some(r) = self.advice.as_mut().filter(|r| &r.advice_id == advice_id) {
                    r.status = *status;
                    if note.is_some() {
                        r.review_note = note.clone();
                    }
                }
            }
            AccountEvent::AdviceDeleted => self.advice = None,
            AccountEvent::ErasureRequested { at, due_at } => {
                self.erasure = Some(Erasure {
                    requested_at: *at,
                    due_at: *due_at,
                    erased_at: None,
                })
            }
            AccountEvent::Erased { at } => {
                // Personal data and credentials go; what regulation keeps (the KYC outcome and
                // document type, screening, the risk profile) stays, identified only by the
                // random user id. The sealed copies in older journal entries become unreadable
                // when the user's data key is destroyed.
                self.sealed_profile.clear();
                self.password_hash.clear();
                self.totp = None;
                self.sessions.clear();
                self.devices.clear();
                self.notifications.clear();
                self.consents = Consents::default();
                self.advice = None;
                if let Some(k) = self.kyc.as_mut() {
                    k.sealed_document = None;
                }
                if let Some(s) = self.suitability.as_mut() {
                    s.sealed_answers.clear();
                }
                if let Some(s) = self.screening.as_mut() {
                    if let Some(r) = s.resolution.as_mut() {
                        r.2.clear();
                    }
                }
                if let Some(e) = self.erasure.as_mut() {
                    e.erased_at = Some(*at);
                }
            }
        }
    }

    fn check_invariants(&self) {
        if self.exists() {
            assert!(!self.roles.is_empty(), "account {} has no role", self.user_id);
            assert!(!self.password_hash.is_empty(), "account {} has no credential", self.user_id);
        }
        assert!(self.sessions.len() <= SESSIONS_MAX, "account {} keeps too many sessions", self.user_id);
        assert!(self.sessions.values().all(|s| s.spent.len() <= SPENT_REMEMBERED));
        assert!(self.notifications.len() <= NOTIFICATIONS_MAX);
        if let Some(s) = &self.suitability {
            assert!((1..=7).contains(&s.profile.risk_score), "risk score out of range");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ctx::Effect;
    use crate::domain::suitability::RiskBand;
    use rand::SeedableRng;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    /// decide → apply, as the actor does; returns the reply and the audit actions.
    fn run(a: &mut Account, cmd: AccountCommand, now: Timestamp) -> (Result<AccountReply, AccountRejection>, Vec<String>) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut ctx = Ctx::new(now, &mut rng);
        let r = a.decide(cmd, &mut ctx).map(|d| {
            for e in &d.events {
                a.apply(e);
            }
            a.check_invariants();
            d.reply
        });
        let actions = ctx
            .take_effects()
            .into_iter()
            .map(|Effect::Audit(d)| format!("{}:{}", d.action, d.outcome.as_text()))
            .collect();
        (r, actions)
    }

    fn registered() -> Account {
        let mut a = Account::empty("usr_1");
        let cmd = AccountCommand::Register {
            sealed_profile: vec![1, 2, 3],
            password_hash: "$argon2id$…".into(),
            roles: vec![Role::User],
            screening: None,
        };
        assert_eq!(run(&mut a, cmd, T0).0, Ok(AccountReply::Done));
        a
    }

    fn login(a: &mut Account, family: &str, token: u8, step: Option<u64>, device: Option<u8>) -> Result<AccountReply, AccountRejection> {
        let cmd = AccountCommand::Login {
            device: device.map(|d| [d; 32]),
            totp_step: step,
            session: NewSession {
                family: family.into(),
                token_hash: [token; 32],
                expires_at: Timestamp(T0.millis() + 1_000_000),
            },
        };
        run(a, cmd, T0).0
    }

    fn refresh(a: &mut Account, family: &str, presented: u8, next: u8) -> (Result<AccountReply, AccountRejection>, Vec<String>) {
        let cmd = AccountCommand::Refresh {
            family: family.into(),
            presented: [presented; 32],
            next: [next; 32],
            expires_at: Timestamp(T0.millis() + 2_000_000),
        };
        run(a, cmd, T0)
    }

    #[test]
    fn refresh_tokens_rotate_and_reuse_revokes_only_that_family() {
        let mut a = registered();
        assert!(matches!(login(&mut a, "ses_a", 1, None, None), Ok(AccountReply::LoggedIn { .. })));
        assert!(matches!(login(&mut a, "ses_b", 9, None, None), Ok(AccountReply::LoggedIn { .. })));
        assert!(matches!(refresh(&mut a, "ses_a", 1, 2).0, Ok(AccountReply::Refreshed { .. })));
        assert!(matches!(refresh(&mut a, "ses_a", 2, 3).0, Ok(AccountReply::Refreshed { .. })));
        // An unknown token of a live family is refused without revoking it.
        assert_eq!(refresh(&mut a, "ses_a", 77, 4).0, Err(AccountRejection::InvalidRefreshToken));
        assert!(!a.sessions["ses_a"].revoked);
        // A spent one is reuse: the family is revoked and says so in the audit trail.
        let (r, audit) = refresh(&mut a, "ses_a", 1, 5);
        assert_eq!(r, Ok(AccountReply::Reused));
        assert!(audit.iter().any(|x| x.starts_with("security.refresh_token_reused")), "{audit:?}");
        assert!(a.sessions["ses_a"].revoked);
        // Even the newest token of that family is dead now; the other family is untouched.
        assert_eq!(refresh(&mut a, "ses_a", 3, 6).0, Err(AccountRejection::InvalidRefreshToken));
        assert!(matches!(refresh(&mut a, "ses_b", 9, 10).0, Ok(AccountReply::Refreshed { .. })));
        // Logout revokes; expired sessions refuse.
        assert_eq!(run(&mut a, AccountCommand::Logout { family: "ses_b".into() }, T0).0, Ok(AccountReply::Done));
        assert_eq!(refresh(&mut a, "ses_b", 10, 11).0, Err(AccountRejection::InvalidRefreshToken));
        login(&mut a, "ses_c", 20, None, None).unwrap();
        let late = AccountCommand::Refresh {
            family: "ses_c".into(),
            presented: [20; 32],
            next: [21; 32],
            expires_at: Timestamp(T0.millis() + 9_000_000),
        };
        assert_eq!(
            run(&mut a, late, Timestamp(T0.millis() + 1_000_001)).0,
            Err(AccountRejection::InvalidRefreshToken)
        );
    }

    #[test]
    fn sessions_and_devices_are_bounded() {
        let mut a = registered();
        for i in 0..(SESSIONS_MAX + 5) {
            login(&mut a, &format!("ses_{i}"), i as u8, None, Some(i as u8)).unwrap();
        }
        assert_eq!(a.sessions.len(), SESSIONS_MAX);
        assert_eq!(a.notifications.len(), SESSIONS_MAX + 5);
        // A known device adds no notification.
        login(&mut a, "ses_again", 200, None, Some(3)).unwrap();
        assert_eq!(a.notifications.len(), SESSIONS_MAX + 5);
    }

    #[test]
    fn totp_codes_work_once() {
        let mut a = registered();
        // Confirmation needs a pending enrolment.
        assert_eq!(run(&mut a, AccountCommand::ConfirmTotp { step: 5 }, T0).0, Err(AccountRejection::InvalidCode));
        run(&mut a, AccountCommand::EnrolTotp { sealed_secret: vec![9] }, T0).0.unwrap();
        assert!(!a.mfa_enabled());
        // Before confirmation the password alone still logs in.
        assert!(login(&mut a, "ses_0", 1, None, None).is_ok());
        run(&mut a, AccountCommand::ConfirmTotp { step: 100 }, T0).0.unwrap();
        assert!(a.mfa_enabled());
        assert_eq!(
            run(&mut a, AccountCommand::EnrolTotp { sealed_secret: vec![8] }, T0).0,
            Err(AccountRejection::MfaAlreadyEnabled)
        );
        assert_eq!(login(&mut a, "ses_1", 1, None, None), Err(AccountRejection::MfaRequired));
        // The confirmation's step is spent; a later one logs in once.
        assert_eq!(login(&mut a, "ses_1", 1, Some(100), None), Err(AccountRejection::MfaRequired));
        match login(&mut a, "ses_1", 1, Some(101), None) {
            Ok(AccountReply::LoggedIn { amr, .. }) => assert_eq!(amr, vec!["pwd".to_string(), "otp".to_string()]),
            other => panic!("{other:?}"),
        }
        assert_eq!(login(&mut a, "ses_2", 2, Some(101), None), Err(AccountRejection::MfaRequired));
    }

    fn outcome(status: ScreeningStatus, entry: Option<&str>) -> ScreeningOutcome {
        ScreeningOutcome {
            status,
            entry: entry.map(str::to_string),
            score: "0.95".into(),
            list_version: "v1".into(),
        }
    }

    #[test]
    fn screening_resolution_covers_only_the_reviewed_entry() {
        let mut a = registered();
        assert_eq!(a.investor_status().screening, ScreeningStatus::PotentialMatch, "unscreened is not clear");
        run(&mut a, AccountCommand::Rescreen(outcome(ScreeningStatus::PotentialMatch, Some("9001"))), T0)
            .0
            .unwrap();
        assert_eq!(a.screening_status(), Some(ScreeningStatus::PotentialMatch));
        let resolve = |entry: &str, decision| AccountCommand::ResolveScreening {
            entry: entry.into(),
            decision,
            note: "checked the passport".into(),
        };
        assert_eq!(
            run(&mut a, resolve("9002", ScreeningDecision::Clear), T0).0,
            Err(AccountRejection::NothingToResolve)
        );
        run(&mut a, resolve("9001", ScreeningDecision::Clear), T0).0.unwrap();
        assert_eq!(a.screening_status(), Some(ScreeningStatus::Clear));
        // A re-screen naming the same entry keeps the clearance; another entry needs a new review.
        run(&mut a, AccountCommand::Rescreen(outcome(ScreeningStatus::PotentialMatch, Some("9001"))), T0)
            .0
            .unwrap();
        assert_eq!(a.screening_status(), Some(ScreeningStatus::Clear));
        run(&mut a, AccountCommand::Rescreen(outcome(ScreeningStatus::PotentialMatch, Some("9007"))), T0)
            .0
            .unwrap();
        assert_eq!(a.screening_status(), Some(ScreeningStatus::PotentialMatch));
        run(&mut a, resolve("9007", ScreeningDecision::Match), T0).0.unwrap();
        assert_eq!(a.investor_status().screening, ScreeningStatus::Match);
        // A full match is never turned clear by a potential-match review.
        run(&mut a, AccountCommand::Rescreen(outcome(ScreeningStatus::Match, Some("9001"))), T0)
            .0
            .unwrap();
        assert_eq!(a.screening_status(), Some(ScreeningStatus::Match));
    }

    #[test]
    fn erasure_happens_only_when_due_and_is_final() {
        let mut a = registered();
        login(&mut a, "ses_a", 1, None, Some(1)).unwrap();
        assert_eq!(
            run(&mut a, AccountCommand::Erase { replayed: false }, T0).0,
            Err(AccountRejection::ErasureNotDue)
        );
        let due = Timestamp(T0.millis() + 1000);
        assert_eq!(
            run(&mut a, AccountCommand::RequestErasure { due_at: due }, T0).0,
            Ok(AccountReply::ErasureDue(due))
        );
        // Asking again keeps the first date.
        let later = Timestamp(T0.millis() + 5000);
        assert_eq!(
            run(&mut a, AccountCommand::RequestErasure { due_at: later }, T0).0,
            Ok(AccountReply::ErasureDue(due))
        );
        assert_eq!(
            run(&mut a, AccountCommand::Erase { replayed: false }, T0).0,
            Err(AccountRejection::ErasureNotDue)
        );
        let (r, audit) = run(&mut a, AccountCommand::Erase { replayed: false }, due);
        assert_eq!(
            r,
            Ok(AccountReply::Erased {
                sessions: vec!["ses_a".into()]
            })
        );
        assert_eq!(audit, vec!["gdpr.erasure:ok".to_string()]);
        assert!(!a.exists() && a.is_erased());
        assert!(a.sealed_profile.is_empty() && a.password_hash.is_empty() && a.sessions.is_empty() && a.devices.is_empty());
        // Final: nothing else is accepted; erasing again is a harmless no-op.
        assert_eq!(login(&mut a, "ses_b", 2, None, None), Err(AccountRejection::NotRegistered));
        assert_eq!(
            run(&mut a, AccountCommand::Erase { replayed: false }, due).0,
            Ok(AccountReply::Erased { sessions: vec![] })
        );
    }

    #[test]
    fn retention_prunes_old_notifications_only() {
        let mut a = registered();
        login(&mut a, "ses_a", 1, None, Some(1)).unwrap();
        let later = Timestamp(T0.millis() + 90 * 86_400_000);
        run(
            &mut a,
            AccountCommand::Login {
                device: Some([2; 32]),
                totp_step: None,
                session: NewSession {
                    family: "ses_b".into(),
                    token_hash: [2; 32],
                    expires_at: Timestamp(later.millis() + 1000),
                },
            },
            later,
        )
        .0
        .unwrap();
        assert_eq!(a.notifications.len(), 2);
        // Simulated time: the retention boundary falls between the two.
        run(
            &mut a,
            AccountCommand::PruneNotifications {
                before: Timestamp(T0.millis() + 1),
            },
            later,
        )
        .0
        .unwrap();
        assert_eq!(a.notifications.len(), 1);
        assert_eq!(a.notifications[0].at, later);
        // Nothing due: no event.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut ctx = Ctx::new(later, &mut rng);
        assert!(a.decide(AccountCommand::PruneNotifications { before: T0 }, &mut ctx).unwrap().events.is_empty());
    }

    #[test]
    fn kyc_consents_and_suitability_feed_the_rules_engine() {
        let mut a = registered();
        let (r, audit) = run(
            &mut a,
            AccountCommand::SetConsents(Consents {
                ai_profiling: true,
                marketing: false,
                analytics: true,
            }),
            T0,
        );
        assert!(matches!(r, Ok(AccountReply::Consents(_))));
        assert_eq!(audit, vec!["consent.change:ok".to_string()]);
        let submit = |status| AccountCommand::SubmitKyc {
            document_type: DocumentType::Passport,
            sealed_document: vec![4],
            provider: "sandbox".into(),
            status,
            screening: outcome(ScreeningStatus::Clear, None),
        };
        run(&mut a, submit(KycStatus::Review), T0).0.unwrap();
        assert_eq!(a.investor_status().kyc, KycStatus::Review);
        run(&mut a, submit(KycStatus::Verified), T0).0.unwrap();
        assert_eq!(run(&mut a, submit(KycStatus::Verified), T0).0, Err(AccountRejection::KycAlreadyVerified));
        let profile = RiskProfile {
            risk_score: 4,
            risk_band: RiskBand::Balanced,
            complex_products_allowed: false,
        };
        run(
            &mut a,
            AccountCommand::SetSuitability {
                profile,
                sealed_answers: vec![5],
            },
            T0,
        )
        .0
        .unwrap();
        assert_eq!(a.investor_status(), InvestorStatus::onboarded(4, false));
    }

    #[test]
    fn email_and_password_rules() {
        assert_eq!(normalise_email("  Ada@Example.COM "), Some("ada@example.com".into()));
        assert_eq!(normalise_email("no-at-sign"), None);
        assert_eq!(normalise_email("a@b"), None);
        assert_eq!(normalise_email("a b@example.com"), None);
        assert!(is_weak_password("short"));
        assert!(is_weak_password("password1234"));
        assert!(is_weak_password("aaaaaaaaaaaaaaaa"));
        assert!(!is_weak_password("correct horse battery staple"));
    }

    #[test]
    fn registration_rules() {
        let today = Date::parse("2026-11-22").unwrap();
        let ok = validate_registration("A@example.com", " Ada ", "1990-12-10", "GB", today).unwrap();
        assert_eq!((ok.email.as_str(), ok.full_name.as_str()), ("a@example.com", "Ada"));
        assert_eq!(
            validate_registration("a@example.com", "Ada", "2008-11-23", "GB", today),
            Err(ProfileError::Underage)
        );
        assert!(validate_registration("a@example.com", "Ada", "2008-11-22", "GB", today).is_ok());
        assert_eq!(
            validate_registration("a@example.com", "Ada", "2030-01-01", "GB", today),
            Err(ProfileError::ImplausibleDateOfBirth)
        );
        assert_eq!(
            validate_registration("a@example.com", "Ada", "1990-02-30", "GB", today),
            Err(ProfileError::InvalidDateOfBirth)
        );
        assert_eq!(
            validate_registration("a@example.com", "", "1990-01-01", "GB", today),
            Err(ProfileError::InvalidName)
        );
        assert_eq!(
            validate_registration("a@example.com", "Ada", "1990-01-01", "gb", today),
            Err(ProfileError::InvalidCountry)
        );
    }
}
