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

mod apply;
mod commands;
mod countries;
mod decide;
mod registration;
mod sessions;
#[cfg(test)]
mod tests;

pub use commands::*;
pub use registration::*;

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
}

impl Entity for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Reply = AccountReply;
    type Rejection = AccountRejection;
    type Query = crate::domain::queries::AccountQuery;
    type View = crate::domain::queries::AccountView;
    const KIND: EntityKind = EntityKind::Account;

    fn query(&self, query: &Self::Query) -> Self::View {
        query.run(self)
    }

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
        self.apply_event(event);
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
