//! Update windows: when automatic (registry-driven) updates may happen, e.g. `Mon-Fri 02:00-04:00 UTC`.
//!
//! Grammar (deliberately small):
//!
//! ```text
//! window   := [days " "] start "-" end " " zone
//! days     := "*" | day-item ("," day-item)*
//! day-item := day | day "-" day              (a range may wrap: Sat-Mon)
//! day      := Mon | Tue | Wed | Thu | Fri | Sat | Sun   (case-insensitive)
//! start    := HH:MM                          (00:00 ..= 23:59)
//! end      := HH:MM                          (00:00 ..= 24:00)
//! zone     := "UTC" | "Z" | ("+" | "-") HH:MM (a fixed offset; no named time zones, no DST)
//! ```
//!
//! Omitted days or `*` mean every day. When `end` is not after `start` the window wraps past midnight
//! and the part after midnight belongs to the start day: `Fri 22:00-02:00 UTC` covers Friday 22:00 to
//! Saturday 02:00.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Why a text is not an update window; each message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Nothing but whitespace.
    #[error("the window is empty")]
    Empty,
    /// One part only (the whole text).
    #[error(
        "\"{0}\" has no time zone: write it as `[DAYS] HH:MM-HH:MM UTC` (or an offset like +02:00)"
    )]
    NoZone(String),
    /// More than three parts (the whole text).
    #[error(
        "\"{0}\" has too many parts: expected `[DAYS] HH:MM-HH:MM ZONE`, e.g. `Mon-Fri 02:00-04:00 UTC`"
    )]
    TooManyParts(String),
    /// The times part has no `-`.
    #[error("\"{0}\" is not a time range: expected HH:MM-HH:MM")]
    NotARange(String),
    /// Start and end are the same time.
    #[error("\"{0}\" is empty: start and end are the same time")]
    EmptyRange(String),
    /// A day name that is not one.
    #[error("\"{0}\" is not a day: use Mon, Tue, Wed, Thu, Fri, Sat or Sun")]
    NotADay(String),
    /// `Mon,,Tue` (the whole days part).
    #[error("\"{0}\" has an empty day in its list")]
    EmptyDay(String),
    /// Not `HH:MM`.
    #[error("\"{0}\" is not a time: expected HH:MM (24-hour clock, e.g. 02:00)")]
    NotATime(String),
    /// Hours or minutes out of range.
    #[error("\"{0}\" is out of range: hours 00-23 (24:00 only as an end), minutes 00-59")]
    OutOfRange(String),
    /// Not `UTC`, `Z` or a fixed offset up to 14 hours.
    #[error(
        "\"{0}\" is not a supported time zone: use UTC or a fixed offset like +02:00 (named zones and daylight saving time are not supported)"
    )]
    Zone(String),
}

/// A parsed update window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit `i` set: day `i` (0 = Monday) may start a window.
    days: u8,
    /// Minutes after local midnight, `0..1440`.
    start: u32,
    /// Minutes after local midnight, `0..=1440`.
    end: u32,
    /// Seconds east of UTC.
    offset_seconds: i32,
}

impl Window {
    /// Parses `[DAYS] HH:MM-HH:MM ZONE`; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (days_text, times_text, zone_text) = match parts.as_slice() {
            [times, zone] => ("*", *times, *zone),
            [days, times, zone] => (*days, *times, *zone),
            [] => return Err(WindowError::Empty),
            [_] => return Err(WindowError::NoZone(text.to_owned())),
            _ => return Err(WindowError::TooManyParts(text.to_owned())),
        };
        let days = parse_days(days_text)?;
        let (start_text, end_text) = times_text
            .split_once('-')
            .ok_or_else(|| WindowError::NotARange(times_text.to_owned()))?;
        let start = parse_time(start_text, false)?;
        let end = parse_time(end_text, true)?;
        if start == end {
            return Err(WindowError::EmptyRange(times_text.to_owned()));
        }
        let offset_seconds = parse_zone(zone_text)?;
        Ok(Window {
            days,
            start,
            end,
            offset_seconds,
        })
    }

    /// Whether `at` falls inside the window (start inclusive, end exclusive).
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let Some(offset) = FixedOffset::east_opt(self.offset_seconds) else {
            return false;
        };
        let local = at.with_timezone(&offset);
        let day = local.weekday().num_days_from_monday();
        let minute = local.hour() * 60 + local.minute();
        let day_set = |d: u32| self.days & (1 << d) != 0;
        if self.start < self.end {
            day_set(day) && minute >= self.start && minute < self.end
        } else {
            // Wraps past midnight: the evening part belongs to today, the morning part to yesterday.
            (day_set(day) && minute >= self.start) || (day_set((day + 6) % 7) && minute < self.end)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != 0x7f {
            let names: Vec<&str> = (0..7)
                .filter(|d| self.days & (1 << d) != 0)
                .filter_map(|d| DAY_NAMES.get(d).copied())
                .collect();
            write!(f, "{} ", names.join(","))?;
        }
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02} ",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )?;
        if self.offset_seconds == 0 {
            f.write_str("UTC")
        } else {
            let sign = if self.offset_seconds < 0 { '-' } else { '+' };
            let abs = self.offset_seconds.unsigned_abs() / 60;
            write!(f, "{sign}{:02}:{:02}", abs / 60, abs % 60)
        }
    }
}

fn parse_day(text: &str) -> Result<u32, WindowError> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(text))
        .map(|p| p as u32)
        .ok_or_else(|| WindowError::NotADay(text.to_owned()))
}

fn parse_days(text: &str) -> Result<u8, WindowError> {
    if text == "*" {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(WindowError::EmptyDay(text.to_owned()));
        }
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (parse_day(from)?, parse_day(to)?);
                let mut d = from;
                loop {
                    days |= 1 << d;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << parse_day(item)?,
        }
    }
    Ok(days)
}

/// `HH:MM` as minutes after midnight; `24:00` only when `end`.
fn parse_time(text: &str, end: bool) -> Result<u32, WindowError> {
    let bad = || WindowError::NotATime(text.to_owned());
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
        return Err(WindowError::OutOfRange(text.to_owned()));
    }
    Ok(h * 60 + m)
}

fn parse_zone(text: &str) -> Result<i32, WindowError> {
    if text.eq_ignore_ascii_case("UTC") || text == "Z" {
        return Ok(0);
    }
    let bad = || WindowError::Zone(text.to_owned());
    let sign = match text.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let minutes = parse_time(text.get(1..).ok_or_else(bad)?, false).map_err(|_| bad())?;
    if minutes > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * (minutes as i32) * 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_default()
    }

    // 2024-06-03 is a Monday.
    #[test]
    fn weekday_range() {
        let w = Window::parse("Mon-Fri 02:00-04:00 UTC").unwrap();
        assert!(w.contains(at(2024, 6, 3, 2, 0)));
        assert!(w.contains(at(2024, 6, 7, 3, 59)));
        assert!(!w.contains(at(2024, 6, 7, 4, 0)));
        assert!(!w.contains(at(2024, 6, 3, 1, 59)));
        assert!(!w.contains(at(2024, 6, 8, 3, 0)), "Saturday");
        assert_eq!(w.to_string(), "Mon,Tue,Wed,Thu,Fri 02:00-04:00 UTC");
    }

    #[test]
    fn list_and_every_day() {
        let w = Window::parse("Sat,Sun 00:00-06:00 UTC").unwrap();
        assert!(w.contains(at(2024, 6, 8, 5, 0)));
        assert!(w.contains(at(2024, 6, 9, 0, 0)));
        assert!(!w.contains(at(2024, 6, 10, 0, 0)));
        for text in ["01:00-02:00 UTC", "* 01:00-02:00 UTC"] {
            let w = Window::parse(text).unwrap();
            for d in 3..10 {
                assert!(w.contains(at(2024, 6, d, 1, 30)), "{text} day {d}");
                assert!(!w.contains(at(2024, 6, d, 2, 30)));
            }
        }
    }

    #[test]
    fn wraps_past_midnight_into_the_next_day() {
        let w = Window::parse("Fri 22:00-02:00 UTC").unwrap();
        assert!(w.contains(at(2024, 6, 7, 22, 0)), "Friday evening");
        assert!(
            w.contains(at(2024, 6, 8, 1, 59)),
            "Saturday morning belongs to Friday"
        );
        assert!(
            !w.contains(at(2024, 6, 7, 1, 0)),
            "Friday morning belongs to Thursday"
        );
        assert!(!w.contains(at(2024, 6, 8, 22, 30)), "Saturday evening");
    }

    #[test]
    fn wrapping_day_range_and_end_of_day() {
        let w = Window::parse("Sat-Mon 12:00-24:00 UTC").unwrap();
        assert!(w.contains(at(2024, 6, 3, 23, 59)), "Monday");
        assert!(w.contains(at(2024, 6, 8, 12, 0)), "Saturday");
        assert!(!w.contains(at(2024, 6, 4, 13, 0)), "Tuesday");
    }

    #[test]
    fn fixed_offsets() {
        let w = Window::parse("Mon 02:00-04:00 +02:00").unwrap();
        // 02:00+02:00 on Monday is Monday 00:00 UTC.
        assert!(w.contains(at(2024, 6, 3, 0, 0)));
        assert!(!w.contains(at(2024, 6, 3, 2, 0)));
        let w = Window::parse("Sun 23:00-23:30 -05:30").unwrap();
        assert!(
            w.contains(at(2024, 6, 10, 4, 45)),
            "Monday 04:45 UTC is Sunday 23:15 -05:30"
        );
        assert_eq!(w.to_string(), "Sun 23:00-23:30 -05:30");
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        for (text, needle) in [
            ("", "empty"),
            ("02:00-04:00", "no time zone"),
            (
                "Mon-Fri 02:00-04:00 Europe/Berlin",
                "not a supported time zone",
            ),
            ("Mon-Fry 02:00-04:00 UTC", "\"Fry\" is not a day"),
            ("Mon 2:00-04:00 UTC", "not a time"),
            ("Mon 02:00-25:00 UTC", "out of range"),
            ("Mon 24:00-02:00 UTC", "out of range"),
            ("Mon 02:00 UTC", "not a time range"),
            ("Mon 02:00-02:00 UTC", "start and end are the same"),
            ("Mon,,Tue 02:00-03:00 UTC", "empty day"),
            ("Mon 02:00-03:00 UTC extra", "too many parts"),
            ("Mon 02:00-03:00 +15:00", "not a supported time zone"),
        ] {
            let err = Window::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    /// Odd bytes (NUL, non-ASCII letters where a day or a digit belongs, a bare sign) are refused with the
    /// reason, never accepted and never a panic.
    #[test]
    fn odd_input_is_refused_with_the_reason() {
        for (text, needle) in [
            ("\u{0}", "has no time zone"),
            ("é 02:00-03:00 UTC", "\"é\" is not a day"),
            ("Mon ï:00-03:00 UTC", "\"ï:00\" is not a time"),
            ("Mon 0é:00-03:00 UTC", "\"0é:00\" is not a time"),
            ("Mon 02:00-03:00 +", "\"+\" is not a supported time zone"),
            ("- - -", "\"\" is not a day"),
        ] {
            let err = Window::parse(text).expect_err(text);
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    proptest::proptest! {
        /// Any text: an error, or a window that prints as text parsing back to the same window.
        #[test]
        fn any_text_is_refused_or_round_trips(
            text in "((\\*|[A-Za-z]{3}(-[A-Za-z]{3})?(,[A-Za-z]{3})?) )?[0-2][0-9]:[0-6][0-9]-[0-2][0-9]:[0-6][0-9] (UTC|Z|[+-][0-1][0-9]:[0-6][0-9])|\\PC{0,30}"
        ) {
            if let Ok(w) = Window::parse(&text) {
                let shown = w.to_string();
                proptest::prop_assert_eq!(Window::parse(&shown).ok(), Some(w), "{:?} shown as {:?}", text, shown);
            }
        }
    }
}
