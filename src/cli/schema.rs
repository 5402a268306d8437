//! `chom schema`: print one JSON Schema, or write them all for editors and CI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

/// Print or write the JSON Schemas generated from chom's types.
///
/// Examples:
///   chom schema server
///   chom schema --write schemas/
///   chom schema secretset
///
/// Exit codes: 0 printed or written, 2 the folder could not be written, or usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SchemaArgs {
    /// Which schema to print.
    #[arg(value_enum, default_value_t = Which::Server)]
    pub which: Which,
    /// Write every schema into DIR instead of printing one.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// The published schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// `kind: Server`.
    Server,
    /// `kind: Role`.
    Role,
    /// `<name>.status.yaml`.
    Status,
    /// `chom.yaml`, the tree configuration.
    Config,
    /// A file in `secrets.d/` (`kind: SecretSet`).
    #[value(name = "secretset")]
    SecretSet,
}

/// Prints or writes the schemas.
pub fn run(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.write {
        let written =
            crate::schema::write_all(dir).with_context(|| format!("writing schemas into {}", dir.display()))?;
        for path in written {
            println!("wrote {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let schema = match args.which {
        Which::Server => crate::schema::server(),
        Which::Role => crate::schema::role(),
        Which::Status => crate::schema::status(),
        Which::Config => crate::schema::config(),
        Which::SecretSet => crate::schema::secret_set(),
    };
    print!("{}", crate::schema::to_text(&schema));
    Ok(ExitCode::SUCCESS)
}
