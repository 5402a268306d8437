//! `chom rollback NAME [--to DEPLOYMENT]` and `chom resume NAME`: re-apply the scripts
//! and configs recorded in an earlier deployment (kept content-addressed in the state
//! directory), pin the server there, and release the pin.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{IdentityArgs, InventoryArgs, SelectorArgs, SshArgs, TreeArgs};
use crate::controller::{Controller, Server};
use crate::desired;
use crate::reconcile::StepKind;

/// Re-apply an earlier deployment's component versions and pin the server there.
///
/// Without --to, the last successful deployment before the current one is used; any
/// deployment in `chom history NAME` can be named, whoever made it (the daemon or
/// `chom reconcile`), or a git commit (7 hex digits or more): the newest successful
/// deployment of that commit. The rollback is itself a deployment in the history. The server
/// stays pinned (the daemon and `chom reconcile` leave it alone) until `chom resume NAME`
/// or until its desired state changes. Refused while a daemon owns the inventory.
///
/// Examples:
///   chom rollback web-1
///   chom rollback web-1 --to d-20261126T120000123Z-1a2b3c4d
///   chom rollback web-1 --to 1a2b3c4
///
/// Exit codes: 0 rolled back and pinned (each component's result is printed), 2 usage or
/// environment errors (a daemon owns the tree, no such deployment).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RollbackArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// The secrets identity.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The state directory (history, pins) [default: $CHOM_STATE_DIR, $STATE_DIRECTORY,
    /// else .chom/ beside the inventory].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// The deployment to return to (see `chom history NAME`), or a git commit.
    #[arg(long = "to", value_name = "DEPLOYMENT")]
    pub to: Option<String>,
    /// The server.
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub name: String,
}

/// Release a server pinned by `chom rollback`.
///
/// While a daemon owns the tree, the pin is removed and the daemon is sent SIGHUP, so it
/// applies the current desired state now.
///
/// Examples:
///   chom resume web-1
///
/// Exit codes: 0 released (or not pinned), 2 usage or environment errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ResumeArgs {
    /// Where the inventory is.
    #[command(flatten)]
    pub tree: InventoryArgs,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// The server.
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub name: String,
}

/// Rolls back and pins.
pub fn run(args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let state_dir = super::state_dir(&args.tree, args.state_dir.as_deref());
    let _owner = super::own_tree(
        &args.tree,
        "rollback",
        &state_dir,
        "stop it (e.g. `systemctl stop chom`), run `chom rollback`, then start it again: it keeps the pin",
    )?;
    let (inventory, _) = super::load_servers(&args.tree, std::slice::from_ref(&args.name), &SelectorArgs::default())?;
    let Some(entry) = inventory.servers.get(&args.name) else {
        bail!("server {} is not in the inventory", args.name)
    };
    let ctx = super::reconcile_context(
        &args.tree,
        &args.ssh,
        &args.identity,
        &inventory,
        CancellationToken::new(),
    );
    let sources = desired::sources(&inventory, &args.tree.layout());
    let server = Server::from_files(&inventory, entry, &sources);
    let controller = Controller::new(ctx, state_dir, args.tree.inventory.clone());
    let runtime = super::runtime()?;
    let board = crate::progress::Board::new("rolling back", 1);
    let rolled = runtime.block_on(board.scope(&args.name, async {
        let rolled = controller.rollback(&server, args.to.as_deref()).await;
        controller.ctx.transport.close_all().await;
        rolled
    }));
    let how = match &rolled {
        Ok(r) => format!("rolled back to {}", r.to),
        Err(_) => "not rolled back".to_owned(),
    };
    board.finish(&args.name, rolled.is_ok(), &how);
    board.clear();
    let rolled = rolled?;
    for step in &rolled.done.outcome.steps {
        println!(
            "{}: {} {} ({})",
            args.name,
            step.component,
            step_word(step.kind),
            step.detail
        );
    }
    if let Some(e) = &rolled.done.write_error {
        eprintln!("warning: the status file of {} was not written: {e}", args.name);
    }
    println!(
        "{} rolled back to {} (deployment {}); it is pinned there: `chom resume {}` releases it",
        args.name, rolled.to, rolled.deployment_id, args.name
    );
    Ok(ExitCode::SUCCESS)
}

fn step_word(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Applied | StepKind::DriftCorrected => "re-applied",
        StepKind::InSync | StepKind::Unchanged => "unchanged",
        StepKind::Orphaned => "left in place",
        _ => "not re-applied",
    }
}

/// Releases a pin. While a daemon owns the tree, the pin is removed and the daemon is
/// sent SIGHUP, so it applies the current desired state now.
pub fn resume(args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let tree = args.tree.tree();
    let state_dir = super::state_dir(&tree, args.state_dir.as_deref());
    let daemon = crate::controller::Owner::daemon(&args.tree.inventory);
    // Only a rollback writes pins, and it is refused while a daemon runs: removing one
    // beside the daemon cannot race it.
    let _owner = match &daemon {
        Some(_) => None,
        None => Some(super::own_tree(&tree, "resume", &state_dir, "wait for it to finish")?),
    };
    let state_dir = daemon.as_ref().map_or(state_dir, |d| d.state_dir.clone());
    if !crate::controller::resume(&state_dir, &args.tree.inventory, &args.name)? {
        println!("{} is not pinned", args.name);
        return Ok(ExitCode::SUCCESS);
    }
    match daemon {
        Some(d) => {
            let told = std::process::Command::new("kill")
                .args(["-HUP", &d.pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if told {
                println!(
                    "{} released; the daemon (PID {}) was told to reconcile it now",
                    args.name, d.pid
                );
            } else {
                println!(
                    "{} released; the daemon (PID {}) applies its current desired state at its next pass (`kill -HUP {}` does it now)",
                    args.name, d.pid, d.pid
                );
            }
        }
        None => println!(
            "{} released; the next reconcile applies its current desired state",
            args.name
        ),
    }
    Ok(ExitCode::SUCCESS)
}
