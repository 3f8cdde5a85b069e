//! The scenario part of the report: per-band performance (start and end value, time-weighted
//! return, max drawdown), the market, advice counts and the review-queue load. Plain text with
//! fixed precision, so the same seed prints the same bytes.

use crate::advisory::{Advisory, ALL_BANDS};
use crate::scenario::{Scenario, Symbols};
use crate::sim::{Sim, STEPS_PER_DAY};
use moneta::domain::money::cash_string;
use moneta::domain::valuation::{twr, ValuePoint};
use rust_decimal::Decimal;
use std::fmt::Write as _;

/// The growth of one unit invested at the start, chain-linked exactly as `valuation::twr`
/// (a flow arrives at the start of its sub-period; a sub-period without capital is skipped).
pub fn growth_index(points: &[ValuePoint]) -> Vec<Decimal> {
    let mut growth = Decimal::ONE;
    let mut out = Vec::with_capacity(points.len());
    out.push(growth);
    for w in points.windows(2) {
        let start = w[0].value + (w[1].contributions - w[0].contributions);
        if start > Decimal::ZERO {
            if let Some(g) = w[1].value.checked_div(start).and_then(|r| growth.checked_mul(r)) {
                growth = g;
            }
        }
        out.push(growth);
    }
    out
}

/// The largest fall of the index from a previous peak, as a fraction (0.12 is 12%).
pub fn max_drawdown(index: &[Decimal]) -> Decimal {
    let mut peak = Decimal::ZERO;
    let mut worst = Decimal::ZERO;
    for &x in index {
        peak = peak.max(x);
        if peak > Decimal::ZERO {
            worst = worst.max((peak - x) / peak);
        }
    }
    worst.round_dp(6)
}

/// A fraction as a signed percentage with two places: `-0.0412` → `-4.12%`.
pub fn pct(v: Decimal) -> String {
    let p = (v * Decimal::from(100)).round_dp(2);
    let p = if p.is_zero() { Decimal::ZERO } else { p };
    let sign = if p > Decimal::ZERO { "+" } else { "" };
    format!("{sign}{p:.2}%")
}

/// A fraction as an unsigned percentage with two places.
fn share(v: Decimal) -> String {
    format!("{:.2}%", (v * Decimal::from(100)).round_dp(2))
}

/// `day D HH:MM` of a global trading minute (the open is 14:30 UTC).
pub fn clock(minute: i64) -> String {
    let day = minute.div_euclid(STEPS_PER_DAY);
    let of_day = minute.rem_euclid(STEPS_PER_DAY) + 14 * 60 + 30;
    format!("day {day} {:02}:{:02}", of_day / 60, of_day % 60)
}

pub fn shock_lines(scenario: &Scenario) -> Vec<String> {
    scenario
        .shocks
        .iter()
        .map(|s| {
            let symbols = match &s.symbols {
                Symbols::All => "all instruments".to_string(),
                Symbols::List(l) => l.join(" "),
            };
            format!(
                "{} for {} min: {} ({})",
                clock(s.first_step()),
                s.duration_minutes,
                pct(Decimal::from_f64_retain(s.change).unwrap_or_default().round_dp(4)),
                symbols
            )
        })
        .collect()
}

/// The performance of one band's series.
pub struct BandPerformance {
    pub start: Decimal,
    pub end: Decimal,
    pub flows: Decimal,
    pub twr: Decimal,
    pub shock_twr: Option<Decimal>,
    pub drawdown: Decimal,
    pub index: Vec<Decimal>,
}

pub fn performance(adv: &Advisory, points: &[ValuePoint]) -> BandPerformance {
    let index = growth_index(points);
    let total = twr(points);
    // The index and the production TWR are the same chain: a disagreement is a bug here.
    let last = index.last().copied().unwrap_or(Decimal::ONE);
    assert_eq!((last - Decimal::ONE).round_dp(6), total, "growth index and valuation::twr disagree");
    let shock_twr = match (adv.marks.start, adv.marks.end) {
        (start, Some(end)) => Some(twr(&points[start.unwrap_or(0)..=end])),
        _ => None,
    };
    let first = points.iter().position(|p| p.value > Decimal::ZERO);
    let start = first.map_or(Decimal::ZERO, |i| points[i].value);
    let flows_at_start = first.map_or(Decimal::ZERO, |i| points[i].contributions);
    let end_point = points.last();
    BandPerformance {
        start,
        end: end_point.map_or(Decimal::ZERO, |p| p.value),
        flows: end_point.map_or(Decimal::ZERO, |p| p.contributions) - flows_at_start,
        twr: total,
        shock_twr,
        drawdown: max_drawdown(&index),
        index,
    }
}

/// The aggregate of all bands (the band moves cancel out in the flows).
pub fn all_bands(adv: &Advisory) -> Vec<ValuePoint> {
    (0..adv.sample_minutes.len())
        .map(|i| ValuePoint {
            at: adv.series[0][i].at,
            value: adv.series.iter().map(|s| s[i].value).sum(),
            contributions: adv.series.iter().map(|s| s[i].contributions).sum(),
        })
        .collect()
}

impl Sim {
    /// The scenario sections of the report, printed after the common summary.
    pub fn scenario_report(&self) -> String {
        let Some(adv) = &self.advisory else { return String::new() };
        let sc = &adv.scenario;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}: {} advised users (every band), {} self-directed, {} days, value sampled every {} min and at each close ({} samples)",
            sc.name,
            self.users.len() - adv.first,
            adv.first,
            self.args.days,
            sc.sample_every_minutes,
            adv.sample_minutes.len()
        );
        if sc.shocks.is_empty() {
            let _ = writeln!(out, "shocks: none");
        }
        for line in shock_lines(sc) {
            let _ = writeln!(out, "shock: {line}");
        }
        self.market_lines(adv, &mut out);
        let _ = writeln!(
            out,
            "per-band performance (TWR chain-linked over the samples; flows = deposits − withdrawals ± users changing band{}):",
            if adv.marks.end.is_some() {
                "; shock = from the sample before the first shock minute to the end of the last"
            } else {
                ""
            }
        );
        for (b, band) in ALL_BANDS.iter().enumerate() {
            let p = performance(adv, &adv.series[b]);
            let a = &adv.stats.per_band[b];
            let shock = p.shock_twr.map(|r| format!(", shock twr {}", pct(r))).unwrap_or_default();
            let exposure = if adv.marks.start.is_some() {
                format!(", equity exposure at the first shock {}", share(adv.marks.exposure[b]))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "band {}: members {}→{}, start value {}, end value {}, net flows {}, twr {}{shock}, max drawdown {}{exposure}; advice issued {} (pending review {}), accepted {}",
                band.as_str(),
                adv.members_start[b],
                adv.members_end[b],
                cash_string(p.start),
                cash_string(p.end),
                cash_string(p.flows),
                pct(p.twr),
                share(p.drawdown),
                a.issued,
                a.pending_review,
                a.accepted
            );
        }
        let all = performance(adv, &all_bands(adv));
        let shock = all.shock_twr.map(|r| format!(", shock twr {}", pct(r))).unwrap_or_default();
        let _ = writeln!(
            out,
            "all advised: start value {}, end value {}, net flows {}, twr {}{shock}, max drawdown {}",
            cash_string(all.start),
            cash_string(all.end),
            cash_string(all.flows),
            pct(all.twr),
            share(all.drawdown)
        );
        let s = &adv.stats;
        let _ = writeln!(
            out,
            "advice requests: {} (daily check-ins {}, sharp moves {}, questionnaire re-answered {}, in a panic after a fall {}); sharp moves seen {}",
            s.requests(),
            s.requests_daily,
            s.requests_sharp,
            s.requests_reprofile,
            s.requests_panic,
            s.sharp_moves
        );
        let _ = writeln!(
            out,
            "advice issued: {} (published {}, of them without orders {}; pending_review {}), unchanged and kept {}",
            s.issued, s.published, s.no_orders, s.pending_review, s.unchanged
        );
        let decided = s.approved + s.rejected;
        let mean_delay = if decided > 0 {
            format!("{:.1}", Decimal::from(s.review_delay_ms_total) / Decimal::from(decided * 60_000))
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            out,
            "reviews: approved {}, rejected {}, superseded before review {} (refused as unknown advice), still held {}; mean wait {} min (the officer works trading hours: overnight waits included)",
            s.approved,
            s.rejected,
            s.superseded,
            self.users
                .iter()
                .filter_map(|u| u.advisee.as_ref())
                .filter(|a| a.account.advice.as_ref().is_some_and(|r| r.status == moneta::domain::account::AdviceStatus::PendingReview))
                .count(),
            mean_delay
        );
        let refused: u64 = s.orders_refused.values().sum();
        let codes: Vec<String> = s.orders_refused.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(
            out,
            "accepted: {} advice, orders placed {} (filled {}, refused {}{}), accept re-sent {} (every order replayed)",
            s.accepted,
            s.orders_placed,
            s.orders_filled,
            refused,
            if codes.is_empty() { String::new() } else { format!(": {}", codes.join(", ")) },
            s.accept_resends
        );
        let mean = if s.queue_samples > 0 {
            Decimal::from(s.queue_sum) / Decimal::from(s.queue_samples)
        } else {
            Decimal::ZERO
        };
        let _ = writeln!(
            out,
            "review queue: max {}, mean {:.2} (advice held for review, sampled every simulated minute)",
            s.queue_max,
            mean.round_dp(2)
        );
        let _ = writeln!(out, "advised flows: deposits {}, withdrawals {}", s.deposits, s.withdrawals);
        let events: usize = self.users.iter().filter_map(|u| u.advisee.as_ref()).map(|a| a.journal.len()).sum();
        let _ = writeln!(
            out,
            "journal replay: {} accounts ({events} events) rebuilt, all equal",
            self.users.len() - adv.first
        );
        out
    }

    fn market_lines(&self, adv: &Advisory, out: &mut String) {
        let mut run = Vec::new();
        let mut during = Vec::new();
        let mut parts = Vec::new();
        for (symbol, m) in &self.instruments {
            let r = m.state.price / m.opening - Decimal::ONE;
            run.push(r);
            let shock = match (adv.marks.prices_start.get(symbol).or(Some(&m.opening)), adv.marks.prices_end.get(symbol)) {
                (Some(a), Some(b)) if adv.marks.end.is_some() => {
                    let r = *b / *a - Decimal::ONE;
                    during.push(r);
                    format!(", shock {}", pct(r))
                }
                _ => String::new(),
            };
            parts.push(format!("{symbol} {}{shock}", pct(r)));
        }
        let mean = |v: &[Decimal]| v.iter().sum::<Decimal>() / Decimal::from(v.len().max(1));
        let shock = if during.is_empty() {
            String::new()
        } else {
            format!(", during the shocks {}", pct(mean(&during)))
        };
        let _ = writeln!(out, "market (equal-weighted instruments): run {}{shock}", pct(mean(&run)));
        let _ = writeln!(out, "instruments: {}", parts.join("; "));
    }
}
