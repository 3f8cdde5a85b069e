//! The node's price book: the latest committed quote of every instrument, on every node. The
//! node that drives the feed applies each tick to its instrument (committed on the instrument's
//! group), then hands the round's quotes to its own book and to every other member's
//! (`PeerRequest::Prices`); each node publishes them to its own fan-out (streams, live
//! valuations). Orders are priced from the book when it has a recent quote — the order runs at
//! the user's group leader with no hop to the instrument's — and from the instrument itself
//! otherwise.

use crate::domain::instrument::Quote;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub use crate::domain::instrument::{check_round, QUOTES_PER_ROUND_MAX};

pub struct QuoteBook {
    quotes: RwLock<HashMap<String, (Quote, Instant)>>,
    /// A quote older than this (by when this node learnt it) is not used to price an order.
    max_age: Duration,
}

impl QuoteBook {
    pub fn new(max_age: Duration) -> QuoteBook {
        QuoteBook {
            quotes: RwLock::new(HashMap::new()),
            max_age,
        }
    }

    /// Learns a round of quotes; a quote older than the one held is ignored (rounds may arrive
    /// out of order). Returns those that were news.
    pub fn learn(&self, quotes: Vec<Quote>) -> Vec<Quote> {
        let now = Instant::now();
        let mut book = self.quotes.write().expect("quote book lock");
        let mut news = Vec::with_capacity(quotes.len());
        for q in quotes {
            match book.get(&q.listing.symbol) {
                Some((held, _)) if held.as_of > q.as_of => continue,
                _ => {}
            }
            book.insert(q.listing.symbol.clone(), (q.clone(), now));
            news.push(q);
        }
        news
    }

    /// The quote of `symbol` if this node learnt it within the book's age bound.
    pub fn recent(&self, symbol: &str) -> Option<Quote> {
        let book = self.quotes.read().expect("quote book lock");
        book.get(symbol).filter(|(_, at)| at.elapsed() <= self.max_age).map(|(q, _)| q.clone())
    }

    pub fn len(&self) -> usize {
        self.quotes.read().expect("quote book lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::instrument::{InstrumentKind, Listing};
    use crate::domain::time::Timestamp;
    use rust_decimal::Decimal;

    fn quote(symbol: &str, price: i64, at: i64) -> Quote {
        Quote {
            listing: Listing {
                symbol: symbol.into(),
                name: symbol.into(),
                kind: InstrumentKind::Equity,
                complex: false,
                currency: "EUR".into(),
                risk_class: 4,
            },
            price: Decimal::new(price, 0),
            as_of: Timestamp(at),
        }
    }

    #[test]
    fn an_older_quote_never_replaces_a_newer_one() {
        let book = QuoteBook::new(Duration::from_secs(60));
        assert_eq!(book.learn(vec![quote("ACME", 10, 2)]).len(), 1);
        assert!(book.learn(vec![quote("ACME", 9, 1)]).is_empty());
        assert_eq!(book.recent("ACME").unwrap().price, Decimal::new(10, 0));
        assert_eq!(book.learn(vec![quote("ACME", 11, 3)]).len(), 1);
        assert_eq!(book.recent("ACME").unwrap().price, Decimal::new(11, 0));
        assert!(book.recent("OTHER").is_none());
    }

    #[test]
    fn a_quote_past_its_age_is_not_used() {
        let book = QuoteBook::new(Duration::ZERO);
        book.learn(vec![quote("ACME", 10, 1)]);
        std::thread::sleep(Duration::from_millis(2));
        assert!(book.recent("ACME").is_none());
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn rounds_from_peers_are_checked() {
        assert!(check_round(&[quote("ACME", 10, 1)]).is_ok());
        assert!(check_round(&[quote("", 10, 1)]).is_err());
        assert!(check_round(&[quote("ACME", -1, 1)]).is_err());
        assert!(check_round(&vec![quote("ACME", 10, 1); QUOTES_PER_ROUND_MAX + 1]).is_err());
    }
}
