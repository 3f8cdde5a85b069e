//! Property tests of the sans-IO domain (DESIGN.md §2–3).
//!
//! Random command sequences drive `Portfolio` and `Instrument` exactly as the production host
//! does (`decide` with a fresh `Ctx`, then `apply` every event), while a small model written
//! from the specification (money.rs / fees.rs docs, DESIGN.md §3) predicts every answer: which
//! refusal, which replay, which event. After every step the money invariants are checked
//! against the state *and* against sums recomputed from the events seen so far. At the end the
//! journal is replayed — directly, through the storage codec, and from a codec snapshot plus the
//! tail — and must rebuild the same state. Finally the codec must never panic on corrupt bytes.
//!
//! A business refusal (invalid amount or quantity, insufficient funds or holdings, unknown
//! instrument) is an answer like any other: one `Refused` event that moves no money and is
//! remembered under the request's key, so a retry with that key replays the refusal — even once
//! the reason is gone. Only a key reused for a different request is an `Err`, and records nothing.
//!
//! Each runner also asserts that the interesting branches were actually reached (replays, reused
//! keys, every refusal, replayed refusals that would now succeed, full and partial sells), so the
//! properties cannot pass vacuously.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use moneta::domain::audit::{AuditDraft, Outcome};
use moneta::domain::compliance::{InvestorStatus, ProductFacts};
use moneta::domain::ctx::{Ctx, Effect};
use moneta::domain::entity::{Decision, Entity};
use moneta::domain::fees::FeeSchedule;
use moneta::domain::instrument::{Instrument, InstrumentCommand, InstrumentEvent, InstrumentKind, InstrumentRejection, Listing};
use moneta::domain::portfolio::{
    History, IdemTag, Order, OrderQuote, Portfolio, PortfolioCommand, PortfolioEvent, PortfolioRejection, PortfolioReply, Remembered, Side, Transaction,
    TransactionKind, IDEMPOTENCY_RETENTION_MS,
};
use moneta::domain::time::Timestamp;
use moneta::storage::codec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};

type Checked = Result<(), TestCaseError>;

/// A fixed start (2026) so timestamps look like production ones; every step moves time forward.
const START_MS: i64 = 1_780_000_000_000;

fn runner(cases: u32) -> TestRunner {
    // No regression files: a failure prints its minimal input, which is what a report needs.
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn run_or_panic<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Checked) {
    if let Err(e) = runner(cases).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The money rules, restated from the specification (money.rs docs), not imported from the code.

fn cents(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn cash_text(v: Decimal) -> String {
    let mut r = cents(v);
    r.rescale(2);
    r.to_string()
}

fn max_amount() -> Decimal {
    Decimal::from(1_000_000_000u64)
}

fn valid_cash(v: Decimal) -> bool {
    v > Decimal::ZERO && v.normalize().scale() <= 2 && v <= max_amount()
}

fn valid_quantity(v: Decimal) -> bool {
    v > Decimal::ZERO && v.normalize().scale() <= 6 && v <= max_amount()
}

/// The request digest a gateway would compute: method, path and body — not the quote nor fees,
/// which the host adds from the instrument and the configuration.
fn fingerprint(parts: &[&str]) -> [u8; 32] {
    Sha256::digest(parts.join("\n").as_bytes()).into()
}

fn idem_of(cmd: &PortfolioCommand) -> &IdemTag {
    match cmd {
        PortfolioCommand::Deposit { idem, .. } | PortfolioCommand::Withdraw { idem, .. } | PortfolioCommand::PlaceOrder { idem, .. } => idem,
        PortfolioCommand::CloseDay { .. } => panic!("client requests only: day closes are tested in the portfolio's unit tests"),
    }
}

fn only_audit(effects: &[Effect]) -> Result<&AuditDraft, TestCaseError> {
    prop_assert_eq!(effects.len(), 1, "expected exactly one effect, got {:?}", effects);
    let Effect::Audit(draft) = &effects[0];
    Ok(draft)
}

fn detail(draft: &AuditDraft, key: &str) -> Option<String> {
    draft.details.get(key).cloned()
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn cash_amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        10 => (1i64..=10_000_000, 0u32..=2).prop_map(|(m, s)| Decimal::new(m, s)),
        // Trailing zeros beyond two places are still a valid amount ("12.34000").
        1 => (1i64..=1_000_000).prop_map(|m| Decimal::new(m * 1000, 5)),
        1 => prop_oneof![Just(Decimal::ZERO), Just(Decimal::new(0, 3))],
        1 => (1i64..=1_000_000, 0u32..=2).prop_map(|(m, s)| -Decimal::new(m, s)),
        1 => (1i64..=100_000, 1i64..=9, 3u32..=8).prop_map(|(m, d, s)| Decimal::new(m * 10 + d, s)),
        1 => prop_oneof![Just(max_amount()), Just(Decimal::new(100_000_000_001, 2))],
    ]
}

fn price() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        4 => (1i64..=50_000_000).prop_map(|m| Decimal::new(m, 4)),
        2 => (1i64..=500, 0u32..=4).prop_map(|(m, s)| Decimal::new(m, s)),
        1 => (1i64..=10_000_000).prop_map(|m| Decimal::new(m, 2)),
    ]
}

fn quantity() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        4 => (1i64..=100_000_000).prop_map(|m| Decimal::new(m, 6)),
        3 => (1i64..=2_000, 0u32..=2).prop_map(|(m, s)| Decimal::new(m, s)),
        1 => (1i64..=1_000_000).prop_map(|m| Decimal::new(m, 6)),
        // Valid despite a scale of 8: the trailing zeros carry no precision.
        1 => (1i64..=1_000_000).prop_map(|m| Decimal::new(m * 100, 8)),
        1 => prop_oneof![Just(Decimal::ZERO), Just(Decimal::new(0, 6))],
        1 => (1i64..=1_000_000, 0u32..=6).prop_map(|(m, s)| -Decimal::new(m, s)),
        1 => (1i64..=100_000, 1i64..=9, 7u32..=10).prop_map(|(m, d, s)| Decimal::new(m * 10 + d, s)),
        1 => Just(Decimal::from(1_000_000_001u64)),
    ]
}

/// Schedules that pass `FeeSchedule::is_valid` (the configuration refuses any other).
fn fee_schedule() -> impl Strategy<Value = FeeSchedule> {
    prop_oneof![
        1 => Just(FeeSchedule::default()),
        1 => Just(FeeSchedule { commission_bps: Decimal::ZERO, minimum: Decimal::ZERO }),
        4 => (0i64..=100_000, 0u32..=2, 0i64..=5_000).prop_map(|(b, s, m)| FeeSchedule {
            commission_bps: Decimal::new(b, s).min(Decimal::from(1000)),
            minimum: Decimal::new(m, 2),
        }),
    ]
}

/// Symbols 0–2 are listed (they have a quote); 3 never is.
const SYMBOLS: [&str; 4] = ["AAA", "BBB", "CCC", "ZZZ"];
/// Idempotency keys drawn from a small pool so that they collide often.
const KEY_POOL: u8 = 6;

#[derive(Clone, Debug)]
enum Key {
    Fresh,
    Pool(u8),
}

#[derive(Clone, Debug)]
enum SellQty {
    Exact(Decimal),
    /// This percentage of the current holding, truncated to six places (100 ⇒ the whole).
    PercentOfHolding(u32),
    /// One micro-unit more than is held.
    MoreThanHeld,
}

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        amount: Decimal,
        key: Key,
    },
    Withdraw {
        amount: Decimal,
        key: Key,
    },
    Buy {
        symbol: usize,
        quantity: Decimal,
        fees: FeeSchedule,
        key: Key,
    },
    Sell {
        symbol: usize,
        quantity: SellQty,
        fees: FeeSchedule,
        key: Key,
    },
    /// The market moves: the quote the host will read for the next orders changes.
    Tick {
        symbol: usize,
        price: Decimal,
    },
    /// A client retries an earlier request: same key, same body (`back` from the newest).
    Retry {
        back: usize,
    },
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![3 => Just(Key::Fresh), 2 => (0..KEY_POOL).prop_map(Key::Pool)]
}

fn symbol() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0usize..3, 1 => Just(3usize)]
}

fn op() -> impl Strategy<Value = Op> {
    let sell_qty = prop_oneof![
        2 => quantity().prop_map(SellQty::Exact),
        3 => (1u32..=100).prop_map(SellQty::PercentOfHolding),
        2 => Just(SellQty::PercentOfHolding(100)),
        1 => Just(SellQty::MoreThanHeld),
    ];
    prop_oneof![
        3 => (cash_amount(), key()).prop_map(|(amount, key)| Op::Deposit { amount, key }),
        2 => (cash_amount(), key()).prop_map(|(amount, key)| Op::Withdraw { amount, key }),
        5 => (symbol(), quantity(), fee_schedule(), key()).prop_map(|(symbol, quantity, fees, key)| Op::Buy { symbol, quantity, fees, key }),
        4 => (symbol(), sell_qty, fee_schedule(), key()).prop_map(|(symbol, quantity, fees, key)| Op::Sell { symbol, quantity, fees, key }),
        1 => (0usize..3, price()).prop_map(|(symbol, price)| Op::Tick { symbol, price }),
        2 => (0usize..6).prop_map(|back| Op::Retry { back }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The portfolio model: everything here is recomputed from the events the test saw.

#[derive(Default)]
struct Ledger {
    cash: Decimal,
    /// symbol → (quantity, cost basis)
    holdings: BTreeMap<String, (Decimal, Decimal)>,
    deposits: Decimal,
    withdrawals: Decimal,
    fees: Decimal,
    realised_pnl: Decimal,
    /// key → (fingerprint, first reply, when it was decided)
    remembered: BTreeMap<String, ([u8; 32], PortfolioReply, Timestamp)>,
    tx_ids: BTreeSet<String>,
    order_ids: BTreeSet<String>,
    /// How many `Refused` events the journal holds (they record no transaction).
    refusals: usize,
}

#[derive(Debug)]
enum Expect {
    /// A remembered key with the same fingerprint: the first reply, nothing else.
    Replay(PortfolioReply),
    /// A remembered key with another fingerprint: `Err(IdempotencyKeyReused)`, nothing recorded.
    KeyReused,
    /// A fresh key and a request the rules refuse: one `Refused` event, no money moved.
    Refuse(PortfolioRejection),
    Execute,
}

impl Ledger {
    fn held(&self, symbol: &str) -> Decimal {
        self.holdings.get(symbol).map(|h| h.0).unwrap_or(Decimal::ZERO)
    }

    /// What the specification says the answer to `cmd` must be.
    fn expect(&self, cmd: &PortfolioCommand) -> Expect {
        let idem = idem_of(cmd);
        if let Some((fp, reply, _)) = self.remembered.get(&idem.key) {
            return if *fp == idem.fingerprint {
                Expect::Replay(reply.clone())
            } else {
                Expect::KeyReused
            };
        }
        self.fresh_verdict(cmd)
    }

    /// The answer to `cmd` were its key not remembered: execute it, or refuse it and why.
    fn fresh_verdict(&self, cmd: &PortfolioCommand) -> Expect {
        match cmd {
            PortfolioCommand::CloseDay { .. } => panic!("the generator issues client requests only"),
            PortfolioCommand::Deposit { amount, .. } if !valid_cash(*amount) => Expect::Refuse(PortfolioRejection::InvalidAmount),
            PortfolioCommand::Deposit { .. } => Expect::Execute,
            PortfolioCommand::Withdraw { amount, .. } if !valid_cash(*amount) => Expect::Refuse(PortfolioRejection::InvalidAmount),
            PortfolioCommand::Withdraw { amount, .. } if *amount > self.cash => Expect::Refuse(PortfolioRejection::InsufficientFunds),
            PortfolioCommand::Withdraw { .. } => Expect::Execute,
            PortfolioCommand::PlaceOrder {
                symbol,
                side,
                quantity,
                quote,
                fees,
                ..
            } => {
                if !valid_quantity(*quantity) {
                    return Expect::Refuse(PortfolioRejection::InvalidQuantity);
                }
                let Some(quote) = quote else {
                    return Expect::Refuse(PortfolioRejection::UnknownInstrument);
                };
                let notional = cents(*quantity * quote.price);
                if notional <= Decimal::ZERO {
                    return Expect::Refuse(PortfolioRejection::InvalidQuantity);
                }
                let fee = fees.fee_for(notional);
                match side {
                    Side::Buy if notional + fee > self.cash => Expect::Refuse(PortfolioRejection::InsufficientFunds),
                    Side::Sell if self.held(symbol) < *quantity => Expect::Refuse(PortfolioRejection::InsufficientHoldings),
                    Side::Sell if self.cash + notional - fee < Decimal::ZERO => Expect::Refuse(PortfolioRejection::InsufficientFunds),
                    _ => Expect::Execute,
                }
            }
        }
    }
}

#[derive(Default, Debug)]
struct Coverage {
    steps: usize,
    deposits: usize,
    withdrawals: usize,
    buys: usize,
    partial_sells: usize,
    full_sells: usize,
    replays: usize,
    /// Replays whose stored answer is a refusal …
    refusal_replays: usize,
    /// … and among them those the rules would now accept (the reason is gone): a stale retry
    /// that must not execute.
    stale_refusals_held: usize,
    rejections: BTreeMap<&'static str, usize>,
}

struct PortfolioRun<'c> {
    state: Portfolio,
    ledger: Ledger,
    journal: Vec<PortfolioEvent>,
    rng: ChaCha20Rng,
    now: Timestamp,
    prices: [Option<Decimal>; 4],
    sent: Vec<PortfolioCommand>,
    coverage: &'c RefCell<Coverage>,
}

const OWNER: &str = "usr_0123456789abcdef0123456789abcdef";

impl<'c> PortfolioRun<'c> {
    fn new(seed: u64, prices: [Decimal; 3], coverage: &'c RefCell<Coverage>) -> Self {
        PortfolioRun {
            state: Portfolio::empty(OWNER),
            ledger: Ledger::default(),
            journal: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: Timestamp(START_MS),
            prices: [Some(prices[0]), Some(prices[1]), Some(prices[2]), None],
            sent: Vec::new(),
            coverage,
        }
    }

    fn quote(&self, symbol: &str) -> Option<OrderQuote> {
        let i = SYMBOLS.iter().position(|s| *s == symbol)?;
        self.prices[i].map(|price| OrderQuote { price, product: PLAIN_PRODUCT })
    }

    fn tag(key: &Key, step: usize, body: &[&str]) -> IdemTag {
        let key = match key {
            Key::Fresh => format!("fresh-{step}"),
            Key::Pool(i) => format!("pool-{i}"),
        };
        IdemTag {
            key,
            fingerprint: fingerprint(body),
        }
    }

    fn order(&self, symbol: usize, side: Side, quantity: Decimal, fees: &FeeSchedule, key: &Key, step: usize) -> PortfolioCommand {
        let symbol = SYMBOLS[symbol].to_string();
        let idem = Self::tag(key, step, &["POST", "/v1/portfolio/orders", &symbol, side.as_str(), &quantity.to_string()]);
        PortfolioCommand::PlaceOrder {
            investor: InvestorStatus::onboarded(7, true),
            quote: self.quote(&symbol),
            symbol,
            side,
            quantity,
            fees: fees.clone(),
            idem,
        }
    }

    /// Turns a generated operation into the command the host would build (or none).
    fn command(&mut self, op: &Op, step: usize) -> Option<PortfolioCommand> {
        Some(match op {
            Op::Deposit { amount, key } => PortfolioCommand::Deposit {
                amount: *amount,
                idem: Self::tag(key, step, &["POST", "/v1/portfolio/deposits", &amount.to_string()]),
            },
            Op::Withdraw { amount, key } => PortfolioCommand::Withdraw {
                amount: *amount,
                idem: Self::tag(key, step, &["POST", "/v1/portfolio/withdrawals", &amount.to_string()]),
                investor: InvestorStatus::onboarded(7, true),
            },
            Op::Buy { symbol, quantity, fees, key } => self.order(*symbol, Side::Buy, *quantity, fees, key, step),
            Op::Sell { symbol, quantity, fees, key } => {
                let held = self.ledger.held(SYMBOLS[*symbol]);
                let q = match quantity {
                    SellQty::Exact(q) => *q,
                    SellQty::PercentOfHolding(_) if held.is_zero() => Decimal::ONE,
                    SellQty::PercentOfHolding(100) => held,
                    SellQty::PercentOfHolding(p) => (held * Decimal::from(*p) / Decimal::from(100)).round_dp_with_strategy(6, RoundingStrategy::ToZero),
                    SellQty::MoreThanHeld => held + Decimal::new(1, 6),
                };
                self.order(*symbol, Side::Sell, q, fees, key, step)
            }
            Op::Tick { symbol, price } => {
                self.prices[*symbol] = Some(*price);
                return None;
            }
            Op::Retry { back } => {
                let mut cmd = self.sent.iter().rev().nth(*back)?.clone();
                // The host reads a fresh quote for every attempt; the key and body are the same.
                if let PortfolioCommand::PlaceOrder { symbol, quote, .. } = &mut cmd {
                    *quote = self.quote(symbol);
                }
                cmd
            }
        })
    }

    /// One command, driven like the production host, checked against the model.
    fn send(&mut self, cmd: PortfolioCommand, dt_ms: i64) -> Checked {
        self.now = self.now.plus_ms(dt_ms);
        self.sent.push(cmd.clone());
        let expected = self.ledger.expect(&cmd);
        let before = self.state.clone();

        let mut ctx = Ctx::new(self.now, &mut self.rng);
        let decided = self.state.decide(cmd.clone(), &mut ctx);
        let effects = ctx.take_effects();
        match decided {
            Ok(Decision { events, reply }) => {
                for e in &events {
                    self.state.apply(e);
                }
                match expected {
                    Expect::Execute => self.check_execution(&cmd, &before, &events, reply, &effects)?,
                    Expect::Refuse(r) => self.check_refusal(&cmd, r, &before, &events, reply, &effects)?,
                    Expect::Replay(first) => {
                        self.coverage.borrow_mut().replays += 1;
                        prop_assert!(events.is_empty(), "a replay emitted events: {:?}", events);
                        prop_assert_eq!(&reply, &first, "a replay must return the first reply");
                        prop_assert!(effects.is_empty(), "a replay must not audit a second time: {:?}", effects);
                        prop_assert_eq!(&self.state, &before);
                        prop_assert_eq!(codec::encode(&self.state), codec::encode(&before));
                        if let PortfolioReply::Refused(_) = first {
                            let mut c = self.coverage.borrow_mut();
                            c.refusal_replays += 1;
                            // The stale retry answered its refusal although it would now go through.
                            if let Expect::Execute = self.ledger.fresh_verdict(&cmd) {
                                c.stale_refusals_held += 1;
                            }
                        }
                    }
                    Expect::KeyReused => prop_assert!(false, "expected IdempotencyKeyReused for {:?}, got Ok({:?}, {:?})", cmd, events, reply),
                }
            }
            Err(rejection) => {
                *self.coverage.borrow_mut().rejections.entry(rejection.code()).or_default() += 1;
                match expected {
                    Expect::KeyReused => prop_assert_eq!(&rejection, &PortfolioRejection::IdempotencyKeyReused, "wrong rejection for {:?}", cmd),
                    other => prop_assert!(false, "expected {:?} for {:?}, got Err({:?})", other, cmd, rejection),
                }
                prop_assert_eq!(&self.state, &before, "a rejected command changed the state");
                prop_assert_eq!(
                    codec::encode(&self.state),
                    codec::encode(&before),
                    "a rejected command changed the encoded state"
                );
                let audit = only_audit(&effects)?;
                prop_assert_eq!(&audit.outcome, &Outcome::Refused(rejection.code().to_string()));
                prop_assert_eq!(audit.action.as_str(), "idempotency.check");
            }
        }
        self.coverage.borrow_mut().steps += 1;
        self.check_invariants()
    }

    /// A fresh request the rules refuse: one `Refused` event that moves nothing and remembers the
    /// key, the refusal as the reply, and one audit record of the refusal.
    fn check_refusal(
        &mut self,
        cmd: &PortfolioCommand,
        expected: PortfolioRejection,
        before: &Portfolio,
        events: &[PortfolioEvent],
        reply: PortfolioReply,
        effects: &[Effect],
    ) -> Checked {
        *self.coverage.borrow_mut().rejections.entry(expected.code()).or_default() += 1;
        let idem = idem_of(cmd);
        let event = PortfolioEvent::Refused {
            idem: idem.clone(),
            rejection: expected.clone(),
            at: self.now,
        };
        prop_assert_eq!(events, &[event.clone()][..], "wrong answer to {:?}", cmd);
        prop_assert_eq!(&reply, &PortfolioReply::Refused(expected.clone()));
        prop_assert_eq!(event.transaction(), None, "a refusal records no transaction");
        prop_assert_eq!(event.idem(), Some(idem));
        prop_assert_eq!(event.at(), self.now);

        // Nothing moves; the key is remembered with the refusal. (No run reaches 1 023 keys, so
        // pruning cannot take part here and the map grows by exactly this key.)
        let s = &self.state;
        prop_assert_eq!(&s.owner, &before.owner);
        prop_assert_eq!(s.cash, before.cash, "a refusal moved cash");
        prop_assert_eq!(&s.holdings, &before.holdings, "a refusal changed the holdings");
        prop_assert_eq!(&s.totals, &before.totals, "a refusal changed the totals");
        let mut idempotency = before.idempotency.clone();
        prop_assert!(!idempotency.contains_key(&idem.key), "a fresh key was already remembered");
        idempotency.insert(
            idem.key.clone(),
            Remembered {
                fingerprint: idem.fingerprint,
                reply: reply.clone(),
                at: self.now,
            },
        );
        prop_assert_eq!(&s.idempotency, &idempotency);

        let audit = only_audit(effects)?;
        prop_assert_eq!(&audit.outcome, &Outcome::Refused(expected.code().to_string()));
        match cmd {
            PortfolioCommand::CloseDay { .. } => return Err(TestCaseError::fail("the generator issues client requests only")),
            PortfolioCommand::Deposit { .. } => {
                prop_assert_eq!(audit.action.as_str(), "portfolio.deposit");
                prop_assert!(audit.details.is_empty(), "{:?}", audit.details);
            }
            PortfolioCommand::Withdraw { amount, .. } => {
                prop_assert_eq!(audit.action.as_str(), "portfolio.withdrawal");
                let details: BTreeMap<String, String> = match expected {
                    PortfolioRejection::InsufficientFunds => [("amount".to_string(), cash_text(*amount))].into(),
                    _ => BTreeMap::new(),
                };
                prop_assert_eq!(&audit.details, &details);
            }
            PortfolioCommand::PlaceOrder { symbol, side, quantity, .. } => {
                prop_assert_eq!(audit.action.as_str(), "order.place");
                let details: BTreeMap<String, String> = [
                    ("symbol".to_string(), symbol.clone()),
                    ("side".to_string(), side.as_str().to_string()),
                    ("quantity".to_string(), quantity.normalize().to_string()),
                ]
                .into();
                prop_assert_eq!(&audit.details, &details);
            }
        }

        let l = &mut self.ledger;
        l.remembered.insert(idem.key.clone(), (idem.fingerprint, reply, self.now));
        l.refusals += 1;
        self.journal.push(event);
        Ok(())
    }

    fn check_execution(
        &mut self,
        cmd: &PortfolioCommand,
        _before: &Portfolio,
        events: &[PortfolioEvent],
        reply: PortfolioReply,
        effects: &[Effect],
    ) -> Checked {
        prop_assert_eq!(events.len(), 1, "one command, one event: {:?}", events);
        let event = &events[0];
        prop_assert_eq!(event.idem(), Some(idem_of(cmd)));
        prop_assert_eq!(event.at(), self.now);
        let audit = only_audit(effects)?;
        prop_assert_eq!(&audit.outcome, &Outcome::Ok);
        let l = &mut self.ledger;
        let tx_id = match (cmd, event) {
            (PortfolioCommand::Deposit { amount, .. }, PortfolioEvent::Deposited { tx_id, amount: a, .. }) => {
                self.coverage.borrow_mut().deposits += 1;
                prop_assert_eq!(a, amount);
                l.cash += *amount;
                l.deposits += *amount;
                prop_assert_eq!(&reply, &PortfolioReply::Cash { cash: l.cash });
                prop_assert_eq!(audit.action.as_str(), "portfolio.deposit");
                prop_assert_eq!(detail(audit, "amount"), Some(cash_text(*amount)));
                tx_id
            }
            (PortfolioCommand::Withdraw { amount, .. }, PortfolioEvent::Withdrawn { tx_id, amount: a, .. }) => {
                self.coverage.borrow_mut().withdrawals += 1;
                prop_assert_eq!(a, amount);
                prop_assert!(*amount <= l.cash, "withdrew {} with only {} in cash", amount, l.cash);
                l.cash -= *amount;
                l.withdrawals += *amount;
                prop_assert_eq!(&reply, &PortfolioReply::Cash { cash: l.cash });
                prop_assert_eq!(audit.action.as_str(), "portfolio.withdrawal");
                prop_assert_eq!(detail(audit, "amount"), Some(cash_text(*amount)));
                tx_id
            }
            (
                PortfolioCommand::PlaceOrder {
                    symbol,
                    side,
                    quantity,
                    quote,
                    fees,
                    ..
                },
                PortfolioEvent::OrderFilled { tx_id, order, .. },
            ) => {
                let price = quote.as_ref().map(|q| q.price);
                prop_assert_eq!(Some(order.price), price, "filled at a price other than the quote");
                prop_assert_eq!(&order.symbol, symbol);
                prop_assert_eq!(order.side, *side);
                prop_assert_eq!(order.quantity, *quantity);
                prop_assert_eq!(order.executed_at, self.now);
                let notional = cents(*quantity * order.price);
                prop_assert_eq!(order.fees, fees.fee_for(notional));
                prop_assert!(order.fees >= fees.minimum && order.fees >= cents(notional * fees.commission_bps / Decimal::from(10_000)));
                prop_assert_eq!(&reply, &PortfolioReply::Order(order.clone()));
                let cash_before = l.cash;
                Self::book_order(l, order, notional, &mut self.coverage.borrow_mut())?;
                prop_assert!(l.cash >= Decimal::ZERO, "order took cash to {} (had {})", l.cash, cash_before);
                prop_assert!(l.order_ids.insert(order.order_id.clone()), "order id {} issued twice", order.order_id);
                prop_assert_eq!(audit.action.as_str(), "order.filled");
                prop_assert_eq!(detail(audit, "order_id"), Some(order.order_id.clone()));
                prop_assert_eq!(detail(audit, "symbol"), Some(symbol.clone()));
                prop_assert_eq!(detail(audit, "side"), Some(side.as_str().to_string()));
                prop_assert_eq!(detail(audit, "quantity"), Some(quantity.normalize().to_string()));
                prop_assert_eq!(detail(audit, "fees"), Some(cash_text(order.fees)));
                tx_id
            }
            _ => return Err(TestCaseError::fail(format!("{cmd:?} produced the wrong kind of event {event:?}"))),
        };
        prop_assert_eq!(detail(audit, "cash_after"), Some(cash_text(l.cash)));
        if !matches!(event, PortfolioEvent::OrderFilled { .. }) {
            prop_assert_eq!(detail(audit, "tx_id"), Some(tx_id.clone()));
        }
        prop_assert!(l.tx_ids.insert(tx_id.clone()), "transaction id {} issued twice", tx_id);
        prop_assert!(History::from_events(&self.journal).transactions.iter().all(|t| &t.tx_id != tx_id));
        let (kind, amount, order_id) = match event {
            PortfolioEvent::Deposited { amount, .. } => (TransactionKind::Deposit, *amount, None),
            PortfolioEvent::Withdrawn { amount, .. } => (TransactionKind::Withdrawal, -*amount, None),
            PortfolioEvent::OrderFilled { order, .. } if order.side == Side::Buy => (TransactionKind::Buy, order.cash_effect, Some(order.order_id.clone())),
            PortfolioEvent::OrderFilled { order, .. } => (TransactionKind::Sell, order.cash_effect, Some(order.order_id.clone())),
            PortfolioEvent::Refused { .. } | PortfolioEvent::DayClosed { .. } => return Err(TestCaseError::fail(format!("{cmd:?} was executed as {event:?}"))),
        };
        prop_assert_eq!(
            event.transaction(),
            Some(Transaction {
                tx_id: tx_id.clone(),
                kind,
                amount,
                order_id,
                at: self.now,
            })
        );
        let idem = idem_of(cmd);
        l.remembered.insert(idem.key.clone(), (idem.fingerprint, reply, self.now));
        self.journal.push(event.clone());
        Ok(())
    }

    /// Books a fill into the model: cash, holding, fees and realised P&L.
    fn book_order(l: &mut Ledger, order: &Order, notional: Decimal, coverage: &mut Coverage) -> Checked {
        let (held, basis) = l.holdings.get(&order.symbol).copied().unwrap_or_default();
        match order.side {
            Side::Buy => {
                coverage.buys += 1;
                prop_assert!(
                    notional + order.fees <= l.cash,
                    "buy spent {} + {} with only {} in cash",
                    notional,
                    order.fees,
                    l.cash
                );
                prop_assert_eq!(order.cash_effect, -(notional + order.fees));
                prop_assert_eq!(order.realised_pnl, Decimal::ZERO);
                l.holdings.insert(order.symbol.clone(), (held + order.quantity, basis + notional));
            }
            Side::Sell => {
                prop_assert!(order.quantity <= held, "sold {} of {} held", order.quantity, held);
                prop_assert_eq!(order.cash_effect, notional - order.fees);
                // The cost basis that left with the units, as the event states it.
                let removed = notional - order.realised_pnl;
                prop_assert!(removed >= Decimal::ZERO && removed <= basis, "removed basis {} outside [0, {}]", removed, basis);
                if order.quantity == held {
                    coverage.full_sells += 1;
                    prop_assert_eq!(removed, basis, "selling everything must release the whole basis");
                    l.holdings.remove(&order.symbol);
                } else {
                    coverage.partial_sells += 1;
                    let share = basis * order.quantity / held;
                    prop_assert!(
                        (removed - share).abs() <= Decimal::new(5_001, 6),
                        "removed basis {} is not the proportional share {}",
                        removed,
                        share
                    );
                    l.holdings.insert(order.symbol.clone(), (held - order.quantity, basis - removed));
                }
            }
        }
        l.cash += order.cash_effect;
        l.fees += order.fees;
        l.realised_pnl += order.realised_pnl;
        Ok(())
    }

    fn check_invariants(&self) -> Checked {
        let (s, l) = (&self.state, &self.ledger);
        prop_assert!(s.cash >= Decimal::ZERO, "cash negative: {}", s.cash);
        for (symbol, h) in &s.holdings {
            prop_assert!(h.quantity > Decimal::ZERO, "{} holding {} not positive", symbol, h.quantity);
            prop_assert!(h.cost_basis >= Decimal::ZERO, "{} cost basis {} negative", symbol, h.cost_basis);
        }
        let basis: Decimal = s.holdings.values().map(|h| h.cost_basis).sum();
        // The conservation law, from the events we saw …
        prop_assert_eq!(s.cash + basis, l.deposits - l.withdrawals - l.fees + l.realised_pnl);
        // … and from the state's own totals, which must agree with the events.
        let t = &s.totals;
        prop_assert_eq!(
            (t.deposits, t.withdrawals, t.fees, t.realised_pnl),
            (l.deposits, l.withdrawals, l.fees, l.realised_pnl)
        );
        prop_assert_eq!(s.cash + basis, t.deposits - t.withdrawals - t.fees + t.realised_pnl);
        prop_assert_eq!(s.cash, l.cash);
        // Compared without allocating: this runs after every step of every case.
        let holdings = || s.holdings.iter().map(|(k, h)| (k, (h.quantity, h.cost_basis)));
        prop_assert!(
            holdings().eq(l.holdings.iter().map(|(k, v)| (k, *v))),
            "holdings {:?} vs events {:?}",
            s.holdings,
            l.holdings
        );
        // Every executed money movement appears exactly once in the history the journal gives;
        // the refusals are in the journal but not in the history.
        let history = History::from_events(&self.journal);
        prop_assert_eq!(history.transactions.len() + l.refusals, self.journal.len());
        let tx_ids: BTreeSet<&str> = history.transactions.iter().map(|t| t.tx_id.as_str()).collect();
        prop_assert!(
            tx_ids.len() == history.transactions.len() && tx_ids.iter().copied().eq(l.tx_ids.iter().map(String::as_str)),
            "transactions {:?}",
            history.transactions
        );
        prop_assert!(
            history.orders.keys().eq(l.order_ids.iter()),
            "orders {:?} vs events {:?}",
            history.orders.keys(),
            l.order_ids
        );
        let remembered = || s.idempotency.iter().map(|(k, r)| (k, (&r.fingerprint, &r.reply, r.at)));
        prop_assert!(
            remembered().eq(l.remembered.iter().map(|(k, (f, r, at))| (k, (f, r, *at)))),
            "idempotency {:?} vs events {:?}",
            s.idempotency,
            l.remembered
        );
        s.check_invariants();
        Ok(())
    }
}

/// Rebuilds a portfolio from its journal: in memory, through the codec, and from a codec
/// snapshot taken after `cut` events plus the encoded tail.
fn check_portfolio_replay(live: &Portfolio, journal: &[PortfolioEvent], cut: Index) -> Checked {
    let mut rebuilt = Portfolio::empty(&live.owner);
    for e in journal {
        rebuilt.apply(e);
    }
    prop_assert_eq!(&rebuilt, live, "replaying the journal gave a different state");
    prop_assert_eq!(codec::encode(&rebuilt), codec::encode(live));

    let encoded: Vec<Vec<u8>> = journal.iter().map(codec::encode).collect();
    let decoded: Vec<PortfolioEvent> = encoded
        .iter()
        .map(|b| codec::decode(b))
        .collect::<Result<_, _>>()
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&decoded, &journal.to_vec(), "events changed through the codec");
    let mut from_disk = Portfolio::empty(&live.owner);
    for e in &decoded {
        from_disk.apply(e);
    }
    prop_assert_eq!(&from_disk, live, "replaying decoded events gave a different state");

    let state_bytes = codec::encode(live);
    let state_back: Portfolio = codec::decode(&state_bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&state_back, live);
    prop_assert_eq!(codec::encode(&state_back), state_bytes, "state re-encodes differently (Decimal scale lost?)");

    let cut = cut.index(journal.len() + 1);
    let mut prefix = Portfolio::empty(&live.owner);
    for e in &journal[..cut] {
        prefix.apply(e);
    }
    let mut resumed: Portfolio = codec::decode(&codec::encode(&prefix)).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    for bytes in &encoded[cut..] {
        resumed.apply(&codec::decode::<PortfolioEvent>(bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?);
    }
    prop_assert_eq!(&resumed, live, "snapshot after {} events + tail gave a different state", cut);
    Ok(())
}

#[test]
fn portfolio_random_command_sequences_keep_the_money_invariants() {
    let coverage = RefCell::new(Coverage::default());
    let strategy = (
        any::<u64>(),
        [price(), price(), price()],
        prop::collection::vec((op(), 1i64..=600_000), 1..=120),
        any::<Index>(),
    );
    run_or_panic(256, strategy, |(seed, prices, ops, cut)| {
        let mut run = PortfolioRun::new(seed, prices, &coverage);
        for (step, (op, dt_ms)) in ops.iter().enumerate() {
            if let Some(cmd) = run.command(op, step) {
                run.send(cmd, *dt_ms)?;
            }
        }
        check_portfolio_replay(&run.state, &run.journal, cut)
    });
    let c = coverage.into_inner();
    // The properties above are only as good as the branches they reached.
    assert!(c.steps > 5_000, "{c:?}");
    assert!(c.deposits > 500 && c.withdrawals > 100 && c.buys > 500, "{c:?}");
    assert!(c.partial_sells > 100 && c.full_sells > 50 && c.replays > 100, "{c:?}");
    // Retries of refused requests answered the refusal, also when the reason was gone.
    assert!(c.refusal_replays > 100 && c.stale_refusals_held > 5, "{c:?}");
    for code in [
        "invalid_amount",
        "invalid_quantity",
        "insufficient_funds",
        "insufficient_holdings",
        "unknown_instrument",
        "idempotency_key_reused",
    ] {
        assert!(c.rejections.get(code).copied().unwrap_or(0) > 20, "rejection {code} barely reached: {c:?}");
    }
}

/// Keys are pruned only every 1 023 insertions and then only when older than the retention
/// period: a retry within the retention period must always be recognised — a refused request's
/// retry too (every seventh request here overdraws) — and pruning must be a pure function of the
/// journal (replay gives the same map).
#[test]
fn idempotency_keys_are_remembered_for_the_retention_period() {
    let strategy = (any::<u64>(), prop::collection::vec((1i64..=500_000, 120_000i64..=300_000), 1_100..=1_400));
    run_or_panic(6, strategy, |(seed, deposits)| {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut state = Portfolio::empty(OWNER);
        let mut journal = Vec::new();
        let mut now = Timestamp(START_MS);
        let mut sent = Vec::new();
        for (i, (cents_amount, dt_ms)) in deposits.iter().enumerate() {
            now = now.plus_ms(*dt_ms);
            let amount = Decimal::new(*cents_amount, 2);
            let overdraw = i % 7 == 3;
            let cmd = if overdraw {
                let amount = state.cash + amount;
                let idem = IdemTag {
                    key: format!("wd-{i}"),
                    fingerprint: fingerprint(&["POST", "/v1/portfolio/withdrawals", &amount.to_string()]),
                };
                PortfolioCommand::Withdraw {
                    amount,
                    idem,
                    investor: InvestorStatus::onboarded(7, true),
                }
            } else {
                let idem = IdemTag {
                    key: format!("dep-{i}"),
                    fingerprint: fingerprint(&["POST", "/v1/portfolio/deposits", &amount.to_string()]),
                };
                PortfolioCommand::Deposit { amount, idem }
            };
            let mut ctx = Ctx::new(now, &mut rng);
            let Decision { events, reply } = state.decide(cmd.clone(), &mut ctx).map_err(|r| TestCaseError::fail(format!("{r:?}")))?;
            prop_assert_eq!(events.len(), 1);
            if overdraw {
                let refused = PortfolioEvent::Refused {
                    idem: idem_of(&cmd).clone(),
                    rejection: PortfolioRejection::InsufficientFunds,
                    at: now,
                };
                prop_assert_eq!(&events[0], &refused);
                prop_assert_eq!(&reply, &PortfolioReply::Refused(PortfolioRejection::InsufficientFunds));
            }
            for e in &events {
                state.apply(e);
            }
            journal.extend(events);
            sent.push((cmd, now, reply));
        }
        prop_assert!(state.idempotency.len() < deposits.len(), "the run never pruned; it tests nothing");
        let (mut recognised, mut refusals_recognised) = (0, 0);
        for (cmd, at, first) in &sent {
            if now.millis() - at.millis() >= IDEMPOTENCY_RETENTION_MS {
                continue;
            }
            let mut ctx = Ctx::new(now.plus_ms(1), &mut rng);
            let retry = state.decide(cmd.clone(), &mut ctx);
            prop_assert_eq!(
                retry,
                Ok(Decision::replay(first.clone())),
                "a retry {} ms after the request was not recognised",
                now.millis() - at.millis()
            );
            prop_assert!(ctx.effects().is_empty());
            recognised += 1;
            if let PortfolioReply::Refused(_) = first {
                refusals_recognised += 1;
            }
        }
        prop_assert!(
            recognised > 0 && refusals_recognised > 0,
            "{} retries recognised, {} of refusals",
            recognised,
            refusals_recognised
        );
        let mut rebuilt = Portfolio::empty(OWNER);
        for e in &journal {
            rebuilt.apply(e);
        }
        prop_assert_eq!(&rebuilt, &state);
        Ok(())
    });
}

/// Every price the instrument accepts and every valid quantity must get an answer — a fill or a
/// rejection — never a panic of the entity (DESIGN.md §7). `money::max_amount` documents itself
/// as the largest order notional accepted, "keeping every sum far from Decimal's range".
///
/// Regression: `decide_order` once computed `quantity * price` unchecked, so e.g. 1 000 000 000
/// units at 10^20 panicked with "Multiplication overflowed". Orders at any quote must be answered.
#[test]
fn orders_at_any_accepted_price_are_answered_without_panicking() {
    let big_price = prop_oneof![
        (1i64..=1_000_000_000, 0u32..=4).prop_map(|(m, s)| Decimal::new(m, s)),
        (any::<u32>(), any::<u32>(), any::<u32>(), 0u32..=4).prop_map(|(lo, mid, hi, s)| Decimal::from_parts(lo, mid, hi, false, s)),
    ]
    .prop_filter("positive", |p| *p > Decimal::ZERO);
    let quantity = prop_oneof![
        (1i64..=1_000_000_000).prop_map(Decimal::from),
        (1i64..=1_000_000_000_000_000).prop_map(|m| Decimal::new(m, 6))
    ];
    let strategy = (quantity, big_price, any::<bool>(), fee_schedule(), any::<u64>());
    run_or_panic(256, strategy, |(quantity, price, sell, fees, seed)| {
        // The instrument accepts the price: it is what an order would be quoted.
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut instrument = Instrument::empty(INSTRUMENT);
        let listed = instrument.decide(
            InstrumentCommand::List {
                listing: listings()[0].clone(),
                price,
            },
            &mut Ctx::new(Timestamp(START_MS), &mut rng),
        );
        // Prices above the sanity bound are refused at listing; the portfolio must still answer
        // (not panic) if such a quote ever reached it, so the order path is exercised either way.
        match listed {
            Ok(Decision { events, .. }) => {
                events.iter().for_each(|e| instrument.apply(e));
                prop_assert_eq!(instrument.price, price);
            }
            Err(r) => {
                prop_assert_eq!(r, moneta::domain::instrument::InstrumentRejection::InvalidPrice);
                prop_assert!(price > moneta::domain::money::max_price());
            }
        }

        // A portfolio holding `quantity` units bought cheaply (one tick), with cash to spare.
        let mut portfolio = Portfolio::empty(OWNER);
        let step = |portfolio: &mut Portfolio, cmd: PortfolioCommand, rng: &mut ChaCha20Rng| {
            let mut ctx = Ctx::new(Timestamp(START_MS + 1), rng);
            let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| portfolio.decide(cmd.clone(), &mut ctx)));
            if let Ok(Ok(Decision { events, .. })) = &decided {
                events.iter().for_each(|e| portfolio.apply(e));
            }
            decided.map_err(|_| format!("decide panicked on {cmd:?}"))
        };
        let idem = |k: &str| IdemTag {
            key: k.to_string(),
            fingerprint: fingerprint(&[k]),
        };
        let setup = [
            PortfolioCommand::Deposit {
                amount: max_amount(),
                idem: idem("d1"),
            },
            PortfolioCommand::PlaceOrder {
                investor: InvestorStatus::onboarded(7, true),
                symbol: INSTRUMENT.to_string(),
                side: Side::Buy,
                quantity,
                quote: Some(OrderQuote {
                    price: Decimal::new(1, 4),
                    product: PLAIN_PRODUCT,
                }),
                fees: FeeSchedule {
                    commission_bps: Decimal::ZERO,
                    minimum: Decimal::ZERO,
                },
                idem: idem("b1"),
            },
        ];
        if sell {
            for cmd in setup {
                let _ = step(&mut portfolio, cmd, &mut rng).map_err(TestCaseError::fail)?;
            }
        }
        let side = if sell && portfolio.holdings.contains_key(INSTRUMENT) {
            Side::Sell
        } else {
            Side::Buy
        };
        let order = PortfolioCommand::PlaceOrder {
            investor: InvestorStatus::onboarded(7, true),
            symbol: INSTRUMENT.to_string(),
            side,
            quantity,
            quote: Some(OrderQuote { price, product: PLAIN_PRODUCT }),
            fees: fees.clone(),
            idem: idem("o1"),
        };
        let before = portfolio.clone();
        let answer = step(&mut portfolio, order, &mut rng).map_err(TestCaseError::fail)?;
        // The key is fresh, so the answer is a fill or a remembered refusal, never an `Err`.
        match &answer {
            Ok(Decision {
                events,
                reply: PortfolioReply::Order(order),
            }) => {
                prop_assert!(
                    matches!(events.as_slice(), [PortfolioEvent::OrderFilled { order: o, .. }] if o == order),
                    "{:?}",
                    events
                );
            }
            Ok(Decision {
                events,
                reply: PortfolioReply::Refused(r),
            }) => {
                prop_assert!(
                    matches!(
                        r,
                        PortfolioRejection::InvalidQuantity | PortfolioRejection::InsufficientFunds | PortfolioRejection::InsufficientHoldings
                    ),
                    "refused {:?}",
                    r
                );
                prop_assert!(
                    matches!(events.as_slice(), [PortfolioEvent::Refused { rejection, at, .. }] if rejection == r && *at == Timestamp(START_MS + 1)),
                    "{:?}",
                    events
                );
                prop_assert_eq!(
                    (portfolio.cash, &portfolio.holdings, &portfolio.totals),
                    (before.cash, &before.holdings, &before.totals)
                );
            }
            other => prop_assert!(false, "order at {} × {} answered {:?}", quantity, price, other),
        }
        portfolio.check_invariants();
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Instrument.

const INSTRUMENT: &str = "ACME";

fn listings() -> [Listing; 3] {
    let listing = |name: &str, kind: InstrumentKind, risk_class| Listing {
        symbol: INSTRUMENT.to_string(),
        name: name.to_string(),
        kind,
        complex: kind.is_complex(),
        currency: "EUR".to_string(),
        risk_class,
    };
    [
        listing("Acme Corp", InstrumentKind::Equity, 4),
        listing("Acme Tracker", InstrumentKind::Etf, 3),
        listing("Acme Turbo", InstrumentKind::Derivative, 7),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ListingFault {
    None,
    WrongSymbol,
    ComplexFlagWrong,
}

#[derive(Clone, Debug)]
enum InstrumentOp {
    List { variant: usize, fault: ListingFault, price: Decimal },
    Tick { price: Decimal },
}

fn instrument_price() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        6 => price(),
        1 => prop_oneof![Just(Decimal::ZERO), Just(Decimal::new(0, 4))],
        1 => price().prop_map(|p| -p),
    ]
}

fn instrument_op() -> impl Strategy<Value = InstrumentOp> {
    let fault = prop_oneof![6 => Just(ListingFault::None), 1 => Just(ListingFault::WrongSymbol), 1 => Just(ListingFault::ComplexFlagWrong)];
    prop_oneof![
        1 => (0usize..3, fault, instrument_price()).prop_map(|(variant, fault, price)| InstrumentOp::List { variant, fault, price }),
        4 => instrument_price().prop_map(|price| InstrumentOp::Tick { price }),
    ]
}

#[derive(Default, Debug)]
struct InstrumentCoverage {
    listed: usize,
    ticks: usize,
    relists: usize,
    rejections: BTreeMap<String, usize>,
}

#[test]
fn instrument_random_ticks_keep_a_positive_price_and_replay_exactly() {
    let coverage = RefCell::new(InstrumentCoverage::default());
    let strategy = (any::<u64>(), prop::collection::vec((instrument_op(), 1i64..=60_000), 1..=60), any::<Index>());
    run_or_panic(256, strategy, |(seed, ops, cut)| {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut state = Instrument::empty(INSTRUMENT);
        let mut journal: Vec<InstrumentEvent> = Vec::new();
        let mut now = Timestamp(START_MS);
        // The model: the listing, price and time the instrument must show.
        let (mut listing, mut price, mut as_of): (Option<Listing>, Decimal, Timestamp) = (None, Decimal::ZERO, Timestamp(0));
        for (op, dt_ms) in ops {
            now = now.plus_ms(dt_ms);
            let (cmd, expected) = match op {
                InstrumentOp::List { variant, fault, price: p } => {
                    let mut l = listings()[variant].clone();
                    match fault {
                        ListingFault::None => {}
                        ListingFault::WrongSymbol => l.symbol = "OTHER".to_string(),
                        ListingFault::ComplexFlagWrong => l.complex = !l.complex,
                    }
                    // A malformed listing must be refused; which code it gets is not pinned here
                    // (today `InvalidPrice`, see the report). `Err(None)` means any rejection.
                    let expected = if fault != ListingFault::None {
                        Err(None)
                    } else if p <= Decimal::ZERO {
                        Err(Some(InstrumentRejection::InvalidPrice))
                    } else {
                        match &listing {
                            Some(existing) if *existing == l => Ok(None),
                            Some(_) => Err(Some(InstrumentRejection::ListingConflict)),
                            None => Ok(Some(InstrumentEvent::Listed {
                                listing: l.clone(),
                                price: p,
                                at: now,
                            })),
                        }
                    };
                    (InstrumentCommand::List { listing: l, price: p }, expected)
                }
                InstrumentOp::Tick { price: p } => {
                    let expected = if listing.is_none() {
                        Err(Some(InstrumentRejection::UnknownInstrument))
                    } else if p <= Decimal::ZERO {
                        Err(Some(InstrumentRejection::InvalidPrice))
                    } else {
                        Ok(Some(InstrumentEvent::Priced { price: p, at: now }))
                    };
                    (InstrumentCommand::Tick { price: p }, expected)
                }
            };
            let before = state.clone();
            let before_bytes = codec::encode(&state);
            let mut ctx = Ctx::new(now, &mut rng);
            let decided = state.decide(cmd.clone(), &mut ctx);
            match decided {
                Ok(Decision { events, reply: () }) => {
                    for e in &events {
                        state.apply(e);
                    }
                    match expected {
                        Ok(Some(event)) => {
                            prop_assert_eq!(&events, &vec![event.clone()], "for {:?}", cmd);
                            match event {
                                InstrumentEvent::Listed { listing: l, price: p, at } => {
                                    coverage.borrow_mut().listed += 1;
                                    (listing, price, as_of) = (Some(l), p, at);
                                }
                                InstrumentEvent::Priced { price: p, at } => {
                                    coverage.borrow_mut().ticks += 1;
                                    (price, as_of) = (p, at);
                                }
                                InstrumentEvent::Recorded { .. } => prop_assert!(false, "the model expects no recorded prices"),
                            }
                        }
                        Ok(None) => {
                            coverage.borrow_mut().relists += 1;
                            prop_assert!(events.is_empty(), "an identical listing must be a no-op: {:?}", events);
                            prop_assert_eq!(&state, &before);
                        }
                        Err(r) => prop_assert!(false, "expected {:?} for {:?}, got {:?}", r, cmd, events),
                    }
                    journal.extend(events);
                }
                Err(rejection) => {
                    *coverage.borrow_mut().rejections.entry(format!("{rejection:?}")).or_default() += 1;
                    match &expected {
                        Err(Some(r)) => prop_assert_eq!(&rejection, r, "for {:?}", cmd),
                        Err(None) => {}
                        Ok(_) => prop_assert!(false, "expected {:?} for {:?}, got {:?}", expected, cmd, rejection),
                    }
                    prop_assert_eq!(&state, &before, "a rejected command changed the instrument");
                    prop_assert_eq!(codec::encode(&state), before_bytes);
                }
            }
            prop_assert_eq!(&state.symbol, INSTRUMENT);
            prop_assert_eq!(&state.listing, &listing);
            prop_assert_eq!(state.price, price);
            prop_assert_eq!(state.as_of, as_of);
            if state.listing.is_some() {
                prop_assert!(state.price > Decimal::ZERO, "listed with price {}", state.price);
            }
            prop_assert_eq!(state.quote().map(|q| (q.listing, q.price, q.as_of)), listing.clone().map(|l| (l, price, as_of)));
            state.check_invariants();
        }

        let mut rebuilt = Instrument::empty(INSTRUMENT);
        for e in &journal {
            rebuilt.apply(e);
        }
        prop_assert_eq!(&rebuilt, &state);
        let encoded: Vec<Vec<u8>> = journal.iter().map(codec::encode).collect();
        let mut from_disk = Instrument::empty(INSTRUMENT);
        for (bytes, original) in encoded.iter().zip(&journal) {
            let e: InstrumentEvent = codec::decode(bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(&e, original);
            from_disk.apply(&e);
        }
        prop_assert_eq!(&from_disk, &state);
        let state_bytes = codec::encode(&state);
        let back: Instrument = codec::decode(&state_bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&back, &state);
        prop_assert_eq!(codec::encode(&back), state_bytes);
        let cut = cut.index(journal.len() + 1);
        let mut prefix = Instrument::empty(INSTRUMENT);
        for e in &journal[..cut] {
            prefix.apply(e);
        }
        let mut resumed: Instrument = codec::decode(&codec::encode(&prefix)).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        for e in &journal[cut..] {
            resumed.apply(e);
        }
        prop_assert_eq!(&resumed, &state);
        Ok(())
    });
    let c = coverage.into_inner();
    assert!(c.listed > 100 && c.ticks > 1_000 && c.relists > 20, "{c:?}");
    for r in ["UnknownInstrument", "InvalidPrice", "ListingConflict"] {
        assert!(c.rejections.get(r).copied().unwrap_or(0) > 20, "rejection {r} barely reached: {c:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Codec robustness: corrupt bytes are an error (or, rarely, another valid value), never a panic.

fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..=28).prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale)),
        (any::<i64>(), 0u32..=8).prop_map(|(m, s)| Decimal::new(m, s)),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{3}_[0-9a-f]{0,32}", "\\PC{0,12}"]
}

fn any_idem() -> impl Strategy<Value = IdemTag> {
    (any_text(), any::<[u8; 32]>()).prop_map(|(key, fingerprint)| IdemTag { key, fingerprint })
}

fn any_portfolio_event() -> impl Strategy<Value = PortfolioEvent> {
    let order = (
        any_text(),
        any_text(),
        any::<bool>(),
        [any_decimal(), any_decimal(), any_decimal(), any_decimal(), any_decimal()],
        any::<i64>(),
    )
        .prop_map(|(order_id, symbol, buy, [quantity, price, fees, cash_effect, realised_pnl], at)| Order {
            order_id,
            symbol,
            side: if buy { Side::Buy } else { Side::Sell },
            quantity,
            price,
            fees,
            cash_effect,
            realised_pnl,
            executed_at: Timestamp(at),
        });
    prop_oneof![
        (any_text(), any_decimal(), any::<i64>(), any_idem()).prop_map(|(tx_id, amount, at, idem)| PortfolioEvent::Deposited {
            tx_id,
            amount,
            at: Timestamp(at),
            idem
        }),
        (any_text(), any_decimal(), any::<i64>(), any_idem()).prop_map(|(tx_id, amount, at, idem)| PortfolioEvent::Withdrawn {
            tx_id,
            amount,
            at: Timestamp(at),
            idem
        }),
        (any_text(), order, any_idem()).prop_map(|(tx_id, order, idem)| PortfolioEvent::OrderFilled { tx_id, order, idem }),
        (any_idem(), any_rejection(), any::<i64>()).prop_map(|(idem, rejection, at)| PortfolioEvent::Refused {
            idem,
            rejection,
            at: Timestamp(at)
        }),
    ]
}

fn any_rejection() -> impl Strategy<Value = PortfolioRejection> {
    prop_oneof![
        Just(PortfolioRejection::InvalidAmount),
        Just(PortfolioRejection::InvalidQuantity),
        Just(PortfolioRejection::InsufficientFunds),
        Just(PortfolioRejection::InsufficientHoldings),
        Just(PortfolioRejection::UnknownInstrument),
        Just(PortfolioRejection::IdempotencyKeyReused),
    ]
}

/// If corrupt bytes happen to decode, the value must be a fixed point of the codec.
fn check_decoded_round_trips(bytes: &[u8]) -> Checked {
    if let Ok(e) = codec::decode::<PortfolioEvent>(bytes) {
        prop_assert_eq!(codec::decode::<PortfolioEvent>(&codec::encode(&e)), Ok(e));
    }
    Ok(())
}

/// `PortfolioEvent::Deposited` with the amount as free text: bincode encodes a `serde-str`
/// Decimal as a string, so this puts arbitrary text where the decoder parses a Decimal.
#[derive(serde::Serialize)]
enum DepositedWithTextAmount {
    Deposited {
        tx_id: String,
        amount: String,
        at: Timestamp,
        idem: IdemTag,
    },
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    #[test]
    fn codec_round_trips_events_and_rejects_every_truncation(event in any_portfolio_event()) {
        let bytes = codec::encode(&event);
        let back: PortfolioEvent = codec::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&back, &event);
        prop_assert_eq!(codec::encode(&back), bytes.clone(), "Decimal scale or text changed through the codec");
        for len in 0..bytes.len() {
            prop_assert!(codec::decode::<PortfolioEvent>(&bytes[..len]).is_err(), "a {}-byte prefix of {} bytes decoded", len, bytes.len());
        }
    }

    #[test]
    fn codec_never_panics_on_bit_flips(event in any_portfolio_event(), flips in prop::collection::vec((any::<Index>(), 0u8..8), 1..=4)) {
        let mut bytes = codec::encode(&event);
        for (at, bit) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        check_decoded_round_trips(&bytes)?;
        // The version byte is checked before anything else.
        if bytes[0] != codec::FORMAT_VERSION {
            prop_assert_eq!(codec::decode::<PortfolioEvent>(&bytes), Err(codec::CodecError::UnknownVersion(bytes[0])));
        }
    }

    #[test]
    fn codec_never_panics_on_random_bytes(body in prop::collection::vec(any::<u8>(), 0..400), versioned in any::<bool>()) {
        let bytes: Vec<u8> = if versioned { std::iter::once(codec::FORMAT_VERSION).chain(body).collect() } else { body };
        check_decoded_round_trips(&bytes)?;
        if let Ok(state) = codec::decode::<Portfolio>(&bytes) {
            prop_assert_eq!(codec::decode::<Portfolio>(&codec::encode(&state)), Ok(state));
        }
        if let Ok(e) = codec::decode::<InstrumentEvent>(&bytes) {
            prop_assert_eq!(codec::decode::<InstrumentEvent>(&codec::encode(&e)), Ok(e));
        }
        if bytes.is_empty() {
            prop_assert_eq!(codec::decode::<PortfolioEvent>(&bytes), Err(codec::CodecError::Empty));
        }
    }

    #[test]
    fn codec_parses_decimal_text_like_rust_decimal_and_never_panics(
        amount in prop_oneof![
            "[-+]?[0-9_]{0,34}(\\.[0-9_]{0,34})?([eE][-+]?[0-9]{0,12})?",
            "\\PC{0,24}",
            any_decimal().prop_map(|d| d.to_string()),
        ],
        idem in any_idem(),
    ) {
        let record = DepositedWithTextAmount::Deposited { tx_id: "txn_1".to_string(), amount: amount.clone(), at: Timestamp(START_MS), idem: idem.clone() };
        let decoded = codec::decode::<PortfolioEvent>(&codec::encode(&record));
        let parsed = Decimal::from_str(&amount).or_else(|_| Decimal::from_scientific(&amount));
        match (decoded, parsed) {
            (Ok(PortfolioEvent::Deposited { amount: got, tx_id, idem: got_idem, .. }), Ok(want)) => {
                prop_assert_eq!(got, want);
                prop_assert_eq!(tx_id, "txn_1");
                prop_assert_eq!(got_idem, idem);
            }
            (Err(codec::CodecError::Malformed(_)), Err(_)) => {}
            (decoded, parsed) => prop_assert!(false, "codec said {:?} but rust_decimal says {:?} for {:?}", decoded, parsed, amount),
        }
    }
}

/// An ordinary product every onboarded investor of these tests may buy.
const PLAIN_PRODUCT: ProductFacts = ProductFacts { complex: false, risk_class: 1 };
