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
///
/// Exit codes: 0 no errors (warnings allowed), 1 errors found, 2 validation could not
/// run (no inventory folder, usage errors).
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
    // A chom.yaml passed as a file (pre-commit passes every changed YAML file) is the
    // tree config, never a resource.
    let is_config = |f: &PathBuf| f.file_name().is_some_and(|n| n == crate::treeconfig::FILE_NAME);
    let (configs, files): (Vec<PathBuf>, Vec<PathBuf>) = args.files.iter().cloned().partition(is_config);
    let mut report = crate::validate::load(&layout, &files)?;
    if files.is_empty() && !args.files.is_empty() {
        // Only chom.yaml was named: no resource finding is wanted.
        report.diagnostics.clear();
        report.files = 0;
    }
    let configs = if args.files.is_empty() {
        tree_config(&args.tree).into_iter().collect()
    } else {
        configs
    };
    for file in configs {
        report.diagnostics.extend(crate::validate::load_config(&file).1);
        report.files += 1;
    }
    diag::sort(&mut report.diagnostics);
    let text = diag::render(&report.diagnostics, args.format, &diag::source);
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

/// The chom.yaml of this tree: the one the command runs under, else one at the tree root
/// (beside `inventory.d/`) when `--inventory` points into another tree.
fn tree_config(tree: &TreeArgs) -> Option<PathBuf> {
    if let Some(located) = &tree.config {
        return Some(located.file.clone());
    }
    let at_root = super::tree_base(tree).join(crate::treeconfig::FILE_NAME);
    at_root.is_file().then_some(at_root)
}
