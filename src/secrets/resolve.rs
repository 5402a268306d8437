//! Resolution of the secrets one server references: server scope over `common`, decrypted
//! with the daemon's identity, each with its version (scope and `updatedAt`) for the
//! component digest. A secret that is missing or does not decrypt is reported by name so the
//! caller can set `SecretsResolved=False` and skip the components that need it. It must not
//! deliver values anywhere: the caller puts them into the stdin preamble.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret as _, SecretString};

use super::file::read_scope;
use super::{COMMON, Identity, Redactor, Scope, SecretsError};
use crate::status::Timestamp;

/// A decrypted value. Its memory is wiped when dropped; `Debug` never shows it, and it has
/// no `Display` or `Serialize`, so it cannot slip into a log line or a status file by
/// accident. Read it with [`SecretValue::expose`] only where it is delivered.
pub struct SecretValue(SecretString);

impl SecretValue {
    /// Wraps a plaintext value.
    pub fn new(text: String) -> Self {
        Self(SecretString::from(text))
    }

    /// The plaintext. Call it only to deliver the value or to register it for redaction.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl Clone for SecretValue {
    fn clone(&self) -> Self {
        Self::new(self.expose().to_owned())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

/// Which value a server received: the file it came from and when it was set. It changes
/// when the value changes (or moves between scopes) and not when it is only re-encrypted,
/// so it is what enters the component digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretVersion {
    /// The file the value came from.
    pub scope: Scope,
    /// Its `updatedAt`.
    pub updated_at: Timestamp,
}

impl fmt::Display for SecretVersion {
    /// `common@2026-11-26T12:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.scope, self.updated_at)
    }
}

/// One resolved secret.
#[derive(Debug, Clone)]
pub struct ResolvedSecret {
    /// The plaintext.
    pub value: SecretValue,
    /// Where it came from and when it was set.
    pub version: SecretVersion,
}

/// Why a referenced secret could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnresolvedReason {
    /// Defined in neither the server's file nor `common.yaml`.
    Missing {
        /// The server's file, if the server may have one.
        server_file: Option<PathBuf>,
        /// `common.yaml`.
        common_file: PathBuf,
    },
    /// Defined, but the identity cannot decrypt it.
    Undecryptable {
        /// The file that holds it.
        file: PathBuf,
        /// Why (never contains the value).
        reason: String,
    },
}

/// A referenced secret that could not be resolved, by name only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The secret's name.
    pub name: String,
    /// Why.
    pub reason: UnresolvedReason,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.reason {
            UnresolvedReason::Missing {
                server_file: Some(server),
                common_file,
            } => write!(
                f,
                "{name} is defined neither in {} nor in {}; add it with `chom secrets set {name}`",
                server.display(),
                common_file.display()
            ),
            UnresolvedReason::Missing {
                server_file: None,
                common_file,
            } => write!(
                f,
                "{name} is not defined in {}; add it with `chom secrets set {name}`",
                common_file.display()
            ),
            UnresolvedReason::Undecryptable { file, reason } => {
                write!(f, "{name} in {} does not decrypt: {reason}", file.display())
            }
        }
    }
}

/// The secrets of one server.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Resolved values by name.
    pub secrets: BTreeMap<String, ResolvedSecret>,
    /// Referenced secrets that could not be resolved, in name order.
    pub unresolved: Vec<Unresolved>,
}

impl Resolved {
    /// Whether every referenced secret resolved (`SecretsResolved=True`).
    pub fn is_complete(&self) -> bool {
        self.unresolved.is_empty()
    }

    /// The value of `name`, if it resolved.
    pub fn value(&self, name: &str) -> Option<&SecretValue> {
        self.secrets.get(name).map(|s| &s.value)
    }

    /// Versions by name, for the component digest (no values).
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.secrets
            .iter()
            .map(|(name, s)| (name.clone(), s.version.to_string()))
            .collect()
    }

    /// Registers every value with `redactor`, so no log line or stored output shows them.
    pub fn register_with(&self, redactor: &Redactor) {
        redactor.register_all(self.secrets.values().map(|s| s.value.expose()));
    }

    /// One sentence naming the unresolved secrets, for a condition message.
    pub fn problems(&self) -> String {
        self.unresolved
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Resolves `names` for `server` from `dir` (`secrets.d/`): a value in `<server>.yaml`
/// overrides the one in `common.yaml`. Missing or undecryptable secrets are listed in
/// [`Resolved::unresolved`] by name. An `Err` means a file itself is unreadable, malformed or
/// holds a plaintext value, or `server` cannot name a file. With no names, nothing is read.
pub fn resolve<'a>(
    dir: &Path,
    server: &str,
    names: impl IntoIterator<Item = &'a str>,
    identity: &Identity,
) -> Result<Resolved, SecretsError> {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let mut resolved = Resolved::default();
    if names.is_empty() {
        return Ok(resolved);
    }
    // A server literally named `common` has no file of its own: `common.yaml` is everyone's.
    let server_scope = match Scope::server(server) {
        Ok(scope) => Some(scope),
        Err(_) if server == COMMON => None,
        Err(e) => return Err(e),
    };
    let server_set = match &server_scope {
        Some(scope) => read_scope(dir, scope)?,
        None => None,
    };
    let common_set = read_scope(dir, &Scope::Common)?;
    for name in names {
        let found = [
            (server_scope.as_ref(), server_set.as_ref()),
            (Some(&Scope::Common), common_set.as_ref()),
        ]
        .into_iter()
        .find_map(|(scope, set)| Some((scope?, set?.secrets.get(name)?)));
        let Some((scope, entry)) = found else {
            resolved.unresolved.push(Unresolved {
                name: name.to_owned(),
                reason: UnresolvedReason::Missing {
                    server_file: server_scope.as_ref().map(|s| dir.join(s.file_name())),
                    common_file: dir.join(Scope::Common.file_name()),
                },
            });
            continue;
        };
        match identity.decrypt(&entry.value) {
            Ok(value) => {
                let version = SecretVersion {
                    scope: scope.clone(),
                    updated_at: entry.updated_at,
                };
                resolved
                    .secrets
                    .insert(name.to_owned(), ResolvedSecret { value, version });
            }
            Err(failure) => resolved.unresolved.push(Unresolved {
                name: name.to_owned(),
                reason: UnresolvedReason::Undecryptable {
                    file: dir.join(scope.file_name()),
                    reason: failure.to_string(),
                },
            }),
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{add_recipient, set};

    fn fixture() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::generate();
        add_recipient(dir.path(), &me.public_keys().concat()).unwrap();
        (dir, me)
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn put(dir: &Path, scope: &Scope, name: &str, value: &str, at: &str) {
        set(dir, scope, name, &SecretValue::new(value.into()), ts(at)).unwrap();
    }

    #[test]
    fn server_scope_overrides_common() {
        let (dir, me) = fixture();
        let web = Scope::server("web-1").unwrap();
        put(
            dir.path(),
            &Scope::Common,
            "DB_PASSWORD",
            "common-db",
            "2026-01-01T00:00:00Z",
        );
        put(
            dir.path(),
            &Scope::Common,
            "SMTP_PASSWORD",
            "common-smtp",
            "2026-01-02T00:00:00Z",
        );
        put(dir.path(), &web, "DB_PASSWORD", "web-db", "2026-01-03T00:00:00Z");
        let r = resolve(
            dir.path(),
            "web-1",
            ["DB_PASSWORD", "SMTP_PASSWORD", "DB_PASSWORD"],
            &me,
        )
        .unwrap();
        assert!(r.is_complete(), "{}", r.problems());
        assert_eq!(r.value("DB_PASSWORD").unwrap().expose(), "web-db");
        assert_eq!(r.value("SMTP_PASSWORD").unwrap().expose(), "common-smtp");
        assert_eq!(r.versions()["DB_PASSWORD"], "web-1@2026-01-03T00:00:00Z");
        assert_eq!(r.versions()["SMTP_PASSWORD"], "common@2026-01-02T00:00:00Z");
        let other = resolve(dir.path(), "web-2", ["DB_PASSWORD"], &me).unwrap();
        assert_eq!(other.value("DB_PASSWORD").unwrap().expose(), "common-db");
    }

    #[test]
    fn a_missing_secret_is_named_and_the_rest_still_resolve() {
        let (dir, me) = fixture();
        put(dir.path(), &Scope::Common, "PRESENT", "value-1", "2026-01-01T00:00:00Z");
        let r = resolve(dir.path(), "web-1", ["PRESENT", "ABSENT"], &me).unwrap();
        assert!(!r.is_complete());
        assert_eq!(r.unresolved.len(), 1);
        assert_eq!(r.unresolved[0].name, "ABSENT");
        let message = r.problems();
        assert!(
            message.contains("ABSENT") && message.contains("web-1.yaml"),
            "{message}"
        );
        assert!(!message.contains("value-1"));
        assert_eq!(r.value("PRESENT").unwrap().expose(), "value-1");
    }

    #[test]
    fn an_undecryptable_secret_is_named_without_its_value() {
        let (dir, _me) = fixture();
        put(dir.path(), &Scope::Common, "TOKEN", "value-1", "2026-01-01T00:00:00Z");
        let stranger = Identity::generate();
        let r = resolve(dir.path(), "web-1", ["TOKEN"], &stranger).unwrap();
        assert!(matches!(r.unresolved[0].reason, UnresolvedReason::Undecryptable { .. }));
        assert!(r.problems().contains("TOKEN in "), "{}", r.problems());
    }

    #[test]
    fn no_names_read_no_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("common.yaml"), "not: [valid").unwrap();
        let r = resolve(dir.path(), "web-1", [], &Identity::generate()).unwrap();
        assert!(r.is_complete());
        assert!(resolve(dir.path(), "web-1", ["A"], &Identity::generate()).is_err());
    }

    #[test]
    fn values_never_show_in_debug_output() {
        let value = SecretValue::new("hunter2-secret".into());
        assert!(!format!("{value:?}").contains("hunter2"));
        let resolved = ResolvedSecret {
            value,
            version: SecretVersion {
                scope: Scope::Common,
                updated_at: ts("2026-01-01T00:00:00Z"),
            },
        };
        assert!(!format!("{resolved:?}").contains("hunter2"));
    }
}
