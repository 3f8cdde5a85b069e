//! Scenario files (`simulations/scenarios/*.toml`): how many advised users, how many days, how
//! they behave, and the market shocks layered on the seeded GBM market.
//!
//! A shock moves its symbols by `move` (−0.30 is a 30% fall) over `duration_minutes` trading
//! minutes from `start_minute` of trading day `day` (0-based; a day has 390 minutes, and a window
//! may run on into the next days). Each minute of the window multiplies the GBM price by the same
//! factor `(1 + move)^(1 / duration_minutes)`, so the noise of the seeded market still runs under
//! it (the GBM stream draws exactly as without the shock) and the window compounds to `move`,
//! give or take the noise and the price rounding.
//!
//! The file is an external input (DESIGN.md §7): unknown fields are refused, and every error names
//! the file and the field — never a panic.

use crate::sim::STEPS_PER_DAY;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A bound on everything a file can ask for (TigerBeetle: a limit on everything).
pub const DAYS_MAX: u32 = 260;
const USERS_MAX: usize = 1_000_000;
const SHOCKS_MAX: usize = 64;
const MINUTES_MAX: u32 = 390 * 260;
/// Every risk band gets users: at least one each.
pub const BANDS: usize = 5;

/// The market shocks apply to these symbols.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Symbols {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Symbols {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Symbols, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Symbols;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"all\" or a list of symbols such as [\"ACME\", \"WRLD\"]")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Symbols, E> {
                if s == "all" {
                    Ok(Symbols::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Symbols, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    list.push(s);
                }
                Ok(Symbols::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shock {
    /// Trading day (0-based) the shock starts on.
    pub day: u32,
    /// Minute of that trading day (0 = the open, 389 = the last minute).
    pub start_minute: u32,
    pub duration_minutes: u32,
    /// Relative move over the window: −0.30 is a 30% fall, 0.10 a 10% rise.
    #[serde(rename = "move")]
    pub change: f64,
    pub symbols: Symbols,
}

impl Shock {
    /// The first global trading minute of the window (`day × 390 + start_minute`).
    pub fn first_step(&self) -> i64 {
        i64::from(self.day) * STEPS_PER_DAY + i64::from(self.start_minute)
    }
    /// One past the last global trading minute of the window.
    pub fn end_step(&self) -> i64 {
        self.first_step() + i64::from(self.duration_minutes)
    }
    pub fn applies_to(&self, symbol: &str) -> bool {
        match &self.symbols {
            Symbols::All => true,
            Symbols::List(l) => l.iter().any(|s| s == symbol),
        }
    }
    /// The per-minute factor that compounds to `1 + move` over the window.
    pub fn step_factor(&self) -> f64 {
        (1.0 + self.change).powf(1.0 / f64::from(self.duration_minutes))
    }
}

/// What the advised users do besides taking advice (every field has a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// A held instrument moving this much (a fraction) since the advice was last computed makes
    /// the user ask for advice at once (`LiveValuation::on_prices`).
    pub sharp_move: f64,
    /// The compliance officer decides on held advice after a delay drawn uniformly from this range.
    pub review_delay_minutes: [u32; 2],
    /// Of the held advice, how much the officer rejects (per mille).
    pub reject_per_mille: u32,
    /// Per user and day: the user re-answers the questionnaire (a life change) into another band.
    pub reprofile_per_mille: u32,
    /// Per sharp fall of a held instrument: the user re-answers one band more cautiously.
    pub panic_per_mille: u32,
    /// Accepting advice: the client re-sends its accept (a timeout) — every order must replay.
    pub accept_retry_per_mille: u32,
    /// Per user and day: a further deposit of 1–20% of the portfolio's value.
    pub deposit_per_mille: u32,
    /// Per user and day: a withdrawal of 10–90% of the cash.
    pub withdraw_per_mille: u32,
    /// The first deposit of every user, uniformly in this range (whole currency units).
    pub initial_deposit: [u32; 2],
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            sharp_move: 0.05,
            review_delay_minutes: [15, 240],
            reject_per_mille: 100,
            reprofile_per_mille: 10,
            panic_per_mille: 0,
            accept_retry_per_mille: 50,
            deposit_per_mille: 30,
            withdraw_per_mille: 10,
            initial_deposit: [1_000, 100_000],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name (letters, digits, `_`, `-`), printed in the report and the plot.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub days: u32,
    /// Advised users, spread evenly over the five risk bands (`--users` overrides it).
    pub users: usize,
    /// Self-directed users who run the random order workload alongside (default none).
    #[serde(default)]
    pub traders: usize,
    /// The value series samples every this many trading minutes (and at every close).
    #[serde(default = "default_sample_every")]
    pub sample_every_minutes: u32,
    #[serde(default)]
    pub behaviour: Behaviour,
    #[serde(default, rename = "shock")]
    pub shocks: Vec<Shock>,
}

fn default_sample_every() -> u32 {
    5
}

/// A bad scenario: which file, which field, what is wrong.
#[derive(Debug)]
pub struct ScenarioError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "bad scenario file {}: field `{}`: {}", self.file, self.field, self.message)
    }
}

/// Line and column (1-based) of a byte offset, for error messages.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Scenario {
    /// Reads, parses and checks a scenario file against the listed symbols.
    pub fn load(path: &Path, symbols: &[String]) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let err = |field: &str, message: String| ScenarioError {
            file: file.clone(),
            field: field.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err("(file)", format!("cannot read it: {e}")))?;
        Scenario::parse(&text, &file, symbols)
    }

    pub fn parse(text: &str, file: &str, symbols: &[String]) -> Result<Scenario, ScenarioError> {
        let err = |field: &str, message: String| ScenarioError {
            file: file.to_string(),
            field: field.to_string(),
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let at = e.span().map(|s| line_col(text, s.start));
            let message = match at {
                Some((l, c)) => format!("not valid TOML (line {l}, column {c}): {}", e.message().trim()),
                None => format!("not valid TOML: {}", e.message().trim()),
            };
            err("(syntax)", message)
        })?;
        let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = match inner.span().map(|s| line_col(text, s.start)) {
                Some((l, c)) => format!("{} (line {l}, column {c})", inner.message().trim()),
                None => inner.message().trim().to_string(),
            };
            // A missing field is reported at its parent: name the field itself.
            let field = match message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
                Some(missing) if field == "." => missing.to_string(),
                Some(missing) => format!("{field}.{missing}"),
                None => field,
            };
            err(&field, message)
        })?;
        scenario.check(symbols).map_err(|(field, message)| err(&field, message))?;
        Ok(scenario)
    }

    /// The semantic checks serde cannot make; `Err((field, why))`.
    fn check(&self, symbols: &[String]) -> Result<(), (String, String)> {
        let bad = |field: &str, why: String| Err((field.to_string(), why));
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(name_ok) {
            return bad("name", format!("must be 1–64 letters, digits, `_` or `-`, got {:?}", self.name));
        }
        if self.description.chars().count() > 500 || self.description.chars().any(char::is_control) {
            return bad("description", "must be at most 500 characters on one line".into());
        }
        if !(1..=DAYS_MAX).contains(&self.days) {
            return bad("days", format!("must be 1–{DAYS_MAX}, got {}", self.days));
        }
        check_users(self.users).map_err(|why| ("users".to_string(), why))?;
        if self.traders > USERS_MAX {
            return bad("traders", format!("must be at most {USERS_MAX}, got {}", self.traders));
        }
        if !(1..=390).contains(&self.sample_every_minutes) {
            return bad("sample_every_minutes", format!("must be 1–390, got {}", self.sample_every_minutes));
        }
        let b = &self.behaviour;
        if !(b.sharp_move.is_finite() && b.sharp_move > 0.0 && b.sharp_move < 1.0) {
            return bad("behaviour.sharp_move", format!("must be a fraction between 0 and 1, got {}", b.sharp_move));
        }
        let [lo, hi] = b.review_delay_minutes;
        if lo > hi || hi > MINUTES_MAX {
            return bad(
                "behaviour.review_delay_minutes",
                format!("must be [low, high] with low ≤ high ≤ {MINUTES_MAX}, got [{lo}, {hi}]"),
            );
        }
        for (field, v) in [
            ("reject_per_mille", b.reject_per_mille),
            ("reprofile_per_mille", b.reprofile_per_mille),
            ("panic_per_mille", b.panic_per_mille),
            ("accept_retry_per_mille", b.accept_retry_per_mille),
            ("deposit_per_mille", b.deposit_per_mille),
            ("withdraw_per_mille", b.withdraw_per_mille),
        ] {
            if v > 1000 {
                return bad(&format!("behaviour.{field}"), format!("is per mille: 0–1000, got {v}"));
            }
        }
        let [lo, hi] = b.initial_deposit;
        if lo == 0 || lo > hi || hi > 10_000_000 {
            return bad(
                "behaviour.initial_deposit",
                format!("must be [low, high] with 1 ≤ low ≤ high ≤ 10000000, got [{lo}, {hi}]"),
            );
        }
        if self.shocks.len() > SHOCKS_MAX {
            return bad("shock", format!("at most {SHOCKS_MAX} shocks, got {}", self.shocks.len()));
        }
        for (i, s) in self.shocks.iter().enumerate() {
            let field = |f: &str| format!("shock[{i}].{f}");
            if s.day >= self.days {
                return bad(
                    &field("day"),
                    format!("must fall within the {} days of the scenario (0–{}), got {}", self.days, self.days - 1, s.day),
                );
            }
            if s.start_minute >= 390 {
                return bad(
                    &field("start_minute"),
                    format!("must be 0–389 (a trading day has 390 minutes), got {}", s.start_minute),
                );
            }
            if s.duration_minutes == 0 || s.duration_minutes > MINUTES_MAX {
                return bad(&field("duration_minutes"), format!("must be 1–{MINUTES_MAX}, got {}", s.duration_minutes));
            }
            if s.end_step() > i64::from(self.days) * STEPS_PER_DAY {
                return bad(
                    &field("duration_minutes"),
                    format!("the shock runs past the last trading minute of day {}", self.days - 1),
                );
            }
            if !(s.change.is_finite() && s.change > -1.0 && s.change <= 10.0 && s.change != 0.0) {
                return bad(
                    &field("move"),
                    format!("must be a non-zero fraction above -1 (a total loss) and at most 10, got {}", s.change),
                );
            }
            if let Symbols::List(list) = &s.symbols {
                if list.is_empty() {
                    return bad(&field("symbols"), "must name at least one symbol (or be \"all\")".into());
                }
                if let Some(unknown) = list.iter().find(|x| !symbols.contains(x)) {
                    return bad(&field("symbols"), format!("unknown symbol {unknown:?}; listed: {}", symbols.join(", ")));
                }
            }
        }
        Ok(())
    }

    /// The combined shock factor of `symbol` in global trading minute `step` (0-based).
    pub fn factor(&self, step: i64, symbol: &str) -> Option<f64> {
        let mut f = None;
        for s in &self.shocks {
            if (s.first_step()..s.end_step()).contains(&step) && s.applies_to(symbol) {
                f = Some(f.unwrap_or(1.0) * s.step_factor());
            }
        }
        f
    }

    /// The first and one-past-last global minute covered by any shock.
    pub fn shock_span(&self) -> Option<(i64, i64)> {
        let first = self.shocks.iter().map(Shock::first_step).min()?;
        let end = self.shocks.iter().map(Shock::end_step).max()?;
        Some((first, end))
    }
}

/// Every band needs users, and there is a bound.
pub fn check_users(users: usize) -> Result<(), String> {
    if !(BANDS..=USERS_MAX).contains(&users) {
        return Err(format!("must be {BANDS}–{USERS_MAX} (at least one user per risk band), got {users}"));
    }
    Ok(())
}
