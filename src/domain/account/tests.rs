//! Unit tests of the account entity.

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
    // The spent token presented again is reuse still, and changes nothing more.
    assert_eq!(refresh(&mut a, "ses_a", 2, 7).0, Ok(AccountReply::Reused));
    assert!(a.sessions["ses_a"].revoked);
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
    // The same decision again is refused (nothing left to resolve), not recorded twice.
    let (again, audit) = run(&mut a, resolve("9001", ScreeningDecision::Clear), T0);
    assert_eq!(again, Err(AccountRejection::NothingToResolve));
    assert_eq!(audit, vec!["screening.resolve:refused:nothing_to_resolve".to_string()]);
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
    // Nor by a review of the match itself: refused (it was recorded and changed nothing), and
    // confirming it is a decision like any other.
    let (refused, audit) = run(&mut a, resolve("9001", ScreeningDecision::Clear), T0);
    assert_eq!(refused, Err(AccountRejection::MatchNotClearable));
    assert_eq!(audit, vec!["screening.resolve:refused:match_not_clearable".to_string()]);
    assert_eq!(a.screening_status(), Some(ScreeningStatus::Match));
    run(&mut a, resolve("9001", ScreeningDecision::Match), T0).0.unwrap();
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
    // Documents in review are a compliance officer's to decide: another submission does not
    // go round them.
    assert_eq!(run(&mut a, submit(KycStatus::Verified), T0).0, Err(AccountRejection::KycInReview));
    assert_eq!(a.investor_status().kyc, KycStatus::Review);
    let review = |approve| AccountCommand::ReviewKyc {
        approve,
        note: "documents checked by hand".into(),
    };
    run(&mut a, review(false), T0).0.unwrap();
    assert_eq!(a.investor_status().kyc, KycStatus::Rejected);
    assert_eq!(run(&mut a, review(true), T0).0, Err(AccountRejection::KycNotInReview), "decided already");
    // Rejected: new documents may be sent; to review again, then approved.
    run(&mut a, submit(KycStatus::Review), T0).0.unwrap();
    run(&mut a, review(true), T0).0.unwrap();
    assert_eq!(a.investor_status().kyc, KycStatus::Verified);
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
    // One address, one spelling: compatibility forms (fullwidth) and case fold to the same.
    assert_eq!(normalise_email("ａｌｉｃｅ@example.com"), Some("alice@example.com".into()));
    assert_eq!(normalise_email("ＡＬＩＣＥ@ＥＸＡＭＰＬＥ.com"), Some("alice@example.com".into()));
    assert_eq!(normalise_email("ali\u{202E}ce@example.com"), None, "no bidi controls");
    // Invisible characters survive NFKC: each would be a second account for one address.
    for hidden in [
        '\u{200B}',
        '\u{200C}',
        '\u{200D}',
        '\u{00AD}',
        '\u{2060}',
        '\u{FEFF}',
        '\u{E0041}',
        '\u{FE0F}',
        '\u{2800}',
        '\u{FFFC}',
    ] {
        assert_eq!(normalise_email(&format!("fuzz1{hidden}@example.com")), None, "{:?}", hidden);
    }
    // A name shows something; joiners inside one are kept (some scripts are written with them).
    for blank in ["\u{200B}", "\u{200F}", " \u{00AD} ", "\u{FEFF}", "\u{E0041}", "\u{2800}"] {
        assert!(!is_plain_name(blank), "{blank:?}");
    }
    assert!(is_plain_name("Mehr\u{200C}dad"));
    assert!(!is_plain_name("Ada \u{202E}Lovelace"));
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
    // Bidirectional controls would make a name display as other text than it is.
    for c in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
        let name = format!("Ada{c}ecalevoL");
        assert!(validate_registration("a@example.com", &name, "1990-12-10", "GB", today).is_err(), "{c:?}");
    }
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
    // Two capital letters that name no country are refused too.
    for code in ["XX", "ZZ", "UK", "EU"] {
        assert_eq!(
            validate_registration("a@example.com", "Ada", "1990-01-01", code, today),
            Err(ProfileError::InvalidCountry),
            "{code}"
        );
    }
}

#[test]
fn advice_decided_on_stands_only_while_its_sales_fit_what_is_held() {
    use crate::domain::advice::{Advice, ProposedOrder};
    use crate::domain::portfolio::Side;
    use rust_decimal::Decimal;
    use std::collections::BTreeMap;
    let held = |q: i64| BTreeMap::from([("ACME".to_string(), Decimal::from(q))]);
    let advice = |sell: i64| Advice {
        risk_band: RiskBand::Conservative,
        target_allocation: vec![("BOND".into(), Decimal::new(98, 2))],
        proposed_orders: vec![
            ProposedOrder {
                symbol: "ACME".into(),
                side: Side::Sell,
                quantity: Decimal::from(sell),
            },
            ProposedOrder {
                symbol: "BOND".into(),
                side: Side::Buy,
                quantity: Decimal::from(40),
            },
        ],
        rationale: "rebalance".into(),
        turnover: Decimal::ONE,
        review_reason: Some("turnover".into()),
    };
    let mut a = registered();
    let issue = |a: &mut Account, sell: i64, q: i64, at: i64| match run(
        a,
        AccountCommand::IssueAdvice {
            advice: advice(sell),
            held: held(q),
        },
        Timestamp(T0.millis() + at),
    )
    .0
    {
        Ok(AccountReply::Advice(r)) => r,
        other => panic!("issuing advice answered {other:?}"),
    };
    let first = issue(&mut a, 50, 50, 0);
    assert_eq!(first.status, AdviceStatus::PendingReview);
    let review = AccountCommand::ReviewAdvice {
        advice_id: first.advice_id.clone(),
        approve: true,
        note: "fine".into(),
    };
    run(&mut a, review, T0).0.unwrap();
    // Prices moved a little: the approved advice stands (sells 49, within the tolerance).
    let kept = issue(&mut a, 49, 50, 1_000);
    assert_eq!((kept.status, kept.generated_at), (AdviceStatus::Approved, first.generated_at));
    // The investor sold 2 themselves: accepting the approved "sell 50" is refused, nothing
    // accepted; a replay of an earlier acceptance is not what this is.
    let accept = |q: i64| AccountCommand::AcceptAdvice {
        advice_id: first.advice_id.clone(),
        replay: false,
        held: held(q),
    };
    let (r, audit) = run(&mut a, accept(48), T0);
    assert_eq!(r, Err(AccountRejection::AdviceOutdated));
    assert_eq!(AccountRejection::AdviceOutdated.code(), "advice_outdated");
    assert!(audit.iter().any(|x| x.contains("advice_outdated")), "{audit:?}");
    assert_eq!(a.advice.as_ref().map(|r| r.status), Some(AdviceStatus::Approved));
    // Advice computed on the 48 held replaces it, and goes to review again.
    let fresh = issue(&mut a, 48, 48, 2_000);
    assert_eq!(fresh.status, AdviceStatus::PendingReview);
    assert_ne!(fresh.generated_at, first.generated_at);
    // Advice that fits is accepted.
    let review = AccountCommand::ReviewAdvice {
        advice_id: fresh.advice_id.clone(),
        approve: true,
        note: "fine".into(),
    };
    run(&mut a, review, T0).0.unwrap();
    let accept = AccountCommand::AcceptAdvice {
        advice_id: fresh.advice_id.clone(),
        replay: false,
        held: held(48),
    };
    assert!(matches!(run(&mut a, accept, T0).0, Ok(AccountReply::Advice(r)) if r.status == AdviceStatus::Accepted));
}
