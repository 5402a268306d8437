//! `chom completion SHELL` and `chom man --out DIR`: shell completions (clap_complete)
//! and man pages (clap_mangen), both generated from the same clap definitions as
//! `--help`, so they can never disagree with the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};

/// Print a shell completion script to stdout.
///
/// Examples:
///   chom completion bash > ~/.local/share/bash-completion/completions/chom
///   chom completion zsh > "${fpath[1]}/_chom"
///   chom completion fish > ~/.config/fish/completions/chom.fish
///
/// Exit codes: 0 printed, 2 usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Write the man pages: chom.1 and one chom-<command>.1 per subcommand.
///
/// Examples:
///   chom man --out /usr/local/share/man/man1
///   chom man --out target/man && man -l target/man/chom-plan.1
///
/// Exit codes: 0 written, 2 the folder could not be written, or usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ManArgs {
    /// The folder to write the pages into (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Prints the completion script.
pub fn completion(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "chom", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let command = super::Cli::command();
    for path in write_pages(&command, &args.out)? {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `chom.1` and, recursively, `chom-<sub>[-<sub>].1`.
fn write_pages(command: &clap::Command, dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut command = command.clone();
    command.build();
    let mut written = Vec::new();
    fn walk(command: &clap::Command, name: &str, dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let page = command.clone().name(name.to_owned()).bin_name(name.replace('-', " "));
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page).render(&mut bytes)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        out.push(path);
        for sub in command
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, &format!("{name}-{}", sub.get_name()), dir, out)?;
        }
        Ok(())
    }
    walk(&command, "chom", dir, &mut written)?;
    Ok(written)
}
