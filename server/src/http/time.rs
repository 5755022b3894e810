//! Times on the wire: RFC 3339 in UTC with microseconds and `Z`
//! (`2026-12-06T09:28:00.837804Z`), exactly what chrono's
//! `to_rfc3339_opts(SecondsFormat::Micros, true)` writes.
//!
//! Written here on the stack because a page of 20 tasks carries 40 to 60
//! of them, and chrono's way costs a `String` and the formatting machinery
//! each: about a tenth of the server's CPU on a task list read from
//! PostgreSQL. Years outside 0 to 9999 (which chrono writes with a sign)
//! and leap seconds take chrono's way; a test holds the two together.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// A formatted time; [`Rfc3339::as_str`] is the text.
pub enum Rfc3339 {
    /// The common case, formatted in place.
    Fixed([u8; 27]),
    /// What chrono wrote, for the rest.
    Chrono(String),
}

impl Rfc3339 {
    /// `t`, formatted.
    pub fn new(t: &DateTime<Utc>) -> Self {
        let year = t.year();
        if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
            return Self::Chrono(t.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 6, t.nanosecond() / 1000);
        Self::Fixed(b)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            // Digits and ASCII punctuation only.
            Self::Fixed(b) => std::str::from_utf8(b).unwrap_or_default(),
            Self::Chrono(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn writes_what_chrono_writes() {
        let mut seen = 0;
        // Seconds from year -1 to past 10000, stepped oddly so every field
        // and digit position moves; nanoseconds with and without a rest
        // below the microsecond.
        let mut secs: i64 = -62_200_000_000;
        while secs < 253_500_000_000 {
            for nanos in [0, 1_000, 999_999_999, 123_456_789, 500_000_000] {
                let t = Utc.timestamp_opt(secs, nanos).single().expect("valid");
                assert_eq!(Rfc3339::new(&t).as_str(), t.to_rfc3339_opts(SecondsFormat::Micros, true), "{secs}.{nanos}");
                seen += 1;
            }
            secs += 7_654_321;
        }
        assert!(seen > 200_000);
        let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).single().expect("leap second");
        assert_eq!(Rfc3339::new(&leap).as_str(), leap.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
}
