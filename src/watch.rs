//! Turns file-system events under `inventory.d/`, `scripts/` and `secrets.d/` into coalesced
//! change sets for the daemon: one `ChangeSet` per burst of writes, with the daemon's own status
//! files, hidden files and editor/VCS temporaries filtered out, and a full re-list requested
//! whenever events may have been lost (inotify overflow, a swapped checkout, a watch error, or
//! simply the periodic safety net).
//!
//! It must not parse or validate the files it reports (that is `validate`'s job), and it does no
//! initial listing: the caller lists the tree once, then starts the watcher and applies change
//! sets. Nothing here decides which servers a change affects.
//!
//! Two threads of control, neither of which wakes while nothing happens: notify's inotify thread
//! (it blocks in epoll) filters each raw event in its callback and hands it over without
//! blocking; the event loop, a tokio task, folds events into bursts and sleeps until the next
//! event, the end of the current burst's quiet window, or the periodic re-list.

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

use notify::RecommendedWatcher;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::AbortOnDropHandle;

pub use error::WatchError;
pub use filter::is_ignored;

use error::start_error;
use filter::{Batch, Change, Sorter};
use roots::{Roots, WatchControl};

/// How many relevant raw events may wait for the event loop. Each file written is a few events,
/// so a `git checkout` can queue thousands while the runtime is busy; this matches the kernel's
/// default inotify queue (`fs.inotify.max_queued_events`), past which events are lost anyway.
/// When it is full, events are dropped and a full re-list is requested instead of blocking
/// notify's thread. Slots are allocated as they fill, so an idle watcher costs little.
const RAW_CAPACITY: usize = 16_384;
/// How many queued events the event loop takes per turn.
const RECV_AT_ONCE: usize = 256;
/// A change set is held back at most this many debounce windows from its first event while
/// events keep arriving, so a steady trickle of edits (or a long copy) never delays the
/// first of them by more than that (the daemon's drop-to-reconcile latency budget).
const MAX_HOLD_WINDOWS: u32 = 2;
/// The quiet gap that ends a burst, as a fraction of the debounce window: events closer
/// together than this (one `git checkout`) are one change set.
const QUIET_DIVISOR: u32 = 3;
/// Below this a burst (an editor's save, a `git checkout`) would be split into many change sets.
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
    /// Quiet time after the last relevant event before a change set goes out: events closer
    /// together than a third of this end a burst; a change set waits at most two windows.
    /// At least 10 ms.
    ///
    /// It is a timer only while a burst is pending; an idle watcher sleeps until an event or the
    /// re-list timer.
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
    /// notify's inotify watcher. The only strong reference; the event loop holds a weak one to
    /// move watches.
    _inotify: Arc<Mutex<RecommendedWatcher>>,
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
        // Runs on notify's inotify thread for every raw event, the dropped ones included.
        let mut inotify = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            bridge.deliver(sorter.sort(result));
        })
        .map_err(start_error)?;
        roots.watch_initial(&mut inotify)?;

        let inotify = Arc::new(Mutex::new(inotify));
        let weak = Arc::downgrade(&inotify);
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
                _inotify: inotify,
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

/// Hands changes from notify's thread to the event loop without ever blocking that thread.
struct Bridge {
    tx: mpsc::Sender<Change>,
    overflowed: Arc<AtomicBool>,
}

impl Bridge {
    fn deliver(&self, change: Change) {
        if change.is_empty() {
            return;
        }
        match self.tx.try_send(change) {
            Ok(()) => {}
            // Blocking here would stall notify's thread and, behind it, the kernel's inotify
            // queue, which then overflows anyway. Dropping is safe because the flag turns the
            // next change set into a full re-list; the channel is full, so a next change set is
            // certain to come.
            Err(TrySendError::Full(_)) => self.overflowed.store(true, Ordering::Release),
            // The event loop is gone, so the watcher is being dropped.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// Changes received but not yet sent.
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

    fn add(&mut self, change: Change) {
        self.batch.apply(change);
        self.last = Instant::now();
    }

    /// A burst (an editor's save, a `git checkout`) is many raw events; a change set therefore
    /// waits until no relevant event came for a third of the debounce window, and never longer
    /// than two windows after its first event. A restarting window alone would let edits
    /// arriving every 100 ms hold the first one back for seconds (measured: p99 1.1 s).
    fn deadline(&self, debounce: Duration) -> Instant {
        (self.last + debounce / QUIET_DIVISOR).min(self.first + debounce * MAX_HOLD_WINDOWS)
    }
}

/// Why the event loop stops.
struct Stopped;

/// Receives changes, folds bursts together, keeps the roots watched and sends change sets.
struct EventLoop {
    raw: mpsc::Receiver<Change>,
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
        let mut received = Vec::with_capacity(RECV_AT_ONCE);

        loop {
            let deadline = pending
                .as_ref()
                .filter(|_| !due)
                .map(|pending| pending.deadline(config.debounce));
            // While idle, `deadline` is `None` and the only timer armed is the re-list's.
            tokio::select! {
                count = raw.recv_many(&mut received, RECV_AT_ONCE) => {
                    // notify's watcher and the callback's sender are gone: the Watcher was dropped.
                    if count == 0 {
                        break;
                    }
                    let pending = pending.get_or_insert_with(Pending::new);
                    for change in received.drain(..) {
                        pending.add(change);
                    }
                }
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
/// current targets before anyone re-lists), lists folders that arrived whole, and folds in a
/// dropped-events flag.
async fn flush(
    roots: &mut Roots,
    control: &Weak<Mutex<dyn WatchControl>>,
    overflowed: &AtomicBool,
    mut batch: Batch,
) -> Result<Option<ChangeSet>, Stopped> {
    let control = control.upgrade().ok_or(Stopped)?;
    let mut owned = std::mem::take(roots);
    let touched = std::mem::take(&mut batch.touched);
    // Adding a recursive watch walks the tree and waits for notify's thread, and listing new
    // folders reads them: blocking work.
    let refreshed = tokio::task::spawn_blocking(move || {
        let mut control = control.lock().unwrap_or_else(PoisonError::into_inner);
        let reasons = owned.refresh(&mut *control, &touched);
        drop(control);
        // notify watched each new folder right after reporting it, a debounce window ago, so
        // whatever this listing misses has events of its own.
        batch.expand_appeared();
        (owned, batch, reasons)
    })
    .await;
    let (refreshed, mut batch, reasons) = refreshed.map_err(|error| {
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
