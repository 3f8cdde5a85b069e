//! The price fan-out, against baselines measured in the same run.
//!
//! 1. Ticks per second fanned out to `PORTFOLIOS` portfolios holding the instrument, lockstep:
//!    publish a price, wait until every consumer has applied it, repeat.
//!    - baseline: a raw tokio fan-out — one bounded `mpsc` channel and task per consumer, the
//!      producer sends the tick into every channel; the consumer multiplies quantity × price;
//!    - moneta: `PriceBus::publish` → per-symbol fan-out task → coalescing inboxes → one valuer
//!      task per portfolio revaluing its `LiveValuation` (prices, value, intraday point,
//!      sharp-move check).
//!
//!    Then free-running for a few seconds: the feed publishes as fast as it can; reported are the
//!    prices published per second and the revaluations per second (coalescing means a portfolio
//!    applies the latest price, not every one).
//! 2. Gateway latency (p50/p99) of `GET /v1/portfolio` on a node whose feed is off, and on a node
//!    whose feed ticks every 20 ms while `PORTFOLIOS` synthetic portfolios holding WRLD are valued
//!    from it.
//!
//! Run: `cargo bench --bench fanout` (`FANOUT_PORTFOLIOS=10000` for a quicker run).

mod common;

use common::{client, load, CLIENTS, RUN};
use moneta::actors::fanout::{PriceBus, PriceUpdate, Valuations};
use moneta::config::Config;
use moneta::domain::portfolio::Holding;
use moneta::domain::time::Timestamp;
use moneta::domain::valuation::Positions;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOCKSTEP_TICKS: u64 = 50;
const FREE_RUN: Duration = Duration::from_secs(3);

fn portfolios() -> usize {
    std::env::var("FANOUT_PORTFOLIOS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn price(t: u64) -> Decimal {
    Decimal::new(10_000 + (t % 500) as i64, 2)
}

async fn wait_until(counter: impl Fn() -> u64, target: u64) {
    while counter() < target {
        tokio::task::yield_now().await;
    }
}

/// Raw tokio channels: ticks/s in lockstep.
async fn raw_channels(n: usize) -> f64 {
    let applied = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Decimal>(16);
        let applied = applied.clone();
        tokio::spawn(async move {
            let quantity = Decimal::from(10);
            let mut value = Decimal::ZERO;
            while let Some(p) = rx.recv().await {
                value = quantity * p;
                applied.fetch_add(1, Ordering::Relaxed);
            }
            std::hint::black_box(value);
        });
        senders.push(tx);
    }
    let start = Instant::now();
    for t in 1..=LOCKSTEP_TICKS {
        for tx in &senders {
            tx.send(price(t)).await.unwrap();
        }
        wait_until(|| applied.load(Ordering::Relaxed), t * n as u64).await;
    }
    LOCKSTEP_TICKS as f64 / start.elapsed().as_secs_f64()
}

fn holding(n: usize) -> Positions {
    let mut holdings = BTreeMap::new();
    holdings.insert(
        "WRLD".to_string(),
        Holding {
            quantity: Decimal::from(10 + (n % 7) as i64),
            cost_basis: Decimal::from(1000),
        },
    );
    Positions {
        cash: Decimal::from(500),
        holdings,
        contributions: Decimal::from(1500),
    }
}

/// Moneta's fan-out: (lockstep ticks/s, free-running prices published/s, revaluations/s).
async fn moneta_fanout(n: usize) -> (f64, f64, f64) {
    let bus = PriceBus::new();
    let (valuations, _sharp) = Valuations::new(bus.clone(), Decimal::ZERO);
    bus.publish(
        "WRLD",
        PriceUpdate {
            price: price(0),
            at: Timestamp(0),
        },
    );
    for u in 0..n {
        valuations.update(&format!("usr_{u}"), holding(u), Timestamp(0));
    }
    let stats = bus.stats.clone();
    let start = Instant::now();
    let base = stats.revaluations.get();
    for t in 1..=LOCKSTEP_TICKS {
        bus.publish(
            "WRLD",
            PriceUpdate {
                price: price(t),
                at: Timestamp(t as i64),
            },
        );
        wait_until(|| stats.revaluations.get() - base, t * n as u64).await;
    }
    let lockstep = LOCKSTEP_TICKS as f64 / start.elapsed().as_secs_f64();

    let (published0, revalued0) = (stats.published.get(), stats.revaluations.get());
    let start = Instant::now();
    let mut t = LOCKSTEP_TICKS;
    while start.elapsed() < FREE_RUN {
        t += 1;
        bus.publish(
            "WRLD",
            PriceUpdate {
                price: price(t),
                at: Timestamp(t as i64),
            },
        );
        if t.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let published = (stats.published.get() - published0) as f64 / elapsed;
    let revalued = (stats.revaluations.get() - revalued0) as f64 / elapsed;
    // Every valuation ends at the last price.
    let last = price(t) * Decimal::from(10) + Decimal::from(500);
    let deadline = Instant::now() + Duration::from_secs(60);
    while valuations.get("usr_0").map(|v| v.value) != Some(last) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        valuations.get("usr_0").map(|v| v.value),
        Some(last),
        "the slowest valuation converges on the last price"
    );
    (lockstep, published, revalued)
}

async fn gateway(feed: bool, n: usize) -> common::Figures {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load_with_env(None, &[]).unwrap();
    config.node.data_dir = dir.path().to_path_buf();
    config.gateway.listen = "127.0.0.1:0".parse().unwrap();
    config.log.level = "warn".into();
    config.market.tick_interval = if feed { Duration::from_millis(20) } else { Duration::from_secs(3600) };
    let node = moneta::node::start(config).await.unwrap();
    let base = format!("http://{}", node.addr);
    let tokens = Arc::new(common::investors(&base, CLIENTS).await);
    if feed {
        for u in 0..n {
            node.state.valuations.update(&format!("usr_synthetic_{u}"), holding(u), Timestamp(0));
        }
    }
    let c = client();
    let figures = load(move |u, _| {
        let (c, t, b) = (c.clone(), tokens[u].clone(), base.clone());
        async move {
            c.get(format!("{b}/v1/portfolio"))
                .bearer_auth(t)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    if feed {
        let s = &node.state.metrics.fanout;
        println!(
            "  (during the run: {} prices published, {} revaluations)",
            s.published.get(),
            s.revaluations.get()
        );
    }
    node.shutdown().await.unwrap();
    figures
}

#[tokio::main]
async fn main() {
    let n = portfolios();
    println!("\n== price fan-out to {n} portfolios holding the instrument ==");
    let raw = raw_channels(n).await;
    let (lockstep, published, revalued) = moneta_fanout(n).await;
    println!("{:<52} {:>12} {:>10}", "", "ticks/s", "vs raw");
    println!("{:<52} {:>12.1} {:>9.0}%", "raw tokio mpsc fan-out, lockstep (baseline)", raw, 100.0);
    println!(
        "{:<52} {:>12.1} {:>9.0}%",
        "moneta fan-out + valuations, lockstep",
        lockstep,
        100.0 * lockstep / raw
    );
    println!(
        "free-running feed: {published:.0} prices published/s ({:.0}× the raw lockstep tick rate), {revalued:.0} revaluations/s ({:.2} per portfolio per published price: coalesced)",
        published / raw,
        revalued / published / n as f64
    );

    let without = gateway(false, n).await;
    let with = gateway(true, n).await;
    println!(
        "\n== GET /v1/portfolio, {CLIENTS} clients, {}s each: feed off vs feed every 20 ms fanned out to {n} portfolios ==",
        RUN.as_secs()
    );
    println!("{:<28} {:>10} {:>9} {:>9}", "", "req/s", "p50 ms", "p99 ms");
    for (name, f) in [("feed off (baseline)", &without), ("feed + fan-out", &with)] {
        println!("{name:<28} {:>10.0} {:>9.2} {:>9.2}", f.rps, f.p50_ms, f.p99_ms);
    }
    println!(
        "ratios with/without: req/s {:.2}, p50 {:.2}, p99 {:.2}",
        with.rps / without.rps,
        with.p50_ms / without.p50_ms,
        with.p99_ms / without.p99_ms
    );
}
