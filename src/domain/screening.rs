//! Sanctions screening of a person (full name + optional date of birth) against a list in the
//! OFAC SDN `sdn.csv` layout. Pure and deterministic: no hashing containers, clocks, threads or randomness.
//!
//! Pipeline: both sides are normalised ([`normalise_name`]: transliteration to ASCII, lower-case, punctuation →
//! separators, honorifics/particles dropped, `al`/`el` merged into the next token), then phonetically folded
//! (`kh→h`, `ue→u`, `ee→i`, `y→i`, double letters, …). Every list name variant (primary name and each
//! a.k.a./f.k.a./n.k.a.) is aligned one-to-one with the user's tokens (greedy on the best token similarity, so
//! order does not matter) and scored in `[0, 1]`; the DOB then decides the status (see [`decide`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Two folded tokens are "the same token" at or above this similarity. It sits above
/// Jaro-Winkler("kovalev", "kovalenko") ≈ 0.905, so different surnames sharing a long prefix do not match.
pub const TOKEN_MATCH_MIN: f64 = 0.92;
/// Similarity given to tokens (≥ 4 letters) whose vowel skeletons agree (Khaled/Khalid, Dmitro/Dmitri, Hosseini/Husseini):
/// high enough that one such variant plus a missing middle name still reaches [`MATCH_THRESHOLD`] (0.94 - 0.03 ≥ 0.92).
pub const SKELETON_SIM: f64 = 0.94;
/// Strong name hit: with an agreeing DOB → `Match`; DOB unknown or same year only → `PotentialMatch`.
pub const MATCH_THRESHOLD: f64 = 0.92;
/// Lower edge of the review band `[REVIEW_THRESHOLD, MATCH_THRESHOLD)`: `PotentialMatch` only if the DOB agrees.
pub const REVIEW_THRESHOLD: f64 = 0.85;
/// Normalised-identical names stay `PotentialMatch` even when the DOB year clearly disagrees (list DOBs can be wrong).
/// Reaching it needs every surname / first-given token identical after folding (a middle-name variant or a one-letter
/// slip in a long token at most): one skeleton variant already gives (1 + 0.94) / 2 = 0.97.
pub const IDENTICAL_THRESHOLD: f64 = 0.98;
/// Non-individual entries (entity, vessel, aircraft) need this score and are never more than `PotentialMatch` for a person.
pub const ENTITY_THRESHOLD: f64 = 0.97;
/// Ceiling (inside the review band) for incomplete evidence: part of a compound surname missing, only a second given
/// name matched, or fewer than [`MIN_PARTIAL_CHARS`] matched letters while some list tokens are missing.
pub const PARTIAL_CAP: f64 = 0.88;
/// A partial name must rest on at least this many matched letters ("Kim Song" has 7 of "KIM, Song Chol"; "Wei Zhang" 8).
pub const MIN_PARTIAL_CHARS: usize = 8;
/// Weight of a matched middle name / legal-form token; surnames and the first given name weigh 1.
pub const OPTIONAL_WEIGHT: f64 = 0.5;
/// Penalty per list middle name (or legal form) the user did not give, in total at most [`MAX_MISSING_PENALTY`].
pub const MISSING_OPTIONAL_PENALTY: f64 = 0.03;
pub const MAX_MISSING_PENALTY: f64 = 0.06;
/// Penalty per user token that matches nothing in the list name (conflicting information).
pub const EXTRA_TOKEN_PENALTY: f64 = 0.06;
/// Factor when a token matches only after dropping a merged `al`/`el` prefix ("Rashidi" vs "Alrashidi").
pub const PREFIX_STRIP_FACTOR: f64 = 0.96;

const HONORIFICS: &[&str] = &["mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "jr", "sr"];
const PARTICLES: &[&str] = &["de", "del", "della", "der", "den", "van", "von", "dos", "das", "du"];
const MERGED_PREFIXES: &[&str] = &["al", "el"];
const LEGAL_FORMS: &str = "ltd limited llc llp inc co corp company plc fze fzco gmbh sa ag jsc ooo bv";
/// Phonetic folds `from=to`, applied in this order to every normalised token (both sides), then double letters collapse.
const FOLDS: &str = "sch=sh kh=h ph=f ck=k x=ks eye=ee ue=u oe=o ae=a ou=u oo=u ee=i y=i";
/// Single-letter transliterations: each group is the ASCII target followed by the letters mapping to it.
const TRANSLIT_1: &str = "aàáâãäåāăąа bб cçćĉċč dďđðд eèéêëēĕėęěеёэ fф gĝğġģгґ hĥħ iìíîïĩīĭįıиі jĵ kķк lĺļľŀłл mм \
                          nñńņňн oòóôõöøōŏőо pп rŕřŗр sśŝşšșс tţťŧțт uùúûüũūŭůűųу vв wŵ yýÿŷйы zźżžз";
const TRANSLIT_N: &str = "æ=ae œ=oe ß=ss þ=th ж=zh х=kh ц=ts ч=ch ш=sh щ=shch ю=yu я=ya ї=yi є=ye ъ= ь=";
const ALIAS_MARKERS: &[&str] = &["a.k.a. '", "f.k.a. '", "n.k.a. '"];
const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DobSpec {
    Exact { year: i32, month: u32, day: u32 },
    Year(i32),
    YearRange(i32, i32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListEntry {
    pub ent_num: String,
    pub name: String,
    pub sdn_type: String,
    pub program: String,
    pub aliases: Vec<String>,
    pub dobs: Vec<DobSpec>,
}

#[derive(thiserror::Error, Debug, PartialEq)]
pub enum ListError {
    #[error("sanctions list line {line}: {reason}")]
    Line { line: usize, reason: String },
    /// A list without entries would clear everyone; it is almost certainly a broken download.
    #[error("sanctions list contains no entries")]
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreeningStatus {
    Clear,
    PotentialMatch,
    Match,
}

/// `best_score` is the name score of the reported entry (when `Clear`: the best name score seen anywhere).
/// `matched_entry` (ent_num) and `matched_name` (the primary name or alias that scored) are set only when not `Clear`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScreeningResult {
    pub status: ScreeningStatus,
    pub best_score: f64,
    pub matched_entry: Option<String>,
    pub matched_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Surname,
    FirstGiven,
    OtherGiven,
    Core,
    Optional,
}

/// One list name (primary or alias) prepared for comparison: folded tokens with their roles.
#[derive(Clone, Debug)]
struct Variant {
    display: String,
    tokens: Vec<(String, Role)>,
}

/// Ordered best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DobAgreement {
    Agree,
    Partial, // same year, different month/day
    Unknown,
    Disagree,
}

#[derive(Clone, Debug)]
pub struct SanctionsList {
    entries: Vec<ListEntry>,
    variants: Vec<Vec<Variant>>,
}

impl SanctionsList {
    /// Parses the CSV text. A malformed line is an error naming its (1-based) line number (never silently skipped).
    /// Blank lines, CRLF, a leading BOM and trailing `\x1a` are tolerated; duplicate ent_nums are rejected.
    pub fn parse(csv: &str) -> Result<SanctionsList, ListError> {
        let (mut entries, mut seen) = (Vec::new(), BTreeSet::new());
        for (idx, raw) in csv.strip_prefix('\u{feff}').unwrap_or(csv).split('\n').enumerate() {
            let err = move |reason: String| ListError::Line { line: idx + 1, reason };
            let line = raw.trim_end_matches(['\r', '\x1a']);
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<String> = split_csv_line(line).map_err(err)?.iter().map(|s| clean_field(s)).collect();
            let n = fields.len();
            let Ok([ent_num, name, sdn_type, program, _, _, _, _, _, _, _, remarks]) = <[String; 12]>::try_from(fields) else {
                return Err(err(format!("expected 12 columns, found {n}")));
            };
            if ent_num.is_empty() || !ent_num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(format!("ent_num {ent_num:?} is not numeric")));
            }
            if normalise_name(&name).is_empty() {
                return Err(err("empty SDN name".into()));
            }
            if !seen.insert(ent_num.clone()) {
                return Err(err(format!("duplicate ent_num {ent_num}")));
            }
            let (aliases, dobs) = (parse_aliases(&remarks), parse_dobs(&remarks));
            entries.push(ListEntry {
                ent_num,
                name,
                sdn_type,
                program,
                aliases,
                dobs,
            });
        }
        if entries.is_empty() {
            return Err(ListError::Empty);
        }
        let variants = entries.iter().map(build_variants).collect();
        Ok(SanctionsList { entries, variants })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[ListEntry] {
        &self.entries
    }

    /// Screens one person against every name variant. The highest status wins, then the higher score, then the
    /// earlier list entry. A name without usable letters yields `Clear` with score 0: callers must reject empty names.
    pub fn screen(&self, full_name: &str, date_of_birth: Option<(i32, u32, u32)>) -> ScreeningResult {
        let readings = readings(full_name);
        let mut best: Option<(ScreeningStatus, f64, &ListEntry, &Variant)> = None;
        for (entry, variants) in self.entries.iter().zip(&self.variants) {
            let individual = entry.sdn_type.eq_ignore_ascii_case("individual");
            let dob = dob_agreement(&entry.dobs, date_of_birth);
            for v in variants {
                let score = readings.iter().map(|user| score_variant(v, user)).fold(0.0, f64::max);
                let status = decide(individual, score, dob);
                if best.is_none_or(|(s, sc, ..)| (status, score) > (s, sc)) {
                    best = Some((status, score, entry, v));
                }
            }
        }
        let (mut status, mut best_score, mut hit) = match best {
            Some((status, score, e, v)) if status != ScreeningStatus::Clear => (status, score, Some((e.ent_num.clone(), v.display.clone()))),
            other => (ScreeningStatus::Clear, other.map_or(0.0, |b| b.1), None),
        };
        // A name in a script matched only through an approximate transliteration (beyond Latin
        // and Cyrillic: Arabic, Chinese, …) that found nothing is not cleared while a listed
        // person has the same date of birth: a compliance officer decides.
        if status == ScreeningStatus::Clear && approximate_script(full_name) {
            let same_birthday = self.entries.iter().find(|e| {
                e.sdn_type.eq_ignore_ascii_case("individual")
                    && date_of_birth.is_some_and(|(year, month, day)| e.dobs.contains(&DobSpec::Exact { year, month, day }))
            });
            if let Some(e) = same_birthday {
                (status, best_score, hit) = (
                    ScreeningStatus::PotentialMatch,
                    best_score.max(REVIEW_THRESHOLD),
                    Some((e.ent_num.clone(), e.name.clone())),
                );
            }
        }
        let (matched_entry, matched_name) = hit.unzip();
        ScreeningResult {
            status,
            best_score,
            matched_entry,
            matched_name,
        }
    }
}

/// Names of at most this many tokens are also read with two neighbouring tokens joined.
const JOIN_TOKENS_MAX: usize = 6;

/// The ways a user's name is read, folded: as written, and (for names of up to
/// [`JOIN_TOKENS_MAX`] tokens) with each pair of neighbouring tokens joined into one word, so
/// that "Wei Ming Zhang" meets a list's "ZHANG, Weiming" (the list side joins its given names).
fn readings(full_name: &str) -> Vec<Vec<String>> {
    let tokens = normalise_name(full_name);
    let fold = |t: &[String]| t.iter().map(|x| fold_token(x)).collect::<Vec<_>>();
    let mut out = vec![fold(&tokens)];
    if (2..=JOIN_TOKENS_MAX).contains(&tokens.len()) {
        for i in 0..tokens.len() - 1 {
            let mut joined = tokens.clone();
            let next = joined.remove(i + 1);
            joined[i].push_str(&next);
            out.push(fold(&joined));
        }
    }
    out
}

/// Decision table for individuals (non-individuals: `PotentialMatch` iff score ≥ [`ENTITY_THRESHOLD`], since a
/// person is rarely a company and a human must decide):
///
/// | name score              | DOB agrees¹    | DOB unknown / same year only | DOB year differs |
/// |-------------------------|----------------|------------------------------|------------------|
/// | ≥ 0.98 (identical)      | Match          | PotentialMatch               | PotentialMatch   |
/// | [0.92, 0.98)            | Match          | PotentialMatch               | Clear            |
/// | [0.85, 0.92) review     | PotentialMatch | Clear                        | Clear            |
/// | < 0.85                  | Clear          | Clear                        | Clear            |
///
/// ¹ exact date, or the year lies in a list `Year`/`YearRange` (`circa` widened by ±1 year).
fn decide(individual: bool, score: f64, dob: DobAgreement) -> ScreeningStatus {
    use DobAgreement::*;
    use ScreeningStatus::*;
    if !individual {
        return if score >= ENTITY_THRESHOLD { PotentialMatch } else { Clear };
    }
    match dob {
        Agree if score >= MATCH_THRESHOLD => Match,
        Agree if score >= REVIEW_THRESHOLD => PotentialMatch,
        Unknown | Partial if score >= MATCH_THRESHOLD => PotentialMatch,
        Disagree if score >= IDENTICAL_THRESHOLD => PotentialMatch,
        _ => Clear,
    }
}

fn dob_agreement(list: &[DobSpec], user: Option<(i32, u32, u32)>) -> DobAgreement {
    let Some((y, m, d)) = user else { return DobAgreement::Unknown };
    let agreement = |spec: &DobSpec| match *spec {
        DobSpec::Exact { year, month, day } if (year, month, day) == (y, m, d) => DobAgreement::Agree,
        DobSpec::Exact { year, .. } if year == y => DobAgreement::Partial,
        DobSpec::Year(year) if year == y => DobAgreement::Agree,
        DobSpec::YearRange(a, b) if (a..=b).contains(&y) => DobAgreement::Agree,
        _ => DobAgreement::Disagree,
    };
    list.iter().map(agreement).min().unwrap_or(DobAgreement::Unknown) // best agreement; no list DOB → unknown
}

/// Scores one list name variant against the user's folded tokens (see the consts for the ingredients).
fn score_variant(v: &Variant, user: &[String]) -> f64 {
    let mut pairs = Vec::new();
    for (i, (lt, _)) in v.tokens.iter().enumerate() {
        for (j, ut) in user.iter().enumerate() {
            let s = token_sim(lt, ut);
            if s >= TOKEN_MATCH_MIN {
                pairs.push((s, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut sim, mut used) = (vec![None; v.tokens.len()], vec![false; user.len()]);
    for (s, i, j) in pairs {
        if sim[i].is_none() && !used[j] {
            (sim[i], used[j]) = (Some(s), true);
        }
    }
    let count = |role: Role, hit: bool| v.tokens.iter().zip(&sim).filter(|((_, r), s)| *r == role && (!hit || s.is_some())).count();
    let partial_surname = (1..count(Role::Surname, false)).contains(&count(Role::Surname, true));
    let given_instead = count(Role::FirstGiven, false) > count(Role::FirstGiven, true) && count(Role::OtherGiven, true) > 0;
    let (mut num, mut den, mut missing, mut matched_chars) = (0.0, 0.0, 0.0, 0);
    for ((tok, role), s) in v.tokens.iter().zip(&sim) {
        matched_chars += s.map_or(0, |_| tok.len());
        match (role, s) {
            (Role::OtherGiven | Role::Optional, Some(s)) => (num, den) = (num + OPTIONAL_WEIGHT * s, den + OPTIONAL_WEIGHT),
            (Role::OtherGiven | Role::Optional, None) => missing += MISSING_OPTIONAL_PENALTY,
            (Role::Surname, None) if partial_surname => {}
            (Role::FirstGiven, None) if given_instead => {}
            (_, s) => (num, den) = (num + s.unwrap_or(0.0), den + 1.0),
        }
    }
    if den == 0.0 {
        return 0.0;
    }
    let extra = used.iter().filter(|u| !**u).count() as f64 * EXTRA_TOKEN_PENALTY;
    let mut score = num / den - f64::min(missing, MAX_MISSING_PENALTY) - extra;
    if partial_surname || given_instead || (sim.contains(&None) && matched_chars < MIN_PARTIAL_CHARS) {
        score = score.min(PARTIAL_CAP);
    }
    (score.clamp(0.0, 1.0) * 1e4).round() / 1e4 // fixed precision: stable threshold comparisons and audit output
}

/// Similarity of two folded tokens in `[0, 1]`: Jaro-Winkler, raised to [`SKELETON_SIM`] when the vowel skeletons
/// agree, and tried again without a merged `al`/`el` prefix that only one side has.
fn token_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let mut s = strsim::jaro_winkler(a, b);
    if a.len() >= 4 && b.len() >= 4 && skeleton(a) == skeleton(b) {
        s = s.max(SKELETON_SIM);
    }
    for (x, y) in [(a, b), (b, a)] {
        for p in MERGED_PREFIXES {
            if let Some(rest) = x.strip_prefix(p).filter(|r| r.len() >= 5 && !y.starts_with(p)) {
                s = s.max(PREFIX_STRIP_FACTOR * token_sim(rest, y));
            }
        }
    }
    s
}

/// First letter kept, then every run of vowels replaced by one `a`: "dmitro" and "dmitri" both give "dmatra".
fn skeleton(t: &str) -> String {
    let mut out = String::new();
    for (i, c) in t.chars().enumerate() {
        if i == 0 || !"aeiou".contains(c) {
            out.push(c);
        } else if !out.ends_with('a') || out.len() == 1 {
            out.push('a');
        }
    }
    out
}

/// Canonical phonetic folding of a normalised token (see [`FOLDS`]), then collapse of doubled letters.
fn fold_token(t: &str) -> String {
    let mut s = t.to_string();
    for (from, to) in FOLDS.split(' ').filter_map(|r| r.split_once('=')) {
        s = s.replace(from, to);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !out.ends_with(c) {
            out.push(c);
        }
    }
    out
}

/// Normalises a name into tokens: ASCII transliteration (Latin diacritics, ß, æ, ø, Cyrillic, combining marks; unknown
/// letters are kept as they are), lower-case, apostrophes removed, other punctuation and hyphens as separators,
/// honorifics and particles (von, de, …) dropped, a standalone `al`/`el` merged with the next token ("AL-RASHIDI" → "alrashidi").
pub fn normalise_name(s: &str) -> Vec<String> {
    let mut buf = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match c {
            '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{2bc}' => {}
            c if c.is_ascii_alphanumeric() => buf.push(c),
            c => match translit(c) {
                Some(t) => buf.push_str(t),
                // Other scripts (Arabic, Chinese, Greek, …): the `deunicode` transliteration,
                // a word per Chinese character.
                None if c.is_alphanumeric() => match deunicode::deunicode_char(c) {
                    Some(t) if t.bytes().any(|b| b.is_ascii_alphanumeric()) => {
                        buf.extend(t.chars().filter(char::is_ascii_alphanumeric).map(|x| x.to_ascii_lowercase()));
                        if t.ends_with(' ') {
                            buf.push(' ');
                        }
                    }
                    _ => buf.push(c),
                },
                None => buf.push(' '),
            },
        }
    }
    let raw: Vec<&str> = buf.split_whitespace().collect();
    let kept: Vec<&str> = raw.iter().copied().filter(|t| !HONORIFICS.contains(t) && !PARTICLES.contains(t)).collect();
    let kept = if kept.is_empty() { raw } else { kept };
    let mut out = Vec::with_capacity(kept.len());
    let mut i = 0;
    while i < kept.len() {
        let merge = MERGED_PREFIXES.contains(&kept[i]) && i + 1 < kept.len();
        out.push(if merge { format!("{}{}", kept[i], kept[i + 1]) } else { kept[i].to_string() });
        i += if merge { 2 } else { 1 };
    }
    out
}

/// True when the name has letters of a script the screening reads only through an approximate
/// transliteration (not Latin, not Cyrillic).
fn approximate_script(name: &str) -> bool {
    name.chars()
        .flat_map(char::to_lowercase)
        .any(|c| c.is_alphabetic() && !c.is_ascii() && translit(c).is_none())
}

fn translit(c: char) -> Option<&'static str> {
    if ('\u{300}'..='\u{36f}').contains(&c) {
        return Some(""); // combining diacritics (NFD input)
    }
    let multi = TRANSLIT_N.split(' ').find(|g| g.starts_with(c)).map(|g| &g[c.len_utf8() + 1..]);
    multi.or_else(|| TRANSLIT_1.split_whitespace().find(|g| g.chars().skip(1).any(|x| x == c)).map(|g| &g[..1]))
}

fn build_variants(e: &ListEntry) -> Vec<Variant> {
    let ind = e.sdn_type.eq_ignore_ascii_case("individual");
    std::iter::once(&e.name).chain(&e.aliases).flat_map(|n| build_variant(n, ind)).collect()
}

/// Individuals: "LAST, First Middle" → surname tokens, first given name, other given names (a compound surname is also
/// tried as one word: "Muellerbrandt"); without a comma the last token is the surname and the first the given name.
/// Other entries: every token is core except legal forms.
fn build_variant(name: &str, individual: bool) -> Vec<Variant> {
    let norm = |s: &str| normalise_name(s).iter().map(|t| fold_token(t)).collect::<Vec<_>>();
    let display = name.trim().to_string();
    let mut token_sets: Vec<Vec<(String, Role)>> = Vec::new();
    if !individual {
        let role = |t: &String| if LEGAL_FORMS.split(' ').any(|l| l == t) { Role::Optional } else { Role::Core };
        token_sets.push(normalise_name(name).iter().map(|t| (fold_token(t), role(t))).collect());
    } else {
        let (sur, given_raw) = match name.split_once(',') {
            Some((s, g)) => (norm(s), normalise_name(g)),
            None => {
                let mut all = normalise_name(name);
                let last = all.pop();
                (last.iter().map(|t| fold_token(t)).collect(), all)
            }
        };
        let given: Vec<String> = given_raw.iter().map(|t| fold_token(t)).collect();
        let person = |sur: Vec<String>, given: &[String]| {
            let role = |i| if i == 0 { Role::FirstGiven } else { Role::OtherGiven };
            let given = given.iter().enumerate().map(|(i, t)| (t.clone(), role(i)));
            sur.into_iter().map(|t| (t, Role::Surname)).chain(given).collect()
        };
        if sur.is_empty() || given.is_empty() {
            token_sets.push(sur.iter().chain(&given).map(|t| (t.clone(), Role::Core)).collect());
        } else {
            if sur.len() > 1 {
                token_sets.push(person(vec![sur.concat()], &given));
            }
            // Given names written as one word ("Wei Ming" as "Weiming").
            if given_raw.len() > 1 {
                token_sets.push(person(sur.clone(), &[fold_token(&given_raw.concat())]));
            }
            token_sets.push(person(sur, &given));
        }
    }
    token_sets
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|tokens| Variant {
            display: display.clone(),
            tokens,
        })
        .collect()
}

/// Splits one CSV record (RFC 4180 quoting with `""` escapes; sdn.csv has no embedded newlines).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let (mut fields, mut f, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        let col = fields.len() + 1;
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => f.push(chars.next().unwrap_or('"')),
            (true, '"') if matches!(chars.peek(), None | Some(',')) => quoted = false,
            (true, '"') => return Err(format!("text after closing quote (column {col})")),
            (false, '"') if f.is_empty() => quoted = true,
            (false, '"') => return Err(format!("stray quote in unquoted field (column {col})")),
            (false, ',') => fields.push(std::mem::take(&mut f)),
            (_, c) => f.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quoted field (column {})", fields.len() + 1));
    }
    fields.push(f);
    Ok(fields)
}

fn clean_field(s: &str) -> String {
    Some(s.trim()).filter(|t| *t != "-0-").unwrap_or_default().to_string()
}

/// Extracts `a.k.a. 'NAME'` / `f.k.a.` / `n.k.a.` in order. The closing quote is one not followed by a letter or digit
/// (so "O'BRIEN" survives); an unterminated alias runs to the next `;`.
fn parse_aliases(remarks: &str) -> Vec<String> {
    let (mut out, mut rest) = (Vec::new(), remarks);
    while let Some((pos, marker)) = ALIAS_MARKERS.iter().filter_map(|m| rest.find(m).map(|p| (p, m))).min() {
        let body = &rest[pos + marker.len()..];
        let close = body
            .char_indices()
            .find(|&(i, c)| c == '\'' && body[i + 1..].chars().next().is_none_or(|n| !n.is_alphanumeric()));
        let end = close.map_or_else(|| body.find(';').unwrap_or(body.len()), |(i, _)| i);
        if !body[..end].trim().is_empty() {
            out.push(body[..end].trim().to_string());
        }
        rest = body.get(end + 1..).unwrap_or("");
    }
    out
}

/// Reads `DOB …` / `alt. DOB …` segments (split on `;`): `14 Mar 1968` → Exact (an impossible day degrades to Year),
/// `1968` or `Mar 1968` → Year, `circa 1968` → YearRange(1967, 1969), `1968 to 1970` → YearRange. Unreadable DOB
/// text is ignored: an unknown DOB can only keep a strong name hit in review, never clear it.
fn parse_dobs(remarks: &str) -> Vec<DobSpec> {
    let year = |s: &str| s.split_whitespace().last()?.parse::<i32>().ok().filter(|y| (1000..=2999).contains(y));
    let month = |m: &str| MONTHS.iter().position(|x| m.get(..3).is_some_and(|p| x.eq_ignore_ascii_case(p)));
    let parse = |s: &str| -> Option<DobSpec> {
        if let Some(c) = s.strip_prefix("circa ") {
            return year(c).map(|y| DobSpec::YearRange(y - 1, y + 1));
        }
        if let Some((a, b)) = s.split_once(" to ") {
            let (a, b) = (year(a)?, year(b)?);
            return Some(DobSpec::YearRange(a.min(b), a.max(b)));
        }
        match s.split_whitespace().collect::<Vec<_>>()[..] {
            [y] => year(y).map(DobSpec::Year),
            [m, y] => month(m).and(year(y)).map(DobSpec::Year),
            [d, m, y] => {
                let (day, month, year) = (d.parse::<u32>().ok()?, month(m)? as u32 + 1, year(y)?);
                let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
                let max = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
                let exact = (1..=max).contains(&day);
                Some(if exact { DobSpec::Exact { year, month, day } } else { DobSpec::Year(year) })
            }
            _ => None,
        }
    };
    let segments = remarks.split(';').map(|seg| seg.trim().trim_end_matches('.'));
    segments
        .filter_map(|seg| parse(seg.strip_prefix("alt. ").unwrap_or(seg).strip_prefix("DOB ")?.trim()))
        .collect()
}

#[cfg(test)]
mod tests;
