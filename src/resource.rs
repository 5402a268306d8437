//! The resource types of `inventory.d/`: the `apiVersion`/`kind`/`metadata`/`spec`
//! envelope, `Server`, `Role`, names and durations. Pure data: no file access, no
//! validation beyond what serde, the generated JSON Schema and the name rules in
//! `resource/names.rs` enforce.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod names;

pub use names::{Address, COMPONENT_PATTERN, ComponentName, LABEL_PATTERN, MAX_LABEL_LEN, NameError, ServerName};

/// The only API version chom understands today.
pub const API_VERSION: &str = "chom.dev/v1";

/// The API group and version of every chom resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// `chom.dev/v1`.
    #[serde(rename = "chom.dev/v1")]
    V1,
}

/// The `kind` of a Server resource (a one-value enum so the schema pins it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServerKind {
    /// `Server`.
    Server,
}

/// The `kind` of a Role resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RoleKind {
    /// `Role`.
    Role,
}

/// Free-form configuration handed to component scripts (as JSON and as flat variables).
pub type Config = serde_json::Map<String, serde_json::Value>;

/// `metadata` of a resource, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// The resource's name: an RFC 1123 label equal to the file's stem, unique per kind
    /// across the whole inventory tree.
    #[schemars(regex(pattern = names::LABEL_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// Labels for selecting and grouping servers (`env: prod`; `chom get -l env=prod`).
    /// Keys and values follow Kubernetes' rules: a key is an optional DNS-subdomain prefix
    /// and `/`, then at most 63 letters, digits, `-`, `_` or `.`, starting and ending
    /// with a letter or digit; a value is empty or the same as a key's name part.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for people and tools; chom does not interpret them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The schema of `metadata.labels`: Kubernetes label keys and values.
fn labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "propertyNames": {
            "pattern": crate::selector::KEY_PATTERN,
            "maxLength": crate::selector::KEY_MAX_LEN,
        },
        "additionalProperties": {
            "type": "string",
            "pattern": crate::selector::VALUE_PATTERN,
            "maxLength": 63,
        },
    })
}

/// A server chom keeps reconciled (`kind: Server`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "chom Server", extend("$id" = "https://chom.dev/schemas/server.schema.json"))]
pub struct Server {
    /// Always `chom.dev/v1`.
    pub api_version: ApiVersion,
    /// Always `Server`.
    pub kind: ServerKind,
    /// Name, labels and annotations.
    pub metadata: Metadata,
    /// The desired state of the server.
    pub spec: ServerSpec,
}

/// The desired state of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSpec {
    /// IP address or DNS name to reach over SSH.
    #[schemars(length(min = 1, max = 253))]
    pub address: String,
    /// How to log in.
    #[serde(default)]
    pub ssh: SshSpec,
    /// A Role resource whose requirements, components and config this server inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What the operator believes the hardware is. Only compared with what chom detects,
    /// never trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ExpectedSpecs")]
    pub expected_specs: Option<ExpectedSpecs>,
    /// Components applied in this order, after the Role's.
    #[serde(default)]
    pub components: Vec<ComponentRef>,
    /// Configuration for every component of this server; deep-merged over the Role's.
    #[serde(default)]
    pub config: Config,
    /// Names of secrets (defined in `secrets.d/`) the components may read. Values never
    /// appear in inventory.
    #[serde(default)]
    pub secrets: Vec<SecretName>,
    /// Servers that must be Ready before this one is reconciled.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// How often drift is checked and hardware re-detected.
    #[serde(default = "default_interval")]
    #[schemars(default = "default_interval")]
    pub interval: DurationSpec,
    /// What to do when a component has drifted from its applied state.
    #[serde(default)]
    pub drift_policy: DriftPolicy,
    /// Remove components that were dropped from the list.
    #[serde(default)]
    pub prune: bool,
    /// Stop reconciling this server until set back to false.
    #[serde(default)]
    pub suspend: bool,
}

fn default_interval() -> DurationSpec {
    DurationSpec(Duration::from_secs(600))
}

/// A secret's name: upper-case letters, digits and underscores, as a shell variable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretName(#[schemars(regex(pattern = r"^[A-Z][A-Z0-9_]*$"), length(max = 128))] pub String);

/// SSH login settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshSpec {
    /// Remote user. Non-root users run scripts through `sudo -n`.
    #[serde(default = "default_user")]
    #[schemars(default = "default_user", length(min = 1, max = 64))]
    pub user: String,
    /// TCP port of sshd.
    #[serde(default = "default_port")]
    #[schemars(default = "default_port", range(min = 1, max = 65535))]
    pub port: u16,
    /// Private key file; without it, the ssh-agent (`SSH_AUTH_SOCK`) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Pinned host keys (`ssh-ed25519 AAAA…` lines or `SHA256:…` fingerprints). When
    /// present they are authoritative and known_hosts is not consulted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_keys: Vec<String>,
}

impl Default for SshSpec {
    fn default() -> Self {
        Self {
            user: default_user(),
            port: default_port(),
            identity_file: None,
            host_keys: Vec::new(),
        }
    }
}

fn default_user() -> String {
    "root".to_owned()
}

fn default_port() -> u16 {
    22
}

/// Hardware the operator expects; compared with detection, never trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpectedSpecs {
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cpu: Option<u32>,
    /// Memory in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_mb: Option<u64>,
    /// Root filesystem size in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub disk_gb: Option<u64>,
}

/// One component to apply: `scripts/<name>.sh` with a version and config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentRef {
    /// Component name; `scripts/<name>.sh` must exist.
    #[schemars(regex(pattern = names::COMPONENT_PATTERN), length(max = 63))]
    pub name: String,
    /// Version handed to the script as `CHOM_VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Component-level configuration, deep-merged over the server's.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: Config,
    /// Deadline for one run of the script; past it the remote process is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "10m"))]
    pub timeout: Option<DurationSpec>,
}

/// What to do about drift found by a check run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DriftPolicy {
    /// Re-apply the component.
    #[default]
    Correct,
    /// Only report it in the `Drifted` condition.
    Report,
}

/// A named group of servers (`kind: Role`): requirements, default components and config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "chom Role", extend("$id" = "https://chom.dev/schemas/role.schema.json"))]
pub struct Role {
    /// Always `chom.dev/v1`.
    pub api_version: ApiVersion,
    /// Always `Role`.
    pub kind: RoleKind,
    /// Name, labels and annotations.
    pub metadata: Metadata,
    /// What members inherit.
    pub spec: RoleSpec,
}

/// What a Role gives its servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    /// Minimum hardware; a server below it is not deployed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Requirements")]
    pub requirements: Option<Requirements>,
    /// Default components, applied before the server's own.
    #[serde(default)]
    pub components: Vec<ComponentRef>,
    /// Default configuration; the server's config wins.
    #[serde(default)]
    pub config: Config,
}

/// Minimum hardware of a Role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirements {
    /// Minimum vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_cpu: Option<u32>,
    /// Minimum memory in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_memory_mb: Option<u64>,
    /// Minimum root filesystem size in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_disk_gb: Option<u64>,
}

// Option<Struct> fields carry `#[schemars(with = "Struct")]`: schemars would otherwise
// wrap them in `anyOf: [Struct, null]`, and a mistake inside would be reported only as
// "not valid under any of the schemas" instead of at the offending field.

/// A duration written as `30s`, `10m`, `1h`, `1h30m`, `500ms` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationSpec(pub Duration);

/// The pattern a duration string must match (kept beside the parser it mirrors).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// What every message about a malformed duration says, instead of the pattern.
pub const DURATION_HELP: &str = "expected a duration such as 30s, 10m, 1h30m (units: ms, s, m, h, d)";

impl DurationSpec {
    /// Parses `1h30m`-style durations; `None` when the text is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut total = Duration::ZERO;
        let mut rest = text;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let number: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let (unit_ms, unit_len) = if rest.starts_with("ms") {
                (1, 2)
            } else {
                match rest.bytes().next()? {
                    b's' => (1_000, 1),
                    b'm' => (60_000, 1),
                    b'h' => (3_600_000, 1),
                    b'd' => (86_400_000, 1),
                    _ => return None,
                }
            };
            rest = &rest[unit_len..];
            total = total.checked_add(Duration::from_millis(number.checked_mul(unit_ms)?))?;
        }
        Some(Self(total))
    }
}

impl fmt::Display for DurationSpec {
    /// Writes the shortest exact form (`90s` → `1m30s`) so a round trip is stable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, name) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
            if ms >= unit {
                write!(f, "{}{name}", ms / unit)?;
                ms %= unit;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?}: {DURATION_HELP}")))
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 30s, 10m, 1h or 1h30m (units: ms, s, m, h, d).",
        })
    }
}

/// Upper-cases `text` and turns every character a shell variable name cannot hold into
/// `_` (`smtp-password` → `SMTP_PASSWORD`). Shared by config variables and secret names.
pub fn shell_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back_the_same() {
        for (text, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
        ] {
            let parsed = DurationSpec::parse(text).unwrap();
            assert_eq!(parsed.0, Duration::from_secs(secs), "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(DurationSpec::parse("500ms").unwrap().0, Duration::from_millis(500));
    }

    #[test]
    fn durations_reject_what_is_not_one() {
        for text in ["", "10", "m", "10x", "1.5h", "-1s", "99999999999999999999d"] {
            assert!(DurationSpec::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn rfc1123_labels_are_recognised() {
        assert!(ServerName::is_valid("web-7"));
        assert!(!ServerName::is_valid("Web_7"));
        assert!(!ServerName::is_valid("-web"));
        assert!(!ServerName::is_valid(&"a".repeat(64)));
    }
}
