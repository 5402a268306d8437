//! `chom daemon`: the wiring of the operator. Watcher → refresh of the store through
//! the validation road → work queue → workers that reconcile and write status files;
//! signals, the lock file and shutdown. The only module that spawns long-lived tasks.

pub mod handoff;
mod store;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::audit::Audit;
use crate::controller::{Action, Controller, DEPENDENCY_RECHECK, Owner, OwnerError, OwnerInfo, Scheduler, StatusSink};
use crate::inventory::Layout;
use crate::queue::{Queue, QueueConfig};
use crate::reconcile::{self, Context, PassMode};
use crate::ssh::Transport;
use crate::status::{self, ConditionStatus, ObservedStatus, Timestamp, reasons, types};
use crate::watch::{WatchConfig, WatchPaths, Watcher};
use store::{Changes, Store};
use writes::StatusWrites;

/// Settings of one daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the tree is.
    pub layout: Layout,
    /// The folder relative `identityFile`s are resolved from.
    pub base: PathBuf,
    /// History, audit and the lock file.
    pub state_dir: PathBuf,
    /// Concurrent reconciles.
    pub workers: usize,
    /// Queue settings (rate, burst, backoff).
    pub queue: QueueConfig,
    /// Watcher settings (debounce, periodic re-list).
    pub watch: WatchConfig,
    /// How long in-flight reconciles may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// The age identity for `secrets.d/`, when one is configured.
    pub identity: Option<Arc<crate::secrets::Identity>>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` switches them off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The servers this daemon owns (`--shard K/N`).
    pub shard: crate::shard::Shard,
    /// The transport's interrupt: cancelled when reconciles outlive the shutdown bound,
    /// which kills their scripts on the servers.
    pub interrupt: CancellationToken,
    /// The git source the tree is pulled from (GitOps); `layout` is then its live tree.
    pub source: Option<crate::source::Settings>,
}

/// How long interrupted passes get to kill their scripts and record their servers.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop the daemon (per-server failures never do).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another process owns the inventory.
    #[error(transparent)]
    Owned(#[from] OwnerError),
    /// The state directory cannot be used.
    #[error("cannot use the state directory {path}")]
    StateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tree cannot be read.
    #[error(transparent)]
    Inventory(#[from] crate::validate::FatalError),
    /// The watcher could not start.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    /// The metrics address cannot be listened on.
    #[error("cannot serve metrics on {addr}; pick another --metrics-addr or pass --metrics-addr off")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// The git source's folders cannot be made.
    #[error("cannot set up the git source in {path}")]
    Source {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    /// Parsed files between refreshes: a change set re-parses only what changed.
    cache: Arc<crate::validate::Cache>,
    /// Handed-off requests waiting for a server's next pass (taken when the pass starts,
    /// so a pass already in flight never answers them).
    waiters: Mutex<std::collections::BTreeMap<String, Vec<Waiter>>>,
    config: Config,
    controller: Controller,
    store: Arc<Mutex<Store>>,
    queue: Queue<String>,
    writes: Arc<StatusWrites>,
    /// SIGHUP resyncs so far: a pass that began before the latest one must not mark its
    /// server checked, or the resync pass it is owed would be a periodic one.
    resyncs: std::sync::atomic::AtomicU64,
    /// The findings last logged per inventory file that is not a tracked server (a
    /// broken new file, a FIFO named `x.yaml`), so each is logged once, not per change set.
    logged: Mutex<std::collections::BTreeMap<PathBuf, Vec<String>>>,
    /// The git source's gauges as of its last sync.
    source_gauges: Mutex<Option<crate::metrics::SourceGauges>>,
}

type Waiter = tokio::sync::mpsc::UnboundedSender<handoff::ServerResult>;

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, std::collections::BTreeMap<String, Vec<Waiter>>> {
        self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl handoff::Handler for Shared {
    fn reconcile(
        &self,
        names: &[String],
        by: &str,
    ) -> (Vec<String>, tokio::sync::mpsc::UnboundedReceiver<handoff::ServerResult>) {
        let accepted: Vec<String> = {
            let store = self.store();
            if names.is_empty() {
                store.servers.keys().cloned().collect()
            } else {
                names
                    .iter()
                    .filter(|n| store.servers.contains_key(*n))
                    .cloned()
                    .collect()
            }
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let mut waiters = self.waiters();
            for name in &accepted {
                waiters.entry(name.clone()).or_default().push(tx.clone());
            }
        }
        info!(servers = accepted.len(), by, "reconcile requested");
        self.controller.audit(
            "reconcile.requested",
            serde_json::json!({"by": by, "servers": accepted.len()}),
        );
        // A requested pass on a server whose connection is open costs no handshake, which
        // is what the start rate paces: it starts at once. Others wait their turn.
        let open: Vec<bool> = {
            let store = self.store();
            accepted
                .iter()
                .map(|name| {
                    store.servers.get(name).is_some_and(|t| {
                        let target = crate::detect::target_for(&t.entry, &self.config.base);
                        self.controller.ctx.transport.is_connected(&target)
                    })
                })
                .collect()
        };
        for (name, open) in accepted.iter().zip(open) {
            if open {
                self.queue.add_express(name.clone());
            } else {
                self.queue.add(name.clone());
            }
        }
        (accepted, rx)
    }
}

fn lock_store(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock_store(&self.store)
    }
}

/// The daemon's statuses: kept in the store, then written to the files (retried until
/// they are, see [`writes`]).
struct StoreStatuses {
    store: Arc<Mutex<Store>>,
    writes: Arc<StatusWrites>,
}

impl StatusSink for StoreStatuses {
    /// Stores the new observed status unless the server changed or vanished meanwhile (a
    /// newer pass is queued then), and writes the status file.
    fn save(&self, seen: &crate::controller::Server, observed: ObservedStatus) -> std::io::Result<()> {
        let (path, source) = {
            let mut store = lock_store(&self.store);
            let Some(current) = store.servers.get_mut(seen.name()) else {
                return Ok(());
            };
            if current.generation != seen.generation {
                // Keep what was learnt (hardware, component digests) but not the verdict
                // on a desired state that is no longer in force.
                observed.clone_into(&mut current.observed);
                current.observed.observed_generation = seen.generation;
            } else {
                current.observed = observed;
            }
            (current.entry.status_path(), current.entry.path.clone())
        };
        self.writes
            .write(&path, &source, || tracked_document(&self.store, seen.name(), &path))
            .map(|_| ())
    }
}

/// The status document of a tracked server, if it is still tracked with that status path.
fn tracked_document(store: &Mutex<Store>, name: &str, path: &Path) -> Option<status::ServerStatus> {
    lock_store(store)
        .servers
        .get_mut(name)
        .filter(|t| t.entry.status_path() == path)
        .map(store::Tracked::document)
}

/// The daemon's work queue as the controller's scheduler.
struct QueueScheduler {
    queue: Queue<String>,
}

impl Scheduler for QueueScheduler {
    fn schedule(&self, server: &str, action: Action) -> Option<Timestamp> {
        let key = server.to_owned();
        match action {
            Action::Requeue(interval) => {
                self.queue.forget(&key);
                self.queue.add_after_jittered(key, interval, 0.1);
                None
            }
            Action::Retry => {
                let delay = self.queue.add_rate_limited(key);
                Some(Timestamp(std::time::SystemTime::now() + delay))
            }
            Action::AwaitDependency => {
                self.queue.add_after(key, DEPENDENCY_RECHECK);
                None
            }
            Action::Idle => {
                self.queue.forget(&key);
                None
            }
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `ready` is called once the first listing is
/// done (for systemd readiness and `/readyz`).
pub async fn run(config: Config, transport: Arc<Transport>) -> Result<(), DaemonError> {
    let audit = Audit::open(&config.state_dir, &config.layout.inventory).map_err(|source| DaemonError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let socket = handoff::socket_path(&config.state_dir, config.shard);
    let me = OwnerInfo {
        socket: Some(std::path::absolute(&socket).unwrap_or_else(|_| socket.clone())),
        ..OwnerInfo::this_process("daemon", &config.state_dir, config.shard)
    };
    let hint = "stop it first (one owner per inventory, whatever its state dir)";
    if let Some(dir) = &config.layout.status {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::StateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let _owner = match Owner::acquire(config.layout.owner_dir(), &me, config.shard, hint) {
        Err(e) => {
            audit.record("daemon.refused", serde_json::json!({"reason": e.to_string()}));
            return Err(e.into());
        }
        Ok(owner) => owner,
    };
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let ctx = Context {
        transport: transport.clone(),
        layout: config.layout.clone(),
        base: config.base.clone(),
        identity: config.identity.clone(),
        redactor: crate::secrets::Redactor::new(),
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let listener = match config.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    // GitOps: the newest good commit is made the live tree before the first listing.
    let trigger = Arc::new(tokio::sync::Notify::new());
    let source = match config.source.clone() {
        Some(settings) => {
            let mut source =
                crate::source::Source::open(settings, &config.state_dir).map_err(|e| DaemonError::Source {
                    path: crate::source::Dirs::new(&config.state_dir).root,
                    source: e,
                })?;
            info!(url = %source.settings.url, reference = %source.settings.reference, "fetching the git source");
            let (source, outcome, events) = tokio::task::spawn_blocking(move || {
                let (outcome, events) = source.sync();
                (source, outcome, events)
            })
            .await
            .map_err(|e| DaemonError::Source {
                path: config.state_dir.clone(),
                source: std::io::Error::other(e),
            })?;
            log_source_events(&audit, &events);
            Some((source, outcome))
        }
        None => None,
    };
    let store = Arc::new(Mutex::new(Store::default()));
    let queue = Queue::new(config.queue.clone());
    let writes = Arc::new(StatusWrites::new(metrics.clone()));
    let controller = Controller::new(ctx, config.state_dir.clone(), config.layout.inventory.clone())
        .with_audit(audit)
        .with_metrics(metrics.clone())
        .with_statuses(Arc::new(StoreStatuses {
            store: store.clone(),
            writes: writes.clone(),
        }))
        .with_scheduler(Arc::new(QueueScheduler { queue: queue.clone() }));
    let shared = Arc::new(Shared {
        waiters: Mutex::default(),
        cache: Arc::new(crate::validate::Cache::default()),
        queue,
        config: config.clone(),
        controller,
        store,
        writes: writes.clone(),
        logged: Mutex::default(),
        resyncs: std::sync::atomic::AtomicU64::new(0),
        source_gauges: Mutex::new(source.as_ref().map(|(s, _)| s.gauges())),
    });
    let retry_task = tokio::spawn(writes.clone().run());
    let paths = WatchPaths {
        inventory: config.layout.inventory.clone(),
        scripts: config.layout.scripts.clone(),
        secrets: config.layout.secrets.clone(),
    };
    // Start watching before the first listing so nothing changed in between is missed.
    let (watcher, mut changes) = Watcher::start(&paths, config.watch)?;
    refresh(&shared).await?;
    let (servers, suspended) = {
        let store = shared.store();
        let suspended = store.servers.values().filter(|t| t.desired.suspend).count();
        (store.servers.len(), suspended)
    };
    let metrics_at = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    info!(
        inventory = %config.layout.inventory.display(),
        servers,
        workers = config.workers,
        shard = %config.shard,
        metrics = %metrics_at,
        "daemon started"
    );
    let paced = first_pass_pacing(servers - suspended, config.queue.rate_per_sec, config.queue.burst);
    info!(
        servers = servers - suspended,
        suspended,
        rate = config.queue.rate_per_sec,
        burst = config.queue.burst,
        seconds = paced.as_secs(),
        "first pass paced by the start rate: the last server starts after about {}s (suspended servers cost nothing)",
        paced.as_secs()
    );
    shared.controller.audit(
        "daemon.started",
        serde_json::json!({"servers": servers, "pid": std::process::id()}),
    );
    crate::systemd::notify(&format!("READY=1\nSTATUS=0/{servers} servers ready"));
    let watchdog = crate::systemd::watchdog_interval().map(|period| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                crate::systemd::notify("WATCHDOG=1");
            }
        })
    });

    metrics.set_ready();
    let metrics_task = listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            info!(addr = %addr, "serving /metrics, /healthz and /readyz");
        }
        let weak = Arc::downgrade(&shared);
        let snapshot = Arc::new(move || weak.upgrade().map(|s| snapshot(&s)).unwrap_or_default());
        let hook = config
            .source
            .as_ref()
            .and_then(|s| s.webhook_secret.clone())
            .map(|secret| {
                info!("the push webhook POST /hooks/git is on");
                Arc::new(crate::metrics::Hook {
                    secret,
                    trigger: trigger.clone(),
                })
            });
        tokio::spawn(crate::metrics::serve_with_hook(
            listener,
            metrics.clone(),
            snapshot,
            hook,
        ))
    });
    let source_task =
        source.map(|(source, outcome)| tokio::spawn(source_loop(shared.clone(), source, outcome, trigger.clone())));

    // `chom reconcile` hands its request over this socket while the daemon owns the tree.
    let handoff_task = match handoff::bind(&socket) {
        Ok(listener) => Some(tokio::spawn(handoff::serve(listener, shared.clone()))),
        Err(e) => {
            warn!(socket = %socket.display(), error = %e, "cannot take reconcile requests; `chom reconcile` is refused while the daemon runs");
            None
        }
    };

    let hard_stop = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.workers.max(1) {
        workers.spawn(worker(shared.clone(), hard_stop.clone()));
    }

    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(set) => {
                    tracing::debug!(paths = set.paths.len(), relist = set.relist, "inventory changed");
                    if let Err(e) = refresh(&shared).await {
                        error!(error = %e, "re-reading the inventory failed; keeping the last state");
                    }
                }
                None => {
                    warn!("the file watcher stopped; relying on signals only");
                    std::future::pending::<()>().await;
                }
            },
            _ = hup.recv() => {
                info!("SIGHUP: full resync; every server's components are checked now");
                if source_task.is_some() {
                    trigger.notify_one();
                }
                if let Err(e) = refresh(&shared).await {
                    error!(error = %e, "re-reading the inventory failed");
                }
                let names: Vec<String> = {
                    let mut store = shared.store();
                    shared.resyncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    store.servers.values_mut().for_each(|t| t.checked = false);
                    store.servers.keys().cloned().collect()
                };
                for name in names {
                    shared.queue.add(name);
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    info!(timeout = ?config.shutdown_timeout, "stopping: no new work; waiting for reconciles in flight");
    crate::systemd::notify("STOPPING=1");
    drop(watcher);
    shared.queue.shut_down();
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        tokio::select! {
            _ = async { while workers.join_next().await.is_some() {} } => true,
            _ = term.recv() => false,
            _ = int.recv() => false,
        }
    })
    .await
    .unwrap_or(false);
    if !drained {
        // Kill what the passes still run on their servers (as a passed deadline does), so a
        // restarted daemon never starts a second copy beside one still running; the passes
        // then end and record their servers as interrupted. Only what outlives that bound
        // is dropped unrecorded.
        warn!("killing the scripts still running; their servers are recorded as interrupted");
        config.interrupt.cancel();
        let recorded = tokio::time::timeout(INTERRUPT_GRACE, async { while workers.join_next().await.is_some() {} })
            .await
            .is_ok();
        if !recorded {
            warn!("cancelling reconciles still in flight");
            hard_stop.cancel();
            while workers.join_next().await.is_some() {}
        }
    }
    retry_task.abort();
    let writes = shared.writes.clone();
    let _ = tokio::task::spawn_blocking(move || writes.flush()).await;
    // Requests still waiting get their answer stream closed.
    shared.waiters().clear();
    let _ = std::fs::remove_file(&socket);
    transport.close_all().await;
    for task in [watchdog, metrics_task, handoff_task, source_task]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    shared
        .controller
        .audit("daemon.stopped", serde_json::json!({"drained": drained}));
    info!("daemon stopped");
    Ok(())
}

/// Re-validates the tree and applies what changed: queue new and changed servers,
/// drop removed ones, rewrite statuses whose file validity changed.
async fn refresh(shared: &Arc<Shared>) -> Result<(), DaemonError> {
    let layout = shared.config.layout.clone();
    let cache = shared.cache.clone();
    // The revision of a git-sourced tree, read before the tree: a swap after this point
    // brings another change set.
    let revision = shared
        .config
        .source
        .as_ref()
        .and_then(|_| crate::source::revision_at(&layout.inventory));
    let report = tokio::task::spawn_blocking(move || crate::validate::load_cached(&layout, &cache))
        .await
        .map_err(|e| DaemonError::StateDir {
            path: shared.config.state_dir.clone(),
            source: std::io::Error::other(e),
        })??;
    let mut report = report;
    let shard = shared.config.shard;
    // Servers of other shards are another daemon's: not tracked, never written.
    report.inventory.servers.retain(|name, _| shard.owns(name));
    // Scripts, secrets and status files are read without the store's lock, which every
    // worker needs.
    let untracked = shared.store().untracked(&report);
    let (inventory, layout) = (report.inventory.clone(), shared.config.layout.clone());
    let (digests, previous) = tokio::task::spawn_blocking(move || {
        let previous: std::collections::BTreeMap<_, _> = untracked
            .iter()
            .filter_map(|e| Some((e.server.metadata.name.clone(), status::read(&e.status_path())?)))
            .collect();
        (crate::desired::sources(&inventory, &layout), previous)
    })
    .await
    .map_err(|e| DaemonError::StateDir {
        path: shared.config.state_dir.clone(),
        source: std::io::Error::other(e),
    })?;
    let changes: Changes = shared
        .store()
        .refresh(&report, &shared.config.layout, &digests, &previous);
    if let Some(revision) = &revision {
        advance_revision(shared, &report, &changes, revision);
    }
    // Roles get no status file; a file that says it is one is left to `chom validate`.
    let never_valid: Vec<(PathBuf, String, Vec<String>)> = changes
        .never_valid
        .iter()
        .filter_map(|(file, errors)| {
            let name = crate::validate::invalid_server_name(file)?;
            shard.owns(&name).then(|| (file.clone(), name, errors.clone()))
        })
        .collect();
    for t in &changes.removed {
        info!(server = %t.desired.name, file = %t.entry.path.display(), "server removed from the inventory");
        shared.queue.remove(&t.desired.name);
        shared.waiters().remove(&t.desired.name);
        let target = crate::detect::target_for(&t.entry, &shared.config.base);
        shared.controller.ctx.transport.disconnect(&target).await;
        let path = t.entry.status_path();
        shared.writes.forget(&path);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(file = %path.display(), error = %e, "cannot remove the status file");
        }
    }
    for name in &changes.validity {
        let found = shared
            .store()
            .servers
            .get(name)
            .map(|t| (t.entry.status_path(), t.entry.path.clone(), !t.spec_errors.is_empty()));
        if let Some((path, source, invalid)) = found {
            if invalid {
                warn!(server = %name, "the server's file no longer validates; its last valid state stays in force");
            }
            write_status(&shared.writes, &path, &source, || {
                tracked_document(&shared.store, name, &path)
            });
        }
    }
    {
        let mut logged = shared.logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (file, errors) in &changes.never_valid {
            if logged.get(file) != Some(errors) {
                warn!(file = %file.display(), findings = %errors.join("; "), "a file in the inventory does not validate; it is not deployed");
            }
        }
        *logged = changes.never_valid.iter().cloned().collect();
    }
    for (file, name, errors) in never_valid {
        let path = shared.config.layout.status_path(&file, &name);
        let mut observed = ObservedStatus {
            spec_errors: errors,
            ..ObservedStatus::default()
        };
        observed.set_condition(
            types::SPEC_VALID,
            ConditionStatus::False,
            reasons::INVALID,
            format!("{} has never validated; nothing is done until it does", file.display()),
            0,
            Timestamp::now(),
        );
        write_status(&shared.writes, &path, &file, || {
            Some(status::document(&name, 0, "", observed))
        });
    }
    for name in changes.changed {
        shared.queue.add(name);
    }
    Ok(())
}

fn write_status(writes: &StatusWrites, path: &Path, source: &Path, doc: impl FnOnce() -> Option<status::ServerStatus>) {
    match writes.write(path, source, doc) {
        Ok(true) => tracing::debug!(file = %path.display(), "status written"),
        Ok(false) => {}
        Err(e) => error!(file = %path.display(), error = %e, "cannot write the status file; it is retried"),
    }
}

async fn worker(shared: Arc<Shared>, hard_stop: CancellationToken) {
    while let Some(name) = shared.queue.get().await {
        tokio::select! {
            _ = reconcile_one(&shared, &name) => {}
            _ = hard_stop.cancelled() => {
                shared.queue.done(&name);
                return;
            }
        }
        shared.queue.done(&name);
    }
}

/// When the last of `servers` starts on the first pass: a burst of `burst` at once, then
/// `rate` a second.
fn first_pass_pacing(servers: usize, rate: f64, burst: u32) -> Duration {
    let paced = servers.saturating_sub(burst.max(1) as usize) as f64;
    if rate.is_finite() && rate > 0.0 {
        Duration::from_secs_f64(paced / rate)
    } else {
        Duration::ZERO
    }
}

/// One pass of one server through the controller; then the systemd status line and the
/// servers that were waiting for this one.
async fn reconcile_one(shared: &Arc<Shared>, name: &str) {
    let (server, checked, resyncs) = {
        let store = shared.store();
        let Some(tracked) = store.servers.get(name) else {
            return;
        };
        let resyncs = shared.resyncs.load(std::sync::atomic::Ordering::SeqCst);
        (tracked.server(), tracked.checked, resyncs)
    };
    // A suspended server's pass only writes its status: it does not spend the fleet's
    // start rate, so suspended servers never slow the first pass of the rest.
    if server.desired.suspend {
        shared.queue.refund();
    }
    let waiting = shared.waiters().remove(name).unwrap_or_default();
    // The first pass over each server after start (or SIGHUP), and a pass someone asked
    // for (`chom reconcile` handed over), check every component.
    let mode = if checked && waiting.is_empty() {
        PassMode::Periodic
    } else {
        PassMode::CheckNow
    };
    let unready = unready_dependency(shared, &server.desired.depends_on);
    let deployment_id = reconcile::new_deployment_id();
    let started_at = Timestamp::now();
    let mut done = shared.controller.run_one(&server, &deployment_id, mode, unready).await;
    if let Some(record) = done.record.take() {
        shared
            .controller
            .store_deployment(&deployment_id, started_at, vec![record]);
    }
    if mode == PassMode::CheckNow
        && done.outcome.result == crate::status::ReconcileResult::Succeeded
        && let mut store = shared.store()
        && shared.resyncs.load(std::sync::atomic::Ordering::SeqCst) == resyncs
        && let Some(t) = store.servers.get_mut(name)
        && t.generation == server.generation
    {
        t.checked = true;
    }
    let ready = done.outcome.status.is_ready_at(server.generation);
    if !waiting.is_empty() {
        let result = handoff_result(name, &done, &deployment_id);
        for waiter in waiting {
            let _ = waiter.send(result.clone());
        }
    }
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let (ready_count, total) = {
            let store = shared.store();
            (
                store
                    .servers
                    .values()
                    .filter(|t| t.observed.is_ready_at(t.generation))
                    .count(),
                store.servers.len(),
            )
        };
        crate::systemd::notify(&format!("STATUS={ready_count}/{total} servers ready"));
    }
    if ready && done.action != Action::AwaitDependency {
        // Servers waiting for this one need not wait for their next 30 s re-check.
        let waiting: Vec<String> = shared
            .store()
            .servers
            .values()
            .filter(|t| t.desired.depends_on.iter().any(|d| d == name) && !t.observed.is_ready_at(t.generation))
            .map(|t| t.desired.name.clone())
            .collect();
        for dependent in waiting {
            shared.queue.add(dependent);
        }
    }
}

/// A handed-off pass as the CLI prints it.
fn handoff_result(name: &str, done: &crate::controller::Done, deployment_id: &str) -> handoff::ServerResult {
    let status = &done.outcome.status;
    let ready = status.condition(types::READY);
    let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
    let on_purpose = reason == reasons::SUSPENDED || reason == reasons::PINNED;
    handoff::ServerResult {
        name: name.to_owned(),
        result: format!("{:?}", done.outcome.result),
        changed: status.components.iter().filter(|c| c.changed).count(),
        took_ms: done.took.as_millis() as u64,
        message: ready
            .map(|c| c.message.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default(),
        deployment_id: deployment_id.to_owned(),
        ok: (done.outcome.result == crate::status::ReconcileResult::Succeeded || on_purpose)
            && done.write_error.is_none(),
        reason,
    }
}

/// The gauges of one scrape.
fn snapshot(shared: &Shared) -> crate::metrics::Snapshot {
    let store = shared.store();
    let servers = store
        .servers
        .values()
        .map(|t| crate::metrics::ServerGauges::from_status(&t.desired.name, &t.observed))
        .collect();
    crate::metrics::Snapshot {
        queue_depth: shared.queue.len() as i64,
        active_workers: shared.queue.processing() as i64,
        open_connections: shared.controller.ctx.transport.open_connections() as i64,
        servers,
        source: shared
            .source_gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    }
}

/// The first dependency not Ready at its current generation, if any.
fn unready_dependency(shared: &Arc<Shared>, deps: &[String]) -> Option<String> {
    let store = shared.store();
    deps.iter()
        .find(|d| {
            store
                .servers
                .get(*d)
                .is_none_or(|t| !t.observed.is_ready_at(t.generation))
        })
        .cloned()
}

/// Records the revision each server's desired state now comes from. A server whose
/// desired state this commit did not change, and which is Ready at it, is already in the
/// state the commit describes: its `lastAppliedRevision` moves to it without a pass.
fn advance_revision(
    shared: &Arc<Shared>,
    report: &crate::validate::Report,
    changes: &Changes,
    revision: &crate::source::Revision,
) {
    let mut moved = Vec::new();
    {
        let mut store = shared.store();
        for name in report.inventory.servers.keys() {
            let Some(t) = store.servers.get_mut(name) else { continue };
            t.revision = Some(revision.clone());
            if !changes.changed.contains(name)
                && t.observed.is_ready_at(t.generation)
                && t.observed.last_applied_revision.as_ref().is_some_and(|r| r != revision)
            {
                t.observed.last_applied_revision = Some(revision.clone());
                moved.push((name.clone(), t.entry.status_path(), t.entry.path.clone()));
            }
        }
    }
    for (name, path, source) in moved {
        write_status(&shared.writes, &path, &source, || {
            tracked_document(&shared.store, &name, &path)
        });
    }
}

/// Logs the git source's events and records them in the audit trail.
fn log_source_events(audit: &Audit, events: &[crate::source::Event]) {
    for e in events {
        match e.action {
            "source.applied" => info!(action = e.action, "{}", e.message),
            _ => warn!(action = e.action, "{}", e.message),
        }
        if e.audit {
            audit.record(e.action, e.fields.clone());
        }
    }
}

/// The git source's loop: a sync every `interval` (after a failed fetch: 5 s doubling up
/// to the longer of the interval and 5 min) and at once on a trigger (webhook, SIGHUP).
/// Each applied commit swaps `current`, which the informer sees as one change set.
async fn source_loop(
    shared: Arc<Shared>,
    source: crate::source::Source,
    first: crate::source::Outcome,
    trigger: Arc<tokio::sync::Notify>,
) {
    let mut source = Some(source);
    let mut outcome = first;
    let interval = source.as_ref().map_or(Duration::from_secs(60), |s| s.settings.interval);
    let backoff_max = interval.max(Duration::from_secs(300));
    loop {
        let failures = source.as_ref().map_or(0, |s| s.status.consecutive_failures);
        let delay = if outcome == crate::source::Outcome::FetchFailed {
            (Duration::from_secs(5) * 2u32.saturating_pow(failures.saturating_sub(1).min(16))).min(backoff_max)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = trigger.notified() => {}
        }
        let Some(mut taken) = source.take() else { return };
        let Ok((back, result, events)) = tokio::task::spawn_blocking(move || {
            let (result, events) = taken.sync();
            (taken, result, events)
        })
        .await
        else {
            error!("the git source's sync panicked; it stops");
            return;
        };
        if let Some(audit) = shared.controller.audit_trail() {
            log_source_events(audit, &events);
        }
        *shared
            .source_gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(back.gauges());
        outcome = result;
        source = Some(back);
    }
}
