//! The operations that change or list `secrets.d/`: set a value, generate one once, list
//! names and ages, and re-encrypt everything to the current recipients. Every change holds
//! the folder lock for its read-modify-write and writes files atomically. Nothing here
//! prints, and no value leaves this module except encrypted.

use std::io::Read as _;
use std::path::Path;

use super::file::{self, DirLock, list_files, read, read_scope};
use super::{Identity, Recipients, Scope, SecretEntry, SecretSet, SecretValue, SecretsError, check_name};
use crate::status::Timestamp;

/// Default length of a generated value.
pub const DEFAULT_GENERATED_LEN: usize = 32;
/// Shortest generated value accepted (96 bits from a 64-character alphabet).
pub const MIN_GENERATED_LEN: usize = 16;
/// Longest generated value accepted.
pub const MAX_GENERATED_LEN: usize = 4096;
/// Largest value accepted: values travel in the stdin preamble of every component run.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// URL-safe alphabet: safe in URLs, shell words, YAML, JSON and connection strings. Its 64
/// symbols let `byte & 63` pick one without modulo bias.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What [`generate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// The secret did not exist in this scope and now does.
    Created,
    /// The secret already existed and was kept, so services using it keep working.
    Kept {
        /// When the kept value was set.
        updated_at: Timestamp,
    },
    /// `force` replaced an existing value.
    Replaced,
}

/// One row of [`list`]: never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSecret {
    /// The secret's name.
    pub name: String,
    /// The file it lives in.
    pub scope: Scope,
    /// When it was set.
    pub updated_at: Timestamp,
}

impl ListedSecret {
    /// Whole days since the value was set (0 for a time in the future).
    pub fn age_days(&self, now: Timestamp) -> u64 {
        age_days(self.updated_at, now)
    }
}

/// Whole days from `then` to `now`, 0 when `then` is in the future.
pub(super) fn age_days(then: Timestamp, now: Timestamp) -> u64 {
    now.0.duration_since(then.0).map_or(0, |d| d.as_secs() / 86_400)
}

/// What [`rotate`] re-encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    /// Files rewritten.
    pub files: usize,
    /// Values re-encrypted.
    pub secrets: usize,
    /// Recipients they are now encrypted to.
    pub recipients: usize,
}

fn check_value(name: &str, value: &SecretValue) -> Result<(), SecretsError> {
    if value.is_empty() {
        return Err(SecretsError::EmptyValue { name: name.to_owned() });
    }
    if value.expose().contains('\0') {
        return Err(SecretsError::NulInValue { name: name.to_owned() });
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(SecretsError::TooLarge {
            name: name.to_owned(),
            bytes: value.len(),
        });
    }
    Ok(())
}

/// Encrypts `value` to the current recipients and stores it as `name` in `scope`'s file
/// with `updatedAt = now`, replacing any previous value there.
pub fn set(dir: &Path, scope: &Scope, name: &str, value: &SecretValue, now: Timestamp) -> Result<(), SecretsError> {
    check_name(name)?;
    check_value(name, value)?;
    let recipients = Recipients::read(dir)?;
    let armored = recipients.encrypt(name, value)?;
    let _lock = DirLock::acquire(dir)?;
    store(dir, scope, name, armored, now)?;
    tracing::debug!(secret = name, %scope, recipients = recipients.len(), "stored secret");
    Ok(())
}

/// Puts one entry into `scope`'s file; the caller holds the lock.
fn store(dir: &Path, scope: &Scope, name: &str, armored: String, now: Timestamp) -> Result<(), SecretsError> {
    let mut set = read_scope(dir, scope)?.unwrap_or_else(|| SecretSet::new(scope));
    set.secrets.insert(
        name.to_owned(),
        SecretEntry {
            value: armored,
            updated_at: now,
        },
    );
    file::write(dir, scope, &set)
}

/// Stores a random value of `length` characters as `name` in `scope`, unless the scope
/// already has one: then it is kept (so re-running a setup never breaks a working password)
/// unless `force` is set.
pub fn generate(
    dir: &Path,
    scope: &Scope,
    name: &str,
    length: usize,
    force: bool,
    now: Timestamp,
) -> Result<Generated, SecretsError> {
    check_name(name)?;
    if !(MIN_GENERATED_LEN..=MAX_GENERATED_LEN).contains(&length) {
        return Err(SecretsError::BadLength { length });
    }
    let recipients = Recipients::read(dir)?;
    let _lock = DirLock::acquire(dir)?;
    let existing = read_scope(dir, scope)?.and_then(|set| set.secrets.get(name).map(|e| e.updated_at));
    if let Some(updated_at) = existing
        && !force
    {
        tracing::debug!(secret = name, %scope, %updated_at, "kept existing secret");
        return Ok(Generated::Kept { updated_at });
    }
    let value = random_value(length)?;
    let armored = recipients.encrypt(name, &value)?;
    store(dir, scope, name, armored, now)?;
    tracing::debug!(secret = name, %scope, replaced = existing.is_some(), "generated secret");
    Ok(if existing.is_some() {
        Generated::Replaced
    } else {
        Generated::Created
    })
}

/// A random value of `length` characters from the URL-safe alphabet, drawn from the
/// operating system's generator (`/dev/urandom`, which never blocks once the kernel's pool
/// is seeded).
pub fn random_value(length: usize) -> Result<SecretValue, SecretsError> {
    let mut bytes = vec![0u8; length];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| SecretsError::Random { source })?;
    let text: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect();
    bytes.fill(0);
    Ok(SecretValue::new(text))
}

/// Every secret's name, scope and `updatedAt`, without decrypting anything. With `server`,
/// the secrets that server would receive (its overrides replace `common` entries).
pub fn list(dir: &Path, server: Option<&str>) -> Result<Vec<ListedSecret>, SecretsError> {
    let rows = |scope: &Scope, set: &SecretSet| -> Vec<ListedSecret> {
        set.secrets
            .iter()
            .map(|(name, entry)| ListedSecret {
                name: name.clone(),
                scope: scope.clone(),
                updated_at: entry.updated_at,
            })
            .collect()
    };
    match server {
        None => {
            let mut out = Vec::new();
            for (scope, path) in list_files(dir)?.sets {
                out.extend(rows(&scope, &read(&path, &scope)?));
            }
            Ok(out)
        }
        Some(server) => {
            let scope = Scope::server(server)?;
            let own = read_scope(dir, &scope)?
                .map(|set| rows(&scope, &set))
                .unwrap_or_default();
            let common = read_scope(dir, &Scope::Common)?
                .map(|set| rows(&Scope::Common, &set))
                .unwrap_or_default();
            let mut out: Vec<ListedSecret> = common
                .into_iter()
                .filter(|c| !own.iter().any(|o| o.name == c.name))
                .collect();
            out.extend(own);
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        }
    }
}

/// Re-encrypts every value to the recipients now in `.recipients` (after adding or removing
/// a person), keeping each `updatedAt`: the values did not change, so neither do the
/// component digests. All values are decrypted before anything is written; if any does not
/// decrypt with `identity`, nothing is written.
pub fn rotate(dir: &Path, identity: &Identity) -> Result<RotateReport, SecretsError> {
    let recipients = Recipients::read(dir)?;
    let _lock = DirLock::acquire(dir)?;
    let mut sets = Vec::new();
    for (scope, path) in list_files(dir)?.sets {
        let set = read(&path, &scope)?;
        sets.push((scope, set));
    }
    let mut failures = Vec::new();
    let mut plain: Vec<Vec<(String, SecretValue)>> = Vec::with_capacity(sets.len());
    for (scope, set) in &sets {
        let mut values = Vec::with_capacity(set.secrets.len());
        for (name, entry) in &set.secrets {
            match identity.decrypt(&entry.value) {
                Ok(value) => values.push((name.clone(), value)),
                Err(_) => failures.push(format!("{}: {name}", scope.file_name())),
            }
        }
        plain.push(values);
    }
    if !failures.is_empty() {
        return Err(SecretsError::RotateBlocked {
            count: failures.len(),
            names: failures.join(", "),
        });
    }
    let mut report = RotateReport {
        files: 0,
        secrets: 0,
        recipients: recipients.len(),
    };
    for ((scope, mut set), values) in sets.into_iter().zip(plain) {
        for (name, value) in values {
            let armored = recipients.encrypt(&name, &value)?;
            if let Some(entry) = set.secrets.get_mut(&name) {
                entry.value = armored;
                report.secrets += 1;
            }
        }
        file::write(dir, &scope, &set)?;
        report.files += 1;
    }
    tracing::info!(
        files = report.files,
        secrets = report.secrets,
        recipients = report.recipients,
        "re-encrypted secrets"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{RECIPIENTS_FILE, add_recipient, resolve};

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn fixture() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::generate();
        add_recipient(dir.path(), &me.public_keys().concat()).unwrap();
        (dir, me)
    }

    fn value(text: &str) -> SecretValue {
        SecretValue::new(text.to_owned())
    }

    fn all_text(dir: &Path) -> String {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn set_encrypts_and_never_writes_the_plaintext() {
        let (dir, me) = fixture();
        set(
            dir.path(),
            &Scope::Common,
            "SMTP_PASSWORD",
            &value("correct horse battery"),
            Timestamp::now(),
        )
        .unwrap();
        assert!(!all_text(dir.path()).contains("correct horse"));
        let r = resolve(dir.path(), "web-1", ["SMTP_PASSWORD"], &me).unwrap();
        assert_eq!(r.value("SMTP_PASSWORD").unwrap().expose(), "correct horse battery");
    }

    #[test]
    fn set_refuses_bad_names_empty_values_and_missing_recipients() {
        let (dir, _) = fixture();
        assert!(matches!(
            set(dir.path(), &Scope::Common, "lower", &value("abcd"), Timestamp::now()),
            Err(SecretsError::BadName { .. })
        ));
        assert!(matches!(
            set(dir.path(), &Scope::Common, "A", &value(""), Timestamp::now()),
            Err(SecretsError::EmptyValue { .. })
        ));
        let huge = value(&"x".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(
            set(dir.path(), &Scope::Common, "A", &huge, Timestamp::now()),
            Err(SecretsError::TooLarge { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            set(empty.path(), &Scope::Common, "A", &value("abcd"), Timestamp::now()),
            Err(SecretsError::NoRecipients { .. })
        ));
    }

    #[test]
    fn generate_never_overwrites_without_force() {
        let (dir, me) = fixture();
        let t1 = ts("2026-01-01T00:00:00Z");
        let t2 = ts("2026-02-01T00:00:00Z");
        assert_eq!(
            generate(dir.path(), &Scope::Common, "GRAFANA_ADMIN", 32, false, t1).unwrap(),
            Generated::Created
        );
        let first = resolve(dir.path(), "x", ["GRAFANA_ADMIN"], &me).unwrap();
        let first = first.value("GRAFANA_ADMIN").unwrap().expose().to_owned();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| ALPHABET.contains(&b)));
        let again = generate(dir.path(), &Scope::Common, "GRAFANA_ADMIN", 32, false, t2).unwrap();
        assert_eq!(again, Generated::Kept { updated_at: t1 });
        let kept = resolve(dir.path(), "x", ["GRAFANA_ADMIN"], &me).unwrap();
        assert_eq!(kept.value("GRAFANA_ADMIN").unwrap().expose(), first);
        assert_eq!(
            generate(dir.path(), &Scope::Common, "GRAFANA_ADMIN", 40, true, t2).unwrap(),
            Generated::Replaced
        );
        let replaced = resolve(dir.path(), "x", ["GRAFANA_ADMIN"], &me).unwrap();
        assert_eq!(replaced.value("GRAFANA_ADMIN").unwrap().expose().len(), 40);
        assert!(generate(dir.path(), &Scope::Common, "A", 8, false, t2).is_err());
    }

    #[test]
    fn random_values_differ_and_use_the_whole_alphabet() {
        let a = random_value(4096).unwrap();
        let b = random_value(4096).unwrap();
        assert_ne!(a.expose(), b.expose());
        let distinct: std::collections::BTreeSet<u8> = a.expose().bytes().collect();
        assert_eq!(distinct.len(), 64);
    }

    #[test]
    fn list_shows_names_scopes_and_the_servers_effective_view() {
        let (dir, _) = fixture();
        let web = Scope::server("web-1").unwrap();
        set(
            dir.path(),
            &Scope::Common,
            "A",
            &value("value-a"),
            ts("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        set(
            dir.path(),
            &Scope::Common,
            "B",
            &value("value-b"),
            ts("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        set(dir.path(), &web, "B", &value("value-b2"), ts("2026-03-01T00:00:00Z")).unwrap();
        let all = list(dir.path(), None).unwrap();
        let names: Vec<_> = all.iter().map(|l| format!("{}/{}", l.scope, l.name)).collect();
        assert_eq!(names, ["common/A", "common/B", "web-1/B"]);
        let effective = list(dir.path(), Some("web-1")).unwrap();
        let names: Vec<_> = effective.iter().map(|l| format!("{}/{}", l.scope, l.name)).collect();
        assert_eq!(names, ["common/A", "web-1/B"]);
        assert_eq!(all[0].age_days(ts("2026-01-31T00:00:00Z")), 30);
    }

    #[test]
    fn rotate_after_removing_a_recipient_locks_the_removed_key_out() {
        let (dir, alice) = fixture();
        let bob = Identity::generate();
        add_recipient(dir.path(), &bob.public_keys().concat()).unwrap();
        let t = ts("2026-01-01T00:00:00Z");
        set(dir.path(), &Scope::Common, "A", &value("value-a"), t).unwrap();
        set(dir.path(), &Scope::server("db-1").unwrap(), "B", &value("value-b"), t).unwrap();
        assert!(resolve(dir.path(), "db-1", ["A", "B"], &bob).unwrap().is_complete());

        let alice_only = alice.public_keys().concat() + "\n";
        std::fs::write(dir.path().join(RECIPIENTS_FILE), alice_only).unwrap();
        let report = rotate(dir.path(), &alice).unwrap();
        assert_eq!((report.files, report.secrets, report.recipients), (2, 2, 1));

        let for_bob = resolve(dir.path(), "db-1", ["A", "B"], &bob).unwrap();
        assert_eq!(for_bob.unresolved.len(), 2, "bob must be locked out");
        let for_alice = resolve(dir.path(), "db-1", ["A", "B"], &alice).unwrap();
        assert_eq!(for_alice.value("B").unwrap().expose(), "value-b");
        assert_eq!(
            for_alice.versions()["A"],
            "common@2026-01-01T00:00:00Z",
            "updatedAt is kept"
        );
    }

    #[test]
    fn rotate_writes_nothing_when_a_value_does_not_decrypt() {
        let (dir, _alice) = fixture();
        set(dir.path(), &Scope::Common, "A", &value("value-a"), Timestamp::now()).unwrap();
        let before = all_text(dir.path());
        let err = rotate(dir.path(), &Identity::generate()).unwrap_err();
        assert!(matches!(err, SecretsError::RotateBlocked { count: 1, .. }), "{err}");
        assert!(err.to_string().contains("common.yaml: A"));
        assert_eq!(all_text(dir.path()), before);
    }
}
