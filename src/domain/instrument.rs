//! A market instrument: its listing (symbol, kind, complexity, currency) and its latest price.
//!
//! Listing is audited. Price ticks are market data, not decisions: they are journaled on the
//! instrument (and compacted behind snapshots) but not put on the audit chain; every trade's
//! audit record carries the price it executed at.

use crate::domain::audit::AuditDraft;
use crate::domain::ctx::Ctx;
use crate::domain::entity::{Decision, Entity};
use crate::domain::ids::EntityKind;
use crate::domain::money::is_valid_price;
use crate::domain::price_history::PriceHistory;
use crate::domain::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An instrument's name: a plain name (`account::is_plain_name`) with nothing invisible in it
/// (`Acme\u{200B}Corp` would list a second instrument that reads as the first). The admin
/// route and the configuration hold names to it alike.
pub fn is_instrument_name(name: &str) -> bool {
    crate::domain::account::is_plain_name(name) && !name.chars().any(crate::domain::account::is_default_ignorable)
}

/// An instrument's symbol: 1–16 characters of A–Z, 0–9, '-' or '.'.
pub fn is_symbol(symbol: &str) -> bool {
    !symbol.is_empty() && symbol.len() <= 16 && symbol.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentKind {
    Equity,
    Etf,
    Bond,
    Fund,
    Derivative,
    LeveragedEtf,
}

impl InstrumentKind {
    /// MiFID II complex products: derivatives and leveraged ETFs.
    pub fn is_complex(self) -> bool {
        matches!(self, InstrumentKind::Derivative | InstrumentKind::LeveragedEtf)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Equity => "equity",
            InstrumentKind::Etf => "etf",
            InstrumentKind::Bond => "bond",
            InstrumentKind::Fund => "fund",
            InstrumentKind::Derivative => "derivative",
            InstrumentKind::LeveragedEtf => "leveraged_etf",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub symbol: String,
    pub name: String,
    pub kind: InstrumentKind,
    pub complex: bool,
    pub currency: String,
    /// Risk class 1–7 (used by the suitability rules).
    pub risk_class: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instrument {
    pub symbol: String,
    pub listing: Option<Listing>,
    pub price: Decimal,
    pub as_of: Timestamp,
    /// The downsampled price series (minute bars for a day, daily closes for ten years).
    pub history: PriceHistory,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum InstrumentCommand {
    /// Lists the instrument with an opening price; a no-op when already listed identically.
    List { listing: Listing, price: Decimal },
    /// A new price from the feed.
    Tick { price: Decimal },
    /// Recorded prices (a file of real prices): those before the instrument's history begins
    /// become its earlier daily closes; those after its latest price and not in the future
    /// are its prices at their own times; the rest are already known and left out (so the same
    /// file can be given again, at every start).
    Record { points: Vec<(Timestamp, Decimal)> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum InstrumentEvent {
    Listed {
        listing: Listing,
        price: Decimal,
        at: Timestamp,
    },
    Priced {
        price: Decimal,
        at: Timestamp,
    },
    /// Recorded prices: `earlier` daily closes before the history began, `later` prices after
    /// the latest one, each at its own time.
    Recorded {
        earlier: Vec<(Timestamp, Decimal)>,
        later: Vec<(Timestamp, Decimal)>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum InstrumentRejection {
    UnknownInstrument,
    InvalidPrice,
    InvalidListing,
    ListingConflict,
}

/// What clients see of an instrument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub listing: Listing,
    pub price: Decimal,
    pub as_of: Timestamp,
}

/// The most quotes one round of the price feed (one message to a peer) may carry.
pub const QUOTES_PER_ROUND_MAX: usize = 10_000;

/// Checks a round of quotes from a peer before it is learnt: a bounded count, listed-looking
/// symbols, valid prices.
pub fn check_round(quotes: &[Quote]) -> Result<(), String> {
    if quotes.len() > QUOTES_PER_ROUND_MAX {
        return Err(format!("{} quotes in one round (at most {QUOTES_PER_ROUND_MAX})", quotes.len()));
    }
    for q in quotes {
        let s = &q.listing.symbol;
        if s.is_empty() || s.len() > 16 || !crate::domain::money::is_valid_price(q.price) {
            return Err(format!("a quote of `{}` is not valid", s.chars().take(16).collect::<String>()));
        }
    }
    Ok(())
}

impl Instrument {
    pub fn quote(&self) -> Option<Quote> {
        self.listing.as_ref().map(|l| Quote {
            listing: l.clone(),
            price: self.price,
            as_of: self.as_of,
        })
    }
}

impl Entity for Instrument {
    type Command = InstrumentCommand;
    type Event = InstrumentEvent;
    type Reply = ();
    type Rejection = InstrumentRejection;
    type Query = crate::domain::queries::InstrumentQuery;
    type View = crate::domain::queries::InstrumentView;
    const KIND: EntityKind = EntityKind::Instrument;

    fn query(&self, query: &Self::Query) -> Self::View {
        query.run(self)
    }

    fn empty(id: &str) -> Self {
        Instrument {
            symbol: id.to_string(),
            listing: None,
            price: Decimal::ZERO,
            as_of: Timestamp(0),
            history: PriceHistory::default(),
        }
    }

    fn decide(&self, cmd: InstrumentCommand, ctx: &mut Ctx<'_>) -> Result<Decision<InstrumentEvent, ()>, InstrumentRejection> {
        match cmd {
            InstrumentCommand::List { listing, price } => {
                if listing.symbol != self.symbol || listing.complex != listing.kind.is_complex() || !(1..=7).contains(&listing.risk_class) {
                    return Err(InstrumentRejection::InvalidListing);
                }
                if !is_valid_price(price) {
                    return Err(InstrumentRejection::InvalidPrice);
                }
                match &self.listing {
                    Some(existing) if *existing == listing => Ok(Decision::replay(())),
                    Some(_) => Err(InstrumentRejection::ListingConflict),
                    None => {
                        ctx.audit(
                            AuditDraft::ok("instrument.list")
                                .detail("symbol", &listing.symbol)
                                .detail("kind", listing.kind.as_str())
                                .detail("risk_class", listing.risk_class)
                                .detail("price", crate::domain::money::plain_string(price)),
                        );
                        Ok(Decision::new(vec![InstrumentEvent::Listed { listing, price, at: ctx.now }], ()))
                    }
                }
            }
            InstrumentCommand::Tick { price } => {
                if self.listing.is_none() {
                    return Err(InstrumentRejection::UnknownInstrument);
                }
                if !is_valid_price(price) {
                    return Err(InstrumentRejection::InvalidPrice);
                }
                if ctx.now < self.as_of {
                    // A tick older than the price we hold (reordered delivery) is dropped.
                    return Ok(Decision::replay(()));
                }
                Ok(Decision::new(vec![InstrumentEvent::Priced { price, at: ctx.now }], ()))
            }
            InstrumentCommand::Record { mut points } => {
                if self.listing.is_none() {
                    return Err(InstrumentRejection::UnknownInstrument);
                }
                if points.iter().any(|(_, p)| !is_valid_price(*p)) {
                    return Err(InstrumentRejection::InvalidPrice);
                }
                points.sort_by_key(|(at, _)| *at);
                let begins = self.history.begins();
                let earlier: Vec<_> = points.iter().copied().filter(|(at, _)| begins.is_none_or(|b| *at < b)).collect();
                let later: Vec<_> = points.into_iter().filter(|(at, _)| *at > self.as_of && *at <= ctx.now).collect();
                if earlier.is_empty() && later.is_empty() {
                    return Ok(Decision::replay(()));
                }
                Ok(Decision::new(vec![InstrumentEvent::Recorded { earlier, later }], ()))
            }
        }
    }

    fn apply(&mut self, event: &InstrumentEvent) {
        match event {
            InstrumentEvent::Listed { listing, price, at } => {
                self.listing = Some(listing.clone());
                self.price = *price;
                self.as_of = *at;
                self.history.record(*at, *price);
            }
            InstrumentEvent::Priced { price, at } => {
                self.price = *price;
                self.as_of = *at;
                self.history.record(*at, *price);
            }
            InstrumentEvent::Recorded { earlier, later } => {
                self.history.prepend_days(earlier);
                for (at, price) in later {
                    self.price = *price;
                    self.as_of = *at;
                    self.history.record(*at, *price);
                }
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        if self.listing.is_some() {
            assert!(self.price > Decimal::ZERO, "listed instrument {} has a non-positive price", self.symbol);
        }
    }

    fn journal_is_record() -> bool {
        false
    }
}
