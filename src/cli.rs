//! The command line (clap derive): global options, the subcommands, and logging set-up.
//! Each subcommand lives in `cli/<name>.rs` with a `run`; output for people goes to
//! stdout through renderers, never through tracing.

mod completion;
mod daemon;
mod demo;
mod detect;
mod get;
mod history;
mod import_legacy;
mod init;
mod plan;
mod reconcile;
mod rollback;
mod schema;
mod secrets;
mod table;
mod tree_config;
mod trust;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use tree_config::apply as apply_tree_config;

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
    // No doc comments here: each subcommand's help (its summary, description, exit
    // codes and examples) is the doc comment of its arguments struct.
    Validate(validate::ValidateArgs),
    Schema(schema::SchemaArgs),
    Init(init::InitArgs),
    Detect(detect::DetectArgs),
    Trust(trust::TrustArgs),
    Reconcile(reconcile::ReconcileArgs),
    Get(get::GetArgs),
    History(history::HistoryArgs),
    Rollback(rollback::RollbackArgs),
    Resume(rollback::ResumeArgs),
    Plan(plan::PlanArgs),
    Daemon(Box<daemon::DaemonArgs>),
    Demo(demo::DemoArgs),
    Secrets(secrets::SecretsArgs),
    /// Convert the Bash deployer's configs/inventory.yaml into inventory.d/ and secrets.d/.
    ImportLegacy(import_legacy::ImportLegacyArgs),
    Completion(completion::CompletionArgs),
    Man(completion::ManArgs),
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
    /// The chom.yaml this command runs under, set by [`apply_tree_config`]: its
    /// `stateDir` for [`state_dir`], its file for `chom validate`.
    #[arg(skip)]
    pub config: Option<crate::treeconfig::Located>,
    /// The status folder of a git-sourced tree (set by [`apply_tree_config`] from a
    /// chom.yaml with `source:`); `None`: status files beside the server files.
    #[arg(skip)]
    pub status_dir: Option<PathBuf>,
}

/// Where the inventory is, for the subcommands that read it but run no script and
/// decrypt no secret (`trust`, `detect`, `get`, `history`, `resume`): only `--inventory`
/// on the command line. chom.yaml's `scripts:` and `secrets:` still apply, because the
/// inventory is validated against them.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// The folder of Server and Role files.
    #[arg(long, value_name = "DIR", default_value = "inventory.d", env = "CHOM_INVENTORY")]
    pub inventory: PathBuf,
    /// chom.yaml's `scripts:`, set by [`apply_tree_config`].
    #[arg(skip)]
    pub scripts: Option<PathBuf>,
    /// chom.yaml's `secrets:`, set by [`apply_tree_config`].
    #[arg(skip)]
    pub secrets: Option<PathBuf>,
    /// The chom.yaml this command runs under, set by [`apply_tree_config`].
    #[arg(skip)]
    pub config: Option<crate::treeconfig::Located>,
    /// The status folder of a git-sourced tree, as in [`TreeArgs`].
    #[arg(skip)]
    pub status_dir: Option<PathBuf>,
}

impl InventoryArgs {
    /// The same tree as [`TreeArgs`], for the functions that take one.
    pub fn tree(&self) -> TreeArgs {
        TreeArgs {
            inventory: self.inventory.clone(),
            scripts: self.scripts.clone(),
            secrets: self.secrets.clone(),
            config: self.config.clone(),
            status_dir: self.status_dir.clone(),
        }
    }
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
        layout.status.clone_from(&self.status_dir);
        layout
    }
}

/// How to reach a server and check its host key: every subcommand that connects.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Extra OpenSSH known_hosts file, consulted after ~/.ssh/known_hosts (repeatable;
    /// replaces chom.yaml's knownHosts). `chom trust` records keys in the first one given.
    #[arg(long = "known-hosts", value_name = "FILE", env = "CHOM_KNOWN_HOSTS")]
    pub known_hosts: Vec<PathBuf>,
    /// Seconds allowed for TCP connect, key exchange and login.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
}

impl ConnectArgs {
    /// The known_hosts files consulted: ~/.ssh/known_hosts, then the ones given.
    pub fn known_hosts_files(&self) -> Vec<PathBuf> {
        let mut files = crate::ssh::TransportConfig::default().known_hosts_files;
        files.extend(self.known_hosts.iter().cloned());
        files
    }
}

/// The age identity, for the subcommands that decrypt secrets (`reconcile`, `plan`,
/// `rollback`, `daemon`).
#[derive(Debug, Clone, Default, Args)]
pub struct IdentityArgs {
    /// age identity that decrypts secrets.d/ [default: $CHOM_AGE_IDENTITY, else the
    /// systemd credential `age-identity`]. Must not be readable by group or others.
    #[arg(long, value_name = "FILE")]
    pub age_identity: Option<PathBuf>,
}

/// SSH options of the subcommands that work across the fleet over pooled connections
/// (`detect`, `reconcile`, `plan`, `rollback`, `daemon`).
#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// known_hosts and the connect timeout.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// SSH handshakes in flight at once across the fleet (OpenSSH's MaxStartups drops
    /// bursts above its start value, 10 by default).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_handshakes: usize,
    /// New SSH handshakes started per second across the fleet (0: unpaced). When every
    /// server runs its own sshd, raising this and --max-handshakes speeds up large fleets.
    #[arg(long, default_value_t = 200, value_name = "PER_SEC")]
    pub handshake_rate: u32,
    /// Close a pooled SSH connection after it has been idle this long. Between drift
    /// checks (every `interval`) a server needs no open connection; each open one costs
    /// ~85 KiB and a keepalive every 15 s.
    #[arg(long, default_value = "90s", value_name = "DURATION", value_parser = parse_duration)]
    pub ssh_idle_timeout: std::time::Duration,
    /// Idle SSH connections kept open at most; beyond it the least recently used close once
    /// idle for 1 s, which bounds memory on large fleets (each open one holds ~85 KiB).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub ssh_max_idle: usize,
}

impl SshArgs {
    /// A transport configured from these options.
    pub fn transport(&self) -> crate::ssh::Transport {
        self.transport_with(tokio_util::sync::CancellationToken::new())
    }

    /// A transport configured from these options whose running commands are killed when
    /// `interrupt` is cancelled.
    pub fn transport_with(&self, interrupt: tokio_util::sync::CancellationToken) -> crate::ssh::Transport {
        let config = crate::ssh::TransportConfig {
            known_hosts_files: self.connect.known_hosts_files(),
            connect_timeout: std::time::Duration::from_secs(self.connect.connect_timeout.max(1)),
            max_handshakes_in_flight: self.max_handshakes.max(1),
            handshake_rate: self.handshake_rate,
            idle_timeout: self.ssh_idle_timeout,
            max_idle_connections: self.ssh_max_idle,
            interrupt,
            ..crate::ssh::TransportConfig::default()
        };
        crate::ssh::Transport::new(config)
    }
}

/// The state directory: the option, `$CHOM_STATE_DIR`, chom.yaml's `stateDir`, systemd's
/// `$STATE_DIRECTORY`, else `.chom/` beside the inventory.
pub fn state_dir(tree: &TreeArgs, option: Option<&std::path::Path>) -> PathBuf {
    let config = tree.config.as_ref().and_then(|c| c.state_dir.as_deref());
    crate::treeconfig::state_dir(
        option,
        config,
        |k| std::env::var_os(k),
        || tree_base(tree).join(".chom"),
    )
}

/// Loads the age identity, if one is configured. `quiet_if_absent` is for callers that
/// only might need it; a misconfigured identity (bad permissions, unreadable) is
/// always reported, because the servers that need it will not be deployed.
pub fn load_identity(
    identity: &IdentityArgs,
    quiet_if_absent: bool,
) -> Option<std::sync::Arc<crate::secrets::Identity>> {
    let located = crate::secrets::locate_identity(identity.age_identity.as_deref(), |k| std::env::var_os(k));
    match located.and_then(|path| crate::secrets::Identity::load(&path)) {
        Ok(identity) => Some(std::sync::Arc::new(identity)),
        Err(crate::secrets::SecretsError::NoIdentity) if quiet_if_absent => None,
        Err(e) => {
            eprintln!("warning: {e:#}; servers that reference secrets will not be deployed");
            None
        }
    }
}

/// The reconcile context for one-shot commands (`reconcile`, `plan`, `rollback`).
/// Cancelling `interrupt` kills every script still running (a second Ctrl-C).
pub fn reconcile_context(
    tree: &TreeArgs,
    ssh: &SshArgs,
    identity: &IdentityArgs,
    inventory: &crate::inventory::Inventory,
    interrupt: tokio_util::sync::CancellationToken,
) -> crate::reconcile::Context {
    let needs_secrets = inventory.servers.values().any(|e| !e.server.spec.secrets.is_empty());
    crate::reconcile::Context {
        transport: std::sync::Arc::new(ssh.transport_with(interrupt)),
        layout: tree.layout(),
        base: tree_base(tree),
        identity: if needs_secrets {
            load_identity(identity, false)
        } else {
            None
        },
        redactor: crate::secrets::Redactor::new(),
    }
}

/// Takes the inventory for a one-shot command that writes (`reconcile`, `rollback`,
/// `resume`): refused, naming the owner, while a daemon (or another such command) owns it.
pub fn own_tree(
    tree: &TreeArgs,
    command: &str,
    state_dir: &std::path::Path,
    hint: &str,
) -> anyhow::Result<crate::controller::Owner> {
    let me = crate::controller::OwnerInfo::this_process(command, state_dir, crate::shard::Shard::ALL);
    Ok(crate::controller::Owner::acquire(
        tree.layout().owner_dir(),
        &me,
        crate::shard::Shard::ALL,
        hint,
    )?)
}

/// The folder relative paths in the inventory (such as `identityFile`) are taken from:
/// the one holding `inventory.d/`.
pub fn tree_base(tree: &TreeArgs) -> PathBuf {
    let absolute = std::path::absolute(&tree.inventory).unwrap_or_else(|_| tree.inventory.clone());
    absolute.parent().map(PathBuf::from).unwrap_or_default()
}

/// The label selector of the commands that pick servers (`-l env=prod,tier!=db`).
#[derive(Debug, Clone, Default, Args)]
pub struct SelectorArgs {
    /// Only servers whose `metadata.labels` match: `key=value`, `key!=value`, `key`,
    /// `!key`, comma-separated, all must hold (as `kubectl -l`).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<crate::selector::Selector>,
}

impl SelectorArgs {
    /// True when the server with these labels is selected (always, without a selector).
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }
}

/// Validates the tree and picks the servers to work on: the ones named, or all valid
/// ones; then those the selector matches. Findings are summarised on stderr; servers
/// with errors are skipped, and naming one is an error (with the closest name, when one
/// is close).
pub fn load_servers(
    tree: &TreeArgs,
    names: &[String],
    select: &SelectorArgs,
) -> anyhow::Result<(crate::inventory::Inventory, Vec<String>)> {
    let report = crate::validate::load(&tree.layout(), &[])?;
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        eprintln!(
            "warning: the inventory has {errors} error(s); resources with errors are skipped (run `chom validate`)"
        );
    }
    let inventory = report.inventory;
    let chosen: Vec<String> = if names.is_empty() {
        inventory.servers.keys().cloned().collect()
    } else {
        for name in names {
            if !inventory.servers.contains_key(name) {
                let hint = crate::suggest::did_you_mean(name, inventory.servers.keys().map(String::as_str));
                anyhow::bail!(
                    "server `{name}` is not in the inventory, or its file has errors (run `chom validate`){hint}"
                );
            }
        }
        names.to_vec()
    };
    let chosen = chosen
        .into_iter()
        .filter(|n| {
            inventory
                .servers
                .get(n)
                .is_some_and(|e| select.matches(&e.server.metadata.labels))
        })
        .collect();
    Ok((inventory, chosen))
}

/// Said on stderr when a selector leaves no server: the command then does nothing
/// (never "all", which an empty list of names means elsewhere).
pub fn nothing_selected(select: &SelectorArgs) {
    if let Some(s) = &select.selector {
        eprintln!("no server matches the selector `{s}`");
    }
}

/// Secret names each server references, for `chom secrets check`: every valid server of
/// the inventory beside the secrets folder, with an empty set when it needs none.
fn secret_references(secrets_dir: &std::path::Path) -> anyhow::Result<crate::secrets::References> {
    let inventory = std::env::var_os("CHOM_INVENTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            secrets_dir
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("inventory.d")
        });
    // Without an inventory there is nothing to reference; the values are still checked.
    if !inventory.is_dir() {
        return Ok(crate::secrets::References::new());
    }
    let mut layout = crate::inventory::Layout::beside(&inventory);
    layout.secrets = secrets_dir.to_path_buf();
    Ok(crate::validate::load(&layout, &[])?.secret_references)
}

/// The tokio runtime of the one-shot commands (`detect`, `reconcile`, `plan`, ...): one
/// thread. Their work is waiting on the network; a single thread spends a quarter less CPU per
/// server than a work-stealing pool, which hands wake-ups between threads (bench/fleet,
/// 200 servers: 2.1-2.7 ms against 3.1-3.7 ms per server). File writes that fsync go to the
/// blocking pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()?)
}

/// The daemon's runtime: a thread per core, so that re-validating a large inventory or a slow
/// disk never stalls the SSH traffic of the servers being reconciled.
pub fn daemon_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Few, long-lived blocking threads: every new thread may get its own malloc arena,
    // and a daemon that spawned a fresh one per re-list grew by ~60 MiB (measured).
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .build()?)
}

/// Checks a server name given on the command line before anything uses it: names
/// become file names (pins, hardware snapshots, status files), so `../x` must never
/// reach one. An invalid name is a usage error (exit 2).
pub fn parse_server_name(text: &str) -> Result<String, String> {
    text.parse::<crate::resource::ServerName>()
        .map(crate::resource::ServerName::into_string)
        .map_err(|e| format!("{e}; server names are file names, so nothing else is accepted"))
}

/// Parses `500ms`, `30s`, `10m`, `1h30m` for duration options.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::resource::DurationSpec::parse(text)
        .map(|d| d.0)
        .ok_or_else(|| format!("{text:?}: {}", crate::resource::DURATION_HELP))
}

/// Sets up tracing on stderr: `warn` by default, `info` for chom's own lines in the daemon
/// (start, applied changes, removals, failures), `-v` debug, `-vv` trace; `CHOM_LOG` (a
/// tracing filter) overrides them. Colours only on a terminal and without `NO_COLOR`.
/// Lines go through [`crate::progress::LogWriter`], so they never tear a progress board.
pub fn init_logging(global: &GlobalArgs, command: &Command) {
    let default = match (global.verbose, command) {
        (0, Command::Daemon(_)) => "warn,chom=info",
        (0, _) => "warn",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::progress::stderr_colours(std::env::var_os("NO_COLOR")))
        .with_writer(crate::progress::log_writer);
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
        Command::Detect(args) => detect::run(&args),
        Command::Trust(args) => trust::run(&args),
        Command::Reconcile(args) => reconcile::run(&args),
        Command::Get(args) => get::run(&args),
        Command::History(args) => history::run(&args),
        Command::Rollback(args) => rollback::run(&args),
        Command::Resume(args) => rollback::resume(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Daemon(args) => daemon::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Secrets(args) => secrets::run(&args, || secret_references(&args.dir)),
        Command::ImportLegacy(args) => import_legacy::run(&args),
        Command::Completion(args) => completion::completion(&args),
        Command::Man(args) => completion::man(&args),
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
