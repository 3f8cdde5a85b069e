//! Suitability questionnaire → risk profile (MiFID II style), model [`MODEL_VERSION`].
//!
//! [`parse_answers`] validates the `answers` object of `POST /v1/me/suitability` strictly; [`assess`]
//! turns valid answers into a [`RiskProfile`]. Pure and deterministic: no clock, no floats, no hash maps.
//!
//! # Method
//! The score runs from 1 (most cautious) to 7 (most adventurous), the same 1–7 scale as an instrument's
//! risk class. It is the client's **willingness** lowered by three **caps** ([`Breakdown`]), so every
//! profile is explained by naming the dimension that binds:
//!
//! `risk_score = min(willingness, horizon_cap, capacity_cap, experience_cap)`, within 1..=7.
//!
//! 1. **Willingness** (`objective`, `loss_tolerance`): points preservation/none 1, income/small 3,
//!    growth/medium 5, speculation/large 7. Willingness is the *lower* of the two, plus one notch when
//!    the other is higher: preservation or no tolerance for loss gives 1–2, growth + medium 5,
//!    growth + large 6, speculation + large 7.
//! 2. **Horizon cap**: under 2 years → 2, under 5 → 4, under 10 → 6, otherwise none.
//! 3. **Capacity for loss cap**, the lowest of:
//!    - emergency fund: under 3 months → 3, under 6 months → 6;
//!    - no income and liquid net worth under 25 000 → 2;
//!    - resources = liquid net worth + one year's income: under 10 000 → 3, under 50 000 → 5, under 100 000 → 6.
//!
//!    A ratio of net worth to income is deliberately not used: it falls when income rises, so a pay
//!    rise would lower the score. Income and wealth instead add up, and how long the client's liquid
//!    money lasts against their spending is what `emergency_fund_months` measures.
//! 4. **Knowledge & experience cap**: no experience → 4, 1 year → 5, 2–4 years → 6, 5+ years none.
//!
//! **Complex products** (derivatives, leverage) are an appropriateness question, i.e. one of knowledge
//! and experience: they are allowed iff `knows_complex_products` and at least
//! [`COMPLEX_MIN_EXPERIENCE_YEARS`] years of experience, and, because a client who cannot absorb a loss
//! should not be offered leverage at all, a capacity cap of at least [`COMPLEX_MIN_CAPACITY_CAP`]
//! (≥ 3 months of emergency fund, resources ≥ 10 000, not "no income and a small net worth"). A minimum
//! final score is not required: the score is a separate check, made against each instrument's risk
//! class, and requiring it here too would count willingness and horizon twice.
//!
//! **Monotone**: every points table and cap is a non-decreasing step function of its answer (enums in
//! declaration order, more years, months or money being better), and min of non-decreasing functions
//! is non-decreasing; so improving any single answer never lowers the score nor withdraws complex
//! products. A test checks this exhaustively over a grid.
//!
//! **Bands** ([`RiskBand::of_score`]): 1–2 conservative, 3 moderately conservative, 4 balanced,
//! 5–6 growth, 7 aggressive. Amounts are in the account's currency units.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const MODEL_VERSION: &str = "suitability-v1";
/// Every answer, in the order they are validated; any other name is [`AnswerError::Unknown`].
#[rustfmt::skip]
pub const ANSWER_NAMES: [&str; 8] = [
    "objective", "horizon_years", "loss_tolerance", "investment_experience_years",
    "knows_complex_products", "annual_income", "liquid_net_worth", "emergency_fund_months",
];
pub const MAX_HORIZON_YEARS: u32 = 50;
pub const MAX_EXPERIENCE_YEARS: u32 = 80;
pub const MAX_EMERGENCY_FUND_MONTHS: u32 = 120;
/// Upper bound of `annual_income` and `liquid_net_worth`: 10^12.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);
pub const COMPLEX_MIN_EXPERIENCE_YEARS: u32 = 2;
pub const COMPLEX_MIN_CAPACITY_CAP: u8 = 4;

const NO_CAP: u8 = 7;
/// `(below, cap)`: a value under `below` caps the score at `cap`; the first matching tier wins.
const HORIZON_CAPS: [(u32, u8); 3] = [(2, 2), (5, 4), (10, 6)];
const EXPERIENCE_CAPS: [(u32, u8); 3] = [(1, 4), (2, 5), (5, 6)];
const EMERGENCY_FUND_CAPS: [(u32, u8); 2] = [(3, 3), (6, 6)];
const RESOURCE_CAPS: [(Decimal, u8); 3] = [(amount(10_000), 3), (amount(50_000), 5), (amount(100_000), 6)];
const NO_INCOME_MIN_NET_WORTH: Decimal = amount(25_000);
const NO_INCOME_CAP: u8 = 2;

const fn amount(units: u32) -> Decimal {
    Decimal::from_parts(units, 0, 0, false, 0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    Preservation,
    Income,
    Growth,
    Speculation,
}

impl Objective {
    pub const ALL: [Objective; 4] = [Objective::Preservation, Objective::Income, Objective::Growth, Objective::Speculation];
    pub fn as_str(self) -> &'static str {
        ["preservation", "income", "growth", "speculation"][self as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossTolerance {
    None,
    Small,
    Medium,
    Large,
}

impl LossTolerance {
    pub const ALL: [LossTolerance; 4] = [LossTolerance::None, LossTolerance::Small, LossTolerance::Medium, LossTolerance::Large];
    pub fn as_str(self) -> &'static str {
        ["none", "small", "medium", "large"][self as usize]
    }
}

/// Validated answers. Build them with [`parse_answers`]: the serde derives are for storage and do not check ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    pub objective: Objective,
    pub horizon_years: u32,
    pub loss_tolerance: LossTolerance,
    pub investment_experience_years: u32,
    pub knows_complex_products: bool,
    pub annual_income: Decimal,
    pub liquid_net_worth: Decimal,
    pub emergency_fund_months: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("answer `{0}` is missing")]
    Missing(String),
    #[error("answer `{field}` is out of range: {reason}")]
    OutOfRange { field: String, reason: String },
    #[error("unknown answer `{0}`")]
    Unknown(String),
    #[error("answer `{field}` has the wrong type: {reason}")]
    WrongType { field: String, reason: String },
}

impl AnswerError {
    /// The offending answer (`answers` when the whole value is not an object).
    pub fn field(&self) -> &str {
        match self {
            AnswerError::Missing(f) | AnswerError::Unknown(f) => f,
            AnswerError::OutOfRange { field, .. } | AnswerError::WrongType { field, .. } => field,
        }
    }
}

fn out_of_range(field: &str, reason: impl Into<String>) -> AnswerError {
    let (field, reason) = (field.to_owned(), reason.into());
    AnswerError::OutOfRange { field, reason }
}

fn wrong_type(field: &str, reason: impl Into<String>) -> AnswerError {
    let (field, reason) = (field.to_owned(), reason.into());
    AnswerError::WrongType { field, reason }
}

/// Parses the `answers` JSON object strictly: every answer present (`null` counts as missing), in
/// range, of the right JSON type, and no unknown names. Integers must be JSON integers (`3`, not `3.0`
/// or `"3"`); amounts must be strings of plain digits with at most 2 decimal places (`"52000.00"`).
/// Unknown names are reported first, then the answers in [`ANSWER_NAMES`] order.
pub fn parse_answers(v: &Value) -> Result<Answers, AnswerError> {
    let obj = v.as_object().ok_or_else(|| wrong_type("answers", "expected a JSON object"))?;
    if let Some(name) = obj.keys().find(|k| !ANSWER_NAMES.contains(&k.as_str())) {
        return Err(AnswerError::Unknown(name.clone()));
    }
    Ok(Answers {
        objective: choice(obj, "objective", &Objective::ALL, Objective::as_str)?,
        horizon_years: whole(obj, "horizon_years", MAX_HORIZON_YEARS)?,
        loss_tolerance: choice(obj, "loss_tolerance", &LossTolerance::ALL, LossTolerance::as_str)?,
        investment_experience_years: whole(obj, "investment_experience_years", MAX_EXPERIENCE_YEARS)?,
        knows_complex_products: get(obj, "knows_complex_products")?
            .as_bool()
            .ok_or_else(|| wrong_type("knows_complex_products", "expected a boolean"))?,
        annual_income: money(obj, "annual_income")?,
        liquid_net_worth: money(obj, "liquid_net_worth")?,
        emergency_fund_months: whole(obj, "emergency_fund_months", MAX_EMERGENCY_FUND_MONTHS)?,
    })
}

fn get<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a Value, AnswerError> {
    obj.get(field).filter(|v| !v.is_null()).ok_or_else(|| AnswerError::Missing(field.to_owned()))
}

fn choice<T: Copy>(obj: &Map<String, Value>, field: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, AnswerError> {
    let expected = format!("expected one of {}", all.iter().map(|&t| name(t)).collect::<Vec<_>>().join(", "));
    let s = get(obj, field)?.as_str().ok_or_else(|| wrong_type(field, &*expected))?;
    all.iter().copied().find(|&t| name(t) == s).ok_or_else(|| out_of_range(field, expected))
}

fn whole(obj: &Map<String, Value>, field: &str, max: u32) -> Result<u32, AnswerError> {
    let v = get(obj, field)?;
    let range = || out_of_range(field, format!("must be a whole number from 0 to {max}"));
    match v.as_u64() {
        Some(n) => u32::try_from(n).ok().filter(|&n| n <= max).ok_or_else(range),
        None if v.is_i64() => Err(range()),
        None => Err(wrong_type(field, "expected a whole JSON number")),
    }
}

fn money(obj: &Map<String, Value>, field: &str) -> Result<Decimal, AnswerError> {
    let expected = "expected a decimal string such as \"52000.00\"";
    let s = get(obj, field)?.as_str().ok_or_else(|| wrong_type(field, expected))?;
    let (negative, body) = s.strip_prefix('-').map_or((false, s), |rest| (true, rest));
    let (int, frac) = body.split_once('.').unwrap_or((body, "0"));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(wrong_type(field, format!("{expected}, not {s:?}")));
    }
    if negative {
        return Err(out_of_range(field, "must not be negative"));
    }
    if frac.len() > 2 {
        return Err(out_of_range(field, "at most 2 decimal places"));
    }
    let too_big = || out_of_range(field, format!("must not exceed {MAX_AMOUNT}"));
    if int.trim_start_matches('0').len() > 13 {
        return Err(too_big());
    }
    let d = Decimal::from_str(s).map_err(|e| wrong_type(field, e.to_string()))?;
    if d > MAX_AMOUNT {
        return Err(too_big());
    }
    Ok(d)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskProfile {
    /// 1..=7.
    pub risk_score: u8,
    pub risk_band: RiskBand,
    pub complex_products_allowed: bool,
}

/// Scores 1–2 conservative, 3 moderately conservative, 4 balanced, 5–6 growth, 7 aggressive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskBand {
    Conservative,
    ModeratelyConservative,
    Balanced,
    Growth,
    Aggressive,
}

impl RiskBand {
    pub fn as_str(self) -> &'static str {
        ["conservative", "moderately_conservative", "balanced", "growth", "aggressive"][self as usize]
    }

    /// The band of a score; scores below 1 count as 1 and above 7 as 7.
    pub fn of_score(score: u8) -> RiskBand {
        match score {
            0..=2 => RiskBand::Conservative,
            3 => RiskBand::ModeratelyConservative,
            4 => RiskBand::Balanced,
            5 | 6 => RiskBand::Growth,
            _ => RiskBand::Aggressive,
        }
    }
}

/// The four dimensions of a score, each 1..=7 (7 for a cap means "no cap"); the score is their minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub willingness: u8,
    pub horizon_cap: u8,
    pub capacity_cap: u8,
    pub experience_cap: u8,
}

impl Breakdown {
    pub fn score(&self) -> u8 {
        let dimensions = [self.willingness, self.horizon_cap, self.capacity_cap, self.experience_cap];
        dimensions.into_iter().fold(NO_CAP, u8::min).clamp(1, 7)
    }
}

fn tier<T: PartialOrd + Copy>(value: T, caps: &[(T, u8)]) -> u8 {
    caps.iter().find(|(below, _)| value < *below).map_or(NO_CAP, |&(_, cap)| cap)
}

/// Scores each dimension (see the module docs).
pub fn breakdown(a: &Answers) -> Breakdown {
    let objective = 1 + 2 * a.objective as u8;
    let tolerance = 1 + 2 * a.loss_tolerance as u8;
    let (low, high) = (objective.min(tolerance), objective.max(tolerance));
    let no_income = a.annual_income.is_zero() && a.liquid_net_worth < NO_INCOME_MIN_NET_WORTH;
    let no_income_cap = if no_income { NO_INCOME_CAP } else { NO_CAP };
    Breakdown {
        willingness: low + u8::from(high > low),
        horizon_cap: tier(a.horizon_years, &HORIZON_CAPS),
        capacity_cap: tier(a.emergency_fund_months, &EMERGENCY_FUND_CAPS)
            .min(no_income_cap)
            .min(tier(a.liquid_net_worth + a.annual_income, &RESOURCE_CAPS)),
        experience_cap: tier(a.investment_experience_years, &EXPERIENCE_CAPS),
    }
}

/// The client's risk profile under [`MODEL_VERSION`].
pub fn assess(a: &Answers) -> RiskProfile {
    let b = breakdown(a);
    let risk_score = b.score();
    RiskProfile {
        risk_score,
        risk_band: RiskBand::of_score(risk_score),
        complex_products_allowed: a.knows_complex_products
            && a.investment_experience_years >= COMPLEX_MIN_EXPERIENCE_YEARS
            && b.capacity_cap >= COMPLEX_MIN_CAPACITY_CAP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The typical 35-year-old saver.
    fn valid() -> Value {
        json!({"objective": "growth", "horizon_years": 20, "loss_tolerance": "medium", "investment_experience_years": 5,
               "knows_complex_products": false, "annual_income": "52000.00", "liquid_net_worth": "20000.00", "emergency_fund_months": 6})
    }

    fn with(field: &str, v: Value) -> Result<Answers, AnswerError> {
        let mut body = valid();
        body[field] = v;
        parse_answers(&body)
    }

    /// [`valid`] with some answers changed.
    fn answers(changes: &Value) -> Answers {
        let mut body = valid();
        changes.as_object().unwrap().iter().for_each(|(k, v)| body[k] = v.clone());
        parse_answers(&body).unwrap()
    }

    fn speculator() -> Answers {
        let changes = json!({"objective": "speculation", "horizon_years": 15, "loss_tolerance": "large", "investment_experience_years": 12,
                             "knows_complex_products": true, "annual_income": "150000.00", "liquid_net_worth": "500000.00", "emergency_fund_months": 12});
        answers(&changes)
    }

    /// A copy of `a` with one change.
    fn but(a: &Answers, change: impl FnOnce(&mut Answers)) -> Answers {
        let mut a = a.clone();
        change(&mut a);
        a
    }

    fn summary(a: &Answers) -> (u8, RiskBand, bool) {
        let p = assess(a);
        (p.risk_score, p.risk_band, p.complex_products_allowed)
    }

    #[test]
    fn parses_a_complete_object() {
        let a = parse_answers(&valid()).unwrap();
        assert_eq!(a, serde_json::from_value::<Answers>(valid()).unwrap());
        assert_eq!((a.objective, a.loss_tolerance, a.horizon_years), (Objective::Growth, LossTolerance::Medium, 20));
        assert_eq!(
            (a.annual_income, a.annual_income.to_string()),
            (Decimal::new(5_200_000, 2), "52000.00".to_owned())
        );
        assert_eq!(serde_json::from_value::<Answers>(serde_json::to_value(&a).unwrap()).unwrap(), a);
        for (field, v) in [("horizon_years", json!(50)), ("emergency_fund_months", json!(0)), ("annual_income", json!("0"))] {
            assert!(with(field, v.clone()).is_ok(), "{field} = {v}");
        }
        assert_eq!(with("liquid_net_worth", json!("1000000000000.00")).unwrap().liquid_net_worth, MAX_AMOUNT);
        assert_eq!(with("liquid_net_worth", json!("0.5")).unwrap().liquid_net_worth, Decimal::new(5, 1));
    }

    #[test]
    fn each_missing_answer_is_named() {
        for name in ANSWER_NAMES {
            let mut body = valid();
            body.as_object_mut().unwrap().remove(name);
            assert_eq!(parse_answers(&body), Err(AnswerError::Missing(name.to_owned())));
            assert_eq!(with(name, Value::Null), Err(AnswerError::Missing(name.to_owned())));
        }
    }

    #[test]
    fn bad_values_name_the_answer() {
        #[rustfmt::skip]
        let cases = [
            ("horizon_years", json!(51), false), ("investment_experience_years", json!(81), false), ("emergency_fund_months", json!(121), false),
            ("horizon_years", json!(-1), false), ("emergency_fund_months", json!(u64::MAX), false), ("annual_income", json!("-1.00"), false),
            ("annual_income", json!("1.005"), false), ("liquid_net_worth", json!("1000000000000.01"), false),
            ("liquid_net_worth", json!("99999999999999999999999999999"), false), ("objective", json!("yolo"), false), ("loss_tolerance", json!("huge"), false),
            ("annual_income", json!("abc"), true), ("annual_income", json!(""), true), ("annual_income", json!("1e5"), true),
            ("annual_income", json!(" 5"), true), ("annual_income", json!("5."), true), ("annual_income", json!(".5"), true),
            ("annual_income", json!("1_000"), true), ("annual_income", json!("+5"), true), ("annual_income", json!(52000), true),
            ("liquid_net_worth", json!(1.5), true), ("loss_tolerance", json!(5), true), ("objective", json!(["growth"]), true),
            ("horizon_years", json!("3"), true), ("horizon_years", json!(3.5), true), ("emergency_fund_months", json!(6.0), true),
            ("knows_complex_products", json!("true"), true), ("knows_complex_products", json!(1), true),
        ];
        for (field, v, wrong_type) in cases {
            let err = with(field, v.clone()).unwrap_err();
            assert_eq!(err.field(), field, "{field} = {v}: {err}");
            assert_eq!(matches!(err, AnswerError::WrongType { .. }), wrong_type, "{field} = {v}: {err}");
            assert_eq!(matches!(err, AnswerError::OutOfRange { .. }), !wrong_type, "{field} = {v}: {err}");
        }
    }

    #[test]
    fn unknown_answers_and_non_objects_are_rejected() {
        assert_eq!(with("favourite_colour", json!("blue")), Err(AnswerError::Unknown("favourite_colour".into())));
        assert_eq!(parse_answers(&json!([1])).unwrap_err().field(), "answers");
        assert_eq!(AnswerError::Missing("objective".into()).to_string(), "answer `objective` is missing");
        let expected = "answer `horizon_years` is out of range: must be a whole number from 0 to 50";
        assert_eq!(with("horizon_years", json!(51)).unwrap_err().to_string(), expected);
    }

    #[test]
    fn cautious_retiree_is_conservative() {
        let changes = json!({"objective": "preservation", "horizon_years": 3, "loss_tolerance": "none", "investment_experience_years": 30,
                             "annual_income": "24000.00", "liquid_net_worth": "300000.00", "emergency_fund_months": 24});
        let retiree = answers(&changes);
        assert_eq!(summary(&retiree), (1, RiskBand::Conservative, false));
        let short = but(&retiree, |a| {
            (a.objective, a.loss_tolerance, a.horizon_years) = (Objective::Income, LossTolerance::Small, 1)
        });
        assert_eq!(summary(&short), (2, RiskBand::Conservative, false));
    }

    #[test]
    fn typical_saver_is_growth() {
        let profile = serde_json::to_value(assess(&parse_answers(&valid()).unwrap())).unwrap();
        assert_eq!(profile, json!({"risk_score": 5, "risk_band": "growth", "complex_products_allowed": false}));
    }

    #[test]
    fn experienced_speculator_is_aggressive() {
        assert_eq!(summary(&speculator()), (7, RiskBand::Aggressive, true));
        let b = breakdown(&speculator());
        assert_eq!((b.willingness, b.horizon_cap, b.capacity_cap, b.experience_cap), (7, 7, 7, 7));
    }

    #[test]
    fn caps_bind() {
        let s = speculator();
        let thin_buffer = but(&s, |a| a.emergency_fund_months = 1);
        assert_eq!(summary(&thin_buffer), (3, RiskBand::ModeratelyConservative, false));
        assert_eq!(breakdown(&thin_buffer).capacity_cap, 3);
        assert_eq!(summary(&but(&s, |a| a.emergency_fund_months = 4)), (6, RiskBand::Growth, true));
        for (h, cap) in [(0, 2), (1, 2), (4, 4), (9, 6), (10, 7)] {
            assert_eq!(assess(&but(&s, |a| a.horizon_years = h)).risk_score, cap, "horizon {h}");
        }
        for (exp, cap, complex) in [(0, 4, false), (1, 5, false), (2, 6, true), (4, 6, true), (5, 7, true)] {
            let got = summary(&but(&s, |a| a.investment_experience_years = exp));
            assert_eq!(got, (cap, RiskBand::of_score(cap), complex), "experience {exp}");
        }
        let wealth = |income: &str, nw: &str| but(&s, |a| (a.annual_income, a.liquid_net_worth) = (income.parse().unwrap(), nw.parse().unwrap()));
        assert_eq!(summary(&wealth("0", "24999.99")), (2, RiskBand::Conservative, false));
        assert_eq!(summary(&wealth("0.01", "24999.99")), (5, RiskBand::Growth, true));
        assert_eq!(summary(&wealth("30000", "5000")), (5, RiskBand::Growth, true));
        assert_eq!(summary(&wealth("60000", "0")), (6, RiskBand::Growth, true));
        assert_eq!(summary(&wealth("5000", "4999.99")), (3, RiskBand::ModeratelyConservative, false));
        assert_eq!(summary(&but(&s, |a| a.objective = Objective::Growth)), (6, RiskBand::Growth, true));
        assert_eq!(summary(&but(&s, |a| a.knows_complex_products = false)), (7, RiskBand::Aggressive, false));
    }

    #[test]
    fn bands_cover_every_score() {
        use RiskBand::*;
        let expected = [Conservative, Conservative, ModeratelyConservative, Balanced, Growth, Growth, Aggressive];
        for (score, band) in (1..=7).zip(expected) {
            assert_eq!(RiskBand::of_score(score), band, "score {score}");
            assert_eq!(serde_json::to_value(band).unwrap(), json!(band.as_str()));
        }
        assert_eq!((RiskBand::of_score(0), RiskBand::of_score(8)), (Conservative, Aggressive));
    }

    /// Exhaustive over the enums and the tier boundaries of every number: raising any single answer to the next grid
    /// value never lowers the score nor withdraws complex products; the documented invariants hold at every point.
    #[test]
    fn monotone_over_a_grid() {
        let (hy, exp, ef) = ([0, 1, 2, 4, 5, 9, 10, 50], [0, 1, 2, 4, 5, 80], [0, 2, 3, 5, 6, 120]);
        let amounts = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect::<Vec<Decimal>>();
        let income = amounts(&["0", "0.01", "9999.99", "52000.00", "1000000000000"]);
        let nw = amounts(&["0", "9999.99", "24999.99", "49999.99", "50000", "100000", "1000000000000"]);
        let lens = [4, hy.len(), 4, exp.len(), 2, income.len(), nw.len(), ef.len()];
        // Grid points in mixed-radix order: point `n` has index `(n / stride[d]) % lens[d]` along dimension `d`.
        let stride: Vec<usize> = (0..8).map(|d| lens[d + 1..].iter().product()).collect();
        let total = stride[0] * lens[0];
        let at = |n: usize, d: usize| (n / stride[d]) % lens[d];
        let base = parse_answers(&valid()).unwrap();
        let results: Vec<(u8, bool)> = (0..total)
            .map(|n| {
                let (o, l) = (Objective::ALL[at(n, 0)], LossTolerance::ALL[at(n, 2)]);
                let a = but(&base, |a| {
                    (a.objective, a.horizon_years, a.loss_tolerance, a.investment_experience_years) = (o, hy[at(n, 1)], l, exp[at(n, 3)]);
                    (a.knows_complex_products, a.emergency_fund_months) = (at(n, 4) == 1, ef[at(n, 7)]);
                    (a.annual_income, a.liquid_net_worth) = (income[at(n, 5)], nw[at(n, 6)]);
                });
                let p = assess(&a);
                assert!((1..=7).contains(&p.risk_score) && p.risk_band == RiskBand::of_score(p.risk_score), "{a:?}");
                assert!(p.risk_score <= 2 || (o != Objective::Preservation && l != LossTolerance::None), "{a:?}");
                assert!(!p.complex_products_allowed || a.knows_complex_products, "{a:?}");
                (p.risk_score, p.complex_products_allowed)
            })
            .collect();
        assert!(results.iter().any(|r| r.0 == 7) && results.iter().any(|r| r.0 == 1));
        for n in 0..total {
            for d in (0..8).filter(|&d| at(n, d) + 1 < lens[d]) {
                let (before, after) = (results[n], results[n + stride[d]]);
                let monotone = after.0 >= before.0 && after.1 >= before.1;
                assert!(monotone, "raising {} at point {n}: {before:?} -> {after:?}", ANSWER_NAMES[d]);
            }
        }
    }
}
