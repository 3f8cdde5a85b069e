//! The seeded geometric-Brownian-motion price model shared by the production feed and the
//! simulator: `S(t+dt) = S(t)·exp((μ − σ²/2)·dt + σ·√dt·Z)`, `Z ~ N(0,1)` from a seeded stream.
//!
//! The float arithmetic is confined to drawing the multiplicative step; prices themselves are
//! `Decimal`, rounded to the platform's price precision, and never fall below one tick.

use crate::domain::money::round_price;
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Seconds in a (365-day) year: drift and volatility are annualised.
const SECONDS_PER_YEAR: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GbmParams {
    /// Annualised drift μ.
    pub drift: f64,
    /// Annualised volatility σ.
    pub volatility: f64,
}

/// The smallest price an instrument can have (one price tick).
pub fn min_price() -> Decimal {
    Decimal::new(1, crate::domain::money::PRICE_DP)
}

/// One GBM step of `dt_seconds` from `price`, drawing one normal variate from `rng`.
pub fn gbm_step(price: Decimal, params: &GbmParams, dt_seconds: f64, rng: &mut dyn RngCore) -> Decimal {
    let dt = dt_seconds / SECONDS_PER_YEAR;
    let z: f64 = StandardNormal.sample(&mut RngAdapter(rng));
    let factor = ((params.drift - 0.5 * params.volatility * params.volatility) * dt + params.volatility * dt.sqrt() * z).exp();
    let p = price.to_f64().unwrap_or(0.0) * factor;
    let next = Decimal::from_f64(p).map(round_price).unwrap_or(price);
    next.clamp(min_price(), crate::domain::money::max_price())
}

/// `rand_distr` wants a sized `Rng`; this adapts a `dyn RngCore`.
struct RngAdapter<'a>(&'a mut dyn RngCore);

impl RngCore for RngAdapter<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_path_and_positive() {
        let params = GbmParams { drift: 0.05, volatility: 0.9 };
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let mut p = Decimal::from(100);
            let mut path = Vec::new();
            for _ in 0..10_000 {
                p = gbm_step(p, &params, 3600.0, &mut rng);
                assert!(p >= min_price());
                path.push(p);
            }
            path
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
