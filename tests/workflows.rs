//! The workflows are one piece of code for the node and the simulator: the same order and
//! accept-advice machines, run over the node's router (actors, group commit, sled) and over the
//! in-memory host the simulator drives, from the same state and inputs, give the same answers.

use moneta::actors::RequestMeta;
use moneta::cluster::memory_host::MemoryHost;
use moneta::cluster::router::RouterSettings;
use moneta::cluster::Router;
use moneta::config::Config;
use moneta::domain::account::{Account, AccountCommand, Role, ScreeningOutcome};
use moneta::domain::envelope::{EntityFailure, Envelope};
use moneta::domain::fees::FeeSchedule;
use moneta::domain::instrument::{Instrument, InstrumentCommand, InstrumentKind, Listing};
use moneta::domain::kyc::{DocumentType, KycStatus};
use moneta::domain::portfolio::{IdemTag, Order, Portfolio, PortfolioCommand, PortfolioRejection, PortfolioReply, Side};
use moneta::domain::screening::ScreeningStatus;
use moneta::domain::suitability::{RiskBand, RiskProfile};
use moneta::domain::time::Timestamp;
use moneta::telemetry::Metrics;
use moneta::workflows::accept_advice::{AcceptAdvice, NotAccepted};
use moneta::workflows::order::{OrderOutcome, OrderRequest, OrderTerms, PlaceOrder};
use moneta::workflows::{self, Effect, Effected, Effects};
use rust_decimal::Decimal;
use std::sync::{Arc, Mutex};

const USER: &str = "usr_flow";

/// The state both hosts start from: two instruments, a verified and profiled investor, cash.
fn setup() -> Vec<Envelope> {
    let listing = |symbol: &str, kind, complex, risk_class| Listing {
        symbol: symbol.into(),
        name: format!("{symbol} plc"),
        kind,
        complex,
        currency: "EUR".into(),
        risk_class,
    };
    let clear = ScreeningOutcome {
        status: ScreeningStatus::Clear,
        entry: None,
        score: "0.100".into(),
        list_version: "test".into(),
    };
    let meta = |label: &str| RequestMeta {
        request_id: format!("setup-{label}"),
        actor: "system".into(),
    };
    vec![
        Envelope::execute::<Instrument>(
            "ACME",
            InstrumentCommand::List {
                listing: listing("ACME", InstrumentKind::Equity, false, 3),
                price: Decimal::from(100),
            },
            meta("acme"),
        ),
        Envelope::execute::<Instrument>(
            "LEV3",
            InstrumentCommand::List {
                listing: listing("LEV3", InstrumentKind::LeveragedEtf, true, 7),
                price: Decimal::from(50),
            },
            meta("lev"),
        ),
        Envelope::execute::<Account>(
            USER,
            AccountCommand::Register {
                sealed_profile: vec![7; 16],
                password_hash: "$argon2id$stand-in".into(),
                roles: vec![Role::User],
                screening: Some(clear.clone()),
            },
            meta("register"),
        ),
        Envelope::execute::<Account>(
            USER,
            AccountCommand::SubmitKyc {
                document_type: DocumentType::Passport,
                sealed_document: vec![8; 16],
                provider: "sandbox".into(),
                status: KycStatus::Verified,
                screening: clear,
            },
            meta("kyc"),
        ),
        Envelope::execute::<Account>(
            USER,
            AccountCommand::SetSuitability {
                profile: RiskProfile {
                    risk_score: 4,
                    risk_band: RiskBand::Balanced,
                    complex_products_allowed: false,
                },
                sealed_answers: vec![9; 16],
            },
            meta("suitability"),
        ),
        Envelope::execute::<Portfolio>(
            USER,
            PortfolioCommand::Deposit {
                amount: Decimal::from(10_000),
                idem: IdemTag {
                    key: "dep".into(),
                    fingerprint: [1; 32],
                },
            },
            meta("deposit"),
        ),
    ]
}

fn terms() -> OrderTerms {
    OrderTerms {
        fees: FeeSchedule {
            commission_bps: Decimal::from(10),
            minimum: Decimal::ONE,
        },
        slippage_bps: Decimal::from(5),
    }
}

/// The orders both hosts are asked for, in order (the last is a retry of the first).
fn orders() -> Vec<PlaceOrder> {
    let order = |n: usize, symbol: &str, side, quantity: i64, key: &str, listed| {
        let request = OrderRequest {
            user_id: USER.into(),
            symbol: symbol.into(),
            side,
            quantity: Decimal::from(quantity),
            idem: IdemTag {
                key: key.into(),
                fingerprint: [n as u8; 32],
            },
            meta: RequestMeta {
                request_id: format!("req-order-{n}"),
                actor: USER.into(),
            },
        };
        PlaceOrder::new(request, terms(), listed)
    };
    vec![
        order(1, "ACME", Side::Buy, 10, "k1", true),
        order(2, "LEV3", Side::Buy, 1, "k2", true),
        order(3, "ACME", Side::Sell, 100, "k3", true),
        order(4, "NOPE", Side::Buy, 1, "k4", false),
        order(5, "ACME", Side::Buy, 1_000, "k5", true),
        order(6, "ACME", Side::Sell, 4, "k6", true),
        order(1, "ACME", Side::Buy, 10, "k1", true),
    ]
}

/// What must agree: the decision, not the ids and times each host draws.
#[derive(Debug, PartialEq)]
enum Seen {
    Filled {
        symbol: String,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        fees: Decimal,
        cash_effect: Decimal,
    },
    Refused(PortfolioRejection),
}

fn seen(outcome: OrderOutcome) -> Seen {
    match outcome {
        Ok(PortfolioReply::Order(o)) => filled(&o),
        Ok(PortfolioReply::Refused(r)) | Err(r) => Seen::Refused(r),
        other => panic!("an order answered {other:?}"),
    }
}

fn filled(o: &Order) -> Seen {
    Seen::Filled {
        symbol: o.symbol.clone(),
        side: o.side,
        quantity: o.quantity,
        price: o.price,
        fees: o.fees,
        cash_effect: o.cash_effect,
    }
}

/// The fills confirmed, and each confirmation's user and fence (the booking's raft term).
#[derive(Default)]
struct Recorded(Mutex<Vec<Seen>>, Mutex<Vec<(String, Option<u64>)>>);

impl Effects for Recorded {
    async fn apply(&self, effect: Effect, fence: Option<u64>) -> Effected {
        match effect {
            Effect::Confirm { order, user_id } => {
                self.0.lock().unwrap().push(filled(&order));
                self.1.lock().unwrap().push((user_id, fence));
                Effected::Confirmed
            }
            // No price book here: the order asks the instrument.
            Effect::Quote(_) => Effected::Failed("no price book".into()),
            other => panic!("an order asks only the broker and the price book: {other:?}"),
        }
    }
}

fn accept_unknown() -> AcceptAdvice {
    let meta = RequestMeta {
        request_id: "req-accept".into(),
        actor: USER.into(),
    };
    AcceptAdvice::new(USER.into(), "adv_none".into(), "acc-key".into(), meta, terms(), ["ACME".to_string()].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_and_the_simulators_host_run_the_same_workflows_to_the_same_answers() {
    // The simulator's host.
    let mut host = MemoryHost::new(7, Timestamp(1_800_000_000_000));
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let mut confirmed_in_memory = Vec::new();
    let mut in_memory = Vec::new();
    for flow in orders() {
        let outcome = workflows::run_with(
            flow,
            |e| host.dispatch(e),
            |e| match e {
                Effect::Confirm { order, .. } => {
                    confirmed_in_memory.push(filled(&order));
                    Effected::Confirmed
                }
                Effect::Quote(_) => Effected::Failed("no price book".into()),
                other => panic!("{other:?}"),
            },
        )
        .unwrap();
        in_memory.push(seen(outcome));
    }
    let accept_in_memory = workflows::run_with(accept_unknown(), |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();

    // The node: actors, group commit and sled.
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load_with_env(None, &[]).unwrap();
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    let router = Router::start(store, Arc::new(Metrics::new()), RouterSettings::from_config(&config))
        .await
        .unwrap();
    for e in setup() {
        router.dispatch(e).await.unwrap();
    }
    let effects = Recorded::default();
    let mut on_node = Vec::new();
    for flow in orders() {
        on_node.push(seen(workflows::run(&router, &effects, flow).await.unwrap()));
    }
    let accept_on_node = workflows::run(&router, &effects, accept_unknown()).await.unwrap();

    assert_eq!(on_node, in_memory, "the same answers, order by order");
    assert_eq!(*effects.0.lock().unwrap(), confirmed_in_memory, "the same fills confirmed with the broker");
    // Each confirmation follows its booking, not yet durable, fenced to the booking's term:
    // written only where and while the booking can commit before it.
    for (user, fence) in effects.1.lock().unwrap().iter() {
        let group = moneta::domain::ids::group_of(moneta::storage::records::user_shard(user), router.store().groups());
        assert_eq!(*fence, router.journal().serving_term(group), "confirmation for {user}");
        assert!(fence.is_some());
    }
    assert_eq!(accept_on_node, accept_in_memory);
    assert_eq!(
        accept_on_node,
        Err(NotAccepted::Account(moneta::domain::account::AccountRejection::UnknownAdvice))
    );

    // And the answers are the ones the rules give: a fill, not_appropriate for a complex product
    // under a non-complex profile, holdings, an unlisted symbol, funds, a partial sell, a replay.
    assert!(matches!(on_node[0], Seen::Filled { .. }));
    assert!(
        matches!(&on_node[1], Seen::Refused(PortfolioRejection::Compliance(r)) if r.code() == "not_appropriate"),
        "{:?}",
        on_node[1]
    );
    assert_eq!(on_node[2], Seen::Refused(PortfolioRejection::InsufficientHoldings));
    assert_eq!(on_node[3], Seen::Refused(PortfolioRejection::UnknownInstrument));
    assert_eq!(on_node[4], Seen::Refused(PortfolioRejection::InsufficientFunds));
    assert!(matches!(on_node[5], Seen::Filled { .. }));
    assert_eq!(on_node[6], on_node[0], "the retry of the first order is answered its fill");
    assert_eq!(
        effects.0.lock().unwrap().len(),
        3,
        "a replayed fill is confirmed again (the broker keeps the first)"
    );
    let cash_node = router.query::<Portfolio, _>(USER, moneta::domain::queries::Cash).await.unwrap();
    let cash_memory = host.query::<Portfolio, _>(USER, moneta::domain::queries::Cash);
    assert_eq!(cash_node, cash_memory);
}

#[test]
fn a_request_id_is_applied_once_by_the_simulators_host_too() {
    let mut host = MemoryHost::new(1, Timestamp(1_800_000_000_000));
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let [first, .., retry] = <[PlaceOrder; 7]>::try_from(orders()).unwrap();
    let a = workflows::run_with(first, |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    // The same request id with the same key: answered from the entity's request memory.
    let replays = host.replays;
    let b = workflows::run_with(retry, |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    assert_eq!(a, b);
    assert_eq!(host.replays, replays + 1);
    // The same id with another command is refused, nothing applied.
    let reused = Envelope::execute::<Portfolio>(
        USER,
        PortfolioCommand::Deposit {
            amount: Decimal::ONE,
            idem: IdemTag {
                key: "other".into(),
                fingerprint: [0; 32],
            },
        },
        RequestMeta {
            request_id: "req-order-1".into(),
            actor: USER.into(),
        },
    );
    assert!(matches!(host.dispatch(reused), Err(EntityFailure::NotApplied(_))));
}

/// The router runs a workflow step again under the same request id when its answer was lost.
/// The order reads its quote again for it; a price that ticked in between must not make the
/// retry "another command" (refused, a 503 for an order that filled): it is answered what the
/// first run decided.
#[test]
fn an_order_step_run_again_after_the_price_ticked_is_answered_what_it_decided() {
    let mut host = MemoryHost::new(1, Timestamp(1_800_000_000_000));
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let [first, .., retry] = <[PlaceOrder; 7]>::try_from(orders()).unwrap();
    let a = workflows::run_with(first, |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    let tick = Envelope::execute::<Instrument>(
        "ACME",
        InstrumentCommand::Tick { price: Decimal::from(101) },
        RequestMeta {
            request_id: "tick-101".into(),
            actor: "system".into(),
        },
    );
    host.dispatch(tick).unwrap();
    let replays = host.replays;
    let b = workflows::run_with(retry, |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    assert_eq!(a, b, "the retry is answered the first fill, at the first price");
    assert_eq!(host.replays, replays + 1);
}

#[test]
fn registration_claims_the_email_then_creates_the_account_and_finishes_a_half_done_one() {
    use moneta::domain::account::Profile;
    use moneta::domain::email_index::{EmailIndex, EmailIndexCommand};
    use moneta::domain::queries::{Exists, Owner};
    use moneta::workflows::registration::{Register, RegistrationError};

    let mut host = MemoryHost::new(3, Timestamp(1_800_000_000_000));
    let profile = || Profile {
        email: "ada@example.com".into(),
        full_name: "Ada".into(),
        date_of_birth: None,
        country: None,
    };
    let mut keys = Vec::new();
    let mut effects = |e: Effect| match e {
        Effect::DataKey(id) => {
            keys.push(id);
            Effected::KeyReady
        }
        Effect::SealProfile { owner, screen, .. } => Effected::Sealed {
            profile: format!("sealed-for-{owner}").into_bytes(),
            screening: screen.then(|| ScreeningOutcome {
                status: ScreeningStatus::Clear,
                entry: None,
                score: "0.000".into(),
                list_version: "test".into(),
            }),
        },
        other => panic!("{other:?}"),
    };
    let register = |candidate: &str, request: &str| {
        Register::new(
            "hash_ada".into(),
            candidate.into(),
            profile(),
            "$argon2id$x".into(),
            vec![Role::User],
            request.into(),
        )
    };
    let first = workflows::run_with(register("usr_1", "req-1"), |e| host.dispatch(e), &mut effects).unwrap();
    assert_eq!(first, Ok("usr_1".to_string()));
    assert!(host.query::<Account, _>("usr_1", Exists));
    assert_eq!(host.query::<EmailIndex, _>("hash_ada", Owner).as_deref(), Some("usr_1"));
    // The same email again: taken, and nothing is created for the second candidate.
    let again = workflows::run_with(register("usr_2", "req-2"), |e| host.dispatch(e), &mut effects).unwrap();
    assert_eq!(again, Err(RegistrationError::EmailTaken));
    assert!(!host.query::<Account, _>("usr_2", Exists));

    // A registration that died after its claim: the next one for that email finishes it.
    let meta = RequestMeta {
        request_id: "req-died".into(),
        actor: "usr_3".into(),
    };
    host.execute::<EmailIndex>("hash_bob", EmailIndexCommand::Claim { user_id: "usr_3".into() }, meta)
        .unwrap()
        .unwrap();
    let bob = Register::new(
        "hash_bob".into(),
        "usr_4".into(),
        profile(),
        "$argon2id$y".into(),
        vec![Role::User],
        "req-4".into(),
    );
    assert_eq!(workflows::run_with(bob, |e| host.dispatch(e), &mut effects).unwrap(), Ok("usr_3".to_string()));
    assert!(host.query::<Account, _>("usr_3", Exists) && !host.query::<Account, _>("usr_4", Exists));
    assert_eq!(keys, ["usr_1", "usr_3"], "a data key for each account made, none for a refused one");
}

#[test]
fn erasure_runs_its_steps_in_order_and_drops_a_schedule_the_account_never_recorded() {
    use moneta::domain::email_index::{EmailIndex, EmailIndexCommand};
    use moneta::domain::queries::{Exists, Owner};
    use moneta::storage::store::PendingErasure;
    use moneta::workflows::erasure::{Erase, Erased};

    let now = Timestamp(1_800_000_000_000);
    let mut host = MemoryHost::new(5, now);
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let meta = |r: &str| RequestMeta {
        request_id: r.into(),
        actor: USER.into(),
    };
    host.execute::<EmailIndex>("hash_flow", EmailIndexCommand::Claim { user_id: USER.into() }, meta("claim"))
        .unwrap()
        .unwrap();
    host.execute::<Account>(USER, AccountCommand::RequestErasure { due_at: now }, meta("erase-me"))
        .unwrap()
        .unwrap();
    let pending = PendingErasure {
        due_at: now,
        email_hash: "hash_flow".into(),
        replay: false,
    };
    let mut effects = Vec::new();
    let flow = Erase::new(USER.into(), pending.clone(), now, meta("job-1"));
    let outcome = workflows::run_with(
        flow,
        |e| host.dispatch(e),
        |e| {
            effects.push(effect_name(&e));
            Effected::Done
        },
    )
    .unwrap();
    assert_eq!(outcome, Ok(Erased::Erased));
    assert_eq!(
        effects,
        ["KeepRegulatory", "RevokeSessions", "ListErasure", "DestroyDataKey", "Write"],
        "in this order: the key goes after the list, the schedule last"
    );
    assert!(!host.query::<Account, _>(USER, Exists), "the account forgot the person");
    assert_eq!(host.query::<EmailIndex, _>("hash_flow", Owner), None, "the email is free");

    // A schedule the account never recorded (a request interrupted between its two steps):
    // the job records the request on the account and erases the person like any other.
    let register = AccountCommand::Register {
        sealed_profile: vec![1; 8],
        password_hash: "$argon2id$z".into(),
        roles: vec![Role::User],
        screening: None,
    };
    host.execute::<Account>("usr_never", register, meta("register-never")).unwrap().unwrap();
    let mut effects = Vec::new();
    let other = Erase::new("usr_never".into(), pending, now, meta("job-2"));
    let outcome = workflows::run_with(
        other,
        |e| host.dispatch(e),
        |e| {
            effects.push(effect_name(&e));
            Effected::Done
        },
    )
    .unwrap();
    assert_eq!(outcome, Ok(Erased::Erased));
    assert_eq!(effects, ["KeepRegulatory", "RevokeSessions", "ListErasure", "DestroyDataKey", "Write"]);
    assert!(!host.query::<Account, _>("usr_never", Exists), "the account forgot the person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_is_gated_then_given_alike_by_the_node_and_in_memory() {
    use moneta::domain::account::Consents;
    use moneta::domain::advice::AdvicePolicy;
    use moneta::workflows::advice::AdviceError;
    use moneta::workflows::advise::Advise;

    let config = Config::load_with_env(None, &[]).unwrap();
    let policy = AdvicePolicy {
        slippage_bps: Decimal::ZERO,
        ..config.advice.policy()
    };
    let advise = |n: u32| {
        let meta = RequestMeta {
            request_id: format!("req-advice-{n}"),
            actor: USER.into(),
        };
        Advise::new(USER.into(), vec!["ACME".into(), "LEV3".into()], terms().fees, policy.clone(), meta)
    };
    let consent = Envelope::execute::<Account>(
        USER,
        AccountCommand::SetConsents(Consents {
            ai_profiling: true,
            marketing: false,
            analytics: false,
        }),
        RequestMeta {
            request_id: "req-consent".into(),
            actor: USER.into(),
        },
    );

    let mut host = MemoryHost::new(9, Timestamp(1_800_000_000_000));
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let mut effects = Vec::new();
    let refused = workflows::run_with(
        advise(1),
        |e| host.dispatch(e),
        |e| {
            effects.push(effect_name(&e));
            Effected::Done
        },
    )
    .unwrap();
    assert!(matches!(refused, Err(AdviceError::Refused { code: "consent_required", .. })), "{refused:?}");
    assert_eq!(effects, ["Audit"], "the refusal is audited");
    host.dispatch(consent.clone()).unwrap();
    let in_memory = workflows::run_with(advise(2), |e| host.dispatch(e), |_| Effected::Done).unwrap().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    let router = Router::start(store, Arc::new(Metrics::new()), RouterSettings::from_config(&config))
        .await
        .unwrap();
    for e in setup() {
        router.dispatch(e).await.unwrap();
    }
    router.dispatch(consent).await.unwrap();
    struct Nothing;
    impl Effects for Nothing {
        async fn apply(&self, _: Effect, _: Option<u64>) -> Effected {
            Effected::Done
        }
    }
    let on_node = workflows::run(&router, &Nothing, advise(2)).await.unwrap().unwrap();
    assert_eq!(on_node.advice, in_memory.advice, "the same advice from the same numbers");
    assert_eq!(on_node.status, in_memory.status);
    assert!(!in_memory.advice.proposed_orders.is_empty(), "cash to invest gives orders");
    assert!(in_memory.advice.proposed_orders.iter().all(|o| o.symbol == "ACME"), "never the complex product");
}

#[test]
fn rescreening_and_closing_a_day_run_in_memory_too() {
    use moneta::domain::queries::{ClosedThrough, ScreeningState};
    use moneta::domain::time::Date;
    use moneta::workflows::end_of_day::{ClosePortfolio, Closed};
    use moneta::workflows::rescreen::Rescreen;

    let now = Timestamp(1_800_000_000_000);
    let mut host = MemoryHost::new(11, now);
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    // Re-screening: the adapter now finds a potential match; the account records it.
    let hit = ScreeningOutcome {
        status: ScreeningStatus::PotentialMatch,
        entry: Some("4711".into()),
        score: "0.930".into(),
        list_version: "reloaded".into(),
    };
    let meta = |r: &str| RequestMeta {
        request_id: r.into(),
        actor: "system".into(),
    };
    let outcome = workflows::run_with(
        Rescreen::new(USER.into(), meta("rescreen")),
        |e| host.dispatch(e),
        |e| match e {
            Effect::Screen { .. } => Effected::Screened(hit.clone()),
            other => panic!("{other:?}"),
        },
    )
    .unwrap();
    assert_eq!(outcome, Ok(Some(true)));
    assert_eq!(host.query::<Account, _>(USER, ScreeningState), Some(ScreeningStatus::PotentialMatch));
    // Nobody to screen: no profile of an investor.
    let nobody = workflows::run_with(
        Rescreen::new("usr_nobody".into(), meta("rescreen-2")),
        |e| host.dispatch(e),
        |e| panic!("{e:?}"),
    )
    .unwrap();
    assert_eq!(nobody, Ok(None));

    // Closing the day: the portfolio's journal is read through the effect, the portfolio states it.
    let date = Date::from_timestamp(now);
    let journal = host.portfolios[USER].journal.clone();
    let close = |r: &str| ClosePortfolio::new(USER.into(), date, Default::default(), now, meta(r));
    let closed = workflows::run_with(
        close("close-1"),
        |e| host.dispatch(e),
        |e| match e {
            Effect::PortfolioJournal(u) if u == USER => Effected::Journal(journal.clone()),
            other => panic!("{other:?}"),
        },
    )
    .unwrap();
    assert_eq!(closed, Ok(Closed::Statement));
    assert!(host.query::<Portfolio, _>(USER, ClosedThrough { date }));
    // Again: already closed, without reading the journal.
    let again = workflows::run_with(close("close-2"), |e| host.dispatch(e), |e| panic!("{e:?}")).unwrap();
    assert_eq!(again, Ok(Closed::AlreadyClosed));
}

/// An effect's variant name, for checking which effects a workflow asked for, in order.
fn effect_name(e: &Effect) -> String {
    format!("{e:?}").split([' ', '(', '{']).next().unwrap_or_default().to_string()
}

#[test]
fn an_order_priced_from_the_price_book_never_asks_the_instrument() {
    // At the leader of the user's group the order is priced from the node's price book (the
    // latest committed quote the feed shared), so the step makes no hop to the instrument's
    // group; its price is the book's, with slippage for the side.
    let mut host = MemoryHost::new(3, Timestamp(1_800_000_000_000));
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let book = moneta::domain::instrument::Quote {
        listing: Listing {
            symbol: "ACME".into(),
            name: "ACME plc".into(),
            kind: InstrumentKind::Equity,
            complex: false,
            currency: "EUR".into(),
            risk_class: 3,
        },
        price: Decimal::from(120),
        as_of: Timestamp(1_800_000_000_000),
    };
    let [first, ..] = <[PlaceOrder; 7]>::try_from(orders()).unwrap();
    let mut asked_instrument = 0;
    let outcome = workflows::run_with(
        first,
        |e| {
            if matches!(e, Envelope::Instrument { .. }) {
                asked_instrument += 1;
            }
            host.dispatch(e)
        },
        |e| match e {
            Effect::Quote(symbol) if symbol == "ACME" => Effected::Quote(Box::new(book.clone())),
            Effect::Confirm { .. } => Effected::Confirmed,
            other => panic!("{other:?}"),
        },
    )
    .unwrap();
    assert_eq!(asked_instrument, 0, "the instrument was not asked");
    let Ok(PortfolioReply::Order(o)) = outcome else { panic!("{outcome:?}") };
    // 120 plus 5 bps of slippage for a buy.
    assert_eq!(o.price, Decimal::new(12006, 2));
}

/// Found by the cluster simulator (seed 5018 with `--fault crash=0.008`): a node went down
/// after the account recorded the acceptance and before the first order was placed; the
/// client's retry under the same idempotency key was refused as "already accepted", and the
/// advice's orders were never placed. A retry under the key places them.
#[test]
fn accepting_advice_again_under_its_key_after_a_crash_before_the_first_order_places_the_orders() {
    use moneta::domain::account::Consents;
    use moneta::domain::advice::AdvicePolicy;
    use moneta::workflows::accept_advice::Accepted;
    use moneta::workflows::advise::Advise;
    use moneta::workflows::flow::{Input, Next, Workflow};

    let meta = |id: &str| RequestMeta {
        request_id: id.into(),
        actor: USER.into(),
    };
    let mut host = MemoryHost::new(11, Timestamp(1_800_000_000_000));
    for e in setup() {
        host.dispatch(e).unwrap();
    }
    let consents = Consents {
        ai_profiling: true,
        marketing: false,
        analytics: false,
    };
    host.dispatch(Envelope::execute::<Account>(USER, AccountCommand::SetConsents(consents), meta("req-consent")))
        .unwrap();
    let advise = Advise::new(USER.into(), vec!["ACME".into()], terms().fees, AdvicePolicy::default(), meta("req-advice"));
    let record = workflows::run_with(advise, |e| host.dispatch(e), |_| Effected::Done).unwrap().unwrap();
    let wanted = record.advice.proposed_orders.len();
    assert!(wanted > 0, "cash to invest gives orders");
    let accept = |request_id: &str| {
        AcceptAdvice::new(
            USER.into(),
            record.advice_id.clone(),
            "acc-crash".into(),
            meta(request_id),
            terms(),
            ["ACME".to_string()].into(),
        )
    };

    // The first attempt: the key's memory, then the account accepts; the node dies before the
    // first order reaches the portfolio.
    let mut first = accept("req-accept-1");
    let mut input = Input::Start;
    loop {
        match first.next(input) {
            Next::Call(
                e @ Envelope::Portfolio {
                    call: moneta::domain::envelope::Call::Execute { .. },
                    ..
                },
            )
            | Next::Decide(
                e @ Envelope::Portfolio {
                    call: moneta::domain::envelope::Call::Execute { .. },
                    ..
                },
            ) => {
                drop(e);
                break;
            }
            Next::Call(e) | Next::Peek(e) | Next::Decide(e) => input = Input::Answer(host.dispatch(e).unwrap()),
            Next::Effect(_) => input = Input::Effected(Effected::Done),
            Next::Done(out) => panic!("finished before its first order: {out:?}"),
        }
    }

    // The client's retry: same key, a new request.
    let again = workflows::run_with(accept("req-accept-2"), |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    let Ok(Accepted::Orders(done)) = again else {
        panic!("the retry under the key was not answered with the orders: {again:?}");
    };
    assert_eq!(done.len(), wanted);
    assert!(done.iter().all(|(_, o)| matches!(o, Ok(PortfolioReply::Order(_)))), "{done:?}");
    // A third time: the same orders, none placed twice.
    let third = workflows::run_with(accept("req-accept-3"), |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    assert!(matches!(&third, Ok(Accepted::Orders(d)) if d.len() == wanted), "{third:?}");
    let journal = &host.portfolios[USER].journal;
    let fills = journal
        .iter()
        .filter(|e| matches!(e, moneta::domain::portfolio::PortfolioEvent::OrderFilled { .. }))
        .count();
    assert_eq!(fills, wanted, "each order of the advice once");
    // Another key is refused: accepted advice is not accepted twice.
    let other = AcceptAdvice::new(
        USER.into(),
        record.advice_id.clone(),
        "acc-other".into(),
        meta("req-accept-4"),
        terms(),
        ["ACME".to_string()].into(),
    );
    let refused = workflows::run_with(other, |e| host.dispatch(e), |_| Effected::Confirmed).unwrap();
    assert!(matches!(refused, Err(NotAccepted::Account(_))), "{refused:?}");
}

/// A portfolio command other than an order is remembered by the digest of the command itself,
/// as before `Entity::request_form` existed: a request id seen before an upgrade is not taken
/// for another command after it.
#[test]
fn a_request_form_other_than_an_order_is_the_command_itself() {
    use moneta::domain::entity::Entity;
    use moneta::storage::codec::digest;
    let deposit = PortfolioCommand::Deposit {
        amount: Decimal::ONE,
        idem: IdemTag {
            key: "k".into(),
            fingerprint: [1; 32],
        },
    };
    assert_eq!(digest(&Portfolio::request_form(&deposit)), digest(&deposit));
}
