//! Accepting advice: what the idempotency key already did is read first (a key used for another
//! request is refused before the advice is touched), the account decides whether the advice may
//! be acted on, then each proposed order goes through the order path under its own key of the
//! key's series (`<key>`, `<key> 1`, …: see `series_key`) and its own step of the request id.

use super::flow::{unexpected, Input, Next, Workflow};
use super::order::{OrderOutcome, OrderRequest, OrderTerms, PlaceOrder};
use super::services::Services;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply};
use crate::domain::advice::ProposedOrder;
use crate::domain::envelope::EntityFailure;
use crate::domain::envelope::{Envelope, RequestMeta};
use crate::domain::fingerprint::accepted_order;
use crate::domain::portfolio::{series_key, IdemTag, Portfolio, PortfolioReply};
use crate::domain::queries::AcceptedOrders;
use std::collections::BTreeSet;

/// Accepts advice `advice_id` of `user_id` under idempotency key `key`, at the leader of the
/// user's group (`steps::run_step` runs it there).
pub async fn accept(state: &Services, user_id: &str, advice_id: &str, key: String, meta: RequestMeta) -> Result<Result<Accepted, NotAccepted>, EntityFailure> {
    let step = crate::domain::steps::UserStep::AcceptAdvice {
        user_id: user_id.to_string(),
        advice_id: advice_id.to_string(),
        key,
        meta,
    };
    match state.router.step(step).await? {
        crate::domain::steps::StepAnswer::Accept(a) => Ok(a),
        _ => Err(EntityFailure::NotApplied("a step answered another kind".into())),
    }
}

pub use crate::domain::steps::{Accepted, NotAccepted};

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Remembering,
    Accepting {
        remembered: Vec<PortfolioReply>,
    },
    Ordering {
        orders: Vec<ProposedOrder>,
        done: Vec<(ProposedOrder, OrderOutcome)>,
        current: Box<PlaceOrder>,
    },
    Finished,
}

#[derive(Clone, Debug)]
pub struct AcceptAdvice {
    user_id: String,
    advice_id: String,
    key: String,
    meta: RequestMeta,
    terms: OrderTerms,
    listed: BTreeSet<String>,
    stage: Stage,
}

impl AcceptAdvice {
    pub fn new(user_id: String, advice_id: String, key: String, meta: RequestMeta, terms: OrderTerms, listed: BTreeSet<String>) -> AcceptAdvice {
        AcceptAdvice {
            user_id,
            advice_id,
            key,
            meta,
            terms,
            listed,
            stage: Stage::Start,
        }
    }

    /// The account's acceptance goes under a request id of the idempotency key (and the
    /// advice), not of the HTTP request: a retry under the key after a crash that came between
    /// the acceptance and the first order is answered from the account's memory of that
    /// request (for `[entities] request_memory`) and goes on to place the orders, instead of
    /// being refused as accepted already with no order placed. (Found by the cluster simulator.)
    fn acceptance_meta(&self) -> RequestMeta {
        RequestMeta {
            request_id: format!("advice-accept/{}/{}", self.advice_id, self.key),
            actor: self.meta.actor.clone(),
        }
    }

    /// The order path for order `i` of the advice.
    fn order(&self, i: usize, o: &ProposedOrder) -> PlaceOrder {
        let request = OrderRequest {
            user_id: self.user_id.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            quantity: o.quantity,
            idem: IdemTag {
                key: series_key(&self.key, i),
                fingerprint: accepted_order(&self.advice_id, i),
            },
            meta: self.meta.step(format!("order-{i}")),
        };
        PlaceOrder::new(request, self.terms.clone(), self.listed.contains(&o.symbol))
    }

    /// Starts the next order, or finishes when none is left.
    fn advance(&mut self, orders: Vec<ProposedOrder>, done: Vec<(ProposedOrder, OrderOutcome)>) -> Next<Result<Accepted, NotAccepted>> {
        let i = done.len();
        let Some(o) = orders.get(i) else {
            return Next::Done(Ok(Accepted::Orders(done)));
        };
        let mut current = Box::new(self.order(i, o));
        let next = current.next(Input::Start);
        self.stage = Stage::Ordering { orders, done, current };
        self.forward(next)
    }

    /// Passes the current order's requests through; collects its outcome when it is done.
    fn forward(&mut self, next: Next<OrderOutcome>) -> Next<Result<Accepted, NotAccepted>> {
        match next {
            Next::Call(e) => Next::Call(e),
            Next::Peek(e) => Next::Peek(e),
            Next::Decide(e) => Next::Decide(e),
            Next::Effect(e) => Next::Effect(e),
            Next::Done(outcome) => {
                let Stage::Ordering { orders, mut done, .. } = std::mem::replace(&mut self.stage, Stage::Finished) else {
                    unreachable!("forwarding happens while ordering")
                };
                let o = orders[done.len()].clone();
                done.push((o, outcome));
                self.advance(orders, done)
            }
        }
    }
}

/// Steps an order takes at most (quote, investor, place, confirm, done) — with room to spare.
const ORDER_STEPS_MAX: usize = 8;

impl Workflow for AcceptAdvice {
    type Output = Result<Accepted, NotAccepted>;

    fn steps_max(&self) -> usize {
        let orders = match &self.stage {
            Stage::Ordering { orders, .. } => orders.len(),
            _ => 0,
        };
        16 + ORDER_STEPS_MAX * orders
    }

    fn next(&mut self, input: Input) -> Next<Self::Output> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Remembering;
                let q = AcceptedOrders {
                    key: self.key.clone(),
                    advice_id: self.advice_id.clone(),
                };
                Next::Call(Envelope::query::<Portfolio, _>(&self.user_id, q))
            }
            (Stage::Remembering, Input::Answer(a)) => match a.clone().viewed::<Portfolio, AcceptedOrders>() {
                Some(Ok((remembered, held))) => {
                    // The account decides (published or approved, and still fitting what is
                    // held; accepted again only as a replay of this key) before any order is
                    // placed.
                    let replay = !remembered.is_empty();
                    let cmd = AccountCommand::AcceptAdvice {
                        advice_id: self.advice_id.clone(),
                        replay,
                        held,
                    };
                    // Orders under the key say it accepted: the account replays its acceptance.
                    // None yet: the acceptance may have been recorded all the same (a crash
                    // before the first order), which its request id under the key recalls.
                    let meta = if replay { self.meta.clone() } else { self.acceptance_meta() };
                    self.stage = Stage::Accepting { remembered };
                    Next::Call(Envelope::execute::<Account>(&self.user_id, cmd, meta))
                }
                Some(Err(r)) => Next::Done(Err(NotAccepted::Portfolio(r))),
                None => unexpected("accept advice", &Input::Answer(a)),
            },
            (Stage::Accepting { remembered }, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(AccountReply::Advice(record))) => self.advance(record.advice.proposed_orders, Vec::new()),
                Some(Ok(_)) => Next::Done(Err(NotAccepted::Unexpected)),
                // Accepted, then replaced by newer advice: a retry still answers what
                // accepting it did.
                Some(Err(AccountRejection::UnknownAdvice)) if !remembered.is_empty() => Next::Done(Ok(Accepted::Remembered(remembered))),
                Some(Err(r)) => Next::Done(Err(NotAccepted::Account(r))),
                None => unexpected("accept advice", &Input::Answer(a)),
            },
            (Stage::Ordering { orders, done, mut current }, input) => {
                let next = current.next(input);
                self.stage = Stage::Ordering { orders, done, current };
                self.forward(next)
            }
            (_, input) => unexpected("accept advice", &input),
        }
    }
}
