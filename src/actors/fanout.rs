//! Price fan-out with back-pressure by coalescing, and the live valuations it drives.
//!
//! - The feed publishes each applied price to the [`PriceBus`]: one `watch` send per symbol, O(1),
//!   never waiting for anyone.
//! - One fan-out task per symbol takes the latest price (skipping any it had no time for, and at
//!   most once per `[market] revalue_interval`) and puts it into the [`Inbox`] of every
//!   subscriber holding the symbol, waking the subscriber only when its inbox was empty.
//! - One valuer task per portfolio takes its whole inbox when woken — the latest price of each
//!   held symbol — and revalues (`domain::valuation::LiveValuation`). A slow valuer therefore
//!   costs the fan-out one overwrite per tick, holds at most one price per symbol, and slows
//!   neither the feed nor any other portfolio.
//!
//! A price move at or beyond `[advice] sharp_move_threshold` of a held instrument is reported on
//! a bounded channel of advice triggers (the advice worker recomputes that user's advice; the
//! gateway reports portfolio and profile changes on it too); if the worker is behind, a report
//! is dropped and counted — the next trigger, or the user's next request, catches up.

use super::inbox::Inbox;
use crate::domain::advice::AdviceTrigger;
use crate::domain::time::Timestamp;
use crate::domain::valuation::{LiveValuation, Positions};
use rust_decimal::Decimal;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, watch, Notify};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriceUpdate {
    pub price: Decimal,
    pub at: Timestamp,
}

/// One consumer of prices: its coalescing inbox and the wake-up of its task.
pub struct Subscriber {
    pub id: Arc<str>,
    pub inbox: Inbox<Arc<str>, PriceUpdate>,
    pub wake: Notify,
}

impl Subscriber {
    pub fn new(id: &str) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            id: Arc::from(id),
            inbox: Inbox::new(),
            wake: Notify::new(),
        })
    }

    /// Waits for prices and moves the latest of each symbol into `batch`.
    pub async fn next(&self, batch: &mut Vec<(Arc<str>, PriceUpdate)>) {
        loop {
            self.inbox.take_into(batch);
            if !batch.is_empty() {
                return;
            }
            self.wake.notified().await;
        }
    }
}

type SubscriberMap = HashMap<Arc<str>, HashMap<Arc<str>, Arc<Subscriber>>>;

pub use crate::telemetry::FanoutStats;

pub struct PriceBus {
    latest: RwLock<HashMap<Arc<str>, watch::Sender<Option<PriceUpdate>>>>,
    subscribers: Arc<RwLock<SubscriberMap>>,
    /// The shortest time between two fan-outs of one symbol (prices published meanwhile
    /// coalesce: the next fan-out carries the latest).
    every: std::time::Duration,
    pub stats: Arc<FanoutStats>,
}

impl PriceBus {
    /// A bus that fans every price out as soon as it can.
    pub fn new() -> Arc<PriceBus> {
        PriceBus::with(FanoutStats::default(), std::time::Duration::ZERO)
    }

    /// `every`: the shortest time between two fan-outs of a symbol (`[market] revalue_interval`).
    pub fn with(stats: FanoutStats, every: std::time::Duration) -> Arc<PriceBus> {
        Arc::new(PriceBus {
            latest: RwLock::new(HashMap::new()),
            subscribers: Arc::new(RwLock::new(HashMap::new())),
            every,
            stats: Arc::new(stats),
        })
    }

    /// Publishes a symbol's new price. Never waits: the fan-out task picks it up. Needs a tokio
    /// runtime the first time a symbol is published (its fan-out task is spawned then).
    pub fn publish(&self, symbol: &str, update: PriceUpdate) {
        self.stats.published.inc();
        if let Some(tx) = self.latest.read().unwrap_or_else(|p| p.into_inner()).get(symbol) {
            tx.send_replace(Some(update));
            return;
        }
        let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
        let symbol: Arc<str> = Arc::from(symbol);
        let tx = latest.entry(symbol.clone()).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(fan_out(symbol, rx, self.subscribers.clone(), self.stats.clone(), self.every));
            tx
        });
        tx.send_replace(Some(update));
    }

    pub fn latest(&self, symbol: &str) -> Option<PriceUpdate> {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).get(symbol).and_then(|tx| *tx.borrow())
    }

    pub fn subscribe(&self, symbol: &str, subscriber: &Arc<Subscriber>) {
        let mut subs = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        subs.entry(Arc::from(symbol)).or_default().insert(subscriber.id.clone(), subscriber.clone());
    }

    pub fn unsubscribe(&self, symbol: &str, subscriber: &Subscriber) {
        let mut subs = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = subs.get_mut(symbol) {
            map.remove(&subscriber.id);
        }
    }

    pub fn subscriber_count(&self, symbol: &str) -> usize {
        self.subscribers.read().unwrap_or_else(|p| p.into_inner()).get(symbol).map_or(0, |m| m.len())
    }
}

/// The fan-out of one symbol: the latest price into every subscriber's inbox.
async fn fan_out(
    symbol: Arc<str>,
    mut rx: watch::Receiver<Option<PriceUpdate>>,
    subscribers: Arc<RwLock<SubscriberMap>>,
    stats: Arc<FanoutStats>,
    every: std::time::Duration,
) {
    while rx.changed().await.is_ok() {
        let Some(update) = *rx.borrow_and_update() else { continue };
        let (mut delivered, mut coalesced) = (0u64, 0u64);
        {
            let subs = subscribers.read().unwrap_or_else(|p| p.into_inner());
            if let Some(map) = subs.get(&symbol) {
                for s in map.values() {
                    delivered += 1;
                    if s.inbox.put(symbol.clone(), update) {
                        s.wake.notify_one();
                    } else {
                        coalesced += 1;
                    }
                }
            }
        }
        stats.delivered.inc_by(delivered);
        stats.coalesced.inc_by(coalesced);
        if every.is_zero() {
            // Let the woken valuers run before the next round on a busy runtime.
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(every).await;
        }
    }
}

struct Cell {
    subscriber: Arc<Subscriber>,
    live: Mutex<LiveValuation>,
}

/// The live valuations of the portfolios this node hosts.
pub struct Valuations {
    bus: Arc<PriceBus>,
    cells: RwLock<HashMap<String, Arc<Cell>>>,
    threshold: Decimal,
    triggers: mpsc::Sender<(String, AdviceTrigger)>,
    /// Advice triggers dropped because the advice worker was behind.
    pub triggers_dropped: AtomicU64,
    /// Users whose positions moved since their valuation was last refreshed (a write through
    /// this node's gateway), refreshed together off the request path
    /// (`workflows::end_of_day::refresh_stale`); at most `STALE_LIMIT` wait.
    stale: Mutex<HashSet<String>>,
    stale_wake: Notify,
}

/// How many users may wait for a valuation refresh at once.
pub const STALE_LIMIT: usize = 65_536;

impl Valuations {
    /// `threshold`: the relative move of a held instrument that is reported as sharp (0 = never).
    pub fn new(bus: Arc<PriceBus>, threshold: Decimal) -> (Arc<Valuations>, mpsc::Receiver<(String, AdviceTrigger)>) {
        let (tx, rx) = mpsc::channel(1024);
        let v = Arc::new(Valuations {
            bus,
            cells: RwLock::new(HashMap::new()),
            threshold,
            triggers: tx,
            triggers_dropped: AtomicU64::new(0),
            stale: Mutex::new(HashSet::new()),
            stale_wake: Notify::new(),
        });
        (v, rx)
    }

    pub fn bus(&self) -> &Arc<PriceBus> {
        &self.bus
    }

    /// The portfolio's positions changed (or are first known): revalue and follow the symbols it
    /// now holds. Starts its valuer the first time.
    pub fn update(self: &Arc<Self>, user: &str, positions: Positions, now: Timestamp) {
        let cell = self.cell(user);
        let mut live = cell.live.lock().unwrap_or_else(|p| p.into_inner());
        let before: BTreeSet<String> = live.positions.holdings.keys().cloned().collect();
        let after: BTreeSet<String> = positions.holdings.keys().cloned().collect();
        for symbol in after.difference(&before) {
            self.bus.subscribe(symbol, &cell.subscriber);
            if let Some(u) = self.bus.latest(symbol) {
                live.seed_price(symbol, u.price);
            }
        }
        for symbol in before.difference(&after) {
            self.bus.unsubscribe(symbol, &cell.subscriber);
        }
        live.set_positions(positions, now);
    }

    fn cell(self: &Arc<Self>, user: &str) -> Arc<Cell> {
        if let Some(c) = self.cells.read().unwrap_or_else(|p| p.into_inner()).get(user) {
            return c.clone();
        }
        let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
        cells
            .entry(user.to_string())
            .or_insert_with(|| {
                let cell = Arc::new(Cell {
                    subscriber: Subscriber::new(user),
                    live: Mutex::new(LiveValuation::default()),
                });
                tokio::spawn(valuer(
                    user.to_string(),
                    cell.clone(),
                    self.threshold,
                    Arc::downgrade(self),
                    self.bus.stats.clone(),
                ));
                cell
            })
            .clone()
    }

    /// The live valuation of a portfolio, if it is tracked.
    pub fn get(&self, user: &str) -> Option<LiveValuation> {
        let cell = self.cells.read().unwrap_or_else(|p| p.into_inner()).get(user).cloned()?;
        let live = cell.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(live)
    }

    /// The user's positions moved: their valuation is refreshed soon, once for however many
    /// writes marked it meanwhile, and not on the request path.
    pub fn mark_stale(&self, user: &str) {
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        if stale.contains(user) {
            return;
        }
        if stale.len() >= STALE_LIMIT {
            // Counted; the user's next write, or a read of their performance, refreshes them.
            self.bus.stats.refreshes_dropped.inc();
            return;
        }
        stale.insert(user.to_string());
        drop(stale);
        self.stale_wake.notify_one();
    }

    /// Every user marked since the last call (their marks cleared).
    pub fn take_stale(&self) -> Vec<String> {
        std::mem::take(&mut *self.stale.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
    }

    /// Resolves once a user is marked (at once if one was marked since the last wait).
    pub async fn stale_marked(&self) {
        self.stale_wake.notified().await
    }

    /// Asks the advice worker to recompute the user's advice (never waits; dropped and counted
    /// when the worker is behind).
    pub fn trigger(&self, user: &str, why: AdviceTrigger) {
        if self.triggers.try_send((user.to_string(), why)).is_err() {
            self.triggers_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The user's advice was just recomputed: moves are measured from the current prices.
    pub fn rebase(&self, user: &str) {
        if let Some(cell) = self.cells.read().unwrap_or_else(|p| p.into_inner()).get(user) {
            cell.live.lock().unwrap_or_else(|p| p.into_inner()).rebase();
        }
    }

    pub fn tracked(&self) -> usize {
        self.cells.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One portfolio's valuer: wakes on prices, revalues with the latest of each.
async fn valuer(user: String, cell: Arc<Cell>, threshold: Decimal, owner: std::sync::Weak<Valuations>, stats: Arc<FanoutStats>) {
    let mut batch = Vec::new();
    loop {
        cell.subscriber.next(&mut batch).await;
        let at = batch.iter().map(|(_, u)| u.at).max().unwrap_or_default();
        let moved = {
            let mut live = cell.live.lock().unwrap_or_else(|p| p.into_inner());
            live.on_prices(batch.iter().map(|(s, u)| (&**s, u.price)), at, threshold)
        };
        stats.revaluations.inc();
        if let Some(m) = moved {
            match owner.upgrade() {
                Some(v) => v.trigger(&user, AdviceTrigger::SharpMove(m)),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::portfolio::Holding;
    use std::collections::BTreeMap;

    fn update(i: i64) -> PriceUpdate {
        PriceUpdate {
            price: Decimal::from(i),
            at: Timestamp(i),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_subscriber_gets_the_latest_price_and_holds_back_no_one() {
        const LAST: i64 = 20_000;
        let bus = PriceBus::new();
        let slow = Subscriber::new("slow");
        let fast = Subscriber::new("fast");
        bus.subscribe("AAA", &slow);
        bus.subscribe("AAA", &fast);
        // The slow consumer cannot take anything until the feed has published every price: if
        // publishing waited for consumers, this test would hang.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow_task = tokio::spawn({
            let slow = slow.clone();
            async move {
                let _ = released.await;
                let (mut seen, mut batch) = (Vec::new(), Vec::new());
                while seen.last() != Some(&Decimal::from(LAST)) {
                    slow.next(&mut batch).await;
                    assert_eq!(batch.len(), 1, "one symbol, one pending price");
                    seen.push(batch[0].1.price);
                }
                seen
            }
        });
        let fast_task = tokio::spawn({
            let fast = fast.clone();
            async move {
                let (mut batches, mut batch) = (0u64, Vec::new());
                loop {
                    fast.next(&mut batch).await;
                    batches += 1;
                    if batch.iter().any(|(_, u)| u.price == Decimal::from(LAST)) {
                        return batches;
                    }
                }
            }
        });
        for i in 1..=LAST {
            bus.publish("AAA", update(i));
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
            assert!(slow.inbox.len() <= 1, "the slow inbox grew");
        }
        assert_eq!(bus.latest("AAA"), Some(update(LAST)));
        release.send(()).unwrap();
        let seen = slow_task.await.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "prices arrive in order: {seen:?}");
        assert!(seen.len() < 100, "the slow consumer saw {} prices of {LAST}: not coalesced", seen.len());
        let fast_batches = fast_task.await.unwrap();
        assert!(fast_batches >= 1);
        let s = &bus.stats;
        assert_eq!(s.published.get(), LAST as u64);
        assert!(s.delivered.get() <= 2 * LAST as u64);
        assert!(s.coalesced.get() > 0, "the slow inbox overwrote unseen prices");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valuations_follow_prices_and_report_sharp_moves() {
        let bus = PriceBus::new();
        let (valuations, mut sharp) = Valuations::new(bus.clone(), "0.1".parse().unwrap());
        bus.publish("AAA", update(100));
        bus.publish("BBB", update(7));
        let mut holdings = BTreeMap::new();
        holdings.insert(
            "AAA".to_string(),
            Holding {
                quantity: Decimal::from(3),
                cost_basis: Decimal::from(300),
            },
        );
        let positions = Positions {
            cash: Decimal::from(50),
            holdings,
            contributions: Decimal::from(350),
        };
        valuations.update("usr_a", positions, Timestamp(1));
        assert_eq!(valuations.get("usr_a").unwrap().value, Decimal::from(350));
        assert_eq!(bus.subscriber_count("AAA"), 1);
        assert_eq!(bus.subscriber_count("BBB"), 0, "only held instruments are followed");
        bus.publish("AAA", update(80));
        let (user, why) = tokio::time::timeout(std::time::Duration::from_secs(10), sharp.recv()).await.unwrap().unwrap();
        let AdviceTrigger::SharpMove(m) = why else { panic!("{why:?}") };
        assert_eq!((user.as_str(), m.symbol.as_str(), m.change), ("usr_a", "AAA", "-0.2".parse().unwrap()));
        for _ in 0..1000 {
            if valuations.get("usr_a").unwrap().value == Decimal::from(290) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(valuations.get("usr_a").unwrap().value, Decimal::from(290));
        // Selling everything stops following the instrument.
        valuations.update(
            "usr_a",
            Positions {
                cash: Decimal::from(290),
                holdings: BTreeMap::new(),
                contributions: Decimal::from(350),
            },
            Timestamp(2),
        );
        assert_eq!(bus.subscriber_count("AAA"), 0);
        assert_eq!(valuations.tracked(), 1);
    }

    #[tokio::test]
    async fn writes_mark_a_valuation_stale_once_until_it_is_refreshed() {
        let (v, _triggers) = Valuations::new(PriceBus::new(), Decimal::ZERO);
        v.mark_stale("usr_a");
        v.mark_stale("usr_a");
        v.mark_stale("usr_b");
        // A mark made before anyone waits is not lost.
        tokio::time::timeout(std::time::Duration::from_secs(5), v.stale_marked())
            .await
            .expect("a mark wakes the refresher");
        let mut marked = v.take_stale();
        marked.sort();
        assert_eq!(marked, ["usr_a", "usr_b"], "one refresh per user however many writes marked it");
        assert!(v.take_stale().is_empty(), "taken marks are cleared");
        for i in 0..STALE_LIMIT + 3 {
            v.mark_stale(&format!("usr_{i}"));
        }
        assert_eq!(v.take_stale().len(), STALE_LIMIT, "at most STALE_LIMIT users wait");
        assert_eq!(v.bus.stats.refreshes_dropped.get(), 3, "the marks beyond it are counted");
    }
}
