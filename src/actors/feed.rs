//! Market feeds. The simulated one: every tick, each demo instrument moves one seeded GBM step
//! (`domain::market::gbm_step`) and the new price is sent to its instrument entity. The replay
//! one: a CSV of real prices (`timestamp,symbol,price`) is played back in timestamp order, one
//! timestamp per tick (the instruments stamp the prices with the time they arrive).

use crate::actors::fanout::{PriceBus, PriceUpdate};
use crate::actors::RequestMeta;
use crate::cluster::Router;
use crate::config::InstrumentConfig;
use crate::domain::instrument::{Instrument, InstrumentCommand};
use crate::domain::market::{gbm_step, GbmParams};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct FeedInstrument {
    pub symbol: String,
    pub price: Decimal,
    pub params: GbmParams,
}

pub fn instruments_from_config(list: &[InstrumentConfig]) -> Vec<FeedInstrument> {
    list.iter()
        .map(|i| FeedInstrument {
            symbol: i.symbol.clone(),
            price: i.price,
            params: GbmParams {
                drift: i.drift,
                volatility: i.volatility,
            },
        })
        .collect()
}

/// Runs until `stop` turns true. Starting prices are the instruments' persisted prices;
/// instruments listed while it runs arrive on `additions` and join at the next tick.
pub async fn run_feed(
    router: Router,
    bus: Arc<PriceBus>,
    mut instruments: Vec<FeedInstrument>,
    seed: u64,
    tick: Duration,
    mut additions: tokio::sync::mpsc::UnboundedReceiver<FeedInstrument>,
    mut stop: watch::Receiver<bool>,
) {
    for inst in instruments.iter_mut() {
        if let Ok(Some(q)) = router.read::<Instrument, _>(&inst.symbol, |i| i.quote()).await {
            inst.price = q.price;
        }
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        n += 1;
        while let Ok(added) = additions.try_recv() {
            if !instruments.iter().any(|i| i.symbol == added.symbol) {
                instruments.push(added);
            }
        }
        let sends = instruments.iter_mut().map(|inst| {
            inst.price = gbm_step(inst.price, &inst.params, tick.as_secs_f64(), &mut rng);
            let (router, bus) = (router.clone(), bus.clone());
            let (symbol, price) = (inst.symbol.clone(), inst.price);
            async move { apply_price(&router, &bus, symbol, price, format!("feed-{n}")).await }
        });
        let sends: Vec<_> = sends.collect();
        futures_util::future::join_all(sends).await;
    }
}

/// Applies one price to its instrument and, once it is journaled, publishes it to the fan-out.
async fn apply_price(router: &Router, bus: &PriceBus, symbol: String, price: Decimal, request_id: String) {
    let meta = RequestMeta::system(request_id);
    match router.execute::<Instrument>(&symbol, InstrumentCommand::Tick { price }, meta).await {
        Ok(()) => bus.publish(
            &symbol,
            PriceUpdate {
                price,
                at: super::wall_clock_now(),
            },
        ),
        Err(e) => tracing::warn!(symbol = %symbol, error = ?e, "price tick not applied"),
    }
}

/// Reads a price file: `timestamp,symbol,price` per line (an optional header line; timestamps
/// RFC 3339). Every line is checked — an unknown symbol, a bad time or price is an error naming
/// the line. Returns the prices grouped by timestamp, in time order.
pub fn load_replay(path: &std::path::Path, symbols: &[String]) -> Result<Vec<Vec<(String, Decimal)>>, String> {
    use crate::domain::time::Timestamp;
    let text = std::fs::read_to_string(path).map_err(|e| format!("price file {} (key `market.csv_file`): {e}", path.display()))?;
    let mut rows: Vec<(Timestamp, usize, String, Decimal)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.to_ascii_lowercase().starts_with("timestamp")) {
            continue;
        }
        let bad = |why: &str| format!("price file {} line {}: {why}", path.display(), i + 1);
        let parts: Vec<&str> = line.split(',').map(str::trim).collect();
        let [at, symbol, price] = parts.as_slice() else {
            return Err(bad("expected timestamp,symbol,price"));
        };
        let at = Timestamp::parse_rfc3339(at).ok_or_else(|| bad("timestamp is not RFC 3339"))?;
        if !symbols.iter().any(|s| s == symbol) {
            return Err(bad(&format!("{symbol} is not a listed instrument")));
        }
        let price: Decimal = price.parse().map_err(|_| bad("price is not a decimal"))?;
        if !crate::domain::money::is_valid_price(price) {
            return Err(bad("price must be positive with at most 4 decimals"));
        }
        rows.push((at, i, symbol.to_string(), price));
    }
    if rows.is_empty() {
        return Err(format!("price file {} has no prices", path.display()));
    }
    rows.sort_by_key(|(at, i, _, _)| (*at, *i));
    let mut groups: Vec<(Timestamp, Vec<(String, Decimal)>)> = Vec::new();
    for (at, _, symbol, price) in rows {
        match groups.last_mut() {
            Some((t, g)) if *t == at => g.push((symbol, price)),
            _ => groups.push((at, vec![(symbol, price)])),
        }
    }
    Ok(groups.into_iter().map(|(_, g)| g).collect())
}

/// Plays the groups back, one per tick, then stops (prices stay where the file left them).
pub async fn run_replay(router: Router, bus: Arc<PriceBus>, groups: Vec<Vec<(String, Decimal)>>, tick: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (n, group) in groups.into_iter().enumerate() {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let sends = group.into_iter().map(|(symbol, price)| {
            let (router, bus) = (router.clone(), bus.clone());
            async move { apply_price(&router, &bus, symbol, price, format!("replay-{n}")).await }
        });
        futures_util::future::join_all(sends.collect::<Vec<_>>()).await;
    }
    tracing::info!("price replay finished");
}
