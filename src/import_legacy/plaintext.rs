//! Finds password-like values in a legacy entry (the keys `chom validate` reports as
//! `plaintext-secret`), takes them out and names them. It must not decide where a value is
//! stored or report findings.

use serde_json::Value;

use crate::secrets::{self, SecretValue};
use crate::validate::is_password_like;

/// What a password-like key at `path` (legacy key segments) held.
pub(super) struct Found {
    pub(super) path: Vec<String>,
    pub(super) taken: Taken,
}

/// What a password-like key held.
pub(super) enum Taken {
    /// A value to move; `number` when YAML read it as a number.
    Value { value: SecretValue, number: bool },
    /// `""` or nothing: there is nothing to move.
    Empty,
    /// A list of values, which has no single secret name to move it under.
    List,
}

/// Removes every password-like key holding a scalar from `map`, however deep, the way
/// `chom validate` finds them (`plaintext-secret`), and records where each was.
pub(super) fn take_secrets(map: &mut serde_json::Map<String, Value>, path: &mut Vec<String>, found: &mut Vec<Found>) {
    // Rebuilt rather than removed from in place, so the remaining keys keep their order.
    for (key, mut value) in std::mem::take(map) {
        path.push(key.clone());
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Null);
        let taken = match &value {
            _ if !is_password_like(&key) => None,
            Value::String(s) if !s.is_empty() => Some(Taken::Value {
                value: SecretValue::new(s.clone()),
                number: false,
            }),
            Value::Number(n) => Some(Taken::Value {
                value: SecretValue::new(n.to_string()),
                number: true,
            }),
            Value::String(_) | Value::Null => Some(Taken::Empty),
            // Such a list is left out rather than kept, so its values reach no file.
            Value::Array(items) if !items.is_empty() && items.iter().all(scalar) => Some(Taken::List),
            _ => None,
        };
        if let Some(taken) = taken {
            found.push(Found {
                path: path.clone(),
                taken,
            });
        } else {
            descend(&mut value, path, found);
            map.insert(key, value);
        }
        path.pop();
    }
}

/// Looks for password-like keys inside `value` (mappings and lists, however deep).
fn descend(value: &mut Value, path: &mut Vec<String>, found: &mut Vec<Found>) {
    match value {
        Value::Object(map) => take_secrets(map, path, found),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                descend(item, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The secret name for a value at `path`: the keys below `config` joined by `_`,
/// upper-cased, list indices left out (`config.smtp.password` → `SMTP_PASSWORD`), as
/// `chom validate` suggests.
pub(super) fn secret_name(path: &[String]) -> String {
    let below_config = match path.first() {
        Some(first) if first == "config" => &path[1..],
        _ => path,
    };
    let words: Vec<&str> = below_config
        .iter()
        .map(String::as_str)
        .filter(|s| s.parse::<usize>().is_err())
        .collect();
    let mut name: String = words
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
        name.insert_str(0, "SECRET_");
    }
    name.truncate(secrets::MAX_NAME_LEN - 8);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_come_from_the_config_path() {
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(secret_name(&path(&["config", "smtp", "password"])), "SMTP_PASSWORD");
        assert_eq!(secret_name(&path(&["users", "0", "api-key"])), "USERS_API_KEY");
        assert_eq!(secret_name(&path(&["2fa_token"])), "SECRET_2FA_TOKEN");
        assert!(secrets::is_valid_name(&secret_name(&path(&[&"a".repeat(300)]))));
    }

    #[test]
    fn password_like_scalars_are_taken_out_at_any_depth() {
        let Value::Object(mut map) = serde_json::json!({
            "smtp": {"host": "h", "password": "p4ss-w0rd"},
            "users": [{"name": "a", "token": 1234}],
            "db_password": "",
            "password_file": "/run/x",
            "api_tokens": ["a1", "b2"],
        }) else {
            unreachable!()
        };
        let mut found = Vec::new();
        take_secrets(&mut map, &mut Vec::new(), &mut found);
        let paths: Vec<String> = found.iter().map(|f| f.path.join(".")).collect();
        assert_eq!(paths, ["api_tokens", "db_password", "smtp.password", "users.0.token"]);
        assert!(matches!(found.remove(0).taken, Taken::List));
        assert!(matches!(found[0].taken, Taken::Empty));
        assert!(matches!(&found[1].taken, Taken::Value { value, number: false } if value.expose() == "p4ss-w0rd"));
        assert!(matches!(found[2].taken, Taken::Value { number: true, .. }));
        assert_eq!(
            Value::Object(map),
            serde_json::json!({"smtp": {"host": "h"}, "users": [{"name": "a"}], "password_file": "/run/x"})
        );
    }
}
