//! An instrument's price series, downsampled so it stays small: every tick updates the close of
//! its minute bar (kept for the last day) and of its day (daily closes kept for ten years).
//! Queries return complete days before the minute window at daily resolution, then minute bars.

use crate::domain::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

pub const MS_PER_MINUTE: i64 = 60_000;
pub const MS_PER_DAY: i64 = 86_400_000;
/// Minute bars kept: one day.
pub const MINUTES_KEPT: usize = 1440;
/// Daily closes kept: about ten years.
pub const DAYS_KEPT: usize = 3660;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceHistory {
    /// (minute start, last price in that minute), oldest first.
    pub minutes: VecDeque<(Timestamp, Decimal)>,
    /// (day start UTC, last price of that day), oldest first.
    pub days: VecDeque<(Timestamp, Decimal)>,
}

fn bucket(series: &mut VecDeque<(Timestamp, Decimal)>, start: Timestamp, price: Decimal, keep: usize) {
    match series.back_mut() {
        Some((last, close)) if *last == start => *close = price,
        // Out-of-order ticks never reach here (the instrument drops ticks older than its price).
        Some((last, _)) if *last > start => {}
        _ => {
            series.push_back((start, price));
            while series.len() > keep {
                series.pop_front();
            }
        }
    }
}

impl PriceHistory {
    pub fn record(&mut self, at: Timestamp, price: Decimal) {
        let m = at.millis();
        bucket(&mut self.minutes, Timestamp(m - m.rem_euclid(MS_PER_MINUTE)), price, MINUTES_KEPT);
        bucket(&mut self.days, Timestamp(m - m.rem_euclid(MS_PER_DAY)), price, DAYS_KEPT);
    }

    /// When the history begins: the start of its first day.
    pub fn begins(&self) -> Option<Timestamp> {
        self.days.front().map(|(d, _)| *d)
    }

    /// Adds daily closes from before the history begins (`points` in time order; the last
    /// price of each day is its close). Points on or after the first day are left out; the
    /// oldest days beyond the ten years kept are dropped.
    pub fn prepend_days(&mut self, points: &[(Timestamp, Decimal)]) {
        let begins = self.begins();
        let mut closes = std::collections::BTreeMap::new();
        for (at, price) in points {
            let m = at.millis();
            let day = Timestamp(m - m.rem_euclid(MS_PER_DAY));
            if begins.is_none_or(|b| day < b) {
                closes.insert(day, *price);
            }
        }
        for (day, price) in closes.into_iter().rev() {
            self.days.push_front((day, price));
        }
        while self.days.len() > DAYS_KEPT {
            self.days.pop_front();
        }
    }

    /// The price as it stood at `at`: the last minute bar that ended by then, where the minute
    /// window reaches back to it; before that window, the close of `at`'s day (or of the last
    /// day before it with a price) — the finest the history keeps.
    pub fn price_at(&self, at: Timestamp) -> Option<Decimal> {
        if self.minutes.front().is_some_and(|(m, _)| m.millis() + MS_PER_MINUTE <= at.millis()) {
            return self
                .minutes
                .iter()
                .rev()
                .find(|(m, _)| m.millis() + MS_PER_MINUTE <= at.millis())
                .map(|(_, p)| *p);
        }
        self.close_on(Timestamp(at.millis() - at.millis().rem_euclid(MS_PER_DAY)))
    }

    /// The close of the day starting at `day_start`, or of the last day before it with a price.
    pub fn close_on(&self, day_start: Timestamp) -> Option<Decimal> {
        self.days.iter().rev().find(|(d, _)| *d <= day_start).map(|(_, p)| *p)
    }

    /// Prices as they were known over time, in `[from, to]`, never ahead of when they were
    /// known: a day's close (before the minute window) at the end of its day, a minute's last
    /// price at the end of its minute — and the latest bar's at `latest`, when its last price
    /// arrived (the instrument's `as_of`).
    pub fn known(&self, from: Timestamp, to: Timestamp, latest: Timestamp) -> Vec<(Timestamp, Decimal)> {
        let window = self.minutes.front().map_or(Timestamp(i64::MAX), |m| m.0);
        let daily = self
            .days
            .iter()
            .filter(|(d, _)| d.millis() + MS_PER_DAY <= window.millis())
            .map(|(d, p)| (Timestamp(d.millis() + MS_PER_DAY - 1), *p));
        let last = self.minutes.len().saturating_sub(1);
        let minutes = self.minutes.iter().enumerate().map(|(i, (m, p))| {
            let end = m.millis() + MS_PER_MINUTE - 1;
            let at = if i == last && latest >= *m { latest.millis().min(end) } else { end };
            (Timestamp(at), *p)
        });
        daily.chain(minutes).filter(|(t, _)| *t >= from && *t <= to).collect()
    }

    /// Points in `[from, to]`: daily closes of the days that end before the minute window,
    /// then minute bars. Each point is stamped with the start of its bar.
    pub fn range(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Decimal)> {
        let window = self.minutes.front().map_or(Timestamp(i64::MAX), |m| m.0);
        let daily = self
            .days
            .iter()
            .filter(|(d, _)| d.millis() + MS_PER_DAY <= window.millis())
            .filter(|(d, _)| *d >= from && *d <= to);
        let minutes = self.minutes.iter().filter(|(t, _)| *t >= from && *t <= to);
        daily.chain(minutes).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement's closing price is the price at the close time, not a later tick of the
    /// same day (a close that runs late must not price the day's positions ahead of time).
    #[test]
    fn the_price_at_a_time_is_the_last_minute_that_ended_by_then() {
        let day = 1_800_000_000_000 - 1_800_000_000_000 % MS_PER_DAY;
        let close = Timestamp(day + 22 * 3_600_000);
        let mut h = PriceHistory::default();
        h.record(Timestamp(close.millis() - 30_000), Decimal::from(100));
        h.record(Timestamp(close.millis() + 3_600_000), Decimal::from(150));
        assert_eq!(h.price_at(close), Some(Decimal::from(100)));
        assert_eq!(h.price_at(Timestamp(close.millis() + 3_660_000)), Some(Decimal::from(150)));
        assert_eq!(h.close_on(Timestamp(day)), Some(Decimal::from(150)), "the day's close is its last price");
        // Before the minute window: the close of the day.
        assert_eq!(h.price_at(Timestamp(close.millis() - 60_000)), Some(Decimal::from(150)));
    }

    #[test]
    fn prices_are_known_at_the_end_of_their_bar_the_latest_when_it_arrived() {
        let mut h = PriceHistory::default();
        let t0 = 10 * MS_PER_DAY;
        h.record(Timestamp(t0 + 5_000), Decimal::from(100));
        h.record(Timestamp(t0 + MS_PER_MINUTE + 7_000), Decimal::from(110));
        h.record(Timestamp(t0 + MS_PER_MINUTE + 9_000), Decimal::from(121));
        let known = h.known(Timestamp(0), Timestamp(t0 + MS_PER_DAY), Timestamp(t0 + MS_PER_MINUTE + 9_000));
        assert_eq!(
            known,
            vec![
                (Timestamp(t0 + MS_PER_MINUTE - 1), Decimal::from(100)),
                (Timestamp(t0 + MS_PER_MINUTE + 9_000), Decimal::from(121))
            ]
        );
    }

    fn p(n: i64) -> Decimal {
        Decimal::new(n, 2)
    }

    #[test]
    fn ticks_become_minute_bars_and_daily_closes() {
        let mut h = PriceHistory::default();
        let t0 = Timestamp(10 * MS_PER_DAY); // a midnight
        h.record(t0, p(100));
        h.record(Timestamp(t0.millis() + 1_000), p(101));
        h.record(Timestamp(t0.millis() + 59_999), p(102));
        h.record(Timestamp(t0.millis() + 60_000), p(103));
        assert_eq!(h.minutes, VecDeque::from(vec![(t0, p(102)), (Timestamp(t0.millis() + 60_000), p(103))]));
        assert_eq!(h.days, VecDeque::from(vec![(t0, p(103))]));
        // A late tick for an older minute changes nothing.
        h.record(Timestamp(t0.millis() + 30_000), p(1));
        assert_eq!(h.minutes.back().unwrap().1, p(103));
    }

    #[test]
    fn history_stays_bounded_and_queries_mix_resolutions() {
        let mut h = PriceHistory::default();
        let start = Timestamp(100 * MS_PER_DAY);
        // Three days of one tick every 30 s: 8640 ticks.
        for i in 0..(3 * 2880) {
            h.record(Timestamp(start.millis() + i * 30_000), p(10_000 + i));
        }
        assert_eq!(h.minutes.len(), MINUTES_KEPT);
        assert_eq!(h.days.len(), 3);
        let all = h.range(Timestamp(0), Timestamp(i64::MAX));
        // Two complete days before the last day's minute window, then 1440 minute bars.
        assert_eq!(all.len(), 2 + MINUTES_KEPT);
        assert_eq!(all[0], (start, p(10_000 + 2879)));
        assert_eq!(all[1], (Timestamp(start.millis() + MS_PER_DAY), p(10_000 + 2 * 2880 - 1)));
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "points are in time order");
        assert_eq!(all.last().unwrap().1, p(10_000 + 3 * 2880 - 1));
        // A narrow range inside the minute window.
        let t = Timestamp(start.millis() + 2 * MS_PER_DAY + 600_000);
        let r = h.range(t, Timestamp(t.millis() + 120_000));
        assert_eq!(r.len(), 3);
        // Ten years of days never exceed the cap.
        let mut long = PriceHistory::default();
        for d in 0..5000 {
            long.record(Timestamp(d * MS_PER_DAY), p(d + 1));
        }
        assert_eq!(long.days.len(), DAYS_KEPT);
    }

    #[test]
    fn earlier_days_are_prepended_once_and_kept_to_ten_years() {
        let day = |d: i64, h: i64| Timestamp(d * MS_PER_DAY + h * 3_600_000);
        let mut h = PriceHistory::default();
        h.record(day(100, 10), p(500));
        assert_eq!(h.begins(), Some(day(100, 0)));
        // Days before the history: the last price of each is its close; the first day of the
        // history itself and anything later are left out.
        h.prepend_days(&[
            (day(97, 9), p(1)),
            (day(97, 15), p(2)),
            (day(99, 12), p(3)),
            (day(100, 1), p(4)),
            (day(101, 1), p(5)),
        ]);
        assert_eq!(
            h.days.iter().copied().collect::<Vec<_>>(),
            vec![(day(97, 0), p(2)), (day(99, 0), p(3)), (day(100, 0), p(500))]
        );
        // The same points again add nothing.
        let before = h.clone();
        h.prepend_days(&[(day(97, 9), p(1)), (day(97, 15), p(2)), (day(99, 12), p(3))]);
        assert_eq!(h, before);
        // The oldest beyond the cap are dropped.
        let old: Vec<_> = (0..5000).map(|d| (day(d - 5000, 12), p(d + 1))).collect();
        h.prepend_days(&old);
        assert_eq!(h.days.len(), DAYS_KEPT);
        assert_eq!(h.days.back().copied(), Some((day(100, 0), p(500))));
    }
}
