//! A point in time that stores well in both databases.
//!
//! PostgreSQL keeps it as `TIMESTAMPTZ`; SQLite as an INTEGER count of
//! microseconds since the Unix epoch, because RFC 3339 text has a variable
//! fraction width and sorts wrongly.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(OffsetDateTime::now_utc())
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    pub fn from_unix_micros(micros: i64) -> Option<Timestamp> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok().map(Timestamp)
    }

    pub fn from_unix_seconds(seconds: i64) -> Option<Timestamp> {
        OffsetDateTime::from_unix_timestamp(seconds).ok().map(Timestamp)
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    pub fn as_offset(self) -> OffsetDateTime {
        self.0
    }

    pub fn saturating_add(self, d: time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d))
    }
}

impl From<OffsetDateTime> for Timestamp {
    /// Truncates to whole microseconds, the precision both databases keep.
    fn from(t: OffsetDateTime) -> Timestamp {
        let t = t.to_offset(time::UtcOffset::UTC);
        let micros = t.nanosecond() / 1_000 * 1_000;
        Timestamp(t.replace_nanosecond(micros).unwrap_or(t))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.format(&time::format_description::well_known::Rfc3339).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.unix_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let micros = <i64 as Decode<Sqlite>>::decode(value)?;
        Timestamp::from_unix_micros(micros).ok_or_else(|| "timestamp out of range".into())
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <OffsetDateTime as Type<Postgres>>::compatible(ty)
    }
}

impl sqlx::postgres::PgHasArrayType for Timestamp {
    fn array_type_info() -> PgTypeInfo {
        <OffsetDateTime as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <OffsetDateTime as Encode<Postgres>>::encode(self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Timestamp(<OffsetDateTime as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Some(t));
    }
}
