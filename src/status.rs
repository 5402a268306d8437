//! The status subresource `<name>.status.yaml` (`kind: ServerStatus`): its model,
//! Kubernetes-style conditions with kstatus semantics. It describes what was observed; it
//! never holds a secret value.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hardware::Hardware;
use crate::resource::ApiVersion;
/// Timestamps live in `time.rs`; status files, history and secrets all use them.
pub use crate::time::Timestamp;

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
    /// The last few passes, newest first (at most [`RECENT_RUNS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<LastReconcile>,
    /// Findings that keep the server's file from validating; its last valid desired
    /// state stays in force meanwhile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec_errors: Vec<String>,
    /// The git source's revision (commit and ref) whose desired state for this server
    /// was last applied with success (a git-sourced daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<crate::source::Revision>,
}

/// How many passes `recentRuns` keeps.
pub const RECENT_RUNS: usize = 5;

/// Condition types chom writes.
pub mod types {
    /// kstatus: the server is converged to its desired state.
    pub const READY: &str = "Ready";
    /// kstatus: present (True) only while a pass is under way.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: present (True) only while progress is blocked and needs a person.
    pub const STALLED: &str = "Stalled";
    /// The server's file validates.
    pub const SPEC_VALID: &str = "SpecValid";
    /// SSH connection and login work.
    pub const REACHABLE: &str = "Reachable";
    /// The hardware probe ran and was understood.
    pub const HARDWARE_DETECTED: &str = "HardwareDetected";
    /// Detected hardware agrees with `expectedSpecs`.
    pub const SPECS_MATCH: &str = "SpecsMatch";
    /// Detected hardware meets the Role's minimums.
    pub const REQUIREMENTS_MET: &str = "RequirementsMet";
    /// Every referenced secret was found and decrypted.
    pub const SECRETS_RESOLVED: &str = "SecretsResolved";
    /// Every component is applied and in sync.
    pub const COMPONENTS_READY: &str = "ComponentsReady";
    /// True while drift found by a check run is not corrected (`driftPolicy: report`);
    /// False says when drift was last corrected or that the last checks found none.
    pub const DRIFTED: &str = "Drifted";
    /// Present (True) while `chom rollback` holds the server at an earlier deployment.
    pub const PINNED: &str = "Pinned";
}

/// Condition reasons chom writes (CamelCase, machine-readable), in one place. Reasons
/// from the SSH and detection errors (`HostKeyChanged`, `AuthFailed`, …) come from
/// those errors' `reason()`, and the hardware judgements' from `judge`.
pub mod reasons {
    /// Ready: every component applied (and checked, the message says when).
    pub const RECONCILED: &str = "Reconciled";
    /// Ready: `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// Ready: a rollback pin holds the server.
    pub const PINNED: &str = "Pinned";
    /// Pinned: the reason of the pin itself.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Ready: a `dependsOn` server is not Ready at its current generation.
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    /// Ready, ComponentsReady: a component failed.
    pub const COMPONENT_FAILED: &str = "ComponentFailed";
    /// ComponentsReady: every component applied.
    pub const ALL_APPLIED: &str = "AllApplied";
    /// Ready, Drifted: drift found and left alone (`driftPolicy: report`).
    pub const DRIFT_FOUND: &str = "DriftFound";
    /// Drifted: drift was found and corrected in the last pass.
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    /// Drifted: the last checks found none.
    pub const IN_SYNC: &str = "InSync";
    /// Ready: the pass was interrupted (Ctrl-C, shutdown) before it finished.
    pub const INTERRUPTED: &str = "Interrupted";
    /// Reconciling: a new generation waits for its pass.
    pub const NEW_GENERATION: &str = "NewGeneration";
    /// SpecValid.
    pub const VALID: &str = "Valid";
    /// SpecValid False.
    pub const INVALID: &str = "Invalid";
    /// Reachable.
    pub const CONNECTED: &str = "Connected";
    /// HardwareDetected Unknown: not connected.
    pub const UNREACHABLE: &str = "Unreachable";
    /// HardwareDetected.
    pub const DETECTED: &str = "Detected";
    /// SecretsResolved.
    pub const RESOLVED: &str = "Resolved";
    /// SecretsResolved False: no age identity.
    pub const NO_IDENTITY: &str = "NoIdentity";
    /// SecretsResolved False: secrets.d cannot be read or decrypted.
    pub const SECRETS_UNREADABLE: &str = "SecretsUnreadable";
    /// SecretsResolved False: a referenced secret is missing.
    pub const SECRET_MISSING: &str = "SecretMissing";
}

impl ObservedStatus {
    /// The condition of this type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets a condition. `lastTransitionTime` moves only when `status` changes, as
    /// Kubernetes API conventions require; reason and message are always updated.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        generation: u64,
        now: Timestamp,
    ) {
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                reason.clone_into(&mut c.reason);
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message,
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }

    /// Removes a condition (kstatus: `Reconciling` and `Stalled` exist only while true).
    pub fn remove_condition(&mut self, type_: &str) {
        self.conditions.retain(|c| c.type_ != type_);
    }

    /// True when `Ready` is True for `generation`.
    pub fn is_ready_at(&self, generation: u64) -> bool {
        self.observed_generation == generation
            && self
                .condition(types::READY)
                .is_some_and(|c| c.status == ConditionStatus::True)
    }
}

/// The generation a server's desired state gets: unchanged while its hash is the one
/// recorded, one more when it differs, 1 for a server never seen.
pub fn generation_for(previous: Option<&ServerStatus>, desired_hash: &str) -> u64 {
    match previous {
        Some(p) if p.metadata.desired_hash.as_deref() == Some(desired_hash) => p.metadata.generation,
        Some(p) => p.metadata.generation + 1,
        None => 1,
    }
}

/// The whole status document of a server.
pub fn document(name: &str, generation: u64, desired_hash: &str, observed: ObservedStatus) -> ServerStatus {
    ServerStatus {
        api_version: ApiVersion::V1,
        kind: StatusKind::ServerStatus,
        metadata: StatusMetadata {
            name: name.to_owned(),
            generation,
            desired_hash: Some(desired_hash.to_owned()),
        },
        status: observed,
    }
}

/// Reads a status file; `None` when absent or unreadable (it is rebuilt then). Only a
/// regular file chom could have written is read: a symlink, FIFO, device or a file over
/// [`crate::fsread::cap::STATUS`] counts as absent, and the next write replaces it.
pub fn read(path: &std::path::Path) -> Option<ServerStatus> {
    let text = crate::fsread::read_own(path, crate::fsread::cap::STATUS).ok()?;
    serde_saphyr::from_str(&text).ok()
}

/// The largest status file chom means to write. Messages and lists are capped where they
/// are made (a message keeps the last 8 KiB of stderr, a component lists 100 resources); a
/// status still larger (many components, each at its caps) is shrunk as it is written:
/// messages to their ends, lists to their starts, with counts of what was left out.
pub const STATUS_MAX: usize = 256 * 1024;

/// The exact bytes of a status file: `status`, shrunk to fit [`STATUS_MAX`] when needed.
pub fn render(status: &ServerStatus) -> Result<String, serde_saphyr::SerializeError> {
    let full = render_exact(status)?;
    if full.len() <= STATUS_MAX {
        return Ok(full);
    }
    let mut text = full;
    for (message, list) in [(2048, 16), (256, 0)] {
        let mut small = status.clone();
        shrink(&mut small.status, message, list);
        text = render_exact(&small)?;
        if text.len() <= STATUS_MAX {
            break;
        }
    }
    Ok(text)
}

fn render_exact(status: &ServerStatus) -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(status)?;
    Ok(format!(
        "# Written by chom; do not edit. Schema: https://chom.dev/schemas/status.schema.json\n{body}"
    ))
}

/// Cuts every message to its last `message` bytes and every list to its first `list` entries.
fn shrink(status: &mut ObservedStatus, message: usize, list: usize) {
    use crate::component::tail;
    for c in &mut status.conditions {
        c.message = tail(&c.message, message);
    }
    for c in &mut status.components {
        c.message = c.message.as_deref().map(|m| tail(m, message));
        if c.resources.len() > list {
            c.resources_not_listed += (c.resources.len() - list) as u64;
            c.resources.truncate(list);
        }
        c.artifacts.truncate(list.max(1));
    }
    if status.spec_errors.len() > list.max(1) {
        let more = status.spec_errors.len() - list.max(1);
        status.spec_errors.truncate(list.max(1));
        status.spec_errors.push(format!("… {more} more (run `chom validate`)"));
    }
    for e in &mut status.spec_errors {
        *e = tail(e, message);
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Status files hold remote output (redacted, but redaction cannot catch every form of a
/// secret): readable by the owner's group, like history records and the audit trail, not
/// by everyone.
pub const STATUS_FILE_MODE: u32 = 0o640;

/// Writes `status` to `path` only when its bytes differ from what is there, so an idle
/// fleet causes no disk writes and no watch events. The write is atomic: a temp file in
/// the same folder, fsync, rename, then fsync of the folder, so a crash or a full disk
/// leaves either the old file or the new one, never a torn one. Returns whether it wrote.
pub fn write_if_changed(path: &std::path::Path, status: &ServerStatus) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = render(status).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    // Whatever is there that is not a regular file (a FIFO, a symlink to a device) is
    // never read, only replaced: the rename swaps the directory entry itself.
    if crate::fsread::read_own(path, crate::fsread::cap::STATUS).is_ok_and(|old| old == text) {
        // A file written 0644 by an older chom gets the current mode without a rewrite.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o777 != STATUS_FILE_MODE
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(STATUS_FILE_MODE))?;
        }
        return Ok(false);
    }
    crate::atomic::write(path, text.as_bytes(), STATUS_FILE_MODE)?;
    Ok(true)
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
    /// When chom last looked at it on the server: a check run, or an apply run (which
    /// leaves it in sync). A pass that skipped it (checked within its `interval`) leaves
    /// this unchanged, so it always says how fresh the verdict is.
    #[serde(
        default,
        alias = "lastCheckedAt",
        rename = "lastCheckTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_check_time: Option<Timestamp>,
    /// What that last look found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_result: Option<CheckResult>,
    /// SHA-256 (first 16 bytes, hex) of the script last applied, so a plan can tell a
    /// changed script from a changed config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_script: Option<String>,
    /// Resources the script reported (`::chom:: resource KIND NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ReportedResource>,
    /// Resources the script reported past the most a status lists (100), counted only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resources_not_listed: u64,
    /// Downloads the script verified and installed (`::chom:: artifact SHA256 URL FROM`),
    /// so the status says which bytes run on the server and what vouched for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
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
    /// Dropped from the server's list; what it installed is still there (set
    /// `prune: true` to remove it).
    Orphaned,
}

/// What the last look at a component on its server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CheckResult {
    /// A check run found it in sync.
    InSync,
    /// An apply run made it match (first apply, or a new script, version or config).
    Applied,
    /// A check run found drift and an apply run corrected it.
    DriftCorrected,
    /// A check run found drift that was left alone (`driftPolicy: report`).
    DriftFound,
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

/// A download a component verified before installing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// Where it came from.
    pub url: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// What the checksum was checked against: `published <checksum URL>` or `config sha256`.
    pub verified_by: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(generation: u64) -> ServerStatus {
        ServerStatus {
            api_version: ApiVersion::V1,
            kind: StatusKind::ServerStatus,
            metadata: StatusMetadata {
                name: "web-1".into(),
                generation,
                desired_hash: Some("ab12".into()),
            },
            status: ObservedStatus {
                observed_generation: generation,
                ..ObservedStatus::default()
            },
        }
    }

    #[test]
    fn a_status_at_every_cap_is_written_under_the_limit_keeping_the_ends_of_messages() {
        let mut status = sample(1);
        for i in 0..40 {
            status.status.components.push(ComponentStatus {
                name: format!("c{i}"),
                state: ComponentState::Failed,
                applied_digest: None,
                changed: false,
                duration_ms: None,
                last_applied_at: None,
                last_check_time: None,
                last_check_result: None,
                applied_script: None,
                resources: (0..100)
                    .map(|r| ReportedResource {
                        kind: "file".into(),
                        name: format!("/srv/{r}/{}", "x".repeat(400)),
                    })
                    .collect(),
                resources_not_listed: 7,
                artifacts: Vec::new(),
                message: Some(format!("{}the real error {i}", "noise ".repeat(1400))),
            });
        }
        assert!(render_exact(&status).unwrap().len() > STATUS_MAX);
        let text = render(&status).unwrap();
        assert!(text.len() <= STATUS_MAX, "{} bytes", text.len());
        let back: ServerStatus = serde_saphyr::from_str(&text).unwrap();
        let last = &back.status.components[39];
        assert!(last.message.as_deref().unwrap().ends_with("the real error 39"));
        assert!(last.resources.len() < 100);
        assert_eq!(last.resources.len() as u64 + last.resources_not_listed, 107);
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut s = ObservedStatus::default();
        let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let t1 = Timestamp::parse("2026-01-01T00:10:00Z").unwrap();
        s.set_condition(types::READY, ConditionStatus::False, "Reconciling", "first", 1, t0);
        s.set_condition(types::READY, ConditionStatus::False, "Failed", "still false", 1, t1);
        assert_eq!(s.condition(types::READY).unwrap().last_transition_time, t0);
        assert_eq!(s.condition(types::READY).unwrap().reason, "Failed");
        s.set_condition(types::READY, ConditionStatus::True, "Reconciled", "ok", 2, t1);
        assert_eq!(s.condition(types::READY).unwrap().last_transition_time, t1);
        assert!(s.is_ready_at(0) == (s.observed_generation == 0));
        s.remove_condition(types::READY);
        assert!(s.condition(types::READY).is_none());
    }

    #[test]
    fn status_files_are_written_only_when_their_bytes_change() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-1.status.yaml");
        assert!(write_if_changed(&path, &sample(1)).unwrap());
        assert!(!write_if_changed(&path, &sample(1)).unwrap());
        assert!(write_if_changed(&path, &sample(2)).unwrap());
        assert_eq!(read(&path).unwrap(), sample(2));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o640);
        // A file left 0644 by an older chom is narrowed even when its bytes are current.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!write_if_changed(&path, &sample(2)).unwrap());
        assert_eq!(mode(&path), 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }

    /// Runs `f` on another thread and fails if it does not finish within 10 s (a read
    /// that blocks on a FIFO or reads /dev/zero without end would never finish).
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("blocked or read without bound")
    }

    #[test]
    fn a_status_file_that_is_not_a_regular_file_is_never_read_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("web-1.status.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let zero = dir.path().join("web-2.status.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let target = dir.path().join("elsewhere.yaml");
        std::fs::write(&target, render(&sample(1)).unwrap()).unwrap();
        let link = dir.path().join("web-3.status.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for path in [fifo, zero, link] {
            let p = path.clone();
            assert_eq!(bounded(move || read(&p)), None, "{} is read as absent", path.display());
            let p = path.clone();
            assert!(bounded(move || write_if_changed(&p, &sample(1)).unwrap()));
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(
                meta.file_type().is_file(),
                "{} replaced by a regular file",
                path.display()
            );
            assert_eq!(read(&path).unwrap(), sample(1));
        }
        assert!(target.exists(), "a symlink's target is left alone");
    }

    #[test]
    fn written_status_files_match_the_published_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-1.status.yaml");
        let mut status = sample(3);
        status.status.set_condition(
            types::READY,
            ConditionStatus::True,
            "Reconciled",
            "ok",
            3,
            Timestamp::now(),
        );
        write_if_changed(&path, &status).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = crate::validate::parse_document(std::path::Path::new("s.yaml"), &text)
            .unwrap()
            .value;
        let validator = jsonschema::validator_for(&crate::schema::status()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{text}");
    }
}
