//! Access tokens already verified, by the SHA-256 of their text: a token seen again skips the
//! JWT decode and the Ed25519 check (12% of a node's time under orders, BENCHMARKS.md) until
//! it expires. Only the signature and the claims' check are remembered: revocation is looked up
//! on every request after it (`AppState::claims`, `session_live`), so a revoked session's token
//! is refused at once, cached or not. Bounded: when full, expired entries go, and if that frees
//! nothing, everything goes (the next requests verify again).

use super::auth::Claims;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens remembered at most (a few MB of claims).
pub const VERIFIED_TOKENS_MAX: usize = 16_384;

pub struct VerifiedTokens {
    by_hash: Mutex<HashMap<[u8; 32], Claims>>,
    max: usize,
    /// Seconds a token is accepted past its `exp` (the verifier's leeway).
    leeway_secs: i64,
}

impl VerifiedTokens {
    pub fn new(max: usize, leeway_secs: i64) -> VerifiedTokens {
        assert!(max > 0, "a cache of no tokens");
        VerifiedTokens {
            by_hash: Mutex::new(HashMap::new()),
            max,
            leeway_secs,
        }
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of `token` if it was verified and has not expired at `now_secs`.
    pub fn get(&self, token: &str, now_secs: i64) -> Option<Claims> {
        let key = Self::key(token);
        let mut map = self.by_hash.lock().expect("verified tokens lock");
        match map.get(&key) {
            Some(c) if c.exp + self.leeway_secs > now_secs => Some(c.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a token that was just verified.
    pub fn put(&self, token: &str, claims: &Claims, now_secs: i64) {
        let mut map = self.by_hash.lock().expect("verified tokens lock");
        if map.len() >= self.max {
            let leeway = self.leeway_secs;
            map.retain(|_, c| c.exp + leeway > now_secs);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(Self::key(token), claims.clone());
        debug_assert!(map.len() <= self.max);
    }

    pub fn len(&self) -> usize {
        self.by_hash.lock().expect("verified tokens lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: i64) -> Claims {
        Claims {
            iss: "moneta".into(),
            aud: "moneta-api".into(),
            sub: sub.into(),
            iat: exp - 900,
            nbf: exp - 900,
            exp,
            jti: format!("jti-{sub}"),
            roles: vec![],
            amr: vec!["pwd".into()],
            sid: Some(format!("ses-{sub}")),
        }
    }

    #[test]
    fn a_token_is_remembered_until_it_expires_and_only_that_exact_token() {
        let cache = VerifiedTokens::new(8, 5);
        cache.put("a.b.c", &claims("u1", 1_000), 100);
        assert_eq!(cache.get("a.b.c", 500).map(|c| c.sub), Some("u1".into()));
        // One character off (another signature): not the same token.
        assert!(cache.get("a.b.d", 500).is_none());
        // Within the leeway, then past it (and forgotten).
        assert!(cache.get("a.b.c", 1_004).is_some());
        assert!(cache.get("a.b.c", 1_005).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = VerifiedTokens::new(4, 0);
        // Expired entries make room first.
        cache.put("old", &claims("old", 10), 0);
        for i in 0..3 {
            cache.put(&format!("t{i}"), &claims(&format!("u{i}"), 1_000), 0);
        }
        cache.put("t3", &claims("u3", 1_000), 20);
        assert_eq!(cache.len(), 4);
        assert!(cache.get("t0", 20).is_some(), "live entries stay when expired ones make room");
        // Full of live tokens: everything goes, the newest stays.
        cache.put("t4", &claims("u4", 1_000), 20);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("t4", 20).is_some());
        for i in 5..100 {
            cache.put(&format!("t{i}"), &claims(&format!("u{i}"), 1_000), 20);
            assert!(cache.len() <= 4);
        }
    }
}
