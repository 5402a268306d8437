//! `chom secrets`: set, list, check, rotate and keygen over `secrets.d/` (clap derive, one
//! `run_*` per subcommand). Values come from stdin (echo off at a terminal) or are
//! generated; they are never taken from argv, printed or logged. Output for people goes to
//! stdout; exit codes are 0 ok, 1 findings, and `Err` (2) for usage or environment errors.

use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::secrets::{
    self, DEFAULT_GENERATED_LEN, Generated, Identity, MAX_VALUE_BYTES, MIN_REDACTED_LEN, References, Scope,
    SecretValue, SecretsError,
};
use crate::status::Timestamp;

/// Manage the age-encrypted secrets in secrets.d/.
///
/// Each value is encrypted on its own to every public key in secrets.d/.recipients, so
/// names stay readable and diffs show which secret changed. Values are read from stdin,
/// never from the command line.
///
/// Examples:
///   chom secrets keygen --out ~/.config/chom/age.key   # new identity, added to .recipients
///   chom secrets set SMTP_PASSWORD < smtp-password.txt
///   chom secrets set SMTP_PASSWORD                     # prompts, input hidden
///   chom secrets set GRAFANA_ADMIN_PASSWORD --generate # once; re-runs keep it
///   chom secrets set DB_PASSWORD --server db-1         # db-1 only, overrides common
///   chom secrets list
///   chom secrets check --age-identity ~/.config/chom/age.key
///   chom secrets rotate                                # after changing .recipients
///
/// Exit codes: 0 done, 1 `check` found errors or `rotate` is blocked, 2 usage or
/// environment errors (no identity, no .recipients, an unknown --server).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SecretsArgs {
    /// The secrets folder.
    #[arg(
        long = "secrets",
        value_name = "DIR",
        default_value = "secrets.d",
        env = "CHOM_SECRETS",
        global = true
    )]
    pub dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: SecretsCommand,
}

/// The `chom secrets` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    // Each subcommand's help is the doc comment of its arguments struct.
    Set(SetArgs),
    List(ListArgs),
    Check(CheckArgs),
    Rotate(RotateArgs),
    Keygen(KeygenArgs),
}

/// Where the age identity comes from.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// age identity file (AGE-SECRET-KEY-1…, mode 600). Under systemd,
    /// $CREDENTIALS_DIRECTORY/age-identity is used when this is not given.
    #[arg(long, value_name = "FILE", env = "CHOM_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
}

impl IdentityArgs {
    /// Finds and loads the identity (option, environment, systemd credential).
    pub fn load(&self) -> Result<Identity, SecretsError> {
        let path = secrets::locate_identity(self.age_identity.as_deref(), |k| std::env::var_os(k))?;
        Identity::load(&path)
    }
}

/// Store one secret.
///
/// The value is read from stdin until end of input; one trailing newline is dropped, so
/// `echo "$X" |` and files ending in a newline work. At a terminal it is read as one
/// line with echo turned off.
///
/// Examples:
///   chom secrets set SMTP_PASSWORD < smtp-password.txt
///   chom secrets set MARIADB_ROOT_PASSWORD --generate --length 40
///   chom secrets set DB_PASSWORD --server db-1
///
/// Exit codes: 0 stored (or kept), 2 a bad name, an unknown --server, no .recipients, or
/// usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SetArgs {
    /// Secret name: upper-case letters, digits and `_`, starting with a letter.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Store it in <SERVER>.yaml, for that server only (overrides common.yaml).
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
    /// Generate a random URL-safe value instead of reading stdin. An existing value in the
    /// same file is kept, so re-running a setup never breaks a working password.
    #[arg(long)]
    pub generate: bool,
    /// Length of the generated value.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GENERATED_LEN, requires = "generate")]
    pub length: usize,
    /// With --generate: replace an existing value.
    #[arg(long, requires = "generate")]
    pub force: bool,
}

/// List secrets: names, file, age in days. Never values.
///
/// Examples:
///   chom secrets list
///   chom secrets list --server web-1
///
/// Exit codes: 0 listed, 2 the folder cannot be read, or usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ListArgs {
    /// Show what this server receives (its overrides replace common entries).
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
}

/// Check that every referenced secret exists, every value decrypts, none is too old.
///
/// Examples:
///   chom secrets check --age-identity ~/.config/chom/age.key
///   chom secrets check --no-decrypt --max-age 180     # in CI, without the key
///
/// Exit codes: 0 no errors (old values only warn), 1 errors found, 2 usage or environment
/// errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    /// Warn about values set more than this many days ago.
    #[arg(long, value_name = "DAYS", default_value_t = 90)]
    pub max_age: u64,
    /// Skip the decryption check (for CI without the key).
    #[arg(long)]
    pub no_decrypt: bool,
    /// The identity that must decrypt every value.
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Re-encrypt every value to the keys now in .recipients, keeping updatedAt.
///
/// Run it after adding or removing a person. Rotation re-encrypts; it does not change the
/// values, so after removing someone also change the credentials they could read.
///
/// Examples:
///   chom secrets rotate --age-identity ~/.config/chom/age.key
///
/// Exit codes: 0 re-encrypted, 1 blocked (a value this identity cannot read), 2 usage or
/// environment errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RotateArgs {
    /// An identity that can read every current value.
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Create an age identity (mode 600), print its public key, add it to .recipients.
///
/// Examples:
///   chom secrets keygen --out ~/.config/chom/age.key
///   sudo chom secrets keygen --out /etc/chom/age-identity
///
/// Exit codes: 0 created, 2 the file exists or cannot be written, or usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct KeygenArgs {
    /// Where to write the new identity; an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Do not add the public key to .recipients.
    #[arg(long)]
    pub no_recipient: bool,
}

/// Runs a `chom secrets` subcommand. `references` yields the secret names each server of the
/// inventory references; only `check` calls it.
pub fn run(args: &SecretsArgs, references: impl FnOnce() -> anyhow::Result<References>) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    match &args.command {
        SecretsCommand::Set(a) => {
            if let Some(server) = &a.server {
                known_server(server, &references()?)?;
            }
            run_set(dir, a)
        }
        SecretsCommand::List(a) => run_list(dir, a),
        SecretsCommand::Check(a) => run_check(dir, a, &references()?),
        SecretsCommand::Rotate(a) => run_rotate(dir, a),
        SecretsCommand::Keygen(a) => run_keygen(dir, a),
    }
}

/// Refuses a `--server` that names no server of the inventory beside the secrets folder,
/// which would otherwise become a file no server reads. Without an inventory there is
/// nothing to check against.
fn known_server(server: &str, references: &References) -> anyhow::Result<()> {
    if references.is_empty() || references.contains_key(server) {
        return Ok(());
    }
    let hint = crate::suggest::did_you_mean(server, references.keys().map(String::as_str));
    anyhow::bail!(
        "server `{server}` is not in the inventory (or its file does not parse; run `chom validate`){hint}: \
         its secrets would be read by no server"
    )
}

/// `chom secrets set`.
pub fn run_set(dir: &Path, args: &SetArgs) -> anyhow::Result<ExitCode> {
    let scope = Scope::from_option(args.server.as_deref())?;
    let file = dir.join(scope.file_name());
    let mut stdout = io::stdout().lock();
    if args.generate {
        let outcome = secrets::generate(dir, &scope, &args.name, args.length, args.force, Timestamp::now())?;
        let name = &args.name;
        match outcome {
            Generated::Created => writeln!(
                stdout,
                "generated {name} ({} characters) in {}",
                args.length,
                file.display()
            )?,
            Generated::Kept { updated_at } => writeln!(
                stdout,
                "kept {name} in {}: it exists since {updated_at} (--force replaces it)",
                file.display()
            )?,
            Generated::Replaced => writeln!(stdout, "replaced {name} in {} with a new random value", file.display())?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    secrets::check_name(&args.name)?;
    let value = read_value(&args.name)?;
    secrets::set(dir, &scope, &args.name, &value, Timestamp::now())?;
    writeln!(stdout, "stored {} in {}", args.name, file.display())?;
    if value.expose().chars().count() < MIN_REDACTED_LEN {
        eprintln!(
            "warning: {} is shorter than {MIN_REDACTED_LEN} characters, so logs will not redact it",
            args.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the value from stdin: hidden at a terminal, else until end of input.
fn read_value(name: &str) -> anyhow::Result<SecretValue> {
    let stdin = io::stdin();
    let mut bytes = Vec::new();
    if stdin.is_terminal() {
        let _echo = EchoOff::new().context(
            "cannot turn off terminal echo (stty failed); pipe the value instead: chom secrets set NAME < FILE",
        )?;
        eprint!("Value for {name} (input hidden, Enter ends it): ");
        let mut line = String::new();
        let read = stdin.read_line(&mut line);
        eprintln!();
        read.context("reading the value from the terminal")?;
        bytes = line.into_bytes();
    } else {
        // One byte over the limit (plus a newline) tells "too large" apart from "at the limit".
        let limit = u64::try_from(MAX_VALUE_BYTES + 3).unwrap_or(u64::MAX);
        stdin
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("reading the value from stdin")?;
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SecretValue::new(text)),
        Err(e) => {
            e.into_bytes().fill(0);
            anyhow::bail!("the value of {name} is not UTF-8 text; secrets are text (base64-encode binary data)")
        }
    }
}

/// Terminal echo turned off for as long as this lives (`stty -echo` on /dev/tty, so
/// nothing is linked against libc here). An interrupt while typing can leave echo off;
/// `stty echo` or `reset` restores it.
struct EchoOff;

impl EchoOff {
    fn new() -> io::Result<Self> {
        stty("-echo")?;
        Ok(Self)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = stty("echo");
    }
}

fn stty(setting: &str) -> io::Result<()> {
    let tty = std::fs::File::open("/dev/tty")?;
    let status = Command::new("stty").arg(setting).stdin(tty).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("stty {setting} exited with {status}")))
    }
}

/// `chom secrets list`.
pub fn run_list(dir: &Path, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let rows = secrets::list(dir, args.server.as_deref())?;
    let mut stdout = io::stdout().lock();
    if rows.is_empty() {
        writeln!(stdout, "no secrets in {}", dir.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = Timestamp::now();
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    let scope_width = rows.iter().map(|r| r.scope.stem().len()).max().unwrap_or(0).max(5);
    writeln!(
        stdout,
        "{:name_width$}  {:scope_width$}  {:>5}  UPDATED",
        "NAME", "SCOPE", "AGE"
    )?;
    for row in rows {
        writeln!(
            stdout,
            "{:name_width$}  {:scope_width$}  {:>5}  {}",
            row.name,
            row.scope.stem(),
            format!("{}d", row.age_days(now)),
            row.updated_at
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `chom secrets check`.
pub fn run_check(dir: &Path, args: &CheckArgs, references: &References) -> anyhow::Result<ExitCode> {
    let identity = if args.no_decrypt {
        None
    } else {
        Some(args.identity.load()?)
    };
    let max_age = Duration::from_secs(args.max_age.saturating_mul(86_400));
    let report = secrets::check(dir, references, identity.as_ref(), max_age, Timestamp::now());
    let mut stdout = io::stdout().lock();
    for finding in &report.findings {
        writeln!(stdout, "{finding}")?;
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == secrets::Severity::Error)
        .count();
    let warnings = report.findings.len() - errors;
    if errors > 0 {
        writeln!(stdout, "{errors} error(s), {warnings} warning(s)")?;
        return Ok(ExitCode::from(1));
    }
    let decrypted = if identity.is_some() {
        format!("{} decrypted", report.decrypted)
    } else {
        "decryption not checked".to_owned()
    };
    writeln!(
        stdout,
        "ok: {} secret(s) in {} file(s), {decrypted}, {} reference(s) resolved, {warnings} warning(s)",
        report.secrets, report.files, report.references
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `chom secrets rotate`.
pub fn run_rotate(dir: &Path, args: &RotateArgs) -> anyhow::Result<ExitCode> {
    let identity = args.identity.load()?;
    let mut stdout = io::stdout().lock();
    match secrets::rotate(dir, &identity) {
        Ok(report) => {
            writeln!(
                stdout,
                "re-encrypted {} secret(s) in {} file(s) to {} recipient(s); updatedAt kept",
                report.secrets, report.files, report.recipients
            )?;
            writeln!(
                stdout,
                "note: rotation does not change values; after removing someone, also change the credentials they \
                 could read (git history keeps the old ciphertexts)"
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ SecretsError::RotateBlocked { .. }) => {
            writeln!(stdout, "error: {e}")?;
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// `chom secrets keygen`.
pub fn run_keygen(dir: &Path, args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let public_key = secrets::create_identity(&args.out)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{public_key}")?;
    eprintln!("wrote a new age identity to {} (mode 600)", args.out.display());
    if !args.no_recipient {
        let added = secrets::add_recipient(dir, &public_key)?;
        let recipients = dir.join(secrets::RECIPIENTS_FILE);
        if added {
            eprintln!(
                "added its public key to {}; existing values become readable to it after someone who can read \
                 them runs `chom secrets rotate`",
                recipients.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Secrets(SecretsArgs),
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn length_and_force_need_generate() {
        assert!(Cli::try_parse_from(["chom", "secrets", "set", "A", "--force"]).is_err());
        assert!(Cli::try_parse_from(["chom", "secrets", "set", "A", "--length", "20"]).is_err());
        let ok = Cli::try_parse_from(["chom", "secrets", "set", "A", "--generate", "--force", "--length", "20"]);
        assert!(ok.is_ok());
    }

    #[test]
    fn set_has_no_way_to_take_a_value_from_argv() {
        assert!(Cli::try_parse_from(["chom", "secrets", "set", "A", "hunter2"]).is_err());
        assert!(Cli::try_parse_from(["chom", "secrets", "set", "A", "--value", "hunter2"]).is_err());
    }
}
