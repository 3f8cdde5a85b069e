//! The plot of a scenario run: a hand-written SVG line chart with one polyline per risk band —
//! above, the bands' portfolio value over simulated trading time; below, each band's growth of
//! 100 (the time-weighted return, so deposits and band changes do not show as gains). Shock
//! windows are shaded. Every number is written with fixed precision, so the same seed writes the
//! same bytes.

use crate::advisory::{Advisory, ALL_BANDS};
use crate::report::{all_bands, clock, performance, shock_lines};
use crate::sim::STEPS_PER_DAY;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 700.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 800.0;
/// (top, bottom) of the value panel and of the growth panel.
const VALUE_PANEL: (f64, f64) = (70.0, 360.0);
const INDEX_PANEL: (f64, f64) = (420.0, 640.0);
const COLOURS: [&str; 5] = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#d62728"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `range`.
fn tick_step(range: f64, n: f64) -> f64 {
    let raw = (range / n).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    let r = raw / magnitude;
    let nice = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The axis range: rounded out to whole ticks.
fn axis(lo: f64, hi: f64, n: f64) -> (f64, f64, f64) {
    let (lo, hi) = if hi - lo < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let step = tick_step(hi - lo, n);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

fn money_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn f(v: &Decimal) -> f64 {
    v.to_f64().unwrap_or(0.0)
}

struct Panel {
    top: f64,
    bottom: f64,
    lo: f64,
    hi: f64,
    step: f64,
}

impl Panel {
    fn new((top, bottom): (f64, f64), lines: &[Vec<f64>], floor_at_zero: bool) -> Panel {
        let all = lines.iter().flatten().copied();
        let lo = all.clone().fold(f64::INFINITY, f64::min);
        let hi = all.fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let lo = if floor_at_zero { lo.min(0.0) } else { lo };
        let (lo, hi, step) = axis(lo, hi, 5.0);
        Panel { top, bottom, lo, hi, step }
    }
    fn y(&self, v: f64) -> f64 {
        self.bottom - (v - self.lo) / (self.hi - self.lo) * (self.bottom - self.top)
    }
}

/// The SVG document of a scenario run.
pub fn svg(adv: &Advisory, seed: u64, days: i64) -> String {
    let total_minutes = (days * STEPS_PER_DAY).max(1) as f64;
    let x = |minute: i64| LEFT + (minute as f64 + 1.0) / total_minutes * (RIGHT - LEFT);
    let values: Vec<Vec<f64>> = adv.series.iter().map(|s| s.iter().map(|p| f(&p.value)).collect()).collect();
    let index: Vec<Vec<f64>> = adv
        .series
        .iter()
        .map(|s| performance(adv, s).index.iter().map(|g| f(g) * 100.0).collect())
        .collect();
    let value_panel = Panel::new(VALUE_PANEL, &values, true);
    let index_panel = Panel::new(INDEX_PANEL, &index, false);

    let mut out = String::new();
    let _ = writeln!(out, r##"<?xml version="1.0" encoding="UTF-8"?>"##);
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{HEIGHT:.0}" viewBox="0 0 {WIDTH:.0} {HEIGHT:.0}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(out, r##"<rect x="0" y="0" width="{WIDTH:.0}" height="{HEIGHT:.0}" fill="white"/>"##);
    let _ = writeln!(
        out,
        r##"<text x="{LEFT:.0}" y="24" font-size="16" font-weight="bold">Moneta simulation — scenario {}, seed {seed}</text>"##,
        escape(&adv.scenario.name)
    );
    let _ = writeln!(out, r##"<text x="{LEFT:.0}" y="44" fill="#444">{}</text>"##, escape(&adv.scenario.description));

    // Shock windows, shaded across both panels: one area per window, naming its shocks.
    let mut windows: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
    for (s, label) in adv.scenario.shocks.iter().zip(shock_lines(&adv.scenario)) {
        windows.entry((s.first_step(), s.end_step())).or_default().push(label);
    }
    for ((first, end), labels) in windows {
        let (x0, x1) = (x(first - 1), x(end - 1));
        let _ = writeln!(
            out,
            r##"<rect class="shock" x="{x0:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="#d62728" fill-opacity="0.10"><title>{}</title></rect>"##,
            VALUE_PANEL.0,
            (x1 - x0).max(1.0),
            INDEX_PANEL.1 - VALUE_PANEL.0,
            escape(&labels.join("; "))
        );
    }

    for (panel, title, labels) in [
        (&value_panel, "Portfolio value per risk band", true),
        (&index_panel, "Growth of 100 per risk band (time-weighted)", false),
    ] {
        let _ = writeln!(out, r##"<text x="{LEFT:.0}" y="{:.2}" font-weight="bold">{title}</text>"##, panel.top - 8.0);
        // Horizontal grid lines and y labels.
        let ticks = ((panel.hi - panel.lo) / panel.step).round() as i64;
        for i in 0..=ticks {
            let v = panel.lo + i as f64 * panel.step;
            let y = panel.y(v);
            let label = if labels { money_label(v) } else { format!("{v:.1}") };
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT:.2}" y1="{y:.2}" x2="{RIGHT:.2}" y2="{y:.2}" stroke="#e0e0e0"/><text x="{:.2}" y="{:.2}" text-anchor="end">{label}</text>"##,
                LEFT - 6.0,
                y + 4.0
            );
        }
        // Day boundaries and x labels.
        for d in 0..=days {
            let xd = LEFT + (d * STEPS_PER_DAY) as f64 / total_minutes * (RIGHT - LEFT);
            let _ = writeln!(
                out,
                r##"<line x1="{xd:.2}" y1="{:.2}" x2="{xd:.2}" y2="{:.2}" stroke="#e0e0e0"/>"##,
                panel.top, panel.bottom
            );
            if d < days {
                let mid = xd + STEPS_PER_DAY as f64 / 2.0 / total_minutes * (RIGHT - LEFT);
                let _ = writeln!(
                    out,
                    r##"<text x="{mid:.2}" y="{:.2}" text-anchor="middle">day {d}</text>"##,
                    panel.bottom + 16.0
                );
            }
        }
        // Axes.
        let _ = writeln!(
            out,
            r##"<path d="M{LEFT:.2},{:.2} L{LEFT:.2},{:.2} L{RIGHT:.2},{:.2}" fill="none" stroke="black"/>"##,
            panel.top, panel.bottom, panel.bottom
        );
    }

    // One polyline per band in each panel.
    for (class, panel, lines) in [("value", &value_panel, &values), ("growth", &index_panel, &index)] {
        for (b, band) in ALL_BANDS.iter().enumerate() {
            let points: Vec<String> = adv
                .sample_minutes
                .iter()
                .zip(&lines[b])
                .map(|(m, v)| format!("{:.2},{:.2}", x(*m), panel.y(*v)))
                .collect();
            let _ = writeln!(
                out,
                r##"<polyline class="{class}" data-band="{}" fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"##,
                band.as_str(),
                COLOURS[b],
                points.join(" ")
            );
        }
    }

    // Legend: band, colour, and its end value and time-weighted return.
    let _ = writeln!(
        out,
        r##"<text x="{:.2}" y="{:.2}" font-weight="bold">Risk band</text>"##,
        RIGHT + 20.0,
        VALUE_PANEL.0
    );
    for (b, band) in ALL_BANDS.iter().enumerate() {
        let y = VALUE_PANEL.0 + 22.0 + b as f64 * 36.0;
        let p = performance(adv, &adv.series[b]);
        let _ = writeln!(
            out,
            r##"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{}" stroke-width="3"/><text x="{:.2}" y="{:.2}">{}</text><text x="{:.2}" y="{:.2}" fill="#444" font-size="11">TWR {}</text>"##,
            RIGHT + 20.0,
            RIGHT + 40.0,
            COLOURS[b],
            RIGHT + 46.0,
            y + 4.0,
            band.as_str().replace('_', " "),
            RIGHT + 46.0,
            y + 18.0,
            crate::report::pct(p.twr)
        );
    }
    let all = performance(adv, &all_bands(adv));
    let _ = writeln!(
        out,
        r##"<text x="{:.2}" y="{:.2}" fill="#444" font-size="11">all advised: TWR {}</text>"##,
        RIGHT + 20.0,
        VALUE_PANEL.0 + 22.0 + 5.0 * 36.0,
        crate::report::pct(all.twr)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT:.0}" y="{:.2}" fill="#444">simulated trading time ({} days of 390 minutes, {} to {})</text>"##,
        HEIGHT - 24.0,
        days,
        clock(0),
        clock(days * STEPS_PER_DAY - 1)
    );
    out.push_str("</svg>\n");
    out
}
