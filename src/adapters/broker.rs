//! Brokers: where orders are executed. The trait is what the order path and the reconciliation
//! job use; [`SimulatedBroker`] is the built-in one: it fills at the latest price moved against
//! the client by `[broker] slippage_bps`, charges the `[fees]` schedule (applied by the
//! portfolio, which books the fill), and keeps a confirmation per execution in its ledger — a
//! shard record of the user's shard per order id (one JSON document each, the shape an external
//! broker's confirmation feed has), written through the node's group commit.

use crate::actors::journal::AuditJournal;
use crate::domain::portfolio::{Order, Side};
use crate::domain::reconcile::Confirmation;
use crate::storage::keys::ShardRecord;
use crate::storage::records::user_shard;
use crate::storage::scope::Groups;
use crate::storage::store::WriteSet;
use crate::storage::{keys, Store};
use rust_decimal::Decimal;
use std::future::Future;
use std::pin::Pin;

/// A confirmation read back from the ledger, or the key of a record that cannot be read and why.
pub type LedgerEntry = Result<Confirmation, (String, String)>;

pub trait Broker: Send + Sync {
    /// The price a market order fills at, given the latest market price.
    fn fill_price(&self, side: Side, market: Decimal) -> Decimal;
    /// Executes a booked order at the broker; answers once its confirmation is durable.
    /// Idempotent by order id: the first execution's confirmation stands, a retry changes
    /// nothing. `fence`: the raft term of the booking when it is not durable yet (its write
    /// and the confirmation share a flush); the confirmation is then written only in that term
    /// at this node, behind the booking, so it never stands without it.
    fn execute<'a>(&'a self, user_id: &'a str, order: &'a Order, fence: Option<u64>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// Every confirmation of the covered shard groups' users, in order-id order; a record that
    /// cannot be read is an `Err` item naming its key (reported by reconciliation, never skipped).
    fn confirmations(&self, scope: &Groups) -> Result<Vec<LedgerEntry>, String>;
}

pub struct SimulatedBroker {
    store: Store,
    journal: AuditJournal,
    slippage_bps: Decimal,
}

impl SimulatedBroker {
    /// A broker whose ledger is `store`'s, written by `journal`'s group commit.
    pub fn new(store: Store, journal: AuditJournal, slippage_bps: Decimal) -> SimulatedBroker {
        SimulatedBroker { store, journal, slippage_bps }
    }
}

impl Broker for SimulatedBroker {
    fn fill_price(&self, side: Side, market: Decimal) -> Decimal {
        crate::domain::fees::fill_price(side, market, self.slippage_bps)
    }

    fn execute<'a>(&'a self, user_id: &'a str, order: &'a Order, fence: Option<u64>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            // First execution wins without a read here: a confirmation is a write-once record
            // (`keys::is_write_once`), so a retry's put is dropped where the log is applied.
            // (A read on this path would wait behind the writer's batch: sled's reads and
            // `apply_batch` share one lock.) Either way the answer waits for this write, which
            // the log orders after the first.
            let bytes = serde_json::to_vec(&Confirmation::of(user_id, order)).map_err(|e| e.to_string())?;
            let mut writes = WriteSet::default();
            writes
                .puts
                .push((keys::shard_record_key(user_shard(user_id), ShardRecord::Confirmation, &order.order_id), bytes));
            match fence {
                Some(term) => self.journal.write_fenced(writes, term).await,
                None => self.journal.write(writes).await,
            }
            .map_err(|e| e.to_string())
        })
    }

    fn confirmations(&self, scope: &Groups) -> Result<Vec<LedgerEntry>, String> {
        let mut all = self.store.raw_records_in(ShardRecord::Confirmation, scope).map_err(|e| e.to_string())?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all
            .into_iter()
            .map(|(key, v)| serde_json::from_slice::<Confirmation>(&v).map_err(|e| (key, e.to_string())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;

    #[tokio::test]
    async fn fills_against_the_client_and_confirms_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = AuditJournal::start(store.clone(), 64, std::sync::Arc::new(crate::telemetry::Metrics::new())).unwrap();
        let b = SimulatedBroker::new(store.clone(), journal.clone(), Decimal::from(10));
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
        let first = Confirmation::of("usr_a", &o);
        b.execute("usr_a", &o, None).await.unwrap();
        o.price = Decimal::from(1);
        b.execute("usr_a", &o, None).await.unwrap();
        // Two executions of another order at once: one of them stands, whole.
        o.order_id = "ord_2".into();
        let mut other = o.clone();
        other.price = Decimal::from(2);
        let (x, y) = tokio::join!(b.execute("usr_a", &o, None), b.execute("usr_a", &other, None));
        x.unwrap();
        y.unwrap();
        let bad = keys::shard_record_key(user_shard("usr_b"), ShardRecord::Confirmation, "ord_bad");
        store.tree().insert(bad, b"{not json".to_vec()).unwrap();
        let all = b.confirmations(&Groups::All).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].as_ref().unwrap(), &first, "a retry changes nothing: the first execution stands");
        let second = all[1].as_ref().unwrap();
        assert!(
            second == &Confirmation::of("usr_a", &o) || second == &Confirmation::of("usr_a", &other),
            "{second:?}"
        );
        assert!(matches!(&all[2], Err((k, _)) if k == "ord_bad"));
        // Behind a booking of another term than the one served now, nothing is written (it
        // would stand without the booking); behind one of this term, it is.
        let group = crate::domain::ids::group_of(user_shard("usr_a"), store.groups());
        let term = loop {
            if let Some(t) = journal.serving_term(group) {
                break t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        o.order_id = "ord_3".into();
        assert!(b.execute("usr_a", &o, Some(term + 1)).await.is_err(), "fenced to a term not served");
        assert_eq!(b.confirmations(&Groups::All).unwrap().len(), 3, "nothing written");
        b.execute("usr_a", &o, Some(term)).await.unwrap();
        assert_eq!(b.confirmations(&Groups::All).unwrap().len(), 4);
    }
}
