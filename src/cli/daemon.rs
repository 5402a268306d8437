//! `chom daemon`: run the operator in the foreground (under systemd, or by hand).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{IdentityArgs, SshArgs, TreeArgs};

/// Watch the inventory and keep every server reconciled, writing status files.
///
/// Stops on SIGTERM or Ctrl-C after letting reconciles in flight finish (a second
/// signal cancels them); SIGHUP forces a full resync.
///
/// Examples:
///   chom daemon
///   chom daemon --workers 64 --state-dir /var/lib/chom
///   chom daemon --shard 0/3
///
/// Exit codes: 0 stopped on a signal after draining, 2 refused (another daemon owns the
/// tree) or usage and environment errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DaemonArgs {
    /// Where the tree is.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// SSH settings.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// The secrets identity.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The daemon's own state: lock file, history, audit trail [default: chom.yaml's
    /// stateDir, else $STATE_DIRECTORY under systemd, else .chom/ beside the inventory].
    #[arg(long, value_name = "DIR", env = "CHOM_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Reconcile only shard K of N (0-based, by a stable hash of the server name), so N
    /// daemons on N control hosts can share one checkout. Each takes its own lock.
    #[arg(long, default_value = "0/1", value_name = "K/N")]
    pub shard: crate::shard::Shard,
    /// Where to serve /metrics (Prometheus), /healthz and /readyz; `off` disables them.
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR|off")]
    pub metrics_addr: String,
    #[command(flatten)]
    pub tuning: Tuning,
    /// GitOps: pull the tree from this git repository (ssh, https or a local path) instead
    /// of reading it in place; replaces chom.yaml's `source:` (see the README).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// With --source: the branch to follow [default: main].
    #[arg(long, value_name = "BRANCH", requires = "source")]
    pub source_branch: Option<String>,
    /// With --source: the tree's folder inside the repository.
    #[arg(long, value_name = "PATH", requires = "source")]
    pub source_path: Option<PathBuf>,
    /// With --source: how often to fetch.
    #[arg(long, value_name = "DURATION", requires = "source", value_parser = super::parse_duration)]
    pub source_interval: Option<Duration>,
    /// With --source: apply only commits signed by a key of this allowed-signers file.
    #[arg(long, value_name = "FILE", requires = "source")]
    pub source_allowed_signers: Option<PathBuf>,
    /// With --source: the file holding the push webhook's HMAC secret (turns on POST /hooks/git).
    #[arg(long, value_name = "FILE", requires = "source")]
    pub webhook_secret_file: Option<PathBuf>,
    /// chom.yaml's `source:` and the folder its paths are relative to (set from chom.yaml).
    #[arg(skip)]
    pub source_spec: Option<Box<(crate::treeconfig::SourceSpec, PathBuf)>>,
}

impl DaemonArgs {
    /// The git source: the flags, else chom.yaml's `source:`.
    fn source(&self) -> anyhow::Result<Option<crate::source::Settings>> {
        let (spec, base) = match (&self.source, &self.source_spec) {
            (Some(url), _) => {
                let spec = crate::treeconfig::SourceSpec {
                    url: url.clone(),
                    reference: self.source_branch.clone().map(|b| crate::treeconfig::SourceRef {
                        branch: Some(b),
                        ..Default::default()
                    }),
                    interval: self.source_interval.map(crate::resource::DurationSpec),
                    path: self.source_path.clone(),
                    verify: self
                        .source_allowed_signers
                        .clone()
                        .map(|allowed_signers| crate::treeconfig::VerifySpec { allowed_signers }),
                    webhook: self
                        .webhook_secret_file
                        .clone()
                        .map(|secret_file| crate::treeconfig::WebhookSpec { secret_file }),
                    ..Default::default()
                };
                (spec, std::env::current_dir()?)
            }
            (None, Some(given)) => given.as_ref().clone(),
            (None, None) => return Ok(None),
        };
        crate::source::Settings::from_spec(&spec, &base).map(Some)
    }
}

/// Work queue and watch tuning, shared with `chom demo`.
#[derive(Debug, Clone, Args)]
pub struct Tuning {
    /// Servers reconciled at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub workers: usize,
    /// Reconcile starts per second across the fleet (token bucket rate).
    #[arg(long, default_value_t = 10.0, value_name = "PER_SEC")]
    pub rate: f64,
    /// Reconcile starts allowed in a burst (token bucket size).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub burst: u32,
    /// First retry delay after a failure; doubles per failure.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = super::parse_duration)]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = super::parse_duration)]
    pub backoff_max: Duration,
    /// Full re-list of the tree as a safety net against lost file events.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = super::parse_duration)]
    pub relist_interval: Duration,
    /// How long file events are gathered into one change set.
    #[arg(long, default_value = "150ms", value_name = "DURATION", value_parser = super::parse_duration)]
    pub debounce: Duration,
    /// How long reconciles in flight may run after SIGTERM before they are cancelled.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = super::parse_duration)]
    pub shutdown_timeout: Duration,
}

impl Tuning {
    /// The daemon configuration for a tree.
    pub fn config(&self, tree: &TreeArgs, state_dir: PathBuf) -> crate::daemon::Config {
        crate::daemon::Config {
            layout: tree.layout(),
            base: super::tree_base(tree),
            state_dir,
            workers: self.workers,
            queue: crate::queue::QueueConfig {
                rate_per_sec: self.rate,
                burst: self.burst,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                ..crate::queue::QueueConfig::default()
            },
            watch: crate::watch::WatchConfig {
                debounce: self.debounce,
                relist_every: self.relist_interval,
            },
            shutdown_timeout: self.shutdown_timeout,
            identity: None,
            metrics_addr: None,
            shard: crate::shard::Shard::ALL,
            interrupt: tokio_util::sync::CancellationToken::new(),
            source: None,
        }
    }
}

/// Runs until stopped.
pub fn run(args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let state_dir = super::state_dir(&args.tree, args.state_dir.as_deref());
    let source = args.source()?;
    let mut config = args.tuning.config(&args.tree, state_dir);
    if let Some(settings) = source {
        // The live tree is the checkout `current` points to; statuses and the owner lock
        // live in the state directory, which outlives checkouts.
        config.layout = crate::source::layout(&config.state_dir, &settings.path);
        config.base = crate::source::tree_root(&config.state_dir, &settings.path);
        config.source = Some(settings);
    }
    config.identity = super::load_identity(&args.identity, true);
    config.shard = args.shard;
    config.metrics_addr = match args.metrics_addr.as_str() {
        "off" | "" => None,
        addr => Some(addr.parse().map_err(|_| {
            anyhow::anyhow!("--metrics-addr {addr:?} is not an address such as 127.0.0.1:9477 (or off)")
        })?),
    };
    let transport = Arc::new(args.ssh.transport_with(config.interrupt.clone()));
    super::daemon_runtime()?.block_on(crate::daemon::run(config, transport))?;
    Ok(ExitCode::SUCCESS)
}
