//! Giving advice (sans-IO): the account's consent, compliance facts and risk profile; the gate
//! (consent, then the rules engine); the portfolio's cash and holdings; the listed instruments'
//! quotes; the advice engine (pure); the advice issued to the account (unchanged advice keeps
//! its id and status); advice held for review queued for compliance; the live valuation rebased.

use super::advice::AdviceError;
use super::flow::{unexpected, Effect, Effected, Input, Next, Workflow};
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountReply, AdviceRecord, AdviceStatus};
use crate::domain::advice::{advise, gate, AdvicePolicy, Product};
use crate::domain::audit::AuditDraft;
use crate::domain::envelope::{Envelope, RequestMeta};
use crate::domain::fees::FeeSchedule;
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::Portfolio;
use crate::domain::queries::{CurrentQuote, ForAdvice, Holdings};
use crate::domain::suitability::RiskProfile;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

type Out = Result<AdviceRecord, AdviceError>;

#[derive(Clone, Debug)]
struct Gathered {
    profile: RiskProfile,
    cash: Decimal,
    holdings: BTreeMap<String, Decimal>,
    universe: Vec<Product>,
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Inputs,
    Refusing { code: &'static str, reason: &'static str },
    Holdings { profile: RiskProfile },
    Quoting { gathered: Box<Gathered>, next: usize },
    Issuing,
    Queuing(Box<AdviceRecord>),
    Rebasing(Box<AdviceRecord>),
    Finished,
}

#[derive(Clone, Debug)]
pub struct Advise {
    user_id: String,
    /// The listed instruments, in listing order (the engine's universe, when quoted).
    symbols: Vec<String>,
    fees: FeeSchedule,
    policy: AdvicePolicy,
    meta: RequestMeta,
    stage: Stage,
}

impl Advise {
    pub fn new(user_id: String, symbols: Vec<String>, fees: FeeSchedule, policy: AdvicePolicy, meta: RequestMeta) -> Advise {
        Advise {
            user_id,
            symbols,
            fees,
            policy,
            meta,
            stage: Stage::Start,
        }
    }

    fn go(&mut self, stage: Stage, next: Next<Out>) -> Next<Out> {
        self.stage = stage;
        next
    }

    /// Asks for the next quote, or runs the engine when every listed instrument was asked.
    fn quote_or_advise(&mut self, gathered: Box<Gathered>, next: usize) -> Next<Out> {
        match self.symbols.get(next) {
            Some(symbol) => {
                let call = Envelope::query::<Instrument, _>(symbol, CurrentQuote);
                self.go(Stage::Quoting { gathered, next }, Next::Call(call))
            }
            None => {
                let g = *gathered;
                let advice = advise(&g.profile, &g.universe, g.cash, &g.holdings, &self.fees, &self.policy);
                let call = Envelope::execute::<Account>(&self.user_id, AccountCommand::IssueAdvice { advice, held: g.holdings }, self.meta.clone());
                self.go(Stage::Issuing, Next::Call(call))
            }
        }
    }
}

impl Workflow for Advise {
    type Output = Out;

    fn steps_max(&self) -> usize {
        16 + self.symbols.len()
    }

    fn next(&mut self, input: Input) -> Next<Out> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) => self.go(Stage::Inputs, Next::Call(Envelope::query::<Account, _>(&self.user_id, ForAdvice))),
            (Stage::Inputs, Input::Answer(a)) => {
                let Some(inputs) = a.clone().viewed::<Account, ForAdvice>() else {
                    unexpected("advice", &Input::Answer(a))
                };
                if let Err((code, reason)) = gate(inputs.ai_profiling, &inputs.investor) {
                    let effect = Effect::Audit {
                        draft: AuditDraft::refused("advice.request", code),
                        subject: format!("account/{}", self.user_id),
                        meta: self.meta.clone(),
                    };
                    return self.go(Stage::Refusing { code, reason }, Next::Effect(effect));
                }
                let Some(profile) = inputs.profile else {
                    return Next::Done(Err(AdviceError::Unexpected));
                };
                self.go(
                    Stage::Holdings { profile },
                    Next::Call(Envelope::query::<Portfolio, _>(&self.user_id, Holdings)),
                )
            }
            (Stage::Refusing { code, reason }, Input::Effected(_)) => Next::Done(Err(AdviceError::Refused {
                code,
                reason: reason.to_string(),
            })),
            (Stage::Holdings { profile }, Input::Answer(a)) => {
                let Some((cash, holdings)) = a.clone().viewed::<Portfolio, Holdings>() else {
                    unexpected("advice", &Input::Answer(a))
                };
                let gathered = Box::new(Gathered {
                    profile,
                    cash,
                    holdings: holdings.into_iter().map(|(s, h)| (s, h.quantity)).collect(),
                    universe: Vec::new(),
                });
                self.quote_or_advise(gathered, 0)
            }
            (Stage::Quoting { mut gathered, next }, Input::Answer(a)) => {
                let Some(quote) = a.clone().viewed::<Instrument, CurrentQuote>() else {
                    unexpected("advice", &Input::Answer(a))
                };
                if let Some(q) = quote {
                    gathered.universe.push(Product {
                        symbol: self.symbols[next].clone(),
                        kind: q.listing.kind,
                        risk_class: q.listing.risk_class,
                        price: q.price,
                    });
                }
                self.quote_or_advise(gathered, next + 1)
            }
            (Stage::Issuing, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(AccountReply::Advice(r))) if r.status == AdviceStatus::PendingReview => {
                    let writes = crate::storage::records::set_review(&r.advice_id, &self.user_id, true);
                    self.go(Stage::Queuing(Box::new(r)), Next::Effect(Effect::Write(writes)))
                }
                Some(Ok(AccountReply::Advice(r))) => self.go(Stage::Rebasing(Box::new(r)), Next::Effect(Effect::Rebase(self.user_id.clone()))),
                Some(Ok(_)) => Next::Done(Err(AdviceError::Unexpected)),
                Some(Err(rejection)) => Next::Done(Err(AdviceError::Account(RouteError::Rejected(rejection)))),
                None => unexpected("advice", &Input::Answer(a)),
            },
            (Stage::Queuing(_), Input::Effected(Effected::Failed(e))) => Next::Done(Err(AdviceError::Unavailable(e))),
            (Stage::Queuing(r), Input::Effected(_)) => self.go(Stage::Rebasing(r), Next::Effect(Effect::Rebase(self.user_id.clone()))),
            (Stage::Rebasing(r), Input::Effected(_)) => Next::Done(Ok(*r)),
            (_, input) => unexpected("advice", &input),
        }
    }
}
