//! The market in the cluster: the instruments are entities of their shard groups, as in
//! production. A feed lists each one (its `List` command through the group's log) and then,
//! every `FEED_EVERY_S` simulated seconds, sends it the market's price (`Tick`), from a node that
//! is up — production's feed at the metadata leader. Advice and the orders of accepted advice
//! read the instruments' committed quotes through a read barrier, as production's router does.
//! A feed call lost with its node is sent again at the next price, under a new request id.

use super::flows::Machine;
use super::{ClusterSim, Failure, SYMBOLS};
use moneta::domain::envelope::{Answer, Envelope, RequestMeta};
use moneta::domain::instrument::{Instrument, InstrumentCommand, InstrumentKind, Listing};
use moneta::workflows::flow::{Input, Next, Workflow};
use rust_decimal::Decimal;

/// The feed sends prices this often (simulated seconds).
const FEED_EVERY_S: u64 = 10;

/// What the feed (or an investor's single call) is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Listing instrument `i` of `SYMBOLS`.
    List(usize),
    /// A price of instrument `i`.
    Price(usize),
    /// An investor's consent to AI profiling.
    Consent,
    /// An investor's deposit.
    Deposit,
}

/// One entity call, as the gateway makes for a deposit or a consent, and the feed for a price:
/// the call, then its answer.
pub(super) struct Single {
    pub(super) purpose: Purpose,
    call: Option<Envelope>,
}

impl Single {
    pub(super) fn new(purpose: Purpose, call: Envelope) -> Single {
        Single { purpose, call: Some(call) }
    }
}

impl Workflow for Single {
    type Output = (Purpose, Answer);

    fn steps_max(&self) -> usize {
        2
    }

    fn next(&mut self, input: Input) -> Next<(Purpose, Answer)> {
        match (input, self.call.take()) {
            (Input::Start, Some(call)) => Next::Call(call),
            (Input::Answer(a), None) => Next::Done((self.purpose, a)),
            (input, _) => panic!("a single call was handed {input:?}"),
        }
    }
}

/// How the simulated instruments are listed (kind and risk class as a real catalog would).
fn listing(i: usize) -> Listing {
    let (symbol, _) = SYMBOLS[i];
    let (name, kind, risk_class) = match symbol {
        "VTI" => ("Total US Stock Market ETF", InstrumentKind::Etf, 4),
        "BND" => ("Total Bond Market ETF", InstrumentKind::Bond, 2),
        "AAPL" => ("Apple Inc.", InstrumentKind::Equity, 5),
        _ => ("Total International Stock ETF", InstrumentKind::Etf, 5),
    };
    Listing {
        symbol: symbol.to_string(),
        name: name.to_string(),
        kind,
        complex: false,
        currency: "USD".into(),
        risk_class,
    }
}

/// The feed's state: which instruments are listed, and the call under way for each.
#[derive(Default)]
pub(super) struct Feed {
    listed: Vec<bool>,
    running: Vec<Option<u64>>,
}

impl ClusterSim {
    /// Every `FEED_EVERY_S` seconds: lists what is not listed yet, else sends the price (one
    /// call per instrument at a time).
    pub(super) fn feed(&mut self) {
        if !self.tick.is_multiple_of(FEED_EVERY_S * 1000 / moneta::cluster::raft::sim::TICK_MS) {
            return;
        }
        if self.feed.listed.is_empty() {
            self.feed.listed = vec![false; SYMBOLS.len()];
            self.feed.running = vec![None; SYMBOLS.len()];
        }
        let Some(node) = self.raft.nodes.iter().find(|(_, n)| n.raft.is_some()).map(|(&id, _)| id) else {
            return;
        };
        for (i, (symbol, opening)) in SYMBOLS.iter().enumerate() {
            // The market closes with the safety phase (the liveness phase waits for every
            // flow); what is not listed yet still is.
            if self.feed.running[i].is_some() || (self.live && self.feed.listed[i]) {
                continue;
            }
            let price = Decimal::new(self.prices[i], 2);
            let (purpose, cmd, request_id) = match self.feed.listed[i] {
                // Listed at its opening price: the same command under the same id when sent again.
                false => (
                    Purpose::List(i),
                    InstrumentCommand::List {
                        listing: listing(i),
                        price: Decimal::new(*opening, 2),
                    },
                    format!("feed-list-{symbol}"),
                ),
                true => (Purpose::Price(i), InstrumentCommand::Tick { price }, format!("feed-{symbol}-{}", self.tick)),
            };
            let meta = RequestMeta {
                request_id,
                actor: "system".into(),
            };
            let call = Envelope::execute::<Instrument>(*symbol, cmd, meta);
            let f = self.start_flow(super::flows::NOBODY, node, Machine::Single(Box::new(Single::new(purpose, call))));
            self.feed.running[i] = Some(f);
        }
    }

    /// A feed call ended (`answer`), or died with its node (`None`).
    pub(super) fn fed(&mut self, purpose: Purpose, answer: Option<Box<Answer>>) -> Result<(), Failure> {
        let i = match purpose {
            Purpose::List(i) | Purpose::Price(i) => i,
            _ => return Ok(()),
        };
        self.feed.running[i] = None;
        let Some(answer) = answer else { return Ok(()) };
        match (*answer).executed::<Instrument>() {
            Some(Ok(_)) => {
                if matches!(purpose, Purpose::List(_)) {
                    self.feed.listed[i] = true;
                }
                Ok(())
            }
            other => self.fail(format!("{}: the feed's {purpose:?} was answered {other:?}", SYMBOLS[i].0)),
        }
    }

    /// The symbols listed so far (advice's universe, as a node's catalog).
    pub(super) fn listed_symbols(&self) -> Vec<String> {
        SYMBOLS
            .iter()
            .zip(&self.feed.listed)
            .filter(|(_, &l)| l)
            .map(|((s, _), _)| s.to_string())
            .collect()
    }
}
