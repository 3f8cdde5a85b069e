//! Advised investors in the cluster: a share of the investors have no trading clients of their
//! own; once onboarded they consent to AI profiling, deposit, ask for advice (production's
//! `Advise`: their account's facts, their portfolio, every listed instrument's committed quote,
//! the engine, the advice issued — queued for review when unusual — and the valuation rebased)
//! and accept it (production's `AcceptAdvice`: the key's memory, the account's decision, then
//! each proposed order through the order path under its key of the key's series: the
//! instrument's quote, the investor's compliance facts, the portfolio's fill, the broker's
//! confirmation). A client that hears nothing back sends the same step again as a new request
//! under the same idempotency key.
//!
//! Checked as they happen: every portfolio command of a workflow keeps the books (no negative
//! cash or holdings); a retry under the key is answered, never refused as accepted already.
//! Checked at the end on every replica: the advice as issued; one deposit under its key; the
//! orders the acceptance answered, each once, and none at all of advice held for review (which
//! is in the review queue and refused when accepted).

use super::flows::{Ended, Machine};
use super::lives::{Stage, Step};
use super::market::{Purpose, Single};
use super::{user_id, ClusterSim, Failure, SYMBOLS};
use moneta::domain::account::{Account, AccountCommand, AccountRejection, AdviceStatus, Consents};
use moneta::domain::advice::AdvicePolicy;
use moneta::domain::envelope::{Envelope, RequestMeta};
use moneta::domain::fees::FeeSchedule;
use moneta::domain::portfolio::{IdemTag, Portfolio, PortfolioCommand, PortfolioEvent, PortfolioReply};
use moneta::workflows::accept_advice::{AcceptAdvice, Accepted, NotAccepted};
use moneta::workflows::advice::AdviceError;
use moneta::workflows::advise::Advise;
use moneta::workflows::order::OrderTerms;
use rust_decimal::Decimal;

/// What each advised investor deposits (cents).
const DEPOSIT_CENTS: i64 = 2_500_000;

/// What an advised investor's life records of its advice.
#[derive(Clone, Debug, Default)]
pub(super) struct Advised {
    /// The advice issued: its id, and whether it was held for review.
    pub(super) advice: Option<(String, bool)>,
    /// The orders its acceptance filled (from the last answer: a retry answers the same).
    pub(super) filled: Option<usize>,
}

fn deposit_key(u: usize) -> String {
    format!("adv-deposit-{u}")
}

fn accept_key(u: usize) -> String {
    format!("adv-accept-{u}")
}

impl ClusterSim {
    /// The machine for an advised investor's step, or `None` when it must wait (advice waits
    /// for every instrument to be listed).
    pub(super) fn advised_machine(&mut self, u: usize, step: Step, owner: String, meta: RequestMeta) -> Option<Machine> {
        Some(match step {
            Step::Consent => {
                let consents = Consents {
                    ai_profiling: true,
                    marketing: false,
                    analytics: false,
                };
                let call = Envelope::execute::<Account>(&owner, AccountCommand::SetConsents(consents), meta);
                Machine::Single(Box::new(Single::new(Purpose::Consent, call)))
            }
            Step::Deposit => {
                let amount = Decimal::new(DEPOSIT_CENTS, 2);
                let idem = IdemTag {
                    key: deposit_key(u),
                    fingerprint: moneta::domain::fingerprint::deposit(amount),
                };
                let call = Envelope::execute::<Portfolio>(&owner, PortfolioCommand::Deposit { amount, idem }, meta);
                Machine::Single(Box::new(Single::new(Purpose::Deposit, call)))
            }
            Step::Advise => {
                let symbols = self.listed_symbols();
                if symbols.len() < SYMBOLS.len() {
                    return None;
                }
                Machine::Advise(Box::new(Advise::new(owner, symbols, FeeSchedule::default(), AdvicePolicy::default(), meta)))
            }
            Step::Accept => {
                let (advice_id, _) = self.lives[u].advised.as_ref()?.advice.clone()?;
                let terms = OrderTerms {
                    fees: FeeSchedule::default(),
                    slippage_bps: Decimal::from(5),
                };
                let listed = self.listed_symbols().into_iter().collect();
                Machine::Accept(Box::new(AcceptAdvice::new(owner, advice_id, accept_key(u), meta, terms, listed)))
            }
            Step::Kyc | Step::Suitability => unreachable!("onboarding steps are the lives'"),
        })
    }

    /// An advised investor's step ended.
    pub(super) fn advised_ended(&mut self, u: usize, ended: Ended) -> Result<(), Failure> {
        let who = user_id(u);
        match ended {
            Ended::Single(Purpose::Consent, a) => match (*a).executed::<Account>() {
                Some(Ok(_)) => self.onboard(u, Step::Deposit, self.tick + 1),
                other => return self.fail(format!("{who}: consent answered {other:?}")),
            },
            Ended::Single(Purpose::Deposit, a) => match (*a).executed::<Portfolio>() {
                Some(Ok(PortfolioReply::Cash { .. })) => self.onboard(u, Step::Advise, self.tick + 1),
                other => return self.fail(format!("{who}: the deposit answered {other:?}")),
            },
            Ended::Advised(advised) if advised.is_ok() => {
                let Ok(record) = *advised else { unreachable!("matched as advice") };
                let held = record.status == AdviceStatus::PendingReview;
                if !held && record.status != AdviceStatus::Published {
                    return self.fail(format!("{who}: advice issued as {:?}", record.status));
                }
                self.report.advised += 1;
                let advised = self.lives[u].advised.get_or_insert_with(Default::default);
                advised.advice = Some((record.advice_id, held));
                self.onboard(u, Step::Accept, self.tick + 1);
            }
            Ended::Advised(refused) => match *refused {
                Err(AdviceError::Unavailable(_)) => self.onboard_again(u, Step::Advise),
                other => return self.fail(format!("{who}: no advice: {other:?}")),
            },
            Ended::Accepted(outcome) => {
                let held = self.lives[u].advised.as_ref().and_then(|a| a.advice.as_ref()).is_some_and(|a| a.1);
                let filled = match outcome {
                    Ok(_) if held => return self.fail(format!("{who}: advice held for review was accepted")),
                    Ok(Accepted::Orders(done)) => done.iter().filter(|(_, o)| matches!(o, Ok(PortfolioReply::Order(_)))).count(),
                    Ok(Accepted::Remembered(replies)) => replies.iter().filter(|r| matches!(r, PortfolioReply::Order(_))).count(),
                    Err(NotAccepted::Account(AccountRejection::AdviceNotActionable(AdviceStatus::PendingReview))) if held => 0,
                    Err(e) => {
                        return self.fail(format!(
                            "{who}: accepting its advice under key {} was refused: {e:?} (attempt {})",
                            accept_key(u),
                            self.lives[u].attempt
                        ))
                    }
                };
                if !held {
                    self.report.advice_accepted += 1;
                    self.report.advice_orders += filled as u64;
                }
                self.lives[u].advised.get_or_insert_with(Default::default).filled = Some(filled);
                self.lives[u].stage = Stage::Registered;
            }
            other => return self.fail(format!("{who}: an advised step ended as {other:?}")),
        }
        Ok(())
    }

    /// At the end, on every replica of each advised investor's group: the advice as issued,
    /// one deposit, the accepted orders each once (none of held advice, which is queued).
    pub(super) fn check_advised(&self) -> Result<(), Failure> {
        for (u, life) in self.lives.iter().enumerate() {
            let Some(advised) = &life.advised else { continue };
            let (Some(owner), Some((advice_id, held)), Some(filled)) = (&life.owner, &advised.advice, advised.filled) else {
                return self.fail(format!("{}: an advised investor with its advice unfinished", user_id(u)));
            };
            let g = self.group_of_id(owner);
            for n in self.members_of(g) {
                let Some(r) = self.replicas.get(&(n, g)) else { continue };
                let status = r
                    .host
                    .accounts
                    .get(owner)
                    .and_then(|h| h.state.advice.as_ref())
                    .filter(|a| &a.advice_id == advice_id)
                    .map(|a| a.status);
                let want = if *held { AdviceStatus::PendingReview } else { AdviceStatus::Accepted };
                if status != Some(want) {
                    return self.fail(format!("{owner} at node {n}: advice {advice_id} is {status:?}, expected {want:?}"));
                }
                let journal = r.host.portfolios.get(owner).map(|h| h.journal.as_slice()).unwrap_or_default();
                let deposits = journal
                    .iter()
                    .filter(|e| matches!(e, PortfolioEvent::Deposited { idem, .. } if idem.key == deposit_key(u)))
                    .count();
                let mut keys: Vec<&str> = journal
                    .iter()
                    .filter_map(|e| match e {
                        PortfolioEvent::OrderFilled { idem, .. } if idem.key.starts_with(&accept_key(u)) => Some(idem.key.as_str()),
                        _ => None,
                    })
                    .collect();
                let orders = keys.len();
                // Sorted first: one order filled twice is not always next to itself.
                keys.sort_unstable();
                keys.dedup();
                if deposits != 1 || orders != filled || keys.len() != orders {
                    return self.fail(format!(
                        "{owner} at node {n}: {deposits} deposits under its key (expected 1), {orders} orders of its advice filled under {} keys (the acceptance answered {filled})",
                        keys.len()
                    ));
                }
                let queued = moneta::storage::records::set_review(advice_id, owner, true)
                    .puts
                    .iter()
                    .all(|(k, _)| r.host.records.contains_key(k));
                if queued != *held {
                    return self.fail(format!("{owner} at node {n}: advice held {held}, in the review queue {queued}"));
                }
            }
        }
        Ok(())
    }
}
