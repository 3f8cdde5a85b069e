//! One login attempt per account, and per client address, at a time on this node.
//!
//! The lockout is checked before a password is verified and a failure counted after it (an
//! Argon2id hash and a replicated write later). Attempts in parallel all passed the check
//! before any was counted: a burst of a thousand guesses was a thousand evaluated guesses, not
//! the allowance (found in review). Holding the account's and the address's lane from the check
//! to the count makes each attempt see every earlier one's failure; across the nodes of a
//! cluster at most one attempt per node runs past a count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// Accounts and addresses with an attempt running or waiting at once, beyond which an attempt
/// on a new one is refused (rate limited) rather than growing the table.
const LANES_MAX: usize = 10_000;

type Lane = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct AttemptLanes {
    lanes: Mutex<HashMap<String, Lane>>,
}

/// An attempt's hold on its lanes; released (and a lane nobody waits for forgotten) on drop.
pub struct Attempt<'a> {
    lanes: &'a AttemptLanes,
    held: Vec<(String, Lane, Option<OwnedMutexGuard<()>>)>,
}

impl AttemptLanes {
    /// Waits for the lanes of `keys`, in the order given (every caller gives the account's
    /// before the address's, so no two wait on each other). None when the table is full.
    pub async fn enter(&self, keys: &[String]) -> Option<Attempt<'_>> {
        let mut attempt = Attempt { lanes: self, held: Vec::new() };
        for key in keys {
            let lane = {
                let mut lanes = self.lanes.lock().expect("attempt lanes lock");
                if lanes.len() >= LANES_MAX && !lanes.contains_key(key) {
                    return None;
                }
                lanes.entry(key.clone()).or_default().clone()
            };
            let guard = lane.clone().lock_owned().await;
            attempt.held.push((key.clone(), lane, Some(guard)));
        }
        Some(attempt)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes.lock().expect("attempt lanes lock").len()
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut lanes = self.lanes.lanes.lock().expect("attempt lanes lock");
        for (key, lane, guard) in self.held.drain(..) {
            drop(guard);
            // The table's and this one: nobody else holds or waits for the lane.
            if Arc::strong_count(&lane) == 2 {
                lanes.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_on_one_account_run_one_at_a_time_and_leave_nothing_behind() {
        let lanes = Arc::new(AttemptLanes::default());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (lanes, running, most) = (lanes.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let keys = vec!["account:a".to_string(), format!("address:{}", i % 4)];
                    let _attempt = lanes.enter(&keys).await.expect("room");
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "two attempts on one account ran at once");
        assert_eq!(lanes.len(), 0, "lanes nobody waits for are forgotten");
        // Different accounts do not wait for each other.
        let a = lanes.enter(&["account:a".to_string()]).await.unwrap();
        let b = tokio::time::timeout(Duration::from_secs(1), lanes.enter(&["account:b".to_string()])).await;
        assert!(b.is_ok_and(|b| b.is_some()));
        drop(a);
    }
}
