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

mod checks;
mod requests;

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
