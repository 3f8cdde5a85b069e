//! A withdrawal: the investor's facts from their account (a sanctions match freezes their
//! cash), then the portfolio decides. It runs as a step at the leader of the user's group, like
//! an order: the account is read with no barrier (a peek) and the decision is fenced to that
//! read's raft term; every outcome of the decision is a write (the withdrawal, or the refusal
//! remembered under the request's key).

use super::flow::{unexpected, Input, Next, Workflow};
use crate::domain::account::Account;
use crate::domain::envelope::Envelope;
use crate::domain::portfolio::{Portfolio, PortfolioCommand};
use crate::domain::queries::InvestorFacts;
use crate::domain::steps::{OrderOutcome, WithdrawalRequest};

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Checking,
    Deciding,
    Finished,
}

#[derive(Clone, Debug)]
pub struct Withdraw {
    request: WithdrawalRequest,
    stage: Stage,
}

impl Withdraw {
    pub fn new(request: WithdrawalRequest) -> Withdraw {
        Withdraw { request, stage: Stage::Start }
    }
}

impl Workflow for Withdraw {
    type Output = OrderOutcome;

    fn next(&mut self, input: Input) -> Next<OrderOutcome> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Checking;
                Next::Peek(Envelope::query::<Account, _>(&self.request.user_id, InvestorFacts))
            }
            (Stage::Checking, Input::Answer(a)) => {
                let Some(investor) = a.clone().viewed::<Account, InvestorFacts>() else {
                    unexpected("withdrawal", &Input::Answer(a))
                };
                let r = &self.request;
                let cmd = PortfolioCommand::Withdraw {
                    amount: r.amount,
                    idem: r.idem.clone(),
                    investor,
                };
                self.stage = Stage::Deciding;
                Next::Decide(Envelope::execute::<Portfolio>(&r.user_id, cmd, r.meta.clone()))
            }
            (Stage::Deciding, Input::Answer(a)) => match a.clone().executed::<Portfolio>() {
                Some(outcome) => Next::Done(outcome),
                None => unexpected("withdrawal", &Input::Answer(a)),
            },
            (_, input) => unexpected("withdrawal", &input),
        }
    }
}
