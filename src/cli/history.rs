//! `chom history [NAME]`: the deployment records and hardware snapshots kept in the
//! state directory.

use std::process::ExitCode;

use clap::Args;

use super::{InventoryArgs, SelectorArgs, table};
use crate::history::History;

/// Show past deployments, or one server's results and hardware over time.
///
/// Examples:
///   chom history
///   chom history web-1
///   chom history web-1 --hardware
///   chom history -o json
///   chom history -l env=prod
///
/// Exit codes: 0 shown, 2 usage or environment errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct HistoryArgs {
    /// Where the inventory is.
    #[command(flatten)]
    pub tree: InventoryArgs,
    /// Only the servers whose labels match (their current files').
    #[command(flatten)]
    pub select: SelectorArgs,
    /// The state directory [default: $CHOM_STATE_DIR, chom.yaml's stateDir,
    /// $STATE_DIRECTORY, else .chom/ beside the inventory].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Show the dated hardware snapshots of NAME instead.
    #[arg(long, requires = "name")]
    pub hardware: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// One server.
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub name: Option<String>,
}

/// Output formats of `chom history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// The records as JSON.
    Json,
}

/// A commit as the table shows it: 8 hex digits, and `+dirty` when the tree had
/// changes not committed (`abc12345+dirty`).
fn short_commit(commit: &str) -> String {
    let (sha, dirty) = match commit.strip_suffix("+dirty") {
        Some(sha) => (sha, "+dirty"),
        None => (commit, ""),
    };
    format!("{}{dirty}", sha.chars().take(8).collect::<String>())
}

/// Prints the history.
pub fn run(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let history = History::open(&super::state_dir(&args.tree.tree(), args.state_dir.as_deref()))?;
    if args.hardware {
        let name = args.name.as_deref().unwrap_or_default();
        let snapshots = history.hardware(name);
        if args.output == Output::Json {
            let list: Vec<serde_json::Value> = snapshots
                .iter()
                .map(|(t, h)| serde_json::json!({"time": t, "hardware": h}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            let rows: Vec<Vec<String>> = snapshots
                .iter()
                .map(|(t, h)| {
                    vec![
                        t.clone(),
                        h.cpu.to_string(),
                        h.memory_mb.to_string(),
                        h.disk_gb.to_string(),
                        h.os.pretty_name.clone(),
                        h.kernel.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["SINCE", "VCPU", "RAM (MB)", "DISK (GB)", "OS", "KERNEL"], &rows)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut records = history.records();
    if let Some(name) = &args.name {
        for r in &mut records {
            r.servers.retain(|s| &s.name == name);
        }
        records.retain(|r| !r.servers.is_empty());
    }
    if args.select.selector.is_some() {
        // Labels are the servers' files' now: a server removed since has none.
        let (_, chosen) = super::load_servers(&args.tree.tree(), &[], &args.select)?;
        let chosen: std::collections::BTreeSet<String> = chosen.into_iter().collect();
        for r in &mut records {
            r.servers.retain(|s| chosen.contains(&s.name));
        }
        records.retain(|r| !r.servers.is_empty());
    }
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for r in records.iter().rev() {
        for s in &r.servers {
            let changed: Vec<&str> = s
                .components
                .iter()
                .filter(|c| c.changed)
                .map(|c| c.name.as_str())
                .collect();
            rows.push(vec![
                r.id.clone(),
                r.finished_at.to_string(),
                r.deployer.clone(),
                r.commit.as_deref().map_or_else(|| "-".to_owned(), short_commit),
                s.name.clone(),
                format!("{:?}", s.result),
                if changed.is_empty() {
                    "-".to_owned()
                } else {
                    changed.join(",")
                },
                match &r.rollback_of {
                    Some(to) => [format!("rollback to {to}")]
                        .into_iter()
                        .chain(s.changes.iter().cloned())
                        .collect::<Vec<_>>()
                        .join("; "),
                    None => s.changes.join("; "),
                },
            ]);
        }
    }
    print!(
        "{}",
        table::render(
            &[
                "DEPLOYMENT",
                "FINISHED",
                "BY",
                "COMMIT",
                "SERVER",
                "RESULT",
                "APPLIED",
                "CHANGES"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}
