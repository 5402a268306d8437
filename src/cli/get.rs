//! `chom get [NAME…]`: a kubectl-style view of the servers' status files. Every server
//! with a file or a status is listed: one whose file does not validate (the daemon keeps
//! its last valid spec in force, `SpecValid=False`), one never reconciled, and a status
//! left behind by a file removed while no daemon ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{TreeArgs, table};
use crate::status::{self, ConditionStatus, ObservedStatus, ServerStatus, reasons, types};

/// Show servers and their status, read from the status files beside the inventory.
///
/// Lists every server with a file or a status file, including servers whose file does
/// not validate (VALID False) and servers never reconciled.
///
/// Exit codes: 0 shown, 2 a named server has neither a file nor a status, or usage errors.
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
    #[arg(value_name = "NAME", value_parser = super::parse_server_name)]
    pub names: Vec<String>,
}

/// Output formats of `chom get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// NAME, READY, REASON, VALID, SPECS, DRIFTED, CPU, MEM, DISK, LAST RECONCILE, MESSAGE.
    Table,
    /// The table plus address, OS, generation, components and the git revision applied.
    Wide,
    /// The status documents as YAML.
    Yaml,
    /// The status documents as a JSON array.
    Json,
}

/// One listed server.
struct Listed {
    name: String,
    /// `address:port`, when the file validates.
    address: Option<String>,
    /// The status document: the status file's, or one made up for a server never
    /// reconciled (generation 0, Ready Unknown), so every output lists the same servers.
    status: ServerStatus,
}

/// Every server with a file or a status, by name.
fn list(tree: &TreeArgs) -> anyhow::Result<BTreeMap<String, Listed>> {
    let layout = tree.layout();
    let report = crate::validate::load(&layout, &[])?;
    let mut out = BTreeMap::new();
    for (name, entry) in &report.inventory.servers {
        let spec = &entry.server.spec;
        let address = Some(format!("{}:{}", spec.address, spec.ssh.port));
        out.insert(name.clone(), listed(name, address, &entry.status_path(), None));
    }
    let mut errors: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for d in report.diagnostics.iter().filter(|d| d.is_error()) {
        errors.entry(d.file.clone()).or_default().push(format!(
            "{}:{}:{}: {}",
            d.file.display(),
            d.line,
            d.column,
            d.message
        ));
    }
    for (file, findings) in &errors {
        if !file.starts_with(&layout.inventory) {
            continue;
        }
        if let Some(name) = crate::validate::invalid_server_name(file)
            && !out.contains_key(&name)
        {
            let status_path = layout.status_path(file, &name);
            out.insert(name.clone(), listed(&name, None, &status_path, Some(findings)));
        }
    }
    for path in status_files(layout.status.as_deref().unwrap_or(&layout.inventory)) {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".status.yaml"))
            .map(str::to_owned)
        else {
            continue;
        };
        if !out.contains_key(&name) {
            out.insert(name.clone(), listed(&name, None, &path, None));
        }
    }
    Ok(out)
}

/// A server's entry: its status file, or a made-up status when it has none. `findings`
/// are its file's errors when it does not validate.
fn listed(name: &str, address: Option<String>, status_path: &Path, findings: Option<&Vec<String>>) -> Listed {
    let now = status::Timestamp::now();
    let mut status = status::read(status_path).unwrap_or_else(|| {
        let mut observed = ObservedStatus::default();
        observed.set_condition(
            types::READY,
            ConditionStatus::Unknown,
            "NotReconciled",
            "never reconciled",
            0,
            now,
        );
        status::document(name, 0, "", observed)
    });
    // The file's validity now, whoever wrote the status (a one-shot pass does not know
    // of a later edit that broke the file).
    if let Some(findings) = findings {
        let s = &mut status.status;
        if s.condition(types::SPEC_VALID)
            .is_none_or(|c| c.status != ConditionStatus::False)
        {
            s.spec_errors.clone_from(findings);
            let generation = s.observed_generation;
            s.set_condition(
                types::SPEC_VALID,
                ConditionStatus::False,
                reasons::INVALID,
                "the server's file does not validate; its last valid desired state stays in force",
                generation,
                now,
            );
        }
    }
    Listed {
        name: name.to_owned(),
        address,
        status,
    }
}

/// `*.status.yaml` anywhere below the inventory folder (bounded depth).
fn status_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && depth < 8 {
                walk(&e.path(), depth + 1, out);
            } else if kind.is_file() && name.ends_with(".status.yaml") {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out);
    out
}

const HEADER: [&str; 10] = [
    "NAME",
    "READY",
    "REASON",
    "VALID",
    "SPECS",
    "DRIFTED",
    "CPU",
    "MEM",
    "DISK",
    "LAST RECONCILE",
];

/// The plain table of every server, for `chom demo`.
pub fn table(tree: &TreeArgs) -> anyhow::Result<String> {
    let rows: Vec<Vec<String>> = list(tree)?.values().map(|l| row(l, false)).collect();
    let mut header = HEADER.to_vec();
    header.push("MESSAGE");
    Ok(table::render(&header, &rows))
}

/// Prints the view.
pub fn run(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let mut all = list(&args.tree)?;
    let listed: Vec<Listed> = if args.names.is_empty() {
        all.into_values().collect()
    } else {
        let mut chosen = Vec::new();
        for name in &args.names {
            match all.remove(name) {
                Some(l) => chosen.push(l),
                None => anyhow::bail!(
                    "server `{name}` has neither a file nor a status file in {}",
                    args.tree.inventory.display()
                ),
            }
        }
        chosen
    };
    match args.output {
        Output::Json => {
            let docs: Vec<&ServerStatus> = listed.iter().map(|l| &l.status).collect();
            println!("{}", serde_json::to_string_pretty(&docs)?);
        }
        Output::Yaml => {
            for l in &listed {
                println!("---\n{}", serde_saphyr::to_string(&l.status)?);
            }
        }
        Output::Table | Output::Wide => {
            let wide = args.output == Output::Wide;
            let rows: Vec<Vec<String>> = listed.iter().map(|l| row(l, wide)).collect();
            let mut header = HEADER.to_vec();
            if wide {
                header.extend(["ADDRESS", "OS", "GEN", "COMPONENTS", "REVISION"]);
            }
            header.push("MESSAGE");
            print!("{}", table::render(&header, &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(l: &Listed, wide: bool) -> Vec<String> {
    let s = &l.status.status;
    let ready = s.condition(types::READY);
    let cond = |t: &str| s.condition(t).map_or("-".to_owned(), |c| format!("{:?}", c.status));
    let hw = s.hardware.as_ref();
    let valid = s
        .condition(types::SPEC_VALID)
        .map_or("True".to_owned(), |c| format!("{:?}", c.status));
    let mut cells = vec![
        l.name.clone(),
        ready.map_or("Unknown".to_owned(), |c| format!("{:?}", c.status)),
        ready.map_or("NotReconciled".to_owned(), |c| c.reason.clone()),
        valid,
        cond(types::SPECS_MATCH),
        cond(types::DRIFTED),
        hw.map_or("-".to_owned(), |h| h.cpu.to_string()),
        hw.map_or("-".to_owned(), |h| format!("{}Mi", h.memory_mb)),
        hw.map_or("-".to_owned(), |h| format!("{}G", h.disk_gb)),
        s.last_reconcile
            .as_ref()
            .map_or("-".to_owned(), |r| crate::reconcile::ago(r.finished_at)),
    ];
    if wide {
        cells.push(l.address.clone().unwrap_or_else(|| "-".to_owned()));
        cells.push(hw.map_or("-".to_owned(), |h| h.os.pretty_name.clone()));
        cells.push(format!("{}/{}", s.observed_generation, l.status.metadata.generation));
        let applied = s
            .components
            .iter()
            .filter(|c| c.state == status::ComponentState::Applied)
            .count();
        cells.push(format!("{applied}/{}", s.components.len()));
        // The git source's commit last applied (`main@abc123def456`).
        cells.push(
            s.last_applied_revision
                .as_ref()
                .map_or("-".to_owned(), |r| format!("{}@{}", r.reference, r.short())),
        );
    }
    // A broken file says so first: it is what the operator has to fix.
    let message = match (s.spec_errors.first(), ready) {
        (Some(finding), _) => format!("spec invalid: {finding}"),
        (None, Some(c)) => c.message.lines().next().unwrap_or_default().to_owned(),
        (None, None) => String::new(),
    };
    cells.push(message);
    cells
}
