//! Market feeds. The simulated one: every tick, each demo instrument moves one seeded GBM step
//! (`domain::market::gbm_step`) and the new price is sent to its instrument entity. The file
//! ones read a CSV of real prices (`timestamp,symbol,price`): [`run_recorded`] keeps the file's
//! times (its past is the instruments' history, its future arrives on time); [`run_replay`]
//! plays it back from now, one timestamp per tick (the instruments stamp the prices with the
//! time they arrive).

use super::services::Services;
use crate::actors::RequestMeta;
use crate::cluster::Router;
use crate::config::InstrumentConfig;
use crate::domain::instrument::{Instrument, InstrumentCommand, Listing, Quote};
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

/// Runs until `stop` turns true. Prices go on from the instruments' committed prices;
/// instruments listed while it runs arrive on `additions` and join at the next tick.
pub async fn run_feed(
    services: Arc<Services>,
    mut instruments: Vec<FeedInstrument>,
    seed: u64,
    tick: Duration,
    mut additions: tokio::sync::mpsc::UnboundedReceiver<FeedInstrument>,
    mut stop: watch::Receiver<bool>,
) {
    let router = services.router.clone();
    let mut listings = Listings::default();
    let mut leading = false;
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
        if !router.leads_jobs() {
            // One price feed per cluster: the node that leads the jobs shard's group drives it.
            leading = false;
            continue;
        }
        // Instruments listed meanwhile join first: one queued while another node drove the
        // feed carries the price it had when it was followed, and must be refreshed below too.
        while let Ok(added) = additions.try_recv() {
            if !instruments.iter().any(|i| i.symbol == added.symbol) {
                instruments.push(added);
            }
        }
        if !leading {
            // Taking the feed over (at start, or from another node): it goes on from the
            // instruments' committed prices.
            for inst in instruments.iter_mut() {
                if let Ok(Some(q)) = router.query::<Instrument, _>(&inst.symbol, crate::domain::queries::CurrentQuote).await {
                    inst.price = q.price;
                    listings.0.insert(inst.symbol.clone(), q.listing);
                }
            }
            leading = true;
        }
        n += 1;
        let round: Vec<(String, Decimal)> = instruments
            .iter_mut()
            .map(|inst| {
                inst.price = gbm_step(inst.price, &inst.params, tick.as_secs_f64(), &mut rng);
                (inst.symbol.clone(), inst.price)
            })
            .collect();
        apply_group(&services, &mut listings, round, &format!("feed-{n}")).await;
    }
}

/// How often a node looks for instruments listed at another node.
const CATALOG_FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Instruments listed at run time at any node are catalog records, replicated with the jobs
/// shard's group (`records::catalog_shard`), whose leader drives the feed: every node holding
/// that group picks up the records its feed was not given yet (`fed`: what the feed was given
/// at start) and hands them to its feed, which ticks them when this node drives the feed. A
/// node without that group learns the symbols from the prices the feed's node shares
/// (`Services::publish_quotes`). Runs until `stop`.
pub async fn follow_catalog(services: Arc<Services>, mut fed: std::collections::BTreeSet<String>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CATALOG_FOLLOW_EVERY) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let store = services.router.store().clone();
        let records = match tokio::task::spawn_blocking(move || store.catalog()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the instrument catalog cannot be read");
                continue;
            }
            Err(_) => continue,
        };
        for (symbol, entry) in records {
            if fed.contains(&symbol) {
                continue;
            }
            let Ok(Some(q)) = services.router.query::<Instrument, _>(&symbol, crate::domain::queries::CurrentQuote).await else {
                continue;
            };
            services.join_catalog(&symbol, q.price, &entry);
            fed.insert(symbol.clone());
            tracing::info!(symbol = %symbol, "an instrument listed at another node joined this node's catalog and feed");
        }
    }
}

/// The instruments' listings, learnt once from the instruments (a quote carries them).
#[derive(Default)]
struct Listings(std::collections::HashMap<String, Listing>);

impl Listings {
    async fn get(&mut self, router: &Router, symbol: &str) -> Option<Listing> {
        if let Some(l) = self.0.get(symbol) {
            return Some(l.clone());
        }
        let q = router.query::<Instrument, _>(symbol, crate::domain::queries::CurrentQuote).await.ok()??;
        self.0.insert(symbol.to_string(), q.listing.clone());
        Some(q.listing)
    }
}

/// Applies one price to its instrument; its quote once it is committed.
async fn apply_price(router: &Router, symbol: String, price: Decimal, request_id: String) -> Option<(String, Decimal)> {
    let meta = RequestMeta::system(request_id);
    match router.execute::<Instrument>(&symbol, InstrumentCommand::Tick { price }, meta).await {
        Ok(()) => Some((symbol, price)),
        Err(e) => {
            tracing::warn!(symbol = %symbol, error = ?e, "price tick not applied");
            None
        }
    }
}

/// Applies one round of prices, every instrument at once; then the committed ones go to every
/// node's price book and fan-out.
async fn apply_group(services: &Services, listings: &mut Listings, group: Vec<(String, Decimal)>, request_id: &str) {
    let router = &services.router;
    let sends = group
        .into_iter()
        .map(|(symbol, price)| apply_price(router, symbol, price, request_id.to_string()));
    let applied = futures_util::future::join_all(sends.collect::<Vec<_>>()).await;
    let at = crate::actors::wall_clock_now();
    let mut quotes = Vec::new();
    for (symbol, price) in applied.into_iter().flatten() {
        if let Some(listing) = listings.get(router, &symbol).await {
            quotes.push(Quote { listing, price, as_of: at });
        }
    }
    services.publish_quotes(quotes, true);
}

/// Reads a price file: `timestamp,symbol,price` per line (an optional header line; timestamps
/// RFC 3339). Every line is checked — an unknown symbol, a bad time or price is an error naming
/// the line. Returns the prices grouped by timestamp, in time order.
pub fn load_replay(path: &std::path::Path, symbols: &[String]) -> Result<Vec<PriceGroup>, String> {
    use crate::domain::time::Timestamp;
    let text = std::fs::read_to_string(path).map_err(|e| format!("price file {} (key `market.csv_file`): {e}", path.display()))?;
    // A spreadsheet's export may start with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
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
    // One price per instrument and moment: two would leave which one holds to the file's order.
    let mut seen = std::collections::HashMap::new();
    for (at, i, symbol, price) in &rows {
        if let Some((first_line, first_price)) = seen.insert((*at, symbol.as_str()), (*i, *price)) {
            if first_price != *price {
                return Err(format!(
                    "price file {} line {}: {symbol} has another price at the same time on line {}",
                    path.display(),
                    i + 1,
                    first_line + 1
                ));
            }
        }
    }
    let mut groups: Vec<(Timestamp, Vec<(String, Decimal)>)> = Vec::new();
    for (at, _, symbol, price) in rows {
        match groups.last_mut() {
            Some((t, g)) if *t == at => g.push((symbol, price)),
            _ => groups.push((at, vec![(symbol, price)])),
        }
    }
    Ok(groups)
}

/// The prices of one timestamp of a price file.
pub type PriceGroup = (crate::domain::time::Timestamp, Vec<(String, Decimal)>);

/// Recorded prices per command (a decade of minute bars is millions of lines).
const RECORD_BATCH: usize = 10_000;

/// The file at its own times. What is past is recorded on each instrument (earlier days as
/// daily closes, anything after its latest price at its time; what the instrument already
/// knows is left out) and its latest price published; what is in the future is applied when
/// its time comes. Then it stops (prices stay where the file left them).
pub async fn run_recorded(services: Arc<Services>, groups: Vec<PriceGroup>, mut stop: watch::Receiver<bool>) {
    let router = services.router.clone();
    let mut listings = Listings::default();
    let now = crate::actors::wall_clock_now();
    let split = groups.partition_point(|(at, _)| *at <= now);
    let mut past: std::collections::BTreeMap<String, Vec<(crate::domain::time::Timestamp, Decimal)>> = Default::default();
    for (at, group) in &groups[..split] {
        for (symbol, price) in group {
            past.entry(symbol.clone()).or_default().push((*at, *price));
        }
    }
    for (symbol, points) in past {
        let mut recorded = 0usize;
        for chunk in points.chunks(RECORD_BATCH) {
            let cmd = InstrumentCommand::Record { points: chunk.to_vec() };
            match router.execute::<Instrument>(&symbol, cmd, RequestMeta::system("price-file")).await {
                Ok(()) => recorded += chunk.len(),
                Err(e) => tracing::error!(symbol = %symbol, error = ?e, "recorded prices not applied"),
            }
        }
        // The file's latest price is the instrument's price now (in place of the listing's
        // opening price; nothing else moves prices under this feed). At the next start with
        // the same file it already is.
        let latest = points.last().map(|(_, p)| *p);
        match router.query::<Instrument, _>(&symbol, crate::domain::queries::CurrentQuote).await {
            Ok(Some(q)) if Some(q.price) == latest => services.publish_quotes(vec![q], true),
            _ => {
                if let Some(price) = latest {
                    apply_group(&services, &mut listings, vec![(symbol.clone(), price)], "price-file-latest").await;
                }
            }
        }
        tracing::info!(symbol = %symbol, lines = recorded, "recorded prices read");
    }
    for (n, (at, group)) in groups.into_iter().enumerate().skip(split) {
        let wait = Duration::from_millis((at.millis() - crate::actors::wall_clock_now().millis()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        // One node applies the file's future prices: the one driving the cluster's feed (each
        // node runs this task; every node applying them made every point N price events).
        if !router.leads_jobs() {
            continue;
        }
        apply_group(&services, &mut listings, group, &format!("price-file-{n}")).await;
    }
    tracing::info!("price file finished");
}

/// Plays the groups back, one per tick, then stops (prices stay where the file left them).
pub async fn run_replay(services: Arc<Services>, groups: Vec<PriceGroup>, tick: Duration, mut stop: watch::Receiver<bool>) {
    let mut listings = Listings::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (n, (_, group)) in groups.into_iter().enumerate() {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        // One node plays the file: the one driving the cluster's feed. Each node runs this
        // task from its own start, so every node applying its own position moved the prices
        // back and forth between the nodes' positions.
        if !services.router.leads_jobs() {
            continue;
        }
        apply_group(&services, &mut listings, group, &format!("replay-{n}")).await;
    }
    tracing::info!("price replay finished");
}

/// Daily closes a new node gives each demo instrument from before its listing.
pub const BACKFILL_DAYS: i64 = 365;

/// The seeded feed's past: for each demo instrument, a year of daily closes before today,
/// walked backwards from its listing price by the same GBM (drift reversed), seeded by the
/// feed's seed and the symbol, so charts and performance periods have a history from the first
/// start. Recorded only before the instrument's history begins: a later start changes nothing.
/// (Not for a CSV feed, whose file is the history.)
pub async fn backfill_demo_history(router: &Router, instruments: &[FeedInstrument], seed: u64) {
    use crate::domain::time::{Timestamp, MS_PER_DAY};
    let today = crate::actors::wall_clock_now().millis().div_euclid(MS_PER_DAY);
    for i in instruments {
        let symbol_seed = i
            .symbol
            .bytes()
            .fold(seed ^ 0x6261_636b_6669_6c6c, |h, b| crate::cluster::raft::splitmix64(h ^ u64::from(b)));
        let mut rng = ChaCha20Rng::seed_from_u64(symbol_seed);
        let backwards = GbmParams {
            drift: -i.params.drift,
            volatility: i.params.volatility,
        };
        let mut price = i.price;
        let mut points = Vec::with_capacity(BACKFILL_DAYS as usize);
        for k in 1..=BACKFILL_DAYS {
            // Stamped at 21:00 UTC of the day: one close per day.
            points.push((Timestamp((today - k) * MS_PER_DAY + 21 * 3_600_000), price));
            price = gbm_step(price, &backwards, 86_400.0, &mut rng);
        }
        points.reverse();
        let cmd = InstrumentCommand::Record { points };
        if let Err(e) = router.execute::<Instrument>(&i.symbol, cmd, RequestMeta::system("history-backfill")).await {
            tracing::warn!(symbol = %i.symbol, error = ?e, "the demo price history was not backfilled");
        }
    }
}

#[cfg(test)]
mod price_file_tests {
    use super::load_replay;

    fn load(text: &str) -> Result<usize, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("prices.csv");
        std::fs::write(&path, text).unwrap();
        load_replay(&path, &["ACME".to_string(), "BOND".to_string()]).map(|g| g.len())
    }

    #[test]
    fn a_byte_order_mark_is_read_past_and_two_prices_for_one_moment_are_refused() {
        let rows = "timestamp,symbol,price\r\n2026-01-02T10:00:00Z,ACME,10.00\r\n2026-01-02T10:01:00Z,ACME,10.50\r\n";
        assert_eq!(load(&format!("\u{feff}{rows}")), Ok(2));
        // The same price twice is the same fact; another price at the same moment is a conflict.
        assert_eq!(load("2026-01-02T10:00:00Z,ACME,10.00\n2026-01-02T10:00:00Z,ACME,10.00\n"), Ok(1));
        let e = load("2026-01-02T10:00:00Z,ACME,1.0000\n2026-01-02T10:00:00Z,BOND,5\n2026-01-02T10:00:00Z,ACME,200.00\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("line 1") && e.contains("ACME"), "{e}");
    }
}
