//! Component scripts: the stdin that carries a script and its environment to `sh -s`,
//! the applied digest, and the `::chom::` output protocol. Pure functions; running the
//! script over SSH is the reconciler's job.
//!
//! Contract (see the README): the script runs under `sh -s` (through `sudo -n` for a
//! non-root user). Its environment arrives inside stdin, never on a command line:
//! `CHOM_SERVER`, `CHOM_COMPONENT`, `CHOM_VERSION`, `CHOM_MODE` (`apply` or `check`),
//! `CHOM_DEPLOYMENT_ID`, `CHOM_CONFIG` (the merged config as JSON) and one flat
//! `CHOM_CFG_<PATH>` per config value. Stdout lines starting `::chom::` report facts.
//! Exit 0 is success; in check mode [`CHECK_WOULD_CHANGE`] means "would change".

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::desired::{DesiredComponent, hex};
use crate::status::{Artifact, ReportedResource};

/// Exit status with which a script in `check` mode says it would change something.
pub const CHECK_WOULD_CHANGE: u32 = 100;

/// Whether a run may change the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Make the server match.
    Apply,
    /// Only say whether it matches (exit 0) or would change ([`CHECK_WOULD_CHANGE`]).
    Check,
    /// Undo what the component installed (dropped from the list under `prune: true`);
    /// scripts must never delete data directories.
    Remove,
}

impl Mode {
    /// `apply`, `check` or `remove`, as `CHOM_MODE` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Check => "check",
            Mode::Remove => "remove",
        }
    }
}

/// Single-quotes a value for POSIX sh: the only character needing care is `'` itself.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `CHOM_CFG_` variables for every scalar in the config, keys joined by `_` and
/// upper-cased (`smtp.host` → `CHOM_CFG_SMTP_HOST`); arrays are passed as JSON.
pub fn flat_config(config: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = crate::resource::shell_name(k);
                    walk(&format!("{prefix}_{key}"), v, out);
                }
            }
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            Value::Null => out.push((prefix.to_owned(), String::new())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("CHOM_CFG", &Value::Object(config.clone()), &mut out);
    out
}

/// What one run is about.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The server's name.
    pub server: &'a str,
    /// The component.
    pub component: &'a DesiredComponent,
    /// Apply or check.
    pub mode: Mode,
    /// The deployment this run belongs to.
    pub deployment_id: &'a str,
    /// The server's decrypted secrets, exported by name.
    pub secrets: Option<&'a crate::secrets::Resolved>,
}

/// The server-wide script lock: every component run holds it while its script runs, so two
/// runs never overlap on one server, whoever started them, whatever happened to the control
/// host that did (a script left running after a crash or a kill -9 still holds it until it
/// ends or its deadline kills it). The sh that reads the stdin holds `flock` on fd 9 and calls
/// the script's function with fd 9 closed (`9>&-`): for the call, the shell keeps the lock
/// on a saved close-on-exec copy (dash, bash and BusyBox ash all do), so the lock is held
/// while the script runs, without a subshell's fork, and a program the script leaves in the
/// background never holds it. `@WAIT@` is how long to wait for it. The server may
/// move the lock with `CHOM_SCRIPT_LOCK` in the login environment (sshd's `SetEnv`).
const SCRIPT_LOCK: &str = r#"if command -v flock >/dev/null 2>&1; then
    chom_lock=${CHOM_SCRIPT_LOCK:-/run/lock/chom.lock}
    [ -n "${CHOM_SCRIPT_LOCK:-}" ] || { [ -d /run/lock ] && [ -w /run/lock ]; } || chom_lock=/tmp/chom.lock
    if true >>"$chom_lock" 2>/dev/null; then
        exec 9>>"$chom_lock"
        if ! flock -w @WAIT@ 9; then
            echo "chom: another chom run has held this server's script lock ($chom_lock) for over @WAIT@ s, so this script did not run; the next pass retries (after a control-host crash or restart, a script the old run left behind holds it until it ends or its deadline kills it)" >&2
            exit 75
        fi
    else
        echo "::chom:: warning cannot open the script lock $chom_lock: runs of chom on this server are not kept apart"
    fi
else
    echo "::chom:: warning flock(1) is missing (util-linux or BusyBox provides it): runs of chom on this server are not kept apart"
fi
"#;

/// The longest a run waits for the server's script lock: the lesser of 30 s and half its
/// deadline.
fn lock_wait(timeout: std::time::Duration) -> u64 {
    (timeout.as_secs() / 2).clamp(1, 30)
}

/// The bytes sent to `sh -s`: the environment, then the script wrapped in a function
/// that runs with stdin from /dev/null, under the server's script lock ([`SCRIPT_LOCK`]).
/// The shell thus reads the whole script before running any of it, so a command that reads
/// stdin cannot swallow the rest, and a transfer cut short is a syntax error that runs
/// nothing. The script's bytes are sent exactly as they are, whatever their encoding.
pub fn stdin_for(run: Run<'_>, script: &[u8]) -> Vec<u8> {
    let c = run.component;
    let mut env = vec![
        ("CHOM_SERVER".to_owned(), run.server.to_owned()),
        ("CHOM_COMPONENT".to_owned(), c.name.clone()),
        ("CHOM_VERSION".to_owned(), c.version.clone().unwrap_or_default()),
        ("CHOM_MODE".to_owned(), run.mode.as_str().to_owned()),
        ("CHOM_DEPLOYMENT_ID".to_owned(), run.deployment_id.to_owned()),
        ("CHOM_CONFIG".to_owned(), Value::Object(c.config.clone()).to_string()),
    ];
    env.extend(flat_config(&c.config));
    if let Some(resolved) = run.secrets {
        // Only ever inside this stdin: never argv, never a local environment, never a
        // remote file. Quoted the way the redactor expects (`'\''`).
        env.extend(
            resolved
                .secrets
                .iter()
                .map(|(name, s)| (name.clone(), s.value.expose().to_owned())),
        );
    }
    let mut out = b"chom_component() {\n".to_vec();
    out.extend_from_slice(script);
    if !script.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(b"}\n");
    for (key, value) in &env {
        out.extend_from_slice(format!("{key}={}; export {key}\n", shell_quote(value)).as_bytes());
    }
    let wait = lock_wait(if c.timeout.is_zero() {
        crate::desired::DEFAULT_COMPONENT_TIMEOUT
    } else {
        c.timeout
    });
    out.extend_from_slice(SCRIPT_LOCK.replace("@WAIT@", &wait.to_string()).as_bytes());
    out.extend_from_slice(b"chom_component </dev/null 9>&-\n");
    out
}

/// The applied digest: script bytes, version, merged config and the versions of the
/// server's secrets. Unchanged digest + last run succeeded = nothing to apply.
pub fn digest(
    component: &DesiredComponent,
    script: &[u8],
    secret_versions: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(Sha256::digest(script));
    hasher.update(component.version.as_deref().unwrap_or("").as_bytes());
    hasher.update([0]);
    hasher.update(Value::Object(component.config.clone()).to_string().as_bytes());
    for (name, version) in secret_versions {
        hasher.update([0]);
        hasher.update(name.as_bytes());
        hasher.update(version.as_bytes());
    }
    format!("sha256:{}", hex(&hasher.finalize()[..16]))
}

/// SHA-256 of a script's bytes (first 16 bytes, hex).
pub fn script_sha(script: &[u8]) -> String {
    hex(&Sha256::digest(script)[..16])
}

/// What a pass has to do with one component, decided from digests and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Never applied on this server.
    NeverApplied,
    /// The script's bytes changed since it was applied.
    ScriptChanged,
    /// The version or merged config changed since it was applied.
    ConfigChanged,
    /// The last run failed (or was skipped): apply again.
    NotApplied,
    /// Applied with this digest; a check run is due.
    CheckDue,
    /// Applied with this digest and checked recently: nothing to run.
    InSync,
    /// Applied again on request, whatever its digest (a rollback to kept scripts).
    Reapply,
}

impl Pending {
    /// Why an apply run is due, for people; `None` when only a check (or nothing) is.
    pub fn apply_reason(&self) -> Option<&'static str> {
        match self {
            Pending::NeverApplied => Some("never applied"),
            Pending::ScriptChanged => Some("script changed"),
            Pending::ConfigChanged => Some("version or config changed"),
            Pending::NotApplied => Some("the last run did not succeed"),
            Pending::Reapply => Some("re-applied from a kept deployment"),
            Pending::CheckDue | Pending::InSync => None,
        }
    }
}

/// Decides what to do with a component: compare the applied digest with the current
/// one; an unchanged component is checked once per `interval` (a pass triggered by a
/// change elsewhere does not re-run it).
pub fn pending(
    previous: Option<&crate::status::ComponentStatus>,
    digest: &str,
    script: &[u8],
    interval: std::time::Duration,
    now: std::time::SystemTime,
) -> Pending {
    use crate::status::ComponentState;
    let Some(p) = previous else {
        return Pending::NeverApplied;
    };
    if p.applied_digest.as_deref() != Some(digest) {
        if p.applied_digest.is_none() {
            return Pending::NeverApplied;
        }
        return if p.applied_script.as_deref() != Some(&script_sha(script)) {
            Pending::ScriptChanged
        } else {
            Pending::ConfigChanged
        };
    }
    if !matches!(p.state, ComponentState::Applied | ComponentState::Drifted) {
        return Pending::NotApplied;
    }
    // Passes come back after `interval` ±10 %; 85 % keeps a jittered-early pass a check.
    let due = interval.mul_f64(0.85);
    let last = p.last_check_time.or(p.last_applied_at);
    match last.and_then(|t| now.duration_since(t.0).ok()) {
        Some(age) if age < due && p.state == ComponentState::Applied => Pending::InSync,
        _ => Pending::CheckDue,
    }
}

/// What a script reported on stdout through `::chom::` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `::chom:: changed` was printed.
    pub changed: bool,
    /// `::chom:: resource KIND NAME` lines.
    pub resources: Vec<ReportedResource>,
    /// `::chom:: warning TEXT` lines.
    pub warnings: Vec<String>,
    /// `::chom:: artifact SHA256 URL VERIFIED-BY` lines.
    pub artifacts: Vec<Artifact>,
    /// Resources past [`RESOURCES_MAX`], counted and not listed.
    pub resources_not_listed: u64,
    /// What a check run would change in managed files: `::chom:: diff-begin PATH`, the
    /// unified diff's lines, `::chom:: diff-end`; or `::chom:: diff-secret PATH` for a file
    /// whose contents are never shown. At most [`DIFFS_MAX`], each capped.
    pub diffs: Vec<FileDiff>,
}

/// One managed file's pending change, as a check run reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDiff {
    /// The file on the server.
    pub path: String,
    /// The unified diff (current file → what apply would write); empty for a secret.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
    /// A secret file: that it would change is all that is said.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// Lines past [`DIFF_LINES_MAX`] or [`DIFF_BYTES_MAX`] were left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The most files a run reports diffs for.
pub const DIFFS_MAX: usize = 20;
/// The most lines kept of one file's diff.
pub const DIFF_LINES_MAX: usize = 200;
/// The most bytes kept of one file's diff.
pub const DIFF_BYTES_MAX: usize = 16 * 1024;

/// Reads `::chom::` lines; other output is ignored. Unknown verbs are kept as warnings
/// so a typo in a script is visible instead of silently dropped.
pub fn parse_report(stdout: &str) -> Report {
    let mut report = Report::default();
    let mut warnings = Vec::new();
    let mut artifacts_dropped = 0u64;
    let mut diffs_dropped = 0u64;
    // The diff being read: inside a block every line is diff text (a context line may
    // itself hold `::chom::`), until exactly `::chom:: diff-end`.
    let mut open_diff: Option<FileDiff> = None;
    for line in stdout.lines() {
        if let Some(diff) = &mut open_diff {
            if line.trim_end() == "::chom:: diff-end" {
                let done = open_diff.take().unwrap_or_default();
                if report.diffs.len() < DIFFS_MAX {
                    report.diffs.push(done);
                } else {
                    diffs_dropped += 1;
                }
            } else if diff.diff.lines().count() >= DIFF_LINES_MAX || diff.diff.len() + line.len() + 1 > DIFF_BYTES_MAX {
                diff.truncated = true;
            } else {
                diff.diff.push_str(line);
                diff.diff.push('\n');
            }
            continue;
        }
        let Some(rest) = line.trim_start().strip_prefix("::chom::") else {
            continue;
        };
        let rest = rest.trim();
        let (verb, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        match verb {
            "changed" => report.changed = true,
            "resource" => {
                if let Some((kind, name)) = args.trim().split_once(char::is_whitespace) {
                    let resource = ReportedResource {
                        kind: head(kind, FIELD_MAX),
                        name: head(name.trim(), FIELD_MAX),
                    };
                    if report.resources.contains(&resource) {
                    } else if report.resources.len() < RESOURCES_MAX {
                        report.resources.push(resource);
                    } else {
                        report.resources_not_listed += 1;
                    }
                }
            }
            "warning" => warnings.push(head(args.trim(), FIELD_MAX)),
            "diff-begin" => {
                open_diff = Some(FileDiff {
                    path: head(args.trim(), FIELD_MAX),
                    ..FileDiff::default()
                });
            }
            "diff-secret" => {
                if report.diffs.len() < DIFFS_MAX {
                    report.diffs.push(FileDiff {
                        path: head(args.trim(), FIELD_MAX),
                        secret: true,
                        ..FileDiff::default()
                    });
                } else {
                    diffs_dropped += 1;
                }
            }
            "artifact" => {
                let mut fields = args.trim().splitn(3, char::is_whitespace);
                match (fields.next(), fields.next(), fields.next()) {
                    (Some(sha256), Some(url), verified_by)
                        if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        let artifact = Artifact {
                            url: head(url, FIELD_MAX),
                            sha256: sha256.to_ascii_lowercase(),
                            verified_by: head(verified_by.unwrap_or("").trim(), FIELD_MAX),
                        };
                        if report.artifacts.contains(&artifact) {
                        } else if report.artifacts.len() < REPORTED_MAX {
                            report.artifacts.push(artifact);
                        } else {
                            artifacts_dropped += 1;
                        }
                    }
                    _ => warnings.push(format!(
                        "malformed ::chom:: artifact line `{}`",
                        head(args.trim(), FIELD_MAX)
                    )),
                }
            }
            other => warnings.push(format!("unknown ::chom:: line `{}`", head(other, FIELD_MAX))),
        }
    }
    let dropped = warnings.len().saturating_sub(REPORTED_MAX);
    warnings.truncate(REPORTED_MAX);
    report.warnings = warnings;
    if dropped > 0 {
        report.warnings.push(format!("{dropped} more warnings not kept"));
    }
    // A block the script never closed (it exited inside `diff`) is kept as it is.
    if let Some(mut diff) = open_diff {
        diff.truncated = true;
        if report.diffs.len() < DIFFS_MAX {
            report.diffs.push(diff);
        } else {
            diffs_dropped += 1;
        }
    }
    if diffs_dropped > 0 {
        report
            .warnings
            .push(format!("{diffs_dropped} more file diffs not kept"));
    }
    if artifacts_dropped > 0 {
        report
            .warnings
            .push(format!("{artifacts_dropped} more artifacts not kept"));
    }
    report
}

/// The most of a script's output a message in status keeps: its last 8 KiB.
pub const MESSAGE_MAX: usize = 8 * 1024;

/// The most resources a component's status lists; the rest are counted.
pub const RESOURCES_MAX: usize = 100;

/// The most warnings and artifacts a run reports; the rest are counted in a warning.
const REPORTED_MAX: usize = 20;

/// The longest name, URL or warning kept from one `::chom::` line.
const FIELD_MAX: usize = 1024;

/// The last `n` lines of text, at most [`MESSAGE_MAX`] bytes of them (the end), for failure
/// messages in status.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    tail(&lines[lines.len().saturating_sub(n)..].join("\n"), MESSAGE_MAX)
}

/// The end of `text`, at most `max` bytes, cut at a character boundary, after `…` when
/// something was cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut at = text.len() - max;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    format!("…{}", &text[at..])
}

/// The start of `text`, at most `max` bytes, cut at a character boundary, before `…` when
/// something was cut.
pub fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}…", &text[..at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn component() -> DesiredComponent {
        DesiredComponent {
            name: "nginx".into(),
            version: Some("1.24".into()),
            config: json!({"smtp": {"host": "mail.example.com", "port": 587}, "motto": "it's fine", "list": [1, 2]})
                .as_object()
                .cloned()
                .unwrap(),
            timeout: Duration::from_secs(600),
            script_sha256: None,
        }
    }

    #[test]
    fn config_is_flattened_into_shell_variables() {
        let flat = flat_config(&component().config);
        assert!(flat.contains(&("CHOM_CFG_SMTP_HOST".into(), "mail.example.com".into())));
        assert!(flat.contains(&("CHOM_CFG_SMTP_PORT".into(), "587".into())));
        assert!(flat.contains(&("CHOM_CFG_LIST".into(), "[1,2]".into())));
    }

    #[test]
    fn the_environment_reaches_a_real_shell_through_stdin() {
        let c = component();
        let run = Run {
            server: "web-1",
            component: &c,
            mode: Mode::Check,
            deployment_id: "d-1",
            secrets: None,
        };
        let script = b"#!/bin/sh\nread line || true\necho \"$CHOM_SERVER $CHOM_MODE $CHOM_VERSION [$line]\"\necho \"$CHOM_CFG_MOTTO\"\necho \"$CHOM_CONFIG\"\nexit 100";
        let out = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(&stdin_for(run, script))?;
                child.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("web-1 check 1.24 []"),
            "the script's stdin is empty: {text}"
        );
        assert_eq!(lines.next(), Some("it's fine"));
        let config: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(config["smtp"]["port"], 587);
        assert_eq!(out.status.code(), Some(CHECK_WOULD_CHANGE as i32));
    }

    #[test]
    fn digests_change_with_script_version_and_config() {
        let none = std::collections::BTreeMap::new();
        let c = component();
        let base = digest(&c, b"echo a", &none);
        assert_eq!(base, digest(&c, b"echo a", &none));
        assert_ne!(base, digest(&c, b"echo b", &none));
        let mut v = c.clone();
        v.version = Some("1.25".into());
        assert_ne!(base, digest(&v, b"echo a", &none));
        let mut k = c.clone();
        k.config.insert("x".into(), json!(1));
        assert_ne!(base, digest(&k, b"echo a", &none));
        let rotated =
            std::collections::BTreeMap::from([("DB_PASSWORD".to_owned(), "common@2026-11-26T12:00:00Z".to_owned())]);
        assert_ne!(base, digest(&c, b"echo a", &rotated), "a changed secret is re-applied");
    }

    #[test]
    fn diff_blocks_are_kept_verbatim_capped_and_secret_files_only_named() {
        let stdout = "::chom:: diff-begin /etc/app.conf\n--- /etc/app.conf\n+++ /etc/app.conf (as chom would write it)\n@@ -1 +1 @@\n-a\n+b\n ::chom:: changed\n::chom:: diff-end\n::chom:: diff-secret /etc/app.key\n::chom:: resource file /etc/app.conf\n";
        let r = parse_report(stdout);
        assert!(!r.changed, "a line inside a diff is diff text, not a report");
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.diffs.len(), 2);
        assert_eq!(r.diffs[0].path, "/etc/app.conf");
        assert!(r.diffs[0].diff.ends_with("+b\n ::chom:: changed\n") && !r.diffs[0].truncated);
        assert_eq!(
            r.diffs[1],
            FileDiff {
                path: "/etc/app.key".into(),
                secret: true,
                ..FileDiff::default()
            }
        );
        // Capped: lines past the limit are dropped and said to be.
        let long: String = (0..500).map(|i| format!("+line {i}\n")).collect();
        let r = parse_report(&format!("::chom:: diff-begin /big\n{long}::chom:: diff-end\n"));
        assert_eq!(r.diffs[0].diff.lines().count(), DIFF_LINES_MAX);
        assert!(r.diffs[0].truncated);
        // A block never closed is kept, marked cut.
        let r = parse_report("::chom:: diff-begin /x\n+y\n");
        assert_eq!((r.diffs[0].diff.as_str(), r.diffs[0].truncated), ("+y\n", true));
    }

    #[test]
    fn chom_lines_are_parsed_and_unknown_verbs_warned() {
        let r = parse_report(
            "hello\n::chom:: resource service nginx\n::chom:: changed\n::chom:: resource port 80\n::chom:: resource service nginx\n::chom:: warning disk almost full\n::chom:: chnaged\n",
        );
        assert!(r.changed);
        assert_eq!(r.resources.len(), 2);
        assert_eq!(
            r.resources[1],
            ReportedResource {
                kind: "port".into(),
                name: "80".into()
            }
        );
        assert_eq!(
            r.warnings,
            vec![
                "disk almost full".to_owned(),
                "unknown ::chom:: line `chnaged`".to_owned()
            ]
        );
    }

    #[test]
    fn artifact_lines_keep_the_digest_and_what_vouched_for_it() {
        let sha = "AB".repeat(32);
        let r = parse_report(&format!(
            "::chom:: artifact {sha} https://mirror.test/v1/x.zip published https://mirror.test/v1/SHA256SUMS\n::chom:: artifact nothex https://x\n"
        ));
        assert_eq!(
            r.artifacts,
            vec![Artifact {
                url: "https://mirror.test/v1/x.zip".into(),
                sha256: "ab".repeat(32),
                verified_by: "published https://mirror.test/v1/SHA256SUMS".into(),
            }]
        );
        assert_eq!(
            r.warnings,
            vec!["malformed ::chom:: artifact line `nothex https://x`".to_owned()]
        );
    }

    #[test]
    fn reports_are_capped_and_say_what_they_left_out() {
        let mut stdout = String::new();
        for i in 0..20_002 {
            stdout.push_str(&format!("::chom:: resource file /srv/{i}\n"));
        }
        for i in 0..30 {
            stdout.push_str(&format!("::chom:: warning w{i} {}\n", "y".repeat(5000)));
        }
        let r = parse_report(&stdout);
        assert_eq!(r.resources.len(), RESOURCES_MAX);
        assert_eq!(r.resources_not_listed, 20_002 - RESOURCES_MAX as u64);
        assert_eq!(r.warnings.len(), REPORTED_MAX + 1);
        assert!(r.warnings.iter().all(|w| w.len() <= FIELD_MAX + '…'.len_utf8()));
        assert_eq!(r.warnings[REPORTED_MAX], "10 more warnings not kept");
    }

    #[test]
    fn messages_keep_the_last_lines_and_at_most_their_last_8_kib() {
        let text = format!("{}\nthe real error é\n", "z".repeat(100_000));
        let m = last_lines(&text, 20);
        assert!(m.len() <= MESSAGE_MAX + '…'.len_utf8());
        assert!(m.ends_with("the real error é"));
        assert_eq!(tail("aé", 1), "…"); // never cuts inside a character
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
