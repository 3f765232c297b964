//! Exchange-local wall-clock times → UTC, correct across daylight saving.

use chrono::offset::LocalResult;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::model::Timestamp;

/// Converts local times of one time zone, caching the UTC offset per local
/// (date, hour). Offsets only change on the hour, and hours in which the clock
/// jumps are never cached, so the cache cannot give a wrong answer.
#[derive(Debug)]
pub struct LocalClock {
    tz: Tz,
    last: Option<((NaiveDate, u32), i64)>,
}

impl LocalClock {
    pub fn new(tz: Tz) -> Self {
        Self { tz, last: None }
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The UTC instant of a local wall-clock time. Refuses times that do not
    /// exist (skipped when clocks go forward) or happen twice (when they go back).
    pub fn to_utc(&mut self, local: NaiveDateTime) -> Result<Timestamp, String> {
        use chrono::Timelike;
        let key = (local.date(), local.hour());
        let offset_secs = match self.last {
            Some((k, off)) if k == key => off,
            _ => match self.tz.offset_from_local_datetime(&local) {
                LocalResult::Single(off) => {
                    let secs = i64::from(off.fix().local_minus_utc());
                    self.last = Some((key, secs));
                    secs
                }
                LocalResult::Ambiguous(_, _) => {
                    return Err(format!("{local} happens twice in {} (clocks go back)", self.tz));
                }
                LocalResult::None => {
                    return Err(format!("{local} does not exist in {} (clocks go forward)", self.tz));
                }
            },
        };
        let local_micros = local.and_utc().timestamp_micros();
        Ok(Timestamp::from_micros(local_micros - offset_secs * 1_000_000))
    }
}

/// Parses `MM/DD/YYYY`.
pub fn parse_us_date(text: &str) -> Result<NaiveDate, String> {
    let b = text.as_bytes();
    let bad = || format!("date {text:?} is not MM/DD/YYYY");
    if b.len() != 10 || b[2] != b'/' || b[5] != b'/' {
        return Err(bad());
    }
    let month = digits(&b[0..2]).ok_or_else(bad)?;
    let day = digits(&b[3..5]).ok_or_else(bad)?;
    let year = digits(&b[6..10]).ok_or_else(bad)?;
    NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(bad)
}

/// Parses `HH:MM:SS` with an optional fraction of 1 to 6 digits (`.754`).
pub fn parse_time(text: &str) -> Result<NaiveTime, String> {
    let b = text.as_bytes();
    let bad = || format!("time {text:?} is not HH:MM:SS[.fff]");
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return Err(bad());
    }
    let h = digits(&b[0..2]).ok_or_else(bad)?;
    let m = digits(&b[3..5]).ok_or_else(bad)?;
    let s = digits(&b[6..8]).ok_or_else(bad)?;
    let micros = match &b[8..] {
        [] => 0,
        [b'.', frac @ ..] if (1..=6).contains(&frac.len()) => {
            digits(frac).ok_or_else(bad)? * 10u32.pow(6 - frac.len() as u32)
        }
        _ => return Err(bad()),
    };
    NaiveTime::from_hms_micro_opt(h, m, s, micros).ok_or_else(bad)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Australia::Sydney;

    fn utc(clock: &mut LocalClock, date: &str, time: &str) -> Result<String, String> {
        let local = parse_us_date(date)?.and_time(parse_time(time)?);
        clock.to_utc(local).map(|t| t.to_string())
    }

    #[test]
    fn sydney_daylight_saving_both_sides() {
        let mut c = LocalClock::new(Sydney);
        // March 2014: AEDT, UTC+11; a 10:00 open is 23:00 UTC the day before.
        assert_eq!(utc(&mut c, "03/10/2014", "10:00:00.000").unwrap(), "2014-03-09T23:00:00.000000Z");
        assert_eq!(utc(&mut c, "03/10/2014", "07:57:14.754").unwrap(), "2014-03-09T20:57:14.754000Z");
        // June 2014: AEST, UTC+10.
        assert_eq!(utc(&mut c, "06/10/2014", "10:00:00").unwrap(), "2014-06-10T00:00:00.000000Z");
        // 6 April 2014 03:00 AEDT clocks went back to 02:00: 02:30 happened twice.
        assert!(utc(&mut c, "04/06/2014", "02:30:00").unwrap_err().contains("twice"));
        assert_eq!(utc(&mut c, "04/06/2014", "03:30:00").unwrap(), "2014-04-05T17:30:00.000000Z");
        // 5 October 2014 02:00 AEST clocks went forward to 03:00: 02:30 never was.
        assert!(utc(&mut c, "10/05/2014", "02:30:00").unwrap_err().contains("does not exist"));
        assert_eq!(utc(&mut c, "10/05/2014", "03:30:00").unwrap(), "2014-10-04T16:30:00.000000Z");
    }

    #[test]
    fn refuses_malformed_dates_and_times() {
        assert!(parse_us_date("2014-03-10").is_err());
        assert!(parse_us_date("13/10/2014").is_err());
        assert!(parse_time("7:57:14").is_err());
        assert!(parse_time("07:57:14.").is_err());
        assert!(parse_time("07:57:14.1234567").is_err());
        assert!(parse_time("25:00:00").is_err());
        assert_eq!(parse_time("07:57:14.5").unwrap().to_string(), "07:57:14.500");
    }
}
