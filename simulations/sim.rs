//! The discrete-event loop: simulated time, the seeded market, the users' requests, and the
//! checks after every decision, every step, every day and at the end.

use crate::advisory::{Advisee, Advisory};
use crate::oracle;
use crate::scenario::Scenario;
use crate::workload::{self, Action, Request};
use moneta::config::Config;
use moneta::domain::audit::{AuditDraft, AuditRecord, Outcome};
use moneta::domain::compliance::InvestorStatus;
use moneta::domain::ctx::{Ctx, Effect};
use moneta::domain::entity::{Decision, Entity};
use moneta::domain::fees::FeeSchedule;
use moneta::domain::ids::{EntityId, EntityKind};
use moneta::domain::instrument::{Instrument, InstrumentCommand, InstrumentEvent, InstrumentRejection, Listing};
use moneta::domain::kyc::KycStatus;
use moneta::domain::market::{gbm_step, GbmParams};
use moneta::domain::money::{cash_string, round_cash};
use moneta::domain::portfolio::{
    History, Holding, IdemTag, OrderQuote, Portfolio, PortfolioEvent, PortfolioRejection, PortfolioReply, ProductFacts, Side, Totals, IDEMPOTENCY_RETENTION_MS,
};
use moneta::domain::screening::ScreeningStatus;
use moneta::domain::time::{Date, Timestamp, MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE, MS_PER_SECOND};
use moneta::storage::audit_log::ChainHead;
use moneta::storage::codec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

/// One step per simulated minute of a 6.5-hour trading day.
pub const STEP_MS: i64 = MS_PER_MINUTE;
pub const STEPS_PER_DAY: i64 = 390;
/// Each user acts in a step with this probability (per mille).
pub const ACTIVE_PER_MILLE: u32 = 50;
/// How many recent decided requests (accepted or refused) per user are kept for re-sending.
const RECENT: usize = 8;
/// The actor and request id of the listings at start-up, as the node issues them.
const SYSTEM_ACTOR: &str = "system";
const LISTING_REQUEST: &str = "startup-listing";

/// The independent random streams, all of one ChaCha20 key derived from the seed.
pub const STREAM_MARKET: u64 = 1;
pub const STREAM_WORKLOAD: u64 = 2;
pub const STREAM_IDS: u64 = 3;
/// Scenario runs only: the advised users (questionnaires, check-ins, flows) and the compliance
/// officer (review delays and decisions).
pub const STREAM_ADVICE: u64 = 4;
pub const STREAM_REVIEW: u64 = 5;

pub fn stream(seed: u64, stream: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

thread_local! {
    /// Where the simulation is, for the panic hook: (step, simulated time in ms).
    pub static POSITION: Cell<(i64, i64)> = const { Cell::new((0, 0)) };
}

/// The first trading day: Monday 2026-01-05, market open 14:30 UTC.
pub fn first_open() -> Timestamp {
    let day = Date::parse("2026-01-05").expect("valid date").days_since_epoch();
    Timestamp(day * MS_PER_DAY + 14 * MS_PER_HOUR + 30 * MS_PER_MINUTE)
}

/// The opening time of trading day `d` (0-based), skipping weekends.
pub fn open_of_day(d: i64) -> Timestamp {
    let calendar = d + 2 * (d / 5);
    first_open().plus_ms(calendar * MS_PER_DAY)
}

#[derive(Debug)]
pub struct Failure {
    pub step: i64,
    pub at: Timestamp,
    pub message: String,
}

pub struct Args {
    pub seed: u64,
    /// Self-directed users running the random workload (without a scenario), or the advised
    /// users (with one: its `traders` run the random workload beside them).
    pub users: usize,
    pub days: i64,
    /// Corrupt one journal entry before the final replay (proves the replay check bites).
    pub sabotage_journal: bool,
    pub scenario: Option<Scenario>,
}

/// A decided request and its first answer (a fill, a cash balance, or a refusal): the portfolio
/// remembers every one of them under its key.
#[derive(Clone)]
pub(crate) struct Sent {
    request: Request,
    idem: IdemTag,
    pub(crate) reply: PortfolioReply,
    at: Timestamp,
}

pub(crate) struct User {
    pub(crate) id: String,
    /// KYC, screening and suitability as the user's account would record them (drawn per user;
    /// an advised user's come from their account).
    pub(crate) investor: InvestorStatus,
    pub(crate) state: Portfolio,
    journal: Vec<PortfolioEvent>,
    pub(crate) recent: VecDeque<Sent>,
    /// The latest refused request, kept for one retry with its key.
    refused: Option<Sent>,
    pub(crate) touched_step: i64,
    /// Scenario runs: an advised user has an account and takes advice instead of the random
    /// workload.
    pub(crate) advisee: Option<Box<Advisee>>,
}

impl User {
    fn new(id: String, investor: InvestorStatus, advisee: Option<Box<Advisee>>) -> User {
        User {
            investor,
            state: Portfolio::empty(&id),
            id,
            journal: Vec::new(),
            recent: VecDeque::new(),
            refused: None,
            touched_step: -1,
            advisee,
        }
    }
}

pub(crate) struct Market {
    params: GbmParams,
    pub(crate) opening: Decimal,
    pub(crate) listing: Listing,
    pub(crate) state: Instrument,
    journal: Vec<InstrumentEvent>,
}

/// What the simulator expects of one request.
pub(crate) enum Expect {
    /// A key the portfolio does not remember: the oracle decides.
    Fresh,
    /// A re-sent request (accepted or refused the first time): the stored reply and nothing else.
    Replay(PortfolioReply),
    /// A remembered key with another fingerprint.
    KeyReused,
}

/// The parts of a portfolio a request may touch, taken before deciding.
#[derive(PartialEq)]
struct Pre {
    cash: Decimal,
    /// The holding of the request's symbol (empty if none) …
    holding: Holding,
    /// … and all of them.
    holdings: BTreeMap<String, Holding>,
    totals: Totals,
    /// Transactions, orders, remembered keys, journal length.
    counts: (usize, usize, usize, usize),
}

impl Pre {
    fn of(user: &User, symbol: Option<&str>) -> Pre {
        let s = &user.state;
        Pre {
            cash: s.cash,
            holding: symbol.and_then(|sym| s.holdings.get(sym).cloned()).unwrap_or_default(),
            holdings: s.holdings.clone(),
            totals: s.totals.clone(),
            counts: {
                // The history (transactions, orders) is the journal, as in production.
                let history = History::from_events(&user.journal);
                (history.transactions.len(), history.orders.len(), s.idempotency.len(), user.journal.len())
            },
        }
    }
}

#[derive(Default)]
pub struct Stats {
    pub commands: u64,
    pub deposits: u64,
    pub withdrawals: u64,
    pub orders: u64,
    pub buys_filled: u64,
    pub sells_filled: u64,
    pub accepted: u64,
    pub rejections: BTreeMap<&'static str, u64>,
    pub replays: u64,
    pub key_reuses: u64,
    pub retries: u64,
    /// Re-sent refused requests (retries and re-sends) that answered the stored refusal …
    pub refusal_replays: u64,
    /// … of which the oracle would now accept as a fresh request: stale retries held back.
    pub stale_refusals_held: u64,
    pub portfolio_refusals: u64,
    pub audit_ok: u64,
    pub audit_refused: u64,
    pub portfolio_events: u64,
    pub instrument_events: u64,
    pub instrument_replays: u64,
    pub deposited: Decimal,
    pub withdrawn: Decimal,
    pub fees: Decimal,
}

pub struct Sim {
    pub(crate) args: Args,
    pub(crate) fees: FeeSchedule,
    market_rng: ChaCha20Rng,
    workload_rng: ChaCha20Rng,
    pub(crate) ids_rng: ChaCha20Rng,
    pub(crate) instruments: BTreeMap<String, Market>,
    pub(crate) symbols: Vec<String>,
    pub(crate) users: Vec<User>,
    pub(crate) now: Timestamp,
    pub(crate) step: i64,
    last_tick: Timestamp,
    /// The audit chain as the node's journal seals it (same code: `ChainHead::append`).
    audit: ChainHead,
    pub stats: Stats,
    /// Scenario runs: the advised users' world (advice, reviews, value series).
    pub(crate) advisory: Option<Advisory>,
}

/// A user's onboarding state: most are fully onboarded with a risk score of 1–7 (half may hold
/// complex products); some have not finished KYC, have an unresolved screening hit, or have not
/// answered the questionnaire — their orders must be refused by the compliance rules.
fn draw_investor(rng: &mut ChaCha20Rng) -> InvestorStatus {
    let mut i = InvestorStatus::onboarded(rng.random_range(1..=7u8), rng.random_bool(0.5));
    match rng.random_range(0..100u32) {
        0..=4 => i.kyc = KycStatus::Pending,
        5..=9 => i.screening = ScreeningStatus::PotentialMatch,
        10..=14 => i.risk_score = None,
        _ => {}
    }
    i
}

/// Runs one command through decide → apply, journalling the events.
pub(crate) fn execute<E: Entity>(
    state: &mut E,
    journal: &mut Vec<E::Event>,
    cmd: E::Command,
    ctx: &mut Ctx<'_>,
) -> Result<Decision<E::Event, E::Reply>, E::Rejection> {
    let decision = state.decide(cmd, ctx)?;
    for event in &decision.events {
        state.apply(event);
        journal.push(event.clone());
    }
    Ok(decision)
}

/// The symbols the node lists at start-up (from the embedded configuration).
pub fn listed_symbols() -> Result<Vec<String>, String> {
    let config = Config::load_with_env(None, &[]).map_err(|e| format!("embedded config: {}", e.0))?;
    let symbols: std::collections::BTreeSet<String> = config.market.instruments.iter().map(|i| i.symbol.clone()).collect();
    Ok(symbols.into_iter().collect())
}

impl Sim {
    pub fn new(args: Args) -> Result<Sim, String> {
        let config = Config::load_with_env(None, &[]).map_err(|e| format!("embedded config: {}", e.0))?;
        let mut ids_rng = stream(args.seed, STREAM_IDS);
        let mut instruments = BTreeMap::new();
        for ic in &config.market.instruments {
            let listing = ic.listing(&config.portfolio.currency);
            let market = Market {
                params: GbmParams {
                    drift: ic.drift,
                    volatility: ic.volatility,
                },
                opening: ic.price,
                listing,
                state: Instrument::empty(&ic.symbol),
                journal: Vec::new(),
            };
            instruments.insert(ic.symbol.clone(), market);
        }
        let symbols: Vec<String> = instruments.keys().cloned().collect();
        let traders = args.scenario.as_ref().map_or(args.users, |s| s.traders);
        let mut users: Vec<User> = (0..traders)
            .map(|_| {
                let id = moneta::domain::ids::new_id("usr", &mut ids_rng);
                let investor = draw_investor(&mut ids_rng);
                User::new(id, investor, None)
            })
            .collect();
        let advisory = match &args.scenario {
            Some(scenario) => {
                let (advisory, advisees) = Advisory::new(scenario.clone(), args.seed, args.users, &config, &mut ids_rng);
                for (id, advisee) in advisees {
                    // Not onboarded until the account says so (at the start of the run).
                    let investor = InvestorStatus {
                        kyc: KycStatus::Pending,
                        screening: ScreeningStatus::PotentialMatch,
                        risk_score: None,
                        complex_products_allowed: false,
                    };
                    users.push(User::new(id, investor, Some(Box::new(advisee))));
                }
                Some(advisory)
            }
            None => None,
        };
        Ok(Sim {
            fees: config.fees.schedule(),
            market_rng: stream(args.seed, STREAM_MARKET),
            workload_rng: stream(args.seed, STREAM_WORKLOAD),
            ids_rng,
            instruments,
            symbols,
            users,
            now: Timestamp(0),
            step: 0,
            last_tick: Timestamp(0),
            audit: ChainHead::default(),
            stats: Stats::default(),
            advisory,
            args,
        })
    }

    pub(crate) fn fail<T>(&self, message: impl Into<String>) -> Result<T, Failure> {
        Err(Failure {
            step: self.step,
            at: self.now,
            message: message.into(),
        })
    }

    fn set_position(&mut self, step: i64, now: Timestamp) {
        self.step = step;
        self.now = now;
        POSITION.with(|p| p.set((step, now.millis())));
    }

    pub fn run(&mut self) -> Result<(), Failure> {
        let listed_at = first_open().plus_ms(-30 * MS_PER_MINUTE);
        self.set_position(0, listed_at);
        self.list_instruments()?;
        self.last_tick = listed_at;
        if self.advisory.is_some() {
            self.onboard_advisees()?;
        }
        for day in 0..self.args.days {
            let open = open_of_day(day);
            self.set_position(day * STEPS_PER_DAY + 1, open);
            self.probe_listings()?;
            if self.advisory.is_some() {
                self.plan_day();
            }
            for s in 0..STEPS_PER_DAY {
                let t = open.plus_ms(s * STEP_MS);
                self.set_position(day * STEPS_PER_DAY + s + 1, t);
                self.tick_market(t)?;
                let mut touched = self.user_requests(t)?;
                if self.advisory.is_some() {
                    self.advisory_step(day * STEPS_PER_DAY + s, t, &mut touched)?;
                }
                self.check_step(&touched)?;
            }
            self.check_books()?;
        }
        if self.args.sabotage_journal {
            self.sabotage();
        }
        self.check_replay()
    }

    /// Lists every instrument, as the node does at start-up: one `Listed` event and one audit
    /// record each, which joins the audit chain.
    fn list_instruments(&mut self) -> Result<(), Failure> {
        let now = self.now;
        let mut audited = Vec::new();
        for (symbol, m) in self.instruments.iter_mut() {
            let mut ctx = Ctx::new(now, &mut self.ids_rng);
            let cmd = InstrumentCommand::List {
                listing: m.listing.clone(),
                price: m.opening,
            };
            let expected_event = InstrumentEvent::Listed {
                listing: m.listing.clone(),
                price: m.opening,
                at: now,
            };
            let expected_audit = AuditDraft::ok("instrument.list")
                .detail("symbol", symbol)
                .detail("kind", m.listing.kind.as_str())
                .detail("risk_class", m.listing.risk_class)
                .detail("price", m.opening.normalize());
            let result = execute(&mut m.state, &mut m.journal, cmd, &mut ctx);
            let effects = ctx.take_effects();
            match (&result, effects.as_slice()) {
                (Ok(d), [Effect::Audit(draft)]) if d.events == [expected_event] && *draft == expected_audit => {
                    self.stats.instrument_events += 1;
                    audited.push((EntityId::new(EntityKind::Instrument, symbol.as_str()).to_string(), draft.clone()));
                }
                _ => {
                    return Err(Failure {
                        step: self.step,
                        at: now,
                        message: format!("listing {symbol}: unexpected {result:?} with effects {effects:?} (expected one {expected_audit:?})"),
                    })
                }
            }
        }
        for (entity, draft) in audited {
            self.chain_audit(SYSTEM_ACTOR, entity, LISTING_REQUEST, draft);
        }
        Ok(())
    }

    /// Appends one audit record to the simulated audit chain, as the host would.
    pub(crate) fn chain_audit(&mut self, actor: &str, entity: String, request_id: &str, draft: AuditDraft) {
        match draft.outcome {
            Outcome::Ok => self.stats.audit_ok += 1,
            Outcome::Refused(_) => self.stats.audit_refused += 1,
        }
        let record = AuditRecord {
            seq: self.audit.entries,
            group: 0,
            at: self.now,
            actor: actor.to_string(),
            action: draft.action,
            entity,
            request_id: request_id.to_string(),
            outcome: draft.outcome,
            details: draft.details,
        };
        self.audit.append(&record);
    }

    /// At each open: re-list one instrument identically (a no-op) and try a conflicting listing.
    fn probe_listings(&mut self) -> Result<(), Failure> {
        let symbol = self.symbols[self.workload_rng.random_range(0..self.symbols.len())].clone();
        let now = self.now;
        let m = self.instruments.get_mut(&symbol).expect("listed");
        let before = m.state.clone();
        let mut ctx = Ctx::new(now, &mut self.ids_rng);
        let same = execute(
            &mut m.state,
            &mut m.journal,
            InstrumentCommand::List {
                listing: m.listing.clone(),
                price: m.opening,
            },
            &mut ctx,
        );
        let mut other = m.listing.clone();
        other.risk_class = if other.risk_class == 7 { 1 } else { other.risk_class + 1 };
        let conflict = execute(
            &mut m.state,
            &mut m.journal,
            InstrumentCommand::List {
                listing: other,
                price: m.opening,
            },
            &mut ctx,
        );
        let tick_zero = execute(&mut m.state, &mut m.journal, InstrumentCommand::Tick { price: Decimal::ZERO }, &mut ctx);
        let unchanged = m.state == before && ctx.effects().is_empty();
        match (same, conflict, tick_zero) {
            (Ok(d), Err(InstrumentRejection::ListingConflict), Err(InstrumentRejection::InvalidPrice)) if d.events.is_empty() && unchanged => {
                self.stats.instrument_replays += 1;
                Ok(())
            }
            other => self.fail(format!("instrument {symbol}: re-listing probes answered {other:?}")),
        }
    }

    fn tick_market(&mut self, t: Timestamp) -> Result<(), Failure> {
        let dt_seconds = (t.millis() - self.last_tick.millis()) as f64 / MS_PER_SECOND as f64;
        self.last_tick = t;
        // The global trading minute of this tick, for the scenario's shocks.
        let minute = self.step - 1;
        let scenario = self.args.scenario.as_ref();
        for (symbol, m) in self.instruments.iter_mut() {
            let mut price = gbm_step(m.state.price, &m.params, dt_seconds, &mut self.market_rng);
            // A shock multiplies the GBM step (whose noise stream draws as without it).
            if let Some(factor) = scenario.and_then(|s| s.factor(minute, symbol)) {
                price = shocked(price, factor);
            }
            let mut ctx = Ctx::new(t, &mut self.ids_rng);
            match execute(&mut m.state, &mut m.journal, InstrumentCommand::Tick { price }, &mut ctx) {
                Ok(d) if d.events.len() == 1 && ctx.effects().is_empty() && m.state.price == price && m.state.as_of == t => {
                    self.stats.instrument_events += 1;
                }
                other => {
                    return Err(Failure {
                        step: self.step,
                        at: t,
                        message: format!("tick {symbol} to {price}: unexpected {other:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn quote(&self, symbol: &str) -> Option<OrderQuote> {
        self.instruments.get(symbol).map(|m| OrderQuote {
            price: m.state.price,
            product: ProductFacts {
                complex: m.listing.complex,
                risk_class: m.listing.risk_class,
            },
        })
    }

    fn user_requests(&mut self, step_start: Timestamp) -> Result<Vec<usize>, Failure> {
        let mut touched = Vec::new();
        let mut n_in_step = 0i64;
        for u in 0..self.users.len() {
            // Advised users take advice instead (none without a scenario).
            if self.users[u].advisee.is_some() {
                continue;
            }
            if !self.workload_rng.random_ratio(ACTIVE_PER_MILLE, 1000) {
                continue;
            }
            n_in_step += 1;
            let now = step_start.plus_ms(n_in_step.min(STEP_MS - 1));
            self.now = now;
            POSITION.with(|p| p.set((self.step, now.millis())));
            let (request, idem, expect) = self.plan(u, now);
            self.submit(u, request, idem, expect)?;
            if self.users[u].touched_step != self.step {
                self.users[u].touched_step = self.step;
                touched.push(u);
            }
        }
        Ok(touched)
    }

    /// Draws what user `u` does next.
    fn plan(&mut self, u: usize, now: Timestamp) -> (Request, IdemTag, Expect) {
        let rng = &mut self.workload_rng;
        let user = &self.users[u];
        let p = &user.state;
        let mut action = workload::draw_action(rng, p);
        // Only requests younger than the retention are guaranteed to be remembered.
        let within_retention = |s: &Sent| now.millis() - s.at.millis() <= IDEMPOTENCY_RETENTION_MS;
        let eligible: Vec<usize> = user.recent.iter().enumerate().filter(|(_, s)| within_retention(s)).map(|(i, _)| i).collect();
        if matches!(action, Action::Resend | Action::ReuseKey) && eligible.is_empty() {
            action = Action::Deposit;
        }
        if action == Action::RetryRefused && !user.refused.as_ref().is_some_and(within_retention) {
            action = Action::Buy;
        }
        if action == Action::Sell && p.holdings.is_empty() {
            action = Action::Buy;
        }
        let instruments = &self.instruments;
        let price_of = |s: &str| instruments[s].state.price;
        let fresh = |request: Request, key: String| {
            let idem = IdemTag {
                key,
                fingerprint: request.fingerprint(),
            };
            (request, idem, Expect::Fresh)
        };
        let key = format!("idem-{:08}", self.stats.commands);
        match action {
            Action::Deposit => fresh(workload::deposit(rng), key),
            Action::Withdraw => fresh(workload::withdraw(rng, p), key),
            Action::Buy => fresh(workload::buy(rng, p, &self.symbols, price_of), key),
            Action::Sell => fresh(workload::sell(rng, p).expect("holdings checked"), key),
            Action::Overspend => fresh(workload::overspend(rng, p, &self.symbols, price_of), key),
            Action::Oversell => fresh(workload::oversell(rng, p, &self.symbols), key),
            Action::Overdraw => fresh(workload::overdraw(rng, p), key),
            Action::BadAmount => fresh(workload::bad_amount(rng), key),
            Action::BadQuantity => fresh(workload::bad_quantity(rng, &self.symbols), key),
            Action::UnknownSymbol => fresh(workload::unknown_symbol(rng), key),
            Action::Resend => {
                let sent = &user.recent[eligible[rng.random_range(0..eligible.len())]];
                (sent.request.clone(), sent.idem.clone(), Expect::Replay(sent.reply.clone()))
            }
            Action::ReuseKey => {
                let sent = &user.recent[eligible[rng.random_range(0..eligible.len())]];
                let other = workload::different_request(rng, &sent.request);
                let idem = IdemTag {
                    key: sent.idem.key.clone(),
                    fingerprint: other.fingerprint(),
                };
                (other, idem, Expect::KeyReused)
            }
            Action::RetryRefused => {
                // The refusal is remembered under its key: the retry answers it again, even if
                // the reason is gone by now (a deposit since, a price move).
                let sent = self.users[u].refused.take().expect("checked");
                self.stats.retries += 1;
                (sent.request, sent.idem, Expect::Replay(sent.reply))
            }
        }
    }

    /// Sends one request to user `u`'s portfolio and checks the answer, the state change and
    /// the audit effects against the oracle.
    pub(crate) fn submit(&mut self, u: usize, request: Request, idem: IdemTag, expect: Expect) -> Result<(), Failure> {
        self.stats.commands += 1;
        match &request {
            Request::Deposit { .. } => self.stats.deposits += 1,
            Request::Withdraw { .. } => self.stats.withdrawals += 1,
            Request::Order { .. } => self.stats.orders += 1,
        }
        let quote = request.symbol().and_then(|s| self.quote(s));
        // What the rules say of this request were its key fresh: the answer a fresh request must
        // get, and for a re-sent refusal whether its reason is gone (it is answered the refusal
        // all the same).
        let investor = self.users[u].investor.clone();
        let verdict = oracle::predict(&self.users[u].state, &investor, &request, quote.as_ref(), &self.fees);
        let cmd = request.command(idem.clone(), quote.clone(), investor, &self.fees);
        let now = self.now;
        let user = &mut self.users[u];
        let pre = Pre::of(user, request.symbol());
        let mut ctx = Ctx::new(now, &mut self.ids_rng);
        let result = execute(&mut user.state, &mut user.journal, cmd, &mut ctx);
        let effects = ctx.take_effects();
        let id = user.id.clone();
        let who = format!("portfolio {id}, request {request:?} (key {})", idem.key);

        // The audit trail: one record per decided request — accepted, refused, or a key reused —
        // and none for a replay.
        let expected_audit = match (&expect, &verdict) {
            (Expect::Replay(_), _) => None,
            (Expect::KeyReused, _) => Some((
                Outcome::Refused(PortfolioRejection::IdempotencyKeyReused.code().to_string()),
                "idempotency.check",
            )),
            (Expect::Fresh, Ok(())) => Some((Outcome::Ok, request.ok_action())),
            (Expect::Fresh, Err(r)) => Some((Outcome::Refused(r.code().to_string()), request.refused_action())),
        };
        match (&expected_audit, effects.as_slice()) {
            (None, []) => {}
            (Some((outcome, action)), [Effect::Audit(draft)]) if draft.outcome == *outcome && draft.action == *action => {
                let draft = draft.clone();
                self.chain_audit(&id, format!("portfolio/{id}"), &idem.key, draft);
            }
            _ => {
                return self.fail(format!(
                    "{who}: answered {result:?} with audit effects {effects:?} (expected one {expected_audit:?}, oracle predicted {verdict:?})"
                ))
            }
        }

        let d = match (expect, &verdict, result) {
            (Expect::Replay(stored), _, Ok(d)) => {
                if !d.events.is_empty() || d.reply != stored {
                    return self.fail(format!(
                        "{who}: re-send produced {} events and reply {:?}, stored reply {stored:?}",
                        d.events.len(),
                        d.reply
                    ));
                }
                self.stats.replays += 1;
                if let PortfolioReply::Refused(_) = stored {
                    self.stats.refusal_replays += 1;
                    if verdict.is_ok() {
                        self.stats.stale_refusals_held += 1;
                    }
                }
                return self.unchanged(u, &request, &pre, &who);
            }
            (Expect::KeyReused, _, Err(PortfolioRejection::IdempotencyKeyReused)) => {
                *self.stats.rejections.entry(PortfolioRejection::IdempotencyKeyReused.code()).or_default() += 1;
                self.stats.key_reuses += 1;
                return self.unchanged(u, &request, &pre, &who);
            }
            (Expect::Fresh, Err(want), Ok(d)) => {
                let want = want.clone();
                return self.check_refusal(u, request, idem, want, &pre, d, &who);
            }
            (Expect::Fresh, Ok(()), Ok(d)) => d,
            (_, predicted, result) => return self.fail(format!("{who}: answered {result:?}, oracle predicted {predicted:?}")),
        };

        if d.events.len() != 1 {
            return self.fail(format!("{who}: accepted with {} events", d.events.len()));
        }
        self.stats.accepted += 1;
        self.stats.portfolio_events += 1;
        let user = &self.users[u];
        let post = &user.state;
        let event = &d.events[0];
        let ok = match (&request, event, &d.reply) {
            (Request::Deposit { amount }, PortfolioEvent::Deposited { amount: a, at, idem: i, .. }, PortfolioReply::Cash { cash }) => {
                self.stats.deposited += amount;
                a == amount && *at == now && *i == idem && post.cash == pre.cash + amount && *cash == post.cash
            }
            (Request::Withdraw { amount }, PortfolioEvent::Withdrawn { amount: a, at, idem: i, .. }, PortfolioReply::Cash { cash }) => {
                self.stats.withdrawn += amount;
                a == amount && *at == now && *i == idem && post.cash == pre.cash - amount && *cash == post.cash
            }
            (Request::Order { symbol, side, quantity }, PortfolioEvent::OrderFilled { order, idem: i, .. }, PortfolioReply::Order(reply)) => {
                let price = quote.as_ref().map(|q| q.price).unwrap_or_default();
                let notional = round_cash(*quantity * price);
                let fee = oracle::fee(&self.fees, notional);
                self.stats.fees += fee;
                let held = post.holdings.get(symbol).cloned().unwrap_or_default();
                let moved = match side {
                    Side::Buy => {
                        self.stats.buys_filled += 1;
                        order.cash_effect == -(notional + fee)
                            && order.realised_pnl.is_zero()
                            && held.quantity == pre.holding.quantity + quantity
                            && held.cost_basis == pre.holding.cost_basis + notional
                    }
                    Side::Sell => {
                        self.stats.sells_filled += 1;
                        let removed = pre.holding.cost_basis - held.cost_basis;
                        order.cash_effect == notional - fee
                            && held.quantity == pre.holding.quantity - quantity
                            && removed >= Decimal::ZERO
                            && order.realised_pnl == notional - removed
                    }
                };
                moved
                    && order.symbol == *symbol
                    && order.side == *side
                    && order.quantity == *quantity
                    && order.price == price
                    && order.fees == fee
                    && order.executed_at == now
                    && *i == idem
                    && reply == order
                    && post.cash == pre.cash + order.cash_effect
                    && History::from_events(&user.journal).orders.get(&order.order_id) == Some(order)
                    && post.totals.realised_pnl == pre.totals.realised_pnl + order.realised_pnl
                    && post.totals.fees == pre.totals.fees + fee
            }
            _ => false,
        };
        let orders_added = usize::from(request.symbol().is_some());
        let history = History::from_events(&user.journal);
        let counted =
            (history.transactions.len(), history.orders.len(), user.journal.len()) == (pre.counts.0 + 1, pre.counts.1 + orders_added, pre.counts.3 + 1);
        let journalled = user.journal.last() == Some(event) && history.transactions.last() == event.transaction().as_ref();
        let remembered = remembers(post, &idem, &d.reply, now);
        if !ok || !counted || !journalled || !remembered {
            return self.fail(format!(
                "{who}: accepted, but the event, reply or state change is wrong: event {event:?}, reply {:?}",
                d.reply
            ));
        }
        self.remember_sent(
            u,
            Sent {
                request,
                idem,
                reply: d.reply,
                at: now,
            },
        );
        Ok(())
    }

    /// A fresh request the oracle refuses: exactly one `Refused` event, the refusal as the reply,
    /// no money or holding moved, no transaction or order recorded, the key remembered with the
    /// refusal (so a retry replays it).
    #[allow(clippy::too_many_arguments)]
    fn check_refusal(
        &mut self,
        u: usize,
        request: Request,
        idem: IdemTag,
        want: PortfolioRejection,
        pre: &Pre,
        d: Decision<PortfolioEvent, PortfolioReply>,
        who: &str,
    ) -> Result<(), Failure> {
        let now = self.now;
        let expected_event = PortfolioEvent::Refused {
            idem: idem.clone(),
            rejection: want.clone(),
            at: now,
        };
        let expected_reply = PortfolioReply::Refused(want.clone());
        if d.events != [expected_event.clone()] || d.reply != expected_reply {
            return self.fail(format!(
                "{who}: answered {:?} with events {:?}, expected {expected_reply:?} with {expected_event:?}",
                d.reply, d.events
            ));
        }
        let user = &self.users[u];
        let post = Pre::of(user, request.symbol());
        let moved_nothing = (post.cash, &post.holding, &post.holdings, &post.totals) == (pre.cash, &pre.holding, &pre.holdings, &pre.totals);
        // Journalled, but not a transaction nor an order: the history is unchanged.
        let counted = (post.counts.0, post.counts.1, post.counts.3) == (pre.counts.0, pre.counts.1, pre.counts.3 + 1);
        let journalled = user.journal.last() == Some(&expected_event) && expected_event.transaction().is_none();
        let remembered = remembers(&user.state, &idem, &expected_reply, now);
        if !moved_nothing || !counted || !journalled || !remembered {
            return self.fail(format!(
                "{who}: refused ({want:?}), but the state, history or idempotency memory is wrong (moved nothing: {moved_nothing}, \
                 counted: {counted}, journalled: {journalled}, remembered: {remembered})"
            ));
        }
        *self.stats.rejections.entry(want.code()).or_default() += 1;
        self.stats.portfolio_refusals += 1;
        self.stats.portfolio_events += 1;
        let sent = Sent {
            request,
            idem,
            reply: expected_reply,
            at: now,
        };
        self.users[u].refused = Some(sent.clone());
        self.remember_sent(u, sent);
        Ok(())
    }

    /// A replayed request or a reused key changes nothing at all.
    fn unchanged(&self, u: usize, request: &Request, pre: &Pre, who: &str) -> Result<(), Failure> {
        if Pre::of(&self.users[u], request.symbol()) != *pre {
            return self.fail(format!("{who}: replayed or refused for a reused key, yet the portfolio changed"));
        }
        Ok(())
    }

    /// Keeps a decided request for later re-sends and key-reuse probes.
    fn remember_sent(&mut self, u: usize, sent: Sent) {
        let user = &mut self.users[u];
        user.recent.push_back(sent);
        if user.recent.len() > RECENT {
            user.recent.pop_front();
        }
    }

    fn check_step(&self, touched: &[usize]) -> Result<(), Failure> {
        for &u in touched {
            self.users[u].state.check_invariants();
            if let Some(a) = &self.users[u].advisee {
                a.account.check_invariants();
            }
        }
        for m in self.instruments.values() {
            m.state.check_invariants();
            if m.state.as_of != self.last_tick {
                return self.fail(format!(
                    "instrument {} priced as of {}, last tick {}",
                    m.state.symbol, m.state.as_of, self.last_tick
                ));
            }
        }
        Ok(())
    }

    /// End of day: the books of all portfolios together agree with what the clients moved.
    fn check_books(&self) -> Result<(), Failure> {
        let [mut deposits, mut withdrawals, mut fees, mut pnl, mut cash, mut basis] = [Decimal::ZERO; 6];
        for user in &self.users {
            let t = &user.state.totals;
            deposits += t.deposits;
            withdrawals += t.withdrawals;
            fees += t.fees;
            pnl += t.realised_pnl;
            cash += user.state.cash;
            basis += user.state.holdings.values().map(|h| h.cost_basis).sum::<Decimal>();
        }
        let s = &self.stats;
        if deposits != s.deposited || withdrawals != s.withdrawn || fees != s.fees {
            return self.fail(format!(
                "books: portfolios record deposits {deposits}, withdrawals {withdrawals}, fees {fees}; clients moved {}, {}, {}",
                s.deposited, s.withdrawn, s.fees
            ));
        }
        if cash + basis != deposits - withdrawals - fees + pnl {
            return self.fail(format!(
                "books: cash {cash} + cost basis {basis} ≠ deposits − withdrawals − fees + realised P&L {pnl}"
            ));
        }
        Ok(())
    }

    fn sabotage(&mut self) {
        for user in &mut self.users {
            for event in &mut user.journal {
                if let PortfolioEvent::Deposited { amount, .. } = event {
                    *amount += Decimal::new(1, 2);
                    return;
                }
            }
        }
    }

    /// Rebuilds every entity from its journal and compares it with the live state.
    fn check_replay(&self) -> Result<(), Failure> {
        for user in &self.users {
            let rebuilt = replay::<Portfolio>(&user.id, &user.journal);
            if rebuilt != user.state || codec::encode(&rebuilt) != codec::encode(&user.state) {
                return self.fail(format!(
                    "replay: portfolio {} rebuilt from its {} events differs from the live state",
                    user.id,
                    user.journal.len()
                ));
            }
        }
        for user in &self.users {
            let Some(a) = &user.advisee else { continue };
            let rebuilt = replay::<moneta::domain::account::Account>(&user.id, &a.journal);
            if rebuilt != a.account || codec::encode(&rebuilt) != codec::encode(&a.account) {
                return self.fail(format!(
                    "replay: account {} rebuilt from its {} events differs from the live state",
                    user.id,
                    a.journal.len()
                ));
            }
        }
        for (symbol, m) in &self.instruments {
            let rebuilt = replay::<Instrument>(symbol, &m.journal);
            if rebuilt != m.state || codec::encode(&rebuilt) != codec::encode(&m.state) {
                return self.fail(format!(
                    "replay: instrument {symbol} rebuilt from its {} events differs from the live state",
                    m.journal.len()
                ));
            }
        }
        Ok(())
    }

    /// SHA-256 over every portfolio then every instrument, in id order, each as
    /// `kind byte ‖ id length ‖ id ‖ state length ‖ codec::encode(state)`, then the head of the
    /// audit chain (so every decision's audit record is covered too, including the reused keys,
    /// which leave no state behind). A scenario run then adds every account (kind 1, in id
    /// order) and the advised world (kind 4: the scenario, each band's value series, the sample
    /// minutes, the advice statistics, the shock marks and the review queue).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"moneta-simulation-digest-v1");
        let mut put = |kind: u8, id: &str, bytes: Vec<u8>| {
            h.update([kind]);
            h.update((id.len() as u64).to_le_bytes());
            h.update(id.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        };
        let by_id: BTreeMap<&str, &Portfolio> = self.users.iter().map(|u| (u.id.as_str(), &u.state)).collect();
        for (id, p) in by_id {
            put(2, id, codec::encode(p));
        }
        for (symbol, m) in &self.instruments {
            put(3, symbol, codec::encode(&m.state));
        }
        put(0, "audit-head", self.audit.head.to_vec());
        // Scenario runs add (without one the digest is what it always was): the scenario, every
        // account (its advice record included), the value series and the advice statistics.
        if let Some(adv) = &self.advisory {
            let accounts: BTreeMap<&str, &moneta::domain::account::Account> = self
                .users
                .iter()
                .filter_map(|u| u.advisee.as_ref().map(|a| (u.id.as_str(), &a.account)))
                .collect();
            for (id, a) in accounts {
                put(1, id, codec::encode(a));
            }
            for (name, bytes) in adv.digest_parts() {
                put(4, &name, bytes);
            }
        }
        hex::encode(h.finalize())
    }

    /// The summary printed before the digest.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let steps = self.args.days * STEPS_PER_DAY;
        let _ = writeln!(
            out,
            "users: {}  days: {}  steps: {steps} ({STEPS_PER_DAY} per day, one per simulated minute)",
            self.users.len(),
            self.args.days
        );
        let _ = writeln!(out, "instruments: {}  ticks applied: {}", self.instruments.len(), s.instrument_events);
        let _ = writeln!(
            out,
            "commands: {} (deposits {}, withdrawals {}, orders {})",
            s.commands, s.deposits, s.withdrawals, s.orders
        );
        let _ = writeln!(
            out,
            "accepted: {}  fills: {} (buys {}, sells {})",
            s.accepted,
            s.buys_filled + s.sells_filled,
            s.buys_filled,
            s.sells_filled
        );
        let rejected: u64 = s.rejections.values().sum();
        let _ = writeln!(
            out,
            "rejections: {rejected} ({} refusals journalled and remembered, {} reused keys refused with no event)",
            s.portfolio_refusals, s.key_reuses
        );
        for (code, n) in &s.rejections {
            let _ = writeln!(out, "  {code}: {n}");
        }
        let _ = writeln!(
            out,
            "replays: {} (stored reply, no events)  key reuses refused: {}  retries after refusal: {}",
            s.replays, s.key_reuses, s.retries
        );
        let _ = writeln!(
            out,
            "replayed refusals: {} (the stored refusal, no events), {} of them would now succeed as fresh requests",
            s.refusal_replays, s.stale_refusals_held
        );
        let _ = writeln!(
            out,
            "audit effects: {} ok, {} refused  audit-head: {}",
            s.audit_ok,
            s.audit_refused,
            hex::encode(self.audit.head)
        );
        let _ = writeln!(out, "instrument re-listing probes: {} (no-op, conflict refused)", s.instrument_replays);
        let events: usize = self.users.iter().map(|u| u.journal.len()).sum();
        let _ = writeln!(
            out,
            "journal replay: {} portfolios ({events} events) and {} instruments rebuilt, all equal",
            self.users.len(),
            self.instruments.len()
        );
        let cash: Decimal = self.users.iter().map(|u| u.state.cash).sum();
        let value: Decimal = self
            .users
            .iter()
            .map(|u| u.state.total_value(|sym| self.instruments.get(sym).map(|m| m.state.price)))
            .sum();
        let _ = writeln!(
            out,
            "money: deposited {}  withdrawn {}  fees {}  total cash {}  total value {}",
            cash_string(s.deposited),
            cash_string(s.withdrawn),
            cash_string(s.fees),
            cash_string(cash),
            cash_string(value)
        );
        let prices: Vec<String> = self
            .instruments
            .iter()
            .map(|(sym, m)| format!("{sym} {}→{}", m.opening, m.state.price))
            .collect();
        let _ = writeln!(out, "prices: {}", prices.join("  "));
        out
    }
}

/// Whether the portfolio remembers `idem` with this first reply, decided at `at`.
fn remembers(p: &Portfolio, idem: &IdemTag, reply: &PortfolioReply, at: Timestamp) -> bool {
    p.idempotency
        .get(&idem.key)
        .is_some_and(|r| r.fingerprint == idem.fingerprint && r.reply == *reply && r.at == at)
}

/// A GBM price moved by a shock's per-minute factor, rounded and bounded like every price.
fn shocked(price: Decimal, factor: f64) -> Decimal {
    use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
    let p = price.to_f64().unwrap_or(0.0) * factor;
    Decimal::from_f64(p)
        .map(moneta::domain::money::round_price)
        .unwrap_or(price)
        .clamp(moneta::domain::market::min_price(), moneta::domain::money::max_price())
}

fn replay<E: Entity>(id: &str, journal: &[E::Event]) -> E {
    let mut state = E::empty(id);
    for event in journal {
        state.apply(event);
    }
    state
}
