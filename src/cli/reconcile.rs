//! `chom reconcile [NAME…]`: one reconcile pass over the chosen servers, with progress
//! on a terminal, a summary table, status files written, and exit code 1 if any failed.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::{SshArgs, TreeArgs, table};
use crate::desired;
use crate::reconcile::{self, Outcome};
use crate::status::{self, ReconcileResult, types};

/// Reconcile servers once: detect, judge, apply components, write status.
///
/// Examples:
///   chom reconcile
///   chom reconcile web-1 web-2 --workers 20
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReconcileArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Servers reconciled at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub workers: usize,
    /// Servers to reconcile (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// True when a dependency outside this pass is Ready, per its status file, at the
/// generation of its current desired state.
fn dependency_ready_on_disk(inventory: &crate::inventory::Inventory, digests: &desired::Sources, dep: &str) -> bool {
    let Some(entry) = inventory.servers.get(dep) else {
        return false;
    };
    let hash = desired::desired_state(inventory, entry, digests).hash();
    status::read(&entry.status_path()).is_some_and(|s| {
        s.metadata.desired_hash.as_deref() == Some(hash.as_str()) && s.status.is_ready_at(s.metadata.generation)
    })
}

/// The outcome of a server held back by a dependency that is not Ready.
fn waiting_for(dep: String, previous: Option<&status::ObservedStatus>, generation: u64) -> Outcome {
    let mut observed = previous.cloned().unwrap_or_default();
    observed.observed_generation = generation;
    observed.set_condition(
        types::READY,
        status::ConditionStatus::False,
        "DependencyNotReady",
        format!("waiting for {dep} to be Ready at its current generation"),
        generation,
        status::Timestamp::now(),
    );
    Outcome {
        status: observed,
        result: ReconcileResult::Blocked,
        hardware_changes: Vec::new(),
    }
}

type Row = (
    String,
    Outcome,
    std::time::Duration,
    Option<std::io::Error>,
    crate::history::ServerRecord,
);

/// Stores the pass as one deployment record and the hardware seen as snapshots. A
/// state directory that cannot be written is reported, not fatal: the servers were
/// reconciled and their status files say so.
fn record_history(tree: &super::TreeArgs, deployment_id: &str, rows: &[Row], started_at: status::Timestamp) {
    let state_dir = super::state_dir(tree, None);
    let history = match crate::history::History::open(&state_dir) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("warning: cannot record the deployment in {}: {e}", state_dir.display());
            return;
        }
    };
    for (name, outcome, ..) in rows {
        if let Some(hw) = &outcome.status.hardware {
            let _ = history.snapshot_hardware(name, hw);
        }
    }
    let servers: Vec<crate::history::ServerRecord> = rows.iter().map(|r| r.4.clone()).collect();
    let record = crate::history::Record {
        id: deployment_id.to_owned(),
        deployer: crate::audit::who(),
        commit: crate::audit::git_commit(&tree.inventory),
        desired_hash: crate::history::combined_hash(servers.iter().map(|s| s.desired_hash.as_str())),
        started_at,
        finished_at: status::Timestamp::now(),
        servers,
    };
    if let Err(e) = history.store(record) {
        eprintln!("warning: cannot record the deployment in {}: {e}", state_dir.display());
    }
}

/// Runs the pass.
pub fn run(args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (inventory, names) = super::load_servers(&args.tree, &args.names)?;
    let layout = args.tree.layout();
    let ctx = super::reconcile_context(&args.tree, &args.ssh, &inventory);
    let digests = desired::sources(&inventory, &layout);
    let deployment_id = reconcile::new_deployment_id();
    let inventory = Arc::new(inventory);
    let runtime = super::runtime()?;
    let started = Instant::now();
    let started_at = status::Timestamp::now();
    let state_dir = super::state_dir(&args.tree, None);
    let total = names.len();
    let progress = std::io::stderr().is_terminal();

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
    let rows = runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(args.workers.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (ctx, inventory, limit, deployment_id) =
                (ctx.clone(), inventory.clone(), limit.clone(), deployment_id.clone());
            let (digests, done_rx) = (digests.clone(), done_rx.clone());
            let (state_dir, layout) = (state_dir.clone(), layout.clone());
            let Some(tx) = done_tx.remove(&name) else { continue };
            tasks.spawn(async move {
                let entry = inventory.servers.get(&name)?;
                let desired = desired::desired_state(&inventory, entry, &digests);
                let hash = desired.hash();
                let path = entry.status_path();
                let previous = status::read(&path);
                let generation = status::generation_for(previous.as_ref(), &hash);
                // Wait for dependencies before taking a worker slot, so waiting never
                // starves the servers being waited for.
                let mut unready = None;
                for dep in &desired.depends_on {
                    let ready = match done_rx.get(dep) {
                        Some(rx) => {
                            let mut rx = rx.clone();
                            let value = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
                            value.unwrap_or(false)
                        }
                        None => dependency_ready_on_disk(&inventory, &digests, dep),
                    };
                    if !ready && unready.is_none() {
                        unready = Some(dep.clone());
                    }
                }
                let _permit = limit.acquire_owned().await.ok()?;
                let started = Instant::now();
                if let crate::pin::PinState::Pinned(pin) = crate::pin::check(&state_dir, &name, &hash) {
                    let mut observed = previous.as_ref().map(|p| p.status.clone()).unwrap_or_default();
                    crate::pin::mark(&mut observed, &pin, generation);
                    let outcome = Outcome {
                        status: observed,
                        result: ReconcileResult::Blocked,
                        hardware_changes: Vec::new(),
                    };
                    let _ = tx.send(Some(false));
                    let doc = status::document(&name, generation, &hash, outcome.status.clone());
                    let write_error = status::write_if_changed(&path, &doc).err();
                    let record = crate::history::server_record(
                        &desired,
                        generation,
                        &outcome.status,
                        outcome.result,
                        0,
                        Vec::new(),
                    );
                    return Some((name, outcome, started.elapsed(), write_error, record));
                }
                let outcome = match unready {
                    Some(dep) => waiting_for(dep, previous.as_ref().map(|p| &p.status), generation),
                    None => {
                        reconcile::reconcile(
                            &ctx,
                            entry,
                            &desired,
                            generation,
                            previous.as_ref().map(|p| &p.status),
                            &deployment_id,
                        )
                        .await
                    }
                };
                let _ = tx.send(Some(outcome.status.is_ready_at(generation)));
                let took = started.elapsed();
                let changes = outcome
                    .hardware_changes
                    .iter()
                    .map(|c| format!("hardware changed: {c}"))
                    .collect();
                // The status file and the history objects are written with fsync: off the
                // runtime's thread, so other servers' SSH traffic goes on meanwhile.
                let (observed, result) = (outcome.status.clone(), outcome.result);
                let doc_name = name.clone();
                let (write_error, record) = tokio::task::spawn_blocking(move || {
                    let doc = status::document(&doc_name, generation, &hash, observed);
                    let write_error = status::write_if_changed(&path, &doc).err();
                    let mut record = crate::history::server_record(
                        &desired,
                        generation,
                        &doc.status,
                        result,
                        took.as_millis() as u64,
                        changes,
                    );
                    if let Ok(history) = crate::history::History::open(&state_dir) {
                        history.keep_objects(&mut record, &desired, &layout);
                    }
                    (write_error, record)
                })
                .await
                .ok()?;
                Some((name, outcome, took, write_error, record))
            });
        }
        let mut rows = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Some(row)) = joined {
                rows.push(row);
                if progress {
                    let failed = rows.iter().filter(|r| r.1.result != ReconcileResult::Succeeded).count();
                    eprint!("\rreconciling: {}/{total} done, {failed} not ready", rows.len());
                }
            }
        }
        ctx.transport.close_all().await;
        rows
    });
    if progress {
        eprintln!();
    }
    let mut rows = rows;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    record_history(&args.tree, &deployment_id, &rows, started_at);
    let mut failures = 0;
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, outcome, took, write_error, _): &Row| {
            let ready = outcome.status.condition(types::READY);
            let suspended = ready.is_some_and(|c| c.reason == "Suspended" || c.reason == "Pinned");
            if (outcome.result != ReconcileResult::Succeeded && !suspended) || write_error.is_some() {
                failures += 1;
            }
            let changed = outcome.status.components.iter().filter(|c| c.changed).count();
            let mut message = ready
                .map(|c| c.message.lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            if let Some(e) = write_error {
                message = format!("status not written: {e}");
            }
            vec![
                name.clone(),
                format!("{:?}", outcome.result),
                ready.map(|c| c.reason.clone()).unwrap_or_default(),
                changed.to_string(),
                format!("{:.1}s", took.as_secs_f64()),
                message,
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["NAME", "RESULT", "REASON", "CHANGED", "TOOK", "MESSAGE"], &table_rows)
    );
    println!(
        "deployment {deployment_id}: {} server(s) in {:.1}s, {} ok, {failures} failed",
        rows.len(),
        started.elapsed().as_secs_f64(),
        rows.len() - failures
    );
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
