//! The users' requests of a step: what each active user does (`plan`), sent to their
//! portfolio and checked against what the request must do (`submit`, `check_refusal`).

use super::*;

impl Sim {
    pub(super) fn user_requests(&mut self, step_start: Timestamp) -> Result<Vec<usize>, Failure> {
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
    pub(super) fn plan(&mut self, u: usize, now: Timestamp) -> (Request, IdemTag, Expect) {
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
    pub(super) fn check_refusal(
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
    pub(super) fn unchanged(&self, u: usize, request: &Request, pre: &Pre, who: &str) -> Result<(), Failure> {
        if Pre::of(&self.users[u], request.symbol()) != *pre {
            return self.fail(format!("{who}: replayed or refused for a reused key, yet the portfolio changed"));
        }
        Ok(())
    }

    /// Keeps a decided request for later re-sends and key-reuse probes.
    pub(super) fn remember_sent(&mut self, u: usize, sent: Sent) {
        let user = &mut self.users[u];
        user.recent.push_back(sent);
        if user.recent.len() > RECENT {
            user.recent.pop_front();
        }
    }
}

/// Whether the portfolio remembers `idem` with this first reply, decided at `at`.
fn remembers(p: &Portfolio, idem: &IdemTag, reply: &PortfolioReply, at: Timestamp) -> bool {
    p.idempotency
        .get(&idem.key)
        .is_some_and(|r| r.fingerprint == idem.fingerprint && r.reply == *reply && r.at == at)
}
