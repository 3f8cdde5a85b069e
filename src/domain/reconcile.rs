//! Reconciliation of the broker's confirmations with the portfolios' orders (sans-IO).
//!
//! Every order a portfolio booked must have exactly one confirmation from the broker with the
//! same user, symbol, side, quantity, price and fees; every confirmation must match a booked
//! order. Anything else is a discrepancy, and each one is raised as an alert.

use crate::domain::portfolio::{Order, Side};
use crate::domain::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the broker reports for an execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub order_id: String,
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    pub quantity: Decimal,
    pub price: Decimal,
    pub fees: Decimal,
    pub executed_at: Timestamp,
}

impl Confirmation {
    pub fn of(user_id: &str, o: &Order) -> Confirmation {
        Confirmation {
            order_id: o.order_id.clone(),
            user_id: user_id.to_string(),
            symbol: o.symbol.clone(),
            side: o.side,
            quantity: o.quantity,
            price: o.price,
            fees: o.fees,
            executed_at: o.executed_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discrepancy {
    /// A booked order the broker has not confirmed.
    Missing { order_id: String, user_id: String },
    /// The broker confirmed the order with a different `field`.
    Mismatch {
        order_id: String,
        user_id: String,
        field: &'static str,
        booked: String,
        confirmed: String,
    },
    /// A confirmation no portfolio booked.
    Unknown { order_id: String, user_id: String },
    /// A confirmation record that cannot be read.
    Unreadable { key: String, error: String },
}

impl Discrepancy {
    pub fn kind(&self) -> &'static str {
        match self {
            Discrepancy::Missing { .. } => "missing_confirmation",
            Discrepancy::Mismatch { .. } => "mismatched_confirmation",
            Discrepancy::Unknown { .. } => "unknown_confirmation",
            Discrepancy::Unreadable { .. } => "unreadable_confirmation",
        }
    }
    /// Identifies the discrepancy, so that it is alerted once however often it is found.
    pub fn key(&self) -> String {
        match self {
            Discrepancy::Missing { order_id, .. } | Discrepancy::Unknown { order_id, .. } => format!("{}/{order_id}", self.kind()),
            Discrepancy::Mismatch {
                order_id, field, confirmed, ..
            } => format!("{}/{order_id}/{field}/{confirmed}", self.kind()),
            Discrepancy::Unreadable { key, .. } => format!("{}/{key}", self.kind()),
        }
    }
}

/// Compares booked orders `(user, order)` with the broker's confirmations. Orders executed after
/// `cutoff` are not expected to be confirmed yet (and their confirmations are not unknown).
pub fn reconcile(booked: &[(String, Order)], confirmations: &[Confirmation], cutoff: Timestamp) -> Vec<Discrepancy> {
    let mut out = Vec::new();
    let confirmed: BTreeMap<&str, &Confirmation> = confirmations.iter().map(|c| (c.order_id.as_str(), c)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for (user, o) in booked {
        seen.insert(o.order_id.as_str());
        let Some(c) = confirmed.get(o.order_id.as_str()) else {
            if o.executed_at <= cutoff {
                out.push(Discrepancy::Missing {
                    order_id: o.order_id.clone(),
                    user_id: user.clone(),
                });
            }
            continue;
        };
        let fields: [(&'static str, String, String); 6] = [
            ("user_id", user.clone(), c.user_id.clone()),
            ("symbol", o.symbol.clone(), c.symbol.clone()),
            ("side", o.side.as_str().to_string(), c.side.as_str().to_string()),
            ("quantity", o.quantity.normalize().to_string(), c.quantity.normalize().to_string()),
            ("price", o.price.normalize().to_string(), c.price.normalize().to_string()),
            ("fees", o.fees.normalize().to_string(), c.fees.normalize().to_string()),
        ];
        for (field, booked, confirmed) in fields {
            if booked != confirmed {
                out.push(Discrepancy::Mismatch {
                    order_id: o.order_id.clone(),
                    user_id: user.clone(),
                    field,
                    booked,
                    confirmed,
                });
            }
        }
    }
    for c in confirmations {
        if !seen.contains(c.order_id.as_str()) && c.executed_at <= cutoff {
            out.push(Discrepancy::Unknown {
                order_id: c.order_id.clone(),
                user_id: c.user_id.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, price: &str, at: i64) -> Order {
        Order {
            order_id: id.into(),
            symbol: "ACME".into(),
            side: Side::Buy,
            quantity: "2".parse().unwrap(),
            price: price.parse().unwrap(),
            fees: "1.00".parse().unwrap(),
            cash_effect: "-201.00".parse().unwrap(),
            realised_pnl: Decimal::ZERO,
            executed_at: Timestamp(at),
        }
    }

    #[test]
    fn every_kind_of_discrepancy_is_found_and_agreement_is_silent() {
        let booked = vec![
            ("usr_a".to_string(), order("ord_1", "100", 10)),
            ("usr_a".to_string(), order("ord_2", "100", 10)),
            ("usr_b".to_string(), order("ord_3", "100", 10)),
            // Too recent to be confirmed yet.
            ("usr_b".to_string(), order("ord_4", "100", 99)),
        ];
        let mut confirmations = vec![
            Confirmation::of("usr_a", &booked[0].1),
            Confirmation::of("usr_b", &booked[2].1),
            Confirmation::of("usr_c", &order("ord_9", "5", 10)),
        ];
        assert_eq!(reconcile(&booked[..1], &confirmations[..1], Timestamp(50)), vec![]);
        // Trailing zeros are not a difference.
        confirmations[1].price = "100.0000".parse().unwrap();
        assert_eq!(reconcile(&booked[2..3], &confirmations[1..2], Timestamp(50)), vec![]);
        confirmations[1].price = "101.5".parse().unwrap();
        let found = reconcile(&booked, &confirmations, Timestamp(50));
        let kinds: Vec<&str> = found.iter().map(|d| d.kind()).collect();
        assert_eq!(kinds, vec!["missing_confirmation", "mismatched_confirmation", "unknown_confirmation"]);
        assert!(matches!(&found[1], Discrepancy::Mismatch { field: "price", booked, confirmed, .. } if booked == "100" && confirmed == "101.5"));
        assert_ne!(found[0].key(), found[1].key());
    }
}
