//! The portfolio as an entity: commands decided, events applied, invariants checked.

use super::decide::cost_removed;
use super::*;

/// A portfolio command as its request id stands for it ([`Entity::request_form`]): an order
/// without the quote, the investor's facts and the fee schedule its workflow read live for it.
/// What the client asked is all there: the symbol, side and quantity, and the idempotency tag
/// whose fingerprint covers the request's body. Untagged: any other command's form is the
/// command itself, so its digest is the one requests remembered before this form existed.
#[derive(Serialize)]
#[serde(untagged)]
enum RequestForm<'a> {
    Order {
        symbol: &'a str,
        side: Side,
        quantity: &'a Decimal,
        idem: &'a IdemTag,
    },
    Other(&'a PortfolioCommand),
}

impl Entity for Portfolio {
    type Command = PortfolioCommand;
    type Event = PortfolioEvent;
    type Reply = PortfolioReply;
    type Rejection = PortfolioRejection;
    type Query = crate::domain::queries::PortfolioQuery;
    type View = crate::domain::queries::PortfolioView;
    const KIND: EntityKind = EntityKind::Portfolio;

    fn request_form(cmd: &PortfolioCommand) -> impl Serialize + '_ {
        match cmd {
            PortfolioCommand::PlaceOrder {
                symbol, side, quantity, idem, ..
            } => RequestForm::Order {
                symbol,
                side: *side,
                quantity,
                idem,
            },
            other => RequestForm::Other(other),
        }
    }

    fn query(&self, query: &Self::Query) -> Self::View {
        query.run(self)
    }

    fn empty(id: &str) -> Self {
        Portfolio {
            owner: id.to_string(),
            cash: Decimal::ZERO,
            holdings: BTreeMap::new(),
            idempotency: BTreeMap::new(),
            totals: Totals::default(),
            day: DayBook::default(),
            last_close: None,
        }
    }

    fn decide(&self, cmd: PortfolioCommand, ctx: &mut Ctx<'_>) -> Result<Decision<PortfolioEvent, PortfolioReply>, PortfolioRejection> {
        match cmd {
            PortfolioCommand::Deposit { amount, idem } => self.once(idem, ctx, |p, idem, ctx| p.decide_deposit(amount, idem, ctx)),
            PortfolioCommand::Withdraw { amount, idem, investor } => self.once(idem, ctx, |p, idem, ctx| p.decide_withdrawal(amount, &investor, idem, ctx)),
            PortfolioCommand::PlaceOrder {
                symbol,
                side,
                quantity,
                quote,
                investor,
                fees,
                idem,
            } => self.once(idem, ctx, |p, idem, ctx| {
                p.decide_order(symbol, side, quantity, quote, &investor, &fees, idem, ctx)
            }),
            // A day close is not a client request: no key, and a refusal is not remembered.
            PortfolioCommand::CloseDay { date, prices, cutoff, journal } => self.decide_close(date, &prices, cutoff, &journal, ctx),
        }
    }

    fn apply(&mut self, event: &PortfolioEvent) {
        match event {
            PortfolioEvent::Refused { idem, rejection, at } => {
                self.remember(idem, PortfolioReply::Refused(rejection.clone()), *at);
            }
            PortfolioEvent::Deposited { amount, at, idem, .. } => {
                self.cash += amount;
                self.totals.deposits += amount;
                self.day.deposits += amount;
                self.remember(idem, PortfolioReply::Cash { cash: self.cash }, *at);
            }
            PortfolioEvent::Withdrawn { amount, at, idem, .. } => {
                self.cash -= amount;
                self.totals.withdrawals += amount;
                self.day.withdrawals += amount;
                self.remember(idem, PortfolioReply::Cash { cash: self.cash }, *at);
            }
            PortfolioEvent::OrderFilled { order, idem, .. } => {
                let notional = round_cash(order.quantity * order.price);
                let holding = self.holdings.entry(order.symbol.clone()).or_default();
                match order.side {
                    Side::Buy => {
                        holding.quantity += order.quantity;
                        holding.cost_basis += notional;
                    }
                    Side::Sell => {
                        let removed = cost_removed(holding, order.quantity);
                        holding.quantity -= order.quantity;
                        holding.cost_basis -= removed;
                        self.totals.realised_pnl += notional - removed;
                    }
                }
                if holding.quantity.is_zero() {
                    self.holdings.remove(&order.symbol);
                }
                self.cash += order.cash_effect;
                self.totals.fees += order.fees;
                self.day.fees += order.fees;
                self.day.orders.push(order.clone());
                self.remember(idem, PortfolioReply::Order(order.clone()), order.executed_at);
            }
            PortfolioEvent::DayClosed { statement } => {
                self.last_close = Some(Closing {
                    date: statement.date,
                    value: statement.value,
                    contributions: statement.contributions,
                    at: statement.closed_at,
                });
                // What the statement stated leaves the day book; activity after its cutoff
                // stays for the next one.
                self.day.orders.retain(|o| !statement.trades.iter().any(|t| t.order_id == o.order_id));
                self.day.deposits -= statement.deposits;
                self.day.withdrawals -= statement.withdrawals;
                self.day.fees -= statement.fees;
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        assert!(self.cash >= Decimal::ZERO, "portfolio {}: cash negative ({})", self.owner, self.cash);
        let mut basis = Decimal::ZERO;
        for (symbol, h) in &self.holdings {
            assert!(h.quantity > Decimal::ZERO, "portfolio {}: holding {symbol} not positive", self.owner);
            assert!(h.cost_basis >= Decimal::ZERO, "portfolio {}: cost basis of {symbol} negative", self.owner);
            basis += h.cost_basis;
        }
        let t = &self.totals;
        assert_eq!(
            self.cash + basis,
            t.deposits - t.withdrawals - t.fees + t.realised_pnl,
            "portfolio {}: cash + cost basis drifted from deposits − withdrawals − fees + realised P&L",
            self.owner
        );
    }
}
