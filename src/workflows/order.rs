//! The order path every order takes (placed directly or from accepted advice): the latest
//! quote priced for the side (slippage), the investor's compliance facts from their account,
//! then the portfolio decides and books the fill, then the broker confirms it.

use super::flow::{unexpected, Effect, Effected, Input, Next, Workflow};
use crate::domain::account::Account;
use crate::domain::compliance::ProductFacts;
use crate::domain::envelope::Envelope;
use crate::domain::fees::{fill_price, FeeSchedule};
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::{OrderQuote, Portfolio, PortfolioCommand, PortfolioReply};
use crate::domain::queries::{CurrentQuote, InvestorFacts};
use rust_decimal::Decimal;

pub use crate::domain::steps::{OrderOutcome, OrderRequest};

/// What the node's configuration fixes for every order.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderTerms {
    pub fees: FeeSchedule,
    pub slippage_bps: Decimal,
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    /// The node's price book is asked first (the latest committed price every node learns
    /// from the feed, no hop); when it does not know the symbol, the instrument is.
    Pricing,
    Quoting,
    Checking {
        quote: Option<OrderQuote>,
    },
    Placing,
    Confirming(PortfolioReply),
    Finished,
}

#[derive(Clone, Debug)]
pub struct PlaceOrder {
    request: OrderRequest,
    terms: OrderTerms,
    /// The symbol is in the node's catalog (an unlisted one is never asked for a quote).
    listed: bool,
    stage: Stage,
}

impl PlaceOrder {
    pub fn new(request: OrderRequest, terms: OrderTerms, listed: bool) -> PlaceOrder {
        PlaceOrder {
            request,
            terms,
            listed,
            stage: Stage::Start,
        }
    }

    /// The quote priced for the side (slippage), with the product's facts.
    fn priced(&self, q: Option<crate::domain::instrument::Quote>) -> Option<OrderQuote> {
        q.map(|q| OrderQuote {
            price: fill_price(self.request.side, q.price, self.terms.slippage_bps),
            product: ProductFacts {
                complex: q.listing.complex,
                risk_class: q.listing.risk_class,
            },
        })
    }

    /// The investor's facts, read for the portfolio's decision that comes next: a peek (every
    /// outcome of that decision is a write — a fill, or a refusal remembered under the order's
    /// key — and the account and portfolio share the user's shard).
    fn investor_query(&self) -> Next<OrderOutcome> {
        Next::Peek(Envelope::query::<Account, _>(&self.request.user_id, InvestorFacts))
    }
}

impl Workflow for PlaceOrder {
    type Output = OrderOutcome;

    fn next(&mut self, input: Input) -> Next<OrderOutcome> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) if self.listed => {
                self.stage = Stage::Pricing;
                Next::Effect(Effect::Quote(self.request.symbol.clone()))
            }
            (Stage::Pricing, Input::Effected(Effected::Quote(q))) => {
                self.stage = Stage::Checking { quote: self.priced(Some(*q)) };
                self.investor_query()
            }
            (Stage::Pricing, Input::Effected(_)) => {
                // The book does not know it (or has nothing recent): the instrument answers.
                self.stage = Stage::Quoting;
                Next::Call(Envelope::query::<Instrument, _>(&self.request.symbol, CurrentQuote))
            }
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Checking { quote: None };
                self.investor_query()
            }
            (Stage::Quoting, Input::Answer(a)) => {
                let Some(quote) = a.clone().viewed::<Instrument, CurrentQuote>() else {
                    unexpected("order", &Input::Answer(a))
                };
                self.stage = Stage::Checking { quote: self.priced(quote) };
                self.investor_query()
            }
            (Stage::Checking { quote }, Input::Answer(a)) => {
                // The investor's KYC, screening and suitability as their account records them
                // now; the portfolio runs the compliance rules over them before funds and holdings.
                let Some(investor) = a.clone().viewed::<Account, InvestorFacts>() else {
                    unexpected("order", &Input::Answer(a))
                };
                let r = &self.request;
                let cmd = PortfolioCommand::PlaceOrder {
                    symbol: r.symbol.clone(),
                    side: r.side,
                    quantity: r.quantity,
                    quote,
                    investor,
                    fees: self.terms.fees.clone(),
                    idem: r.idem.clone(),
                };
                self.stage = Stage::Placing;
                // The decision at once; its durability is awaited with the confirmation's.
                Next::Decide(Envelope::execute::<Portfolio>(&r.user_id, cmd, r.meta.clone()))
            }
            (Stage::Placing, Input::Answer(a)) => match a.clone().executed::<Portfolio>() {
                // Booked (durable before the workflow ends); the broker's confirmation goes to
                // the same group behind it and is durable before the client hears of the fill.
                Some(Ok(PortfolioReply::Order(o))) => {
                    self.stage = Stage::Confirming(PortfolioReply::Order(o.clone()));
                    Next::Effect(Effect::Confirm {
                        user_id: self.request.user_id.clone(),
                        order: o,
                    })
                }
                Some(outcome) => Next::Done(outcome),
                None => unexpected("order", &Input::Answer(a)),
            },
            (Stage::Confirming(reply), Input::Effected(_)) => Next::Done(Ok(reply)),
            (_, input) => unexpected("order", &input),
        }
    }
}
