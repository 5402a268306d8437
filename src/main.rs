//! The `chom` binary: parse the command line, set up logging, run, and map the outcome
//! to an exit code (0 ok, 1 findings or failures, 2 usage or environment errors).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = chom::cli::Cli::parse();
    chom::cli::init_logging(&cli.global);
    match chom::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
