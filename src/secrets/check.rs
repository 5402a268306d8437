//! `chom secrets check` as data: every reference resolves, every file reads, every value
//! decrypts with the identity, nothing is older than the age limit. Problems are findings
//! (one pass, every problem), never `Err`, and never contain a value. It must not print.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{list_files, read};
use super::store::age_days;
use super::{COMMON, Identity, Recipients, Scope, SecretSet};
use crate::status::Timestamp;

/// The secret names each server references, by server name. It must list every server in
/// the inventory, with an empty set for one that references nothing, so a `<server>.yaml`
/// for no known server can be reported; an empty map skips that report.
pub type References = BTreeMap<String, BTreeSet<String>>;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fails the check (exit 1).
    Error,
    /// Reported, but the check passes.
    Warning,
}

/// One problem. Names files and secrets, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The file concerned, if one is.
    pub file: Option<PathBuf>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    /// `error: secrets.d/common.yaml: …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.file {
            Some(file) => write!(f, "{severity}: {}: {}", file.display(), self.message),
            None => write!(f, "{severity}: {}", self.message),
        }
    }
}

/// The outcome of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Every problem found, errors first.
    pub findings: Vec<Finding>,
    /// Secrets files read.
    pub files: usize,
    /// Values found in them.
    pub secrets: usize,
    /// Values that decrypted (0 when no identity was given).
    pub decrypted: usize,
    /// (server, name) references that resolved.
    pub references: usize,
}

impl CheckReport {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn push(&mut self, severity: Severity, file: Option<&Path>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            file: file.map(Path::to_owned),
            message: message.into(),
        });
    }
}

/// Checks `dir` (`secrets.d/`) against `references`. With an `identity`, every value must
/// decrypt with it; without one (a CI run without the key) that part is skipped. Values set
/// more than `max_age` before `now` are warnings.
pub fn check(
    dir: &Path,
    references: &References,
    identity: Option<&Identity>,
    max_age: Duration,
    now: Timestamp,
) -> CheckReport {
    let mut report = CheckReport::default();
    let listing = match list_files(dir) {
        Ok(listing) => listing,
        Err(e) => {
            report.push(Severity::Error, Some(dir), e.to_string());
            return report;
        }
    };
    for stray in listing.strays {
        report.push(
            Severity::Warning,
            Some(&stray),
            "ignored: secrets files are named common.yaml or <server>.yaml after a server's metadata.name",
        );
    }
    let mut sets: BTreeMap<Scope, SecretSet> = BTreeMap::new();
    for (scope, path) in listing.sets {
        match read(&path, &scope) {
            Ok(set) => {
                sets.insert(scope, set);
            }
            // The error already starts with the file and line.
            Err(e) => report.push(Severity::Error, None, e.to_string()),
        }
    }
    report.files = sets.len();
    report.secrets = sets.values().map(|s| s.secrets.len()).sum();

    let any_reference = references.values().any(|names| !names.is_empty());
    if !sets.is_empty() || any_reference {
        recipients(dir, identity, &mut report);
    }
    resolve_references(dir, references, &sets, &mut report);
    if !references.is_empty() {
        for scope in sets.keys() {
            if let Scope::Server(server) = scope
                && !references.contains_key(server)
            {
                report.push(
                    Severity::Warning,
                    Some(&dir.join(scope.file_name())),
                    format!("there is no server {server:?} in the inventory; delete the file or rename it"),
                );
            }
        }
    }
    let max_days = max_age.as_secs() / 86_400;
    for (scope, set) in &sets {
        let path = dir.join(scope.file_name());
        for (name, entry) in &set.secrets {
            if let Some(identity) = identity {
                match identity.decrypt(&entry.value) {
                    Ok(_) => report.decrypted += 1,
                    Err(failure) => report.push(
                        Severity::Error,
                        Some(&path),
                        format!("{name} does not decrypt with {}: {failure}", identity.path().display()),
                    ),
                }
            }
            let days = age_days(entry.updated_at, now);
            if now.0.duration_since(entry.updated_at.0).is_ok_and(|age| age > max_age) {
                report.push(
                    Severity::Warning,
                    Some(&path),
                    format!(
                        "{name} was set {days} days ago (limit {max_days}); change the credential and store it \
                         with `chom secrets set {name}{}`",
                        server_flag(scope)
                    ),
                );
            }
        }
    }
    report.findings.sort_by_key(|f| f.severity);
    report
}

fn server_flag(scope: &Scope) -> String {
    match scope {
        Scope::Common => String::new(),
        Scope::Server(server) => format!(" --server {server}"),
    }
}

/// `.recipients` must read; the identity should be one of them, or values set from now on
/// will not decrypt with it (the daemon would stop resolving them after the next `set`).
fn recipients(dir: &Path, identity: Option<&Identity>, report: &mut CheckReport) {
    match Recipients::read(dir) {
        Ok(recipients) => {
            let listed = recipients.public_keys();
            if let Some(identity) = identity
                && !identity.public_keys().iter().any(|k| listed.contains(k))
            {
                report.push(
                    Severity::Warning,
                    Some(&dir.join(super::RECIPIENTS_FILE)),
                    format!(
                        "the identity {} is not a recipient, so values set from now on will not decrypt with it; \
                         add its public key ({}) and run `chom secrets rotate`",
                        identity.path().display(),
                        identity.public_keys().join(", ")
                    ),
                );
            }
        }
        Err(e) => report.push(Severity::Error, None, e.to_string()),
    }
}

fn resolve_references(
    dir: &Path,
    references: &References,
    sets: &BTreeMap<Scope, SecretSet>,
    report: &mut CheckReport,
) {
    let common = sets.get(&Scope::Common);
    for (server, names) in references {
        let scope = Scope::server(server).ok();
        let own = scope.as_ref().and_then(|s| sets.get(s));
        for name in names {
            let defined = |set: Option<&SecretSet>| set.is_some_and(|s| s.secrets.contains_key(name));
            if defined(own) || defined(common) {
                report.references += 1;
                continue;
            }
            let place = match &scope {
                Some(scope) => format!(
                    "neither in {} nor in {}",
                    dir.join(scope.file_name()).display(),
                    dir.join(Scope::Common.file_name()).display()
                ),
                None => format!("not in {}", dir.join(format!("{COMMON}.yaml")).display()),
            };
            report.push(
                Severity::Error,
                None,
                format!(
                    "server {server} references secret {name}, which is defined {place}; add it with \
                     `chom secrets set {name}` (or `--server {server}` for this server only)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{SecretValue, add_recipient, set};

    const DAY: u64 = 86_400;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn refs(entries: &[(&str, &[&str])]) -> References {
        entries
            .iter()
            .map(|(server, names)| (server.to_string(), names.iter().map(|n| n.to_string()).collect()))
            .collect()
    }

    fn fixture() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::generate();
        add_recipient(dir.path(), &me.public_keys().concat()).unwrap();
        let value = |v: &str| SecretValue::new(v.to_owned());
        set(
            dir.path(),
            &Scope::Common,
            "OLD",
            &value("old-value"),
            ts("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        set(
            dir.path(),
            &Scope::Common,
            "FRESH",
            &value("fresh-value"),
            ts("2026-05-01T00:00:00Z"),
        )
        .unwrap();
        (dir, me)
    }

    fn messages(report: &CheckReport) -> String {
        report.findings.iter().map(|f| format!("{f}\n")).collect()
    }

    #[test]
    fn a_clean_tree_passes_and_counts_what_it_checked() {
        let (dir, me) = fixture();
        let references = refs(&[("web-1", &["FRESH", "OLD"]), ("web-2", &[])]);
        let report = check(
            dir.path(),
            &references,
            Some(&me),
            Duration::from_secs(365 * DAY),
            ts("2026-05-02T00:00:00Z"),
        );
        assert!(report.findings.is_empty(), "{}", messages(&report));
        assert_eq!(
            (report.files, report.secrets, report.decrypted, report.references),
            (1, 2, 2, 2)
        );
    }

    #[test]
    fn an_unresolved_reference_is_an_error_that_names_server_and_secret() {
        let (dir, me) = fixture();
        let references = refs(&[("web-1", &["MISSING_ONE"])]);
        let report = check(
            dir.path(),
            &references,
            Some(&me),
            Duration::from_secs(365 * DAY),
            ts("2026-05-02T00:00:00Z"),
        );
        assert!(report.has_errors());
        let text = messages(&report);
        assert!(text.contains("server web-1 references secret MISSING_ONE"), "{text}");
        assert!(!text.contains("-value"), "{text}");
    }

    #[test]
    fn values_older_than_max_age_warn_without_failing() {
        let (dir, me) = fixture();
        let report = check(
            dir.path(),
            &References::new(),
            Some(&me),
            Duration::from_secs(90 * DAY),
            ts("2026-05-02T00:00:00Z"),
        );
        assert!(!report.has_errors(), "{}", messages(&report));
        assert_eq!(report.findings.len(), 1, "{}", messages(&report));
        let text = messages(&report);
        assert!(
            text.starts_with("warning: ") && text.contains("OLD was set 121 days ago (limit 90)"),
            "{text}"
        );
    }

    #[test]
    fn values_the_identity_cannot_read_are_errors_and_a_stranger_identity_warns() {
        let (dir, _me) = fixture();
        let stranger = Identity::generate();
        let report = check(
            dir.path(),
            &References::new(),
            Some(&stranger),
            Duration::from_secs(365 * DAY),
            ts("2026-05-02T00:00:00Z"),
        );
        let text = messages(&report);
        assert_eq!(
            report.findings.iter().filter(|f| f.severity == Severity::Error).count(),
            2,
            "{text}"
        );
        assert!(
            text.contains("OLD does not decrypt") && text.contains("is not a recipient"),
            "{text}"
        );
        assert!(!text.contains("old-value") && !text.contains("fresh-value"), "{text}");
    }

    #[test]
    fn broken_plaintext_stray_and_orphan_files_are_all_reported_in_one_pass() {
        let (dir, me) = fixture();
        let d = dir.path();
        std::fs::write(
            d.join("db-1.yaml"),
            "apiVersion: chom.dev/v1\nkind: SecretSet\nmetadata: {name: db-1}\nsecrets:\n  PW: hunter2-plain\n",
        )
        .unwrap();
        std::fs::write(
            d.join("web-9.yaml"),
            "apiVersion: chom.dev/v1\nkind: SecretSet\nmetadata: {name: web-9}\nsecrets: {}\n",
        )
        .unwrap();
        std::fs::write(d.join("Web.yml"), "x: 1\n").unwrap();
        let references = refs(&[("db-1", &[]), ("web-1", &[])]);
        let report = check(
            d,
            &references,
            Some(&me),
            Duration::from_secs(365 * DAY),
            ts("2026-05-02T00:00:00Z"),
        );
        let text = messages(&report);
        assert!(
            text.contains("db-1.yaml:5:7: secret PW holds a plaintext value"),
            "{text}"
        );
        assert!(text.contains("no server \"web-9\""), "{text}");
        assert!(text.contains("Web.yml: ignored"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(report.has_errors());
    }

    #[test]
    fn an_empty_folder_with_no_references_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let report = check(
            &dir.path().join("absent"),
            &References::new(),
            None,
            Duration::from_secs(DAY),
            Timestamp::now(),
        );
        assert_eq!(report, CheckReport::default());
    }
}
