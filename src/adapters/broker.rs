//! Brokers: where orders are executed. The trait is what the order path and the reconciliation
//! job use; [`SimulatedBroker`] is the built-in one: it fills at the latest price moved against
//! the client by `[broker] slippage_bps`, charges the `[fees]` schedule (applied by the
//! portfolio, which books the fill), and keeps a confirmation per execution in its own ledger
//! (the sled tree `broker_confirmations`, one JSON document per order id — the shape an external
//! broker's confirmation feed has).

use crate::domain::portfolio::{Order, Side};
use crate::domain::reconcile::Confirmation;
use rust_decimal::Decimal;

/// A confirmation read back from the ledger, or the key of a record that cannot be read and why.
pub type LedgerEntry = Result<Confirmation, (String, String)>;

pub trait Broker: Send + Sync {
    /// The price a market order fills at, given the latest market price.
    fn fill_price(&self, side: Side, market: Decimal) -> Decimal;
    /// Executes a booked order at the broker; answers its confirmation. Idempotent by order id.
    /// The confirmation is durable once [`Broker::sync`] has finished.
    fn execute(&self, user_id: &str, order: &Order) -> Result<Confirmation, String>;
    /// Waits until every confirmation given so far is durable (before the client is answered).
    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
    /// Every confirmation, in order-id order; a record that cannot be read is an `Err` item
    /// naming its key (reported by reconciliation, never skipped).
    fn confirmations(&self) -> Result<Vec<LedgerEntry>, String>;
}

pub use crate::storage::trees::CONFIRMATIONS_TREE;

pub struct SimulatedBroker {
    ledger: sled::Tree,
    slippage_bps: Decimal,
    /// The node's group commit, when the ledger lives in the node's database: its next flush
    /// makes the confirmations durable too, shared with every other write of that cycle.
    group_commit: Option<crate::actors::journal::AuditJournal>,
}

impl SimulatedBroker {
    pub fn new(ledger: sled::Tree, slippage_bps: Decimal) -> SimulatedBroker {
        SimulatedBroker {
            ledger,
            slippage_bps,
            group_commit: None,
        }
    }

    /// Confirmations are made durable by `journal`'s group commit (the ledger must be a tree of
    /// the journal's database) instead of a flush of their own per order.
    pub fn with_group_commit(mut self, journal: crate::actors::journal::AuditJournal) -> SimulatedBroker {
        self.group_commit = Some(journal);
        self
    }
}

impl Broker for SimulatedBroker {
    fn fill_price(&self, side: Side, market: Decimal) -> Decimal {
        crate::domain::fees::fill_price(side, market, self.slippage_bps)
    }

    fn execute(&self, user_id: &str, order: &Order) -> Result<Confirmation, String> {
        let confirmation = Confirmation::of(user_id, order);
        let bytes = serde_json::to_vec(&confirmation).map_err(|e| e.to_string())?;
        // First execution wins: a retry of the same order confirms what was confirmed.
        match self
            .ledger
            .compare_and_swap(order.order_id.as_bytes(), None as Option<&[u8]>, Some(bytes))
            .map_err(|e| e.to_string())?
        {
            Ok(()) => Ok(confirmation),
            Err(current) => match current.current {
                Some(existing) => serde_json::from_slice(&existing).map_err(|e| format!("confirmation {}: {e}", order.order_id)),
                None => Ok(confirmation),
            },
        }
    }

    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            match &self.group_commit {
                Some(journal) => journal.barrier().await.map_err(|e| e.to_string()),
                None => self.ledger.flush_async().await.map(|_| ()).map_err(|e| e.to_string()),
            }
        })
    }

    fn confirmations(&self) -> Result<Vec<LedgerEntry>, String> {
        let mut out = Vec::new();
        for item in self.ledger.iter() {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(serde_json::from_slice::<Confirmation>(&v).map_err(|e| (key, e.to_string())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;

    #[test]
    fn fills_against_the_client_and_confirms_once() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let b = SimulatedBroker::new(db.open_tree(CONFIRMATIONS_TREE).unwrap(), Decimal::from(10));
        assert_eq!(b.fill_price(Side::Buy, Decimal::from(100)), "100.1".parse().unwrap());
        assert_eq!(b.fill_price(Side::Sell, Decimal::from(100)), "99.9".parse().unwrap());
        let mut o = Order {
            order_id: "ord_1".into(),
            symbol: "ACME".into(),
            side: Side::Buy,
            quantity: Decimal::ONE,
            price: "100.1".parse().unwrap(),
            fees: Decimal::ONE,
            cash_effect: "-101.1".parse().unwrap(),
            realised_pnl: Decimal::ZERO,
            executed_at: Timestamp(5),
        };
        let first = b.execute("usr_a", &o).unwrap();
        o.price = Decimal::from(1);
        assert_eq!(b.execute("usr_a", &o).unwrap(), first, "a retry confirms the first execution");
        db.open_tree(CONFIRMATIONS_TREE).unwrap().insert("ord_bad", b"{not json".to_vec()).unwrap();
        let all = b.confirmations().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].as_ref().unwrap(), &first);
        assert!(matches!(&all[1], Err((k, _)) if k == "ord_bad"));
    }
}
