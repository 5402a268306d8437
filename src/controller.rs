//! The controller: what happens to one server around its pass, for every caller. The
//! daemon's workers, `chom reconcile`, `chom plan` and `chom rollback` all call
//! [`Controller::run_one`]; the CLI files only parse arguments and print.
//!
//! Modelled on kube-runtime's `reconcile(obj, ctx) -> Action` with an `error_policy`:
//! the pin gate, the dependency gate, the pass itself, the history record (with the
//! applied scripts and configs kept for rollback), the status write, metrics and audit
//! happen here, in this order, and the [`Action`] says when the server comes back.

mod lock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tracing::{Instrument as _, info, warn};

use crate::audit::Audit;
use crate::desired::{self, DesiredComponent, DesiredState};
use crate::history::{History, Record, ServerRecord};
use crate::inventory::{Inventory, ServerEntry};
use crate::pin::{self, Pin, PinState};
use crate::reconcile::{self, Context, Outcome, Pass, PassMode, ScriptBytes};
use crate::status::{self, ConditionStatus, ObservedStatus, ReconcileResult, Timestamp, reasons, types};

pub use lock::{Owner, OwnerError, OwnerInfo};

/// How often a server waiting for its dependencies looks again.
pub const DEPENDENCY_RECHECK: Duration = Duration::from_secs(30);

/// One server as the controller sees it: its file, the desired state in force, and the
/// last status observed.
#[derive(Debug, Clone)]
pub struct Server {
    /// The resource and its file.
    pub entry: ServerEntry,
    /// Its desired state (Role defaults merged).
    pub desired: DesiredState,
    /// The desired state's hash.
    pub hash: String,
    /// Its generation.
    pub generation: u64,
    /// The last observed status, if any.
    pub previous: Option<ObservedStatus>,
    /// The git source's revision its desired state was read from (git-sourced trees).
    pub revision: Option<crate::source::Revision>,
}

impl Server {
    /// A server of a freshly loaded inventory, with its status read from its status file.
    pub fn from_files(inventory: &Inventory, entry: &ServerEntry, sources: &desired::Sources) -> Server {
        let desired = desired::desired_state(inventory, entry, sources);
        let hash = desired.hash();
        let previous = status::read(&entry.status_path());
        Server {
            entry: entry.clone(),
            generation: status::generation_for(previous.as_ref(), &hash),
            desired,
            hash,
            previous: previous.map(|p| p.status),
            revision: crate::source::revision_at(&entry.path),
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.desired.name
    }
}

/// What the caller does with the server after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Come back after this long (the server's `interval`, jittered by the caller) for a
    /// drift check.
    Requeue(Duration),
    /// The pass failed: come back after the caller's backoff.
    Retry,
    /// A dependency is not Ready: look again after [`DEPENDENCY_RECHECK`] (or when it
    /// becomes Ready).
    AwaitDependency,
    /// Nothing to come back for (suspended, or a dry run).
    Idle,
}

/// The error policy: from a pass's outcome to what happens next.
pub fn error_policy(outcome: &Outcome, desired: &DesiredState) -> Action {
    match outcome.result {
        ReconcileResult::Failed => Action::Retry,
        _ if desired.suspend => Action::Idle,
        _ => Action::Requeue(desired.interval),
    }
}

/// Where new statuses go: the status files (one-shot commands) or the daemon's store and
/// then the files.
pub trait StatusSink: Send + Sync {
    /// Saves the status `server` has after a pass.
    fn save(&self, server: &Server, observed: ObservedStatus) -> std::io::Result<()>;
}

/// Writes status files directly, when their bytes change.
pub struct StatusFiles;

impl StatusSink for StatusFiles {
    fn save(&self, server: &Server, observed: ObservedStatus) -> std::io::Result<()> {
        let doc = status::document(server.name(), server.generation, &server.hash, observed);
        status::write_if_changed(&server.entry.status_path(), &doc).map(|_| ())
    }
}

/// Schedules the next pass of a server (the daemon's work queue). Returns when the next
/// attempt after a failure is due, for the status's `nextRetryAt`.
pub trait Scheduler: Send + Sync {
    /// Acts on `action` for `server`.
    fn schedule(&self, server: &str, action: Action) -> Option<Timestamp>;
}

/// The result of [`Controller::run_one`].
#[derive(Debug)]
pub struct Done {
    /// The pass (or the gate that held the server back).
    pub outcome: Outcome,
    /// What happens next.
    pub action: Action,
    /// The history record of this server, when the pass is worth one (an explicit pass,
    /// a rollback, or a daemon pass that changed or failed), with its objects kept.
    pub record: Option<ServerRecord>,
    /// How long it took.
    pub took: Duration,
    /// The status could not be written.
    pub write_error: Option<std::io::Error>,
}

/// Everything a pass needs besides the server: SSH, secrets, state dir, history, audit,
/// metrics, where statuses go and how servers are requeued.
pub struct Controller {
    /// SSH, layout, identity, redactor.
    pub ctx: Context,
    /// History, pins, audit.
    pub state_dir: PathBuf,
    /// The inventory folder (for the git commit in records).
    pub inventory: PathBuf,
    history: Option<History>,
    audit: Option<Audit>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    statuses: Arc<dyn StatusSink>,
    scheduler: Option<Arc<dyn Scheduler>>,
}

impl Controller {
    /// A controller writing status files directly, without metrics or scheduling (the
    /// one-shot commands). History and audit are opened in `state_dir`; when they cannot be,
    /// passes still run and a warning says what is not recorded.
    pub fn new(ctx: Context, state_dir: PathBuf, inventory: PathBuf) -> Controller {
        let history = match History::open(&state_dir) {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(dir = %state_dir.display(), error = %e, "cannot keep deployment history; continuing without it");
                None
            }
        };
        let audit = match Audit::open(&state_dir, &inventory) {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(dir = %state_dir.display(), error = %e, "cannot write the audit trail; continuing without it");
                None
            }
        };
        Controller {
            ctx,
            state_dir,
            inventory,
            history,
            audit,
            metrics: None,
            statuses: Arc::new(StatusFiles),
            scheduler: None,
        }
    }

    /// A controller for dry runs (`chom plan`): it reads pins but keeps no history and
    /// writes no audit trail, so it needs no writable state directory.
    pub fn read_only(ctx: Context, state_dir: PathBuf, inventory: PathBuf) -> Controller {
        Controller {
            ctx,
            state_dir,
            inventory,
            history: None,
            audit: None,
            metrics: None,
            statuses: Arc::new(StatusFiles),
            scheduler: None,
        }
    }

    /// Sends statuses to `sink` instead of the files.
    pub fn with_statuses(mut self, sink: Arc<dyn StatusSink>) -> Controller {
        self.statuses = sink;
        self
    }

    /// Requeues servers through `scheduler`.
    pub fn with_scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Controller {
        self.scheduler = Some(scheduler);
        self
    }

    /// Counts passes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Controller {
        self.metrics = Some(metrics);
        self
    }

    /// Uses `audit` instead of opening one.
    pub fn with_audit(mut self, audit: Audit) -> Controller {
        self.audit = Some(audit);
        self
    }

    /// The audit trail, when there is one.
    pub fn audit_trail(&self) -> Option<&Audit> {
        self.audit.as_ref()
    }

    /// Appends to the audit trail, when there is one.
    pub fn audit(&self, action: &str, fields: serde_json::Value) {
        if let Some(audit) = &self.audit {
            audit.record(action, fields);
        }
    }

    /// One server, start to end: the pin gate, the dependency gate (`unready` names the
    /// first dependency that is not Ready, as the caller sees it), the pass in `mode`,
    /// then, unless it is a dry run, the history record, metrics, audit, scheduling and the
    /// status.
    pub async fn run_one(&self, server: &Server, deployment_id: &str, mode: PassMode, unready: Option<String>) -> Done {
        self.run(server, deployment_id, mode, unready, None).await
    }

    /// [`Controller::run_gated`] inside a span naming the server and the deployment, so
    /// every line logged about the server (gates, pass, history, status) carries its name.
    async fn run(
        &self,
        server: &Server,
        deployment_id: &str,
        mode: PassMode,
        unready: Option<String>,
        scripts: Option<&ScriptBytes>,
    ) -> Done {
        // At error level, so the span is on whatever level the filter lets through: an info
        // span would be filtered out under the default `warn`, and the server's name with it.
        let span = tracing::error_span!("reconcile", server = %server.name(), deployment_id = %deployment_id);
        self.run_gated(server, deployment_id, mode, unready, scripts)
            .instrument(span)
            .await
    }

    async fn run_gated(
        &self,
        server: &Server,
        deployment_id: &str,
        mode: PassMode,
        unready: Option<String>,
        scripts: Option<&ScriptBytes>,
    ) -> Done {
        let started = Instant::now();
        let name = server.name();
        let dry_run = mode == PassMode::DryRun;
        if mode != PassMode::Reapply
            && let Some(pin) = self.pin_gate(server, dry_run)
        {
            // Rolled back: leave it alone; look again at the interval in case `chom resume`
            // released it (or its desired state changed).
            let mut observed = server.previous.clone().unwrap_or_default();
            pin::mark(&mut observed, &pin, server.generation);
            return self
                .hold(
                    server,
                    observed,
                    Action::Requeue(server.desired.interval),
                    dry_run,
                    started,
                )
                .await;
        }
        if let Some(dep) = unready {
            let mut observed = server.previous.clone().unwrap_or_default();
            observed.observed_generation = server.generation;
            observed.set_condition(
                types::READY,
                ConditionStatus::False,
                reasons::DEPENDENCY_NOT_READY,
                format!("waiting for {dep} to be Ready at its current generation"),
                server.generation,
                Timestamp::now(),
            );
            return self
                .hold(server, observed, Action::AwaitDependency, dry_run, started)
                .await;
        }
        let pass = Pass {
            entry: &server.entry,
            desired: &server.desired,
            generation: server.generation,
            previous: server.previous.as_ref(),
            deployment_id,
            mode,
            scripts,
        };
        let mut outcome = reconcile::reconcile(&self.ctx, pass).await;
        outcome.status.last_applied_revision = match &server.revision {
            Some(r) if outcome.result == ReconcileResult::Succeeded => Some(r.clone()),
            _ => server.previous.as_ref().and_then(|p| p.last_applied_revision.clone()),
        };
        let took = started.elapsed();
        if dry_run {
            return Done {
                outcome,
                action: Action::Idle,
                record: None,
                took,
                write_error: None,
            };
        }
        let action = error_policy(&outcome, &server.desired);
        self.observe(server, &outcome, deployment_id, took);
        let record = self.keep(server, &outcome, mode, took).await;
        if let Some(scheduler) = &self.scheduler {
            outcome.status.next_retry_at = scheduler.schedule(name, action);
        }
        let write_error = self.save(server, outcome.status.clone()).await;
        Done {
            outcome,
            action,
            record,
            took,
            write_error,
        }
    }

    /// The pin that holds `server`, if any. Outside a dry run, a pin whose desired state
    /// has changed since is released here (and audited).
    fn pin_gate(&self, server: &Server, dry_run: bool) -> Option<Pin> {
        if dry_run {
            return pin::read(&self.state_dir, server.name()).filter(|p| p.desired_hash == server.hash);
        }
        match pin::check(&self.state_dir, server.name(), &server.hash) {
            PinState::Pinned(pin) => Some(pin),
            PinState::Released(pin) => {
                info!(server = %server.name(), deployment = %pin.deployment, "desired state changed: rollback pin released");
                self.audit(
                    "pin.released",
                    serde_json::json!({"server": server.name(), "deployment": pin.deployment}),
                );
                None
            }
            PinState::None => None,
        }
    }

    /// A server held back by a gate: its status says why, and `action` says when to look
    /// again.
    async fn hold(
        &self,
        server: &Server,
        observed: ObservedStatus,
        action: Action,
        dry_run: bool,
        started: Instant,
    ) -> Done {
        let outcome = Outcome::held(observed);
        if dry_run {
            return Done {
                outcome,
                action: Action::Idle,
                record: None,
                took: started.elapsed(),
                write_error: None,
            };
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.schedule(server.name(), action);
        }
        let write_error = self.save(server, outcome.status.clone()).await;
        Done {
            outcome,
            action,
            record: None,
            took: started.elapsed(),
            write_error,
        }
    }

    /// Metrics and audit events of a pass.
    fn observe(&self, server: &Server, outcome: &Outcome, deployment_id: &str, took: Duration) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_reconcile(server.name(), outcome.result, took.as_secs_f64());
            for step in &outcome.steps {
                match step.kind {
                    reconcile::StepKind::DriftCorrected => metrics.observe_drift(&step.component, true),
                    reconcile::StepKind::DriftReported => metrics.observe_drift(&step.component, false),
                    _ => {}
                }
            }
            for c in &outcome.status.components {
                match c.state {
                    status::ComponentState::Failed => metrics.observe_component(&c.name, "failed"),
                    status::ComponentState::Applied if c.changed => metrics.observe_component(&c.name, "applied"),
                    _ => {}
                }
            }
        }
        for c in outcome.status.components.iter().filter(|c| c.changed) {
            self.audit(
                "component.applied",
                serde_json::json!({
                    "server": server.name(), "component": c.name, "digest": c.applied_digest,
                    "deploymentId": deployment_id, "generation": server.generation,
                }),
            );
        }
        for step in outcome
            .steps
            .iter()
            .filter(|s| s.kind == reconcile::StepKind::DriftCorrected)
        {
            self.audit(
                "drift.corrected",
                serde_json::json!({"server": server.name(), "component": step.component, "deploymentId": deployment_id}),
            );
        }
    }

    /// The history record of a pass, with the scripts and configs it applied kept as
    /// objects, when the pass is worth one: every explicit pass and rollback; a periodic
    /// pass only when it changed something or failed (a quiet drift check is not a
    /// deployment); in the daemon, a quiet handed-off pass neither. Hardware is
    /// snapshotted whenever it differs from the last snapshot.
    async fn keep(&self, server: &Server, outcome: &Outcome, mode: PassMode, took: Duration) -> Option<ServerRecord> {
        let history = self.history.clone()?;
        let changed = outcome.status.components.iter().any(|c| c.changed);
        // A one-shot command's pass is a deployment of its own (one record for the whole
        // pass); in the daemon, where explicit passes are handed-off requests and each
        // server's record is stored on its own, a quiet pass is not worth a record (each
        // store re-reads the history to describe what changed).
        let explicit = mode == PassMode::Reapply || (mode != PassMode::Periodic && self.scheduler.is_none());
        let worth = explicit || changed || outcome.result == ReconcileResult::Failed;
        let (name, hardware) = (server.name().to_owned(), outcome.status.hardware.clone());
        let record = worth.then(|| {
            crate::history::server_record(
                &server.desired,
                server.generation,
                &outcome.status,
                outcome.result,
                took.as_millis() as u64,
                outcome
                    .hardware_changes
                    .iter()
                    .map(|c| format!("hardware changed: {c}"))
                    .collect(),
            )
        });
        let kept = record
            .as_ref()
            .map(|_| (server.desired.clone(), outcome.scripts.clone()));
        // Objects and snapshots are written with fsync: off the runtime's thread.
        tokio::task::spawn_blocking(move || {
            if let Some(hw) = &hardware
                && let Err(e) = history.snapshot_hardware(&name, hw)
            {
                warn!(server = %name, error = %e, "cannot record the hardware snapshot");
            }
            let (mut record, (desired, scripts)) = (record?, kept?);
            history.keep_objects(&mut record, &desired, &scripts);
            Some(record)
        })
        .await
        .ok()
        .flatten()
    }

    async fn save(&self, server: &Server, observed: ObservedStatus) -> Option<std::io::Error> {
        let (sink, server) = (self.statuses.clone(), server.clone());
        let result = tokio::task::spawn_blocking(move || {
            let written = sink.save(&server, observed);
            if let Err(e) = &written {
                warn!(server = %server.name(), file = %server.entry.status_path().display(), error = %e, "cannot write the status file");
            }
            written
        })
        .await;
        match result {
            Ok(written) => written.err(),
            Err(e) => Some(std::io::Error::other(e)),
        }
    }

    /// Stores the records of one deployment (one pass over one or more servers).
    pub fn store_deployment(&self, id: &str, started_at: Timestamp, servers: Vec<ServerRecord>) {
        self.store_record(id, started_at, servers, None);
    }

    /// Stores a deployment record; a rollback's names the deployment it returned to and
    /// carries that one's commit and ref (what was applied), not the live tree's.
    fn store_record(&self, id: &str, started_at: Timestamp, servers: Vec<ServerRecord>, rollback_of: Option<&Record>) {
        let Some(history) = &self.history else { return };
        if servers.is_empty() {
            return;
        }
        let (commit, reference) = match rollback_of {
            Some(target) => (target.commit.clone(), target.reference.clone()),
            None => {
                let revision = crate::source::revision_at(&self.inventory);
                (
                    revision
                        .as_ref()
                        .map(|r| r.commit.clone())
                        .or_else(|| crate::audit::git_commit(&self.inventory)),
                    revision.map(|r| r.reference),
                )
            }
        };
        let record = Record {
            id: id.to_owned(),
            deployer: crate::audit::who(),
            commit,
            reference,
            rollback_of: rollback_of.map(|t| t.id.clone()),
            desired_hash: crate::history::combined_hash(servers.iter().map(|s| s.desired_hash.as_str())),
            started_at,
            finished_at: Timestamp::now(),
            servers,
        };
        if let Err(e) = history.store(record) {
            warn!(dir = %self.state_dir.display(), error = %e, "cannot store the deployment record");
        }
    }

    /// Re-applies the scripts and configs kept from deployment `to` (default: the last
    /// successful one before the current) and pins the server there, as one pass that is
    /// recorded in history like any other. The pin holds until `chom resume` or until the
    /// server's desired state changes.
    pub async fn rollback(&self, server: &Server, to: Option<&str>) -> anyhow::Result<Rollback> {
        let name = server.name();
        let history = self
            .history
            .as_ref()
            .with_context(|| format!("no deployment history in {}", self.state_dir.display()))?;
        let target = target_record(&history.records(), name, to)?;
        let (components, scripts) = kept_components(history, &target, name)?;
        let mut desired = server.desired.clone();
        desired.components = components;
        // A rollback puts back what the deployment had; it never removes what it lacked.
        desired.prune = false;
        desired.suspend = false;
        let rolled = Server {
            desired,
            revision: target.commit.clone().map(|commit| crate::source::Revision {
                commit,
                reference: target.reference.clone().unwrap_or_default(),
            }),
            ..server.clone()
        };
        let deployment_id = reconcile::new_deployment_id();
        let started_at = Timestamp::now();
        let mut done = self
            .run(&rolled, &deployment_id, PassMode::Reapply, None, Some(&scripts))
            .await;
        if let Some(record) = done.record.take() {
            self.store_record(&deployment_id, started_at, vec![record], Some(&target));
        }
        if done.outcome.result != ReconcileResult::Succeeded {
            let why = done
                .outcome
                .status
                .condition(types::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            self.audit(
                "rollback.failed",
                serde_json::json!({"server": name, "to": target.id, "deploymentId": deployment_id, "error": why}),
            );
            bail!(
                "rollback of {name} to {} stopped: {why}; the server is not pinned",
                target.id
            );
        }
        let pin = Pin {
            deployment: target.id.clone(),
            desired_hash: server.hash.clone(),
            pinned_at: Timestamp::now(),
            by: crate::audit::who(),
        };
        pin::write(&self.state_dir, name, &pin)
            .with_context(|| format!("pinning {name} in {}", self.state_dir.display()))?;
        self.audit(
            "rollback",
            serde_json::json!({"server": name, "to": target.id, "deploymentId": deployment_id}),
        );
        let mut observed = done.outcome.status.clone();
        for c in observed
            .components
            .iter_mut()
            .filter(|c| c.changed || scripts.contains_key(&c.name))
        {
            c.message = Some(format!("rolled back to deployment {}", target.id));
        }
        pin::mark(&mut observed, &pin, server.generation);
        let write_error = self.save(server, observed.clone()).await;
        done.outcome.status = observed;
        Ok(Rollback {
            to: target.id,
            deployment_id,
            done: Done { write_error, ..done },
        })
    }
}

/// Releases the rollback pin of `name` kept in `state_dir` and audits it; false when the
/// server was not pinned.
pub fn resume(state_dir: &Path, inventory: &Path, name: &str) -> std::io::Result<bool> {
    let released = pin::remove(state_dir, name)?;
    if released {
        Audit::open(state_dir, inventory)?.record("resume", serde_json::json!({"server": name}));
    }
    Ok(released)
}

/// What [`Controller::rollback`] did.
#[derive(Debug)]
pub struct Rollback {
    /// The deployment returned to.
    pub to: String,
    /// The rollback pass's own deployment id (in `chom history`).
    pub deployment_id: String,
    /// The pass.
    pub done: Done,
}

/// The record to roll `name` back to: `to`, or the last successful deployment before
/// the current one.
fn target_record(records: &[Record], name: &str, to: Option<&str>) -> anyhow::Result<Record> {
    let ok: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.servers
                .iter()
                .any(|s| s.name == name && s.result == ReconcileResult::Succeeded && kept_all(s))
        })
        .collect();
    let found = match to {
        Some(id) => records
            .iter()
            .find(|r| r.id == id && r.servers.iter().any(|s| s.name == name))
            .or_else(|| {
                // A git commit (7 hex digits or more): the newest deployment of that
                // commit that succeeded on this server.
                let commit = id.to_ascii_lowercase();
                (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| {
                        ok.iter()
                            .rev()
                            .find(|r| r.commit.as_deref().is_some_and(|c| c.starts_with(&commit)))
                            .copied()
                    })
                    .flatten()
            }),
        None if ok.len() >= 2 => Some(ok[ok.len() - 2]),
        None => None,
    };
    match (found, to) {
        (Some(r), _) => Ok(r.clone()),
        (None, Some(id)) => bail!(
            "neither a deployment of {name} nor a commit with a successful deployment of it is named {id} (see `chom history {name}`)"
        ),
        (None, None) => bail!("no earlier successful deployment of {name} is recorded (see `chom history {name}`)"),
    }
}

/// True when every applied component of a server record has its script and config kept.
fn kept_all(s: &ServerRecord) -> bool {
    s.components
        .iter()
        .filter(|c| c.state == "Applied")
        .all(|c| c.script.is_some() && c.config.is_some())
}

/// The components of `record` for `name`, rebuilt from the kept objects, and their scripts.
fn kept_components(
    history: &History,
    record: &Record,
    name: &str,
) -> anyhow::Result<(Vec<DesiredComponent>, ScriptBytes)> {
    let Some(server) = record.servers.iter().find(|s| s.name == name) else {
        bail!("deployment {} has no record of {name}", record.id)
    };
    let mut components = Vec::new();
    let mut scripts = BTreeMap::new();
    for c in server.components.iter().filter(|c| c.state == "Applied") {
        let (Some(script_id), Some(config_id)) = (&c.script, &c.config) else {
            bail!(
                "deployment {} did not keep the script and config of {}; it cannot be rolled back to",
                record.id,
                c.name
            );
        };
        let script = history
            .object(script_id)
            .with_context(|| format!("reading the kept script of {}", c.name))?;
        let config: serde_json::Value = serde_json::from_slice(
            &history
                .object(config_id)
                .with_context(|| format!("reading the kept config of {}", c.name))?,
        )?;
        components.push(DesiredComponent {
            name: c.name.clone(),
            version: c.version.clone(),
            config: config.as_object().cloned().unwrap_or_default(),
            timeout: desired::DEFAULT_COMPONENT_TIMEOUT,
            script_sha256: None,
        });
        scripts.insert(c.name.clone(), Arc::from(script));
    }
    if components.is_empty() {
        bail!(
            "deployment {} applied no component of {name}; nothing to roll back to",
            record.id
        );
    }
    Ok((components, scripts))
}

/// True when a dependency outside the current pass is Ready, per its status file, at the
/// generation of its current desired state.
pub fn dependency_ready_on_disk(inventory: &Inventory, sources: &desired::Sources, dep: &str) -> bool {
    let Some(entry) = inventory.servers.get(dep) else {
        return false;
    };
    let hash = desired::desired_state(inventory, entry, sources).hash();
    status::read(&entry.status_path()).is_some_and(|s| {
        s.metadata.desired_hash.as_deref() == Some(hash.as_str()) && s.status.is_ready_at(s.metadata.generation)
    })
}
