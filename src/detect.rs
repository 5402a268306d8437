//! Hardware detection of inventory servers over SSH: the SSH target of a server, one
//! probe round trip, and the judgement of what came back against the inventory. Used by
//! `chom detect` and by the reconciler. It never writes status files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::facts::{self, ProbeError};
use crate::hardware::Hardware;
use crate::inventory::{Inventory, ServerEntry};
use crate::judge::{self, Verdict};
use crate::ssh::{ExecOutput, ExecRequest, Exit, SshError, Target, Transport};
use crate::status::ServerStatus;

/// How long one probe may take, connection excluded. The script reads a few files under
/// /proc and /sys; anything slower means a hung NFS mount or a wedged host.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(30);

/// Why detection failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The SSH layer failed (its message says what to do).
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The probe ran but did not exit 0.
    #[error("the hardware probe failed on the server ({exit}): {stderr}")]
    ProbeFailed {
        /// How it ended.
        exit: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// The probe's output could not be read.
    #[error(transparent)]
    Parse(#[from] ProbeError),
}

impl DetectError {
    /// A CamelCase reason for the `Reachable` / `HardwareDetected` conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            DetectError::Ssh(e) => match e {
                SshError::UnknownHostKey { .. } => "HostKeyUnknown",
                SshError::HostKeyChanged { .. } => "HostKeyChanged",
                SshError::HostKeyRevoked { .. } | SshError::HostKeyNotPinned { .. } => "HostKeyRejected",
                SshError::AuthRefused { .. } | SshError::NoAuthMethod { .. } | SshError::EncryptedKey { .. } => {
                    "AuthFailed"
                }
                SshError::ConnectRefused { .. } => "ConnectionRefused",
                SshError::ConnectTimeout { .. } => "ConnectTimeout",
                SshError::Timeout { .. } => "CommandTimeout",
                SshError::Interrupted { .. } => "Interrupted",
                SshError::SudoNeedsPassword { .. } => "SudoNeedsPassword",
                _ => "SshError",
            },
            DetectError::ProbeFailed { .. } => "ProbeFailed",
            DetectError::Parse(_) => "ProbeOutputUnreadable",
        }
    }

    /// True when the server could not be reached or logged into (as opposed to a probe
    /// that ran and failed).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DetectError::Ssh(_))
    }
}

/// The SSH target of a server. A relative `identityFile` is taken from the folder that
/// holds `inventory.d/`, so a checkout works wherever it is cloned; `~/` is the home
/// folder.
pub fn target_for(entry: &ServerEntry, base: &Path) -> Target {
    let spec = &entry.server.spec;
    let identity_file = spec.ssh.identity_file.as_deref().map(|f| resolve_path(f, base));
    Target {
        name: entry.server.metadata.name.clone(),
        host: spec.address.clone(),
        port: spec.ssh.port,
        user: spec.ssh.user.clone(),
        identity_file,
        host_key_pins: spec.ssh.host_keys.clone(),
    }
}

fn resolve_path(file: &str, base: &Path) -> PathBuf {
    if let Some(rest) = file.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let path = PathBuf::from(file);
    if path.is_absolute() { path } else { base.join(path) }
}

/// Runs the probe on one target in one round trip and parses what it printed. `previous`
/// is the hardware the last detection recorded, which spares the probe the facts that
/// cannot have changed since (see [`facts::probe_input`]).
pub async fn probe(
    transport: &Transport,
    target: &Target,
    previous: Option<&Hardware>,
) -> Result<Hardware, DetectError> {
    let out = transport.exec(target, probe_request(previous)).await?;
    probe_outcome(&out)
}

/// The probe as a command: the script on stdin, with what `previous` spares it.
pub fn probe_request(previous: Option<&Hardware>) -> ExecRequest {
    ExecRequest {
        command: facts::PROBE_COMMAND.to_owned(),
        stdin: facts::probe_input(previous),
        deadline: PROBE_DEADLINE,
        // Everything the probe reads is world-readable; no root needed.
        sudo: false,
    }
}

/// Reads the hardware from what the probe printed, or says why it failed.
pub fn probe_outcome(out: &ExecOutput) -> Result<Hardware, DetectError> {
    if !out.success() {
        let exit = match &out.exit {
            Exit::Status(code) => format!("exit status {code}"),
            Exit::Signal(sig) => format!("killed by signal {sig}"),
            Exit::Closed => "channel closed without an exit status".to_owned(),
        };
        let stderr = out.stderr_text();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        return Err(DetectError::ProbeFailed { exit, stderr });
    }
    Ok(facts::parse_probe(&String::from_utf8_lossy(&out.stdout))?)
}

/// The outcome for one server, as `chom detect` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    /// Server name.
    pub name: String,
    /// Where it was reached.
    pub address: String,
    /// OK, WARN (hardware differs from expectedSpecs, or changed) or FAIL (unreachable,
    /// probe failed, or below the role's minimums).
    pub status: Health,
    /// What was detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
    /// `SpecsMatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specs_match: Option<Check>,
    /// `RequirementsMet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements_met: Option<Check>,
    /// Differences from the hardware in the last status file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hardware_changes: Vec<String>,
    /// Why detection failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Check>,
}

/// OK, WARN or FAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    /// Detected, as expected.
    Ok,
    /// Detected, but something deserves a look.
    Warn,
    /// Not detected, or below the minimums.
    Fail,
}

/// A serialisable verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Passed or not.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Sentence for people.
    pub message: String,
}

impl From<Verdict> for Check {
    fn from(v: Verdict) -> Self {
        Self {
            ok: v.ok,
            reason: v.reason,
            message: v.message,
        }
    }
}

impl Detection {
    /// The one-line reason shown in the table's last column.
    pub fn detail(&self) -> String {
        if let Some(e) = &self.error {
            return e.message.clone();
        }
        let mut parts = Vec::new();
        for check in [&self.requirements_met, &self.specs_match].into_iter().flatten() {
            if !check.ok {
                parts.push(check.message.clone());
            }
        }
        if !self.hardware_changes.is_empty() {
            parts.push(format!(
                "changed since last detection: {}",
                self.hardware_changes.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// The hardware recorded in a server's status file, if there is a readable one.
pub fn previous_hardware(entry: &ServerEntry) -> Option<Hardware> {
    let status: ServerStatus = crate::status::read(&entry.status_path())?;
    status.status.hardware
}

/// Detects and judges one server.
pub async fn detect_server(
    transport: &Transport,
    inventory: &Inventory,
    entry: &ServerEntry,
    base: &Path,
) -> Detection {
    let target = target_for(entry, base);
    let mut detection = Detection {
        name: entry.server.metadata.name.clone(),
        address: format!("{}:{}", target.host, target.port),
        status: Health::Fail,
        hardware: None,
        specs_match: None,
        requirements_met: None,
        hardware_changes: Vec::new(),
        error: None,
    };
    let previous = previous_hardware(entry);
    crate::progress::emit(crate::progress::Event::Connecting);
    match probe(transport, &target, previous.as_ref()).await {
        Ok(hw) => {
            let specs = judge::specs(&hw, entry.server.spec.expected_specs.as_ref());
            let role = inventory.role_of(&entry.server);
            let req = judge::requirements(&hw, role.and_then(|r| r.spec.requirements.as_ref()));
            if let Some(before) = &previous {
                detection.hardware_changes = judge::changes(before, &hw);
            }
            detection.status = if !req.ok {
                Health::Fail
            } else if !specs.ok || !detection.hardware_changes.is_empty() {
                Health::Warn
            } else {
                Health::Ok
            };
            detection.specs_match = Some(specs.into());
            detection.requirements_met = Some(req.into());
            detection.hardware = Some(hw);
        }
        Err(e) => {
            detection.error = Some(Check {
                ok: false,
                reason: e.reason().to_owned(),
                message: format!("{e:#}"),
            });
        }
    }
    detection
}

/// Detects every server in `entries` concurrently; connections are paced and capped by
/// the transport, so this only bounds the number of tasks alive at once. Each server's
/// steps and end are shown on `board`.
pub async fn detect_all(
    transport: Arc<Transport>,
    inventory: Arc<Inventory>,
    names: Vec<String>,
    base: PathBuf,
    concurrency: usize,
    board: &crate::progress::Board,
) -> Vec<Detection> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, name) in names.into_iter().enumerate() {
        let (transport, inventory, base, limit) = (transport.clone(), inventory.clone(), base.clone(), limit.clone());
        let (board_of_task, scoped) = (board.clone(), name.clone());
        tasks.spawn(board.scope(&scoped, async move {
            let _permit = limit.acquire_owned().await.ok();
            let entry = inventory.servers.get(&name)?;
            let detection = detect_server(&transport, &inventory, entry, &base).await;
            let how = match detection.status {
                Health::Ok => "OK".to_owned(),
                Health::Warn => format!("WARN {}", detection.detail()),
                Health::Fail => format!("FAIL {}", detection.detail()),
            };
            board_of_task.finish(&name, detection.status != Health::Fail, &how);
            Some((index, detection))
        }));
    }
    let mut out: Vec<(usize, Detection)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(item)) = joined {
            out.push(item);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, d)| d).collect()
}
