//! The `chom` binary: parse the command line, fill what it left unset from chom.yaml, set
//! up logging, run, and map the outcome to an exit code (0 ok, 1 findings or failures, 2
//! usage or environment errors).

use std::process::ExitCode;

use chom::cli::Cli;
use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> ExitCode {
    // Parsed in two steps, not with `Cli::parse`, because the chom.yaml pre-pass needs the
    // matches to tell a default value from one the user gave.
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    chom::cli::init_logging(&cli.global, &cli.command);
    let outcome = chom::cli::apply_tree_config(&mut cli, &matches).and_then(|()| chom::cli::run(cli));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
