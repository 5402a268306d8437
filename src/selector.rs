//! Label selectors, as `kubectl get -l` takes them, for every command that picks servers
//! (`get`, `detect`, `plan`, `reconcile`, `history`), and the rules a label key and value
//! follow (Kubernetes' own, so labels copied from a cluster are accepted as they are).
//!
//! Syntax: requirements separated by commas, all of which must hold: `key=value` (or
//! `key==value`), `key!=value` (also true when the key is absent, as in Kubernetes),
//! `key` (the key is present) and `!key` (it is absent).

use std::collections::BTreeMap;
use std::fmt;

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (letters, digits, `-`, `_`, `.`; starting and ending with a letter or digit).
pub const KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A label value: empty, or at most 63 characters like a key's name part.
pub const VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

/// The longest label key: a 253-character prefix, `/` and a 63-character name.
pub const KEY_MAX_LEN: usize = 253 + 1 + 63;

/// True when `name` is a label name (or a value, when `allow_empty`).
fn is_name(name: &str, allow_empty: bool) -> bool {
    if name.is_empty() {
        return allow_empty;
    }
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    name.len() <= 63
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
        && bytes.iter().all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
}

/// True when `key` is a valid label key.
pub fn is_valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                let b = part.as_bytes();
                !b.is_empty()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                    && b[0] != b'-'
                    && b[b.len() - 1] != b'-'
            })
    });
    prefix_ok && is_name(name, false)
}

/// True when `value` is a valid label value.
pub fn is_valid_value(value: &str) -> bool {
    is_name(value, true)
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`.
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

/// What is wrong with a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

const SYNTAX: &str =
    "expected key=value, key==value, key!=value, key or !key, separated by commas (e.g. env=prod,tier!=db)";

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, SelectorError> {
        let bad = |part: &str, why: &str| SelectorError(format!("invalid selector `{part}`: {why}"));
        if text.trim().is_empty() {
            return Err(bad(text, SYNTAX));
        }
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad(text, &format!("an empty requirement; {SYNTAX}")));
            }
            let key_ok = |key: &str| {
                if is_valid_key(key) {
                    Ok(key.to_owned())
                } else {
                    Err(bad(
                        part,
                        &format!(
                            "`{key}` is not a label key (letters, digits, `-`, `_`, `.`, at most 63, with an optional `prefix/`); {SYNTAX}"
                        ),
                    ))
                }
            };
            let value_ok = |value: &str| {
                if is_valid_value(value) {
                    Ok(value.to_owned())
                } else {
                    Err(bad(
                        part,
                        &format!("`{value}` is not a label value (letters, digits, `-`, `_`, `.`, at most 63)"),
                    ))
                }
            };
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key_ok(k.trim())?, value_ok(v.trim())?)
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(key_ok(k.trim())?, value_ok(v.trim())?)
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(key_ok(k.trim())?, value_ok(v.trim())?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(key_ok(k.trim())?)
            } else if part.contains([' ', '(', ')', '<', '>']) {
                return Err(bad(part, SYNTAX));
            } else {
                Requirement::Exists(key_ok(part)?)
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }
}

impl Selector {
    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_form_parses_and_matches() {
        let s: Selector = "env=prod, tier!=db,gpu,!legacy,zone==a".parse().unwrap();
        assert_eq!(s.to_string(), "env=prod,tier!=db,gpu,!legacy,zone=a");
        assert!(s.matches(&labels(&[("env", "prod"), ("gpu", ""), ("zone", "a")])));
        assert!(s.matches(&labels(&[
            ("env", "prod"),
            ("gpu", "1"),
            ("zone", "a"),
            ("tier", "web")
        ])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("gpu", ""), ("zone", "a"), ("tier", "db")])));
        assert!(
            !s.matches(&labels(&[("env", "prod"), ("zone", "a")])),
            "gpu is required"
        );
        assert!(!s.matches(&labels(&[("env", "prod"), ("gpu", ""), ("zone", "a"), ("legacy", "y")])));
    }

    #[test]
    fn bad_syntax_says_what_is_expected() {
        for bad in ["", "env=prod,", "env in (a,b)", "=x", "-x=y", "a=b c", "k="] {
            let parsed = bad.parse::<Selector>();
            if bad == "k=" {
                assert!(parsed.is_ok(), "an empty value is a value");
                continue;
            }
            let e = parsed.expect_err(bad).to_string();
            assert!(e.starts_with("invalid selector"), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_and_values_follow_kubernetes() {
        for good in ["env", "app.kubernetes.io/name", "a", "A_b.c-d", "chom.dev/role"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in ["", "-a", "a-", "Example.com/a", "/a", "a/", &"x".repeat(64), "a b"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
        assert!(is_valid_value("") && is_valid_value("v1.2_x-y"));
        assert!(!is_valid_value("-v") && !is_valid_value(&"x".repeat(64)) && !is_valid_value("a/b"));
    }

    #[test]
    fn the_schema_patterns_state_the_same_rules_as_the_code() {
        let key = regex_lite(KEY_PATTERN);
        let value = regex_lite(VALUE_PATTERN);
        for sample in [
            "env",
            "app.kubernetes.io/name",
            "-a",
            "a-",
            "Example.com/a",
            "",
            "a b",
            "x.y",
            "a/b/c",
        ] {
            assert_eq!(key(sample), is_valid_key(sample), "key {sample:?}");
            assert_eq!(value(sample), is_valid_value(sample), "value {sample:?}");
        }
    }

    /// The pattern checked through the JSON Schema validator chom uses.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        let v = jsonschema::validator_for(&schema).unwrap();
        move |s| v.is_valid(&serde_json::json!(s))
    }
}
