//! The command line (clap derive): global options, the subcommands, and logging set-up.
//! Each subcommand lives in `cli/<name>.rs` with a `run`; output for people goes to
//! stdout through renderers, never through tracing.

mod init;
mod schema;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Keep a fleet of Linux servers converged from a directory of YAML resources.
///
/// Examples:
///   chom init                      # scaffold inventory.d/, scripts/, secrets.d/
///   chom validate                  # check ./inventory.d before committing
///   chom schema --write schemas/   # write the JSON Schemas for editors
#[derive(Debug, Parser)]
#[command(name = "chom", version, about, long_about = None, verbatim_doc_comment)]
pub struct Cli {
    /// Options every subcommand understands.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output (-v debug, -vv trace). CHOM_LOG overrides it with a tracing filter.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object a line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check resources against the schema and the inventory's rules (for pre-commit and CI).
    Validate(validate::ValidateArgs),
    /// Print or write the JSON Schemas of the resource and status files.
    Schema(schema::SchemaArgs),
    /// Scaffold a new chom tree: inventory.d/, scripts/, secrets.d/ and .gitignore.
    Init(init::InitArgs),
}

/// Where the inventory is, shared by every subcommand that reads it.
#[derive(Debug, Clone, Args)]
pub struct TreeArgs {
    /// The folder of Server and Role files.
    #[arg(long, value_name = "DIR", default_value = "inventory.d", env = "CHOM_INVENTORY")]
    pub inventory: PathBuf,
    /// Component scripts [default: scripts/ beside the inventory].
    #[arg(long, value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// Encrypted secrets [default: secrets.d/ beside the inventory].
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
}

impl TreeArgs {
    /// The layout these options describe.
    pub fn layout(&self) -> crate::inventory::Layout {
        let mut layout = crate::inventory::Layout::beside(&self.inventory);
        if let Some(dir) = &self.scripts {
            layout.scripts.clone_from(dir);
        }
        if let Some(dir) = &self.secrets {
            layout.secrets.clone_from(dir);
        }
        layout
    }
}

/// Sets up tracing on stderr.
pub fn init_logging(global: &GlobalArgs) {
    let default = match global.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Init(args) => init::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
