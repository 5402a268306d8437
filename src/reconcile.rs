//! One reconcile pass of one server: desired state → connect and detect → judge →
//! components (apply what changed, check what did not) → the new observed status.
//! Per-server failures are data in the returned status, never errors; this module
//! neither writes files nor schedules retries (the caller does both).

mod scripts;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{Instrument as _, info, warn};

use scripts::Scripts;
pub(crate) use scripts::execute;

use crate::component::{self, CHECK_WOULD_CHANGE, Mode, Pending, Run};
use crate::desired::DesiredState;
use crate::detect::{self, DetectError};
use crate::facts::Hardware;
use crate::inventory::{Layout, ServerEntry};
use crate::judge;
use crate::resource::DriftPolicy;
use crate::ssh::{Exit, Transport};
use crate::status::{
    ComponentState, ComponentStatus, ConditionStatus, LastReconcile, ObservedStatus, RECENT_RUNS, ReconcileResult,
    Timestamp, types,
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

/// The outcome of one pass.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The new observed status (the caller adds `nextRetryAt`).
    pub status: ObservedStatus,
    /// Succeeded, Failed or Blocked.
    pub result: ReconcileResult,
    /// Hardware differences since the previous detection, if any.
    pub hardware_changes: Vec<String>,
}

/// A new deployment id: UTC time to the millisecond plus 32 random bits
/// (`d-20261126T120000123Z-1a2b3c4d`).
pub fn new_deployment_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish() as u32;
    let now = Timestamp::now();
    let millis = now
        .0
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    // Milliseconds keep ids (and the history files named after them) in time order.
    let stamp = now
        .to_string()
        .replace(['-', ':'], "")
        .replace('Z', &format!("{millis:03}Z"));
    format!("d-{stamp}-{random:08x}")
}

/// Lines of stderr kept in a failed component's status.
const STDERR_LINES: usize = 20;

/// Runs one pass. `previous` is the last observed status (from memory or the status
/// file), used for component digests, condition transition times and hardware changes.
pub async fn reconcile(
    ctx: &Context,
    entry: &ServerEntry,
    desired: &DesiredState,
    generation: u64,
    previous: Option<&ObservedStatus>,
    deployment_id: &str,
) -> Outcome {
    let span = tracing::info_span!("reconcile", server = %desired.name, deployment_id = %deployment_id);
    run_pass(ctx, entry, desired, generation, previous, deployment_id)
        .instrument(span)
        .await
}

async fn run_pass(
    ctx: &Context,
    entry: &ServerEntry,
    desired: &DesiredState,
    generation: u64,
    previous: Option<&ObservedStatus>,
    deployment_id: &str,
) -> Outcome {
    let started = Timestamp::now();
    info!(generation, "reconcile started");
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.remove_condition(types::RECONCILING);
    // A pass runs only when no rollback pin holds the server.
    status.remove_condition("Pinned");
    let mut hardware_changes = Vec::new();

    let result = if desired.suspend {
        status.set_condition(
            types::READY,
            ConditionStatus::False,
            "Suspended",
            "spec.suspend is true; chom does not touch this server",
            generation,
            started,
        );
        status.remove_condition(types::STALLED);
        ReconcileResult::Blocked
    } else {
        let target = detect::target_for(entry, &ctx.base);
        let plans = plan(ctx, desired, &status);
        let mut scripts = Scripts::for_pass(ctx, &target, desired, &status, &plans);
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
                detected(
                    ctx,
                    &mut scripts,
                    plans,
                    desired,
                    &hw,
                    &mut status,
                    generation,
                    deployment_id,
                    started,
                )
                .await
            }
        };
        scripts.finish().await;
        result
    };

    let finished = Timestamp::now();
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
    info!(result = ?result, "reconcile finished");
    Outcome {
        status,
        result,
        hardware_changes,
    }
}

fn unreachable(status: &mut ObservedStatus, error: &DetectError, generation: u64, now: Timestamp) -> ReconcileResult {
    let message = format!("{error:#}");
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
            "Unreachable",
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

#[allow(clippy::too_many_arguments)]
async fn detected(
    ctx: &Context,
    scripts: &mut Scripts<'_>,
    plans: Vec<Plan>,
    desired: &DesiredState,
    hw: &Hardware,
    status: &mut ObservedStatus,
    generation: u64,
    deployment_id: &str,
    now: Timestamp,
) -> ReconcileResult {
    mark_reachable(status, generation, now);
    status.set_condition(
        types::HARDWARE_DETECTED,
        ConditionStatus::True,
        "Detected",
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
        return block(status, desired, why, &req.reason, &req.message, generation, now);
    }
    status.remove_condition(types::STALLED);

    let resolved = match resolve_secrets(ctx, desired) {
        Ok(resolved) => {
            if !desired.secrets.is_empty() {
                let message = format!("{} secret(s) decrypted", desired.secrets.len());
                status.set_condition(
                    types::SECRETS_RESOLVED,
                    ConditionStatus::True,
                    "Resolved",
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
            return block(status, desired, why, reason, &message, generation, now);
        }
    };

    let applied = apply_components(ctx, scripts, plans, desired, status, deployment_id, resolved.as_ref()).await;
    let (ready, reason, message, result) = match &applied {
        Applied::AllReady => (
            true,
            "Reconciled",
            "every component is applied and in sync".to_owned(),
            ReconcileResult::Succeeded,
        ),
        Applied::Drifted(names) => (
            false,
            "Drifted",
            format!("drift found in {} (driftPolicy: report)", names.join(", ")),
            ReconcileResult::Succeeded,
        ),
        Applied::Failed(name, why) => (
            false,
            "ComponentFailed",
            format!("{name}: {why}"),
            ReconcileResult::Failed,
        ),
    };
    let components_ok = !matches!(applied, Applied::Failed(..));
    let components_reason = if components_ok { "AllApplied" } else { "ComponentFailed" };
    status.set_condition(
        types::COMPONENTS_READY,
        bool_status(components_ok),
        components_reason,
        &message,
        generation,
        now,
    );
    match &applied {
        Applied::Drifted(_) => status.set_condition(
            types::DRIFTED,
            ConditionStatus::True,
            "Drifted",
            &message,
            generation,
            now,
        ),
        _ => status.set_condition(
            types::DRIFTED,
            ConditionStatus::False,
            "InSync",
            "no drift found",
            generation,
            now,
        ),
    }
    status.set_condition(types::READY, bool_status(ready), reason, message, generation, now);
    result
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
            "NoIdentity",
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
    .map_err(|e| ("SecretsUnreadable", format!("{e:#}")))?;
    resolved.register_with(&ctx.redactor);
    if !resolved.is_complete() {
        return Err(("SecretMissing", resolved.problems()));
    }
    Ok(Some(resolved))
}

/// Holds a server back before any component runs: every component is Skipped, and
/// ComponentsReady/Ready go False and Stalled True with the same reason, because a
/// person has to act (add hardware, provide the secrets).
#[allow(clippy::too_many_arguments)]
fn block(
    status: &mut ObservedStatus,
    desired: &DesiredState,
    why_skipped: &str,
    reason: &str,
    message: &str,
    generation: u64,
    now: Timestamp,
) -> ReconcileResult {
    for c in &desired.components {
        upsert_component(status, skipped(&c.name, why_skipped));
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

fn mark_reachable(status: &mut ObservedStatus, generation: u64, now: Timestamp) {
    status.set_condition(
        types::REACHABLE,
        ConditionStatus::True,
        "Connected",
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

enum Applied {
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
        last_checked_at: None,
        applied_script: None,
        resources: Vec::new(),
        message: Some(why.to_owned()),
    }
}

/// Replaces the entry of the same name, keeping its last applied digest and time so a
/// skipped or failed component still remembers what is on the server.
fn upsert_component(status: &mut ObservedStatus, mut new: ComponentStatus) {
    match status.components.iter_mut().find(|c| c.name == new.name) {
        Some(old) => {
            if new.applied_digest.is_none() {
                new.applied_digest = old.applied_digest.take();
            }
            if new.last_applied_at.is_none() {
                new.last_applied_at = old.last_applied_at;
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
    script: Vec<u8>,
    digest: String,
    pending: Pending,
}

/// Reads every component's script once per pass and decides what is pending, from the
/// status before the pass; in the order of `desired.components`.
fn plan(ctx: &Context, desired: &DesiredState, status: &ObservedStatus) -> Vec<Plan> {
    let now = std::time::SystemTime::now();
    desired
        .components
        .iter()
        .map(|c| {
            let script = ctx
                .layout
                .read_script(&c.name)
                .map_err(|e| format!("cannot read {}: {e}", ctx.layout.script(&c.name).display()))?;
            let digest = component::digest(c, &script, &desired.secret_versions);
            let previous = status.components.iter().find(|p| p.name == c.name);
            let pending = component::pending(previous, &digest, &script, desired.interval, now);
            Ok(Planned {
                script,
                digest,
                pending,
            })
        })
        .collect()
}

async fn apply_components(
    ctx: &Context,
    scripts: &mut Scripts<'_>,
    plans: Vec<Plan>,
    desired: &DesiredState,
    status: &mut ObservedStatus,
    deployment_id: &str,
    secrets: Option<&crate::secrets::Resolved>,
) -> Applied {
    let mut drifted = Vec::new();
    let mut failure: Option<(String, String)> = None;
    // Keep the status list in apply order.
    let mut ordered = Vec::with_capacity(desired.components.len());
    for (c, planned) in desired.components.iter().zip(plans) {
        if let Some((failed, _)) = &failure {
            ordered.push(skipped(&c.name, &format!("skipped: {failed} failed before it")));
            continue;
        }
        let Planned {
            script,
            digest,
            pending,
        } = match planned {
            Ok(plan) => plan,
            Err(why) => {
                failure = Some((c.name.clone(), why.clone()));
                ordered.push(failed(&c.name, None, why, 0));
                continue;
            }
        };
        let previous = status.components.iter().find(|p| p.name == c.name);
        if pending == Pending::InSync
            && let Some(p) = previous
        {
            // Applied with this digest and checked within the interval: do not run it.
            let mut entry = p.clone();
            entry.changed = false;
            ordered.push(entry);
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
            deployment_id,
            secrets,
        };
        let mut run = scripts.execute(run_of(mode), &script).await;
        if mode == Mode::Check
            && let Ok(out) = &run
            && out.exit == Exit::Status(CHECK_WOULD_CHANGE)
        {
            info!(component = %c.name, "drift found");
            if desired.drift_policy == DriftPolicy::Report {
                drifted.push(c.name.clone());
                let mut entry = previous.cloned().unwrap_or_else(|| skipped(&c.name, ""));
                entry.state = ComponentState::Drifted;
                entry.changed = false;
                entry.message = Some("a check run found drift; not corrected (driftPolicy: report)".to_owned());
                entry.last_checked_at = Some(Timestamp::now());
                ordered.push(entry);
                continue;
            }
            mode = Mode::Apply;
            run = scripts.execute(run_of(mode), &script).await;
        }
        let elapsed = started.elapsed().as_millis() as u64;
        let entry = match run {
            Ok(out) if out.success() => {
                let report = component::parse_report(&out.stdout_text());
                for w in &report.warnings {
                    warn!(component = %c.name, warning = %w, "script warning");
                }
                let changed = mode == Mode::Apply && report.changed;
                if changed {
                    info!(component = %c.name, "component applied with changes");
                }
                let now = Timestamp::now();
                let last_applied_at = match (mode, previous) {
                    (Mode::Check, Some(p)) => p.last_applied_at,
                    _ => Some(now),
                };
                let message = (!report.warnings.is_empty()).then(|| report.warnings.join("; "));
                ComponentStatus {
                    name: c.name.clone(),
                    state: ComponentState::Applied,
                    applied_digest: Some(digest),
                    changed,
                    duration_ms: Some(elapsed),
                    last_applied_at,
                    last_checked_at: Some(now),
                    applied_script: Some(component::script_sha(&script)),
                    resources: report.resources,
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
    for entry in ordered {
        upsert_component(status, entry);
    }
    for orphan in orphans {
        handle_orphan(ctx, scripts, desired, status, orphan, deployment_id, secrets).await;
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

fn exit_text(exit: &Exit) -> String {
    match exit {
        Exit::Status(code) => format!("exited with status {code}"),
        Exit::Signal(sig) => format!("killed by signal {sig}"),
        Exit::Closed => "the channel closed without an exit status".to_owned(),
    }
}

/// A component dropped from the list is never silently forgotten: it stays in the
/// status as `Orphaned` with the resources it reported, and under `prune: true` its
/// script runs once in `remove` mode; only a successful removal drops the entry.
async fn handle_orphan(
    ctx: &Context,
    scripts: &mut Scripts<'_>,
    desired: &DesiredState,
    status: &mut ObservedStatus,
    mut orphan: ComponentStatus,
    deployment_id: &str,
    secrets: Option<&crate::secrets::Resolved>,
) {
    orphan.changed = false;
    orphan.state = ComponentState::Orphaned;
    if !desired.prune {
        orphan.message = Some(
            "removed from the server's components; what it installed is still there (set prune: true to remove it)"
                .to_owned(),
        );
        upsert_component(status, orphan);
        return;
    }
    let script = match ctx.layout.read_script(&orphan.name) {
        Ok(bytes) => bytes,
        Err(e) => {
            orphan.message = Some(format!(
                "cannot prune: {}: {e}",
                ctx.layout.script(&orphan.name).display()
            ));
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
        deployment_id,
        secrets,
    };
    match scripts.execute(run, &script).await {
        Ok(out) if out.success() => {
            info!(component = %orphan.name, "orphaned component removed (prune)");
            status.components.retain(|c| c.name != orphan.name);
        }
        Ok(out) => {
            let tail = component::last_lines(&out.stderr_text(), STDERR_LINES);
            orphan.message = Some(format!("prune failed: {}:\n{tail}", exit_text(&out.exit)));
            upsert_component(status, orphan);
        }
        Err(e) => {
            orphan.message = Some(format!("prune failed: {e:#}"));
            upsert_component(status, orphan);
        }
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
        last_checked_at: None,
        applied_script: None,
        resources: Vec::new(),
        message: Some(message),
    }
}
