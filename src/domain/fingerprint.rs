//! The fingerprint of a client request: what an idempotency key is checked against. One
//! definition for the gateway, the workflows and the simulator (a key reused for another
//! request is `idempotency_key_reused` wherever it arrives).

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
