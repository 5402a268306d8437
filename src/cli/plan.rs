//! `chom plan [NAME…]`: what a reconcile would do, per server and component, without
//! changing anything: digests are compared with the status files, and components
//! already applied run in `check` mode.
//!
//! Exit codes: 0 nothing to do, 3 changes pending, 1 an error (a server unreachable or
//! a check that failed), 2 usage or environment errors.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::{SshArgs, TreeArgs, table};
use crate::component::{self, CHECK_WOULD_CHANGE, Mode, Pending, Run};
use crate::desired;
use crate::reconcile::{self, Context};
use crate::ssh::Exit;
use crate::status;

/// Show what a reconcile would change, without changing anything.
///
/// Exit codes: 0 nothing to do, 3 changes pending, 1 errors, 2 usage errors.
///
/// Examples:
///   chom plan
///   chom plan web-1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlanArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Servers planned at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub workers: usize,
    /// Servers to plan (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// One line of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    InSync,
    Change,
    Error,
}

struct Line {
    server: String,
    component: String,
    verdict: Verdict,
    plan: String,
    detail: String,
}

/// Builds and prints the plan.
pub fn run(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let (inventory, names) = super::load_servers(&args.tree, &args.names)?;
    let layout = args.tree.layout();
    let ctx = super::reconcile_context(&args.tree, &args.ssh, &inventory);
    let digests = Arc::new(desired::sources(&inventory, &layout));
    let inventory = Arc::new(inventory);
    let deployment_id = format!("plan-{}", reconcile::new_deployment_id());
    let runtime = super::runtime()?;
    let mut lines: Vec<Line> = runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(args.workers.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (ctx, inventory, digests, limit, id) = (
                ctx.clone(),
                inventory.clone(),
                digests.clone(),
                limit.clone(),
                deployment_id.clone(),
            );
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.ok();
                plan_server(&ctx, &inventory, &digests, &name, &id).await
            });
        }
        let mut lines = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            lines.extend(joined.unwrap_or_default());
        }
        ctx.transport.close_all().await;
        lines
    });
    lines.sort_by(|a, b| a.server.cmp(&b.server));
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| vec![l.server.clone(), l.component.clone(), l.plan.clone(), l.detail.clone()])
        .collect();
    print!("{}", table::render(&["SERVER", "COMPONENT", "PLAN", "DETAIL"], &rows));
    let count = |v: Verdict| lines.iter().filter(|l| l.verdict == v).count();
    let (in_sync, changes, errors) = (count(Verdict::InSync), count(Verdict::Change), count(Verdict::Error));
    println!("plan: {in_sync} in sync, {changes} to change, {errors} error(s); nothing was changed");
    Ok(ExitCode::from(if errors > 0 {
        1
    } else if changes > 0 {
        3
    } else {
        0
    }))
}

async fn plan_server(
    ctx: &Context,
    inventory: &crate::inventory::Inventory,
    digests: &desired::Sources,
    name: &str,
    deployment_id: &str,
) -> Vec<Line> {
    let Some(entry) = inventory.servers.get(name) else {
        return Vec::new();
    };
    let desired = desired::desired_state(inventory, entry, digests);
    let previous = status::read(&entry.status_path()).map(|s| s.status);
    let line = |component: &str, verdict, plan: &str, detail: String| Line {
        server: name.to_owned(),
        component: component.to_owned(),
        verdict,
        plan: plan.to_owned(),
        detail,
    };
    if desired.suspend {
        return vec![line(
            "-",
            Verdict::InSync,
            "suspended",
            "spec.suspend is true; nothing will run".to_owned(),
        )];
    }
    let target = crate::detect::target_for(entry, &ctx.base);
    let resolved = reconcile::resolve_secrets(ctx, &desired).map_err(|(_, why)| why);
    let mut lines = Vec::new();
    for c in &desired.components {
        let script = match ctx.layout.read_script(&c.name) {
            Ok(s) => s,
            Err(e) => {
                lines.push(line(
                    &c.name,
                    Verdict::Error,
                    "error",
                    format!("cannot read its script: {e}"),
                ));
                continue;
            }
        };
        let digest = component::digest(c, &script, &desired.secret_versions);
        let prev = previous
            .as_ref()
            .and_then(|p| p.components.iter().find(|x| x.name == c.name));
        // Interval zero: every applied component is checked, whatever its last check.
        match component::pending(prev, &digest, &script, Duration::ZERO, SystemTime::now()) {
            Pending::NeverApplied => lines.push(line(
                &c.name,
                Verdict::Change,
                "never applied",
                "will be applied".into(),
            )),
            Pending::ScriptChanged => lines.push(line(
                &c.name,
                Verdict::Change,
                "script changed",
                "will be re-applied".into(),
            )),
            Pending::ConfigChanged => lines.push(line(
                &c.name,
                Verdict::Change,
                "config changed",
                "version or config differs; will be re-applied".into(),
            )),
            Pending::NotApplied => lines.push(line(
                &c.name,
                Verdict::Change,
                "would change",
                "the last run did not succeed; will be applied".into(),
            )),
            Pending::CheckDue | Pending::InSync => {
                let secrets = match &resolved {
                    Ok(r) => r.as_ref(),
                    Err(why) => {
                        lines.push(line(&c.name, Verdict::Error, "error", why.clone()));
                        continue;
                    }
                };
                let run = Run {
                    server: &desired.name,
                    component: c,
                    mode: Mode::Check,
                    deployment_id,
                    secrets,
                };
                let run = reconcile::execute(ctx, &target, run, &script).await;
                lines.push(match run {
                    Ok(out) if out.success() => line(&c.name, Verdict::InSync, "in sync", String::new()),
                    Ok(out) if out.exit == Exit::Status(CHECK_WOULD_CHANGE) => line(
                        &c.name,
                        Verdict::Change,
                        "would change",
                        "drift found by check mode".into(),
                    ),
                    Ok(out) => line(
                        &c.name,
                        Verdict::Error,
                        "error",
                        format!("check failed: {}", component::last_lines(&out.stderr_text(), 1)),
                    ),
                    Err(e) => line(&c.name, Verdict::Error, "error", format!("{e:#}")),
                });
            }
        }
    }
    for orphan in previous
        .iter()
        .flat_map(|p| p.components.iter())
        .filter(|s| !desired.components.iter().any(|c| c.name == s.name))
    {
        let (verdict, detail) = if desired.prune {
            (Verdict::Change, "dropped from the list; will be removed (prune: true)")
        } else {
            (Verdict::InSync, "dropped from the list; left in place (prune: false)")
        };
        lines.push(line(&orphan.name, verdict, "orphaned", detail.to_owned()));
    }
    if lines.is_empty() {
        lines.push(line("-", Verdict::InSync, "in sync", "no components".to_owned()));
    }
    lines
}
