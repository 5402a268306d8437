//! The daemon's status file writes, and their retries. A write that fails (a full or
//! read-only folder, any I/O error) leaves the server's latest status in memory, marked
//! pending; [`StatusWrites::run`] rewrites the pending ones after a backoff (1 s doubling
//! to 30 s), and at once when any other status write succeeds, since the folder is then
//! likely writable again. No reconcile pass is needed for that, and nothing runs while
//! nothing is pending. While any are, `/readyz` fails and says why
//! (`chom_status_writes_pending`, `chom_status_write_failures_total`).
//!
//! Writes of one path are serialized (a striped lock) and the content is computed under
//! that lock, so a retry never puts back an older status over a newer one.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::status::{self, ServerStatus};

/// The first retry's delay.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between retries.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Locks that serialize writes of one path (paths hash onto them).
const STRIPES: usize = 64;

/// A status that could not be written yet.
#[derive(Debug, Clone)]
struct Pending {
    /// The server's file: when it is gone, so is the need for its status.
    source: PathBuf,
    /// The latest status for the path.
    doc: ServerStatus,
    /// Failed attempts so far.
    attempts: u32,
}

/// Status writes with retry of the failed ones.
pub struct StatusWrites {
    stripes: Vec<Mutex<()>>,
    pending: Mutex<BTreeMap<PathBuf, Pending>>,
    /// Something became pending.
    wake: Notify,
    /// A write succeeded while others were pending: retry now.
    kick: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for StatusWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWrites")
            .field("pending", &self.pending().len())
            .finish_non_exhaustive()
    }
}

impl StatusWrites {
    /// No write pending.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            pending: Mutex::default(),
            wake: Notify::new(),
            kick: Notify::new(),
            metrics,
        }
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stripe(&self, path: &Path) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut hasher);
        let i = (hasher.finish() % STRIPES as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many statuses wait for a successful write.
    pub fn pending_count(&self) -> usize {
        self.pending().len()
    }

    /// Writes the status `doc` computes (`None`: nothing to write any more) to `path`, the
    /// status file of the server in `source`, when its bytes change. On failure the status
    /// is kept and retried. Returns whether the file was written.
    pub fn write(
        &self,
        path: &Path,
        source: &Path,
        doc: impl FnOnce() -> Option<ServerStatus>,
    ) -> std::io::Result<bool> {
        let _serial = self.stripe(path);
        let Some(doc) = doc() else {
            return Ok(false);
        };
        self.attempt(path, source, doc, false)
    }

    /// Drops the pending write of `path` (its server was removed).
    pub fn forget(&self, path: &Path) {
        let _serial = self.stripe(path);
        let mut pending = self.pending();
        pending.remove(path);
        self.metrics.set_status_writes_pending(pending.len());
    }

    /// One write attempt; the caller holds the path's stripe.
    fn attempt(&self, path: &Path, source: &Path, doc: ServerStatus, retry: bool) -> std::io::Result<bool> {
        let result = status::write_if_changed(path, &doc);
        let mut pending = self.pending();
        match &result {
            Ok(written) => {
                if let Some(was) = pending.remove(path) {
                    info!(file = %path.display(), failed_attempts = was.attempts, "status file written after failed attempts");
                }
                if *written && !retry && !pending.is_empty() {
                    self.kick.notify_one();
                }
            }
            Err(e) => {
                self.metrics.status_write_failed(&format!("{}: {e}", path.display()));
                let attempts = pending.get(path).map_or(0, |p| p.attempts) + 1;
                if retry {
                    debug!(file = %path.display(), error = %e, attempts, "status file still cannot be written");
                }
                pending.insert(
                    path.to_owned(),
                    Pending {
                        source: source.to_owned(),
                        doc,
                        attempts,
                    },
                );
                self.wake.notify_one();
            }
        }
        self.metrics.set_status_writes_pending(pending.len());
        result
    }

    /// Rewrites every pending status once (blocking). Returns how many remain pending.
    pub fn retry(&self) -> usize {
        let paths: Vec<PathBuf> = self.pending().keys().cloned().collect();
        for path in paths {
            let _serial = self.stripe(&path);
            // Taken again under the stripe: a write that succeeded meanwhile removed it, and
            // one that failed left the newer status.
            let Some(p) = self.pending().get(&path).cloned() else {
                continue;
            };
            if !p.source.exists() {
                let mut pending = self.pending();
                pending.remove(&path);
                self.metrics.set_status_writes_pending(pending.len());
                continue;
            }
            let _ = self.attempt(&path, &p.source, p.doc, true);
        }
        self.pending_count()
    }

    /// Retries pending writes until the task is dropped: after a backoff, or at once when
    /// another write succeeds. Sleeps on a notification while nothing is pending.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = RETRY_FIRST;
        loop {
            if self.pending_count() == 0 {
                backoff = RETRY_FIRST;
                self.wake.notified().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(RETRY_MAX),
                () = self.kick.notified() => {}
            }
            let this = self.clone();
            let left = tokio::task::spawn_blocking(move || this.retry()).await.unwrap_or(1);
            if left > 0 {
                debug!(pending = left, next_in = ?backoff, "status files still pending");
            }
        }
    }

    /// A last attempt at shutdown; says what stays stale.
    pub fn flush(&self) {
        if self.pending_count() == 0 {
            return;
        }
        let left = self.retry();
        if left > 0 {
            warn!(
                pending = left,
                "status files could not be written before exit; the next start rewrites them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ObservedStatus, document};

    fn doc(generation: u64) -> ServerStatus {
        document("web-1", generation, "h", ObservedStatus::default())
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, Arc<Metrics>, StatusWrites) {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("web-1.yaml");
        std::fs::write(&source, "x").unwrap();
        let path = dir.path().join("web-1.status.yaml");
        let metrics = Arc::new(Metrics::new());
        metrics.set_ready();
        let writes = StatusWrites::new(metrics.clone());
        (dir, source, path, metrics, writes)
    }

    fn generation(path: &Path) -> u64 {
        status::read(path).unwrap().metadata.generation
    }

    #[test]
    fn a_failed_write_stays_pending_fails_readiness_and_is_caught_up_by_a_retry() {
        let (_dir, source, path, metrics, writes) = setup();
        // A directory where the file goes: the rename fails, whoever runs the test.
        std::fs::create_dir(&path).unwrap();
        assert!(writes.write(&path, &source, || Some(doc(1))).is_err());
        assert_eq!(writes.pending_count(), 1);
        let why = metrics.readiness().unwrap_err();
        assert!(why.starts_with("1 status file could not be written"), "{why}");
        assert!(why.contains("web-1.status.yaml"), "{why}");
        assert_eq!(writes.retry(), 1, "still failing");
        let text = metrics.render(&crate::metrics::Snapshot::default());
        assert!(text.contains("chom_status_write_failures_total 2"), "{text}");
        assert!(text.contains("chom_status_writes_pending 1"), "{text}");

        std::fs::remove_dir(&path).unwrap();
        assert_eq!(writes.retry(), 0);
        assert_eq!(generation(&path), 1);
        assert!(metrics.readiness().is_ok());
        let text = metrics.render(&crate::metrics::Snapshot::default());
        assert!(text.contains("chom_status_writes_pending 0"), "{text}");
    }

    #[test]
    fn a_retry_never_puts_back_an_older_status() {
        let (_dir, source, path, _metrics, writes) = setup();
        std::fs::create_dir(&path).unwrap();
        assert!(writes.write(&path, &source, || Some(doc(1))).is_err());
        std::fs::remove_dir(&path).unwrap();
        assert!(writes.write(&path, &source, || Some(doc(2))).unwrap());
        assert_eq!(writes.pending_count(), 0);
        assert_eq!(writes.retry(), 0);
        assert_eq!(generation(&path), 2);
    }

    #[test]
    fn a_failed_retry_keeps_the_newest_status_and_a_removed_server_is_dropped() {
        let (_dir, source, path, _metrics, writes) = setup();
        std::fs::create_dir(&path).unwrap();
        assert!(writes.write(&path, &source, || Some(doc(1))).is_err());
        assert!(writes.write(&path, &source, || Some(doc(2))).is_err());
        std::fs::remove_dir(&path).unwrap();
        assert_eq!(writes.retry(), 0);
        assert_eq!(generation(&path), 2);

        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(writes.write(&path, &source, || Some(doc(3))).is_err());
        std::fs::remove_file(&source).unwrap();
        assert_eq!(writes.retry(), 0, "the server's file is gone");
        assert!(path.is_dir(), "nothing was written");
        assert!(writes.write(&path, &source, || Some(doc(4))).is_err());
        writes.forget(&path);
        assert_eq!(writes.pending_count(), 0);
    }

    #[tokio::test]
    async fn another_successful_write_triggers_the_retry_at_once() {
        let (dir, source, path, _metrics, writes) = setup();
        let writes = Arc::new(writes);
        let task = tokio::spawn(writes.clone().run());
        std::fs::create_dir(&path).unwrap();
        assert!(writes.write(&path, &source, || Some(doc(1))).is_err());
        std::fs::remove_dir(&path).unwrap();
        // Before the first backoff (1 s) has passed, another server's write succeeds.
        let other = dir.path().join("web-2.status.yaml");
        assert!(writes.write(&other, &source, || Some(doc(1))).unwrap());
        let started = std::time::Instant::now();
        while writes.pending_count() > 0 {
            assert!(started.elapsed() < Duration::from_millis(900), "not retried at once");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(generation(&path), 1);
        task.abort();
    }
}
