//! UTC timestamps in microseconds, as the schema's `timestamp-micros` holds them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 0001-01-01T00:00:00Z: the earliest instant Avro readers in other
    /// languages (Python's datetime, Java's Instant formatting) can all hold.
    pub const MIN: Self = Self(-62_135_596_800_000_000);
    /// 9999-12-31T23:59:59.999999Z, the latest such instant.
    pub const MAX: Self = Self(253_402_300_799_999_999);

    /// `Some(self)` when within [`Self::MIN`]..=[`Self::MAX`].
    pub fn in_range(self) -> Option<Self> {
        (Self::MIN..=Self::MAX).contains(&self).then_some(self)
    }

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// From milliseconds, as Binance sends them. `None` outside the range.
    pub fn from_millis(millis: i64) -> Option<Self> {
        millis.checked_mul(1_000).map(Self).and_then(Self::in_range)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_micros())
    }

    /// `None` when the value lies outside chrono's range.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_datetime() {
            Some(dt) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => write!(f, "{}us", self.0),
        }
    }
}
