//! `chom plan [NAME…]`: what a reconcile would do, per server and component, without
//! changing anything. It is the controller's own pass in dry-run mode: the same gates,
//! digests and check runs as `chom reconcile`, with every apply and removal left out, so
//! the two always agree.
//!
//! Exit codes: 0 nothing to do, 3 changes pending, 1 an error (a server unreachable or
//! a check that failed), 2 usage or environment errors.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{IdentityArgs, SelectorArgs, SshArgs, TreeArgs, table};
use crate::component;
use crate::controller::{Controller, Server};
use crate::desired;
use crate::reconcile::{self, Outcome, PassMode, StepKind};
use crate::status::{ReconcileResult, reasons, types};

/// Show what a reconcile would change, without changing anything.
///
/// Exit codes: 0 nothing to do, 3 changes pending, 1 errors (a server unreachable, a
/// check that failed), 2 usage or environment errors.
///
/// Examples:
///   chom plan
///   chom plan web-1
///   chom plan -l env=prod -o json
///   chom plan --diff web-1           # what would change in each managed file
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlanArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// The secrets identity.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Which servers.
    #[command(flatten)]
    pub select: SelectorArgs,
    /// Output format: the table, or the summary as JSON or YAML (README: "Output shapes").
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Show, under the table, what each drifted component would change in the files it
    /// manages: a unified diff per file, as its check run reports it (`::chom:: diff-begin`;
    /// the example scripts' `ensure_file` does). Secret files are named, never shown.
    #[arg(long)]
    pub diff: bool,
    /// Servers planned at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub workers: usize,
    /// Servers to plan (default: all).
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub names: Vec<String>,
}

/// Output formats of `chom plan` and `chom reconcile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table and a summary line.
    Table,
    /// The summary document as JSON.
    Json,
    /// The summary document as YAML.
    Yaml,
}

/// Prints a summary document as JSON or YAML.
pub fn print_document<T: serde::Serialize>(output: Output, doc: &T) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(doc)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(doc)?),
        Output::Table => {}
    }
    Ok(())
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
    diffs: Vec<component::FileDiff>,
}

/// `chom plan -o json|yaml`: the plan as a document.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanDocument<'a> {
    api_version: &'static str,
    kind: &'static str,
    items: Vec<PlanItem<'a>>,
    summary: PlanSummary,
}

/// One server and component of the plan.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanItem<'a> {
    server: &'a str,
    /// `-` for a line about the whole server.
    component: &'a str,
    /// `in sync`, `would apply`, `would change`, `orphaned`, `suspended`, `pinned`, `error`.
    plan: &'a str,
    /// `inSync`, `change` or `error`.
    verdict: &'static str,
    detail: &'a str,
    /// With --diff: the files a drifted component would change.
    #[serde(skip_serializing_if = "Option::is_none")]
    diffs: Option<&'a [component::FileDiff]>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanSummary {
    in_sync: usize,
    to_change: usize,
    errors: usize,
    /// The exit code: 0, 3 or 1.
    exit_code: u8,
}

/// Builds and prints the plan.
pub fn run(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let (inventory, names) = super::load_servers(&args.tree, &args.names, &args.select)?;
    if names.is_empty() {
        super::nothing_selected(&args.select);
    }
    let state_dir = super::state_dir(&args.tree, None);
    let ctx = super::reconcile_context(
        &args.tree,
        &args.ssh,
        &args.identity,
        &inventory,
        CancellationToken::new(),
    );
    let controller = Arc::new(Controller::read_only(ctx, state_dir, args.tree.inventory.clone()));
    let sources = Arc::new(desired::sources(&inventory, &args.tree.layout()));
    let inventory = Arc::new(inventory);
    let deployment_id = format!("plan-{}", reconcile::new_deployment_id());
    let runtime = super::runtime()?;
    let board = crate::progress::Board::new("planning", names.len());
    let mut lines: Vec<Line> = runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(args.workers.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (controller, inventory, sources, limit, id) = (
                controller.clone(),
                inventory.clone(),
                sources.clone(),
                limit.clone(),
                deployment_id.clone(),
            );
            let (outer, board) = (board.clone(), board.clone());
            let scoped = name.clone();
            tasks.spawn(outer.scope(&scoped, async move {
                let _permit = limit.acquire_owned().await.ok();
                let entry = inventory.servers.get(&name)?;
                let server = Server::from_files(&inventory, entry, &sources);
                let done = controller.run_one(&server, &id, PassMode::DryRun, None).await;
                let lines = lines_of(&name, &done.outcome);
                let count = |v: Verdict| lines.iter().filter(|l| l.verdict == v).count();
                let how = format!(
                    "{} in sync, {} to change, {} error(s)",
                    count(Verdict::InSync),
                    count(Verdict::Change),
                    count(Verdict::Error)
                );
                board.finish(&name, count(Verdict::Error) == 0, &how);
                Some(lines)
            }));
        }
        let mut lines = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            lines.extend(joined.ok().flatten().unwrap_or_default());
        }
        controller.ctx.transport.close_all().await;
        lines
    });
    board.clear();
    lines.sort_by(|a, b| a.server.cmp(&b.server));
    let count = |v: Verdict| lines.iter().filter(|l| l.verdict == v).count();
    let (in_sync, changes, errors) = (count(Verdict::InSync), count(Verdict::Change), count(Verdict::Error));
    let code = if errors > 0 {
        1
    } else if changes > 0 {
        3
    } else {
        0
    };
    if args.output != Output::Table {
        let doc = PlanDocument {
            api_version: crate::resource::API_VERSION,
            kind: "Plan",
            items: lines
                .iter()
                .map(|l| PlanItem {
                    server: &l.server,
                    component: &l.component,
                    plan: &l.plan,
                    verdict: match l.verdict {
                        Verdict::InSync => "inSync",
                        Verdict::Change => "change",
                        Verdict::Error => "error",
                    },
                    detail: &l.detail,
                    diffs: (args.diff && !l.diffs.is_empty()).then_some(l.diffs.as_slice()),
                })
                .collect(),
            summary: PlanSummary {
                in_sync,
                to_change: changes,
                errors,
                exit_code: code,
            },
        };
        print_document(args.output, &doc)?;
        return Ok(ExitCode::from(code));
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| vec![l.server.clone(), l.component.clone(), l.plan.clone(), l.detail.clone()])
        .collect();
    print!("{}", table::render(&["SERVER", "COMPONENT", "PLAN", "DETAIL"], &rows));
    if args.diff {
        print!("{}", render_diffs(&lines));
    }
    println!("plan: {in_sync} in sync, {changes} to change, {errors} error(s); nothing was changed");
    Ok(ExitCode::from(code))
}

/// The diffs under the table: a heading per server, component and file, then the diff.
fn render_diffs(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines.iter().filter(|l| !l.diffs.is_empty()) {
        for d in &l.diffs {
            out.push_str(&format!("\n{} {}: {}\n", l.server, l.component, d.path));
            if d.secret {
                out.push_str("(secret file: contents not shown)\n");
                continue;
            }
            out.push_str(&d.diff);
            if d.truncated {
                out.push_str(&format!(
                    "(diff cut at {} lines or {} KiB)\n",
                    component::DIFF_LINES_MAX,
                    component::DIFF_BYTES_MAX / 1024
                ));
            }
        }
    }
    out
}

/// The plan lines of one server, from its dry-run pass: one per component, or one for
/// the whole server when it was held back or could not be reached.
fn lines_of(name: &str, outcome: &Outcome) -> Vec<Line> {
    let line = |component: &str, verdict, plan: &str, detail: String| Line {
        server: name.to_owned(),
        component: component.to_owned(),
        verdict,
        plan: plan.to_owned(),
        detail,
        diffs: Vec::new(),
    };
    let ready = outcome.status.condition(types::READY);
    let why = ready.map(|c| c.message.clone()).unwrap_or_default();
    match ready.map(|c| c.reason.as_str()) {
        Some(reasons::SUSPENDED) => return vec![line("-", Verdict::InSync, "suspended", why)],
        Some(reasons::PINNED) if outcome.steps.is_empty() => return vec![line("-", Verdict::InSync, "pinned", why)],
        _ => {}
    }
    if outcome.steps.is_empty() {
        return vec![match outcome.result {
            ReconcileResult::Failed => line("-", Verdict::Error, "error", component::last_lines(&why, 1)),
            _ => line("-", Verdict::InSync, "in sync", "no components".to_owned()),
        }];
    }
    outcome
        .steps
        .iter()
        .map(|step| {
            let (verdict, plan) = match step.kind {
                StepKind::InSync | StepKind::Unchanged => (Verdict::InSync, "in sync"),
                StepKind::WouldApply => (Verdict::Change, "would apply"),
                StepKind::WouldCorrect => (Verdict::Change, "would change"),
                StepKind::WouldPrune => (Verdict::Change, "orphaned"),
                StepKind::Orphaned => (Verdict::InSync, "orphaned"),
                // A dry run applies nothing; these appear only if a caller mixed modes.
                StepKind::Applied | StepKind::DriftCorrected | StepKind::DriftReported | StepKind::Pruned => {
                    (Verdict::Change, "would change")
                }
                StepKind::Failed | StepKind::Interrupted | StepKind::Skipped => (Verdict::Error, "error"),
            };
            let mut l = line(&step.component, verdict, plan, step.detail.clone());
            l.diffs.clone_from(&step.diffs);
            l
        })
        .collect()
}
