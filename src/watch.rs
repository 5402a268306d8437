//! Turns file-system events under `inventory.d/`, `scripts/` and `secrets.d/` into coalesced
//! change sets for the daemon: one `ChangeSet` per burst of writes, with the daemon's own status
//! files, hidden files and editor/VCS temporaries filtered out, and a full re-list requested
//! whenever events may have been lost (inotify overflow, a swapped checkout, a watch error, or
//! simply the periodic safety net).
//!
//! It must not parse or validate the files it reports (that is `validate`'s job), and it does no
//! initial listing: the caller lists the tree once, then starts the watcher and applies change
//! sets. Nothing here decides which servers a change affects.

mod error;
mod filter;
mod roots;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::AbortOnDropHandle;

pub use error::WatchError;
pub use filter::is_ignored;

use error::start_error;
use filter::{Batch, Sorter};
use roots::{Debouncer, Roots, WatchControl};

/// How many debouncer deliveries may wait for the event loop. Deliveries come at most once per
/// debouncer tick, so this only fills up if the runtime is stalled; past it, events are dropped
/// and a full re-list is requested instead of blocking notify's thread.
const RAW_CAPACITY: usize = 64;
/// A change set is held back at most this many debounce windows while batches keep arriving, so
/// a long-running copy still produces progress instead of one change set at the very end.
const MAX_HOLD_WINDOWS: u32 = 10;
/// The debouncer thread wakes every quarter of the debounce timeout; below this it would spin.
const MIN_DEBOUNCE: Duration = Duration::from_millis(10);
const MIN_RELIST_EVERY: Duration = Duration::from_secs(1);

/// The three folders of a checkout that the daemon reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPaths {
    /// `inventory.d/`: Server and Role files, sub-folders allowed. Must exist.
    pub inventory: PathBuf,
    /// `scripts/`: component scripts. May be missing; its creation is noticed.
    pub scripts: PathBuf,
    /// `secrets.d/`: encrypted values. May be missing; its creation is noticed.
    pub secrets: PathBuf,
}

/// Timing of the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Quiet time per path before the debouncer reports it, and the window in which further
    /// batches are folded into the same change set. At least 10 ms.
    ///
    /// notify-debouncer-full 0.7 polls its queue from its own thread every quarter of this,
    /// even while idle; the event loop itself sleeps until an event or the re-list timer.
    pub debounce: Duration,
    /// Period of the safety-net full re-list (a `relist: true` change set). At least 1 s.
    pub relist_every: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(150),
            relist_every: Duration::from_secs(5 * 60),
        }
    }
}

/// One coalesced batch of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Paths that were created, modified, removed or renamed (both the old and the new name).
    /// They are spelled below the configured roots, even when a root is a symlink. A path may
    /// name a folder: a removed folder is reported once, without its contents, so treat a folder
    /// path as "anything below may have changed". Re-read the files; the kind of event is not
    /// reported because editors and `git` make it meaningless.
    pub paths: BTreeSet<PathBuf>,
    /// Events may have been lost or a root now points elsewhere: list everything again. `paths`
    /// may still hold what was seen.
    pub relist: bool,
    /// Why a re-list is needed; set exactly when `relist` is.
    pub reason: Option<String>,
}

/// Watches a checkout and sends a `ChangeSet` per burst of relevant changes.
///
/// Dropping it stops watching: the inotify instance is closed and the event loop ends, which
/// closes the receiver returned by [`Watcher::start`].
pub struct Watcher {
    /// The only strong reference; the event loop holds a weak one to move watches.
    _debouncer: Arc<Mutex<Debouncer>>,
    _event_loop: AbortOnDropHandle<()>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts watching `paths` and returns the receiving end of the change sets.
    ///
    /// Must be called from inside a tokio runtime, on which the event loop is spawned. Changes
    /// are reported from the moment this returns; list the tree yourself before or right after.
    /// The channel holds one change set: while the receiver is busy, further changes are merged
    /// into the next one instead of queueing up.
    pub fn start(paths: &WatchPaths, config: WatchConfig) -> Result<(Watcher, mpsc::Receiver<ChangeSet>), WatchError> {
        check_config(&config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let mut roots = Roots::new(paths)?;

        let overflowed = Arc::new(AtomicBool::new(false));
        let (raw_tx, raw_rx) = mpsc::channel(RAW_CAPACITY);
        let bridge = Bridge {
            tx: raw_tx,
            overflowed: Arc::clone(&overflowed),
        };
        let sorter = Sorter::new(roots.paths());
        let mut debouncer = notify_debouncer_full::new_debouncer(config.debounce, None, move |result| {
            bridge.deliver(sorter.batch(result));
        })
        .map_err(start_error)?;
        roots.watch_initial(&mut debouncer)?;

        let debouncer = Arc::new(Mutex::new(debouncer));
        let weak = Arc::downgrade(&debouncer);
        let control: Weak<Mutex<dyn WatchControl>> = weak;
        let (tx, rx) = mpsc::channel(1);
        let event_loop = EventLoop {
            raw: raw_rx,
            out: tx,
            overflowed,
            roots,
            control,
            config,
        };
        let handle = runtime.spawn(event_loop.run());
        Ok((
            Watcher {
                _debouncer: debouncer,
                _event_loop: AbortOnDropHandle::new(handle),
            },
            rx,
        ))
    }
}

fn check_config(config: &WatchConfig) -> Result<(), WatchError> {
    let checks = [
        ("debounce", MIN_DEBOUNCE, config.debounce),
        ("relist_every", MIN_RELIST_EVERY, config.relist_every),
    ];
    for (setting, minimum, value) in checks {
        if value < minimum {
            return Err(WatchError::InvalidConfig {
                setting,
                minimum,
                value,
            });
        }
    }
    Ok(())
}

/// Hands batches from notify's thread to the event loop without ever blocking that thread.
struct Bridge {
    tx: mpsc::Sender<Batch>,
    overflowed: Arc<AtomicBool>,
}

impl Bridge {
    fn deliver(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        match self.tx.try_send(batch) {
            Ok(()) => {}
            // Blocking here would stall the debouncer and, behind it, inotify, which then
            // overflows anyway. Dropping is safe because the flag turns the next change set into
            // a full re-list; the channel is full, so a next change set is certain to come.
            Err(TrySendError::Full(_)) => self.overflowed.store(true, Ordering::Release),
            // The event loop is gone, so the watcher is being dropped.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// Batches received but not yet sent.
struct Pending {
    batch: Batch,
    first: Instant,
    last: Instant,
}

impl Pending {
    fn new() -> Self {
        let now = Instant::now();
        Pending {
            batch: Batch::default(),
            first: now,
            last: now,
        }
    }

    fn add(&mut self, batch: Batch) {
        self.batch.merge(batch);
        self.last = Instant::now();
    }

    /// The debouncer times each path on its own, so a `git checkout` reaches us as several
    /// deliveries a debouncer tick apart; a change set therefore waits until no delivery came
    /// for one debounce window (bounded, so a long copy still reports progress).
    fn deadline(&self, debounce: Duration) -> Instant {
        (self.last + debounce).min(self.first + debounce * MAX_HOLD_WINDOWS)
    }
}

/// Why the event loop stops.
struct Stopped;

/// Receives batches, folds bursts together, keeps the roots watched and sends change sets.
struct EventLoop {
    raw: mpsc::Receiver<Batch>,
    out: mpsc::Sender<ChangeSet>,
    overflowed: Arc<AtomicBool>,
    roots: Roots,
    control: Weak<Mutex<dyn WatchControl>>,
    config: WatchConfig,
}

impl EventLoop {
    async fn run(self) {
        let EventLoop {
            mut raw,
            out,
            overflowed,
            mut roots,
            control,
            config,
        } = self;
        // The only timer while idle: the periodic re-list.
        let mut relist_timer = tokio::time::interval_at(Instant::now() + config.relist_every, config.relist_every);
        relist_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pending: Option<Pending> = None;
        // Set once the pending batch is due; from then on it waits only for room in `out`.
        let mut due = false;

        loop {
            let deadline = pending
                .as_ref()
                .filter(|_| !due)
                .map(|pending| pending.deadline(config.debounce));
            tokio::select! {
                received = raw.recv() => match received {
                    Some(batch) => pending.get_or_insert_with(Pending::new).add(batch),
                    // The debouncer is gone, so the Watcher was dropped.
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    due = true;
                }
                _ = relist_timer.tick() => {
                    pending.get_or_insert_with(Pending::new).batch.add_reason("periodic re-list".to_owned());
                    due = true;
                }
                permit = out.reserve(), if due => {
                    // The receiver was dropped: nobody is listening any more.
                    let Ok(permit) = permit else { break };
                    due = false;
                    let Some(ready) = pending.take() else { continue };
                    match flush(&mut roots, &control, &overflowed, ready.batch).await {
                        Ok(Some(change_set)) => {
                            if change_set.relist {
                                // A re-list just happened; the safety net can start over.
                                relist_timer.reset();
                            }
                            tracing::debug!(
                                paths = change_set.paths.len(),
                                relist = change_set.relist,
                                reason = change_set.reason.as_deref().unwrap_or(""),
                                "change set ready"
                            );
                            permit.send(change_set);
                        }
                        Ok(None) => {}
                        Err(Stopped) => break,
                    }
                }
                () = out.closed(), if !due => break,
            }
        }
    }
}

/// Turns a due batch into a change set: re-resolves the roots first (so watches sit on the
/// current targets before anyone re-lists) and folds in a dropped-events flag.
async fn flush(
    roots: &mut Roots,
    control: &Weak<Mutex<dyn WatchControl>>,
    overflowed: &AtomicBool,
    mut batch: Batch,
) -> Result<Option<ChangeSet>, Stopped> {
    let control = control.upgrade().ok_or(Stopped)?;
    let mut owned = std::mem::take(roots);
    let touched = std::mem::take(&mut batch.touched);
    // Adding a recursive watch walks the tree and waits for notify's thread: blocking work.
    let refreshed = tokio::task::spawn_blocking(move || {
        let mut control = control.lock().unwrap_or_else(PoisonError::into_inner);
        let reasons = owned.refresh(&mut *control, &touched);
        (owned, reasons)
    })
    .await;
    let (refreshed, reasons) = refreshed.map_err(|error| {
        tracing::error!(%error, "re-watching the roots failed; stopping the watcher");
        Stopped
    })?;
    *roots = refreshed;
    for reason in reasons {
        batch.add_reason(reason);
    }

    if overflowed.swap(false, Ordering::AcqRel) {
        tracing::warn!("file events arrived faster than they were handled; requesting a full re-list");
        batch.add_reason("the watcher fell behind and dropped file events".to_owned());
    }
    if batch.paths.is_empty() && batch.reasons.is_empty() {
        return Ok(None);
    }
    let relist = !batch.reasons.is_empty();
    Ok(Some(ChangeSet {
        paths: batch.paths,
        relist,
        reason: relist.then(|| batch.reasons.join("; ")),
    }))
}
