//! `chom rollback NAME [--to DEPLOYMENT]` and `chom resume NAME`: re-apply the scripts
//! and configs recorded in an earlier deployment (kept content-addressed in the state
//! directory), pin the server there, and release the pin.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use super::{SshArgs, TreeArgs};
use crate::component::{Mode, Run};
use crate::desired::{self, DesiredComponent};
use crate::history::{History, Record};
use crate::pin::{self, Pin};
use crate::reconcile;
use crate::status::{self, ComponentState, Timestamp};

/// Re-apply an earlier deployment's component versions and pin the server there.
///
/// Without --to, the last successful deployment before the current one is used. The
/// server stays pinned (the daemon and `chom reconcile` leave it alone) until
/// `chom resume NAME` or until its desired state changes.
///
/// Examples:
///   chom rollback web-1
///   chom rollback web-1 --to d-20261126T120000123Z-1a2b3c4d
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RollbackArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// The state directory (history, pins) [default: $CHOM_STATE_DIR, $STATE_DIRECTORY,
    /// else .chom/ beside the inventory].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// The deployment to return to (see `chom history NAME`).
    #[arg(long = "to", value_name = "DEPLOYMENT")]
    pub to: Option<String>,
    /// The server.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Release a server pinned by `chom rollback`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// The server.
    #[arg(value_name = "NAME")]
    pub name: String,
}

fn target_record(records: &[Record], name: &str, to: Option<&str>) -> anyhow::Result<Record> {
    let ok: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.servers
                .iter()
                .any(|s| s.name == name && s.result == status::ReconcileResult::Succeeded)
        })
        .collect();
    let found = match to {
        Some(id) => records
            .iter()
            .find(|r| r.id == id && r.servers.iter().any(|s| s.name == name)),
        None if ok.len() >= 2 => Some(ok[ok.len() - 2]),
        None => None,
    };
    match (found, to) {
        (Some(r), _) => Ok(r.clone()),
        (None, Some(id)) => bail!("deployment {id} of {name} is not in the history (see `chom history {name}`)"),
        (None, None) => bail!("no earlier successful deployment of {name} is recorded (see `chom history {name}`)"),
    }
}

/// Rolls back and pins.
pub fn run(args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let (inventory, _) = super::load_servers(&args.tree, std::slice::from_ref(&args.name))?;
    let Some(entry) = inventory.servers.get(&args.name) else {
        bail!("server {} is not in the inventory", args.name)
    };
    let state_dir = super::state_dir(&args.tree, args.state_dir.as_deref());
    let history = History::open(&state_dir).with_context(|| format!("opening history in {}", state_dir.display()))?;
    let record = target_record(&history.records(), &args.name, args.to.as_deref())?;
    let Some(server) = record.servers.iter().find(|s| s.name == args.name) else {
        bail!("no record of {}", args.name)
    };
    let layout = args.tree.layout();
    let sources = desired::sources(&inventory, &layout);
    let current = desired::desired_state(&inventory, entry, &sources);
    let mut components = Vec::new();
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
        let config: serde_json::Value = serde_json::from_slice(&history.object(config_id)?)?;
        let component = DesiredComponent {
            name: c.name.clone(),
            version: c.version.clone(),
            config: config.as_object().cloned().unwrap_or_default(),
            timeout: desired::DEFAULT_COMPONENT_TIMEOUT,
            script_sha256: None,
        };
        components.push((component, script));
    }
    let ctx = super::reconcile_context(&args.tree, &args.ssh, &inventory);
    let target = crate::detect::target_for(entry, &ctx.base);
    let deployment_id = reconcile::new_deployment_id();
    let secrets = reconcile::resolve_secrets(&ctx, &current).map_err(|(_, why)| anyhow::anyhow!(why))?;
    let runtime = super::runtime()?;
    let mut statuses = Vec::new();
    let mut failed = None;
    runtime.block_on(async {
        for (component, script) in &components {
            let run = Run {
                server: &args.name,
                component,
                mode: Mode::Apply,
                deployment_id: &deployment_id,
                secrets: secrets.as_ref(),
            };
            match reconcile::execute(&ctx, &target, run, script).await {
                Ok(out) if out.success() => {
                    println!("{}: {} re-applied from {}", args.name, component.name, record.id);
                    statuses.push((
                        component.name.clone(),
                        crate::component::digest(component, script, &current.secret_versions),
                    ));
                }
                Ok(out) => {
                    failed = Some(format!(
                        "{} failed: {}",
                        component.name,
                        crate::component::last_lines(&out.stderr_text(), 5)
                    ));
                    break;
                }
                Err(e) => {
                    failed = Some(format!("{}: {e:#}", component.name));
                    break;
                }
            }
        }
        ctx.transport.close_all().await;
    });
    let audit = crate::audit::Audit::open(&state_dir, &args.tree.inventory)?;
    if let Some(why) = failed {
        audit.record(
            "rollback.failed",
            serde_json::json!({"server": args.name, "to": record.id, "error": why}),
        );
        bail!(
            "rollback of {} to {} stopped: {why}; the server is not pinned",
            args.name,
            record.id
        );
    }
    let pin = Pin {
        deployment: record.id.clone(),
        desired_hash: current.hash(),
        pinned_at: Timestamp::now(),
        by: crate::audit::who(),
    };
    pin::write(&state_dir, &args.name, &pin)?;
    audit.record(
        "rollback",
        serde_json::json!({"server": args.name, "to": record.id, "deploymentId": deployment_id}),
    );
    let path = entry.status_path();
    let previous = status::read(&path);
    let generation = status::generation_for(previous.as_ref(), &pin.desired_hash);
    let mut observed = previous.map(|p| p.status).unwrap_or_default();
    for (name, digest) in statuses {
        if let Some(c) = observed.components.iter_mut().find(|c| c.name == name) {
            c.state = ComponentState::Applied;
            c.applied_digest = Some(digest);
            c.changed = true;
            c.message = Some(format!("rolled back to deployment {}", record.id));
        }
    }
    pin::mark(&mut observed, &pin, generation);
    status::write_if_changed(
        &path,
        &status::document(&args.name, generation, &pin.desired_hash, observed),
    )?;
    println!(
        "{} is pinned to {}; `chom resume {}` releases it",
        args.name, record.id, args.name
    );
    Ok(ExitCode::SUCCESS)
}

/// Releases a pin.
pub fn resume(args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let state_dir = super::state_dir(&args.tree, args.state_dir.as_deref());
    if !pin::remove(&state_dir, &args.name)? {
        println!("{} is not pinned", args.name);
        return Ok(ExitCode::SUCCESS);
    }
    crate::audit::Audit::open(&state_dir, &args.tree.inventory)?
        .record("resume", serde_json::json!({"server": args.name}));
    println!(
        "{} released; the next reconcile applies its current desired state (send the daemon SIGHUP to do it now)",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}
