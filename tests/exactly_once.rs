//! Exactly once on every entity kind: a command sent again under the same request id — the
//! router's retry after an ambiguous failure, when the first reply was lost — is answered with
//! its first reply and applied once, also after the entity restarts from storage. A request id
//! reused for another command is refused and applies nothing.

use moneta::actors::RequestMeta;
use moneta::cluster::router::RouterSettings;
use moneta::cluster::{RouteError, RouteFailure, Router};
use moneta::config::Config;
use moneta::domain::account::{Account, AccountCommand, AccountReply, NewSession, Role};
use moneta::domain::email_index::{EmailIndex, EmailIndexCommand};
use moneta::domain::instrument::{Instrument, InstrumentCommand, InstrumentKind, Listing};
use moneta::domain::portfolio::{IdemTag, Portfolio, PortfolioCommand, PortfolioReply};
use moneta::domain::queries::{Cash, CurrentQuote, Owner, SessionRevoked};
use moneta::domain::time::Timestamp;
use moneta::telemetry::Metrics;
use rust_decimal::Decimal;
use std::sync::Arc;

async fn router(dir: &std::path::Path) -> (Router, Arc<Metrics>) {
    let config = Config::load_with_env(None, &[]).unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = moneta::storage::Store::open(dir).unwrap();
    (
        Router::start(store, metrics.clone(), RouterSettings::from_config(&config)).await.unwrap(),
        metrics,
    )
}

fn replays(metrics: &Metrics) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("moneta_request_replays_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn far_future() -> Timestamp {
    Timestamp(moneta::actors::wall_clock_now().0 + 86_400_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_refresh_answers_its_first_reply_instead_of_revoking_the_family() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path()).await;
    let register = AccountCommand::Register {
        sealed_profile: vec![1, 2, 3],
        password_hash: "$argon2id$stand-in".into(),
        roles: vec![Role::User],
        screening: None,
    };
    router.execute::<Account>("usr_r", register, RequestMeta::new("usr_r")).await.unwrap();
    let login = AccountCommand::Login {
        device: None,
        totp_step: None,
        session: NewSession {
            family: "fam_1".into(),
            token_hash: [1; 32],
            expires_at: far_future(),
        },
    };
    router.execute::<Account>("usr_r", login, RequestMeta::new("usr_r")).await.unwrap();

    let refresh = AccountCommand::Refresh {
        family: "fam_1".into(),
        presented: [1; 32],
        next: [2; 32],
        expires_at: far_future(),
    };
    let meta = RequestMeta::new("usr_r");
    let first = router.execute::<Account>("usr_r", refresh.clone(), meta.clone()).await.unwrap();
    assert!(matches!(first, AccountReply::Refreshed { .. }), "{first:?}");
    // The reply was lost on the way; the router sends the same command under the same id.
    let again = router.execute::<Account>("usr_r", refresh.clone(), meta.clone()).await.unwrap();
    assert_eq!(again, first, "the retry gets the first answer");
    assert!(
        !router.query::<Account, _>("usr_r", SessionRevoked { family: "fam_1".into() }).await.unwrap(),
        "the family lives on"
    );
    assert_eq!(replays(&metrics), 1.0);

    // Also after the entity restarts from storage (the memory is in its shard range).
    router.debug_panic::<Account>("usr_r").await.ok();
    let after_restart = router.execute::<Account>("usr_r", refresh.clone(), meta).await.unwrap();
    assert_eq!(after_restart, first);
    assert!(!router.query::<Account, _>("usr_r", SessionRevoked { family: "fam_1".into() }).await.unwrap());

    // The same spent token under a new request id is what reuse looks like: the family goes.
    let reuse = router.execute::<Account>("usr_r", refresh, RequestMeta::new("usr_r")).await.unwrap();
    assert_eq!(reuse, AccountReply::Reused);
    assert!(router.query::<Account, _>("usr_r", SessionRevoked { family: "fam_1".into() }).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portfolio_instrument_and_email_index_commands_apply_once_per_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path()).await;

    // Portfolio: the request id answers before the idempotency key is even looked at.
    let deposit = PortfolioCommand::Deposit {
        amount: Decimal::from(40),
        idem: IdemTag {
            key: "dep-1".into(),
            fingerprint: [9; 32],
        },
    };
    let meta = RequestMeta::new("usr_p");
    let first = router.execute::<Portfolio>("usr_p", deposit.clone(), meta.clone()).await.unwrap();
    assert_eq!(first, PortfolioReply::Cash { cash: Decimal::from(40) });
    assert_eq!(router.execute::<Portfolio>("usr_p", deposit, meta).await.unwrap(), first);
    assert_eq!(router.query::<Portfolio, _>("usr_p", Cash).await.unwrap(), Decimal::from(40));
    assert_eq!(router.inspect::<Portfolio>("usr_p").await.unwrap().0, 1, "one event");

    // Instrument: a price tick has no key of its own; its request id makes it once.
    let listing = Listing {
        symbol: "ONCE".into(),
        name: "Once Inc".into(),
        kind: InstrumentKind::Equity,
        currency: "EUR".into(),
        complex: false,
        risk_class: 3,
    };
    router
        .execute::<Instrument>(
            "ONCE",
            InstrumentCommand::List {
                listing,
                price: Decimal::from(10),
            },
            RequestMeta::system("test-listing"),
        )
        .await
        .unwrap();
    let tick = RequestMeta::system("test-feed");
    router
        .execute::<Instrument>("ONCE", InstrumentCommand::Tick { price: Decimal::from(11) }, tick.clone())
        .await
        .unwrap();
    router
        .execute::<Instrument>("ONCE", InstrumentCommand::Tick { price: Decimal::from(12) }, RequestMeta::system("test-feed"))
        .await
        .unwrap();
    router
        .execute::<Instrument>("ONCE", InstrumentCommand::Tick { price: Decimal::from(11) }, tick)
        .await
        .unwrap();
    let quote = router.query::<Instrument, _>("ONCE", CurrentQuote).await.unwrap().unwrap();
    assert_eq!(quote.price, Decimal::from(12), "the late retry of the first tick did not move the price back");
    assert_eq!(router.inspect::<Instrument>("ONCE").await.unwrap().0, 3, "listing and two ticks");

    // Email index: a retried claim does not claim again after the email was released.
    let claim = RequestMeta::new("usr_e");
    let owner = router
        .execute::<EmailIndex>("hash_e", EmailIndexCommand::Claim { user_id: "usr_e".into() }, claim.clone())
        .await
        .unwrap();
    assert_eq!(owner, "usr_e");
    router
        .execute::<EmailIndex>(
            "hash_e",
            EmailIndexCommand::Release { user_id: "usr_e".into() },
            RequestMeta::system("test-erasure"),
        )
        .await
        .unwrap();
    let retried = router
        .execute::<EmailIndex>("hash_e", EmailIndexCommand::Claim { user_id: "usr_e".into() }, claim)
        .await
        .unwrap();
    assert_eq!(retried, "usr_e", "the first reply");
    assert_eq!(
        router.query::<EmailIndex, _>("hash_e", Owner).await.unwrap(),
        None,
        "and the claim was not made again"
    );
    assert_eq!(replays(&metrics), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_command_is_refused_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path()).await;
    let dep = |amount: i64, key: &str| PortfolioCommand::Deposit {
        amount: Decimal::from(amount),
        idem: IdemTag {
            key: key.into(),
            fingerprint: [amount as u8; 32],
        },
    };
    let meta = RequestMeta::new("usr_c");
    router.execute::<Portfolio>("usr_c", dep(5, "a"), meta.clone()).await.unwrap();
    let r = router.execute::<Portfolio>("usr_c", dep(6, "b"), meta.clone()).await;
    assert!(matches!(r, Err(RouteError::Failed(RouteFailure::NotApplied(_)))), "{r:?}");
    assert_eq!(router.query::<Portfolio, _>("usr_c", Cash).await.unwrap(), Decimal::from(5));
    // Steps of one request have ids of their own.
    router.execute::<Portfolio>("usr_c", dep(6, "b"), meta.step("second")).await.unwrap();
    assert_eq!(router.query::<Portfolio, _>("usr_c", Cash).await.unwrap(), Decimal::from(11));
    // Ids beyond the limit never reach an entity.
    let long = RequestMeta {
        request_id: "x".repeat(129),
        actor: "usr_c".into(),
    };
    let r = router.execute::<Portfolio>("usr_c", dep(1, "c"), long).await;
    assert!(matches!(r, Err(RouteError::Failed(RouteFailure::NotApplied(_)))), "{r:?}");
}
