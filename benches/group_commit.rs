//! Durable order commits per second through the actor layer (router → portfolio entity →
//! audit journal group commit → sled flush) with 1, 16 and 128 concurrent clients, against two
//! raw sled loops measured in the same run on records of the same size:
//! - `sled_flush_per_write`: one insert, one flush (the floor group commit must beat);
//! - `sled_flush_per_256`: 256 inserts, one flush (the ceiling).
//!
//! Every figure is records per second; an order counts every record it writes (its journal
//! entry and its audit record, plus snapshots when due). After criterion has measured, the
//! harness reads criterion's estimates and prints the ratios against the baselines.
//!
//! Run: `cargo bench --bench group_commit` (add `-- --quick` for a shorter run).

use criterion::{BenchmarkId, Criterion, Throughput};
use moneta::actors::RequestMeta;
use moneta::cluster::router::RouterSettings;
use moneta::cluster::Router;
use moneta::config::Config;
use moneta::domain::compliance::{InvestorStatus, ProductFacts};
use moneta::domain::instrument::{Instrument, InstrumentCommand, InstrumentKind, Listing};
use moneta::domain::portfolio::{IdemTag, OrderQuote, Portfolio, PortfolioCommand, Side};
use moneta::storage::Store;
use moneta::telemetry::Metrics;
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records an order writes: its journal entry and its audit record.
const RECORDS_PER_ORDER: u64 = 2;
/// Orders per measured iteration (split across the clients).
const ORDERS_PER_ITER: u64 = 2048;
const CLIENTS: [u64; 3] = [1, 16, 128];

/// The mean size of the two records an order writes (its journal entry and its audit record),
/// measured by deciding a real order the way the bench's clients place them, so the raw sled
/// loops write records of the same size.
fn sample_record_len() -> usize {
    use moneta::domain::audit::AuditRecord;
    use moneta::domain::ctx::{Ctx, Effect};
    use moneta::domain::entity::Entity;
    use moneta::domain::time::Timestamp;
    use moneta::storage::codec;
    use moneta::storage::store::JournalEntry;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut p = Portfolio::empty("usr_bench0");
    let now = Timestamp(1_800_000_000_000);
    let deposit = PortfolioCommand::Deposit {
        amount: Decimal::from(1_000_000_000),
        idem: IdemTag {
            key: "fund-0".into(),
            fingerprint: [0; 32],
        },
    };
    for e in p.decide(deposit, &mut Ctx::new(now, &mut rng)).unwrap().events {
        p.apply(&e);
    }
    let order = PortfolioCommand::PlaceOrder {
        investor: InvestorStatus::onboarded(7, true),
        symbol: "BENCH".into(),
        side: Side::Buy,
        quantity: Decimal::new(1, 2),
        quote: Some(OrderQuote {
            price: Decimal::from(100),
            product: PLAIN_PRODUCT,
        }),
        fees: moneta::domain::fees::FeeSchedule::default(),
        idem: IdemTag {
            key: "o-12345".into(),
            fingerprint: [1; 32],
        },
    };
    let mut ctx = Ctx::new(now, &mut rng);
    let decision = p.decide(order, &mut ctx).unwrap();
    let entry = JournalEntry {
        seq: 2,
        at: now,
        request_id: "bench".into(),
        event: decision.events[0].clone(),
    };
    let Effect::Audit(d) = ctx.take_effects().remove(0);
    let audit = AuditRecord {
        seq: 12345,
        group: 0,
        at: now,
        actor: "system".into(),
        action: d.action,
        entity: "portfolio/usr_bench0".into(),
        request_id: "bench".into(),
        outcome: d.outcome,
        details: d.details,
    };
    // The audit value also carries the 32-byte chain head.
    (codec::encode(&entry).len() + codec::encode(&audit).len() + 32) / 2
}

fn sled_loop(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let len = sample_record_len();
    println!("baseline record size: {len} bytes (mean of an order's journal entry and audit record)");
    let value = vec![0xabu8; len];
    for (name, batch) in [("sled_flush_per_write", 1u64), ("sled_flush_per_256", 256u64)] {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).mode(sled::Mode::HighThroughput).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let counter = AtomicU64::new(0);
        g.throughput(Throughput::Elements(batch * 8));
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..8 {
                    for _ in 0..batch {
                        let k = counter.fetch_add(1, Ordering::Relaxed);
                        tree.insert(k.to_be_bytes(), value.as_slice()).unwrap();
                    }
                    db.flush().unwrap();
                }
            })
        });
    }
    g.finish();
}

struct Setup {
    rt: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
    next_key: AtomicU64,
}

fn setup(clients: u64) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load_with_env(None, &[]).unwrap();
    let router = rt.block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let router = Router::start(store, Arc::new(Metrics::new()), RouterSettings::from_config(&config))
            .await
            .unwrap();
        let listing = Listing {
            symbol: "BENCH".into(),
            name: "Bench".into(),
            kind: InstrumentKind::Equity,
            complex: false,
            currency: "USD".into(),
            risk_class: 3,
        };
        router
            .execute::<Instrument>(
                "BENCH",
                InstrumentCommand::List {
                    listing,
                    price: Decimal::from(100),
                },
                RequestMeta::system("setup"),
            )
            .await
            .unwrap();
        for c in 0..clients {
            let cmd = PortfolioCommand::Deposit {
                amount: Decimal::from(1_000_000_000),
                idem: IdemTag {
                    key: format!("fund-{c}"),
                    fingerprint: [0; 32],
                },
            };
            router
                .execute::<Portfolio>(&format!("usr_bench{c}"), cmd, RequestMeta::system("setup"))
                .await
                .unwrap();
        }
        router
    });
    Setup {
        rt,
        router,
        _dir: dir,
        next_key: AtomicU64::new(0),
    }
}

async fn place_orders(s: &Setup, clients: u64, per_client: u64) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let router = s.router.clone();
        let base = s.next_key.fetch_add(per_client, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            let fees = moneta::domain::fees::FeeSchedule::default();
            for i in 0..per_client {
                let cmd = PortfolioCommand::PlaceOrder {
                    investor: InvestorStatus::onboarded(7, true),
                    symbol: "BENCH".into(),
                    side: Side::Buy,
                    quantity: Decimal::new(1, 2),
                    quote: Some(OrderQuote {
                        price: Decimal::from(100),
                        product: PLAIN_PRODUCT,
                    }),
                    fees: fees.clone(),
                    idem: IdemTag {
                        key: format!("o-{}", base + i),
                        fingerprint: [1; 32],
                    },
                };
                router
                    .execute::<Portfolio>(&format!("usr_bench{c}"), cmd, RequestMeta::system("bench"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn actor_orders(c: &mut Criterion) {
    let mut g = c.benchmark_group("actor_orders");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for clients in CLIENTS {
        let s = setup(clients);
        let per_client = (ORDERS_PER_ITER / clients).max(1);
        g.throughput(Throughput::Elements(per_client * clients * RECORDS_PER_ORDER));
        g.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, &clients| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    s.rt.block_on(place_orders(&s, clients, per_client));
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// Records per second from criterion's saved estimate (mean time per iteration).
fn rate(group: &str, id: &str, elements: f64) -> Option<f64> {
    let path = format!("target/criterion/{group}/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let ns = v["mean"]["point_estimate"].as_f64()?;
    Some(elements / (ns / 1e9))
}

fn summary() {
    let floor = rate("baseline", "sled_flush_per_write", 8.0);
    let ceiling = rate("baseline", "sled_flush_per_256", 8.0 * 256.0);
    println!("\n== group commit summary (records/s; ratios against baselines of this run) ==");
    println!("sled flush per write : {:>10.0}", floor.unwrap_or(f64::NAN));
    println!("sled flush per 256   : {:>10.0}", ceiling.unwrap_or(f64::NAN));
    for clients in CLIENTS {
        let per_client = (ORDERS_PER_ITER / clients).max(1);
        let r = rate("actor_orders", &clients.to_string(), (per_client * clients * RECORDS_PER_ORDER) as f64);
        if let (Some(r), Some(f), Some(c)) = (r, floor, ceiling) {
            println!(
                "actors, {clients:>3} clients  : {r:>10.0}  = {:.2}x flush-per-write, {:.0}% of batched",
                r / f,
                100.0 * r / c
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    sled_loop(&mut c);
    actor_orders(&mut c);
    c.final_summary();
    summary();
}

/// An ordinary product every onboarded investor of these tests may buy.
const PLAIN_PRODUCT: ProductFacts = ProductFacts { complex: false, risk_class: 1 };
