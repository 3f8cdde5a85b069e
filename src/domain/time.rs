//! Time as plain numbers: milliseconds since the Unix epoch, UTC.
//!
//! The domain never reads a clock; the driver passes `now` in. Formatting to RFC 3339 lives here
//! (civil-from-days, Howard Hinnant's algorithm) so that simulated output is byte-identical to
//! production output and no date crate is needed in the core.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Timestamp(pub i64);

pub const MS_PER_SECOND: i64 = 1_000;
pub const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
pub const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
pub const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
    /// Days since the epoch (floor), used for daily buckets.
    pub fn day_index(self) -> i64 {
        self.0.div_euclid(MS_PER_DAY)
    }
    /// RFC 3339 with millisecond precision, always UTC (`2026-11-22T01:40:10.123Z`).
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let h = ms_of_day / MS_PER_HOUR;
        let mi = (ms_of_day % MS_PER_HOUR) / MS_PER_MINUTE;
        let s = (ms_of_day % MS_PER_MINUTE) / MS_PER_SECOND;
        let ms = ms_of_day % MS_PER_SECOND;
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
    /// Parses an RFC 3339 time: `YYYY-MM-DDTHH:MM:SS[.fraction]` and `Z` or an offset
    /// `±HH:MM` (`T` and `Z` in either case); the fraction is kept to the millisecond. A leap
    /// second (`:60`) is refused.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let (s, offset_ms) = Self::split_offset(s)?;
        let b = s.as_bytes();
        if b.len() < 19 || !matches!(b[10], b'T' | b't') {
            return None;
        }
        let date = Date::parse(&s[..10])?;
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = s.get(r)?;
            if !t.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        let frac = &s[19..];
        let ms = if frac.is_empty() {
            0
        } else {
            let digits = frac.strip_prefix('.')?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{digits:0<3}");
            padded[..3].parse::<i64>().ok()?
        };
        Some(Timestamp(
            date.days_since_epoch() * MS_PER_DAY + h * MS_PER_HOUR + mi * MS_PER_MINUTE + sec * MS_PER_SECOND + ms - offset_ms,
        ))
    }

    /// The time without its offset, and the offset in ms east of UTC.
    fn split_offset(s: &str) -> Option<(&str, i64)> {
        if let Some(rest) = s.strip_suffix(['Z', 'z']) {
            return Some((rest, 0));
        }
        let b = s.as_bytes();
        let n = b.len();
        if n < 6 || !matches!(b[n - 6], b'+' | b'-') || b[n - 3] != b':' {
            return None;
        }
        let digits = |t: &str| -> Option<i64> { t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok()).flatten() };
        let (h, m) = (digits(&s[n - 5..n - 3])?, digits(&s[n - 2..])?);
        if h > 23 || m > 59 {
            return None;
        }
        let sign = if b[n - 6] == b'-' { -1 } else { 1 };
        Some((&s[..n - 6], sign * (h * MS_PER_HOUR + m * MS_PER_MINUTE)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A calendar date (used for dates of birth and daily statements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Parses `YYYY-MM-DD`, rejecting impossible dates such as `2023-02-30`.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let all_digits = |r: &str| r.bytes().all(|c| c.is_ascii_digit());
        let (ys, ms, ds) = (&s[0..4], &s[5..7], &s[8..10]);
        if !all_digits(ys) || !all_digits(ms) || !all_digits(ds) {
            return None;
        }
        let year: i32 = ys.parse().ok()?;
        let month: u8 = ms.parse().ok()?;
        let day: u8 = ds.parse().ok()?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }
    pub fn days_since_epoch(self) -> i64 {
        days_from_civil(self.year as i64, self.month as i64, self.day as i64)
    }
    pub fn from_timestamp(ts: Timestamp) -> Date {
        let (y, m, d) = civil_from_days(ts.0.div_euclid(MS_PER_DAY));
        Date {
            year: y as i32,
            month: m as u8,
            day: d as u8,
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp(1_795_310_410_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2026-11-22T01:20:10.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::parse_rfc3339("2026-11-22T01:20:10Z"), Some(Timestamp(1_795_310_410_000)));
        assert_eq!(Timestamp::parse_rfc3339("2026-11-22 01:20:10Z"), None);
        // Offsets and lower case are RFC 3339 too: each of these is the same instant.
        let at = Some(Timestamp(1_795_310_410_000));
        for s in [
            "2026-11-22T01:20:10+00:00",
            "2026-11-22t01:20:10z",
            "2026-11-22T02:50:10+01:30",
            "2026-11-21T20:20:10-05:00",
            "2026-11-22T01:20:10.000-00:00",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(s), at, "{s}");
        }
        for s in [
            "2026-11-22T01:20:10+24:00",
            "2026-11-22T01:20:10+0100",
            "2026-11-22T01:20:10",
            "2026-11-22T01:20:10+01:6x",
            "2026-11-22T01:20:60Z",
            "2026-11-22T01:20:1éZ",
            "é026-11-22T01:20:10Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn dates_are_validated() {
        assert!(Date::parse("2024-02-29").is_some());
        assert!(Date::parse("2023-02-29").is_none());
        assert!(Date::parse("1990-13-01").is_none());
        assert!(Date::parse("1990-1-01").is_none());
        assert_eq!(Date::parse("1970-01-02").unwrap().days_since_epoch(), 1);
    }
}
