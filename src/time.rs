//! A UTC instant and its RFC 3339 text form (`2026-11-26T12:00:00Z`), shared by status files,
//! history, the audit log and secrets metadata. Calendar arithmetic and parsing are jiff's; this
//! file fixes the text form (whole seconds, `Z`) and must not know where timestamps are stored.

use std::fmt;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A UTC instant written as RFC 3339 (`2026-11-26T12:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z`: UTC only, upper-case `T` and `Z`, as chom writes
    /// them. jiff alone would also take offsets, a space or a lower-case `t`; refusing them
    /// keeps one spelling per instant in files that are compared byte for byte.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if (b[19] != b'Z' && b[19] != b'.') || !text.ends_with('Z') {
            return None;
        }
        let instant: jiff::Timestamp = text.parse().ok()?;
        SystemTime::try_from(instant).ok().map(Self)
    }
}

impl fmt::Display for Timestamp {
    /// Whole seconds: status files change only when something happened, and sub-second
    /// noise would make every write differ.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Outside jiff's range (years -9999..=9999) only by a broken clock; the nearest
        // representable instant is a better answer than a panic in `to_string`.
        let instant = jiff::Timestamp::try_from(self.0).unwrap_or_else(|_| {
            if self.0 < SystemTime::UNIX_EPOCH {
                jiff::Timestamp::MIN
            } else {
                jiff::Timestamp::MAX
            }
        });
        let whole = jiff::Timestamp::from_second(instant.as_second()).unwrap_or(instant);
        write!(f, "{}", whole.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 UTC time")))
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2026-11-26T12:00:00Z",
            "2100-03-01T01:02:03Z",
        ] {
            let ts = Timestamp::parse(text).unwrap();
            assert_eq!(ts.to_string(), text);
        }
        let with_fraction = Timestamp::parse("2026-11-26T12:00:00.250Z").unwrap();
        assert_eq!(with_fraction.to_string(), "2026-11-26T12:00:00Z");
        assert!(Timestamp::parse("2026-13-01T00:00:00Z").is_none());
        assert!(Timestamp::parse("2026-11-26 12:00:00").is_none());
    }

    #[test]
    fn timestamps_refuse_other_spellings_of_an_instant() {
        for text in [
            "2026-11-26T12:00:00+00:00",
            "2026-11-26t12:00:00Z",
            "2026-11-26 12:00:00Z",
            "2026-11-26T12:00:00z",
            "2026-02-30T12:00:00Z",
            "2026-11-26T12:00Z",
            "",
        ] {
            assert!(Timestamp::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn timestamps_match_the_unix_clock() {
        let ts = Timestamp::parse("2026-11-26T12:00:00.250Z").unwrap();
        assert_eq!(ts.0, UNIX_EPOCH + Duration::new(1_795_694_400, 250_000_000));
        assert_eq!(
            Timestamp(UNIX_EPOCH + Duration::from_millis(999)).to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z").unwrap().0, UNIX_EPOCH);
    }

    #[test]
    fn timestamps_serialize_as_plain_strings() {
        let ts = Timestamp::parse("2000-02-29T23:59:59Z").unwrap();
        assert_eq!(serde_json::to_string(&ts).unwrap(), "\"2000-02-29T23:59:59Z\"");
        let back: Timestamp = serde_json::from_str("\"2000-02-29T23:59:59Z\"").unwrap();
        assert_eq!(back, ts);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
