//! `chom reconcile [NAME…]`: one explicit pass over the chosen servers through the
//! controller, with progress on a terminal, a summary table, and exit code 1 if any
//! failed. Like `flux reconcile`, an explicit pass checks every component now and
//! corrects drift (or reports it under `driftPolicy: report`), so it always agrees with
//! `chom plan`.
//!
//! Ctrl-C: the first stops starting new servers and lets the ones in flight finish
//! (their status and history are written, and the summary printed); a second kills the
//! scripts still running on the servers, which are recorded as interrupted. Exit 130
//! after an interruption.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::plan::{Output, print_document};
use super::{IdentityArgs, SelectorArgs, SshArgs, TreeArgs, table};
use crate::controller::{self, Controller, Owner, OwnerInfo, Server};
use crate::daemon::handoff;
use crate::desired;
use crate::progress;
use crate::reconcile::{self, Outcome, PassMode};
use crate::status::{self, ReconcileResult, reasons, types};

/// Reconcile servers once: detect, judge, check and apply every component, write status.
///
/// Every component's check runs now (whatever its interval), so drift is corrected, or
/// reported under `driftPolicy: report`. While a daemon owns the inventory the request is
/// handed to it (its socket in its state dir, which only its user can use): it runs the
/// same explicit passes on its pooled connections and the results print here; without
/// access to that socket the command is refused, naming the daemon.
///
/// Exit codes: 0 every server reconciled, 1 a server failed, 2 usage or environment
/// errors (a daemon owns the tree), 130 interrupted.
///
/// Examples:
///   chom reconcile
///   chom reconcile web-1 web-2 --workers 20
///   chom reconcile -l env=staging -o json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReconcileArgs {
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
    /// Servers reconciled at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub workers: usize,
    /// Servers to reconcile (default: all).
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub names: Vec<String>,
}

/// `chom reconcile -o json|yaml`: the pass as a document.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryDocument {
    api_version: &'static str,
    kind: &'static str,
    /// The deployment id of a pass run here; absent when handed to a daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_id: Option<String>,
    /// The PIDs of the daemons that ran the pass, when it was handed to them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    handed_to: Vec<u32>,
    servers: Vec<ServerSummary>,
    summary: Totals,
}

/// One server of the summary: the table's row.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerSummary {
    name: String,
    /// `Succeeded`, `Failed`, `Blocked`, `NotStarted` or `NotReconciled`.
    result: String,
    reason: String,
    /// Components changed by the pass.
    changed: usize,
    took_ms: u64,
    message: String,
    /// Counted as ok (succeeded, or left alone on purpose: suspended, pinned).
    ok: bool,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Totals {
    servers: usize,
    ok: usize,
    failed: usize,
    not_started: usize,
    interrupted: bool,
    duration_ms: u64,
    /// The exit code: 0, 1 or 130.
    exit_code: u8,
}

/// The summary table of the servers.
fn render(servers: &[ServerSummary]) -> String {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.result.clone(),
                s.reason.clone(),
                s.changed.to_string(),
                if s.result == "NotStarted" || s.result == "NotReconciled" {
                    "-".to_owned()
                } else {
                    format!("{:.1}s", s.took_ms as f64 / 1000.0)
                },
                s.message.clone(),
            ]
        })
        .collect();
    table::render(&["NAME", "RESULT", "REASON", "CHANGED", "TOOK", "MESSAGE"], &rows)
}

/// One server's line of the summary.
struct Row {
    name: String,
    /// `None`: not started (interrupted before its turn).
    outcome: Option<Outcome>,
    took: Duration,
    write_error: Option<std::io::Error>,
}

/// Listens for Ctrl-C: the first cancels `soft` (no new servers), the second `hard`
/// (kill what runs).
fn on_interrupt(soft: CancellationToken, hard: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        soft.cancel();
        progress::eprintln("interrupted: finishing the servers in flight (Ctrl-C again to kill their scripts)");
        if tokio::signal::ctrl_c().await.is_ok() {
            progress::eprintln("interrupted again: killing the scripts still running");
            hard.cancel();
        }
    });
}

/// Runs the pass, or hands it to the daemon that owns the tree.
pub fn run(args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let daemons: Vec<OwnerInfo> = Owner::daemons(&args.tree.inventory)
        .into_iter()
        .filter(|d| d.socket.is_some())
        .collect();
    // A selector is resolved to names here, so a daemon is handed exactly those.
    let mut names = args.names.clone();
    if args.select.selector.is_some() {
        let (_, chosen) = super::load_servers(&args.tree, &args.names, &args.select)?;
        if chosen.is_empty() {
            super::nothing_selected(&args.select);
            return Ok(ExitCode::SUCCESS);
        }
        names = chosen;
    }
    if !daemons.is_empty()
        && let Some(code) = hand_off(args, &names, &daemons)?
    {
        return Ok(code);
    }
    let state_dir = super::state_dir(&args.tree, None);
    let _owner = super::own_tree(
        &args.tree,
        "reconcile",
        &state_dir,
        "it reconciles these servers itself; `kill -HUP <PID>` makes it check every server now, or stop it to run `chom reconcile`",
    )?;
    let (inventory, names) = super::load_servers(&args.tree, &names, &SelectorArgs::default())?;
    // What a daemon does when a server's file is deleted, done here for the trees no
    // daemon watches: the status files of servers that have no file any more go.
    for path in remove_orphaned_status_files(&args.tree.inventory) {
        eprintln!("removed {}: its server's file is gone", path.display());
    }
    let (soft, hard) = (CancellationToken::new(), CancellationToken::new());
    let ctx = super::reconcile_context(&args.tree, &args.ssh, &args.identity, &inventory, hard.clone());
    let controller = Arc::new(Controller::new(ctx, state_dir, args.tree.inventory.clone()));
    let sources = desired::sources(&inventory, &args.tree.layout());
    let deployment_id = reconcile::new_deployment_id();
    let inventory = Arc::new(inventory);
    let runtime = super::runtime()?;
    let started = Instant::now();
    let started_at = status::Timestamp::now();
    let board = progress::Board::new("reconciling", names.len());

    // Each server announces when its pass ends and whether it is Ready, so servers that
    // depend on it (dependsOn) start after it, within this one pass.
    let mut done_tx = std::collections::BTreeMap::new();
    let mut done_rx = std::collections::BTreeMap::new();
    for name in &names {
        let (tx, rx) = tokio::sync::watch::channel(None::<bool>);
        done_tx.insert(name.clone(), tx);
        done_rx.insert(name.clone(), rx);
    }
    let done_rx = Arc::new(done_rx);
    let sources = Arc::new(sources);
    let (rows, records) = runtime.block_on(async {
        on_interrupt(soft.clone(), hard.clone());
        let limit = Arc::new(tokio::sync::Semaphore::new(args.workers.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (controller, inventory, limit, deployment_id) = (
                controller.clone(),
                inventory.clone(),
                limit.clone(),
                deployment_id.clone(),
            );
            let (sources, done_rx, soft) = (sources.clone(), done_rx.clone(), soft.clone());
            let Some(tx) = done_tx.remove(&name) else { continue };
            let (outer, board) = (board.clone(), board.clone());
            let scoped = name.clone();
            tasks.spawn(outer.scope(&scoped, async move {
                let entry = inventory.servers.get(&name)?;
                // Reads the status file and writes nothing: a blocking read is fine here.
                let server = Server::from_files(&inventory, entry, &sources);
                // Wait for dependencies before taking a worker slot, so waiting never
                // starves the servers being waited for.
                let mut unready = None;
                for dep in &server.desired.depends_on {
                    progress::emit(progress::Event::Waiting(dep.clone()));
                    let ready = match done_rx.get(dep) {
                        Some(rx) => {
                            let mut rx = rx.clone();
                            let value = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
                            value.unwrap_or(false)
                        }
                        None => controller::dependency_ready_on_disk(&inventory, &sources, dep),
                    };
                    if !ready && unready.is_none() {
                        unready = Some(dep.clone());
                    }
                }
                let _permit = limit.acquire_owned().await.ok()?;
                if soft.is_cancelled() {
                    let _ = tx.send(Some(false));
                    board.finish(&name, false, "not started (interrupted)");
                    return Some((
                        Row {
                            name,
                            outcome: None,
                            took: Duration::ZERO,
                            write_error: None,
                        },
                        None,
                    ));
                }
                let done = controller
                    .run_one(&server, &deployment_id, PassMode::CheckNow, unready)
                    .await;
                let _ = tx.send(Some(done.outcome.status.is_ready_at(server.generation)));
                let row = Row {
                    name,
                    outcome: Some(done.outcome),
                    took: done.took,
                    write_error: done.write_error,
                };
                let summary = self::row(&row);
                board.finish(
                    &row.name,
                    summary.ok,
                    &format!(
                        "{} {} in {:.1}s",
                        summary.result,
                        summary.reason,
                        summary.took_ms as f64 / 1000.0
                    ),
                );
                Some((row, done.record))
            }));
        }
        let mut rows = Vec::new();
        let mut records = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Some((row, record))) = joined {
                rows.push(row);
                records.extend(record);
            }
        }
        controller.ctx.transport.close_all().await;
        (rows, records)
    });
    board.clear();
    let mut rows = rows;
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    controller.store_deployment(&deployment_id, started_at, records);
    let failures = rows.iter().filter(|r| !succeeded(r) || r.write_error.is_some()).count();
    let not_started = rows.iter().filter(|r| r.outcome.is_none()).count();
    let servers: Vec<ServerSummary> = rows.iter().map(row).collect();
    let interrupted = soft.is_cancelled();
    let code: u8 = if interrupted {
        130
    } else if failures > 0 {
        1
    } else {
        0
    };
    if args.output != Output::Table {
        let doc = SummaryDocument {
            api_version: crate::resource::API_VERSION,
            kind: "ReconcileSummary",
            deployment_id: Some(deployment_id),
            handed_to: Vec::new(),
            summary: Totals {
                servers: servers.len(),
                ok: servers.len() - failures,
                failed: failures,
                not_started,
                interrupted,
                duration_ms: started.elapsed().as_millis() as u64,
                exit_code: code,
            },
            servers,
        };
        print_document(args.output, &doc)?;
        return Ok(ExitCode::from(code));
    }
    print!("{}", render(&servers));
    println!(
        "deployment {deployment_id}: {} server(s) in {:.1}s, {} ok, {failures} failed{}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        rows.len() - failures,
        if interrupted {
            format!("; interrupted, {not_started} not started")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::from(code))
}

/// Hands the pass to the daemon(s) owning the tree and prints their answers like a pass
/// of its own. `None` when no daemon could be reached (then the caller's ownership check
/// refuses, naming the daemon).
fn hand_off(args: &ReconcileArgs, names: &[String], daemons: &[OwnerInfo]) -> anyhow::Result<Option<ExitCode>> {
    let runtime = super::runtime()?;
    let started = Instant::now();
    let board = progress::Board::new("reconciling (daemon)", args.names.len());
    let (results, accepted, reached) = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut requests = tokio::task::JoinSet::new();
        for daemon in daemons {
            let (socket, names, tx) = (daemon.socket.clone(), names.to_vec(), tx.clone());
            requests.spawn(async move {
                let socket = socket?;
                handoff::request(&socket, &names, |r| {
                    let _ = tx.send(r);
                })
                .await
                .ok()
            });
        }
        drop(tx);
        let mut results = Vec::new();
        while let Some(result) = rx.recv().await {
            let line = format!(
                "{} {} in {:.1}s",
                result.result,
                result.reason,
                result.took_ms as f64 / 1000.0
            );
            board.finish(&result.name, result.ok, &line);
            results.push(result);
        }
        let mut accepted = std::collections::BTreeSet::new();
        let mut reached = 0;
        while let Some(joined) = requests.join_next().await {
            if let Ok(Some(names)) = joined {
                reached += 1;
                accepted.extend(names);
            }
        }
        (results, accepted, reached)
    });
    board.clear();
    if reached == 0 {
        return Ok(None);
    }
    let mut servers: Vec<ServerSummary> = results
        .iter()
        .map(|r| ServerSummary {
            name: r.name.clone(),
            result: r.result.clone(),
            reason: r.reason.clone(),
            changed: r.changed,
            took_ms: r.took_ms,
            message: r.message.clone(),
            ok: r.ok,
        })
        .collect();
    let answered: std::collections::BTreeSet<&str> = results.iter().map(|r| r.name.as_str()).collect();
    for name in names.iter().chain(accepted.iter()) {
        if answered.contains(name.as_str()) || servers.iter().any(|s| &s.name == name) {
            continue;
        }
        let why = if accepted.contains(name) {
            "the daemon stopped or dropped the server before its pass"
        } else {
            "no daemon owns it: not in the inventory, or its file has errors (run `chom validate`)"
        };
        servers.push(ServerSummary {
            name: name.clone(),
            result: "NotReconciled".into(),
            reason: "-".into(),
            changed: 0,
            took_ms: 0,
            message: why.into(),
            ok: false,
        });
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    let failures = servers.iter().filter(|s| !s.ok).count();
    let code: u8 = if failures > 0 { 1 } else { 0 };
    if args.output != Output::Table {
        let doc = SummaryDocument {
            api_version: crate::resource::API_VERSION,
            kind: "ReconcileSummary",
            deployment_id: None,
            handed_to: daemons.iter().map(|d| d.pid).collect(),
            summary: Totals {
                servers: servers.len(),
                ok: servers.len() - failures,
                failed: failures,
                not_started: 0,
                interrupted: false,
                duration_ms: started.elapsed().as_millis() as u64,
                exit_code: code,
            },
            servers,
        };
        print_document(args.output, &doc)?;
        return Ok(Some(ExitCode::from(code)));
    }
    print!("{}", render(&servers));
    let pids: Vec<String> = daemons.iter().map(|d| d.pid.to_string()).collect();
    println!(
        "handed to the daemon (PID {}): {} server(s) in {:.1}s, {} ok, {failures} failed",
        pids.join(", "),
        servers.len(),
        started.elapsed().as_secs_f64(),
        servers.len() - failures
    );
    Ok(Some(ExitCode::from(code)))
}

/// Removes every `NAME.status.yaml` below the inventory without a `NAME.yaml` or
/// `NAME.yml` beside it (valid or not: a broken file keeps its status). Returns the
/// files removed.
fn remove_orphaned_status_files(inventory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    for path in super::get::status_files(inventory) {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".status.yaml"))
        else {
            continue;
        };
        let has_file = ["yaml", "yml"]
            .iter()
            .any(|ext| path.with_file_name(format!("{name}.{ext}")).exists());
        if !has_file && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Succeeded, or held back on purpose (suspended, pinned by a rollback).
fn succeeded(row: &Row) -> bool {
    let Some(outcome) = &row.outcome else { return false };
    let ready = outcome.status.condition(types::READY);
    let on_purpose = ready.is_some_and(|c| c.reason == reasons::SUSPENDED || c.reason == reasons::PINNED);
    outcome.result == ReconcileResult::Succeeded || on_purpose
}

fn row(r: &Row) -> ServerSummary {
    let Some(outcome) = &r.outcome else {
        return ServerSummary {
            name: r.name.clone(),
            result: "NotStarted".to_owned(),
            reason: reasons::INTERRUPTED.to_owned(),
            changed: 0,
            took_ms: 0,
            message: "interrupted before its turn; nothing was run".to_owned(),
            ok: false,
        };
    };
    let ready = outcome.status.condition(types::READY);
    let changed = outcome.status.components.iter().filter(|c| c.changed).count();
    let mut message = ready
        .map(|c| c.message.lines().next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    if let Some(e) = &r.write_error {
        message = format!("status not written: {e}");
    }
    ServerSummary {
        name: r.name.clone(),
        result: format!("{:?}", outcome.result),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        changed,
        took_ms: r.took.as_millis() as u64,
        message,
        ok: succeeded(r) && r.write_error.is_none(),
    }
}
