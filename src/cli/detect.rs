//! `chom detect [NAME…]`: detect the hardware of inventory servers in parallel and
//! print the hardware summary table (or JSON/YAML). Exit 1 when any server fails.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{InventoryArgs, SelectorArgs, SshArgs, table};
use crate::detect::{self, Detection, Health};

/// Detect the hardware of servers over SSH and compare it with the inventory.
///
/// Prints one row per server: vCPU, RAM, disk, arch, OS and OK / WARN / FAIL with the
/// reason. WARN: the hardware differs from expectedSpecs or changed since the last
/// status. FAIL: unreachable, or below the role's minimums.
///
/// Examples:
///   chom detect
///   chom detect web-1 web-2 -o json
///   chom detect -l env=prod
///
/// Exit codes: 0 every server OK or WARN, 1 a server FAIL, 2 usage or environment errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DetectArgs {
    /// Where the inventory is.
    #[command(flatten)]
    pub tree: InventoryArgs,
    /// Which servers.
    #[command(flatten)]
    pub select: SelectorArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Servers at most probed at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub concurrency: usize,
    /// Servers to detect (default: all).
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub names: Vec<String>,
}

/// Output formats of `chom detect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The hardware summary table.
    Table,
    /// A JSON array.
    Json,
    /// A YAML list.
    Yaml,
}

/// Runs detection and prints the result.
pub fn run(args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let tree = args.tree.tree();
    let (inventory, names) = super::load_servers(&tree, &args.names, &args.select)?;
    if names.is_empty() {
        super::nothing_selected(&args.select);
    }
    let base = super::tree_base(&tree);
    let transport = Arc::new(args.ssh.transport());
    let runtime = super::runtime()?;
    let board = crate::progress::Board::new("detecting", names.len());
    let detections = runtime.block_on(detect::detect_all(
        transport.clone(),
        Arc::new(inventory),
        names,
        base,
        args.concurrency,
        &board,
    ));
    board.clear();
    runtime.block_on(transport.close_all());
    print!("{}", render(&detections, args.output)?);
    let failed = detections.iter().any(|d| d.status == Health::Fail);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn render(detections: &[Detection], output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(detections)? + "\n",
        Output::Yaml => serde_saphyr::to_string(&detections)?,
        Output::Table => {
            let rows: Vec<Vec<String>> = detections
                .iter()
                .map(|d| {
                    let hw = d.hardware.as_ref();
                    let cell = |f: &dyn Fn(&crate::hardware::Hardware) -> String| hw.map_or("-".to_owned(), f);
                    let status = match d.status {
                        Health::Ok => "OK",
                        Health::Warn => "WARN",
                        Health::Fail => "FAIL",
                    };
                    vec![
                        d.name.clone(),
                        cell(&|h| h.cpu.to_string()),
                        cell(&|h| h.memory_mb.to_string()),
                        cell(&|h| h.disk_gb.to_string()),
                        cell(&|h| h.arch.clone()),
                        cell(&|h| h.os.pretty_name.clone()),
                        status.to_owned(),
                        d.detail(),
                    ]
                })
                .collect();
            let mut text = table::render(
                &[
                    "TARGET",
                    "VCPU",
                    "RAM (MB)",
                    "DISK (GB)",
                    "ARCH",
                    "OS",
                    "STATUS",
                    "REASON",
                ],
                &rows,
            );
            let count = |h: Health| detections.iter().filter(|d| d.status == h).count();
            text.push_str(&format!(
                "{} server(s): {} OK, {} WARN, {} FAIL\n",
                detections.len(),
                count(Health::Ok),
                count(Health::Warn),
                count(Health::Fail)
            ));
            text
        }
    })
}
