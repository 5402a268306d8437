//! The name rules of the model, each written once: server (and role) names are RFC 1123
//! labels, component names are labels that may also hold `_`, and a server's address is an
//! IP address or a DNS name. Validation, import-legacy and the secrets CLI all ask here. It
//! must not know where a name comes from (files, arguments, legacy inventories). The types
//! are re-exported from `resource`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The JSON Schema pattern of an RFC 1123 label; [`ServerName::is_valid`] is the same rule
/// in code (the length limit is a separate schema keyword).
pub const LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// The JSON Schema pattern of a component name; [`ComponentName::is_valid`] is the same
/// rule in code.
pub const COMPONENT_PATTERN: &str = r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";

/// The longest label (RFC 1123), and so the longest server or component name.
pub const MAX_LABEL_LEN: usize = 63;

/// The longest DNS name, without a trailing dot (RFC 1035).
pub const MAX_DNS_NAME_LEN: usize = 253;

/// A name or address that breaks its rule. The messages say what was wrong with the value,
/// so that every caller reports it the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not an RFC 1123 label.
    #[error("`{name}` is not an RFC 1123 label (lower-case letters, digits and `-`, at most 63, no `-` at either end)")]
    ServerName {
        /// The refused name.
        name: String,
    },
    /// Not a component name.
    #[error(
        "`{name}` is not a component name (lower-case letters, digits, `-` and `_`, at most 63, a letter or digit at either end)"
    )]
    ComponentName {
        /// The refused name.
        name: String,
    },
    /// An unspecified IP address (`0.0.0.0`, `::`), which legacy inventories use as "unknown".
    #[error("`{address}` is a placeholder, not an address a server can be reached at")]
    PlaceholderAddress {
        /// The refused address.
        address: String,
    },
    /// Neither an IP address nor a DNS name.
    #[error("`{address}` is neither an IP address nor a valid DNS name")]
    Address {
        /// The refused address.
        address: String,
    },
}

/// Whether every byte is a lower-case letter, a digit or in `inner`, the first and last are
/// letters or digits, and there are 1 to 63.
fn is_label(name: &str, inner: &[u8]) -> bool {
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = name.as_bytes();
    (1..=MAX_LABEL_LEN).contains(&b.len())
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || inner.contains(c))
}

/// Why `address` is not a usable address, if it is not.
fn address_problem(address: &str) -> Option<NameError> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return ip.is_unspecified().then(|| NameError::PlaceholderAddress {
            address: address.to_owned(),
        });
    }
    // DNS labels may hold upper-case letters (names are case-insensitive), unlike chom's own.
    let dns_label = |l: &str| {
        (1..=MAX_LABEL_LEN).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = address.strip_suffix('.').unwrap_or(address);
    let valid = host.len() <= MAX_DNS_NAME_LEN && host.split('.').all(dns_label);
    (!valid).then(|| NameError::Address {
        address: address.to_owned(),
    })
}

/// Implements the string-like traits shared by the three newtypes: `FromStr` (the rule),
/// `Display`, `AsRef<str>`, and serde as a plain string that is checked when read.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(text: &str) -> Result<Self, NameError> {
                match Self::problem(text) {
                    None => Ok(Self(text.to_owned())),
                    Some(problem) => Err(problem),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(text: String) -> Result<Self, NameError> {
                match Self::problem(&text) {
                    None => Ok(Self(text)),
                    Some(problem) => Err(problem),
                }
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

/// A server's (or role's) `metadata.name`: an RFC 1123 label (`web-7`), which is also its
/// file stem and, for servers, its secrets file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerName(String);

impl ServerName {
    /// Whether `name` is an RFC 1123 label: lower-case letters, digits and `-`, 1 to 63,
    /// no `-` at either end.
    pub fn is_valid(name: &str) -> bool {
        is_label(name, b"-")
    }

    fn problem(name: &str) -> Option<NameError> {
        (!Self::is_valid(name)).then(|| NameError::ServerName { name: name.to_owned() })
    }
}

string_newtype!(ServerName);

/// A component's name (`scripts/<name>.sh`): like a label, but `_` is allowed inside, as in
/// script names (`node_exporter`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ComponentName(String);

impl ComponentName {
    /// Whether `name` is a component name: lower-case letters, digits, `-` and `_`, 1 to
    /// 63, a letter or digit at either end.
    pub fn is_valid(name: &str) -> bool {
        is_label(name, b"-_")
    }

    fn problem(name: &str) -> Option<NameError> {
        (!Self::is_valid(name)).then(|| NameError::ComponentName { name: name.to_owned() })
    }
}

string_newtype!(ComponentName);

/// Where a server is reached: an IP address other than the unspecified one, or a DNS name
/// (labels of letters, digits and `-`, at most 253 characters, an optional final dot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address(String);

impl Address {
    /// Whether `address` is usable: see [`Address`].
    pub fn is_valid(address: &str) -> bool {
        address_problem(address).is_none()
    }

    fn problem(address: &str) -> Option<NameError> {
        address_problem(address)
    }
}

string_newtype!(Address);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_rfc1123_labels() {
        for good in ["web-7", "a", "0", "db1", &"a".repeat(63)] {
            assert!(ServerName::is_valid(good), "{good}");
            assert_eq!(good.parse::<ServerName>().unwrap().as_str(), good);
        }
        for bad in ["", "Web-7", "web_7", "-web", "web-", "web.7", "wéb", &"a".repeat(64)] {
            assert!(!ServerName::is_valid(bad), "{bad}");
            let error = bad.parse::<ServerName>().unwrap_err();
            assert!(error.to_string().contains("RFC 1123 label"), "{error}");
        }
    }

    #[test]
    fn component_names_also_allow_underscores_inside() {
        for good in ["motd", "node_exporter", "redis-server", "a", &"b".repeat(63)] {
            assert!(ComponentName::is_valid(good), "{good}");
        }
        for bad in ["", "_motd", "motd_", "-x", "Motd", "a.b", "a/b", &"b".repeat(64)] {
            assert!(!ComponentName::is_valid(bad), "{bad}");
            assert!(bad.parse::<ComponentName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_ip_addresses_or_dns_names_never_placeholders() {
        for good in [
            "203.0.113.10",
            "::1",
            "obs.example.com",
            "obs.example.com.",
            "Web-1",
            "10.0.0.1",
        ] {
            assert!(Address::is_valid(good), "{good}");
        }
        for bad in [
            "",
            "bad_host!",
            "-x.example.com",
            "a..b",
            ".",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(
                matches!(bad.parse::<Address>(), Err(NameError::Address { .. })),
                "{bad}"
            );
        }
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(!Address::is_valid(&long));
        for placeholder in ["0.0.0.0", "::"] {
            let error = placeholder.parse::<Address>().unwrap_err();
            assert!(matches!(error, NameError::PlaceholderAddress { .. }), "{placeholder}");
            assert!(error.to_string().contains("is a placeholder"), "{error}");
        }
    }

    #[test]
    fn names_read_and_write_as_plain_strings() {
        let name: ServerName = serde_json::from_str("\"web-1\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"web-1\"");
        assert_eq!(name.to_string(), "web-1");
        assert_eq!(name.as_ref(), "web-1");
        assert!(serde_json::from_str::<ServerName>("\"Web_1\"").is_err());
        assert!(serde_json::from_str::<ComponentName>("\"node_exporter\"").is_ok());
        assert!(serde_json::from_str::<Address>("\"0.0.0.0\"").is_err());
    }

    #[test]
    fn the_schema_patterns_state_the_same_rules_as_the_code() {
        let samples = [
            "web-7",
            "a",
            "Web",
            "web_7",
            "_x",
            "x_",
            "-x",
            "x-",
            "node_exporter",
            "a.b",
            "",
            "9",
        ];
        for (pattern, is_valid) in [
            (LABEL_PATTERN, ServerName::is_valid as fn(&str) -> bool),
            (COMPONENT_PATTERN, ComponentName::is_valid),
        ] {
            let schema = serde_json::json!({ "type": "string", "pattern": pattern, "maxLength": MAX_LABEL_LEN });
            let validator = jsonschema::validator_for(&schema).unwrap();
            for sample in samples.iter().copied().chain([&*"a".repeat(63), &*"a".repeat(64)]) {
                let by_schema = validator.is_valid(&serde_json::json!(sample)) && !sample.is_empty();
                assert_eq!(by_schema, is_valid(sample), "{pattern} on {sample:?}");
            }
        }
    }
}
