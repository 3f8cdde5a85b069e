//! The simulated market feed: every tick, each demo instrument moves one seeded GBM step
//! (`domain::market::gbm_step`) and the new price is sent to its instrument entity.

use crate::actors::RequestMeta;
use crate::cluster::Router;
use crate::config::InstrumentConfig;
use crate::domain::instrument::{Instrument, InstrumentCommand};
use crate::domain::market::{gbm_step, GbmParams};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rust_decimal::Decimal;
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

/// Runs until `stop` turns true. Starting prices are the instruments' persisted prices.
pub async fn run_feed(router: Router, mut instruments: Vec<FeedInstrument>, seed: u64, tick: Duration, mut stop: watch::Receiver<bool>) {
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
        let sends = instruments.iter_mut().map(|inst| {
            inst.price = gbm_step(inst.price, &inst.params, tick.as_secs_f64(), &mut rng);
            let router = router.clone();
            let (symbol, price) = (inst.symbol.clone(), inst.price);
            async move {
                let meta = RequestMeta::system(format!("feed-{n}"));
                if let Err(e) = router.execute::<Instrument>(&symbol, InstrumentCommand::Tick { price }, meta).await {
                    tracing::warn!(symbol = %symbol, error = ?e, "price tick not applied");
                }
            }
        });
        let sends: Vec<_> = sends.collect();
        futures_util::future::join_all(sends).await;
    }
}
