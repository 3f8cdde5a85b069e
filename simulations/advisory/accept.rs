//! Accepting advice in the simulation: the node's own accept workflow, every call it makes
//! served from this run's entities and checked.

use super::*;
use moneta::actors::RequestMeta;
use moneta::domain::envelope::{Answer, Call, EntityFailure, Envelope, Outcome};
use moneta::domain::instrument::Instrument;
use moneta::domain::portfolio::PortfolioCommand;
use moneta::workflows::accept_advice::{AcceptAdvice, Accepted};
use moneta::workflows::order::OrderTerms;
use moneta::workflows::{self};
use std::collections::BTreeSet;

impl Sim {
    /// `POST /v1/advice/{id}/accept`, through the node's own accept workflow
    /// (`moneta::workflows::accept_advice`): what the key already did is asked first, the
    /// account accepts, then every proposed order goes through the order workflow under the key
    /// series `<key>`, `<key>/1`, … Each call the workflow makes is served from this run's
    /// entities and checked: the account's answer and audit, and every order by `submit` against
    /// the oracle (after checking the workflow built the same command the model would). Advice
    /// accepted at the prices it was computed with must execute in full (but for the engine's
    /// minimum-fee defect, see `Prices`); approved advice meets later prices and may be refused in
    /// part. Sometimes the client re-sends the accept: the same workflow, nothing happens twice.
    pub(super) fn accept(&mut self, u: usize, record: &AdviceRecord, t: Timestamp, prices: Prices) -> Result<(), Failure> {
        self.moment(t);
        let id = self.users[u].id.clone();
        let advice_id = record.advice_id.clone();
        let key = format!("accept-{advice_id}");
        let band = record.advice.risk_band as usize;
        let mut run = AcceptRun {
            record: record.clone(),
            key: key.clone(),
            resend: false,
            t,
            prices,
            sent: Vec::new(),
            failure: None,
        };
        self.run_accept(u, &mut run)?;
        if run.sent.len() != record.advice.proposed_orders.len() {
            return self.fail(format!("account {id}: accepting {advice_id} placed {} of its orders", run.sent.len()));
        }
        self.adv().stats.accepted += 1;
        self.adv().stats.per_band[band].accepted += 1;
        let resend_per_mille = self.adv().scenario.behaviour.accept_retry_per_mille;
        if self.adv().rng.random_ratio(resend_per_mille, 1000) {
            self.moment(t);
            run.resend = true;
            self.run_accept(u, &mut run)?;
            self.adv().stats.accept_resends += 1;
        }
        let now = self.now;
        let positions = Positions::of(&self.users[u].state);
        self.advisee_mut(u).live.set_positions(positions, now);
        Ok(())
    }

    /// Runs the node's accept workflow once over this run's entities.
    fn run_accept(&mut self, u: usize, run: &mut AcceptRun) -> Result<(), Failure> {
        let id = self.users[u].id.clone();
        let meta = RequestMeta {
            request_id: run.key.clone(),
            actor: id.clone(),
        };
        let terms = OrderTerms {
            fees: self.fees.clone(),
            slippage_bps: Decimal::ZERO,
        };
        let listed: BTreeSet<String> = self.instruments.keys().cloned().collect();
        let flow = AcceptAdvice::new(id.clone(), run.record.advice_id.clone(), run.key.clone(), meta, terms, listed);
        let outcome = workflows::run_with(flow, |call| self.serve_accept(u, call, run), |_| workflows::Effected::Confirmed);
        if let Some(f) = run.failure.take() {
            return Err(f);
        }
        match outcome {
            Ok(Ok(Accepted::Orders(_))) => Ok(()),
            other => self.fail(format!("account {id}: accepting {} ended {other:?}", run.record.advice_id)),
        }
    }

    /// One call of the accept workflow, served from this run's entities and checked. A failed
    /// check stops the workflow (and is reported by `run_accept`).
    fn serve_accept(&mut self, u: usize, call: Envelope, run: &mut AcceptRun) -> Result<Answer, EntityFailure> {
        match self.serve_accept_checked(u, call, run) {
            Ok(answer) => Ok(answer),
            Err(f) => {
                run.failure = Some(f);
                Err(EntityFailure::NotApplied("the simulation stopped the workflow".into()))
            }
        }
    }

    fn serve_accept_checked(&mut self, u: usize, call: Envelope, run: &mut AcceptRun) -> Result<Answer, Failure> {
        let id = self.users[u].id.clone();
        match call {
            Envelope::Portfolio { id: p, call: Call::Query(q) } if p == id => Ok(Answer::Portfolio(Outcome::View(self.users[u].state.query(&q)))),
            Envelope::Account { id: a, call: Call::Query(q) } if a == id => Ok(Answer::Account(Outcome::View(self.advisee(u).account.query(&q)))),
            Envelope::Instrument {
                id: symbol,
                call: Call::Query(q),
            } => {
                let view = match self.instruments.get(&symbol) {
                    Some(m) => m.state.query(&q),
                    None => Instrument::empty(&symbol).query(&q),
                };
                Ok(Answer::Instrument(Outcome::View(view)))
            }
            Envelope::Account {
                id: a,
                call: Call::Execute {
                    cmd: cmd @ AccountCommand::AcceptAdvice { .. },
                    meta,
                },
            } if a == id => self.serve_account_accept(u, cmd, &meta.request_id, run),
            Envelope::Portfolio {
                id: p,
                call:
                    Call::Execute {
                        cmd:
                            PortfolioCommand::PlaceOrder {
                                symbol,
                                side,
                                quantity,
                                quote,
                                investor,
                                fees,
                                idem,
                            },
                        ..
                    },
            } if p == id => {
                // The workflow must build the command the model builds for this request.
                let expected = (self.quote(&symbol), self.users[u].investor.clone(), self.fees.clone());
                if (quote.clone(), investor.clone(), fees.clone()) != expected {
                    return self.fail(format!(
                        "account {id}: the order workflow priced or checked {symbol} otherwise: {quote:?} {investor:?} {fees:?}, model {expected:?}"
                    ));
                }
                self.serve_order(u, Request::Order { symbol, side, quantity }, idem, run)
            }
            other => self.fail(format!("account {id}: the accept workflow asked for {other:?}")),
        }
    }

    fn serve_account_accept(&mut self, u: usize, cmd: AccountCommand, request_id: &str, run: &AcceptRun) -> Result<Answer, Failure> {
        let id = self.users[u].id.clone();
        let advice_id = run.record.advice_id.clone();
        let replay = matches!(cmd, AccountCommand::AcceptAdvice { replay: true, .. });
        if replay != run.resend {
            return self.fail(format!(
                "account {id}: accepting {advice_id} came with replay {replay} (a re-send: {})",
                run.resend
            ));
        }
        let d = if run.resend {
            let d = self.account_ok(u, cmd, &id, request_id, &[], "accept advice again")?;
            if !d.events.is_empty() || !matches!(&d.reply, AccountReply::Advice(r) if r.status == AdviceStatus::Accepted) {
                return self.fail(format!("account {id}: accepting {advice_id} again was not a replay: {:?}", d.events));
            }
            d
        } else {
            let d = self.account_ok(u, cmd, &id, request_id, &["advice.accepted"], "accept advice")?;
            let accepted = matches!(&d.reply, AccountReply::Advice(r) if r.status == AdviceStatus::Accepted && r.advice == run.record.advice);
            let event = AccountEvent::AdviceStatusChanged {
                advice_id: advice_id.clone(),
                status: AdviceStatus::Accepted,
                note: None,
            };
            if d.events != [event] || !accepted {
                return self.fail(format!("account {id}: accepting {advice_id} answered {:?} with {:?}", d.reply, d.events));
            }
            d
        };
        Ok(Answer::Account(Outcome::Done(d.reply)))
    }

    /// Order `i` of the advice: fresh the first time (the oracle decides), a replay of its first
    /// answer when the accept is re-sent.
    fn serve_order(&mut self, u: usize, request: Request, idem: IdemTag, run: &mut AcceptRun) -> Result<Answer, Failure> {
        let id = self.users[u].id.clone();
        let i = if run.resend { run.sent.iter().position(|(_, k, _)| *k == idem) } else { None };
        if run.resend {
            let Some(i) = i else {
                return self.fail(format!("account {id}: a re-sent accept placed an order it had not placed: {idem:?}"));
            };
            let (request_then, _, reply) = run.sent[i].clone();
            if request_then != request {
                return self.fail(format!("account {id}: a re-sent accept asked {request:?}, first {request_then:?}"));
            }
            self.moment(run.t);
            self.submit(u, request, idem, Expect::Replay(reply.clone()))?;
            return Ok(Answer::Portfolio(Outcome::Done(reply)));
        }
        self.moment(run.t);
        self.submit(u, request.clone(), idem.clone(), Expect::Fresh)?;
        let reply = self.users[u].recent.back().map(|s| s.reply.clone());
        let stats = &mut self.adv().stats;
        stats.orders_placed += 1;
        // At the prices it was computed with every order fills; after a review the prices
        // moved and any refusal may happen.
        let refusals_allowed = run.prices == Prices::Later;
        match &reply {
            Some(PortfolioReply::Order(_)) => stats.orders_filled += 1,
            Some(PortfolioReply::Refused(r)) if refusals_allowed => *stats.orders_refused.entry(r.code().to_string()).or_default() += 1,
            other => {
                let n = run.sent.len();
                return self.fail(format!(
                    "account {id}: order {n} of advice {}, accepted at the prices it was computed with, answered {other:?}",
                    run.record.advice_id
                ));
            }
        }
        let reply = reply.expect("matched");
        run.sent.push((request, idem, reply.clone()));
        Ok(Answer::Portfolio(Outcome::Done(reply)))
    }
}

/// One accept of advice run through the node's workflow: what it placed, and a failed check.
struct AcceptRun {
    record: AdviceRecord,
    /// The client's idempotency key (and the request id of the accept).
    key: String,
    /// A re-send of the accept: every answer must be a replay.
    resend: bool,
    /// The step it happens in (each order is a moment of its own).
    t: Timestamp,
    prices: Prices,
    /// Each order placed: the request, its key and fingerprint, its first answer.
    sent: Vec<(Request, IdemTag, PortfolioReply)>,
    failure: Option<Failure>,
}
