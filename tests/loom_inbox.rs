//! Model check of the coalescing inbox (src/actors/inbox.rs) with loom: every interleaving of two
//! producers and one consumer, with loom's Mutex and a permit-keeping notify standing in for
//! tokio's `Notify::notify_one`. Checked: no wake-up is lost (a lost one leaves the consumer
//! waiting forever, which loom reports as a deadlock), the consumer ends with the latest value of
//! every key, values of one key arrive in order, and the inbox never holds more than one value
//! per key.

mod sync {
    pub use loom::sync::Mutex;
}

#[path = "../src/actors/inbox.rs"]
#[allow(dead_code)]
mod inbox;

use inbox::Inbox;
use loom::sync::{Arc, Notify};
use loom::thread;
use std::collections::BTreeMap;

fn producer(inbox: Arc<Inbox<&'static str, u32>>, wake: Arc<Notify>, key: &'static str, values: &'static [u32]) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for &v in values {
            if inbox.put(key, v) {
                wake.notify();
            }
        }
    })
}

/// Every interleaving up to three preemptions (loom's recommended bound; unbounded search of
/// this model takes hours, and the bugs this protocol can have need at most two).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn coalescing_inbox_loses_no_update_and_no_wakeup() {
    model(|| {
        let inbox = Arc::new(Inbox::new());
        let wake = Arc::new(Notify::new());
        let a = producer(inbox.clone(), wake.clone(), "AAA", &[1, 2]);
        let b = producer(inbox.clone(), wake.clone(), "BBB", &[7]);
        let want: BTreeMap<&str, u32> = [("AAA", 2), ("BBB", 7)].into();
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        while seen != want {
            wake.wait();
            let batch = inbox.take();
            assert!(batch.len() <= 2, "more than one value per key");
            for (k, v) in batch {
                if let Some(old) = seen.insert(k, v) {
                    assert!(v > old, "{k}: {v} arrived after {old}");
                }
            }
        }
        a.join().unwrap();
        b.join().unwrap();
    });
}

#[test]
fn a_slow_consumer_sees_only_the_latest_value() {
    model(|| {
        let inbox = Arc::new(Inbox::new());
        let wake = Arc::new(Notify::new());
        let a = producer(inbox.clone(), wake.clone(), "AAA", &[1, 2, 3]);
        a.join().unwrap();
        // The consumer only gets to run after all three puts: one value, the last.
        wake.wait();
        let got = inbox.take();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![("AAA", 3)]);
        assert!(inbox.is_empty());
    });
}
