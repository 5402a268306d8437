//! `chom import-legacy FILE`: turn the Bash deployer's `configs/inventory.yaml` into Server
//! and Role files in `inventory.d/` and age-encrypted values in `secrets.d/`. It maps the
//! whole file first, then checks every target, then writes; it never overwrites a file, and
//! it never prints or writes a secret value in plaintext. Exit codes: 0 imported (or a clean
//! `--dry-run`), 1 problems listed and nothing written, 2 usage error or unreadable FILE.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::diag::{self, Format};
use crate::import_legacy::{self, SEED_ROLES, Written};
use crate::inventory::Layout;
use crate::validate::{MAX_FILE_BYTES, parse_document};

/// Options of `chom import-legacy`. Each top-level mapping of FILE becomes a Server, the
/// seed's two Roles are written beside them, every password-like value moves into
/// secrets.d/, and what cannot be mapped is reported and kept as an annotation.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ImportLegacyArgs {
    /// The legacy inventory file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The tree to write into (DIR/inventory.d, DIR/secrets.d).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Print the files, moved secrets (names only) and warnings; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Shown under `--help`, where the subcommand's one line from `cli.rs` is the description.
const AFTER_HELP: &str = "\
Exit codes: 0 imported, 1 problems listed and nothing written, 2 usage error or FILE
unreadable or not YAML. Password-like values move to DIR/secrets.d/, which needs
.recipients (`chom secrets keygen --out FILE`). Existing files are never overwritten.

Examples:
  chom import-legacy deploy/configs/inventory.yaml --dry-run
  chom import-legacy deploy/configs/inventory.yaml --out ~/fleet";

/// Runs the import; see [`ImportLegacyArgs`] for the exit codes.
pub fn run(args: &ImportLegacyArgs) -> anyhow::Result<ExitCode> {
    let text = read_legacy(&args.file)?;
    let doc = parse_document(&args.file, &text).map_err(|d| {
        if d.code == "empty-file" {
            anyhow::anyhow!(
                "{} is empty: there is no legacy inventory to import",
                args.file.display()
            )
        } else {
            anyhow::anyhow!("{}:{}:{}: {}", d.file.display(), d.line, d.column, d.message)
        }
    })?;
    let layout = Layout::beside(&args.out.join("inventory.d"));
    let mapping = import_legacy::map(&args.file, &doc, &layout)?;
    let targets = import_legacy::targets(&layout, &args.file, &mapping.servers)?;
    let moved = mapping.moved();
    let problems = import_legacy::problems(&layout, &targets, &moved);

    let source = import_legacy::redacted(&text, &doc, &mapping.secret_pointers, &moved);
    let mut rendered = diag::render(&mapping.findings, Format::Human, &|_| Some(source.clone()));
    // The findings' own count line goes: the problems below are errors too, and one
    // count after all of them is the only one printed.
    if !mapping.findings.is_empty()
        && let Some(cut) = rendered.trim_end_matches('\n').rfind('\n')
    {
        rendered.truncate(cut + 1);
    } else if !mapping.findings.is_empty() {
        rendered.clear();
    }
    print!("{rendered}");
    for problem in &problems {
        println!("error: {problem}");
    }
    let errors = mapping.findings.iter().filter(|d| d.is_error()).count() + problems.len();
    let warnings = mapping.findings.len() + problems.len() - errors;
    if !mapping.findings.is_empty() || !problems.is_empty() {
        println!("{errors} error(s), {warnings} warning(s)");
    }
    if errors > 0 {
        println!("nothing written: {errors} problem(s) to fix first");
        return Ok(ExitCode::from(1));
    }
    if args.dry_run {
        println!("plan (--dry-run, nothing written):");
        for t in &targets {
            println!("  create {}  ({})", t.path.display(), t.what);
        }
        for m in &moved {
            let file = layout.secrets.join(m.scope.file_name());
            println!("  secret {}  from {}  into {}", m.name, m.from, file.display());
        }
        println!(
            "  create {}/*.schema.json  (JSON Schemas the files' modelines point at, where missing)",
            args.out.join("schemas").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    import_legacy::write(&layout, &targets, &moved, |written| match written {
        Written::Secret { moved, file } => {
            println!("moved  {} into {} as {}", moved.from, file.display(), moved.name);
        }
        Written::File(t) => println!("created {}  ({})", t.path.display(), t.what),
    })?;
    let schemas = args.out.join("schemas");
    for path in crate::schema::write_missing(&schemas).with_context(|| format!("writing {}", schemas.display()))? {
        println!("created {}  (JSON Schema for editors)", path.display());
    }
    println!(
        "imported {} server(s) and {} role(s), moved {} secret(s); components now read moved values as shell \
         variables ($NAME); next: chom validate",
        mapping.servers.len(),
        SEED_ROLES.len(),
        moved.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads FILE as UTF-8 text, refusing one larger than a resource may be.
fn read_legacy(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::fsread::read(path, MAX_FILE_BYTES as u64).map_err(|e| match e {
        crate::fsread::ReadError::TooLarge { .. } => {
            anyhow::anyhow!("{} is over the {MAX_FILE_BYTES}-byte limit", path.display())
        }
        other => anyhow::Error::new(other),
    })?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}
