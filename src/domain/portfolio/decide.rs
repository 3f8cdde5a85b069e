//! What a portfolio decides: each command checked against the state, turned into events.

use super::*;

impl Portfolio {
    /// The remembered replies of a numbered series of requests made under one client key —
    /// [`series_key`] 0, 1, … up to the first not remembered — each checked against the
    /// fingerprint request `i` must have. A key whose fingerprint differs was used for another
    /// request (`IdempotencyKeyReused`).
    pub fn remembered_series(&self, key: &str, fingerprint: impl Fn(usize) -> [u8; 32]) -> Result<Vec<PortfolioReply>, PortfolioRejection> {
        let mut replies = Vec::new();
        while let Some(r) = self.idempotency.get(&series_key(key, replies.len())) {
            if r.fingerprint != fingerprint(replies.len()) {
                return Err(PortfolioRejection::IdempotencyKeyReused);
            }
            replies.push(r.reply.clone());
        }
        Ok(replies)
    }

    fn remembered(&self, idem: &IdemTag) -> Option<Result<PortfolioReply, PortfolioRejection>> {
        self.idempotency.get(&idem.key).map(|r| {
            if r.fingerprint == idem.fingerprint {
                Ok(r.reply.clone())
            } else {
                Err(PortfolioRejection::IdempotencyKeyReused)
            }
        })
    }

    /// The portfolio as it stood at `cutoff`, folded from its journal: every cash flow and fill
    /// up to the cutoff, and every statement already issued (each takes what it stated out of
    /// the day book, whenever it was issued: statements state activity up to their own cutoff,
    /// which is never after a later day's).
    pub fn as_of(owner: &str, journal: &[PortfolioEvent], cutoff: Timestamp) -> Portfolio {
        let mut p = Portfolio::empty(owner);
        // Refusals move nothing (they only fill the idempotency memory, not needed here).
        let moves = |e: &&PortfolioEvent| !matches!(e, PortfolioEvent::DayClosed { .. } | PortfolioEvent::Refused { .. });
        // A prefix of the journal, up to the first move stamped after the cutoff: events are
        // stamped by the clock of the node that led the group then, so after a fail-over to a
        // node whose clock is behind, a later event can carry an earlier time. Picking events
        // by time alone could then take a buy without the deposit that paid for it (negative
        // cash, and the invariants stop the close); a prefix is a state the portfolio was in.
        for e in journal.iter().filter(moves).take_while(|e| e.at() <= cutoff) {
            p.apply(e);
        }
        for e in journal.iter().filter(|e| matches!(e, PortfolioEvent::DayClosed { .. })) {
            p.apply(e);
        }
        p
    }

    pub(super) fn decide_close(
        &self,
        date: Date,
        prices: &BTreeMap<String, Decimal>,
        cutoff: Timestamp,
        journal: &[PortfolioEvent],
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if self.last_close.is_some_and(|c| c.date >= date) {
            return Err(PortfolioRejection::DayAlreadyClosed);
        }
        let at_close = Portfolio::as_of(&self.owner, journal, cutoff.min(ctx.now));
        // The journal is this portfolio's: it has stated what this portfolio stated.
        if at_close.last_close != self.last_close {
            return Err(PortfolioRejection::JournalMismatch);
        }
        if at_close.holdings.is_empty() && at_close.cash.is_zero() && at_close.day == DayBook::default() {
            return Err(PortfolioRejection::NothingToState);
        }
        let holdings: Vec<StatementLine> = at_close
            .holdings
            .iter()
            .map(|(symbol, h)| {
                let price = prices.get(symbol).copied().filter(|p| *p > Decimal::ZERO);
                StatementLine {
                    symbol: symbol.clone(),
                    quantity: h.quantity,
                    average_cost: h.average_cost(),
                    price,
                    market_value: h.market_value(price),
                }
            })
            .collect();
        let value = at_close.cash + holdings.iter().map(|l| l.market_value).sum::<Decimal>();
        let statement = Statement {
            statement_id: ctx.new_id("stm"),
            date,
            closed_at: ctx.now,
            cash: at_close.cash,
            holdings,
            value,
            contributions: at_close.totals.deposits - at_close.totals.withdrawals,
            deposits: at_close.day.deposits,
            withdrawals: at_close.day.withdrawals,
            fees: at_close.day.fees,
            trades: at_close.day.orders,
        };
        ctx.audit(
            AuditDraft::ok("statement.issued")
                .detail("statement_id", &statement.statement_id)
                .detail("date", date.to_string())
                .detail("value", cash_string(value))
                .detail("trades", statement.trades.len().to_string()),
        );
        let reply = PortfolioReply::Statement(Box::new(statement.clone()));
        Ok(Decision::new(vec![PortfolioEvent::DayClosed { statement }], reply))
    }

    /// Decides a client request once per idempotency key: a remembered key answers its first
    /// reply (or `IdempotencyKeyReused` for another request); a business refusal is remembered
    /// under the key (a `Refused` event) and answered as a refusal.
    pub(super) fn once(
        &self,
        idem: IdemTag,
        ctx: &mut Ctx<'_>,
        decide: impl FnOnce(&Self, IdemTag, &mut Ctx<'_>) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if let Some(previous) = self.remembered(&idem) {
            if previous.is_err() {
                ctx.audit(AuditDraft::refused("idempotency.check", "idempotency_key_reused"));
            }
            return previous.map(Decision::replay);
        }
        match decide(self, idem.clone(), ctx) {
            Err(rejection) => {
                let event = PortfolioEvent::Refused {
                    idem,
                    rejection: rejection.clone(),
                    at: ctx.now,
                };
                Ok(Decision::new(vec![event], PortfolioReply::Refused(rejection)))
            }
            accepted => accepted,
        }
    }

    /// Market value of the holdings at the given prices plus cash (missing prices count at cost).
    pub fn total_value(&self, price_of: impl Fn(&str) -> Option<Decimal>) -> Decimal {
        self.cash + self.holdings.iter().map(|(s, h)| h.market_value(price_of(s))).sum::<Decimal>()
    }

    pub(super) fn decide_deposit(
        &self,
        amount: Decimal,
        idem: IdemTag,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if !is_valid_cash_amount(amount) {
            ctx.audit(AuditDraft::refused("portfolio.deposit", "invalid_amount"));
            return Err(PortfolioRejection::InvalidAmount);
        }
        let tx_id = ctx.new_id("txn");
        let cash = self.cash + amount;
        ctx.audit(
            AuditDraft::ok("portfolio.deposit")
                .detail("tx_id", &tx_id)
                .detail("amount", cash_string(amount))
                .detail("cash_after", cash_string(cash)),
        );
        Ok(Decision::new(
            vec![PortfolioEvent::Deposited {
                tx_id,
                amount,
                at: ctx.now,
                idem,
            }],
            PortfolioReply::Cash { cash },
        ))
    }

    pub(super) fn decide_withdrawal(
        &self,
        amount: Decimal,
        investor: &crate::domain::compliance::InvestorStatus,
        idem: IdemTag,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        if !is_valid_cash_amount(amount) {
            ctx.audit(AuditDraft::refused("portfolio.withdrawal", "invalid_amount"));
            return Err(PortfolioRejection::InvalidAmount);
        }
        if let Err(rule) = crate::domain::compliance::check_withdrawal(investor) {
            ctx.audit(AuditDraft::refused("portfolio.withdrawal", rule.code()).detail("amount", cash_string(amount)));
            return Err(PortfolioRejection::Compliance(rule));
        }
        if amount > self.cash {
            ctx.audit(AuditDraft::refused("portfolio.withdrawal", "insufficient_funds").detail("amount", cash_string(amount)));
            return Err(PortfolioRejection::InsufficientFunds);
        }
        let tx_id = ctx.new_id("txn");
        let cash = self.cash - amount;
        ctx.audit(
            AuditDraft::ok("portfolio.withdrawal")
                .detail("tx_id", &tx_id)
                .detail("amount", cash_string(amount))
                .detail("cash_after", cash_string(cash)),
        );
        Ok(Decision::new(
            vec![PortfolioEvent::Withdrawn {
                tx_id,
                amount,
                at: ctx.now,
                idem,
            }],
            PortfolioReply::Cash { cash },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide_order(
        &self,
        symbol: String,
        side: Side,
        quantity: Decimal,
        quote: Option<OrderQuote>,
        investor: &InvestorStatus,
        fees: &FeeSchedule,
        idem: IdemTag,
        ctx: &mut Ctx<'_>,
    ) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        let refuse = |ctx: &mut Ctx<'_>, r: PortfolioRejection| {
            let mut draft = AuditDraft::refused("order.place", r.code())
                .detail("symbol", &symbol)
                .detail("side", side.as_str())
                .detail("quantity", plain_string(quantity));
            if let PortfolioRejection::Compliance(rule) = r {
                draft = draft.detail("rule", rule.code()).detail("reason", rule.reason());
            }
            ctx.audit(draft);
            Err(r)
        };
        if !is_valid_quantity(quantity) {
            return refuse(ctx, PortfolioRejection::InvalidQuantity);
        }
        let Some(quote) = quote else {
            return refuse(ctx, PortfolioRejection::UnknownInstrument);
        };
        let purpose = match side {
            Side::Buy => Purpose::Acquire,
            Side::Sell => Purpose::Dispose,
        };
        if let Err(rule) = compliance::check(investor, quote.product, purpose) {
            return refuse(ctx, PortfolioRejection::Compliance(rule));
        }
        let Some((notional, fee)) = crate::domain::fees::order_cost(fees, quantity, quote.price) else {
            return refuse(ctx, PortfolioRejection::InvalidQuantity);
        };
        let (cash_effect, realised_pnl) = match side {
            Side::Buy => {
                if notional + fee > self.cash {
                    return refuse(ctx, PortfolioRejection::InsufficientFunds);
                }
                (-(notional + fee), Decimal::ZERO)
            }
            Side::Sell => {
                let Some(h) = self.holdings.get(&symbol).filter(|h| h.quantity >= quantity) else {
                    return refuse(ctx, PortfolioRejection::InsufficientHoldings);
                };
                if self.cash + notional - fee < Decimal::ZERO {
                    return refuse(ctx, PortfolioRejection::InsufficientFunds);
                }
                (notional - fee, notional - cost_removed(h, quantity))
            }
        };
        let order = Order {
            order_id: ctx.new_id("ord"),
            symbol,
            side,
            quantity,
            price: quote.price,
            fees: fee,
            cash_effect,
            realised_pnl,
            executed_at: ctx.now,
        };
        let tx_id = ctx.new_id("txn");
        ctx.audit(
            AuditDraft::ok("order.filled")
                .detail("order_id", &order.order_id)
                .detail("symbol", &order.symbol)
                .detail("side", side.as_str())
                .detail("quantity", plain_string(quantity))
                .detail("price", plain_string(order.price))
                .detail("fees", cash_string(fee))
                .detail("cash_after", cash_string(self.cash + cash_effect)),
        );
        let reply = PortfolioReply::Order(order.clone());
        Ok(Decision::new(vec![PortfolioEvent::OrderFilled { tx_id, order, idem }], reply))
    }

    pub(super) fn remember(&mut self, idem: &IdemTag, reply: PortfolioReply, at: Timestamp) {
        // Forget keys past their retention, and bound the map: both depend only on the events,
        // so a replay of the journal prunes identically.
        let horizon = at.millis() - IDEMPOTENCY_RETENTION_MS;
        if self.idempotency.len() >= IDEMPOTENCY_KEYS_MAX || self.idempotency.len() % 1024 == 1023 {
            self.idempotency.retain(|_, r| r.at.millis() >= horizon);
            while self.idempotency.len() >= IDEMPOTENCY_KEYS_MAX {
                let oldest = self.idempotency.iter().min_by_key(|(k, r)| (r.at, (*k).clone())).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => self.idempotency.remove(&k),
                    None => break,
                };
            }
        }
        self.idempotency.insert(
            idem.key.clone(),
            Remembered {
                fingerprint: idem.fingerprint,
                reply,
                at,
            },
        );
    }
}

/// The share of a holding's cost basis that leaves with `quantity` units, to
/// [`COST_DP`](crate::domain::money::COST_DP) places: the units left keep their average cost.
pub(super) fn cost_removed(h: &Holding, quantity: Decimal) -> Decimal {
    if quantity == h.quantity {
        h.cost_basis
    } else {
        crate::domain::money::round_cost(h.cost_basis * (quantity / h.quantity)).min(h.cost_basis)
    }
}
