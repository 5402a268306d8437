//! The status subresource `<name>.status.yaml` (`kind: ServerStatus`): its model,
//! Kubernetes-style conditions with kstatus semantics, and RFC 3339 timestamps.
//! It describes what was observed; it never holds a secret value.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::facts::Hardware;
use crate::resource::ApiVersion;

/// The `kind` of a status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StatusKind {
    /// `ServerStatus`.
    ServerStatus,
}

/// The whole status file of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "chom ServerStatus", extend("$id" = "https://chom.dev/schemas/status.schema.json"))]
pub struct ServerStatus {
    /// Always `chom.dev/v1`.
    pub api_version: ApiVersion,
    /// Always `ServerStatus`.
    pub kind: StatusKind,
    /// Which server, and the generation of its desired state.
    pub metadata: StatusMetadata,
    /// What the daemon observed.
    pub status: ObservedStatus,
}

/// Identity of the server a status belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusMetadata {
    /// The server's name.
    pub name: String,
    /// Increases whenever the hash of the server's desired state (Role defaults merged
    /// with its spec, scripts and secret versions) changes.
    pub generation: u64,
    /// Hash of the desired state of `generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_hash: Option<String>,
}

/// What the daemon observed about one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedStatus {
    /// The generation this status describes.
    pub observed_generation: u64,
    /// Ready, Reconciling, Stalled, Reachable, HardwareDetected, SpecsMatch,
    /// RequirementsMet, SecretsResolved, ComponentsReady, Drifted.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The hardware detected at the last successful detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
    /// When the detected hardware last differed from the detection before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_changed_at: Option<Timestamp>,
    /// One entry per component, in apply order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// The last reconcile pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile: Option<LastReconcile>,
    /// Failed passes in a row; reset by a success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the next attempt is due after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Timestamp>,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reachable`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase machine-readable reason (`HostKeyChanged`).
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// When `status` last changed. Unchanged while the status stays the same.
    pub last_transition_time: Timestamp,
    /// The generation this condition was computed for.
    pub observed_generation: u64,
}

/// The three condition values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

/// The state of one component on one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Where it stands.
    pub state: ComponentState,
    /// Digest of script bytes, version, merged config and secret versions last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_digest: Option<String>,
    /// Whether the last run changed anything.
    #[serde(default)]
    pub changed: bool,
    /// How long the last run took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When it was last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_at: Option<Timestamp>,
    /// Resources the script reported (`::chom:: resource KIND NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ReportedResource>,
    /// Redacted explanation: the last stderr lines on failure, or why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Component states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ComponentState {
    /// Applied and in sync.
    Applied,
    /// Not applied yet.
    Pending,
    /// The last run failed.
    Failed,
    /// Not run because an earlier component failed or a precondition is missing.
    Skipped,
    /// A check run found drift (with `driftPolicy: report`).
    Drifted,
}

/// A resource a component reported managing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReportedResource {
    /// `service`, `user`, `file`, `port`, …
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// The last reconcile pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LastReconcile {
    /// The deployment the pass belonged to.
    pub deployment_id: String,
    /// Start time.
    pub started_at: Timestamp,
    /// End time.
    pub finished_at: Timestamp,
    /// Outcome.
    pub result: ReconcileResult,
}

/// Outcome of one reconcile pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReconcileResult {
    /// Everything applied or already in sync.
    Succeeded,
    /// Something failed; retried with backoff.
    Failed,
    /// A precondition (requirements, dependencies, secrets) held the server back.
    Blocked,
}

/// A UTC instant written as RFC 3339 (`2026-11-26T12:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u64>().ok();
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let rest = &text[19..];
        let (frac, zone) = match rest.strip_prefix('.') {
            Some(r) => {
                let digits = r.bytes().take_while(u8::is_ascii_digit).count();
                (&r[..digits], &r[digits..])
            }
            None => ("", rest),
        };
        if zone != "Z"
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let nanos = if frac.is_empty() {
            0
        } else {
            let padded = format!("{:0<9}", &frac[..frac.len().min(9)]);
            padded.parse::<u32>().ok()?
        };
        let days = days_from_civil(i64::try_from(year).ok()?, month as u32, day as u32);
        let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
        Some(Self(UNIX_EPOCH + Duration::new(secs, nanos)))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    /// Whole seconds: status files change only when something happened, and sub-second
    /// noise would make every write differ.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
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
}
