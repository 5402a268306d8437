//! `chom get [NAME…]`: a kubectl-style view of the servers' status files.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use super::{TreeArgs, table};
use crate::status::{self, ServerStatus, types};

/// Show servers and their status, read from the status files beside the inventory.
///
/// Examples:
///   chom get
///   chom get web-1 -o yaml
///   chom get -o wide
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct GetArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Servers to show (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// Output formats of `chom get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// NAME, READY, REASON, CPU, MEM, DISK, LAST RECONCILE, MESSAGE.
    Table,
    /// The table plus address, OS, generation and components.
    Wide,
    /// The status documents as YAML.
    Yaml,
    /// The status documents as a JSON array.
    Json,
}

/// The plain table of every valid server, for `chom demo`.
pub fn table(tree: &TreeArgs) -> anyhow::Result<String> {
    let report = crate::validate::load(&tree.layout(), &[])?;
    let rows: Vec<Vec<String>> = report
        .inventory
        .servers
        .values()
        .map(|e| row(e, status::read(&e.status_path()).as_ref(), false))
        .collect();
    Ok(table::render(
        &[
            "NAME",
            "READY",
            "REASON",
            "CPU",
            "MEM",
            "DISK",
            "LAST RECONCILE",
            "MESSAGE",
        ],
        &rows,
    ))
}

/// Prints the view.
pub fn run(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let (inventory, names) = super::load_servers(&args.tree, &args.names)?;
    let entries: Vec<(&crate::inventory::ServerEntry, Option<ServerStatus>)> = names
        .iter()
        .filter_map(|n| inventory.servers.get(n))
        .map(|e| (e, status::read(&e.status_path())))
        .collect();
    match args.output {
        Output::Json => {
            let docs: Vec<&ServerStatus> = entries.iter().filter_map(|(_, s)| s.as_ref()).collect();
            println!("{}", serde_json::to_string_pretty(&docs)?);
        }
        Output::Yaml => {
            for (_, s) in &entries {
                if let Some(s) = s {
                    println!("---\n{}", serde_saphyr::to_string(s)?);
                }
            }
        }
        Output::Table | Output::Wide => {
            let wide = args.output == Output::Wide;
            let rows: Vec<Vec<String>> = entries.iter().map(|(e, s)| row(e, s.as_ref(), wide)).collect();
            let mut header = vec!["NAME", "READY", "REASON", "CPU", "MEM", "DISK", "LAST RECONCILE"];
            if wide {
                header.extend(["ADDRESS", "OS", "GEN", "COMPONENTS"]);
            }
            header.push("MESSAGE");
            print!("{}", table::render(&header, &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(entry: &crate::inventory::ServerEntry, s: Option<&ServerStatus>, wide: bool) -> Vec<String> {
    let name = entry.server.metadata.name.clone();
    let ready = s.and_then(|s| s.status.condition(types::READY));
    let hw = s.and_then(|s| s.status.hardware.as_ref());
    let mut cells = vec![
        name,
        ready.map_or("Unknown".to_owned(), |c| format!("{:?}", c.status)),
        ready.map_or("NotReconciled".to_owned(), |c| c.reason.clone()),
        hw.map_or("-".to_owned(), |h| h.cpu.to_string()),
        hw.map_or("-".to_owned(), |h| format!("{}Mi", h.memory_mb)),
        hw.map_or("-".to_owned(), |h| format!("{}G", h.disk_gb)),
        s.and_then(|s| s.status.last_reconcile.as_ref())
            .map_or("-".to_owned(), |r| age(r.finished_at.0)),
    ];
    if wide {
        let spec = &entry.server.spec;
        cells.push(format!("{}:{}", spec.address, spec.ssh.port));
        cells.push(hw.map_or("-".to_owned(), |h| h.os.pretty_name.clone()));
        cells.push(s.map_or("-".to_owned(), |s| {
            format!("{}/{}", s.status.observed_generation, s.metadata.generation)
        }));
        cells.push(s.map_or("-".to_owned(), |s| {
            let applied = s
                .status
                .components
                .iter()
                .filter(|c| c.state == status::ComponentState::Applied)
                .count();
            format!("{applied}/{}", s.status.components.len())
        }));
    }
    cells.push(ready.map_or(String::new(), |c| {
        c.message.lines().next().unwrap_or_default().to_owned()
    }));
    cells
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
fn age(then: SystemTime) -> String {
    let secs = SystemTime::now().duration_since(then).map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}
