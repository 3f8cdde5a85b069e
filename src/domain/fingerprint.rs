//! The fingerprint of a client request: what an idempotency key is checked against. One
//! definition for the gateway, the workflows and the simulator (a key reused for another
//! request is `idempotency_key_reused` wherever it arrives).

use crate::domain::money::plain_string;
use crate::domain::portfolio::Side;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// SHA-256 over the method, the route and the canonical JSON of the parsed body.
pub fn request_fingerprint<T: Serialize>(method: &str, route: &str, body: &T) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(route.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(body).expect("serialising a parsed request"));
    h.finalize().into()
}

/// Order `i` of accepting advice `advice_id`: its own fingerprint under the accept's key series.
pub fn accepted_order(advice_id: &str, i: usize) -> [u8; 32] {
    request_fingerprint("POST", &format!("/v1/advice/{advice_id}/accept"), &i)
}

/// `POST /v1/portfolio/deposits` with `amount`.
pub fn deposit(amount: Decimal) -> [u8; 32] {
    request_fingerprint("POST", DEPOSITS_ROUTE, &plain_string(amount))
}

/// `POST /v1/portfolio/withdrawals` with `amount`.
pub fn withdrawal(amount: Decimal) -> [u8; 32] {
    request_fingerprint("POST", WITHDRAWALS_ROUTE, &plain_string(amount))
}

/// `POST /v1/orders` for `quantity` of `symbol` on `side`.
pub fn order(symbol: &str, side: Side, quantity: Decimal) -> [u8; 32] {
    request_fingerprint("POST", ORDERS_ROUTE, &(symbol, side.as_str(), plain_string(quantity)))
}

pub const DEPOSITS_ROUTE: &str = "/v1/portfolio/deposits";
pub const WITHDRAWALS_ROUTE: &str = "/v1/portfolio/withdrawals";
pub const ORDERS_ROUTE: &str = "/v1/orders";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_has_its_own_fingerprint_and_scale_does_not_matter() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(deposit(d("10.50")), deposit(d("10.5")), "the canonical amount");
        assert_ne!(deposit(d("10")), withdrawal(d("10")));
        assert_ne!(order("ACME", Side::Buy, d("1")), order("ACME", Side::Sell, d("1")));
        assert_ne!(accepted_order("adv_1", 0), accepted_order("adv_1", 1));
    }
}
