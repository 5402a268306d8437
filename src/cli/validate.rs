//! `chom validate`: run the validation road over the tree and print every finding.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::TreeArgs;
use crate::diag::{self, Format};

/// Check resources before they reach the fleet.
///
/// Files given as arguments (as pre-commit passes them) are checked in the context of
/// the whole inventory, and only their findings are printed.
///
/// Examples:
///   chom validate
///   chom validate --format github
///   chom validate inventory.d/web-7.yaml
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ValidateArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Only report findings in these files.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Exit 0 when clean (warnings allowed), 1 on errors; a tree that cannot be read is an
/// `Err` (exit 2).
pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let layout = args.tree.layout();
    let report = crate::validate::load(&layout, &args.files)?;
    let text = diag::render(&report.diagnostics, args.format, &|p| std::fs::read_to_string(p).ok());
    print!("{text}");
    if args.format == Format::Human && !report.has_errors() {
        let inv = &report.inventory;
        println!(
            "ok: {} file(s) checked, {} server(s) and {} role(s) valid",
            report.files,
            inv.servers.len(),
            inv.roles.len()
        );
    }
    Ok(if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
