//! One reconcile pass of one server: desired state → connect and detect → judge →
//! components (apply what changed, check what did not) → the new observed status.
//! Per-server failures are data in the returned status, never errors; this module
//! neither writes files nor schedules retries (the caller does both).

mod conditions;
mod scripts;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use scripts::Scripts;

use crate::component::{self, CHECK_WOULD_CHANGE, Mode, Pending, Run};
use crate::desired::DesiredState;
use crate::detect::{self, DetectError};
use crate::hardware::Hardware;
use crate::inventory::{Layout, ServerEntry};
use crate::judge;
use crate::resource::DriftPolicy;
use crate::ssh::{Exit, Transport};
use crate::status::{
    CheckResult, ComponentState, ComponentStatus, ConditionStatus, LastReconcile, ObservedStatus, RECENT_RUNS,
    ReconcileResult, Timestamp, reasons, types,
};

/// What every pass needs besides the server itself.
#[derive(Clone)]
pub struct Context {
    /// The shared SSH transport.
    pub transport: Arc<Transport>,
    /// Where the tree is (scripts).
    pub layout: Layout,
    /// The folder relative `identityFile`s are resolved from.
    pub base: PathBuf,
    /// The age identity that decrypts `secrets.d/`; `None` when none was given.
    pub identity: Option<Arc<crate::secrets::Identity>>,
    /// Every decrypted value is registered here; all remote output kept in status or
    /// logs passes through it.
    pub redactor: crate::secrets::Redactor,
}

/// Script bytes by component name.
pub type ScriptBytes = BTreeMap<String, Arc<[u8]>>;

/// How a pass treats components that are already applied with their current digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassMode {
    /// The daemon's periodic pass: such a component is checked once per `interval`; a pass
    /// triggered by a change elsewhere leaves it alone.
    Periodic,
    /// An explicit pass (`chom reconcile`, the daemon's first pass over each server): every
    /// applied component's check runs now, and drift is corrected (or reported).
    CheckNow,
    /// Every component is applied again (a rollback to kept scripts and configs).
    Reapply,
    /// `chom plan`: checks run, nothing is applied or removed; the steps say what would.
    DryRun,
}

/// What one pass is asked to do.
#[derive(Clone, Copy)]
pub struct Pass<'a> {
    /// The server's file.
    pub entry: &'a ServerEntry,
    /// Its desired state.
    pub desired: &'a DesiredState,
    /// The generation of that desired state.
    pub generation: u64,
    /// The last observed status (from memory or the status file): component digests,
    /// condition transition times, hardware changes.
    pub previous: Option<&'a ObservedStatus>,
    /// The deployment the pass belongs to.
    pub deployment_id: &'a str,
    /// How components already applied are treated.
    pub mode: PassMode,
    /// Script bytes to use instead of `scripts/<name>.sh` (a rollback's kept scripts).
    pub scripts: Option<&'a ScriptBytes>,
}

/// What a pass did (or, in a dry run, would do) with one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Applied with its digest and checked within its interval: not run.
    Unchanged,
    /// A check run found it in sync.
    InSync,
    /// An apply run made it match.
    Applied,
    /// A check run found drift; an apply run corrected it.
    DriftCorrected,
    /// A check run found drift, left alone (`driftPolicy: report`).
    DriftReported,
    /// Dry run: an apply run is due.
    WouldApply,
    /// Dry run: a check run found drift.
    WouldCorrect,
    /// Its run failed (or its script could not be read).
    Failed,
    /// Its run was cut short because chom was interrupted.
    Interrupted,
    /// Not run (an earlier one failed, or the server is held back).
    Skipped,
    /// Dropped from the list and left in place (`prune: false`), or its removal failed.
    Orphaned,
    /// Dropped from the list and removed (`prune: true`).
    Pruned,
    /// Dry run: would be removed (`prune: true`).
    WouldPrune,
}

/// One component's step in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The component.
    pub component: String,
    /// What happened.
    pub kind: StepKind,
    /// Why, for people (redacted like every remote output).
    pub detail: String,
    /// For drift found by a check run: what it would change in managed files, where the
    /// script reports it (`::chom:: diff-begin`), redacted like every remote output.
    pub diffs: Vec<component::FileDiff>,
}

/// The outcome of one pass.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The new observed status (the caller adds `nextRetryAt`).
    pub status: ObservedStatus,
    /// Succeeded, Failed or Blocked.
    pub result: ReconcileResult,
    /// Hardware differences since the previous detection, if any.
    pub hardware_changes: Vec<String>,
    /// Per component, in apply order, then the dropped ones.
    pub steps: Vec<Step>,
    /// The script bytes the pass used, by component (kept in history for rollback).
    pub scripts: ScriptBytes,
    /// True when the pass was interrupted (a second Ctrl-C, or shutdown past its bound).
    pub interrupted: bool,
}

impl Outcome {
    /// An outcome for a server held back before any pass (pinned, waiting for a dependency).
    pub fn held(status: ObservedStatus) -> Outcome {
        Outcome {
            status,
            result: ReconcileResult::Blocked,
            hardware_changes: Vec::new(),
            steps: Vec::new(),
            scripts: BTreeMap::new(),
            interrupted: false,
        }
    }
}

/// A new deployment id (`d-20261126T120000123Z-1a2b3c4d`); see [`crate::ids::deployment_id`].
pub fn new_deployment_id() -> String {
    crate::ids::deployment_id()
}

/// Lines of stderr kept in a failed component's status.
const STDERR_LINES: usize = 20;

/// Runs one pass. Per-server failures are data in the outcome, never errors. The caller
/// (the controller) runs it inside a span naming the server.
pub async fn reconcile(ctx: &Context, pass: Pass<'_>) -> Outcome {
    let Pass {
        entry,
        desired,
        generation,
        previous,
        deployment_id,
        ..
    } = pass;
    let started = Timestamp::now();
    info!(generation, mode = ?pass.mode, "reconcile started");
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.remove_condition(types::RECONCILING);
    // A pass runs only when no rollback pin holds the server.
    status.remove_condition(types::PINNED);
    let mut hardware_changes = Vec::new();
    let mut steps = Vec::new();
    let mut used = BTreeMap::new();
    let mut interrupted = false;

    let result = if desired.suspend {
        status.set_condition(
            types::READY,
            ConditionStatus::False,
            reasons::SUSPENDED,
            "spec.suspend is true; chom does not touch this server",
            generation,
            started,
        );
        status.remove_condition(types::STALLED);
        ReconcileResult::Blocked
    } else {
        let target = detect::target_for(entry, &ctx.base);
        let plans = plan(ctx, &pass, &status);
        for p in plans.iter().flatten() {
            used.insert(p.name.clone(), p.script.clone());
        }
        let mut scripts = Scripts::for_pass(ctx, &target, desired, &status, &plans);
        crate::progress::emit(crate::progress::Event::Connecting);
        let probed = match scripts.run(detect::probe_request(status.hardware.as_ref())).await {
            Ok(out) => detect::probe_outcome(&out),
            Err(e) => Err(DetectError::from(e)),
        };
        let result = match probed {
            Err(error) => unreachable(&mut status, &error, generation, started),
            Ok(hw) => {
                if let Some(before) = &status.hardware {
                    hardware_changes = judge::changes(before, &hw);
                    if !hardware_changes.is_empty() {
                        warn!(changes = %hardware_changes.join(", "), "hardware changed since the last detection");
                        status.hardware_changed_at = Some(started);
                    }
                }
                let mut run = Components {
                    ctx,
                    scripts: &mut scripts,
                    pass: &pass,
                    steps: &mut steps,
                    interrupted: false,
                };
                let result = run.detected(plans, &hw, &mut status, started).await;
                interrupted = run.interrupted;
                result
            }
        };
        scripts.finish().await;
        result
    };

    let finished = Timestamp::now();
    if pass.mode != PassMode::DryRun {
        let run = LastReconcile {
            deployment_id: deployment_id.to_owned(),
            started_at: started,
            finished_at: finished,
            result,
        };
        status.recent_runs.insert(0, run.clone());
        status.recent_runs.truncate(RECENT_RUNS);
        status.last_reconcile = Some(run);
        match result {
            ReconcileResult::Failed => status.consecutive_failures += 1,
            _ => {
                status.consecutive_failures = 0;
                status.next_retry_at = None;
            }
        }
    }
    info!(result = ?result, "reconcile finished");
    Outcome {
        status,
        result,
        hardware_changes,
        steps,
        scripts: used,
        interrupted,
    }
}

fn unreachable(status: &mut ObservedStatus, error: &DetectError, generation: u64, now: Timestamp) -> ReconcileResult {
    let message = format!("{error:#}");
    if error.reason() == reasons::INTERRUPTED {
        // Nothing was learnt about the server: only say why the pass ended.
        status.set_condition(
            types::READY,
            ConditionStatus::False,
            reasons::INTERRUPTED,
            &message,
            generation,
            now,
        );
        return ReconcileResult::Failed;
    }
    warn!(reason = error.reason(), error = %message, "server not reconciled");
    if error.is_unreachable() {
        status.set_condition(
            types::REACHABLE,
            ConditionStatus::False,
            error.reason(),
            &message,
            generation,
            now,
        );
        status.set_condition(
            types::HARDWARE_DETECTED,
            ConditionStatus::Unknown,
            reasons::UNREACHABLE,
            "not connected",
            generation,
            now,
        );
    } else {
        mark_reachable(status, generation, now);
        status.set_condition(
            types::HARDWARE_DETECTED,
            ConditionStatus::False,
            error.reason(),
            &message,
            generation,
            now,
        );
    }
    status.set_condition(
        types::READY,
        ConditionStatus::False,
        error.reason(),
        &message,
        generation,
        now,
    );
    // A changed or unknown host key, or refused login, will not heal by retrying: a person
    // has to act, which kstatus calls Stalled.
    if matches!(
        error.reason(),
        "HostKeyChanged" | "HostKeyUnknown" | "HostKeyRejected" | "AuthFailed" | "SudoNeedsPassword"
    ) {
        status.set_condition(
            types::STALLED,
            ConditionStatus::True,
            error.reason(),
            &message,
            generation,
            now,
        );
    } else {
        status.remove_condition(types::STALLED);
    }
    ReconcileResult::Failed
}

/// The part of a pass after a successful detection: judge the hardware, resolve the
/// secrets, run the components, and set the conditions that follow from them.
struct Components<'p, 's, 'c> {
    ctx: &'c Context,
    scripts: &'s mut Scripts<'c>,
    pass: &'p Pass<'p>,
    steps: &'s mut Vec<Step>,
    interrupted: bool,
}

impl Components<'_, '_, '_> {
    async fn detected(
        &mut self,
        plans: Vec<Plan>,
        hw: &Hardware,
        status: &mut ObservedStatus,
        now: Timestamp,
    ) -> ReconcileResult {
        let (desired, generation) = (self.pass.desired, self.pass.generation);
        mark_reachable(status, generation, now);
        status.set_condition(
            types::HARDWARE_DETECTED,
            ConditionStatus::True,
            reasons::DETECTED,
            crate::facts::summarize(hw),
            generation,
            now,
        );
        status.hardware = Some(hw.clone());
        let specs = judge::specs(hw, desired.expected_specs.as_ref());
        status.set_condition(
            types::SPECS_MATCH,
            bool_status(specs.ok),
            &specs.reason,
            &specs.message,
            generation,
            now,
        );
        let req = judge::requirements(hw, desired.requirements.as_ref());
        status.set_condition(
            types::REQUIREMENTS_MET,
            bool_status(req.ok),
            &req.reason,
            &req.message,
            generation,
            now,
        );
        if !req.ok {
            // Deploying below the minimum is what the Bash deployer did blindly; chom refuses.
            let why = "not applied: the server is below its role's minimums";
            return self.block(status, why, &req.reason, &req.message, now);
        }
        status.remove_condition(types::STALLED);

        let resolved = match resolve_secrets(self.ctx, desired) {
            Ok(resolved) => {
                if !desired.secrets.is_empty() {
                    let message = format!("{} secret(s) decrypted", desired.secrets.len());
                    status.set_condition(
                        types::SECRETS_RESOLVED,
                        ConditionStatus::True,
                        reasons::RESOLVED,
                        message,
                        generation,
                        now,
                    );
                } else {
                    status.remove_condition(types::SECRETS_RESOLVED);
                }
                resolved
            }
            Err((reason, message)) => {
                warn!(reason, error = %message, "secrets not resolved; components not applied");
                status.set_condition(
                    types::SECRETS_RESOLVED,
                    ConditionStatus::False,
                    reason,
                    &message,
                    generation,
                    now,
                );
                let why = "not applied: the server's secrets are not resolved";
                return self.block(status, why, reason, &message, now);
            }
        };

        let applied = self.apply_components(plans, status, resolved.as_ref()).await;
        if self.pass.mode == PassMode::DryRun {
            // A dry run leaves the conditions as they were; its steps are the answer.
            return match applied {
                Applied::Failed(..) => ReconcileResult::Failed,
                _ => ReconcileResult::Succeeded,
            };
        }
        let verdict = conditions::after_components(&applied, self.steps, status, Timestamp::now());
        conditions::set_component_conditions(status, &verdict, generation, now);
        verdict.result
    }

    /// Holds a server back before any component runs: every component is Skipped, and
    /// ComponentsReady/Ready go False and Stalled True with the same reason, because a
    /// person has to act (add hardware, provide the secrets).
    fn block(
        &mut self,
        status: &mut ObservedStatus,
        why_skipped: &str,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) -> ReconcileResult {
        let generation = self.pass.generation;
        for c in &self.pass.desired.components {
            self.step(&c.name, StepKind::Skipped, why_skipped);
            if self.pass.mode != PassMode::DryRun {
                upsert_component(status, skipped(&c.name, why_skipped));
            }
        }
        if self.pass.mode == PassMode::DryRun {
            return ReconcileResult::Blocked;
        }
        status.set_condition(
            types::COMPONENTS_READY,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        );
        status.set_condition(types::READY, ConditionStatus::False, reason, message, generation, now);
        status.set_condition(types::STALLED, ConditionStatus::True, reason, message, generation, now);
        ReconcileResult::Blocked
    }

    fn step(&mut self, component: &str, kind: StepKind, detail: impl Into<String>) {
        self.steps.push(Step {
            component: component.to_owned(),
            kind,
            detail: detail.into(),
            diffs: Vec::new(),
        });
    }

    async fn apply_components(
        &mut self,
        plans: Vec<Plan>,
        status: &mut ObservedStatus,
        secrets: Option<&crate::secrets::Resolved>,
    ) -> Applied {
        let desired = self.pass.desired;
        let dry_run = self.pass.mode == PassMode::DryRun;
        let mut drifted = Vec::new();
        let mut failure: Option<(String, String)> = None;
        // Keep the status list in apply order.
        let mut ordered = Vec::with_capacity(desired.components.len());
        for (index, (c, planned)) in desired.components.iter().zip(plans).enumerate() {
            if let Some((failed_one, _)) = &failure
                && (!dry_run || self.interrupted)
            {
                let why = if self.interrupted {
                    "skipped: the pass was interrupted".to_owned()
                } else {
                    format!("skipped: {failed_one} failed before it")
                };
                self.step(&c.name, StepKind::Skipped, &why);
                ordered.push(skipped(&c.name, &why));
                continue;
            }
            let Planned {
                script,
                digest,
                pending,
                ..
            } = match planned {
                Ok(plan) => plan,
                Err(why) => {
                    failure = Some((c.name.clone(), why.clone()));
                    self.step(&c.name, StepKind::Failed, &why);
                    ordered.push(failed(&c.name, None, why, 0));
                    continue;
                }
            };
            let previous = status.components.iter().find(|p| p.name == c.name);
            if pending == Pending::InSync
                && let Some(p) = previous
            {
                // Applied with this digest and checked within the interval: do not run it.
                let detail = match p.last_check_time {
                    Some(t) => format!("not checked in this pass; last checked {}", ago(t)),
                    None => "not checked in this pass".to_owned(),
                };
                self.step(&c.name, StepKind::Unchanged, detail);
                let mut entry = p.clone();
                entry.changed = false;
                ordered.push(entry);
                continue;
            }
            if dry_run && let Some(reason) = pending.apply_reason() {
                self.step(&c.name, StepKind::WouldApply, format!("{reason}; will be applied"));
                continue;
            }
            let started = Instant::now();
            let mut mode = if pending == Pending::CheckDue {
                Mode::Check
            } else {
                Mode::Apply
            };
            let run_of = |mode| Run {
                server: &desired.name,
                component: c,
                mode,
                deployment_id: self.pass.deployment_id,
                secrets,
            };
            let progress = |mode: Mode| {
                crate::progress::emit(crate::progress::Event::Component {
                    index: index + 1,
                    total: desired.components.len(),
                    name: c.name.clone(),
                    mode: mode.as_str(),
                });
            };
            progress(mode);
            let mut run = self.scripts.execute(run_of(mode), &script).await;
            let mut drift = false;
            if mode == Mode::Check
                && let Ok(out) = &run
                && out.exit == Exit::Status(CHECK_WOULD_CHANGE)
            {
                info!(component = %c.name, "drift found");
                drift = true;
                if dry_run {
                    self.step(&c.name, StepKind::WouldCorrect, "drift found by check mode");
                    if let Some(step) = self.steps.last_mut() {
                        step.diffs = component::parse_report(&out.stdout_text()).diffs;
                    }
                    continue;
                }
                if desired.drift_policy == DriftPolicy::Report {
                    drifted.push(c.name.clone());
                    let message = "a check run found drift; not corrected (driftPolicy: report)";
                    self.step(&c.name, StepKind::DriftReported, message);
                    let mut entry = previous.cloned().unwrap_or_else(|| skipped(&c.name, ""));
                    entry.state = ComponentState::Drifted;
                    entry.changed = false;
                    entry.message = Some(message.to_owned());
                    entry.last_check_time = Some(Timestamp::now());
                    entry.last_check_result = Some(CheckResult::DriftFound);
                    ordered.push(entry);
                    continue;
                }
                mode = Mode::Apply;
                progress(mode);
                run = self.scripts.execute(run_of(mode), &script).await;
            }
            let elapsed = started.elapsed().as_millis() as u64;
            let entry = match run {
                Ok(out) if out.success() => {
                    let report = component::parse_report(&out.stdout_text());
                    for w in &report.warnings {
                        warn!(component = %c.name, warning = %w, "script warning");
                    }
                    if dry_run {
                        // Only check runs reach here in a dry run.
                        self.step(&c.name, StepKind::InSync, "a check run found it in sync");
                        continue;
                    }
                    let changed = mode == Mode::Apply && report.changed;
                    if changed {
                        info!(component = %c.name, "component applied with changes");
                    }
                    let now = Timestamp::now();
                    let (last_applied_at, check_result, kind, detail) = match (mode, drift) {
                        (Mode::Check, _) => (
                            previous.and_then(|p| p.last_applied_at),
                            CheckResult::InSync,
                            StepKind::InSync,
                            "a check run found it in sync".to_owned(),
                        ),
                        (_, true) => (
                            Some(now),
                            CheckResult::DriftCorrected,
                            StepKind::DriftCorrected,
                            "a check run found drift; corrected".to_owned(),
                        ),
                        _ => (
                            Some(now),
                            CheckResult::Applied,
                            StepKind::Applied,
                            pending.apply_reason().unwrap_or("applied").to_owned(),
                        ),
                    };
                    self.step(&c.name, kind, detail);
                    let message = (!report.warnings.is_empty()).then(|| report.warnings.join("; "));
                    ComponentStatus {
                        name: c.name.clone(),
                        state: ComponentState::Applied,
                        applied_digest: Some(digest),
                        changed,
                        duration_ms: Some(elapsed),
                        last_applied_at,
                        last_check_time: Some(now),
                        last_check_result: Some(check_result),
                        applied_script: Some(component::script_sha(&script)),
                        resources: report.resources,
                        artifacts: report.artifacts,
                        resources_not_listed: report.resources_not_listed,
                        message,
                    }
                }
                Ok(out) => {
                    let why = exit_text(&out.exit);
                    let tail = component::last_lines(&out.stderr_text(), STDERR_LINES);
                    let message = if tail.is_empty() {
                        why.clone()
                    } else {
                        format!("{why}:\n{tail}")
                    };
                    let what = if mode == Mode::Check { "check failed" } else { "failed" };
                    self.step(
                        &c.name,
                        StepKind::Failed,
                        format!("{what}: {}", component::last_lines(&message, 1)),
                    );
                    failure = Some((c.name.clone(), why));
                    failed(
                        &c.name,
                        previous.and_then(|p| p.applied_digest.clone()),
                        message,
                        elapsed,
                    )
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    let kind = if e.is_interrupted() {
                        self.interrupted = true;
                        StepKind::Interrupted
                    } else {
                        StepKind::Failed
                    };
                    self.step(&c.name, kind, &why);
                    failure = Some((c.name.clone(), why.clone()));
                    failed(&c.name, previous.and_then(|p| p.applied_digest.clone()), why, elapsed)
                }
            };
            ordered.push(entry);
        }
        let orphans: Vec<ComponentStatus> = status
            .components
            .iter()
            .filter(|s| !desired.components.iter().any(|c| c.name == s.name))
            .cloned()
            .collect();
        if !dry_run {
            for entry in ordered {
                upsert_component(status, entry);
            }
        }
        for orphan in orphans {
            if failure.is_some() && self.interrupted {
                break;
            }
            self.handle_orphan(status, orphan, secrets).await;
        }
        status.components.sort_by_key(|s| {
            desired
                .components
                .iter()
                .position(|c| c.name == s.name)
                .unwrap_or(usize::MAX)
        });
        match failure {
            Some((name, why)) => Applied::Failed(name, why),
            None if !drifted.is_empty() => Applied::Drifted(drifted),
            None => Applied::AllReady,
        }
    }

    /// A component dropped from the list is never silently forgotten: it stays in the
    /// status as `Orphaned` with the resources it reported, and under `prune: true` its
    /// script runs once in `remove` mode; only a successful removal drops the entry.
    async fn handle_orphan(
        &mut self,
        status: &mut ObservedStatus,
        mut orphan: ComponentStatus,
        secrets: Option<&crate::secrets::Resolved>,
    ) {
        let desired = self.pass.desired;
        orphan.changed = false;
        orphan.state = ComponentState::Orphaned;
        if !desired.prune {
            let why =
                "removed from the server's components; what it installed is still there (set prune: true to remove it)";
            self.step(
                &orphan.name,
                StepKind::Orphaned,
                "dropped from the list; left in place (prune: false)",
            );
            orphan.message = Some(why.to_owned());
            upsert_component(status, orphan);
            return;
        }
        if self.pass.mode == PassMode::DryRun {
            self.step(
                &orphan.name,
                StepKind::WouldPrune,
                "dropped from the list; will be removed (prune: true)",
            );
            return;
        }
        let script = match self.read_script(&orphan.name) {
            Ok(bytes) => bytes,
            Err(why) => {
                let why = format!("cannot prune: {why}");
                self.step(&orphan.name, StepKind::Orphaned, &why);
                orphan.message = Some(why);
                upsert_component(status, orphan);
                return;
            }
        };
        let component = crate::desired::DesiredComponent {
            name: orphan.name.clone(),
            version: None,
            config: desired.config.clone(),
            timeout: crate::desired::DEFAULT_COMPONENT_TIMEOUT,
            script_sha256: None,
        };
        let run = Run {
            server: &desired.name,
            component: &component,
            mode: Mode::Remove,
            deployment_id: self.pass.deployment_id,
            secrets,
        };
        crate::progress::emit(crate::progress::Event::Doing(format!(
            "removing {} (prune)",
            orphan.name
        )));
        let why = match self.scripts.execute(run, &script).await {
            Ok(out) if out.success() => {
                info!(component = %orphan.name, "orphaned component removed (prune)");
                self.step(
                    &orphan.name,
                    StepKind::Pruned,
                    "dropped from the list; removed (prune: true)",
                );
                status.components.retain(|c| c.name != orphan.name);
                return;
            }
            Ok(out) => {
                let tail = component::last_lines(&out.stderr_text(), STDERR_LINES);
                format!("prune failed: {}:\n{tail}", exit_text(&out.exit))
            }
            Err(e) => {
                self.interrupted |= e.is_interrupted();
                format!("prune failed: {e:#}")
            }
        };
        self.step(&orphan.name, StepKind::Orphaned, component::last_lines(&why, 1));
        orphan.message = Some(why);
        upsert_component(status, orphan);
    }

    /// A component's script: the pass's override (a rollback's kept script), else its file.
    fn read_script(&self, name: &str) -> Result<Arc<[u8]>, String> {
        read_script(self.ctx, self.pass, name)
    }
}

fn read_script(ctx: &Context, pass: &Pass<'_>, name: &str) -> Result<Arc<[u8]>, String> {
    if let Some(bytes) = pass.scripts.and_then(|s| s.get(name)) {
        return Ok(bytes.clone());
    }
    ctx.layout.read_script(name).map(Arc::from).map_err(|e| e.to_string())
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(then: Timestamp) -> String {
    conditions::age(then, Timestamp::now())
}

/// Decrypts the secrets a server references and registers them with the redactor.
/// Errors name secrets, never values: (reason, message) for `SecretsResolved=False`.
pub(crate) fn resolve_secrets(
    ctx: &Context,
    desired: &DesiredState,
) -> Result<Option<crate::secrets::Resolved>, (&'static str, String)> {
    if desired.secrets.is_empty() {
        return Ok(None);
    }
    let Some(identity) = &ctx.identity else {
        return Err((
            reasons::NO_IDENTITY,
            format!(
                "spec.secrets lists {} secret(s) but chom has no age identity to decrypt them (--age-identity, CHOM_AGE_IDENTITY or the systemd credential age-identity)",
                desired.secrets.len()
            ),
        ));
    };
    let resolved = crate::secrets::resolve(
        &ctx.layout.secrets,
        &desired.name,
        desired.secrets.iter().map(String::as_str),
        identity,
    )
    .map_err(|e| (reasons::SECRETS_UNREADABLE, format!("{e:#}")))?;
    resolved.register_with(&ctx.redactor);
    if !resolved.is_complete() {
        return Err((reasons::SECRET_MISSING, resolved.problems()));
    }
    Ok(Some(resolved))
}

fn mark_reachable(status: &mut ObservedStatus, generation: u64, now: Timestamp) {
    status.set_condition(
        types::REACHABLE,
        ConditionStatus::True,
        reasons::CONNECTED,
        "ssh login works",
        generation,
        now,
    );
}

fn bool_status(ok: bool) -> ConditionStatus {
    if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    }
}

/// How the components of a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    AllReady,
    Drifted(Vec<String>),
    Failed(String, String),
}

fn skipped(name: &str, why: &str) -> ComponentStatus {
    ComponentStatus {
        name: name.to_owned(),
        state: ComponentState::Skipped,
        applied_digest: None,
        changed: false,
        duration_ms: None,
        last_applied_at: None,
        last_check_time: None,
        last_check_result: None,
        applied_script: None,
        resources: Vec::new(),
        artifacts: Vec::new(),
        resources_not_listed: 0,
        message: Some(why.to_owned()),
    }
}

/// Replaces the entry of the same name, keeping its last applied digest and time (and
/// the last look at it) so a skipped or failed component still remembers what is on the
/// server.
fn upsert_component(status: &mut ObservedStatus, mut new: ComponentStatus) {
    match status.components.iter_mut().find(|c| c.name == new.name) {
        Some(old) => {
            if new.applied_digest.is_none() {
                new.applied_digest = old.applied_digest.take();
            }
            if new.last_applied_at.is_none() {
                new.last_applied_at = old.last_applied_at;
            }
            if new.last_check_time.is_none() {
                new.last_check_time = old.last_check_time;
                new.last_check_result = old.last_check_result;
            }
            if new.applied_script.is_none() {
                new.applied_script = old.applied_script.take();
            }
            *old = new;
        }
        None => status.components.push(new),
    }
}

/// One component as the pass finds it, or why its script cannot be read.
type Plan = Result<Planned, String>;

/// A component's script, digest and what is pending for it.
struct Planned {
    name: String,
    script: Arc<[u8]>,
    digest: String,
    pending: Pending,
}

/// Reads every component's script once per pass and decides what is pending, from the
/// status before the pass and the pass's mode; in the order of `desired.components`.
fn plan(ctx: &Context, pass: &Pass<'_>, status: &ObservedStatus) -> Vec<Plan> {
    let now = std::time::SystemTime::now();
    let desired = pass.desired;
    // Explicit passes and plans check every applied component now, whatever its last check.
    let interval = match pass.mode {
        PassMode::Periodic => desired.interval,
        _ => std::time::Duration::ZERO,
    };
    desired
        .components
        .iter()
        .map(|c| {
            let script = read_script(ctx, pass, &c.name)?;
            let digest = component::digest(c, &script, &desired.secret_versions);
            let previous = status.components.iter().find(|p| p.name == c.name);
            let pending = match pass.mode {
                PassMode::Reapply => Pending::Reapply,
                _ => component::pending(previous, &digest, &script, interval, now),
            };
            Ok(Planned {
                name: c.name.clone(),
                script,
                digest,
                pending,
            })
        })
        .collect()
}

fn exit_text(exit: &Exit) -> String {
    match exit {
        Exit::Status(code) => format!("exited with status {code}"),
        Exit::Signal(sig) => format!("killed by signal {sig}"),
        Exit::Closed => "the channel closed without an exit status".to_owned(),
    }
}

fn failed(name: &str, applied_digest: Option<String>, message: String, elapsed: u64) -> ComponentStatus {
    warn!(component = %name, error = %message, "component failed");
    ComponentStatus {
        name: name.to_owned(),
        state: ComponentState::Failed,
        applied_digest,
        changed: false,
        duration_ms: Some(elapsed),
        last_applied_at: None,
        last_check_time: None,
        last_check_result: None,
        applied_script: None,
        resources: Vec::new(),
        artifacts: Vec::new(),
        resources_not_listed: 0,
        message: Some(message),
    }
}
