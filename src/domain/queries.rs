//! The named reads of every entity kind. Each is a small serialisable value, so a read can be
//! sent to whichever node hosts the entity (the entity envelope), and its answer is computed
//! from the state by the domain — never a closure shipped from the caller.

use crate::domain::account::{Account, AdviceRecord, Notification, Role};
use crate::domain::compliance::InvestorStatus;
use crate::domain::email_index::EmailIndex;
use crate::domain::entity::Answer;
use crate::domain::fingerprint::accepted_order as order_fingerprint;
use crate::domain::instrument::{Instrument, Quote};
use crate::domain::kyc::KycStatus;
use crate::domain::portfolio::{Holding, Portfolio, PortfolioRejection, PortfolioReply};
use crate::domain::screening::ScreeningStatus;
use crate::domain::suitability::RiskProfile;
use crate::domain::time::{Date, Timestamp};
use crate::domain::valuation::Positions;
use crate::entity_queries;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

macro_rules! query {
    ($(#[$m:meta])* $name:ident on $entity:ty => $out:ty, |$q:ident, $s:ident| $body:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct $name;
        query!(@answer $name, $entity, $out, $q, $s, $body);
    };
    ($(#[$m:meta])* $name:ident { $($f:ident : $t:ty),* $(,)? } on $entity:ty => $out:ty, |$q:ident, $s:ident| $body:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $(pub $f: $t),*
        }
        query!(@answer $name, $entity, $out, $q, $s, $body);
    };
    (@answer $name:ident, $entity:ty, $out:ty, $q:ident, $s:ident, $body:expr) => {
        impl Answer<$entity> for $name {
            type Output = $out;
            #[allow(unused_variables)]
            fn answer(&self, $s: &$entity) -> $out {
                let $q = self;
                $body
            }
        }
    };
}

// ---- account ----

/// What a login needs to check a password and a second factor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFacts {
    pub user_id: String,
    pub password_hash: String,
    /// The sealed TOTP secret, when TOTP is confirmed.
    pub mfa: Option<Vec<u8>>,
}

/// What erasure keeps for the regulator, read just before the person's key goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegulatoryFacts {
    pub exists: bool,
    pub sealed_profile: Vec<u8>,
    pub sealed_document: Option<Vec<u8>>,
    /// Erasure was requested and its due time is not after `now`.
    pub due: bool,
}

/// What advice is computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdviceInputs {
    pub ai_profiling: bool,
    pub investor: InvestorStatus,
    pub profile: Option<RiskProfile>,
}

query!(/// The account is registered.
    Exists on Account => bool, |q, a| a.exists());
query!(/// The session family is unknown or revoked (its access tokens must stop).
    SessionRevoked { family: String } on Account => bool, |q, a| a.sessions.get(&q.family).is_none_or(|s| s.revoked));
query!(/// The whole state of a registered account (exports, the holder's own view).
    Registered on Account => Option<Account>, |q, a| a.exists().then(|| a.clone()));
query!(/// The whole state of a registered investor (role `user`), for support's limited view.
    Investor on Account => Option<Account>, |q, a| (a.exists() && a.roles.contains(&Role::User)).then(|| a.clone()));
query!(/// The sealed profile of a registered investor (role `user`).
    InvestorProfile on Account => Option<Vec<u8>>, |q, a| (a.exists() && a.roles.contains(&Role::User)).then(|| a.sealed_profile.clone()));
query!(Login on Account => Option<LoginFacts>, |q, a| a.exists().then(|| LoginFacts {
    user_id: a.user_id.clone(),
    password_hash: a.password_hash.clone(),
    mfa: a.totp.as_ref().filter(|t| t.confirmed).map(|t| t.sealed_secret.clone()),
}));
query!(Notifications on Account => Vec<Notification>, |q, a| a.notifications.clone());
query!(/// The sealed profile (empty until registered).
    SealedProfile on Account => Vec<u8>, |q, a| a.sealed_profile.clone());
query!(/// The sealed profile when registered.
    RegisteredProfile on Account => Option<Vec<u8>>, |q, a| a.exists().then(|| a.sealed_profile.clone()));
query!(/// Whether TOTP is on, and the sealed profile (to label the enrolment).
    MfaSetup on Account => (bool, Vec<u8>), |q, a| (a.mfa_enabled(), a.sealed_profile.clone()));
query!(/// The sealed secret of an enrolment not yet confirmed.
    PendingTotp on Account => Option<Vec<u8>>, |q, a| a.totp.as_ref().filter(|t| !t.confirmed).map(|t| t.sealed_secret.clone()));
query!(/// KYC, screening and suitability as the compliance rules see them.
    InvestorFacts on Account => InvestorStatus, |q, a| a.investor_status());
query!(OnboardingStatus on Account => (KycStatus, Option<ScreeningStatus>), |q, a| (a.kyc_status(), a.screening_status()));
query!(ScreeningState on Account => Option<ScreeningStatus>, |q, a| a.screening_status());
query!(/// The list entry the last screening matched.
    ScreeningEntry on Account => Option<String>, |q, a| a.screening.as_ref().and_then(|s| s.outcome.entry.clone()));
query!(ErasureDue on Account => Option<Timestamp>, |q, a| a.erasure.map(|e| e.due_at));
query!(ErasureRequested on Account => bool, |q, a| a.erasure.is_some());
query!(Regulatory { now: Timestamp } on Account => RegulatoryFacts, |q, a| RegulatoryFacts {
    exists: a.exists(),
    sealed_profile: a.sealed_profile.clone(),
    sealed_document: a.kyc.as_ref().and_then(|k| k.sealed_document.clone()),
    due: a.erasure.is_some_and(|e| e.due_at <= q.now),
});
query!(ForAdvice on Account => AdviceInputs, |q, a| AdviceInputs {
    ai_profiling: a.consents.ai_profiling,
    investor: a.investor_status(),
    profile: a.suitability.as_ref().map(|s| s.profile.clone()),
});
query!(/// Advice is kept about the person (and may be kept: the consent is there).
    HasAdvice on Account => bool, |q, a| a.consents.ai_profiling && a.advice.is_some());
query!(CurrentAdvice on Account => Option<AdviceRecord>, |q, a| a.advice.clone());

entity_queries!(
    Account,
    AccountQuery,
    AccountView {
        Exists,
        SessionRevoked,
        Registered,
        Investor,
        InvestorProfile,
        Login,
        Notifications,
        SealedProfile,
        RegisteredProfile,
        MfaSetup,
        PendingTotp,
        InvestorFacts,
        OnboardingStatus,
        ScreeningState,
        ScreeningEntry,
        ErasureDue,
        ErasureRequested,
        Regulatory,
        ForAdvice,
        HasAdvice,
        CurrentAdvice,
    }
);

// ---- portfolio ----

query!(Cash on Portfolio => Decimal, |q, p| p.cash);
query!(Holdings on Portfolio => (Decimal, BTreeMap<String, Holding>), |q, p| (p.cash, p.holdings.clone()));
query!(/// Positions for a valuation.
    PositionsOf on Portfolio => Positions, |q, p| Positions::of(p));
query!(/// A day on or after `date` is already closed.
    ClosedThrough { date: Date } on Portfolio => bool, |q, p| p.last_close.is_some_and(|c| c.date >= q.date));
query!(/// What an accept of advice `advice_id` under idempotency key `key` already did (its
    /// orders' replies, in order), or that the key was used for another request; and the
    /// quantities held now (advice that sells more is refused, not accepted).
    AcceptedOrders { key: String, advice_id: String } on Portfolio => Result<(Vec<PortfolioReply>, BTreeMap<String, Decimal>), PortfolioRejection>,
    |q, p| p
        .remembered_series(&q.key, |i| order_fingerprint(&q.advice_id, i))
        .map(|replies| (replies, p.holdings.iter().map(|(s, h)| (s.clone(), h.quantity)).collect())));
query!(/// The whole state (tests and diagnostics).
    PortfolioState on Portfolio => Portfolio, |q, p| p.clone());

entity_queries!(
    Portfolio,
    PortfolioQuery,
    PortfolioView {
        Cash,
        Holdings,
        PositionsOf,
        ClosedThrough,
        AcceptedOrders,
        PortfolioState
    }
);

// ---- instrument ----

query!(CurrentQuote on Instrument => Option<Quote>, |q, i| i.quote());
query!(/// The closing price of the day that starts at `day_start`, else the latest price.
    CloseOn { day_start: Timestamp } on Instrument => Option<Decimal>,
    |q, i| i.history.close_on(q.day_start).or((i.price > Decimal::ZERO).then_some(i.price)));
query!(/// The price as it stood at `at` (a statement's close time), else the latest price.
    PriceAt { at: Timestamp } on Instrument => Option<Decimal>,
    |q, i| i.history.price_at(q.at).or((i.price > Decimal::ZERO).then_some(i.price)));
query!(PriceRange { from: Timestamp, to: Timestamp } on Instrument => Vec<(Timestamp, Decimal)>, |q, i| i.history.range(q.from, q.to));
query!(/// Prices as they were known over `[from, to]` (each bar at its end).
    PricesKnown { from: Timestamp, to: Timestamp } on Instrument => Vec<(Timestamp, Decimal)>, |q, i| i.history.known(q.from, q.to, i.as_of));

entity_queries!(
    Instrument,
    InstrumentQuery,
    InstrumentView {
        CurrentQuote,
        CloseOn,
        PriceRange,
        PricesKnown,
        PriceAt
    }
);

// ---- email index ----

query!(Owner on EmailIndex => Option<String>, |q, e| e.owner.clone());

query!(
    /// Seconds until the email may try to log in again (failed logins counted cluster-wide).
    LoginLocked { now: Timestamp, allowance: u32, window_ms: i64 } on EmailIndex => Option<u64>,
    |q, e| e.locked_for(q.now, q.allowance, q.window_ms)
);
entity_queries!(EmailIndex, EmailIndexQuery, EmailIndexView { Owner, LoginLocked });
