//! `chom get [NAME…]`: a kubectl-style view of the servers' status files. Every server
//! with a file or a status is listed: one whose file does not validate (the daemon keeps
//! its last valid spec in force, `SpecValid=False`), one never reconciled, and a status
//! left behind by a file removed while no daemon ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{InventoryArgs, SelectorArgs, TreeArgs, table};
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
///   chom get -l env=prod,tier!=db
///   chom get -w                      # print again whenever a status changes; Ctrl-C stops
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct GetArgs {
    /// Where the inventory is.
    #[command(flatten)]
    pub tree: InventoryArgs,
    /// Which servers.
    #[command(flatten)]
    pub select: SelectorArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Watch: after the first view, print it again each time it changes (until Ctrl-C).
    #[arg(short, long)]
    pub watch: bool,
    /// How often --watch looks for changes.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = super::parse_duration, requires = "watch")]
    pub watch_interval: std::time::Duration,
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
    /// The labels of its file, when the file validates.
    labels: BTreeMap<String, String>,
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
        let mut l = listed(name, address, &entry.status_path(), None);
        l.labels.clone_from(&entry.server.metadata.labels);
        out.insert(name.clone(), l);
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
        labels: BTreeMap::new(),
        address,
        status,
    }
}

/// `*.status.yaml` anywhere below the inventory folder (bounded depth).
pub(super) fn status_files(dir: &Path) -> Vec<PathBuf> {
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

/// Prints the view; with --watch, again whenever it changes.
pub fn run(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let tree = args.tree.tree();
    let mut last = view(args, &tree)?;
    print!("{last}");
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    // Until Ctrl-C (or a closed stdout): the view is read again every interval and
    // printed when it differs. Ages ("3m ago") change by themselves, so only a change
    // of the status documents counts, not the passing of time.
    let mut last_key = watch_key(args, &tree);
    loop {
        std::thread::sleep(args.watch_interval);
        let key = watch_key(args, &tree);
        if key == last_key {
            continue;
        }
        last_key = key;
        let now = view(args, &tree)?;
        if now != last {
            let mut out = std::io::stdout().lock();
            if writeln!(out)
                .and_then(|()| write!(out, "{now}"))
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(ExitCode::SUCCESS);
            }
            last = now;
        }
    }
}

/// What --watch compares: the listed servers' documents and validity as JSON.
fn watch_key(args: &GetArgs, tree: &TreeArgs) -> String {
    select(args, tree)
        .map(|listed| {
            let docs: Vec<(&str, &ServerStatus, Option<&String>)> = listed
                .iter()
                .map(|l| (l.name.as_str(), &l.status, l.address.as_ref()))
                .collect();
            serde_json::to_string(&docs).unwrap_or_default()
        })
        .unwrap_or_else(|e| e.to_string())
}

/// The servers named (or all), those the selector matches.
fn select(args: &GetArgs, tree: &TreeArgs) -> anyhow::Result<Vec<Listed>> {
    let mut all = list(tree)?;
    let listed: Vec<Listed> = if args.names.is_empty() {
        all.into_values().collect()
    } else {
        let mut chosen = Vec::new();
        for name in &args.names {
            match all.remove(name) {
                Some(l) => chosen.push(l),
                None => {
                    let hint = crate::suggest::did_you_mean(name, all.keys().map(String::as_str));
                    anyhow::bail!(
                        "server `{name}` has neither a file nor a status file in {}{hint}",
                        args.tree.inventory.display()
                    )
                }
            }
        }
        chosen
    };
    Ok(listed.into_iter().filter(|l| args.select.matches(&l.labels)).collect())
}

/// The view as text.
fn view(args: &GetArgs, tree: &TreeArgs) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let listed = select(args, tree)?;
    if listed.is_empty() && args.select.selector.is_some() && args.output == Output::Table {
        super::nothing_selected(&args.select);
    }
    let mut text = String::new();
    match args.output {
        Output::Json => {
            let docs: Vec<&ServerStatus> = listed.iter().map(|l| &l.status).collect();
            writeln!(text, "{}", serde_json::to_string_pretty(&docs)?)?;
        }
        Output::Yaml => {
            for l in &listed {
                writeln!(text, "---\n{}", serde_saphyr::to_string(&l.status)?)?;
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
            text.push_str(&table::render(&header, &rows));
        }
    }
    Ok(text)
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
