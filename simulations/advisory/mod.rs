//! Advised users (scenario runs): every one has an account, answered the suitability
//! questionnaire into one of the five risk bands, gave `ai_profiling` consent, and takes advice
//! the way production gives it (`moneta::workflows::advice`, `accept_advice`): once a day when they check in, at once after
//! a sharp move of an instrument they hold (`LiveValuation::on_prices`), and after re-answering
//! the questionnaire. Published advice is accepted by placing its orders through the portfolio;
//! advice held for review waits in the compliance queue until a simulated officer approves it
//! (then it is accepted) or rejects it. Every step is a command to the production `Account` and
//! `Portfolio` state machines, checked against what the rules say it must do.
//!
//! Their portfolio values are sampled into one series per risk band, whose cash flows are the
//! band's deposits − withdrawals, plus the value of a user moving in from another band (and minus
//! it for the band they leave): a user changing band moves money between bands, which is no
//! gain or loss of either.

use crate::oracle;
use crate::scenario::{Scenario, BANDS};
use crate::sim::{execute, stream, Expect, Failure, Sim, POSITION, STEPS_PER_DAY, STEP_MS, STREAM_ADVICE, STREAM_REVIEW};
use crate::workload::Request;

mod accept;
mod advise;
mod day;
use moneta::config::Config;
use moneta::domain::account::{
    Account, AccountCommand, AccountEvent, AccountRejection, AccountReply, AdviceRecord, AdviceStatus, Consents, Role, ScreeningOutcome,
};
use moneta::domain::advice::{advise, AdvicePolicy, AssetClass, Product};
use moneta::domain::compliance::InvestorStatus;
use moneta::domain::ctx::{Ctx, Effect};
use moneta::domain::entity::{Decision, Entity};
use moneta::domain::ids::{is_well_formed_id, new_id};
use moneta::domain::kyc::{DocumentType, KycStatus};
use moneta::domain::money::round_cash;
use moneta::domain::portfolio::{IdemTag, PortfolioReply};
use moneta::domain::screening::ScreeningStatus;
use moneta::domain::suitability::{assess, Answers, LossTolerance, Objective, RiskBand};
use moneta::domain::time::Timestamp;
use moneta::domain::valuation::{LiveValuation, Positions, ValuePoint};
use moneta::storage::codec;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::BTreeMap;

pub const ALL_BANDS: [RiskBand; BANDS] = [
    RiskBand::Conservative,
    RiskBand::ModeratelyConservative,
    RiskBand::Balanced,
    RiskBand::Growth,
    RiskBand::Aggressive,
];

/// The staff member who reviews held advice (audit actor).
const OFFICER: &str = "stf_compliance_sim";
/// Questionnaires drawn before falling back to the band's archetype (never reached in practice).
const ANSWER_TRIES: u32 = 100_000;
/// Advised users act in the second half of a simulated minute, after the self-directed ones.
const ADVISED_OFFSET_MS: i64 = 30_000;

/// What the user does on one trading day (drawn at the open).
#[derive(Clone, Copy, Debug, Default)]
pub struct DayPlan {
    /// The minute of the day (0–389) the user opens the app.
    checkin: i64,
    deposit: bool,
    withdraw: bool,
    reprofile: bool,
}

pub struct Advisee {
    pub(crate) account: Account,
    pub(crate) journal: Vec<AccountEvent>,
    /// The latest questionnaire answers (sealed into the account).
    answers: Answers,
    /// Kept current with every price and every change of cash or holdings.
    pub(crate) live: LiveValuation,
    today: DayPlan,
}

impl Advisee {
    pub fn band(&self) -> RiskBand {
        self.account
            .suitability
            .as_ref()
            .map_or_else(|| assess(&self.answers).risk_band, |s| s.profile.risk_band)
    }
}

/// Why advice was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Daily,
    SharpMove,
    Reprofile,
    Panic,
}

/// The prices advice is accepted at, and so which of its orders may be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prices {
    /// Those it was computed with: every order must fill.
    Advice,
    /// Later ones (approved after review): the prices moved, any refusal may happen.
    Later,
}

/// Advice held for review, waiting for the officer.
#[derive(Clone, Debug, Serialize)]
struct Review {
    user: usize,
    advice_id: String,
    queued_at: Timestamp,
    approve: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BandAdvice {
    pub issued: u64,
    pub pending_review: u64,
    pub accepted: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AdviceStats {
    pub requests_daily: u64,
    pub requests_sharp: u64,
    pub requests_reprofile: u64,
    pub requests_panic: u64,
    pub sharp_moves: u64,
    pub issued: u64,
    pub unchanged: u64,
    pub published: u64,
    pub pending_review: u64,
    pub no_orders: u64,
    pub approved: u64,
    pub rejected: u64,
    pub superseded: u64,
    pub review_delay_ms_total: i64,
    pub accepted: u64,
    pub accept_resends: u64,
    pub orders_placed: u64,
    pub orders_filled: u64,
    pub orders_refused: BTreeMap<String, u64>,
    pub deposits: u64,
    pub withdrawals: u64,
    pub queue_max: u64,
    pub queue_sum: u64,
    pub queue_samples: u64,
    pub per_band: [BandAdvice; BANDS],
}

impl AdviceStats {
    pub fn requests(&self) -> u64 {
        self.requests_daily + self.requests_sharp + self.requests_reprofile + self.requests_panic
    }
}

/// Samples taken at the edges of the shocks, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShockMarks {
    /// Index of the sample just before the first shock minute, and of the one at the end of the
    /// last shock minute.
    pub start: Option<usize>,
    pub end: Option<usize>,
    pub prices_start: BTreeMap<String, Decimal>,
    pub prices_end: BTreeMap<String, Decimal>,
    /// Per band: the share of its value in equities, equity ETFs and the complex products on
    /// them, just before the first shock.
    pub exposure: [Decimal; BANDS],
}

pub struct Advisory {
    pub(crate) scenario: Scenario,
    rng: ChaCha20Rng,
    review_rng: ChaCha20Rng,
    policy: AdvicePolicy,
    threshold: Decimal,
    /// The first advised user in `Sim::users` (the self-directed ones come first).
    pub(crate) first: usize,
    /// Held advice by (due time, sequence).
    queue: BTreeMap<(i64, u64), Review>,
    queue_seq: u64,
    /// Per band: cumulative deposits − withdrawals ± the value of users moving in or out.
    flows: [Decimal; BANDS],
    /// Per band, one point per sample.
    pub(crate) series: Vec<Vec<ValuePoint>>,
    /// The global trading minute (day × 390 + minute) of every sample.
    pub(crate) sample_minutes: Vec<i64>,
    pub(crate) stats: AdviceStats,
    pub(crate) marks: ShockMarks,
    pub(crate) members_start: [usize; BANDS],
    pub(crate) members_end: [usize; BANDS],
    /// Actions taken so far in this simulated minute (each gets its own millisecond).
    in_step: i64,
}

/// Draws questionnaire answers that `assess` puts in `band`: the answers are random, the band is
/// what is asked for (rejection sampling over a spread of plausible answers).
fn draw_answers(rng: &mut ChaCha20Rng, band: RiskBand) -> Answers {
    const HORIZON: [u32; 5] = [1, 3, 7, 15, 30];
    const EXPERIENCE: [u32; 5] = [0, 1, 3, 6, 12];
    const INCOME: [i64; 4] = [0, 18_000, 52_000, 150_000];
    const NET_WORTH: [i64; 4] = [4_000, 30_000, 80_000, 500_000];
    const FUND_MONTHS: [u32; 4] = [1, 4, 8, 24];
    for _ in 0..ANSWER_TRIES {
        let a = Answers {
            objective: Objective::ALL[rng.random_range(0..4)],
            horizon_years: HORIZON[rng.random_range(0..HORIZON.len())],
            loss_tolerance: LossTolerance::ALL[rng.random_range(0..4)],
            investment_experience_years: EXPERIENCE[rng.random_range(0..EXPERIENCE.len())],
            knows_complex_products: rng.random_ratio(1, 2),
            annual_income: Decimal::from(INCOME[rng.random_range(0..INCOME.len())]),
            liquid_net_worth: Decimal::from(NET_WORTH[rng.random_range(0..NET_WORTH.len())]),
            emergency_fund_months: FUND_MONTHS[rng.random_range(0..FUND_MONTHS.len())],
        };
        if assess(&a).risk_band == band {
            return a;
        }
    }
    archetype(band)
}

/// One fixed questionnaire per band (the suitability tests' examples).
fn archetype(band: RiskBand) -> Answers {
    let speculator = Answers {
        objective: Objective::Speculation,
        horizon_years: 15,
        loss_tolerance: LossTolerance::Large,
        investment_experience_years: 12,
        knows_complex_products: true,
        annual_income: Decimal::from(150_000),
        liquid_net_worth: Decimal::from(500_000),
        emergency_fund_months: 12,
    };
    let a = match band {
        RiskBand::Conservative => Answers {
            objective: Objective::Preservation,
            loss_tolerance: LossTolerance::None,
            horizon_years: 3,
            ..speculator
        },
        RiskBand::ModeratelyConservative => Answers {
            emergency_fund_months: 1,
            ..speculator
        },
        RiskBand::Balanced => Answers {
            investment_experience_years: 0,
            ..speculator
        },
        RiskBand::Growth => Answers {
            emergency_fund_months: 4,
            ..speculator
        },
        RiskBand::Aggressive => speculator,
    };
    assert_eq!(assess(&a).risk_band, band, "the archetype of {band:?}");
    a
}

fn decimal(v: f64) -> Decimal {
    Decimal::from_f64(v).unwrap_or_default().round_dp(6)
}

impl Advisory {
    /// The advised users (ids from the ids stream, answers from the advice stream), spread evenly
    /// over the bands: user `i` is drawn into band `i mod 5`.
    pub fn new(scenario: Scenario, seed: u64, users: usize, config: &Config, ids_rng: &mut ChaCha20Rng) -> (Advisory, Vec<(String, Advisee)>) {
        let mut rng = stream(seed, STREAM_ADVICE);
        let advisees = (0..users)
            .map(|i| {
                let id = new_id("usr", ids_rng);
                let answers = draw_answers(&mut rng, ALL_BANDS[i % BANDS]);
                let advisee = Advisee {
                    account: Account::empty(&id),
                    journal: Vec::new(),
                    answers,
                    live: LiveValuation::default(),
                    today: DayPlan::default(),
                };
                (id, advisee)
            })
            .collect();
        let advisory = Advisory {
            threshold: decimal(scenario.behaviour.sharp_move),
            scenario,
            rng,
            review_rng: stream(seed, STREAM_REVIEW),
            policy: config.advice.policy(),
            first: 0,
            queue: BTreeMap::new(),
            queue_seq: 0,
            flows: [Decimal::ZERO; BANDS],
            series: vec![Vec::new(); BANDS],
            sample_minutes: Vec::new(),
            stats: AdviceStats::default(),
            marks: ShockMarks::default(),
            members_start: [0; BANDS],
            members_end: [0; BANDS],
            in_step: 0,
        };
        (advisory, advisees)
    }

    /// What the digest covers of the advised world besides the accounts and portfolios.
    pub fn digest_parts(&self) -> Vec<(String, Vec<u8>)> {
        let mut parts = vec![("scenario".to_string(), codec::encode(&self.scenario))];
        for (band, points) in ALL_BANDS.iter().zip(&self.series) {
            parts.push((format!("series/{}", band.as_str()), codec::encode(points)));
        }
        parts.push(("sample-minutes".to_string(), codec::encode(&self.sample_minutes)));
        parts.push(("advice-stats".to_string(), codec::encode(&self.stats)));
        parts.push(("shock-marks".to_string(), codec::encode(&self.marks)));
        let queue: Vec<(&(i64, u64), &Review)> = self.queue.iter().collect();
        parts.push(("review-queue".to_string(), codec::encode(&queue)));
        parts
    }
}

impl Sim {
    fn adv(&mut self) -> &mut Advisory {
        self.advisory.as_mut().expect("a scenario run")
    }

    fn advisee(&self, u: usize) -> &Advisee {
        self.users[u].advisee.as_deref().expect("an advised user")
    }

    fn advisee_mut(&mut self, u: usize) -> &mut Advisee {
        self.users[u].advisee.as_deref_mut().expect("an advised user")
    }

    fn advised(&self) -> std::ops::Range<usize> {
        self.advisory.as_ref().map_or(0, |a| a.first)..self.users.len()
    }

    /// The next moment of this simulated minute for an advised user's action.
    fn moment(&mut self, t: Timestamp) -> Timestamp {
        let adv = self.adv();
        let now = t.plus_ms((ADVISED_OFFSET_MS + adv.in_step).min(STEP_MS - 1));
        adv.in_step += 1;
        self.now = now;
        let step = self.step;
        POSITION.with(|p| p.set((step, now.millis())));
        now
    }

    fn touch(&mut self, u: usize, touched: &mut Vec<usize>) {
        if self.users[u].touched_step != self.step {
            self.users[u].touched_step = self.step;
            touched.push(u);
        }
    }

    fn price(&self, symbol: &str) -> Option<Decimal> {
        self.instruments.get(symbol).map(|m| m.state.price)
    }

    fn value_of(&self, u: usize) -> Decimal {
        Positions::of(&self.users[u].state).value(|s| self.price(s))
    }

    /// The product universe as `GET /v1/advice` builds it: every listed instrument with a quote.
    fn universe(&self) -> Vec<Product> {
        self.instruments
            .iter()
            .map(|(symbol, m)| Product {
                symbol: symbol.clone(),
                kind: m.listing.kind,
                risk_class: m.listing.risk_class,
                price: m.state.price,
            })
            .collect()
    }

    /// Runs one command on user `u`'s account: decide → apply → journal, the audit effects must
    /// be exactly `expected` (all ok) and join the audit chain, the invariants must hold.
    fn account_exec(
        &mut self,
        u: usize,
        cmd: AccountCommand,
        actor: &str,
        request_id: &str,
        expected: &[&str],
        what: &str,
    ) -> Result<Result<Decision<AccountEvent, AccountReply>, AccountRejection>, Failure> {
        let now = self.now;
        let id = self.users[u].id.clone();
        let a = self.users[u].advisee.as_deref_mut().expect("an advised user");
        let mut ctx = Ctx::new(now, &mut self.ids_rng);
        let result = execute(&mut a.account, &mut a.journal, cmd, &mut ctx);
        let effects = ctx.take_effects();
        a.account.check_invariants();
        let drafts: Vec<_> = effects
            .into_iter()
            .map(|e| match e {
                Effect::Audit(d) => d,
            })
            .collect();
        let actions: Vec<&str> = drafts.iter().map(|d| d.action.as_str()).collect();
        let all_ok = drafts.iter().all(|d| d.outcome == moneta::domain::audit::Outcome::Ok);
        if actions != expected || !all_ok {
            return self.fail(format!(
                "account {id}, {what}: answered {result:?} with audit effects {drafts:?}, expected ok {expected:?}"
            ));
        }
        for draft in drafts {
            self.chain_audit(actor, format!("account/{id}"), request_id, draft);
        }
        Ok(result)
    }

    /// Expects an account command to succeed with exactly these events.
    fn account_ok(
        &mut self,
        u: usize,
        cmd: AccountCommand,
        actor: &str,
        request_id: &str,
        audit: &[&str],
        what: &str,
    ) -> Result<Decision<AccountEvent, AccountReply>, Failure> {
        match self.account_exec(u, cmd, actor, request_id, audit, what)? {
            Ok(d) => Ok(d),
            Err(r) => self.fail(format!("account {}, {what}: refused {r:?}", self.users[u].id)),
        }
    }

    /// Before the first open: every advised user registers, passes KYC and screening, consents
    /// to `ai_profiling` and answers the questionnaire — the account then says they may be
    /// advised, in the band their answers give — and makes a first deposit (so every band starts
    /// the run with its money in, and invests it when its users first check in).
    pub(crate) fn onboard_advisees(&mut self) -> Result<(), Failure> {
        let first = self.users.iter().position(|u| u.advisee.is_some()).unwrap_or(self.users.len());
        self.adv().first = first;
        let start = self.now;
        let [lo, hi] = self.adv().scenario.behaviour.initial_deposit;
        let mut touched = Vec::new();
        for u in self.advised() {
            self.now = start.plus_ms((u - first) as i64 + 1);
            let id = self.users[u].id.clone();
            let register = AccountCommand::Register {
                sealed_profile: format!("sealed-profile:{id}").into_bytes(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$simulated".into(),
                roles: vec![Role::User],
                screening: None,
            };
            self.account_ok(u, register, &id, "onboard-register", &["account.register"], "register")?;
            let kyc = AccountCommand::SubmitKyc {
                document_type: DocumentType::Passport,
                sealed_document: b"sealed-kyc-document".to_vec(),
                provider: "simulated".into(),
                status: KycStatus::Verified,
                screening: ScreeningOutcome {
                    status: ScreeningStatus::Clear,
                    entry: None,
                    score: "0.000".into(),
                    list_version: "simulated-list".into(),
                },
            };
            self.account_ok(u, kyc, &id, "onboard-kyc", &["kyc.submit", "screening.check"], "KYC")?;
            let consents = AccountCommand::SetConsents(Consents {
                ai_profiling: true,
                marketing: false,
                analytics: false,
            });
            self.account_ok(u, consents, &id, "onboard-consents", &["consent.change"], "consents")?;
            let answers = self.advisee(u).answers.clone();
            self.set_suitability(u, &answers, "onboard-suitability")?;
            let band = self.advisee(u).band();
            self.adv().members_start[band as usize] += 1;
            let amount = Decimal::from(self.adv().rng.random_range(lo..=hi));
            let at = self.now;
            self.adv().in_step = 0;
            self.flow(u, Request::Deposit { amount }, at, &mut touched)?;
            self.users[u].state.check_invariants();
        }
        Ok(())
    }

    /// Records new questionnaire answers; the account's profile and the investor status the
    /// order path uses must follow them.
    fn set_suitability(&mut self, u: usize, answers: &Answers, request_id: &str) -> Result<(), Failure> {
        let profile = assess(answers);
        let id = self.users[u].id.clone();
        let cmd = AccountCommand::SetSuitability {
            profile: profile.clone(),
            sealed_answers: codec::encode(answers),
        };
        let d = self.account_ok(u, cmd, &id, request_id, &["suitability.assess"], "questionnaire")?;
        let a = self.advisee(u);
        let recorded = a
            .account
            .suitability
            .as_ref()
            .is_some_and(|s| s.profile == profile && s.assessed_at == self.now);
        let investor = a.account.investor_status();
        if d.events.len() != 1 || !recorded || investor != InvestorStatus::onboarded(profile.risk_score, profile.complex_products_allowed) {
            return self.fail(format!(
                "account {id}: the questionnaire {profile:?} was not recorded as answered: {investor:?}"
            ));
        }
        self.users[u].investor = investor;
        self.advisee_mut(u).answers = answers.clone();
        Ok(())
    }
}
