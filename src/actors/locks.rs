//! Keyed async locks: one lock per key, made on demand and forgotten once nobody holds it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Forgotten locks are swept once this many keys are known (a limit on everything).
const PRUNE_AT: usize = 10_000;

/// One async lock per key (a user id), made on demand and forgotten once nobody holds it: for
/// requests of one user that must not interleave (accepting advice is several commands).
#[derive(Default)]
pub struct KeyedLocks(Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().expect("keyed locks");
            if map.len() >= PRUNE_AT {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(key).and_then(std::sync::Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), std::sync::Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}
